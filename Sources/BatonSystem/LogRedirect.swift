import BatonCore
import CBatonShims
import Glibc

/// Sends this process's stdout and stderr to a file (appended) or, for
/// `| command`, into a shell command's stdin (Server::Starter's --log-file).
public enum LogRedirect {
    /// Applies `target`; the command, if any, runs as a child of this process.
    public static func apply(_ target: String) throws(BatonError) {
        let fd: Int32
        if target.hasPrefix("|") {
            let command = String(target.dropFirst()).trimmingSuffix(while: { $0 == " " })
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
                throw BatonError(.failure, "failed to open pipe:\(target): \(Sys.describe(errno: rc))", errno: rc)
            }
            fd = fds[1]
        } else {
            fd = baton_open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                let e = errno
                throw BatonError(.failure, "failed to open log file:\(target): \(Sys.describe(errno: e))", errno: e)
            }
        }
        dup2(fd, 1)
        dup2(fd, 2)
        close(fd)
    }
}
