import CBatonShims
import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing

/// Where the package's executables are: next to the test bundle.
enum Binaries {
    static let directory: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var dir = (exe as NSString).deletingLastPathComponent
        // The bundle may be a directory (PackageTests.xctest/...) or a file.
        while !dir.isEmpty, dir != "/", !FileManager.default.fileExists(atPath: dir + "/baton") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()
    static var baton: String { directory + "/baton" }
    static var testapp: String { directory + "/baton-testapp" }
}

/// Waits up to `seconds` for `condition`, checking every 10 ms.
@discardableResult
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// A scratch directory for one test, removed at the end.
final class Scratch {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "baton-test-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit {
        // BATON_TEST_KEEP=1 keeps the logs of every test for a look afterwards.
        if ProcessInfo.processInfo.environment["BATON_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// Makes a release directory with testapp switches.
    @discardableResult
    func release(_ name: String, args: String = "") -> String {
        let dir = path + "/releases/" + name
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/testapp.args", contents: Data(args.utf8))
        return dir
    }

    /// Points `current` at a release (rename of a new symlink over the old).
    func point(_ link: String = "current", to release: String) {
        let tmp = path + "/." + link + ".tmp"
        unlink(tmp)
        symlink(path + "/releases/" + release, tmp)
        rename(tmp, path + "/" + link)
    }
}

/// A child process spawned with posix_spawn, stdout and stderr to a log file.
final class Child: @unchecked Sendable {
    let pid: pid_t
    let logPath: String
    private var reaped: Int32?

    init(_ path: String, _ args: [String], log: String, env: [String]? = nil, cwd: String? = nil, fds: [Int32] = []) {
        logPath = log
        let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        var pid: pid_t = 0
        let argv = ([path] + args).map { strdup($0) } + [nil]
        let envList = (env ?? ProcessInfo.processInfo.environment.map { "\($0)=\($1)" }).map { strdup($0) } + [nil]
        let saved = cwd.map { _ in FileManager.default.currentDirectoryPath }
        if let cwd { chdir(cwd) }
        let stdio: [Int32] = [devnull, fd, fd]
        let rc = argv.withUnsafeBufferPointer { a in
            envList.withUnsafeBufferPointer { e in
                stdio.withUnsafeBufferPointer { s in
                    fds.withUnsafeBufferPointer { f in
                        baton_spawn(&pid, path, a.baseAddress!, e.baseAddress!, f.baseAddress, nil, Int32(fds.count), s.baseAddress, 1, 0)
                    }
                }
            }
        }
        if let saved { chdir(saved) }
        for p in argv + envList { free(p) }
        close(fd)
        close(devnull)
        precondition(rc == 0, "spawn \(path): \(rc)")
        self.pid = pid
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Lines of the log containing `text`.
    func lines(_ text: String) -> [String] { log.split(separator: "\n").map(String.init).filter { $0.contains(text) } }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// Waits for the exit; returns the exit code (128+signal when killed), nil on timeout.
    @discardableResult
    func wait(_ seconds: Double = 15) -> Int32? {
        if let reaped { return reaped }
        var result: Int32?
        eventually(seconds) {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid {
                result = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                return true
            }
            return false
        }
        reaped = result
        return result
    }

    deinit {
        if reaped == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}

/// A `baton run` under test.
final class Baton {
    let child: Child
    let scratch: Scratch
    let pidFile: String

    init(_ scratch: Scratch, listen: [String] = ["127.0.0.1:0"], options: [String] = [], app: [String] = []) {
        self.scratch = scratch
        pidFile = scratch.path + "/baton.pid"
        var args = ["run", "--pid-file", pidFile]
        for l in listen { args += ["--listen", l] }
        args += options + ["--", Binaries.testapp] + app
        child = Child(Binaries.baton, args, log: scratch.path + "/baton.log", cwd: scratch.path)
    }

    var log: String { child.log }

    /// The TCP port of the first listener, from the start-up line.
    var port: UInt16? {
        guard let line = child.lines("listening on").first,
            let range = line.range(of: #":(\d+)[,;]"#, options: .regularExpression)
                ?? line.range(of: #":(\d+)"#, options: .regularExpression)
        else { return nil }
        return UInt16(line[range].dropFirst().prefix { $0.isNumber })
    }

    /// Waits until generation `n` serves.
    func waitServing(_ n: Int, _ seconds: Double = 15) -> Bool {
        eventually(seconds) { !child.lines("gen \(n) pid").filter { $0.hasSuffix(" serving") || $0.contains(" serving;") }.isEmpty }
    }

    func count(_ text: String) -> Int { child.lines(text).count }

    func hup() { child.signal(SIGHUP) }
}

/// Why a request failed.
struct HTTPFailure: Error, Hashable, CustomStringConvertible {
    let text: String
    init(_ text: String) { self.text = text }
    var description: String { text }
}

/// One HTTP/1.1 request on a fresh connection; the response, or the error.
func httpGet(port: UInt16? = nil, unixPath: String? = nil, host: String = "127.0.0.1", path: String = "/", timeout: Int = 10) -> Result<
    String, HTTPFailure
> {
    let fd: Int32
    if let unixPath {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in unixPath.utf8.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            close(fd)
            return .failure(HTTPFailure("connect: \(String(cString: strerror(errno)))"))
        }
    } else {
        let v6 = host.contains(":")
        fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var rc: Int32
        if v6 {
            var addr = sockaddr_in6()
            addr.sin6_family = sa_family_t(AF_INET6)
            addr.sin6_port = port!.bigEndian
            inet_pton(AF_INET6, host, &addr.sin6_addr)
            rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port!.bigEndian
            inet_pton(AF_INET, host, &addr.sin_addr)
            rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            return .failure(HTTPFailure("connect: \(String(cString: strerror(e)))"))
        }
    }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let request = "GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    guard request.withCString({ write(fd, $0, strlen($0)) }) > 0 else {
        return .failure(HTTPFailure("write: \(String(cString: strerror(errno)))"))
    }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return .failure(HTTPFailure("read: \(String(cString: strerror(errno)))")) }
        if n == 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 200") else {
        return .failure(HTTPFailure(text.isEmpty ? "empty response" : "status: \(text.prefix(40))"))
    }
    return .success(text)
}

/// The body of a successful response.
func body(_ r: Result<String, HTTPFailure>) -> String? {
    guard case .success(let text) = r, let range = text.range(of: "\r\n\r\n") else { return nil }
    return String(text[range.upperBound...])
}

/// Concurrent clients hitting one address until stopped, bounded in count and time.
final class Load: @unchecked Sendable {
    struct Stats {
        var ok = 0
        var failed = 0
        var errors: [String: Int] = [:]
        var bodies: Set<String> = []
        var failureTimes: [(Date, String)] = []
    }
    private let stats = Mutex(Stats())
    private let stopFlag = Atomic<Bool>(false)
    private let group = DispatchGroup()

