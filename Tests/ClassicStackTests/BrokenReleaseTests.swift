import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// A broken release never goes live, with default settings. gunicorn
    /// (no --preload), Starman (no --preload-app; QUIT retires it) and the
    /// Swift demo, each behind nginx, are deployed with `baton deploy` and no
    /// readiness, health, settle or probation option, while one load runs
    /// through the three nginx servers for the whole run. Each app gets the
    /// ways a release breaks that the issue names, with a good release
    /// after each broken one; after every deploy the test checks its exit
    /// code, where `current` points, and which release answers right after
    /// and 4 s later. No request may fail.
    @Suite(.serialized) struct BrokenReleaseTests {
        static let available = Tools.nginx != nil && Tools.hasStarman && Tools.gunicorn != nil

        /// One way a release is made: its name, whether it must be refused, and its files.
        struct Release {
            var name: String
            var broken: Bool
            var files: [String: String]
            /// Failed requests allowed while it is deployed, and why (none but where stated).
            var allowed = 0
            var why = ""
        }

        /// One app: its command, its baton options (none about readiness) and its releases in deploy order.
        struct App {
            var name: String
            var command: [String]
            var options: [String]
            var releases: [Release]
            /// Whether an answer comes from `release`.
            var answers: (_ body: String, _ release: String) -> Bool
        }

        static let wsgi = """
            import os
            release = os.path.basename(os.getcwd())
            def application(environ, start_response):
                body = ("%s pid=%d\\n" % (release, os.getpid())).encode()
                start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                return [body]

            """

        static func gunicorn(_ path: String) -> App {
            App(
                name: "gunicorn", command: [path, "--workers", "2", "app:application"], options: [],
                releases: [
                    Release(name: "good0", broken: false, files: ["app.py": wsgi]),
                    // The master boots and says READY=1; every worker exits at import.
                    Release(name: "sysexit", broken: true, files: ["app.py": "raise SystemExit(1)\n" + wsgi]),
                    Release(name: "good1", broken: false, files: ["app.py": wsgi]),
                    // A database connect timeout at boot.
                    Release(
                        name: "dies-at-boot", broken: true,
                        files: ["app.py": "import time\ntime.sleep(2.5)\nraise RuntimeError('database connect timeout')\n" + wsgi]),
                    Release(name: "good2", broken: false, files: ["app.py": wsgi]),
                    // Serves, then its master is told to stop 3 s after a worker started.
                    Release(
                        name: "dies-after-serving", broken: true,
                        files: [
                            "app.py": "import os, signal, threading\n"
                                + "threading.Timer(3.0, lambda: os.kill(os.getppid(), signal.SIGTERM)).start()\n" + wsgi
                        ]),
                    Release(name: "good3", broken: false, files: ["app.py": wsgi]),
                ],
                answers: { body, release in body.hasPrefix(release + " pid=") })
        }

        static func starman(_ path: String, psgi: String) -> App {
            App(
                name: "starman", command: [path, "--workers", "2", "--disable-keepalive", "app.psgi"],
                options: ["--signal-on-hup", "QUIT", "--signal-on-term", "QUIT"],
                releases: [
                    Release(name: "good0", broken: false, files: ["app.psgi": psgi]),
                    // Does not compile: every worker dies loading it, the master lives.
                    Release(name: "syntax-error", broken: true, files: ["app.psgi": "sub {\n" + psgi]),
                    Release(name: "good1", broken: false, files: ["app.psgi": psgi]),
                    Release(
                        name: "dies-at-boot", broken: true,
                        files: ["app.psgi": "sleep 2.5; die \"database connect timeout\\n\";\n" + psgi]),
                    Release(name: "good2", broken: false, files: ["app.psgi": psgi]),
                    // Serves, then its master is told to stop 3 s after a worker loaded the app.
                    Release(
                        name: "dies-after-serving", broken: true,
                        files: ["app.psgi": "my $master = getppid(); if (!fork) { sleep 3; kill 'QUIT', $master; exit 0 }\n" + psgi],
                        allowed: 2,
                        why:
                            "Starman's workers drop the connection they have just accepted, or are reading, when their master "
                            + "is told to quit (docs/starman-restarts.md): at most one per worker, and it has 2; this release quits "
                            + "itself under load, which no supervisor can drain first"),
                    Release(name: "good3", broken: false, files: ["app.psgi": psgi]),
                ],
                answers: { body, release in body.hasPrefix(release + " gen=") })
        }

        static func demo(_ path: String, templates: String) -> App {
            App(
                name: "demo", command: [path], options: [],
                releases: [
                    Release(name: "good0", broken: false, files: ["templates/": templates]),
                    // No templates directory: it exits at boot.
                    Release(name: "exits-at-boot", broken: true, files: [:]),
                    Release(name: "good1", broken: false, files: ["templates/": templates]),
                ],
                answers: { body, release in body.contains("<dd>\(release)</dd>") })
        }

        @Test(.enabled(if: Peers.available(available), "needs nginx, Starman and gunicorn"))
        func brokenReleasesNeverGoLiveWithTheDefaults() throws {
            let starmanPath = try #require(Tools.hasStarman ? Tools.starman : nil, "Starman is missing: apt-get install starman")
            let gunicornPath = try #require(Tools.gunicorn, "gunicorn is missing: apt-get install gunicorn")
            let s = Scratch("broken-releases")
            let psgi = try String(
                contentsOfFile: URL(fileURLWithPath: Paths.examples + "/psgi/releases/v1/app.psgi").resolvingSymlinksInPath().path,
                encoding: .utf8)
            let apps = [
                Self.gunicorn(gunicornPath), Self.starman(starmanPath, psgi: psgi),
                Self.demo(Paths.demo, templates: Paths.examples + "/demo/releases/v1/templates"),
            ]
            func make(_ app: App, _ r: Release) throws -> String {
                let dir = s.file("\(app.name)/releases/\(r.name)")
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for (name, content) in r.files {
                    if name.hasSuffix("/") {
                        try FileManager.default.copyItem(atPath: content, toPath: dir + "/" + String(name.dropLast()))
                    } else {
                        try content.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
                    }
                }
                return dir
            }
            func pidFile(_ app: App) -> String { s.file("\(app.name)/baton.pid") }
            func current(_ app: App) -> String { s.file("\(app.name)/current") }
            func deploy(_ app: App, _ release: String) -> (status: Int32, output: String, seconds: Double) {
                let started = Date()
                let r = run(
                    Paths.baton,
                    ["deploy", "--pid-file", pidFile(app), "--release", release, "--current", current(app), "--listen", "127.0.0.1:0"]
                        + ["--dir", current(app)] + app.options + ["--"] + app.command, timeout: 120)
                return (r.status, r.output, Date().timeIntervalSince(started))
            }

            // The first good release of each, then nginx in front of each.
            var fronts: [String: Nginx] = [:]
            defer {
                for app in apps { _ = run(Paths.baton, ["stop", "--pid-file", pidFile(app)], timeout: 60) }
                for nginx in fronts.values { nginx.stop() }
            }
            for app in apps {
                let first = deploy(app, try make(app, app.releases[0]))
                try #require(first.status == 0, "the first deploy of \(app.name): \(first.output)")
                let status = run(Paths.baton, ["status", "--pid-file", pidFile(app), "--json"])
                let json = try #require(
                    try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any], "\(status.output)")
                let address = try #require((json["listeners"] as? [[String: Any]])?.first?["address"] as? String, "\(status.output)")
                fronts[app.name] = try Nginx(s, upstream: address, name: "nginx-\(app.name)")
            }
            func answer(_ app: App) -> String {
                guard let port = fronts[app.name]?.port else { return "" }
                return body(httpGet(.tcp(port))) ?? ""
            }
            for app in apps {
                try #require(
                    eventually(10) { app.answers(answer(app), "good0") }, "\(app.name) does not answer through nginx: \(answer(app))")
            }

            // One load through the three nginx servers, spanning every deploy.
            let loads = try apps.map { app in Load(.tcp(try #require(fronts[app.name]?.port)), clients: 2, maxSeconds: 600) }
            var lines: [String] = []
            /// Each deploy: the app, the release, when it began and returned.
            var timeline: [(app: String, release: String, began: Date, returned: Date)] = []
            for app in apps {
                var live = app.releases[0].name
                for r in app.releases.dropFirst() {
                    let began = Date()
                    let d = deploy(app, try make(app, r))
                    timeline.append((app.name, r.name, began, Date()))
                    let rightAfter = answer(app)
                    let pointsAt = Paths.realPath(current(app))
                    #expect(
                        d.status == (r.broken ? 6 : 0),
                        "\(app.name) \(r.name): exit \(d.status) after \(String(format: "%.1f", d.seconds)) s\n\(d.output)")
                    if !r.broken { live = r.name }
                    #expect(
                        pointsAt == Paths.realPath(s.file("\(app.name)/releases/\(live)")),
                        "\(app.name) \(r.name): current points at \(pointsAt)")
                    #expect(app.answers(rightAfter, live), "\(app.name) right after deploying \(r.name): \(rightAfter.prefix(120))")
                    usleep(4_000_000)
                    let later = answer(app)
                    #expect(app.answers(later, live), "\(app.name) 4 s after deploying \(r.name): \(later.prefix(120))")
                    lines.append("\(app.name) \(r.name): exit \(d.status) in \(String(format: "%.1f", d.seconds)) s")
                }
            }
            let deploysEnded = Date()
            for (app, load) in zip(apps, loads) {
                let stats = load.stop()
                // Each failure with the deploy it came during (or after), against what that deploy may cost.
                var byRelease: [String: Int] = [:]
                let when = stats.failureTimes.map { at, why in
                    let during = timeline.last { $0.app == app.name && $0.began <= at }
                    byRelease[during?.release ?? "-", default: 0] += 1
                    return
                        "\(why) \(during.map { "\(String(format: "%.2f", at.timeIntervalSince($0.began))) s into \($0.release)" } ?? "before the deploys")"
                }
                for (release, count) in byRelease.sorted(by: { $0.key < $1.key }) {
                    let r = app.releases.first { $0.name == release }
                    #expect(
                        count <= (r?.allowed ?? 0),
                        "\(app.name) through nginx, during \(release): \(count) failed, \(r?.allowed ?? 0) allowed; \(when)")
                    if count > 0, let r, !r.why.isEmpty { lines.append("\(app.name) \(release): \(count) failed (\(r.why))") }
                }
                #expect((stats.lastSuccess ?? .distantPast) > deploysEnded, "the load on \(app.name) ended before the last deploy")
                lines.append("\(app.name): \(stats.ok) requests, \(stats.failed) failed \(stats.errors)")
            }
            print("broken and good releases with the defaults:\n  " + lines.joined(separator: "\n  "))
            for app in apps {
                let stop = run(Paths.baton, ["stop", "--pid-file", pidFile(app)], timeout: 60)
                #expect(stop.status == 0, "stop \(app.name): \(stop.output)")
            }
        }
    }
}
