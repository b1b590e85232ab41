// start_server: a drop-in for Perl Server::Starter's start_server (0.35),
// on Baton's engine. Same options, environment, status file, signals.
// Differences are listed in docs/migrating-from-server-starter.md.
import BatonCore
import BatonSystem
import CBatonShims
import Glibc

let compatibleVersion = "0.35"

/// The options, Getopt::Long style: `--name=value`, `--name value`, `-name`,
/// and unique abbreviations.
struct Option {
    let name: String
    let kind: Kind
    enum Kind { case flag, string, integer, duration }
}

let options: [Option] = [
    Option(name: "port", kind: .string), Option(name: "path", kind: .string), Option(name: "interval", kind: .duration),
    Option(name: "log-file", kind: .string), Option(name: "pid-file", kind: .string), Option(name: "dir", kind: .string),
    Option(name: "signal-on-hup", kind: .string), Option(name: "signal-on-term", kind: .string),
    Option(name: "backlog", kind: .integer), Option(name: "envdir", kind: .string),
    Option(name: "enable-auto-restart", kind: .flag), Option(name: "daemonize", kind: .flag),
    Option(name: "auto-restart-interval", kind: .duration), Option(name: "kill-old-delay", kind: .duration),
    Option(name: "status-file", kind: .string), Option(name: "restart", kind: .flag), Option(name: "stop", kind: .flag),
    Option(name: "help", kind: .flag), Option(name: "version", kind: .flag),
    // Baton's additions.
    Option(name: "drain-timeout", kind: .duration), Option(name: "max-attempts", kind: .integer),
    Option(name: "handover", kind: .flag), Option(name: "handover-delay", kind: .duration),
    Option(name: "restart-timeout", kind: .duration), Option(name: "control", kind: .string),
    Option(name: "ready", kind: .string),
]

let usage = """
    Usage: start_server [options] -- server-prog server-arg1 server-arg2 ...

    A superdaemon for hot-deploying server programs (Server::Starter \(compatibleVersion)
    compatible, on Baton's engine).

    Options (as Server::Starter's):
      --port=(port|host:port|[v6]:port)[=fd]  TCP port to listen to, repeatable; a bare port
                                 binds 0.0.0.0; =fd puts the socket at that descriptor
      --path=path                unix socket to listen on, repeatable
      --dir=path                 working directory of the server program
      --interval=seconds         a new server alive this long is ready (default 1)
      --signal-on-hup=SIGNAL     signal for the old server on SIGHUP (default TERM)
      --signal-on-term=SIGNAL    signal for the servers on SIGTERM (default TERM)
      --pid-file=filename        write start_server's pid here
      --status-file=filename     write generation:pid lines here
      --envdir=ENVDIR            read environment variables from ENVDIR at each start
      --log-file=file | "| cmd"  send STDOUT and STDERR to a file or a command
      --daemonize                run in the background (needs --log-file)
      --enable-auto-restart      restart by time (--auto-restart-interval, default 360)
      --kill-old-delay=seconds   wait before signalling old servers (default 0; 5 with auto-restart)
      --backlog=size             listen backlog (default: the kernel's maximum)
      --restart                  restart the running start_server (--pid-file, --status-file)
      --stop                     stop the running start_server (--pid-file)
      --help, --version

    Baton's additions:
      --drain-timeout=D          SIGKILL old servers still running D after their signal (default: never)
      --max-attempts=N           give up on a new server after N failed starts (default 10)
      --handover                 one SO_REUSEPORT listener per generation, closed before the old
                                 server's signal (needs net.ipv4.tcp_migrate_req=1)
      --handover-delay=D         wait between closing the old listener and the signal (default 100ms)
      --restart-timeout=D        how long --restart and --stop wait (default 5m)
      --ready=notify|auto|D      readiness: READY=1 on NOTIFY_SOCKET, or alive D (default: --interval)
      --control=PATH             control socket (default: next to --pid-file); 'baton status' talks to it
    """

func die(_ message: String, code: Int32 = 255) -> Never {
    Sys.writeAll(2, "start_server: \(message)\n".utf8)
    exit(code)
}

