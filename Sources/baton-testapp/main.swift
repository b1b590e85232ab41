// A small HTTP app for Baton's integration tests. It serves on the sockets it
// inherits (LISTEN_FDS, else SERVER_STARTER_PORT) and can be told to misbehave.
//
//   --tag TEXT          put TEXT in every answer (default: the release directory's name)
//   --boot-delay D      wait D ms before serving
//   --crash-at-boot     exit 1 at once        --exit-at-boot   exit 0 at once
//   --hang              never serve, never send READY=1
//   --notify            send READY=1 once serving (--ready-delay D ms later)
//   --notify-garbage    send garbage, then READY=1 from a grandchild process
//   --ignore-term       ignore SIGTERM        --drop-on-term   exit at once on SIGTERM
//   --workers N         spawn N worker processes that serve too (same process group)
//   --crash-after D     exit 3 D ms after serving started
//   --health-status N   answer GET /health with status N
//   --unhealthy-after D answer GET /health with 503 from D ms after serving started
//
// A file `testapp.args` in the working directory (the release) adds switches,
// so that one release of a test can be broken and the next one good.
//
// GET / -> "tag gen pid"; GET /slow?ms=N -> the same after N ms; GET /env -> the
// inherited environment and open descriptors; GET /health -> ok.
import CBatonShims
import Dispatch
import Glibc
import Synchronization

nonisolated(unsafe) var wakeFD: Int32 = -1

/// The descriptors open when the process started, before anything else opened one.
let inheritedFDs: String = {
    var fds: [Int] = []
    if let dir = opendir("/proc/self/fd") {
        let own = Int(dirfd(dir))
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let n = Int(name), n != own { fds.append(n) }
        }
        closedir(dir)
    }
    return fds.sorted().map(String.init).joined(separator: ",")
}()
let inflight = Atomic<Int>(0)

func env(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
func say(_ text: String) { _ = (text + "\n").withCString { write(2, $0, strlen($0)) } }

var options: [String: String] = [:]
var argv = Array(CommandLine.arguments.dropFirst())
// A release directory can carry its own switches: ./testapp.args (whitespace-separated).
if let f = fopen("testapp.args", "r") {
    var line = [CChar](repeating: 0, count: 1024)
    while fgets(&line, Int32(line.count), f) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        argv += text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init)
    }
    fclose(f)
}
var isWorker = false
while let arg = argv.first {
    argv.removeFirst()
    switch arg {
    case "--health-status", "--unhealthy-after", "--tag", "--boot-delay", "--ready-delay", "--workers", "--crash-after", "--load",
        "--requests", "--concurrency", "--path":
        options[arg] = argv.isEmpty ? "" : argv.removeFirst()
    case "--worker":
        isWorker = true
    default:
        options[arg] = "1"
    }
}
let ms = { (key: String) in Int(options[key] ?? "0") ?? 0 }

// Load mode: --load PORT [--requests N] [--concurrency C] [--path P]: a bounded
// HTTP/1.1 client (Connection: close) printing "ok=N failed=N".
if let portText = options["--load"], let port = UInt16(portText) {
    let total = Int(options["--requests"] ?? "2000") ?? 2000
    let clients = Int(options["--concurrency"] ?? "8") ?? 8
    let requestPath = options["--path"] ?? "/"
    let ok = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let group = DispatchGroup()
    for _ in 0..<clients {
        group.enter()
        DispatchQueue.global().async {
            for _ in 0..<(total / clients) {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_port = port.bigEndian
                inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
                var tv = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                var good =
                    withUnsafePointer(to: &addr) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    } == 0
                if good {
                    let request = "GET \(requestPath) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    good = request.withCString { write(fd, $0, strlen($0)) } > 0
                }
                var response: [UInt8] = []
                var buf = [UInt8](repeating: 0, count: 4096)
                while good {
                    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 { good = false }
                    if n <= 0 { break }
                    response += buf[0..<n]
                }
                close(fd)
                if good, response.starts(with: Array("HTTP/1.1 200".utf8)) || response.starts(with: Array("HTTP/1.0 200".utf8)) {
                    ok.add(1, ordering: .relaxed)
                } else {
                    failed.add(1, ordering: .relaxed)
                }
            }
            group.leave()
        }
    }
    group.wait()
    print("ok=\(ok.load(ordering: .relaxed)) failed=\(failed.load(ordering: .relaxed))")
    exit(0)
}

