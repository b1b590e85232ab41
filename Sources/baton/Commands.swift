import BatonControl
import BatonCore
import BatonSystem
import CBatonShims
import Glibc

/// Parses the arguments of `command`; prints its help and exits on `--help`.
func parse(_ command: CommandSpec, _ args: [String], positional: PositionalRule) throws(BatonError) -> ParsedOptions {
    let o = try ParsedOptions(args, specs: command.options, command: "baton \(command.name)", positional: positional)
    if o.has("help") {
        Out.line(HelpText.render(program: "baton", command, width: terminalWidth()))
        exit(0)
    }
    return o
}

/// The terminal's width for help text (80 when it is not a terminal).
func terminalWidth() -> Int {
    var size = winsize()
    guard isatty(1) == 1, ioctl(1, UInt(TIOCGWINSZ), &size) == 0, size.ws_col >= 40 else { return 80 }
    return min(Int(size.ws_col), 120)
}

/// The supervisor the options name.
func locations(_ o: ParsedOptions, creating: Bool = false) throws(BatonError) -> Locations {
    if let p = o.positional, let n = o.last("name"), p != n {
        throw BatonError(.usage, "two names given ('\(p)' and --name '\(n)'); give one")
    }
    return try Locations(
        name: o.positional ?? o.last("name"), pidFile: o.last("pid-file"), control: o.last("control"), logFile: o.last("log-file"),
        creating: creating)
}

func duration(_ o: ParsedOptions, _ name: String, default value: Duration) throws(BatonError) -> Duration {
    guard let text = o.last(name) else { return value }
    return try OptionParsing.duration(text, option: "--\(name)")
}

func noCommand(_ o: ParsedOptions, _ command: String) throws(BatonError) {
    if let extra = o.rest.first {
        throw BatonError(.usage, "baton \(command): unexpected argument '\(extra)'; see 'baton \(command) --help'")
    }
}

// MARK: - run

func runCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.run, args, positional: .beforeDashes)
    var configuration = try RunOptions.configuration(o)
    try RunOptions.watch(o, into: &configuration)
    let loc = try locations(o, creating: true)
    configuration.pidFile = loc.pidFile
    configuration.controlPath = loc.control
    if let log = o.last("log-file") {
        let path = Sys.absolute(log)
        try LogFile.redirect(to: path)
        configuration.logFile = path
    }
    let supervisor = try Supervisor(configuration: configuration)
    return try supervisor.run()
}

// MARK: - start and deploy

/// What `start` and `deploy` read alike: the printer, the supervisor's
/// configuration, the umask and where it lives; `body` does the operation.
private func daemonCommand(
    _ spec: CommandSpec, _ args: [String], what: String,
    _ body: (ParsedOptions, RunConfiguration, Locations, UInt32, (Operations.Step) -> Void) throws(BatonError) -> ControlResult
) throws(BatonError) -> Int32 {
    let o = try parse(spec, args, positional: .beforeDashes)
    try RunOptions.refuseWatch(o, spec.name)
    let printer = Printer(json: o.has("json"), program: "baton")
    let configuration = try RunOptions.configuration(o)
    let umask = try o.last("umask").map { (t: String) throws(BatonError) in try OptionParsing.fileMode(t, option: "--umask") } ?? 0o022
    let started = Sys.now()
    let at = try locations(o, creating: true)
    let result = Operations.withAppOutput(try body(o, configuration, at, umask, printer.step), log: at.logFile)
    return printer.result(result, took: result.ok ? Sys.now() - started : nil, what: what)
}

func startCommand(_ args: [String]) throws(BatonError) -> Int32 {
    try daemonCommand(Table.start, args, what: "start") { _, configuration, at, umask, step throws(BatonError) in
        Operations.start(configuration, at: at, umask: umask, step: step)
    }
}

func deployCommand(_ args: [String]) throws(BatonError) -> Int32 {
    try daemonCommand(Table.deploy, args, what: "deploy") { o, configuration, at, umask, step throws(BatonError) in
        Operations.deploy(
            configuration, at: at, release: o.last("release"), current: o.last("current"),
            lockTimeout: try duration(o, "lock-timeout", default: .seconds(300)),
            timeout: try duration(o, "timeout", default: .seconds(300)), umask: umask, step: step,
            over: { running throws(BatonError) in try RunOptions.configuration(o, over: running) })
    }
}

