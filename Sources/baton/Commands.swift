import BatonCore
import BatonSystem
import CBatonShims
import Glibc

let commonSpecs: [OptionSpec] = [
    OptionSpec("json", "print JSON (one object per line) instead of text"),
    OptionSpec("help", "show this help"),
]

/// Formats a progress line of the control protocol for people.
func describeProgress(_ j: JSON) -> String {
    var head = ""
    if let g = j["generation"]?.int { head += "gen \(g) " }
    if let p = j["pid"]?.int { head += "pid \(p) " }
    return "  " + Out.dim(head) + (j["message"]?.string ?? "")
}

/// Prints a final result and returns its exit code.
func report(_ result: JSON, json: Bool, prefix: String = "baton") -> Int32 {
    let code = Int32(result["exit"]?.int ?? 1)
    if json {
        Out.line(result.text)
    } else if result["ok"]?.bool == true {
        Out.line("\(prefix): " + Out.green(result["message"]?.string ?? "done"))
    } else {
        Out.error("\(prefix): " + Out.red(result["message"]?.string ?? "failed"))
    }
    return code
}

func errorResult(_ e: BatonError) -> JSON { e.resultJSON }

/// The last `count` lines of a file.
func tail(_ path: String, lines count: Int) -> [String] {
    let fd = baton_open(path, O_RDONLY | O_CLOEXEC, 0)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    let size = lseek(fd, 0, SEEK_END)
    let from = max(0, size - off_t(count * 400 + 4096))
    lseek(fd, from, SEEK_SET)
    guard let bytes = Sys.readAll(fd, limit: count * 400 + 4096) else { return [] }
    var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    if from > 0, !lines.isEmpty { lines.removeFirst() }
    return Array(lines.suffix(count))
}

// MARK: - restart

func restartCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let specs =
        Locations.specs + [
            OptionSpec("timeout", value: "D", "give up waiting after D (default 5m); the restart itself goes on"),
            OptionSpec("no-wait-drain", "return once the new generation serves, without waiting for the old one to exit"),
        ] + commonSpecs
    let o = try ParsedOptions(args, specs: specs, command: "baton restart")
    if o.has("help") {
        return help(
            "restart",
            "Usage: baton restart [--name NAME | --pid-file PATH | --control PATH] [--timeout D] [--json]\n\nStarts a new generation and retires the old one once the new one is ready. Exits 0 only when\nthe new generation serves; 3 not running, 6 the new generation failed (the old one still serves),\n7 the deadline passed, 11 the supervisor is stopping.",
            specs)
    }
    let loc = try Locations(o)
    let timeout =
        try o.last("timeout").map { (t: String) throws(BatonError) in try OptionParsing.duration(t, option: "--timeout") } ?? .seconds(300)
    return restart(
        control: try loc.requireControl("baton restart"), timeout: timeout, waitDrain: !o.has("no-wait-drain"), json: o.has("json"))
}

/// Asks a running supervisor to restart; prints progress; returns the exit code.
func restart(control: String, timeout: Duration, waitDrain: Bool, json: Bool) -> Int32 {
    let client: ControlClient
    switch ControlClient.connect(control) {
    case .success(let c): client = c
    case .failure(let e): return report(errorResult(e), json: json)
    }
    let started = Sys.now()
    if !json { Out.line("baton: restarting") }
    let answer = client.exchange(controlRequest("restart", ["wait_drain": .bool(waitDrain)]), deadline: started + timeout) { line in
        guard line["type"]?.string == "progress" else { return }
        Out.line(json ? line.text : describeProgress(line))
    }
    switch answer {
    case .success(var result):
        if case .object(var o) = result {
            o["duration_ms"] = .number(Double((Sys.now() - started).milliseconds))
            if !json, o["ok"]?.bool == true {
                o["message"] = .string((o["message"]?.string ?? "") + " (restart took \((Sys.now() - started).humanDescription))")
            }
            result = .object(o)
        }
        return report(result, json: json)
    case .failure(let e):
        if e.code == .timeout {
            return report(
                errorResult(
                    BatonError(
                        .timeout, "no outcome within \(timeout.humanDescription); the restart goes on in the supervisor: see 'baton status'"
                    )), json: json)
        }
        return report(errorResult(e), json: json)
    }
}

