import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// The Varnish example: it compiles, and it runs in the chain client -> nginx -> Varnish -> baton.
    @Suite(.serialized, .enabled(if: Peers.available(Tools.varnishd != nil), "needs varnish (installed by .ci/run)"))
    struct VarnishTests {
        /// `varnishd -C` compiles the example as shipped and as the tests rewrite it.
        @Test func theExampleCompiles() throws {
            let scratch = Scratch("varnish")
            scratch.write("rewritten.vcl", try Varnish.rewritten(backendPort: 18080))
            for file in [Paths.examples + "/varnish/default.vcl", scratch.file("rewritten.vcl")] {
                let r = run(
                    try #require(Tools.varnishd, "varnishd is missing"), ["-C", "-n", scratch.file("compile"), "-f", file], timeout: 60)
                #expect(r.status == 0, "\(file): \(r.output.suffix(2000))")
                #expect(r.output.contains("VGC_function_vcl_recv"), "no C code for vcl_recv")
            }
        }

        /// Restarts and a broken deploy under load through the whole chain: no
        /// failed request, no 5xx. Then the app stops altogether: the probe marks
        /// it sick and a cached page is still served from grace, long past its TTL.
        @Test(.enabled(if: Peers.available(Tools.nginx != nil), "needs nginx (installed by .ci/run)"))
        func theChainRidesThroughRestartsAndServesFromGraceWhenTheAppIsDown() throws {
            let scratch = Scratch("varnish")
            scratch.release("v1")
            scratch.release("broken", args: "--crash-at-boot")
            scratch.point(to: scratch.file("releases/v1"))
            let appPort = freePort()
            let command = [Paths.testapp, "--notify"]
            let baton = BatonRun(
                scratch, listen: ["127.0.0.1:\(appPort)"],
                options: ["--dir", scratch.file("current"), "--ready", "notify", "--settle", "0.3"], command: command)
            defer { baton.stop() }
            try #require(baton.waitServing(1), "\(baton.log)")
            // -t 1: objects live one second, so the grace check below does not take minutes.
            let varnish = try Varnish(scratch, backendPort: appPort, options: ["-t", "1"])
            defer { varnish.stop() }
            let nginx = try Nginx(scratch, upstream: "127.0.0.1:\(varnish.port)")
            defer { nginx.stop() }
            try #require(eventually(15) { body(httpGet(.tcp(nginx.port)))?.hasPrefix("v1 gen=1 ") == true })
            let cached = try httpGet(.tcp(nginx.port), "/cached").get()
            #expect(cached.head.contains("X-Varnish"), "\(cached.head)")
            #expect(eventually(10) { varnish.backends.contains(" healthy") }, "\(varnish.backends)")

            // Unique URLs: every request goes through to the app.
            let load = Load(.tcp(nginx.port), clients: 8, uniquePaths: true, maxSeconds: 90)
            let stats = baton.restartsAndABrokenDeploy(
                scratch, through: 2...4, command: command, load: load, what: "nginx -> Varnish -> baton: 3 restarts and a broken deploy")
            #expect(stats.ok > 300)
            #expect(varnish.backends.contains(" healthy"), "\(varnish.backends)")

            // The app goes away: after the probe says sick, the stale copy of /cached still comes back.
            let cachedAt = Date()
            #expect(baton.stop() == 0)
            #expect(eventually(20) { varnish.backends.contains(" sick") }, "\(varnish.backends)")
            // Past its TTL (1 s) and the grace of a healthy backend (10 s).
            let wait = 12 - Date().timeIntervalSince(cachedAt)
            if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
            let stale = httpGet(.tcp(nginx.port), "/cached")
            #expect(body(stale) == cached.body, "\(stale)")
            let missing = httpGet(.tcp(nginx.port), "/never-cached")
            if case .success(let r) = missing { #expect(r.status == 503) }
        }
    }
}
