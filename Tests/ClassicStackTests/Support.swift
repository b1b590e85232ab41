import CBatonShims
import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing

// Support for the classic-stack tests: finding the package's binaries, the
// examples and the system's servers, spawning and stopping processes, plain
// HTTP/1.1 requests, a load of concurrent clients and wrk.

/// Where things are: the package's executables next to the test bundle, the
/// examples in this source tree, the servers installed on the machine.
enum Paths {
    /// The directory holding `baton`, `start_server` and `baton-testapp`.
    static let binaries: String = {
        var dir = realPath("/proc/self/exe")
        while !dir.isEmpty, dir != "/", !FileManager.default.fileExists(atPath: dir + "/baton") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()
    static var baton: String { binaries + "/baton" }
    static var startServer: String { binaries + "/start_server" }
    static var testapp: String { binaries + "/baton-testapp" }

    /// The root of the source tree (this file is Tests/ClassicStackTests/Support.swift).
    static let repository: String = {
        var path = realPath(#filePath)
        for _ in 0..<3 { path = (path as NSString).deletingLastPathComponent }
        return path
    }()
    static var examples: String { repository + "/examples" }

    /// An executable on the machine (PATH, then the sbin directories), or nil.
    static func tool(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/local/sbin"]
        return dirs.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// The servers of the classic stack, when installed (.ci/run installs them).
enum Tools {
    static let starman = Paths.tool("starman")
    /// Debian's Perl `start_server` (libserver-starter-perl), never ours: a Perl
    /// script at /usr/bin/start_server, or where dpkg-divert moved it.
    static let perlStartServer: String? = ["/usr/bin/start_server", "/usr/bin/start_server.perl"].first { path in
        guard FileManager.default.isExecutableFile(atPath: path), let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let head = String(decoding: (try? handle.read(upToCount: 64)) ?? Data(), as: UTF8.self)
        return head.hasPrefix("#!") && head.split(separator: "\n").first?.contains("perl") == true
    }
    static let nginx = Paths.tool("nginx")
    static let varnishd = Paths.tool("varnishd")
    static let wrk = Paths.tool("wrk")
    static let unshare = Paths.tool("unshare")
    static let nsenter = Paths.tool("nsenter")
    static let ip = Paths.tool("ip")
    static let sysctl = Paths.tool("sysctl")

    /// Starman can load the example app (Plack is there).
    static let hasStarman: Bool = starman != nil && run("/usr/bin/perl", ["-MPlack", "-MStarman", "-e", "1"]).status == 0
}

/// What the package's own binaries can do yet (the front ends grow in steps).
enum Features {
    /// Our `start_server` answers `--version` (it is a placeholder until then).
    static let ourStartServer: Bool = {
        let r = run(Paths.startServer, ["--version"])
        return r.status == 0 && r.output.contains(where: \.isNumber)
    }()
    /// `baton run --handover` exists.
    static let batonHandover: Bool = run(Paths.baton, ["help", "run"]).output.contains("--handover")
    /// `start_server --handover` exists.
    static let startServerHandover: Bool = ourStartServer && run(Paths.startServer, ["--help"]).output.contains("--handover")
    /// Root, with unshare/nsenter/ip/sysctl: a private network namespace can be made.
    static let privateNetwork: Bool = {
        guard getuid() == 0, let unshare = Tools.unshare, Tools.nsenter != nil, Tools.ip != nil, Tools.sysctl != nil else { return false }
        return run(unshare, ["-n", "--", "/bin/true"]).status == 0
    }()
}

/// Runs a command to its end (at most `timeout` seconds); its exit status and output (stdout and stderr).
func run(_ path: String, _ args: [String], cwd: String? = nil, env: [String: String] = [:], timeout: Double = 30) -> (
    status: Int32, output: String
) {
    let log = NSTemporaryDirectory() + "classic-run-" + UUID().uuidString.prefix(8) + ".log"
    defer { unlink(log) }
    let child = Child(path, args, log: log, cwd: cwd, env: env)
    let status = child.wait(timeout) ?? -1
    return (status, child.log)
}

/// Waits up to `seconds` for `condition`, checking every 20 ms.
@discardableResult
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// A scratch directory for one test, removed at the end unless BATON_TEST_KEEP is set.
final class Scratch: @unchecked Sendable {
    let path: String

    init(_ label: String = "stack") {
        path = NSTemporaryDirectory() + "baton-\(label)-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        // nginx's and Varnish's workers run as other users: let them in.
        chmod(path, 0o755)
    }

    deinit {
        if ProcessInfo.processInfo.environment["BATON_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: path)
        } else {
            print("kept \(path)")
        }
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ text: String) {
        _ = FileManager.default.createFile(atPath: file(name), contents: Data(text.utf8))
    }

    /// A testapp release directory with its switches in `testapp.args`.
    @discardableResult
    func testappRelease(_ name: String, args: String = "") -> String {
        let dir = path + "/releases/" + name
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        write("releases/\(name)/testapp.args", args)
        return dir
    }

    /// Points the symlink `link` at `target`, atomically (a new link renamed over the old one).
    func point(_ link: String = "current", to target: String) {
        let tmp = file("." + link + ".tmp")
        unlink(tmp)
        symlink(target, tmp)
        rename(tmp, file(link))
    }
}

/// A child process in a process group of its own, stdout and stderr to a log file.
final class Child: @unchecked Sendable {
    let pid: pid_t
    let logPath: String
    private let state = Mutex<Int32?>(nil)

    init(_ path: String, _ args: [String], log: String, cwd: String? = nil, env: [String: String] = [:]) {
        logPath = log
        let out = baton_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let devnull = baton_open("/dev/null", O_RDONLY | O_CLOEXEC, 0)
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let saved = FileManager.default.currentDirectoryPath
        if let cwd { chdir(cwd) }
        var pid: pid_t = 0
        let stdio: [Int32] = [devnull, out, out]
        let rc = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                stdio.withUnsafeBufferPointer { s in
                    baton_spawn(&pid, path, a.baseAddress!, e.baseAddress!, nil, nil, 0, s.baseAddress, 1, 0)
                }
            }
        }
        if cwd != nil { chdir(saved) }
        for p in argv + envp { free(p) }
        close(out)
        close(devnull)
        precondition(rc == 0, "spawn \(path): \(String(cString: strerror(rc)))")
        self.pid = pid
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The lines of the log that contain `text`.
    func lines(_ text: String) -> [String] {
        log.split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// Waits for the exit: the exit code (128+signal when killed), nil on timeout.
    @discardableResult
    func wait(_ seconds: Double = 15) -> Int32? {
        if let done = state.withLock({ $0 }) { return done }
        var result: Int32?
        eventually(seconds) {
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { return false }
            result = baton_wifexited(status) != 0 ? baton_wexitstatus(status) : 128 + baton_wtermsig(status)
            return true
        }
        if let result { state.withLock { $0 = result } }
        return result
    }

    var exited: Bool { state.withLock { $0 } != nil || wait(0) != nil }

    /// Stops it: `sig`, up to `grace` seconds, then SIGKILL to its whole process group.
    @discardableResult
    func stop(_ sig: Int32 = SIGTERM, grace: Double = 15) -> Int32? {
        if !exited {
            kill(pid, sig)
            if wait(grace) == nil {
                kill(-pid, SIGKILL)
                wait(5)
            }
        }
        // Whatever it left behind in its group (workers of a dead master).
        kill(-pid, SIGKILL)
        return state.withLock { $0 }
    }

    deinit {
        if state.withLock({ $0 }) == nil {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then closed).
func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            _ = bind(fd, p, len)
            return getsockname(fd, p, &len)
        }
    }
    return UInt16(bigEndian: addr.sin_port)
}

/// The `generation:pid` lines of a Server::Starter status file.
func statusGenerations(_ path: String) -> [(generation: Int, pid: Int)] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let parts = line.split(separator: ":")
        guard parts.count == 2, let g = Int(parts[0]), let p = Int(parts[1]) else { return nil }
        return (g, p)
    }
}

/// Why a request failed.
struct HTTPFailure: Error, Hashable, CustomStringConvertible {
    let text: String
    init(_ text: String) { self.text = text }
    var description: String { text }
}

/// An HTTP response: status code and body.
struct HTTPResponse: Sendable {
    let status: Int
    let head: String
    let body: String
}

/// Where a request goes.
enum Endpoint: Sendable, CustomStringConvertible {
    case tcp(UInt16)
    case unix(String)