// MARK: - restart, stop

func restartCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.restart, args, positional: .one)
    try noCommand(o, "restart")
    return try request(o, "restart", note: "restarting") { control, timeout, step in
        Operations.restart(control: control, timeout: timeout, waitDrain: !o.has("no-wait-drain"), step: step)
    }
}

/// `baton restart` and `baton upgrade`: `note`, then one request to the
/// supervisor `o` names, its progress and its outcome (an unreachable
/// supervisor said as such).
func request(
    _ o: ParsedOptions, _ name: String, note: String,
    _ send: (_ control: String, _ timeout: Duration, _ step: (Operations.Step) -> Void) -> ControlResult
) throws(BatonError) -> Int32 {
    let loc = try locations(o)
    let control = try loc.requireControl("baton \(name)")
    let timeout = try duration(o, "timeout", default: .seconds(300))
    let printer = Printer(json: o.has("json"), program: "baton")
    printer.step(.note(note))
    var result = send(control, timeout, printer.step)
    if result.code == .notRunning, let problem = Operations.unreachable(loc, control: control) { result = problem }
    result = Operations.withAppOutput(result, log: loc.logFile)
    let took = result.durationMilliseconds.map { Duration.milliseconds($0) }
    return printer.result(result, took: result.ok ? took : nil, what: name)
}

func upgradeCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.upgrade, args, positional: .one)
    try noCommand(o, "upgrade")
    let binary = o.last("binary").map(Sys.absolute)
    return try request(o, "upgrade", note: "re-executing the supervisor in place\(binary.map { " with \($0)" } ?? "")") {
        control, timeout, step in
        Operations.upgrade(control: control, binary: binary, configuration: nil, timeout: timeout, step: step)
    }
}

func stopCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.stop, args, positional: .one)
    try noCommand(o, "stop")
    let loc = try locations(o)
    _ = try loc.requireControl("baton stop")
    let printer = Printer(json: o.has("json"), program: "baton")
    let timeout = try duration(o, "timeout", default: .seconds(120))
    let started = Sys.now()
    printer.step(.note("stopping"))
    let result = Operations.stop(at: loc, timeout: timeout, step: printer.step)
    return printer.result(result, took: result.ok ? Sys.now() - started : nil, what: "stop")
}

// MARK: - status, list

func statusCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.status, args, positional: .one)
    try noCommand(o, "status")
    let loc = try locations(o)
    _ = try loc.requireControl("baton status")
    let json = o.has("json")
    switch Operations.status(at: loc) {
    case .running(let s):
        if json {
            Out.line(s.json.text)
        } else {
            printStatus(s)
        }
        return s.exitCode
    case .notRunning(let code, let message):
        if json {
            let state = code == 1 ? "dead" : code == 3 ? "stopped" : "unknown"
            Out.line(
                JSON.object([
                    "v": .int(ControlProtocol.version), "type": .string("status"), "ok": .bool(false), "state": .string(state),
                    "code": .string(state), "exit": .int(code), "message": .string(message),
                ]).text)
        } else {
            Out.line("baton: \(message)")
        }
        return code
    }
}

