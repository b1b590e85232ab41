import BatonCore
import BatonSystem
import CBatonShims
import Glibc

let startSpecs =
    RunOptions.specs + Locations.specs + [
        OptionSpec("umask", value: "MASK", "the daemon's umask (default 022)")
    ] + commonSpecs

// MARK: - start

func startCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try ParsedOptions(args, specs: startSpecs, command: "baton start")
    if o.has("help") {
        return help(
            "start",
            "Usage: baton start (--name NAME | --pid-file PATH) [run options] -- command [args...]\n\nStarts the supervisor as a daemon (new session, stdin from /dev/null, output to --log-file,\nworking directory /) and returns once the first generation is ready: 0, or non-zero with the\nreason and the end of the log, leaving no daemon, pid file or socket behind. 5: already running.",
            startSpecs)
    }
    return try start(o, json: o.has("json"))
}

/// Starts a daemon for the run options in `o`; returns the exit code.
func start(_ o: ParsedOptions, json: Bool, quiet: Bool = false) throws(BatonError) -> Int32 {
    var configuration = try RunOptions.configuration(o)
    let loc = try Locations(o, creating: true)
    guard let pidFile = loc.pidFile, let control = loc.control, let logFile = loc.logFile else {
        throw BatonError(.usage, "baton start: a daemon must be findable: give --name NAME or --pid-file PATH")
    }
    configuration.pidFile = pidFile
    configuration.controlPath = control
    // Checks the command, user and directories now, with the caller watching.
    _ = try Supervisor(configuration: configuration)
    if case .live(let pid) = PidFile.inspect(pidFile) {
        throw BatonError(
            .alreadyRunning,
            "already running\(pid.map { " (pid \($0))" } ?? "") with pid file \(pidFile); use 'baton restart' or 'baton deploy'")
    }
    let umaskValue = try o.last("umask").map { (t: String) throws(BatonError) in try OptionParsing.fileMode(t, option: "--umask") } ?? 0o022

    // The daemon's command line: the same run options, every path absolute.
    var daemonArgs = ["run"]
    for spec in RunOptions.specs where spec.takesValue {
        for value in o.all(spec.name) {
            var v = value
            if RunOptions.pathOptions.contains(spec.name) { v = Sys.absolute(v) }
            if spec.name == "listen", v.hasPrefix("unix:"), !v.hasPrefix("unix:/") { v = "unix:" + Sys.absolute(String(v.dropFirst(5))) }
            daemonArgs.append("--\(spec.name)=\(v)")
        }
    }
    if !o.has("dir") { daemonArgs.append("--dir=\(Sys.cwd())") }
    daemonArgs += ["--pid-file=\(pidFile)", "--control=\(control)", "--log-file=\(logFile)", "--"] + configuration.command

    let p = configuration.policy
    let deadline = Sys.now() + p.readyTimeout + p.settle + p.killOldDelay + p.failedStopGrace + .seconds(15)
    let (outcome, pid) = try Daemon.spawnAndWait(
        arguments: ["baton"] + daemonArgs, logFile: logFile, umask: umaskValue, deadline: deadline
    ) { pid in
        if !json, !quiet { Out.line("baton: starting (supervisor pid \(pid), log \(logFile))") }
    }
    var result = outcome
    if result["ok"]?.bool == true, case .object(var fields) = result {
        fields["supervisor_pid"] = .number(Double(pid))
        fields["log_file"] = .string(logFile)
        fields["message"] = .string("started: \(fields["message"]?.string ?? "") (supervisor pid \(pid))")
        result = .object(fields)
    }
    return finishStart(result, logFile: logFile, json: json)
}

private func finishStart(_ result: JSON, logFile: String, json: Bool) -> Int32 {
    if result["ok"]?.bool != true, !json {
        let lines = tail(logFile, lines: 12)
        if !lines.isEmpty {
            Out.error("baton: the end of \(logFile):")
            for l in lines { Out.error("  " + l) }
        }
    }
    return report(result, json: json)
}

// MARK: - deploy

let deploySpecs =
    startSpecs + [
        OptionSpec("release", value: "DIR", "the release to deploy: --current is re-pointed at it first"),
        OptionSpec("current", value: "LINK", "the symlink that names the live release (default --dir)"),
        OptionSpec("lock-timeout", value: "D", "wait this long for another deploy to finish (default 5m)"),
        OptionSpec("timeout", value: "D", "give up waiting for the restart after D (default 5m)"),
    ]

func deployCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try ParsedOptions(args, specs: deploySpecs, command: "baton deploy")
    if o.has("help") {
        return help(
            "deploy",
            "Usage: baton deploy (--name NAME | --pid-file PATH) [--release DIR --current LINK] [run options] -- command...\n\nRestarts the supervisor if it runs, starts it if not, and fails if neither brought the new code\nup. With --release and --current, the LINK symlink is first re-pointed at DIR atomically, and\npointed back if the new generation fails. A second deploy waits for the first (--lock-timeout).",
            deploySpecs)
    }
    let json = o.has("json")
    let loc = try Locations(o, creating: true)
    guard let pidFile = loc.pidFile, let control = loc.control else {
        throw BatonError(.usage, "baton deploy: give --name NAME or --pid-file PATH")
    }
    let lockTimeout =
        try o.last("lock-timeout").map { (t: String) throws(BatonError) in try OptionParsing.duration(t, option: "--lock-timeout") }
        ?? .seconds(300)
    let timeout =
        try o.last("timeout").map { (t: String) throws(BatonError) in try OptionParsing.duration(t, option: "--timeout") } ?? .seconds(300)

    // Validate everything before touching anything.
    var link: String?
    var release: String?
    if let r = o.last("release") {
        guard let resolved = Sys.realpath(r) else {
            throw BatonError(.usage, "--release \(r): \(Sys.describe(errno: errno)); nothing was changed")
        }
        var st = stat()
        guard stat(resolved, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw BatonError(.usage, "--release \(r) is not a directory; nothing was changed")
        }
        guard let l = o.last("current") ?? o.last("dir") else {
            throw BatonError(.usage, "--release needs --current LINK (the symlink to re-point)")
        }
        link = Sys.absolute(l)
        release = resolved
    }
    var options = o
    if let link, !o.has("dir") { options.values["dir"] = [link] }

    let lock = try DeployLock(path: pidFile + ".deploy-lock", timeout: lockTimeout)
    defer { lock.release() }

    let previous = link.flatMap(readLink)
    if let link, let release {
        try pointSymlink(link, at: release)
        if !json { Out.line("baton: \(link) -> \(release)\(previous.map { " (was \($0))" } ?? "")") }
    }
    let running: Bool
    switch ControlClient.connect(control) {
    case .success(let c):
        close(c.fd)
        running = true
    case .failure:
        running = false
    }
    let code: Int32
    if running {
        code = restart(control: control, timeout: timeout, waitDrain: true, json: json)
    } else {
        if !json { Out.line("baton: not running; starting it") }
        do { code = try start(options, json: json) } catch {
            code = report(errorResult(error), json: json)
        }
    }
    if code != 0, let link, release != nil {
        if let previous {
            try? pointSymlink(link, at: previous)
            Out.error("baton: the new release failed: \(link) points back to \(previous)")
        } else {
            unlink(link)
            Out.error("baton: the new release failed: \(link) removed (there was none before)")
        }
    }
    return code
}

func readLink(_ path: String) -> String? {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink(path, &buf, buf.count - 1)
    guard n > 0 else { return nil }
    return Sys.string(fromC: Array(buf[0..<n]) + [0])
}

/// Re-points `link` at `target` atomically: a new symlink renamed over it.
func pointSymlink(_ link: String, at target: String) throws(BatonError) {
    let temp = "\(link).tmp.\(getpid())"
    unlink(temp)
    guard symlink(target, temp) == 0 else {
        throw BatonError(.failure, "cannot create symlink \(temp): \(Sys.describe(errno: errno))", errno: errno)
    }
    guard rename(temp, link) == 0 else {
        let e = errno
        unlink(temp)
        throw BatonError(.failure, "cannot re-point \(link): \(Sys.describe(errno: e))", errno: e)
    }
}

/// An exclusive lock per supervisor, so two deploys run one after the other.
final class DeployLock {
    private var fd: Int32

    init(path: String, timeout: Duration) throws(BatonError) {
        fd = baton_open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw BatonError(.failure, "cannot open deploy lock \(path): \(Sys.describe(errno: errno))", errno: errno)
        }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { return }
        Out.error("baton: another deploy is running; waiting up to \(timeout.humanDescription) for it")
        let rc = baton_flock_timeout(fd, Int64(timeout.milliseconds))
        if rc != 0 {
            close(fd)
            fd = -1
            throw BatonError(
                .busy, "another deploy still holds \(path) after \(timeout.humanDescription); try again later or raise --lock-timeout")
        }
    }

    func release() {
        if fd >= 0 { close(fd) }
        fd = -1
    }
}
