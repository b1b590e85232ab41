import Foundation
import Glibc
import Synchronization
import Testing

/// `baton run` with real processes, real sockets and real signals.
@Suite(.serialized) struct SupervisorTests {
    @Test func twentyRestartsUnderLoadFailNoRequest() throws {
        let s = Scratch()
        // No probation: 20 restarts one after the other, each waited for.
        let (b, port) = try Baton.serving(s, options: ["--settle", "0.2", "--ready", "notify", "--probation", "0"], app: ["--notify"])
        let load = Load(port: port, clients: 8)
        for n in 2...21 {
            b.hup()
            guard b.waitServing(n) else {
                Issue.record("generation \(n) did not take over\n\(b.log)")
                break
            }
        }
        #expect(eventually(5) { b.count("drained after") == 20 })
        let stats = load.stop()
        #expect(stats.failed == 0, "failed requests: \(stats.errors)")
        #expect(stats.ok > 100)
        b.stop()
        print("20 restarts under load: \(stats.ok) requests, \(stats.failed) failed")
    }

    @Test func aBrokenReleaseLeavesTheOldOneServing() throws {
        let s = Scratch()
        s.release("good")
        s.release("broken", args: "--crash-at-boot")
        s.point(to: "good")
        let (b, port) = try Baton.serving(s, options: ["--dir", s.path + "/current", "--settle", "0.3"], app: ["--notify"])
        let load = Load(port: port, clients: 8)
        s.point(to: "broken")
        for _ in 0..<3 {
            let failures = b.count("failed:")
            b.hup()
            #expect(eventually(10) { b.count("failed:") > failures })
        }
        s.point(to: "good")
        b.hup()
        #expect(b.waitServing(5))
        let stats = load.stop()
        #expect(stats.failed == 0, "failed requests: \(stats.errors)")
        #expect(b.child.lines("exited with exit code 1 before it was ready").filter { $0.contains(" pid ") }.count == 3)
        #expect(b.count("still serves") == 3)
        // The failed ones were not retried in a loop.
        #expect(b.count("spawned") == 5)
        #expect(body(httpGet(port: port))?.hasPrefix("good gen=5") == true)
        b.stop()
    }

    @Test func aHungGenerationIsKilledAtTheReadyDeadline() throws {
        let s = Scratch()
        s.release("good")
        s.release("hung", args: "--hang")
        s.point(to: "good")
        let b = Baton(
            s, options: ["--dir", s.path + "/current", "--ready", "notify", "--ready-timeout", "1s", "--settle", "0", "--probation", "0"],
            app: ["--notify"])
        #expect(b.waitServing(1))
        let port = try #require(b.port)
        s.point(to: "hung")
        b.hup()
        #expect(eventually(5) { b.child.lines("not ready after 1 s").filter { $0.contains(" pid ") }.count == 1 })
        let hungPid = try #require(b.child.lines("gen 2 pid").first.flatMap { pidIn($0.replacingOccurrences(of: "pid ", with: "pid=")) })
        #expect(eventually(10) { isGone(hungPid) })
        #expect(body(httpGet(port: port))?.hasPrefix("good gen=1") == true)
        b.stop()
    }

    @Test func anOldGenerationIgnoringTermIsKilledWithItsWholeGroup() throws {
        let s = Scratch()
        s.release("stubborn", args: "--ignore-term --workers 2")
        s.release("good")
        s.point(to: "stubborn")
        let (b, port) = try Baton.serving(
            s, options: ["--dir", s.path + "/current", "--settle", "0", "--probation", "0", "--drain-timeout", "1s"], app: ["--notify"])
        let master = try #require(pgidIn(body(httpGet(port: port, path: "/env"))))
        #expect(eventually(5) { processGroupMembers(master).count == 3 })
        let group = processGroupMembers(master)
        s.point(to: "good")
        b.hup()
        #expect(b.waitServing(2))
        #expect(eventually(5) { b.count("sent SIGKILL to its process group") == 1 })
        #expect(eventually(5) { group.allSatisfy(isGone) }, "left running: \(group.filter { !isGone($0) })")
        b.stop()
    }

