// A small HTTP app for Baton's integration tests. It serves on the sockets it
// inherits (LISTEN_FDS, else SERVER_STARTER_PORT) and can be told to misbehave.
//
//   --tag TEXT          put TEXT in every answer (default: the release directory's name)
//   --boot-delay D      wait D ms before serving
//   --crash-at-boot     exit 1 at once        --exit-at-boot   exit 0 at once
//   --hang              never serve, never send READY=1
//   --notify            send READY=1 once serving (--ready-delay D ms later)
//   --ignore-term       ignore SIGTERM        --drop-on-term   exit at once on SIGTERM
//   --workers N         spawn N worker processes that serve too (same process group)
//   --crash-after D     exit 3 D ms after serving started
//   --exit-after D      D ms after serving started, stop accepting, finish what it took, exit 0
//   --stop-accepting-after D   D ms after serving started, stop accepting and stay up
//   --worker-crash-loop never serve: say READY=1, and fork workers that die at boot, for ever
//                       (a prefork master whose app cannot load)
//   --health-status N   answer GET /health with status N
//   --unhealthy-after D answer GET /health with 503 from D ms after serving started
//
// Faults for the reliability suite (Tests/BatonIntegrationTests/Fault*.swift):
//   --notify-garbage        before READY=1: datagrams that are not UTF-8, empty, 64 KiB
//                           long, without '=', and one carrying descriptors
//   --notify-flood N        before READY=1: N malformed datagrams
//   --notify-errno N        send ERRNO=N (and a STATUS), never READY=1
//   --notify-from-child     READY=1 comes from a child process, never from the main one
//   --orphan-workers        on SIGTERM the main process exits at once, leaving its
//                           workers serving (they are never told to stop)
//   --escape-group          workers leave the process group (setsid)
//   --close-listener        close the inherited listeners at boot
//   --shutdown-listener W   shutdown(SHUT_RDWR) the inherited listeners at boot (W=boot)
//                           or on SIGTERM instead of closing them (W=term)
//   --flood-output MB       once serving, write MB MiB to stdout and stderr, fast
//   --leak-fds N            open N descriptors without FD_CLOEXEC at boot
//   --bind-own MODE         bind a socket of its own on the inherited listener's address
//                           (MODE plain or reuseport); exit 1 if the kernel refuses
//
// A file `testapp.args` in the working directory (the release) adds switches,
// so that one release of a test can be broken and the next one good.
//
// GET / -> "tag gen pid"; GET /slow?ms=N -> the same after N ms; GET /env -> the
// inherited environment, open descriptors and signal state; GET /health -> ok.
import BatonProtocol
import CBatonShims
import Dispatch
import Glibc
import Synchronization

nonisolated(unsafe) var wakeFD: Int32 = -1

/// The SIGTERM handler: wakes the accept loop. A function, not a closure
/// written in this file's top-level code: such a closure is main-actor
/// isolated and traps (SIGILL) when the signal lands on a Dispatch thread.
nonisolated func wakeOnTerm(_: Int32) {
    _ = write(wakeFD, "t", 1)
}

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
/// The SigIgn and SigBlk lines of /proc/self/status at start, before this
/// program changed a disposition or its mask: what the supervisor left it.
let inheritedSignals: String = {
    guard let file = fopen("/proc/self/status", "r") else { return "" }
    defer { fclose(file) }
    var lines: [String] = []
    var buffer = [CChar](repeating: 0, count: 512)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if line.hasPrefix("SigIgn:") || line.hasPrefix("SigBlk:") {
            lines.append(line.filter { $0 != "\t" && $0 != "\n" })
        }
    }
    return lines.joined(separator: " ")
}()
let inflight = Atomic<Int>(0)