    init(port: UInt16, clients: Int = 8, path: String = "/", maxRequests: Int = 200_000, maxSeconds: Double = 120) {
        let deadline = Date().addingTimeInterval(maxSeconds)
        let perClient = maxRequests / clients
        for _ in 0..<clients {
            group.enter()
            Thread.detachNewThread { [self] in
                var n = 0
                while !stopFlag.load(ordering: .relaxed), n < perClient, Date() < deadline {
                    n += 1
                    let r = httpGet(port: port, path: path)
                    stats.withLock { s in
                        switch r {
                        case .success:
                            s.ok += 1
                            if let b = body(r) { s.bodies.insert(String(b.split(separator: " ").first ?? "")) }
                        case .failure(let e):
                            s.failed += 1
                            s.errors[e.text, default: 0] += 1
                            s.failureTimes.append((Date(), e.text))
                        }
                    }
                }
                group.leave()
            }
        }
    }

    var ok: Int { stats.withLock { $0.ok } }
    var failures: [(Date, String)] { stats.withLock { $0.failureTimes } }

    /// Stops the clients and returns the totals.
    func stop() -> Stats {
        stopFlag.store(true, ordering: .relaxed)
        group.wait()
        return stats.withLock { $0 }
    }
}

/// The pids of every process in process group `pgid`.
func processGroupMembers(_ pgid: pid_t) -> [pid_t] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { name -> pid_t? in
        guard let pid = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8) else { return nil }
        // Fields after the command (which is in parentheses): state ppid pgrp ...
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 3, fields[0] != "Z", pid_t(fields[2]) == pgid else { return nil }
        return pid
    }
}

/// True when `pid` is gone (or a zombie).
func isGone(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
        return true
    }
    return stat[stat.index(after: close)...].split(separator: " ").first == "Z"
}

/// The pid in a `... pid=N` answer.
func pidIn(_ body: String?) -> pid_t? {
    guard let body, let range = body.range(of: #"pid=(\d+)"#, options: .regularExpression) else { return nil }
    return pid_t(body[range].dropFirst(4))
}

/// The process group in a `/env` answer.
func pgidIn(_ body: String?) -> pid_t? {
    guard let body, let range = body.range(of: #"pgid=(\d+)"#, options: .regularExpression) else { return nil }
    return pid_t(body[range].dropFirst(5))
}
