import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// examples/deploy/post-deploy.sh as a deploy tool runs it, with Starman and
    /// the example app: it starts baton, restarts it, and rolls a broken release back.
    @Suite(.serialized, .enabled(if: Peers.available(Tools.hasStarman), "needs starman and libplack-perl (installed by .ci/run)"))
    struct DeployHookTests {
        @Test func thePostDeployHookStartsRestartsAndRollsBack() throws {
            let scratch = Scratch("deploy")
            let app = try String(contentsOfFile: Paths.examples + "/psgi/app.psgi", encoding: .utf8)
            for release in ["r1", "r2"] {
                try FileManager.default.createDirectory(atPath: scratch.file("releases/\(release)"), withIntermediateDirectories: true)
                scratch.write("releases/\(release)/app.psgi", app)
            }
            try FileManager.default.createDirectory(atPath: scratch.file("releases/broken"), withIntermediateDirectories: true)
            scratch.write("releases/broken/app.psgi", "die \"this release is broken\\n\";\n")

            let name = "classic-deploy-" + UUID().uuidString.prefix(8).lowercased()
            let port = freePort()
            let path = Paths.binaries + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
            let env = ["PATH": path, "APP": name, "APP_ROOT": scratch.path, "LISTEN": "127.0.0.1:\(port)"]
            defer { _ = run(Paths.baton, ["stop", "--name", name], timeout: 40) }
            let hook = Paths.examples + "/deploy/post-deploy.sh"
            func deploy(_ release: String) -> (status: Int32, output: String) {
                run(hook, [scratch.file("releases/" + release)], env: env, timeout: 120)
            }
            func current() -> String { Paths.realPath(scratch.file("current")) }

            // First deploy: nothing runs, so baton is started as a daemon.
            let first = deploy("r1")
            #expect(first.status == 0, "\(first.output)")
            #expect(first.output.contains("not running; starting it"))
            #expect(body(httpGet(.tcp(port)))?.hasPrefix("r1 gen=1 ") == true)

            // Second: a graceful restart into the new release.
            let second = deploy("r2")
            #expect(second.status == 0, "\(second.output)")
            #expect(second.output.contains("restarting"))
            #expect(body(httpGet(.tcp(port)))?.hasPrefix("r2 gen=2 ") == true)

            // A release that dies while loading: exit 6, `current` back on r2, r2 still serves.
            let broken = deploy("broken")
            #expect(broken.status == 6, "\(broken.output)")
            #expect(current() == Paths.realPath(scratch.file("releases/r2")))
            #expect(body(httpGet(.tcp(port)))?.hasPrefix("r2 gen=2 ") == true)

            let stop = run(Paths.baton, ["stop", "--name", name], timeout: 40)
            #expect(stop.status == 0, "\(stop.output)")
            #expect(
                eventually(5) {
                    if case .failure = httpGet(.tcp(port)) { return true }
                    return false
                })
        }
    }
}
