import Foundation
import Glibc
import Testing

/// Hand-over mode, in a private network namespace where the test may set
/// net.ipv4.tcp_migrate_req without touching the machine's.
@Suite(.serialized) struct HandoverTests {
    static let available =
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
        && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")

    /// Runs restarts under load inside a new network namespace; returns the
    /// load client's "ok=N failed=N" and baton's log.
    func scenario(_ s: Scratch, mode: [String], migrate: Bool = true) -> (ok: Int, failed: Int, log: String, out: String) {
        let script = """
            set -e
            ip link set lo up
            sysctl -q -w net.ipv4.tcp_migrate_req=\(migrate ? 1 : 0)
            B="$1"; T="$2"; D="$3"; shift 3
            "$B" run --listen 127.0.0.1:8080 "$@" --settle 0.2 -- "$T" --drop-on-term --notify > "$D/baton.log" 2>&1 &
            BP=$!
            i=0; while ! grep -q ' serving' "$D/baton.log"; do i=$((i+1)); [ $i -lt 200 ] || exit 3; kill -0 $BP || exit 4; sleep 0.05; done
            "$T" --load 8080 --requests 12000 --concurrency 16 > "$D/load.out" &
            LP=$!
            for n in 1 2 3 4 5 6; do sleep 0.4; kill -HUP $BP; done
            wait $LP
            kill -TERM $BP; wait $BP || true
            cat "$D/load.out"
            """
        let c = Child(
            "/usr/bin/unshare", ["-n", "/bin/sh", "-c", script, "sh", Binaries.baton, Binaries.testapp, s.path] + mode,
            log: s.path + "/scenario.log")
        _ = c.wait(120)
        let out = c.log
        let log = (try? String(contentsOfFile: s.path + "/baton.log", encoding: .utf8)) ?? ""
        func number(_ key: String) -> Int {
            guard let r = out.range(of: key + #"=(\d+)"#, options: .regularExpression) else { return -1 }
            return Int(out[r].split(separator: "=").last!) ?? -1
        }
        return (number("ok"), number("failed"), log, out)
    }

    @Test(.enabled(if: Peers.available(available), "needs root, unshare and ip"))
    func steeringLosesNothingWhereTheSharedSocketLosesInFlightRequests() {
        let shared = scenario(Scratch(), mode: ["--listen-mode", "shared"])
        let steered = scenario(Scratch(), mode: [], migrate: false)
        let migrated = scenario(Scratch(), mode: ["--handover"], migrate: true)
        print(
            "restarts under load, app exits at once on its signal: shared socket ok=\(shared.ok) failed=\(shared.failed); steered ok=\(steered.ok) failed=\(steered.failed); steered with tcp_migrate_req=1 ok=\(migrated.ok) failed=\(migrated.failed)"
        )
        for r in [steered, migrated] {
            #expect(r.ok > 1000, "\(r.out)\n\(r.log)")
            #expect(r.failed == 0, "\(r.log)")
            #expect(r.log.contains("gen 7 pid"), "six restarts: \(r.log)")
        }
        #expect(shared.ok > 1000, "\(shared.out)")
    }
}