func env(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
func say(_ text: String) { _ = (text + "\n").withCString { write(2, $0, strlen($0)) } }

/// Sends one datagram to `NOTIFY_SOCKET`, with `fds` attached (SCM_RIGHTS) if any.
func notifyBytes(_ bytes: [UInt8], passing fds: [Int32] = []) {
    guard let path = env(EnvironmentName.notifySocket) else { return }
    if case .failure(let f) = Notifier.send(bytes: bytes, to: path, passing: fds) { say("testapp: notify: \(f)") }
}

func notify(_ message: String) { notifyBytes(Array(message.utf8)) }

/// Spawns this executable again with `args` (same process group, same environment).
func spawnSelf(_ args: [String], fds: [Int32] = []) -> pid_t? {
    var pid: pid_t = 0
    let pointers = args.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    let rc = fds.withUnsafeBufferPointer { f in
        pointers.withUnsafeBufferPointer {
            baton_spawn(&pid, "/proc/self/exe", $0.baseAddress!, baton_environ(), f.baseAddress, f.baseAddress, Int32(f.count), nil, 0, 0)
        }
    }
    return rc == 0 ? pid : nil
}

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
        "--exit-after", "--stop-accepting-after",
        "--requests", "--concurrency", "--path", "--notify-errno", "--notify-flood", "--shutdown-listener", "--flood-output",
        "--leak-fds", "--bind-own", "--send-notify":
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

// A helper process: sends one notify message and exits (--notify-from-child).
if let text = options["--send-notify"] {
    notify(text)
    exit(0)
}

// A worker of --worker-crash-loop: it dies loading the app.
if options["--worker-dies"] != nil {
    usleep(150_000)
    exit(1)
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
    listeners = (try? ServerStarterPort.split(ports).get())?.compactMap { Int32($0.descriptor) } ?? []
}
if listeners.isEmpty {
    say("testapp: no inherited socket (LISTEN_FDS / SERVER_STARTER_PORT)")
    exit(2)
}
if isWorker, options["--escape-group"] != nil {
    _ = setsid()
}
if let n = Int(options["--leak-fds"] ?? ""), !isWorker {
    for _ in 0..<n { _ = open("/dev/null", O_RDONLY) }
    say("testapp: leaked \(n) descriptors")
}
if options["--close-listener"] != nil, !isWorker {
    for fd in listeners { close(fd) }
    listeners = []
    say("testapp: closed the inherited listeners")
}
if options["--shutdown-listener"] == "boot", !isWorker {
    for fd in listeners { say("testapp: shutdown(\(fd), SHUT_RDWR) = \(shutdown(fd, Int32(SHUT_RDWR)))") }
}
if let mode = options["--bind-own"], !isWorker, let first = listeners.first {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(first, $0, &length) } }
    let fd = socket(Int32(storage.ss_family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    if mode == "reuseport" { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) }
    let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard rc == 0, listen(fd, 64) == 0 else {
        say("testapp: cannot bind a socket of my own on the inherited address: \(String(cString: strerror(errno)))")
        exit(1)
    }
    say("testapp: bound a socket of my own (\(mode)) on the inherited address")
    listeners.append(fd)
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
if options["--worker-crash-loop"] != nil, !isWorker {
    // Like gunicorn's master: it says it is ready before its workers load the app.
    notify("STATUS=booted\nREADY=1")
    say("testapp: forking workers that die at boot, for ever")
    while true {
        if let pid = spawnSelf(["baton-testapp-worker", "--worker-dies"]) {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        usleep(50_000)
    }
}
if ms("--boot-delay") > 0 { usleep(UInt32(ms("--boot-delay")) * 1000) }

// Workers share the listeners and the process group.
var workerPids: [pid_t] = []
if !isWorker, let n = Int(options["--workers"] ?? "0"), n > 0 {
    let selfArgs = ["baton-testapp-worker"] + CommandLine.arguments.dropFirst().filter { $0 != "--notify" } + ["--worker"]
    for _ in 0..<n {
        if let pid = spawnSelf(selfArgs, fds: listeners) { workerPids.append(pid) }
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
    signal(SIGTERM, wakeOnTerm)
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
            + "signals=\(inheritedSignals)\n"
    }
    let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    _ = response.withCString { write(client, $0, strlen($0)) }
}

say("testapp: pid \(getpid()) gen \(generation) serving on \(listeners.count) socket(s)\(isWorker ? " (worker)" : "")")
if !isWorker {
    if options["--notify-garbage"] != nil {
        notifyBytes([0xFF, 0xFE, 0x00, 0x80, 0xC3])
        notifyBytes([])
        notifyBytes(Array(repeating: UInt8(ascii: "A"), count: 65536))
        notify("READY\n=1\nready=1\nREADY=yes\nno equals sign here")
        let passed = (0..<3).map { _ in open("/dev/null", O_RDONLY | O_CLOEXEC) }
        notifyBytes(Array("STATUS=here are three descriptors".utf8), passing: passed)
        for fd in passed { close(fd) }
        say("testapp: sent garbage on the notify socket")
    }
    if let n = Int(options["--notify-flood"] ?? "") {
        for i in 0..<n { notify("garbage \(i)") }
        say("testapp: sent \(n) malformed notify messages")
    }
    if let code = options["--notify-errno"] {
        notify("STATUS=cannot open the database\nERRNO=\(code)")
        say("testapp: sent ERRNO=\(code), never READY=1")
    }
    if options["--notify-from-child"] != nil,
        let child = spawnSelf(["baton-testapp-notifier", "--send-notify", "STATUS=from a child\nREADY=1"])
    {
        var status: Int32 = 0
        waitpid(child, &status, 0)
        say("testapp: READY=1 sent by child pid \(child), not by the main process")
    }
    if options["--notify"] != nil {
        if ms("--ready-delay") > 0 { usleep(UInt32(ms("--ready-delay")) * 1000) }
        notify("STATUS=serving\nREADY=1")
    }
    if let mb = Int(options["--flood-output"] ?? "") {
        DispatchQueue.global().async {
            let line = Array("testapp flood: \(String(repeating: "x", count: 84))\n".utf8)
            var block: [UInt8] = []
            while block.count < 65536 { block += line }
            var written = 0
            while written < mb << 20 {
                let n = block.withUnsafeBytes { write(written & 65536 == 0 ? 1 : 2, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                written += n
            }
            say("testapp: flooded \(written >> 20) MiB of output")
        }
    }
}
let crashAt: Int64? = options["--crash-after"].flatMap { Int64($0) }
let exitAt: Int64? = options["--exit-after"].flatMap { Int64($0) }
let stopAcceptingAt: Int64? = options["--stop-accepting-after"].flatMap { Int64($0) }

var pollFDs =
    listeners.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) } + [pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)]
var draining = false
/// Listeners found shut down (accept gave EINVAL): looked at again every 20 ms,
/// and polled again once they listen again.
var down: Set<Int> = []
func isListening(_ fd: Int32) -> Bool {
    var accepting: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 && accepting == 1
}
while !draining {
    for i in down where isListening(listeners[i]) {
        down.remove(i)
        pollFDs[i].fd = listeners[i]
        say("testapp: listener \(listeners[i]) listens again")
    }
    var timeout: Int32 = down.isEmpty ? -1 : 20
    if let crashAt {
        let elapsed = Int64((DispatchTime.now().uptimeNanoseconds - started) / 1_000_000)
        if elapsed >= crashAt {
            say("testapp: crashing after \(crashAt) ms as asked")
            exit(3)
        }
        timeout = timeout < 0 ? Int32(crashAt - elapsed) : min(timeout, Int32(crashAt - elapsed))
    }
    for (key, at) in [("--exit-after", exitAt), ("--stop-accepting-after", stopAcceptingAt)] {
        guard let at else { continue }
        let elapsed = Int64((DispatchTime.now().uptimeNanoseconds - started) / 1_000_000)
        if elapsed >= at {
            if key == "--exit-after" {
                say("testapp: giving up after \(at) ms as asked: finishing what it took, then exiting")
                draining = true
            } else {
                say("testapp: no longer accepting after \(at) ms as asked")
                while true { pause() }
            }
            break
        }
        timeout = timeout < 0 ? Int32(at - elapsed) : min(timeout, Int32(at - elapsed))
    }
    if draining { break }
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
                // A listener shut down (by the supervisor in hand-over mode, or by
                // another process holding it): stop polling it until it listens again.
                if errno == EINVAL {
                    pollFDs[i].fd = -1
                    down.insert(i)
                }
                break
            }
            _ = baton_fcntl_setfd(client, FD_CLOEXEC)
            _ = baton_fcntl_setfl(client, baton_fcntl_getfl(client) & ~O_NONBLOCK)
            inflight.add(1, ordering: .relaxed)
            DispatchQueue.global().async { respond(client) }
        }
    }
}
if options["--orphan-workers"] != nil, !isWorker {
    say("testapp: pid \(getpid()) exiting at once, leaving workers \(workerPids) behind")
    exit(0)
}
// Graceful: stop accepting, let in-flight requests finish, then exit 0.
if options["--shutdown-listener"] == "term" {
    for fd in listeners { say("testapp: shutdown(\(fd), SHUT_RDWR) = \(shutdown(fd, Int32(SHUT_RDWR)))") }
}
for fd in listeners { close(fd) }
for pid in workerPids { kill(pid, SIGTERM) }
while inflight.load(ordering: .relaxed) > 0 { usleep(5000) }
for pid in workerPids {
    var status: Int32 = 0
    waitpid(pid, &status, 0)
}
say("testapp: pid \(getpid()) drained, exiting")
exit(0)
