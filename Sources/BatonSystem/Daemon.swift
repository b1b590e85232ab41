import BatonCore
import CBatonShims
import Glibc

/// Starting the supervisor as a daemon, by spawning this executable again
/// (never by fork, unsafe in a Swift process): a new session, stdin from
/// /dev/null, stdout and stderr to the log file, and a pipe on which the
/// daemon reports the first generation's outcome as one JSON line.
public enum Daemon {
    /// The variable that names the report pipe's descriptor in the daemon.
    public static let reportVariable = "BATON_START_REPORT_FD"

    /// Spawns `/proc/self/exe arguments[1...]` as a daemon and waits until it
    /// reports (or `deadline`); returns the report and the daemon's pid. A
    /// failed start is reported only once the daemon cleaned up and exited.
    public static func spawnAndWait(
        arguments: [String], logFile: String?, umask umaskValue: UInt32, deadline: Instant, spawned: (pid_t) -> Void
    ) throws(BatonError) -> (JSON, pid_t) {
        let log = baton_open(logFile ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard log >= 0 else {
            throw BatonError(.failure, "cannot open log file \(logFile ?? ""): \(Sys.describe(errno: errno))", errno: errno)
        }
        defer { close(log) }
        let devnull = baton_open("/dev/null", O_RDWR | O_CLOEXEC, 0)
        defer { close(devnull) }
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw BatonError(.failure, "pipe: \(Sys.describe(errno: errno))", errno: errno) }
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        _ = baton_fcntl_setfd(readEnd, FD_CLOEXEC)
        let parked = baton_fcntl_dupfd_cloexec(writeEnd, 100)
        close(writeEnd)
        defer { close(readEnd) }

        let drop: Set<String> = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "BATON_START_REPORT_FD"]
        let env =
            Sys.environment().filter { entry in !drop.contains(String(entry.prefix { $0 != "=" })) }
            + ["\(reportVariable)=3", "BATON_UMASK=\(umaskValue)"]
        var pid: pid_t = 0
        let stdio: [Int32] = [devnull, log, log]
        let fds: [Int32] = [parked]
        let rc = withCStrings(arguments) { argv in
            withCStrings(env) { envp in
                fds.withUnsafeBufferPointer { f in
                    stdio.withUnsafeBufferPointer { s in
                        baton_spawn(&pid, "/proc/self/exe", argv, envp, f.baseAddress, nil, 1, s.baseAddress, 0, 1)
                    }
                }
            }
        }
        close(parked)
        guard rc == 0 else { throw BatonError(.failure, "cannot spawn the daemon: \(Sys.describe(errno: rc))", errno: rc) }
        spawned(pid)

        // Wait for the first generation's outcome, then for the pipe's end.
        var buffer: [UInt8] = []
        var outcome: JSON?
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let now = Sys.now()
            if now >= deadline {
                kill(pid, SIGTERM)
                let e = BatonError(.timeout, "no outcome from the daemon (pid \(pid)) in time; it was told to stop")
                return (e.resultJSON, pid)
            }
            var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(clamping: (deadline.nanoseconds - now.nanoseconds) / 1_000_000 + 1))
            if r < 0, errno == EINTR { continue }
            if r <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue } else { break } }
            if n == 0 { break }
            buffer += chunk[0..<n]
            if outcome == nil, let nl = buffer.firstIndex(of: 10) {
                outcome = JSON(parsing: String(decoding: buffer[..<nl], as: UTF8.self))
                if outcome?["ok"]?.bool == true { break }
            }
        }
        // Reap the daemon if it already exited (it is our child until we exit).
        var status: Int32 = 0
        let exited = waitpid(pid, &status, WNOHANG) == pid
        guard let result = outcome else {
            let e = BatonError(
                .startFailed, "the daemon exited before it could report\(exited ? " (exit status \((status >> 8) & 0xff))" : "")")
            return (e.resultJSON, pid)
        }
        return (result, pid)
    }

    /// In the daemon: takes the report pipe named in the environment (if
    /// any), enters `/` with the umask the starter chose.
    public static func adoptReportPipe() -> Int32? {
        guard let text = Sys.getenv(reportVariable), let fd = Int32(text) else { return nil }
        _ = baton_fcntl_setfd(fd, FD_CLOEXEC)
        unsetenv(reportVariable)
        let mask = Sys.getenv("BATON_UMASK").flatMap { mode_t($0) } ?? 0o022
        unsetenv("BATON_UMASK")
        umask(mask)
        _ = chdir("/")
        return fd
    }
}