// MARK: - Parsing

nonisolated(unsafe) var values: [String: [String]] = [:]
nonisolated(unsafe) var command: [String] = []
func parse(_ args: [String]) throws(BatonError) {
    var i = 0
    while i < args.count {
        let arg = args[i]
        i += 1
        if arg == "--" {
            command = Array(args[i...])
            return
        }
        guard arg.hasPrefix("-"), arg.count > 1 else {
            command = Array(args[(i - 1)...])
            return
        }
        var name = String(arg.drop { $0 == "-" })
        var inline: String?
        if let eq = name.firstIndex(of: "=") {
            inline = String(name[name.index(after: eq)...])
            name = String(name[..<eq])
        }
        let matches = options.filter { $0.name == name } + options.filter { $0.name != name && $0.name.hasPrefix(name) }
        guard let option = matches.first, matches.count == 1 || matches[0].name == name else {
            throw BatonError(
                .usage,
                matches.isEmpty ? "Unknown option: \(name)" : "Option \(name) is ambiguous (\(matches.map(\.name).joined(separator: ", ")))"
            )
        }
        if option.kind == .flag {
            guard inline == nil else { throw BatonError(.usage, "Option \(option.name) does not take an argument") }
            values[option.name, default: []].append("1")
            continue
        }
        let value: String
        if let inline {
            value = inline
        } else {
            guard i < args.count else { throw BatonError(.usage, "Option \(option.name) requires an argument") }
            value = args[i]
            i += 1
        }
        if option.kind == .integer, Int(value) == nil {
            throw BatonError(.usage, "Value \"\(value)\" invalid for option \(option.name) (number expected)")
        }
        values[option.name, default: []].append(value)
    }
}

func last(_ name: String) -> String? { values[name]?.last }
func has(_ name: String) -> Bool { values[name] != nil }

/// Parses one --port value the way Server::Starter does.
func portSpec(_ text: String) throws(BatonError) -> ListenSpec {
    let trimmed = text.trimmingSuffix(while: { $0 == " " }).drop { $0 == " " }
    var body = Substring(trimmed)
    var fd: Int32?
    // A trailing "=fd" pins the descriptor number.
    if let eq = body.lastIndex(of: "="), let n = Int32(body[body.index(after: eq)...].trimmingCharacters(" ")), !body[..<eq].isEmpty {
        guard n >= 0, n < 100 else { throw BatonError(.usage, "--port \(text): descriptor \(n) is out of range (0-99)") }
        fd = n
        body = body[..<eq]
    }
    let key = String(body).trimmingCharacters(" ")
    if key.hasPrefix("u") || key.contains(":u") {
        throw BatonError(.usage, "--port \(text): UDP ports are not supported by this start_server")
    }
    if !key.isEmpty, key.allSatisfy({ $0.isNumber }) {
        guard let port = Int(key), port <= 65535 else { throw BatonError(.usage, "--port \(text): not a port number") }
        return ListenSpec(.tcp(host: "0.0.0.0", port: UInt16(port)), envKey: key, fd: fd)
    }
    var host: String
    var portText: Substring
    if key.hasPrefix("["), !key.contains("]") {
        throw BatonError(.usage, "--port \(text): missing ']'; expected [host]:port")
    }
    if key.hasPrefix("["), let close = key.firstIndex(of: "]") {
        host = String(key[key.index(after: key.startIndex)..<close]).trimmingCharacters(" ")
        portText = key[key.index(after: close)...].drop { $0 == " " }
        guard portText.hasPrefix(":") else { throw BatonError(.usage, "--port \(text): expected [host]:port") }
        portText = portText.dropFirst()
    } else if let colon = key.lastIndex(of: ":") {
        host = String(key[..<colon]).trimmingCharacters(" ")
        portText = key[key.index(after: colon)...]
    } else {
        throw BatonError(.usage, "--port \(text): expected port, host:port or [host]:port, optionally followed by =fd")
    }
    let portString = portText.trimmingCharacters(" ")
    guard !portString.isEmpty, portString.allSatisfy({ $0.isNumber }), let port = Int(portString), port <= 65535 else {
        throw BatonError(.usage, "--port \(text): '\(portString)' is not a port number")
    }
    if host.isEmpty { host = "0.0.0.0" }
    return ListenSpec(.tcp(host: host, port: UInt16(port)), envKey: key, fd: fd)
}