if options["--crash-at-boot"] != nil {
    say("testapp: crashing at boot as asked")
    exit(1)
}
if options["--exit-at-boot"] != nil { exit(0) }

// The inherited listeners.
var listeners: [Int32] = []
if let count = env("LISTEN_FDS").flatMap(Int32.init), env("LISTEN_PID") == String(getpid()) || isWorker {
    listeners = (0..<count).map { 3 + $0 }
} else if let ports = env("SERVER_STARTER_PORT") {
    listeners = ports.split(separator: ";").compactMap { $0.split(separator: "=").last.flatMap { Int32($0) } }
}
if listeners.isEmpty {
    say("testapp: no inherited socket (LISTEN_FDS / SERVER_STARTER_PORT)")
    exit(2)
}

let cwd: String = {
    var buf = [CChar](repeating: 0, count: 4096)
    _ = getcwd(&buf, buf.count)
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()
let tag = options["--tag"] ?? String(cwd.split(separator: "/").last ?? "")
let healthStatus = options["--health-status"] ?? "200"
let unhealthyAfter = options["--unhealthy-after"].flatMap { Int($0) }
let generation = env("BATON_GENERATION") ?? env("SERVER_STARTER_GENERATION") ?? "?"

if options["--hang"] != nil {
    while true { pause() }
}
if ms("--boot-delay") > 0 { usleep(UInt32(ms("--boot-delay")) * 1000) }

func notify(_ message: String) {
    guard let path = env("NOTIFY_SOCKET") else { return }
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    var bytes = Array(path.utf8)
    if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
    let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
    _ = message.withCString { msg in
        withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, msg, strlen(msg), 0, $0, len) }
        }
    }
}

// Workers share the listeners and the process group.
var workerPids: [pid_t] = []
if !isWorker, let n = Int(options["--workers"] ?? "0"), n > 0 {
    let selfArgs = ["baton-testapp-worker"] + CommandLine.arguments.dropFirst().filter { $0 != "--notify" } + ["--worker"]
    for _ in 0..<n {
        var pid: pid_t = 0
        let pointers = selfArgs.map { strdup($0) } + [nil]
        let envp = (0..<1).map { _ in baton_environ() }[0]
        let rc = listeners.withUnsafeBufferPointer { fds in
            pointers.withUnsafeBufferPointer {
                baton_spawn(&pid, "/proc/self/exe", $0.baseAddress!, envp, fds.baseAddress, fds.baseAddress, Int32(fds.count), nil, 0, 0)
            }
        }
        for p in pointers { free(p) }
        if rc == 0 { workerPids.append(pid) }
    }
}

// Signals: a self-pipe wakes the accept loop.
var pipeFDs: [Int32] = [0, 0]
_ = pipe(&pipeFDs)
for fd in pipeFDs { _ = baton_fcntl_setfd(fd, FD_CLOEXEC) }
wakeFD = pipeFDs[1]
if options["--ignore-term"] != nil {
    signal(SIGTERM, SIG_IGN)
} else if options["--drop-on-term"] != nil {
    signal(SIGTERM, SIG_DFL)
} else {
    signal(SIGTERM) { _ in _ = write(wakeFD, "t", 1) }
}
signal(SIGPIPE, SIG_IGN)

for fd in listeners { _ = baton_fcntl_setfl(fd, baton_fcntl_getfl(fd) | O_NONBLOCK) }

let started = DispatchTime.now().uptimeNanoseconds