    var description: String {
        switch self {
        case .tcp(let port): "127.0.0.1:\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// Connects a stream socket to `endpoint`: the descriptor, or the error.
func connectTo(_ endpoint: Endpoint) -> Result<Int32, HTTPFailure> {
    let fd: Int32
    let rc: Int32
    switch endpoint {
    case .unix(let path):
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    case .tcp(let port):
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
    if rc != 0 {
        let e = errno
        close(fd)
        return .failure(HTTPFailure("connect: \(String(cString: strerror(e)))"))
    }
    return .success(fd)
}

/// One HTTP/1.1 GET on a fresh connection with `Connection: close`.
func httpGet(_ endpoint: Endpoint, _ path: String = "/", timeout: Int = 10) -> Result<HTTPResponse, HTTPFailure> {
    let fd: Int32
    switch connectTo(endpoint) {
    case .failure(let e): return .failure(e)
    case .success(let s): fd = s
    }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let request = "GET \(path) HTTP/1.1\r\nHost: stack.test\r\nConnection: close\r\n\r\n"
    guard request.withCString({ write(fd, $0, strlen($0)) }) > 0 else {
        return .failure(HTTPFailure("write: \(String(cString: strerror(errno)))"))
    }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 8192)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return .failure(HTTPFailure("read: \(String(cString: strerror(errno)))")) }
        if n == 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard text.hasPrefix("HTTP/1."), let end = text.range(of: "\r\n\r\n") else {
        return .failure(HTTPFailure(text.isEmpty ? "empty response" : "garbled: \(text.prefix(40))"))
    }
    let status = Int(text.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
    return .success(HTTPResponse(status: status, head: String(text[..<end.lowerBound]), body: String(text[end.upperBound...])))
}

/// The body of a 200 answer, or nil.
func body(_ r: Result<HTTPResponse, HTTPFailure>) -> String? {
    guard case .success(let response) = r, response.status == 200 else { return nil }
    return response.body
}

/// Concurrent clients hitting one endpoint until stopped, bounded in count and time.
/// A request fails when it gets no complete answer or a status other than 200.
final class Load: @unchecked Sendable {
    struct Stats: Sendable {
        var ok = 0
        var failed = 0
        /// Failures by kind: "status 502", "read: Connection reset by peer", ...
        var errors: [String: Int] = [:]
        /// The first word of each body seen (the release name).
        var releases: Set<String> = []
        var total: Int { ok + failed }
        var serverErrors: Int { errors.filter { $0.key.hasPrefix("status 5") }.values.reduce(0, +) }
    }

    private let stats = Mutex(Stats())
    private let stopFlag = Atomic<Bool>(false)
    private let group = DispatchGroup()

    /// `uniquePaths` appends `?n=K` to each request so that a cache in between never answers it.
    init(
        _ endpoint: Endpoint, clients: Int = 8, path: String = "/", uniquePaths: Bool = false, maxRequests: Int = 200_000,
        maxSeconds: Double = 120
    ) {
        let deadline = Date().addingTimeInterval(maxSeconds)
        let perClient = maxRequests / clients
        let counter = Atomic<Int>(0)
        for _ in 0..<clients {
            group.enter()
            Thread.detachNewThread { [self] in
                var n = 0
                while !stopFlag.load(ordering: .relaxed), n < perClient, Date() < deadline {
                    n += 1
                    let target = uniquePaths ? path + "?n=\(counter.add(1, ordering: .relaxed).newValue)" : path
                    let r = httpGet(endpoint, target)
                    stats.withLock { s in
                        switch r {
                        case .success(let response) where response.status == 200:
                            s.ok += 1
                            s.releases.insert(String(response.body.split(separator: " ").first ?? ""))
                        case .success(let response):
                            s.failed += 1
                            s.errors["status \(response.status)", default: 0] += 1
                        case .failure(let e):
                            s.failed += 1
                            s.errors[e.text, default: 0] += 1
                        }
                    }
                }
                group.leave()
            }
        }
    }

    var ok: Int { stats.withLock { $0.ok } }

    /// Stops the clients and returns the totals.
    func stop() -> Stats {
        stopFlag.store(true, ordering: .relaxed)
        group.wait()
        return stats.withLock { $0 }
    }
}

/// What wrk reported.
struct WrkResult: Sendable, CustomStringConvertible {
    var requests = 0
    var connectErrors = 0
    var readErrors = 0
    var writeErrors = 0
    var timeouts = 0
    var non2xx = 0
    var failed: Int { connectErrors + readErrors + writeErrors + timeouts + non2xx }
    var description: String {
        "\(requests) requests, \(failed) failed (connect \(connectErrors), read \(readErrors), write \(writeErrors), "
            + "timeout \(timeouts), non-2xx \(non2xx))"
    }

    /// Reads wrk's summary ("N requests in", "Socket errors: ...", "Non-2xx or 3xx responses: N").
    init(parsing text: String) {
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
final class Wrk: @unchecked Sendable {
    let child: Child

    /// `prefix` runs it through another command (nsenter into a namespace).
    init(url: String, connections: Int = 32, threads: Int = 2, maxSeconds: Int = 180, log: String, prefix: [String] = []) {
        let args = [
            "-t\(threads)", "-c\(connections)", "-d\(maxSeconds)s", "--timeout", "10s",
            "-H", "Connection: close", url,
        ]
        let command = prefix + [Tools.wrk!] + args
        child = Child(command[0], Array(command.dropFirst()), log: log)
    }

    /// Stops wrk (SIGINT makes it print its summary) and reads its figures.
    func stop() -> WrkResult {
        child.signal(SIGINT)
        child.wait(15)
        return WrkResult(parsing: child.log)
    }
}

/// A `baton run` of the test app (or any command), in the foreground.
final class BatonRun: @unchecked Sendable {
    let child: Child
    let pidFile: String

    init(_ scratch: Scratch, listen: [String], options: [String] = [], command: [String]) {
        pidFile = scratch.file("baton.pid")
        var args = ["run", "--pid-file", pidFile]
        for l in listen { args += ["--listen", l] }
        args += options + ["--"] + command
        child = Child(Paths.baton, args, log: scratch.file("baton.log"), cwd: scratch.path)
    }

    var log: String { child.log }

    /// Waits until generation `n` serves (its log line).
    func waitServing(_ n: Int, _ seconds: Double = 20) -> Bool {
        eventually(seconds) {
            !child.lines("gen \(n) pid").filter { $0.hasSuffix(" serving") || $0.contains(" serving;") }.isEmpty
        }
    }

    func count(_ text: String) -> Int { child.lines(text).count }

    func hup() { child.signal(SIGHUP) }

    /// `baton deploy` against this supervisor: its exit status and output.
    func deploy(release: String, current: String, command: [String]) -> (status: Int32, output: String) {
        let args = ["deploy", "--pid-file", pidFile, "--release", release, "--current", current, "--timeout", "60s", "--"] + command
        return run(Paths.baton, args, timeout: 90)
    }

    @discardableResult
    func stop() -> Int32? { child.stop(SIGTERM, grace: 20) }
}