extension StringProtocol {
    func trimmingCharacters(_ c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s = s.dropFirst() }
        while s.last == c { s = s.dropLast() }
        return String(s)
    }
}

func seconds(_ name: String, _ envName: String? = nil) throws(BatonError) -> Duration? {
    guard let text = last(name) ?? envName.flatMap(Sys.getenv).flatMap({ $0.isEmpty ? nil : $0 }) else { return nil }
    return try OptionParsing.duration(text, option: "--\(name)")
}

// MARK: - --restart and --stop

func readPid(_ path: String) -> pid_t? {
    Sys.readFile(path, limit: 64).flatMap { pid_t(String(decoding: $0, as: UTF8.self).trimmingSuffix(while: { $0 == "\n" || $0 == " " })) }
}

func generations(_ statusFile: String) -> [Int] {
    guard let bytes = Sys.readFile(statusFile, limit: 1 << 16) else { return [] }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
        line.split(separator: ":").first.flatMap { Int($0) }
    }.sorted()
}

func controlPath(pidFile: String) -> String {
    last("control").map(Sys.absolute) ?? PidFile.defaultControlPath(for: Sys.absolute(pidFile))
}

/// Waits for a change in `dir` (inotify), at most until `deadline`.
func waitForChange(watching fd: Int32, until deadline: Instant) -> Bool {
    let now = Sys.now()
    guard deadline > now else { return false }
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let r = poll(&p, 1, Int32(clamping: (deadline.nanoseconds - now.nanoseconds) / 1_000_000 + 1))
    if r > 0 {
        var buf = [UInt8](repeating: 0, count: 4096)
        _ = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    }
    return true
}

/// --restart-timeout, default 5 minutes; a malformed value is a usage error.
func restartTimeout() -> Duration {
    do {
        return try seconds("restart-timeout") ?? .seconds(300)
    } catch {
        die(error.message, code: 1)
    }
}

func restartServer() -> Never {
    guard let pidFile = last("pid-file"), let statusFile = last("status-file") else {
        die("--restart option requires --pid-file and --status-file to be set as well")
    }
    let timeout = restartTimeout()
    let deadline = Sys.now() + timeout
    // Our own start_server answers on its control socket: the real outcome, at once.
    let control = controlPath(pidFile: pidFile)
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    if fd >= 0, Listeners.withUnixAddress(control, { connect(fd, $0, $1) }) == 0 {
        Sys.writeAll(fd, (JSON.object(["v": .number(1), "cmd": .string("restart")]).text + "\n").utf8)
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            while let nl = buffer.firstIndex(of: 10) {
                let line = JSON(parsing: String(decoding: buffer[..<nl], as: UTF8.self))
                buffer.removeSubrange(...nl)
                if let line, line["type"]?.string == "progress", let m = line["message"]?.string {
                    Sys.writeAll(2, "start_server: gen \(line["generation"]?.int ?? 0) \(m)\n".utf8)
                }
                if let line, line["type"]?.string == "result" {
                    if line["ok"]?.bool == true { exit(0) }
                    die(line["message"]?.string ?? "restart failed", code: Int32(line["exit"]?.int ?? 255))
                }
            }
            guard waitForRead(fd, until: deadline) else { die("no outcome within \(timeout.humanDescription)", code: 7) }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { die("the server closed the control connection without an answer") }
            buffer += chunk[0..<n]
        }
    }
    if fd >= 0 { close(fd) }
    // Any start_server (Perl's too): HUP, then watch the status file until one
    // generation, newer than before, is left — with a deadline.
    guard let pid = readPid(pidFile) else { die("failed to open file:\(pidFile): \(Sys.describe(errno: errno))") }
    guard let before = generations(statusFile).last else { die("no active process found in the status file") }
    let dir = String(Sys.absolute(statusFile).split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
    let inotify = baton_inotify_watch(dir.isEmpty ? "/" : dir)
    guard kill(pid, SIGHUP) == 0 else { die("failed to send SIGHUP to the server process:\(Sys.describe(errno: errno))") }
    while true {
        let now = generations(statusFile)
        if now.count == 1, now[0] > before { exit(0) }
        guard inotify >= 0 else { die("cannot watch \(dir): \(Sys.describe(errno: errno))") }
        guard waitForChange(watching: inotify, until: deadline) else {
            die(
                "no single generation newer than \(before) is serving after \(timeout.humanDescription) (status: \(now.map(String.init).joined(separator: ",")))",
                code: 7)
        }
    }
}

