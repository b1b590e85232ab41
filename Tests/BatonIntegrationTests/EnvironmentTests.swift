import CBatonShims
import Foundation
import Glibc
import Testing

/// What a generation is given: sockets from systemd, IPv6, variables, user.
@Suite(.serialized) struct EnvironmentTests {
    @Test func socketsFromSystemdAreAdoptedAndPassedOn() throws {
        let s = Scratch()
        // A listening socket, as systemd would pass it, parked high so that it
        // lands at descriptor 3 in the child.
        let (parked, listenerPort) = try TestSockets.tcpListener()
        let port = UInt16(listenerPort)
        defer { close(parked) }
        let env =
            ProcessInfo.processInfo.environment.map { "\($0)=\($1)" } + [
                "LISTEN_FDS=1", "LISTEN_FDNAMES=web", "NOTIFY_SOCKET=/run/systemd/notify-of-baton-itself",
            ]
        let c = Child(
            "/bin/sh",
            [
                "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", Binaries.baton, "run", "--settle", "0", "--probation", "0", "--",
                Binaries.testapp, "--notify",
            ],
            log: s.path + "/log", env: env, cwd: s.path, fds: [parked])
        #expect(eventually(10) { c.log.contains(" serving") }, "\(c.log)")
        #expect(c.log.contains("adopted 1 socket(s) from systemd: 127.0.0.1:\(port)"))
        let answer = try #require(body(httpGet(port: port, path: "/env")))
        #expect(answer.contains("LISTEN_FDNAMES=web\n"))
        #expect(answer.contains("SERVER_STARTER_PORT=127.0.0.1:\(port)=3\n"))
        // baton's own NOTIFY_SOCKET is not the app's.
        #expect(answer.contains("NOTIFY_SOCKET=@baton/"))
        c.signal(SIGTERM)
        #expect(c.wait() == 0)
    }

    @Test func ipv6AndSeveralListeners() throws {
        let s = Scratch()
        let (b, port) = try Baton.serving(
            s, listen: ["[::1]:0", "127.0.0.1:0"], options: ["--settle", "0", "--probation", "0"], app: ["--notify"])
        let answer = try #require(body(httpGet(port: port, host: "::1", path: "/env")))
        #expect(answer.contains("SERVER_STARTER_PORT=[::1]:\(port)=3;127.0.0.1:"))
        b.stop()
    }

    @Test func envAndEnvdirAreReadAtEachSpawn() throws {
        let s = Scratch()
        let envdir = s.path + "/env"
        try FileManager.default.createDirectory(atPath: envdir, withIntermediateDirectories: true)
        try "first\n".write(toFile: envdir + "/FROM_ENVDIR", atomically: true, encoding: .utf8)
        let (b, port) = try Baton.serving(
            s, options: ["--settle", "0", "--probation", "0", "--envdir", envdir, "--env", "FROM_ENV=a=b"], app: ["--notify"])
        var answer = try #require(body(httpGet(port: port, path: "/env")))
        #expect(answer.contains("FROM_ENV=a=b\n"))
        #expect(answer.contains("FROM_ENVDIR=first\n"))
        // Every signal at its default and none blocked, glibc's internal 32
        // and 33 included (its posix_spawn would leave those ignored).
        #expect(answer.contains("signals=SigBlk:0000000000000000 SigIgn:0000000000000000\n"))
        try "second  \n".write(toFile: envdir + "/FROM_ENVDIR", atomically: true, encoding: .utf8)
        b.hup()
        #expect(b.waitServing(2))
        answer = try #require(body(httpGet(port: port, path: "/env")))
        #expect(answer.contains("FROM_ENVDIR=second\n"))
        // An envdir that cannot be read fails the restart, not the serving generation.
        try Data([0xff, 0xfe, 0x0a]).write(to: URL(fileURLWithPath: envdir + "/FROM_ENVDIR"))
        b.hup()
        #expect(eventually(5) { b.log.contains("is not valid UTF-8") })
        #expect(body(httpGet(port: port))?.contains("gen=2") == true)
        b.stop()
    }

    @Test(.enabled(if: Peers.available(getuid() == 0), "needs root")) func theAppRunsAsAnotherUser() throws {
        let s = Scratch()
        chmod(s.path, 0o755)
        let b = Baton(s, options: ["--settle", "0", "--probation", "0", "--user", "nobody"], app: ["--notify"])
        #expect(b.waitServing(1), "\(b.log)")
        let port = try #require(b.port)
        let answer = try #require(body(httpGet(port: port, path: "/env")))
        let nobody = try #require(getpwnam("nobody")).pointee
        #expect(answer.contains("uid=\(nobody.pw_uid)\n"))
        #expect(answer.contains("gid=\(nobody.pw_gid)\n"))
        b.stop()
    }

    @Test func manyHupsAtOnceRunAtMostTwoRestarts() throws {
        let s = Scratch()
        // No probation: the HUPs come while generation 2 starts, not while generation 1 is on probation.
        let b = Baton(s, options: ["--settle", "0.3", "--probation", "0"], app: ["--notify"])
        #expect(b.waitServing(1))
        for _ in 0..<20 {
            b.hup()
            usleep(2_000)
        }
        #expect(b.waitServing(3))
        usleep(800_000)
        #expect(b.count("spawned") == 3, "\(b.log)")
        let port = try #require(b.port)
        #expect(body(httpGet(port: port))?.contains("gen=3") == true)
        b.stop()
    }
}
