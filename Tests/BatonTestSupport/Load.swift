import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing

/// Concurrent clients hitting one endpoint until stopped, bounded in count
/// and time. A request fails when it gets no complete answer, a status other
/// than 200, or takes longer than `stall` seconds (a SYN retransmit or a
/// stuck queue is a failure, not a slow success). `stop()` waits for every
/// request under way: none is left uncounted.
public final class Load: @unchecked Sendable {
    public struct Stats: Sendable {
        public var ok = 0
        public var failed = 0
        /// Failures by kind: "status 502", "read: Connection reset by peer", "stalled 3.2 s", ...
        public var errors: [String: Int] = [:]
        /// The first word of each body seen (the release name or tag).
        public var releases: Set<String> = []
        /// When each failure happened, and what it was.
        public var failureTimes: [(Date, String)] = []
        /// When the last success came.
        public var lastSuccess: Date?
        /// Clients that stopped at their bound (count or time) before `stop()`.
        public var endedByBound = 0
        public var total: Int { ok + failed }
        public var serverErrors: Int { errors.filter { $0.key.hasPrefix("status 5") }.values.reduce(0, +) }
        /// The older name of `releases`.
        public var bodies: Set<String> { releases }
    }

    private let stats = Mutex(Stats())
    private let stopFlag = Atomic<Bool>(false)
    private let group = DispatchGroup()

    /// `uniquePaths` appends `?n=K` to each request so that a cache in between never answers it;
    /// with `network`, every client thread enters that namespace first.
    public init(
        _ endpoint: Endpoint, clients: Int = 8, path: String = "/", uniquePaths: Bool = false, maxRequests: Int = 1_000_000,
        maxSeconds: Double = 120, stall: Double = 5, network: PrivateNetwork? = nil
    ) {
        let namespaceHolder = network?.holder.pid
        let deadline = Date().addingTimeInterval(maxSeconds)
        let perClient = maxRequests / clients
        let counter = Atomic<Int>(0)
        for _ in 0..<clients {
            group.enter()
            Thread.detachNewThread { [self] in
                if let namespaceHolder {
                    precondition(enterNetworkNamespace(of: namespaceHolder), "setns: \(String(cString: strerror(errno)))")
                }
                var n = 0
                while !stopFlag.load(ordering: .relaxed), n < perClient, Date() < deadline {
                    n += 1
                    let target = uniquePaths ? path + "?n=\(counter.add(1, ordering: .relaxed).newValue)" : path
                    let began = Date()
                    let r = httpGet(endpoint, target, timeout: Int(stall) + 5)
                    let took = Date().timeIntervalSince(began)
                    stats.withLock { s in
                        func fail(_ why: String) {
                            s.failed += 1
                            s.errors[why, default: 0] += 1
                            s.failureTimes.append((Date(), why))
                        }
                        switch r {
                        case .success(let response) where response.status == 200 && took <= stall:
                            s.ok += 1
                            s.lastSuccess = Date()
                            s.releases.insert(String(response.body.split(separator: " ").first ?? ""))
                        case .success(let response) where response.status == 200:
                            fail("stalled \(String(format: "%.1f", took)) s")
                        case .success(let response):
                            fail("status \(response.status)")
                        case .failure(let e):
                            fail(e.text)
                        }
                    }
                }
                if !stopFlag.load(ordering: .relaxed) { stats.withLock { $0.endedByBound += 1 } }
                group.leave()
            }
        }
    }

    /// The integration tests' form: clients on a port of 127.0.0.1.
    public convenience init(port: UInt16, clients: Int = 8, path: String = "/", maxRequests: Int = 1_000_000, maxSeconds: Double = 120) {
        self.init(.tcp(port), clients: clients, path: path, maxRequests: maxRequests, maxSeconds: maxSeconds)
    }

