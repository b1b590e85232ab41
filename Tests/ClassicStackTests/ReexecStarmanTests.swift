import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// Starman while the supervisor replaces its own program in place: a
    /// deploy to more workers (a re-exec, then a restart) and an upgrade
    /// (a re-exec alone), under load, with `baton` and with our start_server.
    @Suite(.serialized, .enabled(if: Peers.available(Tools.hasStarman), "needs starman and libplack-perl (installed by .ci/run)"))
    struct ReexecStarmanTests {
        @Test func aDeployToMoreWorkersAndAnUpgradeLoseNoRequest() throws {
            try #require(Tools.hasStarman, "starman or libplack-perl is missing")
            let scratch = Scratch("starman-reexec")
            let pidFile = scratch.file("app.pid")
            let port = freePort()
            func options(workers: Int) -> [String] {
                [
                    "--pid-file", pidFile, "--listen", "127.0.0.1:\(port)", "--signal-on-hup", "QUIT", "--dir",
                    Paths.examples + "/psgi/releases/v1", "--", Tools.starman!, "--workers", "\(workers)", "app.psgi",
                ]
            }
            let start = run(Paths.baton, ["start"] + options(workers: 2), cwd: scratch.path, timeout: 60)
            try #require(start.status == 0, "\(start.output)")
            let supervisor = try #require(
                (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap {
                    pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines))
                })
            #expect(eventually(10) { body(httpGet(.tcp(port)))?.hasPrefix("v1 gen=1 ") == true })
            let load = Load(port: port, clients: 4)
            let deploy = run(Paths.baton, ["deploy"] + options(workers: 4), cwd: scratch.path, timeout: 90)
            #expect(deploy.status == 0, "\(deploy.output)")
            #expect(deploy.output.contains("re-executing the supervisor in place: changed: the command"), "\(deploy.output)")
            #expect(body(httpGet(.tcp(port)))?.hasPrefix("v1 gen=2 ") == true)
            let upgrade = run(Paths.baton, ["upgrade", "--pid-file", pidFile], cwd: scratch.path, timeout: 60)
            #expect(upgrade.status == 0, "\(upgrade.output)")
            // A second TCP address added live (port 0: the kernel picks it): bound
            // before generation 3 starts, which serves on both.
            let added = run(
                Paths.baton, ["deploy"] + options(workers: 4).prefix(4) + ["--listen", "127.0.0.1:0"] + options(workers: 4).dropFirst(4),
                cwd: scratch.path, timeout: 90)
            #expect(added.status == 0, "\(added.output)")
            #expect(added.output.contains("re-executing the supervisor in place: changed: "), "\(added.output)")
            let listening = run(Paths.baton, ["status", "--json", "--pid-file", pidFile], cwd: scratch.path)
            let listeners =
                (try? JSONSerialization.jsonObject(with: Data(listening.output.utf8)) as? [String: Any])?["listeners"] as? [[String: Any]]
            let second = listeners?.compactMap { $0["address"] as? String }.first { $0 != "127.0.0.1:\(port)" }
            let secondPort = try #require(second.flatMap { $0.split(separator: ":").last.flatMap { UInt16($0) } }, "\(listening.output)")
            #expect(body(httpGet(.tcp(secondPort)))?.hasPrefix("v1 gen=3 ") == true)
            #expect(body(httpGet(.tcp(port)))?.hasPrefix("v1 gen=3 ") == true)
            usleep(300_000)
            let stats = load.stop()
            #expect(stats.failed == 0, "\(stats.errors)")
            #expect(stats.ok > 100)
            let status = run(Paths.baton, ["status", "--json", "--pid-file", pidFile], cwd: scratch.path)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any])
            #expect(json["pid"] as? Int == Int(supervisor))
            #expect(json["reexecutions"] as? Int == 3)
            #expect(json["serving"] as? Int == 3)
            #expect((json["command"] as? [String])?.contains("4") == true)
            print(
                "Starman, a deploy to 4 workers, an upgrade and a second listener added, under load: \(stats.ok) requests, \(stats.failed) failed"
            )
            #expect(run(Paths.baton, ["stop", "--pid-file", pidFile], cwd: scratch.path, timeout: 60).status == 0)
            #expect(eventually(5) { isGone(supervisor) })
        }

        @Test func ourStartServerUpgradesInPlaceUnderLoad() throws {
            try #require(Tools.hasStarman, "starman or libplack-perl is missing")
            let scratch = Scratch("starman-reexec")
            let s = StarmanUnder(.ours, scratch: scratch, dir: Paths.examples + "/psgi/releases/v1", workers: 2)
            defer { s.stop() }
            try #require(s.waitAlone(newerThan: 0) != nil, "\(s.log)")
            let load = Load(port: s.port, clients: 4)
            let upgrade = run(Paths.startServer, ["--upgrade", "--pid-file=\(s.pidFile)"], cwd: scratch.path, timeout: 60)
            #expect(upgrade.status == 0, "\(upgrade.output)")
            #expect(upgrade.output.contains("took over in place"), "\(upgrade.output)")
            // The new program restarts as the old one did.
            let next = s.restart()
            #expect(next == 2, "\(s.log)")
            let stats = load.stop()
            #expect(stats.failed == 0, "\(stats.errors)")
            #expect(!isGone(s.child.pid))
            print("start_server --upgrade with Starman under load: \(stats.ok) requests, \(stats.failed) failed")
            #expect(s.stop() == 0)
        }
    }
}
