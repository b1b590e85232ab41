import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// nginx in front of baton (TCP and unix socket): restarts and a broken deploy
    /// under load cost no request and no 5xx at the client.
    @Suite(.serialized, .enabled(if: Peers.available(Tools.nginx != nil), "needs nginx (installed by .ci/run)"))
    struct NginxTests {
        @Test(arguments: ["tcp", "unix"])
        func restartsAndABrokenDeployBehindNginx(_ transport: String) throws {
            let scratch = Scratch("nginx")
            scratch.release("v1")
            scratch.release("v2")
            scratch.release("broken", args: "--crash-at-boot")
            scratch.point(to: scratch.file("releases/v1"))
            let appPort = freePort()
            let socketPath = scratch.file("app.sock")
            let command = [Paths.testapp, "--notify"]
            let baton = BatonRun(
                scratch, listen: ["127.0.0.1:\(appPort)", "unix:\(socketPath)"],
                // nginx's workers run as another user: they must be able to connect.
                options: ["--socket-mode", "0666", "--dir", scratch.file("current"), "--ready", "notify", "--settle", "0.3"],
                command: command)
            defer { baton.stop() }
            try #require(baton.waitServing(1), "\(baton.log)")
            let nginx = try Nginx(scratch, upstream: transport == "tcp" ? "127.0.0.1:\(appPort)" : "unix:\(socketPath)")
            defer { nginx.stop() }
            try #require(eventually(10) { body(httpGet(.tcp(nginx.port)))?.hasPrefix("v1 gen=1 ") == true })

            let load = Load(.tcp(nginx.port), clients: 8, maxSeconds: 90)
            // A broken release: deploy fails (6), `current` is pointed back, v1
            // keeps serving. Then a good one.
            let stats = baton.restartsAndABrokenDeploy(
                scratch, through: 2...6, command: command, load: load,
                what: "nginx -> baton over \(transport): 5 restarts and 2 deploys (one broken)"
            ) {
                let good = baton.deploy(release: scratch.file("releases/v2"), current: scratch.file("current"), command: command)
                #expect(good.status == 0, "\(good.output)")
            }
            #expect(stats.serverErrors == 0)
            #expect(stats.ok > 500)
            #expect(stats.releases == ["v1", "v2"])
            #expect(body(httpGet(.tcp(nginx.port)))?.hasPrefix("v2 gen=8 ") == true)
            #expect(baton.count("exited with exit code 1 before it was ready") >= 1)
            #expect(nginx.errors("no live upstreams").isEmpty)
            #expect(baton.stop() == 0)
        }
    }
}