func respond(_ client: Int32) {
    defer {
        close(client)
        inflight.subtract(1, ordering: .relaxed)
    }
    var request: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 2048)
    while request.count < 16384 {
        let n = buf.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        request += buf[0..<n]
        if request.count >= 4, request.suffix(4) == [13, 10, 13, 10] { break }
    }
    let line = String(decoding: request.prefix { $0 != 13 }, as: UTF8.self)
    let target = line.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
    var body = "\(tag) gen=\(generation) pid=\(getpid())\n"
    if target.hasPrefix("/slow") {
        let value = target.split(separator: "=").last.flatMap { Int($0) } ?? 1000
        usleep(UInt32(value) * 1000)
    } else if target == "/health" {
        body = "ok\n"
        let sick = unhealthyAfter.map { DispatchTime.now().uptimeNanoseconds - started >= UInt64($0) * 1_000_000 } ?? false
        if let code = sick ? 503 : Int(healthStatus), code != 200 {
            body = "unhealthy: migration 42 missing\n"
            let response = "HTTP/1.1 \(code) Oops\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = response.withCString { write(client, $0, strlen($0)) }
            return
        }
    } else if target == "/env" {
        body =
            "pid=\(getpid())\nLISTEN_PID=\(env("LISTEN_PID") ?? "")\nLISTEN_FDS=\(env("LISTEN_FDS") ?? "")\n"
            + "LISTEN_FDNAMES=\(env("LISTEN_FDNAMES") ?? "")\nSERVER_STARTER_PORT=\(env("SERVER_STARTER_PORT") ?? "")\n"
            + "BATON_RELEASE_DIR=\(env("BATON_RELEASE_DIR") ?? "")\ncwd=\(cwd)\nfds=\(inheritedFDs)\n"
            + "pgid=\(getpgrp())\nuid=\(getuid())\ngid=\(getgid())\nNOTIFY_SOCKET=\(env("NOTIFY_SOCKET") ?? "")\n"
            + "FROM_ENV=\(env("FROM_ENV") ?? "")\nFROM_ENVDIR=\(env("FROM_ENVDIR") ?? "")\n"
    }
    let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    _ = response.withCString { write(client, $0, strlen($0)) }
}

say("testapp: pid \(getpid()) gen \(generation) serving on \(listeners.count) socket(s)\(isWorker ? " (worker)" : "")")
if options["--notify"] != nil, !isWorker {
    if ms("--ready-delay") > 0 { usleep(UInt32(ms("--ready-delay")) * 1000) }
    notify("STATUS=serving\nREADY=1")
}
let crashAt: Int64? = options["--crash-after"].flatMap { Int64($0) }

var pollFDs =
    listeners.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) } + [pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)]
var draining = false
while !draining {
    var timeout: Int32 = -1
    if let crashAt {
        let elapsed = Int64((DispatchTime.now().uptimeNanoseconds - started) / 1_000_000)
        if elapsed >= crashAt {
            say("testapp: crashing after \(crashAt) ms as asked")
            exit(3)
        }
        timeout = Int32(crashAt - elapsed)
    }
    let n = poll(&pollFDs, nfds_t(pollFDs.count), timeout)
    if n <= 0 { continue }
    for i in pollFDs.indices where pollFDs[i].revents != 0 {
        if i == pollFDs.count - 1 {
            draining = true
            break
        }
        while true {
            let client = accept(pollFDs[i].fd, nil, nil)
            if client < 0 {
                // A listener shut down by the supervisor (hand-over): stop polling it.
                if errno == EINVAL { pollFDs[i].fd = -1 }
                break
            }
            _ = baton_fcntl_setfd(client, FD_CLOEXEC)
            _ = baton_fcntl_setfl(client, baton_fcntl_getfl(client) & ~O_NONBLOCK)
            inflight.add(1, ordering: .relaxed)
            DispatchQueue.global().async { respond(client) }
        }
    }
}
// Graceful: stop accepting, let in-flight requests finish, then exit 0.
for fd in listeners { close(fd) }
for pid in workerPids { kill(pid, SIGTERM) }
while inflight.load(ordering: .relaxed) > 0 { usleep(5000) }
for pid in workerPids {
    var status: Int32 = 0
    waitpid(pid, &status, 0)
}
say("testapp: pid \(getpid()) drained, exiting")
exit(0)
