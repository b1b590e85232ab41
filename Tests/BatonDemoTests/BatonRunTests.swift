import Foundation
import Glibc
import Synchronization
import Testing

/// Issue 3's integration tests: the release-built demo under `baton run`.
/// They sit in `DemoTests` so that they never overlap the other process tests.
extension DemoTests {
    /// A `baton run` of the demo on 127.0.0.1:`port`, with a private copy of
    /// the example releases and a `current` symlink to re-point.
    struct Supervised {
        let scratch: Scratch
        let port: Int
        let releases: String
        var process: DemoProcess

        init(release: String) throws {
            self.scratch = try Scratch()
            self.releases = self.scratch.path + "/releases"
            #expect(system("cp -R '\(DemoTests.releases)' '\(self.releases)'") == 0)
            #expect(symlink("releases/\(release)", self.scratch.path + "/current") == 0)
            self.port = Int(freePort())
            let baton = try DemoProcess.executable(named: "baton")
            let demo = try DemoProcess.demoExecutable()
            self.process = try DemoProcess.spawn(
                executable: baton,
                arguments: [
                    "run", "--listen", "127.0.0.1:\(self.port)", "--dir", self.scratch.path + "/current",
                    "--ready", "notify", "--settle", "0", "--probation", "0", "--pid-file", self.scratch.path + "/baton.pid", "--", demo,
                ],
                environment: [:],
                logPath: self.scratch.path + "/baton.log"
            )
        }

        /// Points `current` at another release.
        func switchRelease(to release: String) {
            let temporary = self.scratch.path + "/current.new"
            unlink(temporary)
            #expect(symlink("releases/\(release)", temporary) == 0)
            #expect(rename(temporary, self.scratch.path + "/current") == 0)
        }

        /// The generation shown by `/`, or nil when nothing answers.
        func servedGeneration() -> Int? {
            guard let page = try? Sockets.get(port: self.port, "/"), page.status == 200 else { return nil }
            return DemoTests.generation(in: page.body)
        }

        /// Waits until `/` is answered by generation `generation` or a later one.
        func waitForGeneration(_ generation: Int, seconds: Double = 20) throws -> Duration {
            let start = ContinuousClock.now
            let deadline = start + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < deadline {
                if let served = self.servedGeneration(), served >= generation {
                    return ContinuousClock.now - start
                }
                usleep(5_000)
            }
            throw DemoProcess.Failure(
                description: "generation \(generation) did not serve within \(seconds) s; log:\n\(self.process.log())"
            )
        }

        mutating func stop() throws {
            self.process.signal(SIGTERM)
            #expect(try self.process.waitForExit(seconds: 20) == 0, "baton log:\n\(self.process.log())")
        }
    }

    static func generation(in body: String) -> Int? {
        guard let range = body.range(of: "<dt>Generation</dt><dd>") else { return nil }
        return Int(body[range.upperBound...].prefix(while: \.isNumber))
    }

    /// Counts of a load run.
    final class Load: Sendable {
        let succeeded = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let reconnects = Atomic<Int>(0)
        let stopping = Atomic<Bool>(false)
        let running = Atomic<Int>(0)
        let generations = Mutex<Set<Int>>([])
        let failures = Mutex<[String]>([])

        func record(_ response: Sockets.Response) {
            if response.status == 200, let generation = DemoTests.generation(in: response.body) {
                self.succeeded.add(1, ordering: .relaxed)
                self.generations.withLock { _ = $0.insert(generation) }
            } else {
                self.fail("status \(response.status)")
            }
        }

        func fail(_ reason: String) {
            self.failed.add(1, ordering: .relaxed)
            self.failures.withLock { if $0.count < 20 { $0.append(reason) } }
        }

        /// One new connection per request (`Connection: close`): no request may fail, no retry.
        func runClosingClient(port: Int) {
            self.running.add(1, ordering: .relaxed)
            defer { self.running.subtract(1, ordering: .relaxed) }
            while !self.stopping.load(ordering: .relaxed) {
                do {
                    self.record(try Sockets.get(port: port, "/"))
                } catch {
                    self.fail("close client: \(error)")
                }
            }
        }

