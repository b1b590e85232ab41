import BatonCore
import CBatonShims
import Glibc

/// Where this process's stdout and stderr go: a file (appended, reopened on
/// SIGUSR1 for logrotate), or for `| command` (Server::Starter's
/// `--log-file`) a shell command's stdin.
public enum LogFile {
    /// Sends stdout and stderr to `target`; a command, if any, runs as a child of this process.
    public static func redirect(to target: String) throws(BatonError) {
        let fd: Int32
        if target.hasPrefix("|") {
            fd = try pipeToCommand(String(target.dropFirst()).trimmingSuffix(while: { $0 == " " }), shown: target)
        } else {
            fd = baton_open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                let e = errno
                throw BatonError(.failure, "cannot open log file \(target): \(Sys.describe(errno: e))", errno: e)
            }
        }
        dup2(fd, 1)
        dup2(fd, 2)
        close(fd)
    }

    private static func pipeToCommand(_ command: String, shown: String) throws(BatonError) -> Int32 {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw BatonError(.failure, "pipe: \(Sys.describe(errno: errno))", errno: errno) }
        let readEnd = baton_fcntl_dupfd_cloexec(fds[0], 100)
        close(fds[0])
        _ = baton_fcntl_setfd(fds[1], FD_CLOEXEC)
        var pid: pid_t = 0
        let stdio: [Int32] = [readEnd, -1, -1]
        let rc = withCStrings(["sh", "-c", command]) { argv in
            stdio.withUnsafeBufferPointer { s in
                baton_spawn(&pid, "/bin/sh", argv, baton_environ(), nil, nil, 0, s.baseAddress, 0, 0)
            }
        }
        close(readEnd)
        guard rc == 0 else {
            close(fds[1])
            throw BatonError(.failure, "failed to open pipe:\(shown): \(Sys.describe(errno: rc))", errno: rc)
        }
        return fds[1]
    }
}