func waitForRead(_ fd: Int32, until deadline: Instant) -> Bool {
    while true {
        let now = Sys.now()
        guard deadline > now else { return false }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let r = poll(&p, 1, Int32(clamping: (deadline.nanoseconds - now.nanoseconds) / 1_000_000 + 1))
        if r > 0 { return true }
        if r < 0, errno != EINTR { return false }
    }
}

func stopServer() -> Never {
    guard let pidFile = last("pid-file") else { die("--stop option requires --pid-file to be set as well") }
    let timeout = restartTimeout()
    let fd = baton_open(pidFile, O_RDWR | O_CLOEXEC, 0)
    guard fd >= 0, let pid = readPid(pidFile) else { die("failed to open file:\(pidFile):\(Sys.describe(errno: errno))") }
    Sys.writeAll(2, "stop_server (pid:\(getpid())) stopping now (pid:\(pid))...\n".utf8)
    guard kill(pid, SIGTERM) == 0 else { die("failed to send SIGTERM to the server process:\(Sys.describe(errno: errno))") }
    // The server holds the pid file's lock until it has exited.
    guard baton_flock_timeout(fd, Int64(timeout.milliseconds)) == 0 else {
        die("the server (pid \(pid)) is still running after \(timeout.humanDescription)", code: 7)
    }
    exit(0)
}

// MARK: - Main

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "__exec" { execHelper(Array(arguments.dropFirst())) }
Log.setProgram("start_server")
signal(SIGPIPE, SIG_IGN)
let reportFD = Daemon.adoptReportPipe()
do {
    try parse(arguments)
} catch {
    Sys.writeAll(2, "\(error.message)\n".utf8)
    exit(1)
}
if has("help") {
    print(usage)
    exit(0)
}
if has("version") {
    print(compatibleVersion)
    exit(0)
}
if has("restart") { restartServer() }
if has("stop") { stopServer() }
if has("daemonize"), last("log-file") == nil {
    die("Usage: --log-file option must be specified together with --deamonize")
}
guard !command.isEmpty else { die("server program not specified") }

