import Glibc
import Testing

/// The release-built `baton-demo` as a real process: standalone, on
/// inherited sockets, signalling readiness, draining on SIGTERM, and
/// refusing a wrong environment.
@Suite(.serialized) struct DemoTests {
    static let releases = DemoProcess.repositoryRoot() + "/examples/demo/releases"

    /// A private temporary directory, removed (with its files) by `cleanup`.
    final class Scratch {
        let path: String

        init() throws {
            var template = Array("/tmp/baton-demo-test-XXXXXX".utf8CString)
            let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!).map { String(cString: $0) } }
            guard let path else { throw DemoProcess.Failure(description: "mkdtemp failed") }
            self.path = path
        }

        deinit {
            _ = system("rm -rf '\(self.path)'")
        }
    }

    /// Waits for READY=1 from the demo, failing early if it exits.
    static func waitForReady(_ receiver: Int32, process: inout DemoProcess, seconds: Int = 20) throws -> (
        message: String, pid: Int32, elapsed: Duration
    ) {
        for _ in 0..<(seconds * 10) {
            if let (text, pid) = try Sockets.receive(receiver, timeoutMilliseconds: 100) {
                if text.split(separator: "\n").contains("READY=1") {
                    return (text, pid, ContinuousClock.now - process.spawnedAt)
                }
                continue
            }
            if process.hasExited() {
                throw DemoProcess.Failure(description: "baton-demo exited before READY=1; log:\n\(process.log())")
            }
        }
        throw DemoProcess.Failure(description: "no READY=1 within \(seconds) s; log:\n\(process.log())")
    }

    /// The demo on its own: `--bind 127.0.0.1:PORT` on a free port, with a
    /// notify socket of the test's own (and `environment`), once it sent
    /// READY=1. The caller stops the process and closes the receiver.
    static func standalone(
        _ scratch: Scratch, environment: [String: String] = [:], directory: String? = nil
    ) throws -> (process: DemoProcess, port: Int, receiver: Int32, ready: (message: String, pid: Int32, elapsed: Duration)) {
        let port = Int(freePort())
        let notifyPath = scratch.path + "/notify"
        let receiver = try Sockets.notifyReceiver(name: notifyPath)
        var process = try DemoProcess.spawn(
            arguments: ["--bind", "127.0.0.1:\(port)"],
            environment: environment.merging(["NOTIFY_SOCKET": notifyPath]) { $1 },
            directory: directory,
            logPath: scratch.path + "/demo.log"
        )
        do {
            return (process, port, receiver, try Self.waitForReady(receiver, process: &process))
        } catch {
            process.stop()
            close(receiver)
            throw error
        }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    @Test func standaloneServesPagesAndSignalsReady() throws {
        let scratch = try Scratch()
        // No BATON_RELEASE_DIR: templates come from ./templates.
        let started = try Self.standalone(scratch, directory: Self.releases + "/v1")
        var process = started.process
        let (port, receiver, ready) = (started.port, started.receiver, started.ready)
        defer {
            process.stop()
            close(receiver)
        }
        #expect(ready.pid == process.pid, "READY=1 must come from the demo's own pid")
        #expect(ready.message.contains("STATUS=serving 127.0.0.1:\(port)"))
        print("baton-demo standalone: spawn to READY=1 in \(Self.milliseconds(ready.elapsed)) ms")

        // Accepting as soon as READY=1 has arrived.
        let page = try Sockets.get(port: port, "/")
        #expect(page.status == 200)
        #expect(page.headers["content-type"] == "text/html; charset=utf-8")
        #expect(page.headers["date"]?.hasSuffix(" GMT") == true)
        // The request said `Connection: close`: so does the answer (a client
        // such as wrk otherwise sends its next request on the closing connection).
        #expect(page.headers["connection"]?.lowercased() == "close")
        #expect(page.body.contains("template v1"))
        #expect(page.body.contains("<dd>v1</dd>"))
        #expect(page.body.contains("<dd>standalone</dd>"))
        #expect(page.body.contains("<dd>\(process.pid)</dd>"))

        let health = try Sockets.get(port: port, "/health")
        #expect(health.status == 200)
        #expect(health.body == "ok\n")

        let start = ContinuousClock.now
        let slow = try Sockets.get(port: port, "/slow?ms=300")
        #expect(slow.status == 200)
        #expect(ContinuousClock.now - start >= .milliseconds(300))
        #expect(slow.body.contains("waited 300 ms"))
        #expect(slow.body.contains("template v1"))

        #expect(try Sockets.get(port: port, "/slow?ms=soon").status == 400)
        #expect(try Sockets.get(port: port, "/nothing-here").status == 404)

        process.signal(SIGTERM)
        #expect(try process.waitForExit(seconds: 10) == 0)
        let stopping = try Sockets.receive(receiver, timeoutMilliseconds: 1000)
        #expect(stopping?.text == "STOPPING=1")
    }

    @Test func servesInheritedSocketsFromListenFDs() throws {
        let scratch = try Scratch()
        let (tcp, port) = try Sockets.tcpListener()
        defer { close(tcp) }
        let unixPath = scratch.path + "/app.sock"
        let unix = try Sockets.unixListener(path: unixPath)
        defer { close(unix) }
        let notifyName = "@baton-demo-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let receiver = try Sockets.notifyReceiver(name: notifyName)
        defer { close(receiver) }
        var process = try DemoProcess.spawn(
            environment: [
                "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:local",
                "SERVER_STARTER_PORT": "127.0.0.1:\(port)=3;\(unixPath)=4",
                "SERVER_STARTER_GENERATION": "7", "BATON_GENERATION": "7",
                "BATON_RELEASE_DIR": Self.releases + "/v2", "NOTIFY_SOCKET": notifyName,
            ],
            sockets: [tcp, unix],
            directory: Self.releases + "/v2",
            setsListenPID: true,
            logPath: scratch.path + "/demo.log"
        )
        defer { process.stop() }
        let ready = try Self.waitForReady(receiver, process: &process)
        #expect(ready.pid == process.pid)
        print("baton-demo inherited: spawn to READY=1 in \(Self.milliseconds(ready.elapsed)) ms")

        let page = try Sockets.get(port: port, "/")
        #expect(page.status == 200)
        #expect(page.body.contains("template v2"))
        #expect(page.body.contains("<dd>v2</dd>"))
        #expect(page.body.contains("<dd>7</dd>"))
        let overUnix = try Sockets.get(socketPath: unixPath, "/health")
        #expect(overUnix.status == 200)
        #expect(process.log().contains("inherited fd 3 \"http\""))

        process.signal(SIGTERM)
        #expect(try process.waitForExit(seconds: 10) == 0)
        // The demo closed only its own copies: the supervisor's sockets still listen.
        #expect(Sockets.isListening(tcp))
        #expect(Sockets.isListening(unix))
    }

    @Test func sigtermDrainsInFlightRequestsAndClosesIdleConnections() throws {
        let scratch = try Scratch()
        let started = try Self.standalone(scratch, environment: ["BATON_RELEASE_DIR": Self.releases + "/v1"])
        var process = started.process
        let (port, receiver) = (started.port, started.receiver)
        defer {
            process.stop()
            close(receiver)
        }

        // An idle keep-alive connection, after one answered request.
        let idle = try Sockets.connect(port: port)
        defer { close(idle) }
        try Sockets.sendGet(idle, path: "/health", keepAlive: true)
        #expect(try Sockets.readResponse(idle).status == 200)

        // A slow request in flight.
        let slow = try Sockets.connect(port: port)
        defer { close(slow) }
        try Sockets.sendGet(slow, path: "/slow?ms=1500")
        usleep(300_000)
        let termAt = ContinuousClock.now
        process.signal(SIGTERM)

        // The idle connection is closed well before the slow answer is due.
        #expect(Sockets.closesWithin(idle, milliseconds: 1000))
        let response = try Sockets.readResponse(slow)
        #expect(response.status == 200)
        #expect(response.body.contains("waited 1500 ms"))
        #expect(ContinuousClock.now - termAt >= .milliseconds(1000))
        #expect(try process.waitForExit(seconds: 10) == 0)
        // Nothing listens any more.
        #expect(throws: (any Error).self) { try Sockets.connect(port: port) }
    }

    @Test func templatesAreReadOnceAtStart() throws {
        let scratch = try Scratch()
        let release = scratch.path + "/release-a"
        #expect(system("mkdir -p '\(release)' && cp -R '\(Self.releases)/v1/templates' '\(release)/'") == 0)
        let started = try Self.standalone(scratch, environment: ["BATON_RELEASE_DIR": release])
        var process = started.process
        let (port, receiver) = (started.port, started.receiver)
        defer {
            process.stop()
            close(receiver)
        }
        #expect(try Sockets.get(port: port, "/").body.contains("<dd>release-a</dd>"))
        #expect(system("echo 'changed on disk' > '\(release)/templates/page.mustache'") == 0)
        let page = try Sockets.get(port: port, "/")
        #expect(page.body.contains("template v1"))
        #expect(!page.body.contains("changed on disk"))
        process.signal(SIGTERM)
        #expect(try process.waitForExit(seconds: 10) == 0)
    }

    @Test(arguments: [
        // (environment, fd 3 is a socket, wrapper sets LISTEN_PID, expected text)
        (["LISTEN_FDS": "1", "LISTEN_PID": "1"], true, false, "LISTEN_PID=1"),
        (["LISTEN_FDS": "1"], false, true, "not a socket"),
        // fd 4 was not passed: the error names it (as not open, or as not a socket when the
        // runtime's own start-up took the free number before main ran).
        (["LISTEN_FDS": "2"], true, true, "baton-demo: fd 4 is "),
        (["SERVER_STARTER_PORT": "127.0.0.1:80"], true, false, "SERVER_STARTER_PORT"),
        (["LISTEN_FDS": "1", "SERVER_STARTER_PORT": "[::1]:1=3"], true, true, "does not match SERVER_STARTER_PORT"),
        (["BATON_RELEASE_DIR": "/nonexistent/release"], true, false, "no templates directory"),
    ])
    func refusesAWrongEnvironment(
        _ environment: [String: String],
        _ socketAtThree: Bool,
        _ setsListenPID: Bool,
        _ expected: String
    ) throws {
        let scratch = try Scratch()
        var sockets: [Int32] = []
        if socketAtThree {
            sockets.append(try Sockets.tcpListener().fd)
        } else {
            var ends: [Int32] = [0, 0]
            _ = try Sockets.check(pipe(&ends), "pipe")
            close(ends[1])
            sockets.append(try Sockets.park(ends[0]))
        }
        defer {
            for fd in sockets {
                close(fd)
            }
        }
        var environment = environment
        environment["BATON_RELEASE_DIR"] = environment["BATON_RELEASE_DIR"] ?? Self.releases + "/v1"
        var process = try DemoProcess.spawn(
            environment: environment,
            sockets: sockets,
            setsListenPID: setsListenPID,
            logPath: scratch.path + "/demo.log"
        )
        defer { process.stop() }
        #expect(try process.waitForExit(seconds: 10) == 1)
        #expect(process.log().contains(expected), "log: \(process.log())")
    }

    @Test func refusesABadCommandLine() throws {
        let scratch = try Scratch()
        var process = try DemoProcess.spawn(
            arguments: ["--bind", "nowhere"],
            environment: [:],
            logPath: scratch.path + "/demo.log"
        )
        defer { process.stop() }
        #expect(try process.waitForExit(seconds: 10) == 64)
        #expect(process.log().contains("usage: baton-demo"))
    }
}
