import BatonControl
import BatonCore
import CBatonShims
import Glibc

/// What the command-line faces ask of a supervisor, decided here once:
/// starting a daemon, restarting, stopping, deploying a release, asking for
/// the status. The faces parse their options, call these, and print.
public enum Operations {
    /// Something to show while an operation goes on.
    public enum Step: Sendable {
        /// A step of the operation itself (`current -> releases/v2`).
        case note(String)
        /// A progress line from the supervisor.
        case progress(ControlProgress)
    }

    /// Starts a supervisor for `configuration` as a daemon, findable at
    /// `locations`; returns once the first generation serves, or failed
    /// (then no daemon, pid file or socket is left).
    public static func start(
        _ configuration: RunConfiguration, at locations: Locations, umask: UInt32 = 0o022, step: (Step) -> Void = { _ in }
    ) -> ControlResult {
        guard let pidFile = locations.pidFile, let control = locations.control, let logFile = locations.logFile else {
            return ControlResult(.usage, "a daemon must be findable: give a NAME, --name NAME or --pid-file PATH")
        }
        let c = configuration.daemonForm(pidFile: pidFile, control: control, logFile: logFile)
        do throws(BatonError) {
            // The command, user and directories are checked now, with the caller watching.
            _ = try Supervisor(configuration: c)
            if case .live(let pid) = PidFile.inspect(pidFile) {
                throw BatonError(
                    .alreadyRunning,
                    "already running\(pid.map { " (pid \($0))" } ?? "") with pid file \(pidFile); use 'baton restart' or 'baton deploy'")
            }
            let p = c.policy
            let tries = Double(p.attemptRetries + 1)
            let timeout = (p.readyTimeout + p.settle) * tries + p.retryDelay * Double(p.attemptRetries) + p.failedStopGrace + .seconds(15)
            let (outcome, pid) = try Daemon.start(
                c, umask: umask, timeout: timeout,
                spawned: { step(.note("starting (supervisor pid \($0), log \(c.logFile ?? logFile))")) },
                progress: { step(.progress($0)) })
            var result = outcome
            if result.ok {
                result.supervisorPid = pid
                result.logFile = c.logFile
                result.message = "started: \(result.message) (supervisor pid \(pid))"
            } else if let log = c.logFile, !log.hasPrefix("|") {
                result.output = Sys.tail(log, lines: 12)
                result.logFile = log
            }
            return result
        } catch {
            return ControlResult(error)
        }
    }

    /// A failed generation's own last lines of output, from the supervisor's
    /// log (`log`): the lines after its spawn that baton did not write, so a
    /// failed restart says why in the app's words. Unchanged otherwise.
    public static func withAppOutput(_ result: ControlResult, log: String?, lines count: Int = 12) -> ControlResult {
        guard !result.ok, result.output == nil, let generation = result.generation, let log, !log.hasPrefix("|") else { return result }
        var r = result
        let tail = Sys.tail(log, lines: 400)
        guard let spawned = tail.lastIndex(where: { $0.includes("]: gen \(generation) pid ") && $0.includes(" spawned in ") })
        else { return result }
        let own = tail[(spawned + 1)...].filter { !isBatonLine($0) }
        guard !own.isEmpty else { return result }
        r.output = Array(own.suffix(count))
        r.logFile = log
        return r
    }

    /// True for a line baton's log writes itself (`2026-...Z baton[PID]: ...`), not the app.
    static func isBatonLine(_ line: String) -> Bool {
        let u = Array(line.utf8.prefix(40))
        guard u.count > 25, u[4] == UInt8(ascii: "-"), u[10] == UInt8(ascii: "T") else { return false }
        return line.includes("Z baton[") || line.includes("Z start_server[")
    }

    /// Asks the supervisor at `control` to replace its program in place
    /// (`binary`, nil: the one on disk where it was started from) with
    /// `configuration` (nil: the same); the answer comes from the new
    /// program, after the restart it made if the app's command or
    /// environment changed.
    public static func upgrade(
        control: String, binary: String?, configuration: RunConfiguration?, timeout: Duration, step: (Step) -> Void = { _ in }
    ) -> ControlResult {
        outcome(
            of: .upgrade(binary: binary, configuration: configuration?.json), "an upgrade", control: control, timeout: timeout,
            late: "see 'baton status' and the log", step: step)
    }

