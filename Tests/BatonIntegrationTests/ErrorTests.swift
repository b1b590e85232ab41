import Foundation
import Glibc
import Testing

/// Bad input: a clear message, the documented exit code, nothing started.
@Suite(.serialized) struct ErrorTests {
    func runBaton(_ args: [String], in s: Scratch) -> (code: Int32?, output: String) {
        let c = Child(Binaries.baton, args, log: s.path + "/out-\(UUID().uuidString.prefix(6)).log", cwd: s.path)
        let code = c.wait(20)
        return (code, c.log)
    }

    @Test func aTakenPortNamesItsOwner() throws {
        let s = Scratch()
        let first = Baton(s, options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        #expect(first.waitServing(1))
        let port = try #require(first.port)
        let s2 = Scratch()
        let r = runBaton(["run", "--listen", "127.0.0.1:\(port)", "--", Binaries.testapp], in: s2)
        #expect(r.code == 8)
        #expect(r.output.contains("127.0.0.1:\(port) is already in use (by pid "), "\(r.output)")
        first.child.signal(SIGTERM)
        #expect(first.child.wait() == 0)
    }

    @Test func aMissingCommandIsRefusedBeforeAnythingStarts() {
        let s = Scratch()
        let r = runBaton(["run", "--listen", "127.0.0.1:0", "--pid-file", s.path + "/p", "--", "./no-such-app"], in: s)
        #expect(r.code == 9)
        #expect(r.output.contains("cannot run './no-such-app': it does not exist"))
        #expect(!FileManager.default.fileExists(atPath: s.path + "/p"))
    }

    @Test func anAppThatCrashesAtBootFailsTheStart() {
        let s = Scratch()
        let sock = s.path + "/a.sock"
        let r = runBaton(
            ["run", "--listen", "unix:" + sock, "--pid-file", s.path + "/p", "--", Binaries.testapp, "--crash-at-boot"], in: s)
        #expect(r.code == 10)
        #expect(r.output.contains("exited with exit code 1 before it was ready"))
        #expect(!FileManager.default.fileExists(atPath: s.path + "/p"))
        #expect(!FileManager.default.fileExists(atPath: sock))
    }

    @Test func malformedOptionsAreUsageErrors() {
        let s = Scratch()
        let cases: [([String], String)] = [
            (["run", "--listen", "99999", "--", "true"], "--listen '99999'"),
            (["run", "--listen", "localhost:http", "--", "true"], "not a port number"),
            (["run", "--listen", "unix:/" + String(repeating: "x", count: 120), "--", "true"], "over the kernel's limit of 107"),
            (["run", "--listen", "8080", "--settle", "soon", "--", "true"], "--settle 'soon'"),
            (["run", "--listen", "8080", "--signal-on-hup", "BOGUS", "--", "true"], "--signal-on-hup 'BOGUS'"),
            (["run", "--listen", "8080", "--frobnicate", "--", "true"], "unknown option '--frobnicate'"),
            (["run", "--listen", "8080"], "no command given"),
            (["run", "--", "true"], "no address to listen on"),
            (["launch"], "unknown command 'launch'"),
        ]
        for (args, message) in cases {
            let r = runBaton(args, in: s)
            #expect(r.code == 2, "\(args): \(r.output)")
            #expect(r.output.contains(message), "\(args): \(r.output)")
        }
    }

    @Test func aLivePidFileIsRefusedAndAStaleOneReplaced() throws {
        let s = Scratch()
        let b = Baton(s, options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        #expect(b.waitServing(1))
        let r = runBaton(["run", "--listen", "127.0.0.1:0", "--pid-file", b.pidFile, "--", Binaries.testapp], in: s)
        #expect(r.code == 5)
        #expect(r.output.contains("already running"))
        b.stop()
        // A pid file left by a dead process is replaced with a warning.
        let stale = s.path + "/stale.pid"
        _ = FileManager.default.createFile(atPath: stale, contents: Data("999999\n".utf8))
        let c = Child(
            Binaries.baton,
            [
                "run", "--listen", "127.0.0.1:0", "--pid-file", stale, "--settle", "0", "--probation", "0", "--", Binaries.testapp,
                "--notify",
            ],
            log: s.path + "/stale.log", cwd: s.path)
        #expect(eventually(10) { c.log.contains("serving") })
        #expect(c.log.contains("replacing stale pid file"))
        #expect((try? String(contentsOfFile: stale, encoding: .utf8)) == "\(c.pid)\n")
        c.signal(SIGTERM)
        #expect(c.wait() == 0)
    }

    @Test func aLiveUnixSocketIsRefusedAndAStaleOneReplaced() throws {
        let s = Scratch()
        let sock = s.path + "/app.sock"
        let b = Baton(s, listen: ["unix:" + sock], options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        #expect(b.waitServing(1))
        let r = runBaton(["run", "--listen", "unix:" + sock, "--", Binaries.testapp], in: s)
        #expect(r.code == 8)
        #expect(r.output.contains("already in use by a running server"))
        // SIGKILL the supervisor, then its orphaned generation: the file stays, stale.
        let app = try #require(pidIn(body(httpGet(unixPath: sock, path: "/env"))))
        kill(b.child.pid, SIGKILL)
        b.child.wait()
        kill(-app, SIGKILL)
        #expect(eventually(5) { isGone(app) })
        #expect(FileManager.default.fileExists(atPath: sock))
        let c = Child(
            Binaries.baton, ["run", "--listen", "unix:" + sock, "--settle", "0", "--probation", "0", "--", Binaries.testapp, "--notify"],
            log: s.path + "/c.log", cwd: s.path)
        #expect(eventually(10) { c.log.contains("serving") }, "\(c.log)")
        #expect(body(httpGet(unixPath: sock))?.contains("gen=1") == true)
        c.signal(SIGTERM)
        c.wait()
    }
}

/// What happens when the supervisor itself is killed.
@Suite(.serialized) struct SupervisorKilledTests {
    @Test func theOrphanedGenerationServesOnAndANewBatonSaysSo() throws {
        let s = Scratch()
        let (b, port) = try Baton.serving(s, options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        let app = try #require(pidIn(body(httpGet(port: port))))
        kill(b.child.pid, SIGKILL)
        b.child.wait()
        // Documented fate: the generation keeps serving on the inherited socket.
        #expect(body(httpGet(port: port))?.contains("pid=\(app)") == true)
        let c = Child(
            Binaries.baton, ["run", "--listen", "127.0.0.1:\(port)", "--", Binaries.testapp], log: s.path + "/second.log", cwd: s.path)
        #expect(c.wait(10) == 8)
        #expect(c.log.contains("is held by pid \(app)"), "\(c.log)")
        #expect(c.log.contains("generation 1 of a baton supervisor that is gone"))
        #expect(c.log.contains("kill -TERM -\(app)"))
        kill(-app, SIGTERM)
        #expect(eventually(5) { isGone(app) })
    }
}