do throws(BatonError) {
    var c = RunConfiguration()
    for p in values["port"] ?? [] { c.listen.append(try portSpec(p)) }
    for p in values["path"] ?? [] {
        guard p.utf8.count <= ListenAddress.maxUnixPathBytes else {
            throw BatonError(.usage, "--path \(p): over the kernel's limit of \(ListenAddress.maxUnixPathBytes) bytes")
        }
        c.listen.append(ListenSpec(.unix(path: p), envKey: p))
    }
    c.allowNoListeners = true
    c.handover = has("handover")
    if let b = last("backlog") { c.backlog = Int32(try OptionParsing.integer(b, option: "--backlog", range: 1...1_000_000)) }
    c.socketMode = 0o777 & ~UInt32(umask(0o022))
    umask(mode_t(0o777 & ~c.socketMode))
    c.pidFile = last("pid-file").map(Sys.absolute)
    c.statusFile = last("status-file").map(Sys.absolute)
    c.dir = last("dir").map(Sys.absolute)
    c.envdir = (last("envdir") ?? Sys.getenv("ENVDIR").flatMap { $0.isEmpty ? nil : $0 }).map(Sys.absolute)
    c.envdirStyle = .serverStarter
    c.command = command
    c.controlPath = c.pidFile.map { _ in controlPath(pidFile: last("pid-file")!) }

    var p = SupervisorPolicy()
    let interval = try seconds("interval") ?? .seconds(1)
    p.readiness = .alive(interval)
    if let r = last("ready") {
        switch r {
        case "notify": p.readiness = .notify
        case "auto": p.readiness = .auto(fallback: interval)
        default: p.readiness = .alive(try OptionParsing.duration(r, option: "--ready"))
        }
    }
    p.settle = .zero
    p.readyTimeout = max(.seconds(60), interval + .seconds(60))
    p.retryDelay = interval
    p.attemptRetries =
        try last("max-attempts").map { (t: String) throws(BatonError) in
            try OptionParsing.integer(t, option: "--max-attempts", range: 1...1_000_000) - 1
        } ?? 9
    p.exitWhenFirstFails = true
    let autoRestart = has("enable-auto-restart") || !(Sys.getenv("ENABLE_AUTO_RESTART") ?? "").isEmpty
    if autoRestart { p.autoRestartInterval = try seconds("auto-restart-interval", "AUTO_RESTART_INTERVAL") ?? .seconds(360) }
    p.killOldDelay = try seconds("kill-old-delay", "KILL_OLD_DELAY") ?? (autoRestart ? .seconds(5) : .zero)
    p.drainTimeout = try seconds("drain-timeout")
    if let s = last("signal-on-hup") { p.signalOnHup = try OptionParsing.signal(s, option: "--signal-on-hup") }
    if let s = last("signal-on-term") { p.signalOnTerm = try OptionParsing.signal(s, option: "--signal-on-term") }
    if c.handover { p.doorDelay = try seconds("handover-delay") ?? .milliseconds(100) }
    c.policy = p
    // Server::Starter exports these to the server programs.
    if let v = last("envdir") { c.exportedEnv.append("ENVDIR=\(v)") }
    if has("enable-auto-restart") { c.exportedEnv.append("ENABLE_AUTO_RESTART=1") }
    if let v = last("kill-old-delay") { c.exportedEnv.append("KILL_OLD_DELAY=\(v)") }
    if let v = last("auto-restart-interval") { c.exportedEnv.append("AUTO_RESTART_INTERVAL=\(v)") }

    if has("daemonize"), reportFD == nil {
        // Spawned again in a session of its own; returns once the first
        // server is ready (Server::Starter returns at once, ready or not).
        _ = try Supervisor(configuration: c)
        if let pidFile = c.pidFile, case .live(let pid) = PidFile.inspect(pidFile) {
            throw BatonError(.alreadyRunning, "already running (pid \(pid.map(String.init) ?? "?")) with pid file \(pidFile)")
        }
        let logFile = last("log-file")!
        // The same arguments without --daemonize (or its abbreviations), before "--".
        let split = arguments.firstIndex(of: "--") ?? arguments.count
        let own = arguments[..<split].filter { arg in
            let name = arg.drop { $0 == "-" }
            return !(arg.hasPrefix("-") && name.count >= 2 && "daemonize".hasPrefix(name))
        }
        let args = ["start_server"] + own + arguments[split...]
        let deadline = Sys.now() + p.readyTimeout * Double(p.attemptRetries + 2) + .seconds(15)
        let (result, _) = try Daemon.spawnAndWait(
            arguments: args, logFile: logFile.hasPrefix("|") ? nil : Sys.absolute(logFile), umask: 0o022, deadline: deadline
        ) { _ in }
        if result["ok"]?.bool == true { exit(0) }
        die(result["message"]?.string ?? "the server did not start", code: Int32(result["exit"]?.int ?? 255))
    }
    if let log = last("log-file") { try LogRedirect.apply(log) }
    c.logFile = last("log-file").flatMap { $0.hasPrefix("|") ? nil : Sys.absolute($0) }
    c.startReportFD = reportFD
    let supervisor = try Supervisor(configuration: c)
    let code = try supervisor.run()
    exit(code)
} catch {
    if let fd = reportFD { Sys.writeAll(fd, (error.resultJSON.text + "\n").utf8) }
    // Server::Starter dies with errno as its exit code where there is one.
    die(error.message, code: error.code == .usage ? 1 : error.errno ?? 255)
}
