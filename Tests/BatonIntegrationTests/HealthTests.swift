import Foundation
import Glibc
import Testing

/// Health probes of exactly the new generation, over its private listener.
@Suite(.serialized) struct HealthTests {
    @Test func aReleaseAnswering500NeverReplacesTheGoodOne() throws {
        let s = Scratch()
        s.release("good")
        s.release("broken", args: "--health-status 500")
        s.point(to: "good")
        let d = Daemon(s: s)
        let start = d.start(["--dir", s.path + "/current", "--health", "/health", "--ready-timeout", "2s"])
        #expect(start.code == 0, "\(start.output)")
        let port = try #require(d.port)
        let load = Load(port: port, clients: 8)
        s.point(to: "broken")
        let broken = d.run("restart")
        #expect(broken.code == 6, "\(broken.output)")
        #expect(
            broken.output.contains("500 Oops: unhealthy: migration 42 missing"), "the probe's answer is in the message: \(broken.output)")
        s.point(to: "good")
        var times: [Double] = []
        for _ in 0..<5 {
            let good = d.run("restart", ["--json"])
            #expect(good.code == 0, "\(good.output)")
            if let last = good.output.split(separator: "\n").last,
                let o = try? JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], let ms = o["duration_ms"] as? Double
            {
                times.append(ms)
            }
        }
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(body(httpGet(port: port))?.hasPrefix("good gen=") == true)
        let status = d.run("status", ["--json"]).output
        #expect(status.contains("\"last_probe\""))
        print(
            "health probe, settle 0: restarts took \(times.map { Int($0) }) ms; broken release refused; \(stats.ok) requests, \(stats.failed) failed"
        )
        #expect(times.allSatisfy { $0 < 1000 }, "well under Server::Starter's 1 s interval: \(times)")
        #expect(d.run("stop").code == 0)
    }

    @Test func aServingGenerationThatTurnsUnhealthyIsReplaced() throws {
        let s = Scratch()
        s.release("sickly", args: "--unhealthy-after 500")
        s.point(to: "sickly")
        let b = Baton(
            s,
            options: [
                "--dir", s.path + "/current", "--settle", "0", "--health", "/health", "--health-every", "0.2s", "--health-failures", "2",
            ],
            app: ["--notify"])
        #expect(b.waitServing(1))
        // It turns unhealthy after 0.5 s; a new generation (healthy for its first 0.5 s) replaces it.
        #expect(eventually(10) { b.log.contains("unhealthy: 2 failed probes in a row") }, "\(b.log)")
        #expect(b.waitServing(2))
        b.child.signal(SIGTERM)
        #expect(b.child.wait() == 0)
    }

    static let gunicorn = FileManager.default.isExecutableFile(atPath: "/usr/bin/gunicorn")

    @Test(.enabled(if: gunicorn, "needs Debian's gunicorn")) func gunicornWhoseAppFailsToImportIsRefused() throws {
        let s = Scratch()
        let good = s.release("good")
        let bad = s.release("bad")
        let app = """
            def application(environ, start_response):
                body = b"ok\\n" if environ["PATH_INFO"] == "/health" else b"gunicorn app\\n"
                start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                return [body]
            """
        try app.write(toFile: good + "/app.py", atomically: true, encoding: .utf8)
        try ("raise ImportError('a dependency is missing')\n" + app).write(toFile: bad + "/app.py", atomically: true, encoding: .utf8)
        s.point(to: "good")
        let pid = s.path + "/app.pid"
        let start = batonCommand(
            [
                "start", "--pid-file", pid, "--listen", "127.0.0.1:0", "--dir", s.path + "/current", "--health", "/health", "--settle", "0",
                "--ready", "notify", "--ready-timeout", "6s", "--", "/usr/bin/gunicorn", "--workers", "2", "app:application",
            ], in: s)
        #expect(start.code == 0, "\(start.output)")
        let port = try #require(Daemon(s: s).port)
        #expect(body(httpGet(port: port)) == "gunicorn app\n")
        let load = Load(port: port, clients: 8)
        s.point(to: "bad")
        let broken = batonCommand(["restart", "--pid-file", pid], in: s)
        #expect(broken.code == 6, "\(broken.output)")
        #expect(
            broken.output.contains("says it is ready (READY=1)"),
            "gunicorn says READY=1 before its workers import the app: \(broken.output)")
        s.point(to: "good")
        let fine = batonCommand(["restart", "--pid-file", pid], in: s)
        #expect(fine.code == 0, "\(fine.output)")
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        print("gunicorn: broken import refused by the probe; \(stats.ok) requests, \(stats.failed) failed")
        #expect(batonCommand(["stop", "--pid-file", pid], in: s).code == 0)
    }

    static let starman = FileManager.default.isExecutableFile(atPath: "/usr/bin/starman")

    @Test(.enabled(if: starman, "needs Debian's starman")) func starmanServesTheProbeAndABrokenHealthIsRefused() throws {
        let s = Scratch()
        let good = s.release("good")
        let bad = s.release("bad")
        let app = """
            my $status = $ENV{HEALTH_STATUS} || 200;
            sub {
                my $env = shift;
                my $body = $env->{PATH_INFO} eq '/health' ? ($status == 200 ? "ok\\n" : "database unreachable\\n") : "starman app\\n";
                return [$env->{PATH_INFO} eq '/health' ? $status : 200, ['Content-Type' => 'text/plain', ($env->{PATH_INFO} eq '/health' ? () : ('Content-Length' => length $body))], [$body]];
            };
            """
        try app.write(toFile: good + "/app.psgi", atomically: true, encoding: .utf8)
        try app.replacingOccurrences(of: "|| 200", with: "|| 500").write(toFile: bad + "/app.psgi", atomically: true, encoding: .utf8)
        s.point(to: "good")
        let pid = s.path + "/app.pid"
        let start = batonCommand(
            [
                "start", "--pid-file", pid, "--listen", "127.0.0.1:0", "--dir", s.path + "/current", "--health", "/health", "--settle", "0",
                "--ready-timeout", "5s", "--signal-on-hup", "QUIT", "--", "/usr/bin/starman", "--workers", "2", "--preload-app", "app.psgi",
            ], in: s)
        #expect(start.code == 0, "\(start.output)")
        let port = try #require(Daemon(s: s).port)
        let load = Load(port: port, clients: 4)
        s.point(to: "bad")
        let broken = batonCommand(["restart", "--pid-file", pid], in: s)
        #expect(broken.code == 6, "\(broken.output)")
        #expect(broken.output.contains("500 Internal Server Error: database unreachable"), "\(broken.output)")
        s.point(to: "good")
        let fine = batonCommand(["restart", "--pid-file", pid], in: s)
        #expect(fine.code == 0, "Starman serves the private health listener too: \(fine.output)")
        _ = load.stop()
        #expect(body(httpGet(port: port)) == "starman app\n")
        #expect(batonCommand(["stop", "--pid-file", pid], in: s).code == 0)
    }

    static let demo = FileManager.default.isExecutableFile(atPath: Binaries.directory + "/baton-demo")

    @Test(.enabled(if: demo, "needs the release-built baton-demo")) func theSwiftDemoWithABrokenHealthIsRefused() throws {
        let s = Scratch()
        for (name, status) in [("good", nil), ("broken", "500")] {
            let dir = s.release(name)
            try FileManager.default.copyItem(
                atPath: packageRoot() + "/examples/demo/releases/v1/templates", toPath: dir + "/templates")
            if let status { try status.write(toFile: dir + "/health-status", atomically: true, encoding: .utf8) }
        }
        s.point(to: "good")
        let d = Daemon(s: s)
        let start = batonCommand(
            [
                "start", "--pid-file", d.pidFile, "--listen", "127.0.0.1:0", "--dir", s.path + "/current", "--health", "/health",
                "--settle", "0",
                "--ready", "notify", "--ready-timeout", "3s", "--", Binaries.directory + "/baton-demo",
            ], in: s)
        #expect(start.code == 0, "\(start.output)")
        let port = try #require(d.port)
        let load = Load(port: port, clients: 4)
        s.point(to: "broken")
        let broken = d.run("restart")
        #expect(broken.code == 6, "\(broken.output)")
        #expect(broken.output.contains("500"), "\(broken.output)")
        s.point(to: "good")
        let fine = d.run("restart")
        #expect(fine.code == 0, "\(fine.output)")
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(d.run("stop").code == 0)
    }
}

/// The package's root: the first directory above the binaries with a Package.swift.
func packageRoot() -> String {
    var dir = Binaries.directory
    while dir.count > 1, !FileManager.default.fileExists(atPath: dir + "/Package.swift") {
        dir = (dir as NSString).deletingLastPathComponent
    }
    return dir
}