    @Test func aCrashedServingGenerationComesBack() throws {
        let s = Scratch()
        let (b, port) = try Baton.serving(s, options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        let first = try #require(pidIn(body(httpGet(port: port))))
        kill(first, SIGKILL)
        #expect(b.waitServing(2))
        #expect(b.count("was killed unexpectedly by SIGKILL") == 1)
        let second = pidIn(body(httpGet(port: port)))
        #expect(second != nil && second != first)
        b.stop()
    }

    @Test func theChildGetsItsOwnListenPidAndOnlyTheListeners() throws {
        let s = Scratch()
        let sock = s.path + "/app.sock"
        let (b, port) = try Baton.serving(
            s, listen: ["127.0.0.1:0", "unix:" + sock], options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        let env = try #require(body(httpGet(port: port, path: "/env")))
        let pid = try #require(pidIn(env))
        #expect(env.contains("LISTEN_PID=\(pid)\n"))
        #expect(env.contains("LISTEN_FDS=2\n"))
        #expect(env.contains("LISTEN_FDNAMES=listen0:listen1\n"))
        #expect(env.contains("SERVER_STARTER_PORT=127.0.0.1:\(port)=3;\(sock)=4\n"))
        #expect(env.contains("fds=0,1,2,3,4\n"), "inherited descriptors: \(env)")
        #expect(env.contains("pgid=\(pid)\n"))
        // The unix socket serves the same app, with the default mode.
        #expect(body(httpGet(unixPath: sock))?.contains("pid=\(pid)") == true)
        var st = stat()
        stat(sock, &st)
        #expect(st.st_mode & 0o777 == 0o660)
        b.stop()
        #expect(!FileManager.default.fileExists(atPath: sock))
    }

    @Test func stopLeavesNoProcessAndNoFile() throws {
        let s = Scratch()
        let sock = s.path + "/app.sock"
        let status = s.path + "/status"
        let b = Baton(
            s, listen: ["127.0.0.1:0", "unix:" + sock], options: ["--settle", "0", "--probation", "0", "--status-file", status],
            app: ["--notify", "--workers", "2"])
        #expect(b.waitServing(1))
        let port = try #require(b.port)
        let pid = try #require(pgidIn(body(httpGet(port: port, path: "/env"))))
        #expect(eventually(5) { processGroupMembers(pid).count == 3 })
        let members = processGroupMembers(pid)
        #expect((try? String(contentsOfFile: status, encoding: .utf8)) == "1:\(pid)\n")
        #expect((try? String(contentsOfFile: b.pidFile, encoding: .utf8)) == "\(b.child.pid)\n")
        b.stop()
        #expect(members.allSatisfy(isGone))
        for file in [sock, status, b.pidFile] {
            #expect(!FileManager.default.fileExists(atPath: file), "\(file) left behind")
        }
        if case .success = httpGet(port: port) { Issue.record("the port still answers after stop") }
    }

    @Test func theReleaseDirectoryIsResolvedAtEachSpawn() throws {
        let s = Scratch()
        s.release("v1")
        s.release("v2")
        s.point(to: "v1")
        let (b, port) = try Baton.serving(
            s, options: ["--dir", s.path + "/current", "--settle", "0", "--probation", "0"], app: ["--notify"])
        #expect(body(httpGet(port: port, path: "/env"))?.contains("BATON_RELEASE_DIR=\(s.path)/releases/v1\n") == true)
        s.point(to: "v2")
        b.hup()
        #expect(b.waitServing(2))
        let env = body(httpGet(port: port, path: "/env")) ?? ""
        #expect(env.contains("BATON_RELEASE_DIR=\(s.path)/releases/v2\n"))
        #expect(env.contains("cwd=\(s.path)/releases/v2\n"))
        b.stop()
    }

    @Test func aSlowRequestIsFinishedByTheOldGeneration() throws {
        let s = Scratch()
        let (b, port) = try Baton.serving(s, options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        let slow = Threaded { body(httpGet(port: port, path: "/slow?ms=1500")) }
        usleep(200_000)
        b.hup()
        #expect(b.waitServing(2))
        #expect(body(httpGet(port: port))?.contains("gen=2") == true)
        let answer = slow.value(within: 10)
        #expect(answer != nil, "the slow request did not finish")
        #expect(answer??.contains("gen=1") == true)
        #expect(eventually(5) { b.count("drained after") == 1 })
        b.stop()
    }
}
