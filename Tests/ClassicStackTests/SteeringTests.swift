import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// Steering with Starman in a private network namespace, with
    /// `net.ipv4.tcp_migrate_req` at 1 and at 0 (the test may set it there
    /// without touching the machine's): the supervisors, Starman and wrk all
    /// run inside it (through nsenter).
    @Suite(
        .serialized,
        .enabled(
            if: Peers.available(Tools.hasStarman && Tools.wrk != nil && Tools.privateNetwork),
            "needs starman, libplack-perl, wrk, and root with unshare, nsenter, ip and sysctl (installed by .ci/run)")
    )
    struct SteeringTests {
        func requirePeers() throws {
            try #require(Tools.hasStarman, "starman or libplack-perl is missing")
            try #require(Tools.wrk != nil, "wrk is missing")
            try #require(Tools.privateNetwork, "a private network namespace cannot be made (root, unshare, nsenter, ip, sysctl)")
        }

        /// Eight restarts under wrk for each supervisor, in one namespace, one
        /// run: steered loses nothing, whatever the sysctl; the shared socket
        /// loses what Starman drops.
        @Test(arguments: [true, false])
        func starmanRestartsUnderLoad(migrateRequests: Bool) throws {
            try requirePeers()
            let scratch = Scratch("steering")
            let network = PrivateNetwork(scratch, migrateRequests: migrateRequests)
            try #require(network.ready, "\(network.holder.log)")
            let restarts = 8
            var figures: [RestartFigures] = []
            for supervisor in [Supervisor.perl, .batonShared, .baton, .ours] where supervisor.available {
                if let f = measureStarmanRestarts(supervisor, restarts: restarts, scratch: scratch, network: network) { figures.append(f) }
            }
            report(
                "Starman, \(restarts) restarts, wrk -c32 Connection: close, private network namespace, tcp_migrate_req=\(migrateRequests ? 1 : 0)",
                figures)
            let perl = figures.first { $0.supervisor == .perl }
            for f in figures where !f.supervisor.shared {
                #expect(f.restarts == restarts)
                #expect(f.wrk.failed == 0, "\(f)")
            }
            for f in figures where f.supervisor == .batonShared {
                if let perl { StarmanTests.expectOnlyStarmansLosses(f, against: perl) }
            }
        }

        /// nginx in front of Starman: the 502s a shared socket costs (the
        /// connections Starman drops reach nginx, which has no other server to
        /// try), and none steered.
        @Test(.enabled(if: Peers.available(Tools.nginx != nil), "needs nginx (installed by .ci/run)"))
        func nginxInFrontOfStarman() throws {
            try requirePeers()
            try #require(Tools.nginx != nil, "nginx is missing")
            let scratch = Scratch("steering-nginx")
            let network = PrivateNetwork(scratch, migrateRequests: false)
            try #require(network.ready, "\(network.holder.log)")
            let restarts = 8
            var figures: [RestartFigures] = []
            for supervisor in [Supervisor.perl, .batonShared, .baton] where supervisor.available {
                if let f = measureStarmanRestarts(supervisor, restarts: restarts, scratch: scratch, network: network, throughNginx: true) {
                    figures.append(f)
                }
            }
            report("wrk -> nginx -> Starman --disable-keepalive, \(restarts) restarts, private network namespace", figures)
            for f in figures where f.supervisor == .baton {
                #expect(f.restarts == restarts)
                #expect(f.wrk.failed == 0, "\(f)")
            }
        }

        /// A slow request in flight on the old generation still completes when
        /// new connections go to the new one and Starman gets QUIT; the next
        /// answers come from the new generation.
        @Test func aSlowRequestSurvivesASteeredRestart() throws {
            try requirePeers()
            let scratch = Scratch("steering")
            let network = PrivateNetwork(scratch, migrateRequests: false)
            try #require(network.ready, "\(network.holder.log)")
            let s = StarmanUnder(.baton, scratch: scratch, dir: Paths.examples + "/psgi/releases/v1", prefix: network.prefix)
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
    }
}