    /// Asks the supervisor at `control` to restart; success only once the
    /// new generation serves (and, with `waitDrain`, the old ones are gone).
    public static func restart(control: String, timeout: Duration, waitDrain: Bool, step: (Step) -> Void = { _ in }) -> ControlResult {
        outcome(
            of: .restart(waitForDrain: waitDrain), "a restart", control: control, timeout: timeout,
            late: "the restart goes on in the supervisor: see 'baton status'", step: step)
    }

    /// Sends `request` (`what`, for messages) and waits for its result,
    /// passing its progress to `step`; `late` says what to do at the deadline.
    static func outcome(
        of request: ControlRequest, _ what: String, control: String, timeout: Duration, late: String, step: (Step) -> Void
    ) -> ControlResult {
        let started = Sys.now()
        switch ControlChannel.request(request, at: control, timeout: timeout, onProgress: { step(.progress($0)) }) {
        case .success(.result(var r)):
            r.durationMilliseconds = (Sys.now() - started).milliseconds
            return r
        case .success:
            return ControlResult(.failure, "the supervisor answered \(what) with something else than its outcome")
        case .failure(let e) where e.code == .timeout:
            return ControlResult(.timeout, "no outcome within \(timeout.humanDescription); \(late)")
        case .failure(let e):
            return ControlResult(e)
        }
    }

    /// Stops the supervisor at `locations`: every generation and every file it made.
    /// Nothing running is success; a pid file held by a process that does not answer is `.failure` with code 4.
    public static func stop(at locations: Locations, timeout: Duration, step: (Step) -> Void = { _ in }) -> ControlResult {
        guard let control = locations.control else { return ControlResult(.usage, "say which supervisor to stop") }
        switch ControlChannel.request(.stop, at: control, timeout: timeout, onProgress: { step(.progress($0)) }) {
        case .success(.result(let r)):
            return r
        case .success:
            return ControlResult(.failure, "the supervisor answered a stop with something else than its outcome")
        case .failure(let e) where e.code == .notRunning:
            if let problem = unreachable(locations, control: control) { return problem }
            var message = "not running; nothing to stop"
            if let p = locations.pidFile, case .stale(let pid) = PidFile.inspect(p) {
                unlink(p)
                message += " (removed stale pid file \(p)\(pid.map { " of pid \($0)" } ?? ""))"
            }
            return ControlResult(nil, message)
        case .failure(let e) where e.code == .timeout:
            return ControlResult(.timeout, "the supervisor is still stopping after \(timeout.humanDescription)")
        case .failure(let e):
            return ControlResult(e)
        }
    }

    /// A live pid file whose supervisor does not answer at `control`: an
    /// `unknown` (exit 4) answer naming the process, never "not running".
    public static func unreachable(_ locations: Locations, control: String) -> ControlResult? {
        guard let p = locations.pidFile, case .live(let pid) = PidFile.inspect(p) else { return nil }
        var r = ControlResult(
            .unknown,
            "pid file \(p) is held\(pid.map { " by pid \($0)\(Sys.commandLine(of: $0).map { " '\($0)'" } ?? "")" } ?? ""), "
                + "but nothing answers on \(control); is it another supervisor's pid file?")
        r.pid = pid
        return r
    }

    /// What `status` found.
    public enum StatusOutcome: Sendable {
        /// It answered.
        case running(ControlStatus)
        /// It did not: an LSB exit code (1 dead with a pid file left, 3 not running, 4 unknown) and why.
        case notRunning(code: Int32, message: String)
    }

    /// Asks the supervisor at `locations` how it stands.
    public static func status(at locations: Locations) -> StatusOutcome {
        guard let control = locations.control else { return .notRunning(code: 4, message: "say which supervisor") }
        switch ControlChannel.request(.status, at: control, timeout: .seconds(10)) {
        case .success(.status(let s)):
            return .running(s)
        case .success:
            return .notRunning(code: 4, message: "the supervisor answered status with something else")
        case .failure(let e) where e.code == .notRunning:
            if let p = locations.pidFile, case .stale(let pid) = PidFile.inspect(p) {
                return .notRunning(code: 1, message: "not running, but pid file \(p) is left\(pid.map { " (pid \($0) is gone)" } ?? "")")
            }
            if let r = unreachable(locations, control: control) { return .notRunning(code: 4, message: r.message) }
            return .notRunning(code: 3, message: "not running")
        case .failure(let e):
            return .notRunning(code: 4, message: e.message)
        }
    }
}