func printStatus(_ s: ControlStatus) {
    let uptime = Duration.milliseconds(s.uptimeMilliseconds)
    Out.line("baton: \(Out.green("running")) (pid \(s.pid), up \(uptime.humanDescription), version \(s.version))")
    if s.reexecutions > 0, let at = s.reexecutedAt {
        let ago = Duration.seconds(max(0, Sys.wallClockSeconds() - at))
        Out.line("  re-executed in place \(s.reexecutions) time(s), last \(ago.humanDescription) ago (\(s.binary ?? "binary deleted"))")
    }
    for l in s.listeners {
        Out.line("  listening on \(l.address) (fd \(l.fd), \(l.name), \(l.mode))")
    }
    for g in s.generations {
        let age = Duration.milliseconds(g.ageMilliseconds)
        var line = "  gen \(g.number)  pid \(g.pid)  \(g.state)  age \(age.humanDescription)  \(g.releaseDir)"
        if let st = g.status { line += "  [\(st)]" }
        if let p = g.lastProbe {
            let status = p.status.map(String.init) ?? "no answer"
            let ms = p.latencyMilliseconds < 10 ? String(Double(Int(p.latencyMilliseconds * 10)) / 10) : String(Int(p.latencyMilliseconds))
            line += "  probe: \(p.passed ? Out.green(status) : Out.redOut(status)) in \(ms) ms"
        }
        if !g.sockets.isEmpty { line += "  sockets: " + g.sockets.joined(separator: ", ") }
        Out.line(line)
    }
    if let a = s.lastAttempt {
        let ago = Duration.milliseconds(a.agoMilliseconds)
        let what = a.reason == "initial" ? "start" : a.reason
        if a.ok {
            Out.line(
                "  last \(what): \(Out.green("succeeded")), generation \(a.generation ?? 0) ready after \(Duration.milliseconds(a.readyMilliseconds ?? 0).humanDescription), took \(Duration.milliseconds(a.durationMilliseconds).preciseDescription) (\(ago.humanDescription) ago)"
            )
        } else {
            Out.line("  last \(what): \(Out.redOut("failed")): \(a.message ?? "") (\(ago.humanDescription) ago)")
        }
    }
    if let p = s.probation {
        let reserve =
            p.reserve.isEmpty ? "nothing in reserve" : "generation \(p.reserve.map(String.init).joined(separator: ", ")) in reserve"
        Out.line(
            "  generation \(p.generation) on probation for \(Duration.milliseconds(p.leftMilliseconds).humanDescription) more (\(reserve))")
    }
    if let c = s.crashLoop {
        let ago = Duration.milliseconds(c.agoMilliseconds).humanDescription
        Out.line(
            "  " + Out.redOut("crash-looping: ")
                + "\(c.release): \(c.deaths) generations in a row died soon after getting ready; last: generation \(c.lastGeneration) \(c.lastReason) (\(ago) ago)"
        )
        if let to = c.rolledBackTo {
            Out.line("  rolled back to \(to), the last release that served stably; a restart or deploy runs what --dir names again")
        }
    }
    for w in s.warnings { Out.line("  " + Out.redOut("warning: ") + w) }
}

func listCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.list, args, positional: .none)
    try noCommand(o, "list")
    let json = o.has("json")
    let all = Locations.all()
    if !json {
        if all.isEmpty {
            Out.line("baton: no supervisor under \(Locations.runDirectory())")
        } else {
            Out.line("NAME                 PID      SERVING  UPTIME     LAST RESTART")
        }
    }
    for (name, loc) in all {
        switch Operations.status(at: loc) {
        case .running(let s):
            if json {
                var fields: [String: JSON] = [
                    "name": .string(name), "pid": .int(s.pid), "uptime_ms": .int(s.uptimeMilliseconds), "state": .string(s.state),
                ]
                if let g = s.serving { fields["serving"] = .int(g) }
                if let a = s.lastAttempt {
                    fields["last_attempt"] = .object(["ok": .bool(a.ok), "reason": .string(a.reason), "ago_ms": .int(a.agoMilliseconds)])
                }
                Out.line(JSON.object(fields).text)
            } else {
                let last =
                    s.lastAttempt.map { "\($0.ok ? "ok" : "failed") \(Duration.milliseconds($0.agoMilliseconds).humanDescription) ago" }
                    ?? "-"
                Out.line(
                    pad(name, 20) + " " + pad(String(s.pid), 8) + " " + pad(s.serving.map { "gen \($0)" } ?? "-", 8) + " "
                        + pad(Duration.milliseconds(s.uptimeMilliseconds).humanDescription, 10) + " " + last)
            }
        case .notRunning(let code, let message):
            if json {
                Out.line(
                    JSON.object(["name": .string(name), "state": .string("not running"), "exit": .int(code), "message": .string(message)])
                        .text)
            } else {
                Out.line(pad(name, 20) + " " + pad("-", 8) + " " + pad("-", 8) + " " + pad("-", 10) + " " + message)
            }
        }
    }
    return 0
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
