import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// Hand-over mode with Starman, in a private network namespace where the test
    /// may set `net.ipv4.tcp_migrate_req=1` without touching the machine's: the
    /// supervisors, Starman and wrk all run inside it (through nsenter).
    @Suite(
        .serialized,
        .enabled(if: Tools.hasStarman && Tools.wrk != nil, "needs starman, libplack-perl and wrk (installed by .ci/run)"),
        .enabled(if: Features.privateNetwork, "needs root, unshare, nsenter, ip and sysctl for a private network namespace"),
        .enabled(if: Features.batonHandover, "baton has no --handover yet")
    )
    struct HandoverTests {
        /// Eight restarts under wrk for each supervisor and mode, in one namespace,
        /// one run: hand-over loses nothing, the shared socket loses what Starman drops.
        @Test func starmanRestartsUnderLoadWithAndWithoutHandover() throws {
            let scratch = Scratch("handover")
            let network = PrivateNetwork(scratch)
            try #require(network.ready, "\(network.holder.log)")
            let restarts = 8
            var figures: [RestartFigures] = []
            for supervisor in [Supervisor.perl, .baton, .batonHandover, .ours, .oursHandover] where supervisor.available {
                if let f = measureStarmanRestarts(supervisor, restarts: restarts, scratch: scratch, network: network) { figures.append(f) }
            }
            report("Starman, \(restarts) restarts, wrk -c32 Connection: close, private network namespace, tcp_migrate_req=1", figures)
            let perl = figures.first { $0.supervisor == .perl }
            for f in figures where f.supervisor == .batonHandover || f.supervisor == .oursHandover {
                #expect(f.restarts == restarts)
                #expect(f.wrk.failed == 0, "\(f)")
                if let perl { #expect(f.wrk.failed <= perl.wrk.failed, "\(f) against \(perl)") }
            }
            for f in figures where f.supervisor == .baton || f.supervisor == .ours {
                if let perl { StarmanTests.expectOnlyStarmansLosses(f, against: perl) }
            }
        }

        /// nginx in front of Starman: the 502s a shared socket costs (the
        /// connections Starman drops reach nginx, which has no other server to try),
        /// and none with hand-over.
        @Test(.enabled(if: Tools.nginx != nil, "needs nginx (installed by .ci/run)"))
        func nginxInFrontOfStarmanWithAndWithoutHandover() throws {
            let scratch = Scratch("handover-nginx")
            let network = PrivateNetwork(scratch)
            try #require(network.ready, "\(network.holder.log)")
            let restarts = 8
            var figures: [RestartFigures] = []
            for supervisor in [Supervisor.perl, .baton, .batonHandover] where supervisor.available {
                if let f = measureStarmanRestarts(supervisor, restarts: restarts, scratch: scratch, network: network, throughNginx: true) {
                    figures.append(f)
                }
            }
            report("wrk -> nginx -> Starman --disable-keepalive, \(restarts) restarts, private network namespace", figures)
            for f in figures where f.supervisor == .batonHandover {
                #expect(f.restarts == restarts)
                #expect(f.wrk.failed == 0, "\(f)")
            }
        }

        /// A slow request in flight on the old generation still completes when its
        /// listener is shut down and Starman gets QUIT; the next answers come from
        /// the new generation.
        @Test func aSlowRequestSurvivesAHandover() throws {
            let scratch = Scratch("handover")
            let network = PrivateNetwork(scratch)
            try #require(network.ready, "\(network.holder.log)")
            let s = StarmanUnder(.batonHandover, scratch: scratch, dir: Paths.examples + "/psgi/releases/v1", prefix: network.prefix)
            defer { s.stop() }
            try #require(s.waitAlone(newerThan: 0) != nil, "\(s.log)")
            // The test's own client, on threads that entered the namespace.
            let port = s.port
            #expect(network.perform { eventually(10) { body(httpGet(.tcp(port), "/health")) == "ok\n" } })
            let slow = Threaded { network.perform { httpGet(.tcp(port), "/slow?ms=4000", timeout: 20) } }
            usleep(300_000)
            let new = s.restart()
            #expect(new != nil, "\(s.log)")
            let answer = try slow.value.get()
            #expect(answer.status == 200)
            #expect(answer.body.hasPrefix("v1 gen=1 "), "\(answer.body)")
            let after = network.perform { body(httpGet(.tcp(port))) }
            #expect(after?.hasPrefix("v1 gen=\(new ?? 0) ") == true, "\(after ?? "no answer")")
            #expect(s.stop() == 0)
        }

        /// With the sysctl at 0, hand-over mode refuses to start and says why.
        @Test func handoverRefusesWithoutQueueMigration() throws {
            let scratch = Scratch("handover")
            let network = PrivateNetwork(scratch, migrateRequests: false)
            try #require(network.ready, "\(network.holder.log)")
            var commands: [[String]] = [[Paths.baton, "run", "--handover", "--listen", "127.0.0.1:8080"]]
            if Features.startServerHandover { commands.append([Paths.startServer, "--handover", "--port=127.0.0.1:8080"]) }
            for command in commands {
                let r = run(network.prefix[0], Array(network.prefix.dropFirst()) + command + ["--", "/bin/sleep", "60"], timeout: 10)
                #expect(r.status != 0 && r.status != -1, "\(command[0]) exited \(r.status)")
                #expect(r.output.contains("net.ipv4.tcp_migrate_req=1"), "\(r.output)")
            }
        }
    }
}
