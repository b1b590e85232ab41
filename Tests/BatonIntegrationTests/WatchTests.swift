import Foundation
import Glibc
import Testing

/// A `baton run --watch` in a scratch directory: the app is a shell script
/// that serves the contents of a file with the test app (and refuses to
/// start when the file says BROKEN), so a "save" is a write to that file.
final class WatchedApp {
    let s: Scratch
    let run: Child
    let port: UInt16

    /// Starts `baton run --watch DIR` with `options`; `appFile` is what the app serves.
    init(_ s: Scratch, options: [String] = [], appFile: String = "version.txt", first: String = "one", command: [String]? = nil) throws {
        self.s = s
        s.write(
            "app.sh",
            """
            #!/bin/sh
            v=$(cat \(appFile))
            case "$v" in *BROKEN*) echo "app.sh: \(appFile) is broken: $v" >&2; exit 1;; esac
            exec \(Binaries.testapp) --notify --tag "$v"

            """)
        chmod(s.file("app.sh"), 0o755)
        s.write("version.txt", first + "\n")
        if appFile != "version.txt" { s.write(appFile, first + "\n") }
        run = Child(
            Binaries.baton,
            ["run", "--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--dir", s.path, "--watch", s.path] + options + ["--"]
                + (command ?? ["./app.sh"]),
            log: s.file("baton.log"), cwd: s.path)
        let log = s.file("baton.log")
        var found: UInt16?
        _ = eventually(10) {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            guard let r = text.range(of: #"listening on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) else { return false }
            found = UInt16(text[r].split(separator: ":").last!)
            return text.contains("generation 1 is serving")
        }
        guard let found else {
            _ = run.stop()
            throw WatchTestError.didNotStart(run.log)
        }
        port = found
    }

    var log: String { run.log }

    /// Writes a file in place (open, write, close), as most tools do.
    func writeInPlace(_ name: String, _ text: String) {
        let fd = open(s.file(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
    /// How many generations were spawned so far.
    var spawned: Int { log.components(separatedBy: "\n").filter { $0.contains(" spawned in ") }.count }
    var answer: String? { body(httpGet(port: port, timeout: 2)) }

    /// Writes `text` to `name` the way editors do: a new file renamed over the old one.
    func save(_ name: String, _ text: String) {
        writeInPlace(name + ".baton-test-new.tmp", text + "\n")
        rename(s.file(name + ".baton-test-new.tmp"), s.file(name))
    }

    /// Waits until the app answers with `text`; returns the seconds it took, or nil.
    func waitFor(_ text: String, within seconds: Double = 3) -> Double? {
        let started = Date()
        while Date().timeIntervalSince(started) < seconds {
            if answer?.hasPrefix(text + " gen=") == true { return Date().timeIntervalSince(started) }
            usleep(10_000)
        }
        return nil
    }

    func stop() {
        let code = run.stop()
        #expect(code == 0, "\(log)")
    }
}

enum WatchTestError: Error { case didNotStart(String) }

@Suite(.serialized) struct WatchTests {
    @Test func savesGoLiveUnderLoadAndBrokenOnesDoNot() throws {
        let s = Scratch()
        let app = try WatchedApp(s)
        defer { app.stop() }
        #expect(app.answer?.hasPrefix("one gen=1") == true)
        let load = Load(port: app.port, clients: 4)
        var figures: [String] = []

        // An editor-style save (vim's): a swap file, a probe file, the old
        // file renamed to a backup, the new one written, the backup removed.
        app.writeInPlace(".version.txt.swp", "swap")
        app.writeInPlace("4913", "")
        unlink(s.file("4913"))
        rename(s.file("version.txt"), s.file("version.txt~"))
        app.writeInPlace("version.txt", "two\n")
        unlink(s.file("version.txt~"))
        unlink(s.file(".version.txt.swp"))
        let editor = app.waitFor("two")
        #expect(editor != nil, "not live within 3 s: \(app.log)")
        figures.append("editor-style save live after \(Int((editor ?? -1) * 1000)) ms")
        #expect(eventually(2) { app.spawned == 2 }, "one restart for one save: \(app.spawned) spawned")

        // A burst of ten saves in half a second: at most two restarts
        // (the 200 ms debounce may split a 500 ms burst once).
        let before = app.spawned
        for i in 1...10 {
            app.save("version.txt", "burst\(i)")
            usleep(50_000)
        }
        #expect(app.waitFor("burst10") != nil, "\(app.log)")
        usleep(600_000)
        #expect(app.spawned - before <= 2 && app.spawned > before, "a burst of 10 saves cost \(app.spawned - before) restarts")
        figures.append("10 saves in 0.5 s: \(app.spawned - before) restart(s)")

        // A broken save: the new generation fails; the old one serves; no retry.
        let beforeBroken = app.spawned
        app.save("version.txt", "BROKEN")
        #expect(eventually(3) { app.log.contains("✗ generation") }, "\(app.log)")
        usleep(1_500_000)
        #expect(app.spawned == beforeBroken + 1, "a broken save is started once only: \(app.spawned - beforeBroken)")
        #expect(app.answer?.hasPrefix("burst10 gen=") == true)
        #expect(app.log.contains("app.sh: version.txt is broken"), "the app's own words are in the output")

        // The fixed save goes live.
        app.save("version.txt", "fixed")
        let fixed = app.waitFor("fixed")
        #expect(fixed != nil, "\(app.log)")
        figures.append("fixed save live after \(Int((fixed ?? -1) * 1000)) ms")

        // Ignored files restart nothing.
        let beforeIgnored = app.spawned
        mkdir(s.file(".git"), 0o755)
        app.writeInPlace(".git/HEAD", "ref")
        app.writeInPlace("debug.log", "x")
        app.writeInPlace("cache.pyc", "x")
        app.writeInPlace("notes.txt~", "x")
        app.writeInPlace(".#version.txt", "x")
        mkdir(s.file("node_modules"), 0o755)
        app.writeInPlace("node_modules/x.js", "x")
        usleep(1_000_000)
        #expect(app.spawned == beforeIgnored, "an ignored file restarted the app: \(app.log)")

        // A new subdirectory, then a file in it.
        mkdir(s.file("lib"), 0o755)
        usleep(200_000)
        mkdir(s.file("lib/deep"), 0o755)
        usleep(200_000)
        let beforeDeep = app.spawned
        app.writeInPlace("lib/deep/Module.pm", "1;")
        #expect(eventually(3) { app.spawned == beforeDeep + 1 }, "a file in a new subdirectory: \(app.log)")
        #expect(eventually(3) { app.log.contains("changed lib/deep/Module.pm → generation") }, "\(app.log)")

        // The load ran past the last restart.
        usleep(300_000)
        let lastRestart = Date()
        usleep(300_000)
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect((stats.lastSuccess ?? .distantPast) > lastRestart, "the load ended before the last restart")
        print("watch (test app): \(figures.joined(separator: "; ")); \(stats.ok) requests, \(stats.failed) failed")
    }

    @Test func aFailingBuildKeepsTheOldCodeAndASaveDuringABuildCancelsIt() throws {
        let s = Scratch()
        // The build copies version.txt to built.txt (what the app serves), slowly when asked to.
        s.write(
            "build.sh",
            """
            v=$(cat version.txt)
            case "$v" in *FAILBUILD*) echo "build.sh: cannot build $v" >&2; exit 1;; esac
            case "$v" in slow*) sleep 2;; esac
            cp version.txt built.txt

            """)
        let app = try WatchedApp(
            s, options: ["--build", "sh build.sh", "--watch-ignore", "built.txt"], appFile: "built.txt", first: "one")
        defer { app.stop() }
        let load = Load(port: app.port, clients: 4)
        app.save("version.txt", "two")
        let built = app.waitFor("two", within: 5)
        #expect(built != nil, "\(app.log)")
        #expect(app.log.contains("the build passed"))

        // A failing build starts nothing and says why.
        let before = app.spawned
        app.save("version.txt", "FAILBUILD")
        #expect(eventually(3) { app.log.contains("✗ the build failed") }, "\(app.log)")
        #expect(app.log.contains("build.sh: cannot build FAILBUILD"))
        usleep(500_000)
        #expect(app.spawned == before)
        #expect(app.answer?.hasPrefix("two gen=") == true)

        // A save during a slow build cancels it; the build runs again for the newer save.
        app.save("version.txt", "slow1")
        #expect(eventually(3) { app.log.contains("building") && app.log.components(separatedBy: "building:").count == 4 }, "\(app.log)")
        usleep(300_000)
        app.save("version.txt", "three")
        #expect(app.waitFor("three", within: 5) != nil, "\(app.log)")
        #expect(app.log.contains("the build is cancelled and runs again"), "\(app.log)")
        #expect(!(app.log.contains("--tag slow1") || app.log.contains("slow1 gen=")))
        #expect(app.spawned == before + 1, "one generation for the cancelled and the re-run build")
        usleep(300_000)
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(!stats.releases.contains { $0.hasPrefix("slow1") }, "the cancelled build's code never served")
        print("watch with --build: \(stats.ok) requests, \(stats.failed) failed")
    }

    @Test func startAndDeployRefuseWatch() {
        let s = Scratch()
        for command in ["start", "deploy"] {
            let r = batonCommand([command, "--name", "w", "--watch", ".", "--listen", "127.0.0.1:0", "--", "/bin/true"], in: s)
            #expect(r.code == 2, "\(r.output)")
            #expect(r.output.contains("--watch is for development"), "\(r.output)")
        }
        let r = batonCommand(["run", "--build", "make", "--listen", "127.0.0.1:0", "--", "/bin/true"], in: s)
        #expect(r.code == 2 && r.output.contains("--build needs --watch PATH"), "\(r.output)")
    }

    /// Starman with --preload-app: a save to app.psgi goes live, a syntax
    /// error keeps the old code serving, the fix goes live; under load.
    @Test(.enabled(if: Peers.available(Tools.hasStarman))) func starmanSavesGoLiveAndASyntaxErrorDoesNot() throws {
        let starman = try #require(Tools.hasStarman ? Tools.starman : nil, "Starman is missing: apt-get install starman libplack-perl")
        let s = Scratch()
        func psgi(_ version: String, broken: Bool = false) -> String {
            """
            my $version = "\(version)";
            \(broken ? "sub {" : "")
            sub { my $body = "$version gen=$ENV{SERVER_STARTER_GENERATION} pid=$$\\n"; [200, ['Content-Type' => 'text/plain', 'Content-Length' => length $body], [$body]] };

            """
        }
        try saveBreakFix(
            s, file: "app.psgi", source: psgi, options: ["--signal-on-hup", "QUIT"], within: 5,
            command: [starman, "--workers", "2", "--preload-app", "app.psgi"], label: "Starman --preload-app")
    }

    /// gunicorn: a save to app.py goes live; an import error is refused by the probe.
    @Test(.enabled(if: Peers.available(Tools.gunicorn != nil))) func gunicornSavesGoLiveAndAnImportErrorDoesNot() throws {
        let gunicorn = try #require(Tools.gunicorn, "gunicorn is missing: apt-get install gunicorn")
        let s = Scratch()
        func py(_ version: String, broken: Bool = false) -> String {
            (broken ? "raise ImportError('a dependency is missing')\n" : "") + """
                import os
                def application(environ, start_response):
                    body = ("%s gen=%s pid=%d\\n" % ("\(version)", os.environ.get("SERVER_STARTER_GENERATION", "?"), os.getpid())).encode()
                    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                    return [body]

                """
        }
        // --preload: the master imports the app before it forks the workers, so every
        // worker of a generation runs the code of one moment (without it a worker
        // that boots late imports whatever the file says by then).
        try saveBreakFix(
            s, file: "app.py", source: py, options: ["--ready", "notify", "--ready-timeout", "6s", "--health", "/"], within: 8,
            command: [gunicorn, "--workers", "2", "--preload", "app:application"], label: "gunicorn")
    }

    /// A real app server under `--watch` and load: version 1 serves, a save
    /// of version 2 goes live, a broken version 3 is started once and refused
    /// while 2 keeps serving, and the fix (version 4) goes live. `source(v,
    /// broken)` is the app file answering `v gen=...`; `within` bounds each
    /// save's wait, generous for the slower server.
    func saveBreakFix(
        _ s: Scratch, file: String, source: (String, Bool) -> String, options: [String], within: Double, command: [String],
        label: String
    ) throws {
        let tag = "v"
        s.write(file, source("\(tag)1", false))
        let app = try WatchedApp(s, options: options, command: command)
        defer { app.stop() }
        #expect(app.waitFor("\(tag)1") != nil, "answer: \(String(describing: app.answer)); \(app.log)")
        let load = Load(port: app.port, clients: 8)
        app.save(file, source("\(tag)2", false))
        let live = app.waitFor("\(tag)2", within: within)
        #expect(live != nil, "\(app.log)")
        let before = app.spawned
        app.save(file, source("\(tag)3", true))
        #expect(eventually(within + 3) { app.log.contains("✗ generation") }, "\(app.log)")
        usleep(1_000_000)
        #expect(app.spawned == before + 1, "the broken save was started once")
        #expect(eventually(3) { app.answer?.hasPrefix("\(tag)2 gen=") == true }, "answer: \(String(describing: app.answer))")
        app.save(file, source("\(tag)4", false))
        let fixed = app.waitFor("\(tag)4", within: within)
        #expect(fixed != nil, "\(app.log)")
        let fixLive = Date()
        usleep(300_000)
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect((stats.lastSuccess ?? .distantPast) > fixLive, "the load ended before the fix went live")
        print(
            "watch (\(label)): save live after \(Int((live ?? -1) * 1000)) ms, fix live after \(Int((fixed ?? -1) * 1000)) ms; "
                + "\(stats.ok) requests, \(stats.failed) failed")
    }
}
