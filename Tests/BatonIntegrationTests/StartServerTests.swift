import Foundation
import Glibc
import Testing

extension Binaries {
    static var startServer: String { directory + "/start_server" }
}

/// Server::Starter's documented behaviour, option by option, on our start_server.
@Suite(.serialized) struct StartServerTests {
    func startServer(_ s: Scratch, _ args: [String], app: [String] = []) -> Child {
        Child(
            Binaries.startServer, args + ["--", Binaries.testapp] + app, log: s.path + "/ss-\(UUID().uuidString.prefix(6)).log", cwd: s.path
        )
    }

    /// A scratch directory and where start_server's pid file goes.
    func setUp() -> (Scratch, String) {
        let s = Scratch()
        return (s, s.path + "/p")
    }

    /// The port a start_server told `--port=127.0.0.1:0` got, from the line
    /// `listening on 127.0.0.1:PORT` of its log (`log`, or the file it writes).
    func boundPort(_ log: @autoclosure () -> String) throws -> UInt16 {
        var port: UInt16?
        _ = eventually(10) {
            let text = log()
            guard let r = text.range(of: #"listening on 127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else { return false }
            port = UInt16(text[r].split(separator: ":").last!)
            return true
        }
        return try #require(port, "no 'listening on 127.0.0.1:PORT' in the log: \(log())")
    }

    /// SIGTERM to a start_server in the foreground: it must exit 0.
    func expectStops(_ ss: Child, sourceLocation: SourceLocation = #_sourceLocation) {
        ss.signal(SIGTERM)
        #expect(ss.wait() == 0, sourceLocation: sourceLocation)
    }

    func run(_ s: Scratch, _ args: [String]) -> (code: Int32?, output: String) {
        let c = Child(Binaries.startServer, args, log: s.path + "/cmd-\(UUID().uuidString.prefix(6)).log", cwd: s.path)
        let code = c.wait(60)
        return (code, c.log)
    }

    @Test func portFormsAndTheEnvironment() throws {
        let s = Scratch()
        // Told real port numbers: SERVER_STARTER_PORT must echo each as written.
        let (a, b, c) = (freePort(), freePort(), freePort())
        let sock = s.path + "/app.sock"
        let ss = startServer(s, ["--port=\(a)", "--port", "127.0.0.1:\(b)", "--port=[::1]:\(c)", "--path=\(sock)", "--interval=0"])
        #expect(eventually(10) { ss.log.contains(" serving") }, "\(ss.log)")
        let env = try #require(body(httpGet(port: a, path: "/env")))
        #expect(env.contains("SERVER_STARTER_PORT=\(a)=3;127.0.0.1:\(b)=4;[::1]:\(c)=5;\(sock)=6\n"), "\(env)")
        #expect(env.contains("LISTEN_FDS=4\n"))
        #expect(body(httpGet(port: c, host: "::1")) != nil)
        #expect(body(httpGet(unixPath: sock)) != nil)
        expectStops(ss)
    }

    @Test func aPinnedDescriptorNumber() throws {
        let s = Scratch()
        let p = freePort()  // a real number, for SERVER_STARTER_PORT to echo
        let ss = startServer(s, ["--port=127.0.0.1:\(p)=5", "--interval=0"])
        #expect(eventually(10) { ss.log.contains(" serving") }, "\(ss.log)")
        let env = try #require(body(httpGet(port: p, path: "/env")))
        #expect(env.contains("SERVER_STARTER_PORT=127.0.0.1:\(p)=5\n"), "\(env)")
        #expect(env.contains("fds=0,1,2,5\n"), "\(env)")
        #expect(env.contains("LISTEN_FDS=\n"), "not at 3, 4, ...: no LISTEN_FDS")
        expectStops(ss)
    }

    @Test func statusFilePidFileRestartAndStop() throws {
        let (s, pid) = setUp()
        let status = s.path + "/st"
        let ss = startServer(s, ["--port=127.0.0.1:0", "--pid-file=\(pid)", "--status-file=\(status)", "--interval=0.3"])
        let p = try boundPort(ss.log)
        #expect(eventually(10) { (try? String(contentsOfFile: status, encoding: .utf8))?.hasPrefix("1:") == true })
        let app1 = try #require(pidIn(body(httpGet(port: p))))
        #expect((try? String(contentsOfFile: status, encoding: .utf8)) == "1:\(app1)\n")
        #expect((try? String(contentsOfFile: pid, encoding: .utf8)) == "\(ss.pid)\n")
        let load = Load(port: p, clients: 4)
        let restart = run(s, ["--restart", "--pid-file=\(pid)", "--status-file=\(status)"])
        #expect(restart.code == 0, "\(restart.output)")
        let app2 = try #require(pidIn(body(httpGet(port: p))))
        #expect((try? String(contentsOfFile: status, encoding: .utf8)) == "2:\(app2)\n")
        #expect(load.stop().failed == 0)
        let stop = run(s, ["--stop", "--pid-file=\(pid)"])
        #expect(stop.code == 0)
        #expect(stop.output.contains("stopping now (pid:\(ss.pid))"))
        #expect(ss.wait() == 0)
        #expect(!FileManager.default.fileExists(atPath: pid))
        #expect(!FileManager.default.fileExists(atPath: status))
    }

    @Test func restartOfAFailingReleaseReturnsInsteadOfHanging() throws {
        let s = Scratch()
        s.release("good")
        s.release("broken", args: "--crash-at-boot")
        s.point(to: "good")
        let pid = s.path + "/p"
        let status = s.path + "/st"
        let ss = startServer(
            s,
            [
                "--port=127.0.0.1:0", "--pid-file=\(pid)", "--status-file=\(status)", "--interval=0.2", "--max-attempts=3",
                "--dir=\(s.path)/current",
            ])
        #expect(eventually(10) { ss.log.contains(" serving") })
        let p = try boundPort(ss.log)
        s.point(to: "broken")
        let restart = run(s, ["--restart", "--pid-file=\(pid)", "--status-file=\(status)"])
        #expect(restart.code == 6, "\(restart.output)")
        #expect(restart.output.contains("gave up after 3 tries"), "\(restart.output)")
        #expect(body(httpGet(port: p))?.hasPrefix("good gen=1") == true)
        expectStops(ss)
    }

    @Test(.enabled(if: Peers.available(Tools.perlStartServer != nil)))
    func restartAgainstPerlsStartServerJudgesANewerGeneration() throws {
        let perlStartServer = try #require(Tools.perlStartServer, "Perl's start_server is missing: apt-get install libserver-starter-perl")
        let (s, pid) = setUp()
        let status = s.path + "/st"
        // Perl's start_server is told a port: it does not log the one port 0 got.
        let p = freePort()
        let perl = Child(
            perlStartServer, ["--port=127.0.0.1:\(p)", "--pid-file=\(pid)", "--status-file=\(status)", "--", Binaries.testapp],
            log: s.path + "/perl.log", cwd: s.path)
        #expect(eventually(10) { (try? String(contentsOfFile: status, encoding: .utf8))?.hasPrefix("1:") == true })
        let restart = run(s, ["--restart", "--pid-file=\(pid)", "--status-file=\(status)", "--restart-timeout=20s"])
        #expect(restart.code == 0, "\(restart.output)")
        #expect((try? String(contentsOfFile: status, encoding: .utf8))?.hasPrefix("2:") == true)
        perl.signal(SIGTERM)
        #expect(perl.wait() == 0)
    }

    @Test func anAppThatNeverStartsIsGivenUpOn() {
        let s = Scratch()
        let ss = startServer(s, ["--port=127.0.0.1:0", "--interval=0.1", "--max-attempts=3"], app: ["--crash-at-boot"])
        let code = ss.wait(20)
        #expect(code == 10, "\(ss.log)")
        #expect(ss.log.contains("gave up after 3 tries"))
        #expect(ss.lines("spawned").count == 3)
    }

    @Test func envdirLogPipeAndAutoRestart() throws {
        let s = Scratch()
        let envdir = s.path + "/env"
        try FileManager.default.createDirectory(atPath: envdir, withIntermediateDirectories: true)
        try "from the envdir  \nsecond line\n".write(toFile: envdir + "/FROM_ENVDIR", atomically: true, encoding: .utf8)
        let piped = s.path + "/piped.log"
        let ss = startServer(
            s,
            [
                "--port=127.0.0.1:0", "--interval=0", "--envdir=\(envdir)", "--log-file=| cat > \(piped)", "--enable-auto-restart",
                "--auto-restart-interval=1", "--kill-old-delay=0",
            ])
        let p = try boundPort((try? String(contentsOfFile: piped, encoding: .utf8)) ?? "")
        #expect(eventually(10) { body(httpGet(port: p)) != nil })
        let env = try #require(body(httpGet(port: p, path: "/env")))
        #expect(env.contains("FROM_ENVDIR=from the envdir  \n"), "Server::Starter keeps the first line as is: \(env)")
        #expect(eventually(10) { body(httpGet(port: p))?.contains("gen=2") == true }, "auto-restart")
        #expect(eventually(5) { ((try? String(contentsOfFile: piped, encoding: .utf8)) ?? "").contains("auto-restart") })
        expectStops(ss)
    }

    @Test func daemonizeReturnsOnceReady() throws {
        let (s, pid) = setUp()
        let log = s.path + "/daemon.log"
        let r = run(
            s, ["--daemonize", "--log-file=\(log)", "--pid-file=\(pid)", "--port=127.0.0.1:0", "--interval=0.2", "--", Binaries.testapp])
        #expect(r.code == 0, "\(r.output)")
        let p = try boundPort((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        #expect(body(httpGet(port: p)) != nil)
        let daemon = try #require(pidInFile(pid))
        #expect(processName(daemon) == "start_server")
        #expect(run(s, ["--stop", "--pid-file=\(pid)"]).code == 0)
        #expect(!FileManager.default.fileExists(atPath: pid))
    }

    @Test func usageAndExitCodes() {
        let s = Scratch()
        #expect(run(s, ["--frobnicate", "--", "true"]).code == 1)
        let ambiguous = run(s, ["--st", "--", "true"])
        #expect(ambiguous.code == 1 && ambiguous.output.contains("ambiguous"))
        #expect(run(s, ["--port=8080"]).output.contains("server program not specified"))
        #expect(run(s, ["--port=8080"]).code == 255)
        #expect(run(s, ["--daemonize", "--", "true"]).code == 255)
        #expect(run(s, ["--interval=soon", "--", "true"]).code == 1)
        #expect(run(s, ["--port=u99999", "--", "true"]).code == 1)
        let version = run(s, ["--version"])
        #expect(version.code == 0 && version.output == "0.35\n")
        #expect(run(s, ["--help"]).output.contains("--signal-on-hup"))
        #expect(run(s, ["--restart", "--pid-file=/nonexistent"]).code == 255)
    }

    @Test func signalsKillOldDelayAndBacklog() throws {
        let s = Scratch()
        let ss = startServer(
            s,
            [
                "--port=127.0.0.1:0", "--interval=0", "--probation=0", "--signal-on-hup=USR1", "--signal-on-term=INT", "--kill-old-delay=1",
                "--backlog=77",
            ])
        #expect(eventually(10) { ss.log.contains(" serving") })
        let p = try boundPort(ss.log)
        // The listen backlog as the kernel reports it (ss's Send-Q of a listener).
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/ss") {
            let q = Child("/usr/bin/ss", ["-ltnH", "sport = :\(p)"], log: s.path + "/ss.log")
            _ = q.wait()
            #expect(q.log.split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).first == "77", "\(q.log)")
        }
        let hup = Date()
        ss.signal(SIGHUP)
        #expect(eventually(10) { ss.log.contains("sent SIGUSR1 (retire)") })
        #expect(Date().timeIntervalSince(hup) >= 1.0, "--kill-old-delay=1 waits before the signal")
        #expect(eventually(10) { ss.log.contains("was killed by SIGUSR1") })
        ss.signal(SIGTERM)
        #expect(eventually(10) { ss.log.contains("sent SIGINT (stop)") })
        #expect(ss.wait() == 0)
    }
}
