import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// The way users judge Baton, in one test: an ordinary user (nobody, in
    /// a session of their own) deploys Starman, gunicorn and the Swift demo
    /// behind nginx with `baton deploy --name`, broken and good releases in
    /// turns, while a load runs through nginx to all three. Every deploy
    /// must exit as documented (6 for a broken release, 0 for a good one
    /// that then answers), no request may fail, and after the stops nothing
    /// of the user's may run and nothing but the logs may stay.
    @Suite(.serialized) struct OrdinaryUserTests {
        static let available =
            getuid() == 0 && Tools.setpriv != nil && Tools.nginx != nil && Tools.hasStarman && Tools.gunicorn != nil

        /// One app: how its releases are made and how it is deployed.
        struct App {
            var name: String
            var command: [String]
            var options: [String]
            /// Writes a release into `dir`; `broken` makes one that must be refused.
            var make: (_ dir: String, _ broken: Bool) throws -> Void
            /// Whether an answer comes from `release`.
            var answers: (_ body: String, _ release: String) -> Bool
        }

        @Test(.enabled(if: Peers.available(available), "needs root (to switch user), setpriv, nginx, Starman and gunicorn"))
        func starmanGunicornAndTheDemoBehindNginxDeployedByNobody() throws {
            try #require(getuid() == 0, "needs root, to run the deploys as nobody")
            let setpriv = try #require(Tools.setpriv, "setpriv is missing (util-linux)")
            let starman = try #require(Tools.hasStarman ? Tools.starman : nil, "Starman is missing: apt-get install starman")
            let gunicorn = try #require(Tools.gunicorn, "gunicorn is missing: apt-get install gunicorn")
            let s = Scratch("ordinary-user")
            // The user's own places: a session run directory (as logind makes
            // one) and an app root where `current` is switched.
            let home = s.file("home")
            let runtime = home + "/run"
            try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true)
            for dir in [home, runtime] {
                chown(dir, 65534, 65534)
                chmod(dir, 0o700)
            }
            // Copies of the binaries the user can surely reach.
            try FileManager.default.createDirectory(atPath: s.file("bin"), withIntermediateDirectories: true)
            for (from, name) in [(Paths.baton, "baton"), (Paths.demo, "baton-demo")] {
                try FileManager.default.copyItem(atPath: from, toPath: s.file("bin/" + name))
            }
            let psgi = try String(
                contentsOfFile: URL(fileURLWithPath: Paths.examples + "/psgi/releases/v1/app.psgi").resolvingSymlinksInPath().path,
                encoding: .utf8)
            let wsgi = """
                import os
                release = os.path.basename(os.getcwd())
                def application(environ, start_response):
                    body = (("ok" if environ["PATH_INFO"] == "/health" else "%s pid=%d" % (release, os.getpid())) + "\\n").encode()
                    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                    return [body]

                """
            let apps = [
                App(
                    // --preload-app makes a release that cannot load die at once;
                    // readiness is the default (a probe connection accepted,
                    // then the probation), as users run Starman who have no
                    // health route.
                    name: "starman", command: [starman, "--preload-app", "--workers", "2", "--disable-keepalive", "app.psgi"],
                    options: ["--signal-on-hup", "QUIT"],
                    make: { dir, broken in
                        try ((broken ? "die \"this release cannot load\\n\";\n" : "") + psgi).write(
                            toFile: dir + "/app.psgi", atomically: true, encoding: .utf8)
                    },
                    answers: { body, release in body.hasPrefix(release + " gen=") }),
                App(
                    // --preload imports the app in the master, so a release that cannot
                    // import fails at once; the probe judges the rest. The deadline is
                    // long because a good release under this load has once taken over
                    // 6 s to say its first line (2 cores, ~20 runnable threads).
                    name: "gunicorn", command: [gunicorn, "--preload", "--workers", "2", "app:application"],
                    options: ["--ready", "notify", "--health", "/health", "--ready-timeout", "30s"],
                    make: { dir, broken in
                        try ((broken ? "raise ImportError('a dependency is missing')\n" : "") + wsgi).write(
                            toFile: dir + "/app.py", atomically: true, encoding: .utf8)
                    },
                    answers: { body, release in body.hasPrefix(release + " pid=") }),
                App(
                    // A broken demo answers its probe with 500, retried until the ready
                    // deadline: so that deadline is what each broken deploy costs.
                    name: "demo", command: [s.file("bin/baton-demo")],
                    options: ["--ready", "notify", "--health", "/health", "--ready-timeout", "10s"],
                    make: { dir, broken in
                        try FileManager.default.copyItem(atPath: Paths.examples + "/demo/releases/v1/templates", toPath: dir + "/templates")
                        if broken { try "500\n".write(toFile: dir + "/health-status", atomically: true, encoding: .utf8) }
                    },
                    answers: { body, release in body.contains("<dd>\(release)</dd>") }),
            ]

            func asNobody(_ arguments: [String]) -> (status: Int32, output: String) {
                run(
                    setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", "--", s.file("bin/baton")] + arguments,
                    env: ["HOME": home, "XDG_RUNTIME_DIR": runtime], timeout: 60)
            }
            func release(_ app: App, _ name: String, broken: Bool) throws -> String {
                let dir = s.file("\(app.name)/releases/\(name)")
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try app.make(dir, broken)
                return dir
            }
            func deploy(_ app: App, _ release: String) -> (status: Int32, output: String) {
                let current = s.file("\(app.name)/root/current")
                return asNobody(
                    ["deploy", "--name", app.name, "--release", release, "--current", current, "--listen", "127.0.0.1:0", "--dir", current]
                        + app.options + ["--"] + app.command)
            }

            // The first good release of each, then nginx in front of each.
            var fronts: [String: Nginx] = [:]
            defer {
                for app in apps { _ = asNobody(["stop", "--name", app.name]) }
                for nginx in fronts.values { nginx.stop() }
            }
            for app in apps {
                try FileManager.default.createDirectory(atPath: s.file("\(app.name)/root"), withIntermediateDirectories: true)
                chown(s.file("\(app.name)/root"), 65534, 65534)
                let first = deploy(app, try release(app, "good0", broken: false))
                try #require(first.status == 0, "the first deploy of \(app.name): \(first.output)")
                let status = asNobody(["status", "--name", app.name, "--json"])
                let json = try #require(
                    try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any], "\(status.output)")
                let address = try #require((json["listeners"] as? [[String: Any]])?.first?["address"] as? String, "\(status.output)")
                fronts[app.name] = try Nginx(s, upstream: address, name: "nginx-\(app.name)")
            }
            for app in apps {
                let port = try #require(fronts[app.name]?.port)
                try #require(
                    eventually(10) { body(httpGet(.tcp(port))).map { app.answers($0, "good0") } == true },
                    "\(app.name) does not answer through nginx")
            }

            // Broken and good releases in turns, under load through nginx.
            let loads = try apps.map { app in Load(.tcp(try #require(fronts[app.name]?.port)), clients: 2, maxSeconds: 400) }
            let rounds = 3
            for round in 1...rounds {
                for app in apps {
                    let broken = deploy(app, try release(app, "broken\(round)", broken: true))
                    #expect(broken.status == 6, "a broken \(app.name) release: exit \(broken.status), \(broken.output)")
                    #expect(
                        (try? FileManager.default.destinationOfSymbolicLink(atPath: s.file("\(app.name)/root/current")))?.hasSuffix(
                            round == 1 ? "/good0" : "/good\(round - 1)") == true,
                        "\(app.name): current was not pointed back")
                    let good = deploy(app, try release(app, "good\(round)", broken: false))
                    #expect(good.status == 0, "a good \(app.name) release: exit \(good.status), \(good.output)")
                    let port = try #require(fronts[app.name]?.port)
                    let answer = body(httpGet(.tcp(port))) ?? ""
                    #expect(app.answers(answer, "good\(round)"), "\(app.name) after deploying good\(round): \(answer.prefix(200))")
                }
            }
            let deploysEnded = Date()
            var lines: [String] = []
            for (app, load) in zip(apps, loads) {
                let stats = load.stop()
                #expect(stats.failed == 0, "\(app.name) through nginx: \(stats.errors)")
                #expect((stats.lastSuccess ?? .distantPast) > deploysEnded, "the load on \(app.name) ended before the last deploy")
                lines.append("\(app.name) \(stats.ok) requests, \(stats.failed) failed")
            }
            print("an ordinary user's \(rounds * apps.count * 2) deploys behind nginx: " + lines.joined(separator: "; "))

            // The stops; then nothing of the user's runs and only the logs stay.
            for app in apps {
                let stop = asNobody(["stop", "--name", app.name])
                #expect(stop.status == 0, "stop \(app.name): \(stop.output)")
            }
            // nginx's workers run as nobody too (it is told no other user).
            for nginx in fronts.values { nginx.stop() }
            fronts = [:]
            #expect(eventually(10) { processesOf(uid: 65534).isEmpty }, "still running as nobody: \(processesOf(uid: 65534))")
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: runtime + "/baton")) ?? []).sorted()
            #expect(left == apps.map { $0.name + ".log" }.sorted(), "left in the run directory: \(left)")
        }
    }
}
