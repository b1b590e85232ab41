import BatonControl
import BatonCore
import CBatonShims
import Glibc

/// Starting the supervisor as a daemon, the one way both `baton start` and
/// `start_server --daemonize` do it: this executable is spawned again (never
/// forked, unsafe in a Swift process) as `__supervise`, in a new session,
/// stdin from /dev/null, stdout and stderr to the log file. It reads its
/// configuration as JSON from an inherited descriptor, and reports on a
/// pipe: progress lines while the first generation comes up, then its
/// outcome, in the control protocol.
public enum Daemon {
    /// The variable that names the report pipe's descriptor in the daemon.
    static let reportVariable = "BATON_START_REPORT_FD"
    /// The variable that names the descriptor holding the configuration.
    static let configurationVariable = "BATON_CONFIGURATION_FD"
    /// The variable holding the daemon's umask.
    static let umaskVariable = "BATON_UMASK"

    /// Spawns the daemon for `configuration` and waits until it reports (or
    /// `timeout` passes); returns the outcome and the daemon's pid. A failed
    /// start is returned only once the daemon cleaned up and exited.
    public static func start(
        _ configuration: RunConfiguration, umask umaskValue: UInt32, timeout: Duration, spawned: (pid_t) -> Void,
        progress: (ControlProgress) -> Void = { _ in }
    ) throws(BatonError) -> (ControlResult, pid_t) {
        let log = baton_open(
            configuration.logFile.flatMap { $0.hasPrefix("|") ? nil : $0 } ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard log >= 0 else {
            throw BatonError(.failure, "cannot open log file \(configuration.logFile ?? ""): \(Sys.describe(errno: errno))", errno: errno)
        }
        defer { close(log) }
        let devnull = baton_open("/dev/null", O_RDWR | O_CLOEXEC, 0)
        defer { close(devnull) }
        let config = try memoryFile(configuration.json.text, name: "baton-configuration")
        defer { close(config) }
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw BatonError(.failure, "pipe: \(Sys.describe(errno: errno))", errno: errno) }
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        _ = baton_fcntl_setfd(readEnd, FD_CLOEXEC)
        let parked = baton_fcntl_dupfd_cloexec(writeEnd, 100)
        close(writeEnd)
        let channel = ControlChannel(fd: readEnd, peer: "the daemon")
        defer { channel.close() }

        let drop: Set<String> = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", reportVariable, configurationVariable]
        let env =
            Sys.environment().filter { entry in !drop.contains(String(entry.prefix { $0 != "=" })) }
            + ["\(reportVariable)=3", "\(configurationVariable)=4", "\(umaskVariable)=\(umaskValue)"]
        let program = CommandLine.arguments.first ?? "baton"
        let arguments = [program, "__supervise"] + (configuration.pidFile.map { [$0] } ?? [])
        var pid: pid_t = 0
        let stdio: [Int32] = [devnull, log, log]
        let fds: [Int32] = [parked, config]
        let rc = withCStrings(arguments) { argv in
            withCStrings(env) { envp in
                fds.withUnsafeBufferPointer { f in
                    stdio.withUnsafeBufferPointer { s in
                        baton_spawn(&pid, "/proc/self/exe", argv, envp, f.baseAddress, nil, 2, s.baseAddress, 0, 1)
                    }
                }
            }
        }
        close(parked)
        guard rc == 0 else { throw BatonError(.failure, "cannot spawn the daemon: \(Sys.describe(errno: rc))", errno: rc) }
        spawned(pid)

        let started = Sys.now()
        var outcome: ControlResult
        switch channel.receive(timeout: timeout, onProgress: progress) {
        case .success(.result(let r)): outcome = r
        case .success: outcome = ControlResult(.failure, "the daemon answered with something else than its outcome")
        case .failure(let e) where e.code == .timeout:
            kill(pid, SIGTERM)
            return (ControlResult(.timeout, "no outcome from the daemon (pid \(pid)) in time; it was told to stop"), pid)
        case .failure:
            outcome = ControlResult(.startFailed, "the daemon exited before it could report")
        }
        if !outcome.ok {
            // The pipe's end tells that the daemon has cleaned up.
            _ = channel.receive(timeout: timeout - (Sys.now() - started) + .seconds(5))
        }
        // Reap the daemon if it already exited (it is our child until we exit).
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid, outcome.code == .startFailed, outcome.message.hasPrefix("the daemon exited") {
            outcome.message += " (exit status \((status >> 8) & 0xff))"
        }
        return (outcome, pid)
    }

    /// The modes an executable of Baton runs in for itself, named by its
    /// first argument: `__exec` (the spawn helper), `__supervise` (the
    /// daemon's supervisor), `__check-reexec` (a supervisor checks this
    /// program before it execs it) and `__takeover` (the program a
    /// supervisor exec'd in place). Does not return when `arguments` names one.
    public static func enterHiddenMode(_ arguments: [String], program: String) {
        switch arguments.first {
        case "__exec": execHelper(Array(arguments.dropFirst()))
        case "__supervise":
            nameProcess(program)
            Log.setProgram(program)
            supervise()
        case "__check-reexec": checkReexec(program: program)
        case "__takeover":
            nameProcess(program)
            takeOver(program: program)
        default: return
        }
    }

    /// Names a supervisor `baton` (or `start_server`) for ps, top, pgrep and
    /// killall: spawned from /proc/self/exe it would be `exe`, exec'd from a
    /// descriptor a number, and exec'd from an upgraded file that file's name.
    static func nameProcess(_ program: String) {
        _ = baton_set_process_name(program)
    }

    /// The daemon's side: reads the configuration, takes the report pipe,
    /// enters `/` with the starter's umask, and supervises. Never returns.
    public static func supervise() -> Never {
        let report = Sys.getenv(reportVariable).flatMap { Int32($0) }
        let config = Sys.getenv(configurationVariable).flatMap { Int32($0) }
        unsetenv(reportVariable)
        unsetenv(configurationVariable)
        if let report { _ = baton_fcntl_setfd(report, FD_CLOEXEC) }
        umask(Sys.getenv(umaskVariable).flatMap { mode_t($0) } ?? 0o022)
        unsetenv(umaskVariable)
        _ = chdir("/")
        func fail(_ error: BatonError) -> Never {
            if let report { Sys.writeAll(report, ControlMessage.result(ControlResult(error)).line.utf8) }
            Log.line("cannot start: \(error.message)")
            exit(error.exitCode)
        }
        guard let config, let bytes = Sys.readAll(config, limit: 16 << 20), let json = JSON(parsing: bytes) else {
            fail(BatonError(.usage, "__supervise: no configuration on \(configurationVariable); this mode is started by 'baton start'"))
        }
        close(config)
        do throws(BatonError) {
            var configuration = try RunConfiguration(json: json)
            if let log = configuration.logFile { try LogFile.redirect(to: log) }
            if configuration.logFile?.hasPrefix("|") == true { configuration.logFile = nil }
            configuration.startReportFD = report
            let supervisor = try Supervisor(configuration: configuration)
            exit(try supervisor.run())
        } catch {
            fail(error)
        }
    }

    /// A memfd holding `text`, positioned at its start.
    static func memoryFile(_ text: String, name: String) throws(BatonError) -> Int32 {
        let fd = baton_memfd(name)
        guard fd >= 0, Sys.writeAll(fd, text.utf8), lseek(fd, 0, SEEK_SET) == 0 else {
            let e = errno
            if fd >= 0 { close(fd) }
            throw BatonError(.failure, "memfd_create: \(Sys.describe(errno: e))", errno: e)
        }
        return fd
    }
}