// MARK: - stop

func stopCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let specs = Locations.specs + [OptionSpec("timeout", value: "D", "give up waiting after D (default 2m)")] + commonSpecs
    let o = try ParsedOptions(args, specs: specs, command: "baton stop")
    if o.has("help") {
        return help(
            "stop",
            "Usage: baton stop [--name NAME | --pid-file PATH | --control PATH] [--timeout D] [--json]\n\nStops every generation gracefully and the supervisor. Exits 0 once every process is gone and\nthe pid file, status file, control socket and unix sockets are removed (also when nothing ran).",
            specs)
    }
    let loc = try Locations(o)
    let control = try loc.requireControl("baton stop")
    let timeout =
        try o.last("timeout").map { (t: String) throws(BatonError) in try OptionParsing.duration(t, option: "--timeout") } ?? .seconds(120)
    let json = o.has("json")
    switch ControlClient.connect(control) {
    case .failure(let e) where e.code == .notRunning:
        var message = "not running; nothing to stop"
        if let p = loc.pidFile, case .stale(let pid) = PidFile.inspect(p) {
            unlink(p)
            message += " (removed stale pid file \(p)\(pid.map { " of pid \($0)" } ?? ""))"
        }
        return report(
            .object([
                "v": .number(1), "type": .string("result"), "ok": .bool(true), "code": .string("success"), "exit": .number(0),
                "message": .string(message),
            ]), json: json)
    case .failure(let e):
        return report(errorResult(e), json: json)
    case .success(let client):
        if !json { Out.line("baton: stopping") }
        switch client.exchange(controlRequest("stop"), deadline: Sys.now() + timeout, onLine: { _ in }) {
        case .success(let result): return report(result, json: json)
        case .failure(let e): return report(errorResult(e), json: json)
        }
    }
}

// MARK: - status

func statusCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let specs = Locations.specs + commonSpecs
    let o = try ParsedOptions(args, specs: specs, command: "baton status")
    if o.has("help") {
        return help(
            "status",
            "Usage: baton status [--name NAME | --pid-file PATH | --control PATH] [--json]\n\nShows the supervisor, its listeners and generations. Exit codes as LSB init scripts use them:\n0 running, 1 dead but the pid file is left, 3 not running, 4 unknown.",
            specs)
    }
    let loc = try Locations(o)
    let control = try loc.requireControl("baton status")
    let json = o.has("json")
    func notRunning(_ code: Int32, _ text: String) -> Int32 {
        if json {
            Out.line(
                JSON.object([
                    "v": .number(1), "type": .string("status"), "ok": .bool(false),
                    "state": .string(code == 1 ? "dead" : code == 3 ? "stopped" : "unknown"), "exit": .number(Double(code)),
                    "message": .string(text),
                ]).text)
        } else {
            Out.line("baton: \(text)")
        }
        return code
    }
    let client: ControlClient
    switch ControlClient.connect(control) {
    case .success(let c): client = c
    case .failure(let e) where e.code == .notRunning:
        if let p = loc.pidFile, case .stale(let pid) = PidFile.inspect(p) {
            return notRunning(1, "not running, but pid file \(p) is left\(pid.map { " (pid \($0) is gone)" } ?? "")")
        }
        if let p = loc.pidFile, case .live(let pid) = PidFile.inspect(p) {
            return notRunning(4, "pid file \(p) is held\(pid.map { " by pid \($0)" } ?? ""), but nothing answers on \(control)")
        }
        return notRunning(3, "not running")
    case .failure(let e):
        return notRunning(4, e.message)
    }
    guard case .success(let s) = client.exchange(controlRequest("status"), deadline: Sys.now() + .seconds(10), onLine: { _ in }) else {
        return notRunning(4, "the supervisor did not answer on \(control)")
    }
    if json {
        Out.line(s.prettyText)
        return 0
    }
    let uptime = Duration.milliseconds(Int64(s["uptime_ms"]?.int ?? 0))
    Out.line("baton: \(Out.green("running")) (pid \(s["pid"]?.int ?? 0), up \(uptime.humanDescription))")
    for l in s["listeners"]?.array ?? [] {
        Out.line("  listening on \(l["address"]?.string ?? "?") (fd \(l["fd"]?.int ?? 0), \(l["name"]?.string ?? ""))")
    }
    for g in s["generations"]?.array ?? [] {
        let age = Duration.milliseconds(Int64(g["age_ms"]?.int ?? 0))
        var line =
            "  gen \(g["generation"]?.int ?? 0)  pid \(g["pid"]?.int ?? 0)  \(g["state"]?.string ?? "?")  age \(age.humanDescription)  \(g["release_dir"]?.string ?? "")"
        if let st = g["status"]?.string { line += "  [\(st)]" }
        if let p = g["last_probe"] {
            let ms = p["latency_ms"].flatMap { if case .number(let d) = $0 { d } else { nil } } ?? 0
            let status = p["status"]?.int.map(String.init) ?? "no answer"
            line +=
                "  probe: \(p["passed"]?.bool == true ? Out.green(status) : Out.red(status)) in \(Int(ms * 10) / 10 == 0 ? String(ms) : String(Int(ms))) ms"
        }
        Out.line(line)
    }
    if let a = s["last_attempt"] {
        let ago = Duration.milliseconds(Int64(a["ago_ms"]?.int ?? 0))
        let what = a["reason"]?.string == "initial" ? "start" : a["reason"]?.string ?? "restart"
        if a["ok"]?.bool == true {
            Out.line(
                "  last \(what): \(Out.green("succeeded")), generation \(a["generation"]?.int ?? 0) ready after \(Duration.milliseconds(Int64(a["ready_ms"]?.int ?? 0)).humanDescription), took \(Duration.milliseconds(Int64(a["duration_ms"]?.int ?? 0)).humanDescription) (\(ago.humanDescription) ago)"
            )
        } else {
            Out.line("  last \(what): \(Out.red("failed")): \(a["message"]?.string ?? "") (\(ago.humanDescription) ago)")
        }
    }
    return 0
}

// MARK: - logs

func logsCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let specs = Locations.specs + [OptionSpec("lines", value: "N", "how many lines (default 50)"), OptionSpec("help", "show this help")]
    let o = try ParsedOptions(args, specs: specs, command: "baton logs")
    if o.has("help") {
        return help(
            "logs",
            "Usage: baton logs [--name NAME | --pid-file PATH | --log-file PATH] [--lines N]\n\nPrints the end of the daemon's log. The daemon reopens its log file on SIGUSR1 (for logrotate).",
            specs)
    }
    let loc = try Locations(o)
    guard let path = loc.logFile else {
        throw BatonError(.usage, "baton logs: say which log: --name NAME, --pid-file PATH or --log-file PATH")
    }
    let count =
        try o.last("lines").map { (t: String) throws(BatonError) in try OptionParsing.integer(t, option: "--lines", range: 1...100_000) }
        ?? 50
    guard access(path, R_OK) == 0 else { throw BatonError(.notRunning, "no log at \(path): \(Sys.describe(errno: errno))") }
    for line in tail(path, lines: count) { Out.line(line) }
    return 0
}

func help(_ command: String, _ text: String, _ specs: [OptionSpec]) -> Int32 {
    Out.line(text + "\n\nOptions:\n" + ParsedOptions.helpText(specs))
    return 0
}