    public var ok: Int { stats.withLock { $0.ok } }
    public var failures: [(Date, String)] { stats.withLock { $0.failureTimes } }
    public var lastSuccess: Date? { stats.withLock { $0.lastSuccess } }

    /// Stops the clients, waits for the requests under way, and returns the
    /// totals. A load that ended at its bound before this call may not have
    /// spanned what the test did meanwhile (its restarts): that is recorded
    /// as a test failure, so a load cannot end before the restarts unnoticed.
    public func stop(sourceLocation: SourceLocation = #_sourceLocation) -> Stats {
        stopFlag.store(true, ordering: .relaxed)
        group.wait()
        let s = stats.withLock { $0 }
        if s.endedByBound > 0 {
            Issue.record(
                "\(s.endedByBound) load client(s) reached their bound (request count or time) before stop(): the load may have ended before the restarts it was meant to span",
                sourceLocation: sourceLocation)
        }
        return s
    }
}

/// What wrk reported.
public struct WrkResult: Sendable, CustomStringConvertible {
    public var requests = 0
    public var connectErrors = 0
    public var readErrors = 0
    public var writeErrors = 0
    public var timeouts = 0
    public var non2xx = 0
    public var failed: Int { connectErrors + readErrors + writeErrors + timeouts + non2xx }
    public var description: String {
        "\(requests) requests, \(failed) failed (connect \(connectErrors), read \(readErrors), write \(writeErrors), "
            + "timeout \(timeouts), non-2xx \(non2xx))"
    }

    /// Reads wrk's summary ("N requests in", "Socket errors: ...", "Non-2xx or 3xx responses: N").
    public init(parsing text: String) {
        func number(after label: String, in line: Substring) -> Int {
            guard let r = line.range(of: label) else { return 0 }
            return Int(line[r.upperBound...].prefix { $0.isNumber }) ?? 0
        }
        for line in text.split(separator: "\n") {
            if line.contains("requests in") {
                requests = Int(line.trimmingCharacters(in: .whitespaces).prefix { $0.isNumber }) ?? 0
            } else if line.contains("Socket errors:") {
                connectErrors = number(after: "connect ", in: line)
                readErrors = number(after: "read ", in: line)
                writeErrors = number(after: "write ", in: line)
                timeouts = number(after: "timeout ", in: line)
            } else if line.contains("Non-2xx or 3xx responses:") {
                non2xx = number(after: "responses: ", in: line)
            }
        }
    }
}

/// wrk with `Connection: close` (every request a new connection), run until stopped.
///
/// wrk does not count what is still under way when it stops, and sweeps its
/// timeouts only every 2 s: a caller that judges zero loss by it must stop it
/// more than `timeout` + 2 s after the last restart (`quietTail`).
public final class Wrk: @unchecked Sendable {
    public let child: Child
    /// wrk's `--timeout`, seconds.
    public let timeout: Int

    /// `prefix` runs it through another command (nsenter into a namespace).
    public init(
        url: String, connections: Int = 32, threads: Int = 2, maxSeconds: Int = 180, timeout: Int = 2, log: String, prefix: [String] = [],
        keepAlive: Bool = false
    ) {
        self.timeout = timeout
        var args = ["-t\(threads)", "-c\(connections)", "-d\(maxSeconds)s", "--timeout", "\(timeout)s"]
        if !keepAlive { args += ["-H", "Connection: close"] }
        let command = prefix + [Tools.wrk!] + args + [url]
        child = Child(command[0], Array(command.dropFirst()), log: log)
    }

    /// The wait after the last restart before `stop()` for a connection stuck
    /// in a dead queue to show as a timeout: wrk's timeout, its 2 s sweep, and a second more.
    public var quietTail: UInt32 { UInt32(timeout + 3) * 1_000_000 }

    /// Stops wrk (SIGINT makes it print its summary) and reads its figures.
    public func stop() -> WrkResult {
        child.signal(SIGINT)
        child.wait(15)
        return WrkResult(parsing: child.log)
    }
}