        /// Keep-alive requests on one connection, reconnecting when a
        /// response says `Connection: close`: no request may fail, no retry.
        func runKeepAliveClient(port: Int) {
            self.running.add(1, ordering: .relaxed)
            defer { self.running.subtract(1, ordering: .relaxed) }
            var connection: Int32?
            while !self.stopping.load(ordering: .relaxed) {
                do {
                    let fd = try connection ?? Sockets.connect(port: port)
                    connection = fd
                    try Sockets.sendGet(fd, path: "/", keepAlive: true)
                    let response = try Sockets.readResponse(fd)
                    self.record(response)
                    if response.headers["connection"]?.lowercased() == "close" {
                        close(fd)
                        connection = nil
                        self.reconnects.add(1, ordering: .relaxed)
                    }
                } catch {
                    self.fail("keep-alive client: \(error)")
                    if let fd = connection { close(fd) }
                    connection = nil
                }
            }
            if let fd = connection { close(fd) }
        }
    }

    @Test func twentyRestartsUnderLoadLoseNoRequest() throws {
        var supervised = try Supervised(release: "v1")
        defer { supervised.process.stop() }
        _ = try supervised.waitForGeneration(1)

        let load = Load()
        let port = supervised.port
        for index in 0..<8 {
            Thread.detachNewThread {
                if index < 4 { load.runClosingClient(port: port) } else { load.runKeepAliveClient(port: port) }
            }
        }
        usleep(300_000)
        var restartTimes: [Double] = []
        for restart in 1...20 {
            supervised.switchRelease(to: restart % 2 == 1 ? "v2" : "v1")
            supervised.process.signal(SIGHUP)
            let elapsed = try supervised.waitForGeneration(restart + 1)
            restartTimes.append(Self.milliseconds(elapsed))
            usleep(100_000)
        }
        load.stopping.store(true, ordering: .relaxed)
        for _ in 0..<300 where load.running.load(ordering: .relaxed) > 0 {
            usleep(50_000)
        }
        #expect(load.running.load(ordering: .relaxed) == 0, "load clients did not stop")

        let succeeded = load.succeeded.load(ordering: .relaxed)
        let failed = load.failed.load(ordering: .relaxed)
        let generations = load.generations.withLock { $0 }
        restartTimes.sort()
        print(
            "baton run, 20 restarts under load: \(succeeded) requests answered, \(failed) failed, "
                + "\(load.reconnects.load(ordering: .relaxed)) keep-alive reconnects on Connection: close, "
                + "\(generations.count) generations answered; HUP to new generation serving: "
                + "median \(restartTimes[restartTimes.count / 2]) ms, max \(restartTimes.last!) ms"
        )
        #expect(failed == 0, "failures: \(load.failures.withLock { $0 })")
        #expect(succeeded > 1_000)
        #expect(generations.count >= 15)
        #expect(restartTimes[restartTimes.count / 2] < 1000)
        try supervised.stop()
    }

    @Test func slowRequestIsAnsweredByTheOldReleaseWhileNewRequestsSeeTheNewOne() throws {
        var supervised = try Supervised(release: "v1")
        defer { supervised.process.stop() }
        _ = try supervised.waitForGeneration(1)
        #expect(try Sockets.get(port: supervised.port, "/").body.contains("template v1"))

        let slow = try Sockets.connect(port: supervised.port)
        defer { close(slow) }
        try Sockets.sendGet(slow, path: "/slow?ms=2500")
        usleep(300_000)

        supervised.switchRelease(to: "v2")
        supervised.process.signal(SIGHUP)
        let elapsed = try supervised.waitForGeneration(2)
        print("baton run --settle 0: HUP to generation 2 serving in \(Self.milliseconds(elapsed)) ms")
        #expect(elapsed < .seconds(1), "the restart should not wait for the 1 s fallback")
        let fresh = try Sockets.get(port: supervised.port, "/")
        #expect(fresh.body.contains("template v2"))
        #expect(fresh.body.contains("<dd>v2</dd>"))

        let answer = try Sockets.readResponse(slow)
        #expect(answer.status == 200)
        #expect(answer.body.contains("template v1"))
        #expect(answer.body.contains("<dd>v1</dd>"))
        #expect(Self.generation(in: answer.body) == 1)
        #expect(answer.body.contains("waited 2500 ms"))
        // The supervisor went by READY=1, not by the fallback timer.
        #expect(supervised.process.log().contains("READY=1"))
        try supervised.stop()
    }
}
