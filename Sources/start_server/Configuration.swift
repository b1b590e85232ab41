import BatonCore
import BatonSystem
import Glibc

/// The run configuration the options describe.
func configuration() throws(BatonError) -> RunConfiguration {
    var c = RunConfiguration()
    for p in options.all("port") { c.listen.append(try portSpec(p)) }
    for p in options.all("path") {
        guard p.utf8.count <= ListenAddress.maxUnixPathBytes else {
            throw BatonError(.usage, "--path \(p): over the kernel's limit of \(ListenAddress.maxUnixPathBytes) bytes")
        }
        c.listen.append(ListenSpec(.unix(path: p), envKey: p))
    }
    c.allowNoListeners = true
    if let mode = last("listen-mode") { c.listenMode = try ListenMode(option: mode) }
    if has("handover") { c.listenMode = .steered }
    if let b = last("backlog") { c.backlog = Int32(try OptionParsing.integer(b, option: "--backlog", range: 1...1_000_000)) }
    c.socketMode = 0o777 & ~UInt32(umask(0o022))
    umask(mode_t(0o777 & ~c.socketMode))
    c.pidFile = last("pid-file").map(Sys.absolute)
    c.statusFile = last("status-file").map(Sys.absolute)
    c.dir = last("dir").map(Sys.absolute)
    c.envdir = (last("envdir") ?? Sys.getenv("ENVDIR").flatMap { $0.isEmpty ? nil : $0 }).map(Sys.absolute)
    c.envdirStyle = .serverStarter
    c.command = options.rest
    c.controlPath = c.pidFile.map { _ in controlPath(pidFile: last("pid-file")!) }
    c.logFile = last("log-file").map { $0.hasPrefix("|") ? $0 : Sys.absolute($0) }

    var p = SupervisorPolicy()
    let interval = try seconds("interval") ?? .seconds(1)
    // --interval keeps Server::Starter's meaning: a new server takes over no
    // sooner than that after its start. It must also prove that it accepts
    // (and send READY=1 where it sends it), as under baton.
    p.readiness = .auto(fallback: interval)
    p.minimumAlive = interval
    if let r = last("ready") {
        switch r {
        case "notify": p.readiness = .notify
        case "auto": p.readiness = .auto(fallback: interval)
        default: p.readiness = .alive(try OptionParsing.duration(r, option: "--ready"))
        }
    }
    p.settle = .zero
    if let v = last("probation") { p.probation = try OptionParsing.duration(v, option: "--probation") }
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
    for name in ["handshake-window", "handover-delay"] {
        if let d = try seconds(name) { p.handshakeWindow = d }
    }
    c.policy = p
    // Server::Starter exports these to the server programs.
    if let v = last("envdir") { c.exportedEnv.append("ENVDIR=\(v)") }
    if has("enable-auto-restart") { c.exportedEnv.append("ENABLE_AUTO_RESTART=1") }
    if let v = last("kill-old-delay") { c.exportedEnv.append("KILL_OLD_DELAY=\(v)") }
    if let v = last("auto-restart-interval") { c.exportedEnv.append("AUTO_RESTART_INTERVAL=\(v)") }
    return c
}

/// Parses one --port value the way Server::Starter does.
func portSpec(_ text: String) throws(BatonError) -> ListenSpec {
    let trimmed = text.trimmingCharacters(" ")
    var body = Substring(trimmed)
    var fd: Int32?
    // A trailing "=fd" pins the descriptor number.
    if let eq = body.lastIndex(of: "="), let n = Int32(body[body.index(after: eq)...].trimmingCharacters(" ")), !body[..<eq].isEmpty {
        guard n >= 0, n < 100 else { throw BatonError(.usage, "--port \(text): descriptor \(n) is out of range (0-99)") }
        fd = n
        body = body[..<eq]
    }
    let key = String(body).trimmingCharacters(" ")
    // A "u" before the port number binds UDP; Server::Starter leaves it out
    // of the key in SERVER_STARTER_PORT.
    func udp(_ port: Substring) -> (Bool, Substring) { port.hasPrefix("u") ? (true, port.dropFirst()) : (false, port) }
    func address(_ host: String, _ port: UInt16, udp: Bool) -> ListenAddress {
        udp ? .udp(host: host, port: port) : .tcp(host: host, port: port)
    }
    let (bareUDP, bare) = udp(Substring(key))
    if !bare.isEmpty, bare.allSatisfy({ $0.isNumber }) {
        guard let port = Int(bare), port <= 65535 else { throw BatonError(.usage, "--port \(text): not a port number") }
        return ListenSpec(address("0.0.0.0", UInt16(port), udp: bareUDP), envKey: String(bare), fd: fd)
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
    let (isUDP, digits) = udp(Substring(portText.trimmingCharacters(" ")))
    let portString = String(digits)
    guard !portString.isEmpty, portString.allSatisfy({ $0.isNumber }), let port = Int(portString), port <= 65535 else {
        throw BatonError(.usage, "--port \(text): '\(portString)' is not a port number")
    }
    if host.isEmpty { host = "0.0.0.0" }
    // The key as Server::Starter writes it: HOST:PORT or [V6]:PORT, the port
    // as written, without the "u".
    let envKey = host.contains(":") ? "[\(host)]:\(portString)" : "\(host):\(portString)"
    return ListenSpec(address(host, UInt16(port), udp: isUDP), envKey: envKey, fd: fd)
}

extension StringProtocol {
    func trimmingCharacters(_ c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s = s.dropFirst() }
        while s.last == c { s = s.dropLast() }
        return String(s)
    }
}
