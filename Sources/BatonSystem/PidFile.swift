import BatonCore
import CBatonShims
import Glibc

/// The supervisor's pid file: written atomically and kept locked (flock) for
/// the supervisor's whole life, so a live one is told from a stale one by
/// the lock, not by a guess about the pid.
public final class PidFile {
    /// Where it is.
    public let path: String
    private var fd: Int32 = -1
    private var identity: (dev: UInt64, ino: UInt64)?

    /// What stands at a pid file path.
    public enum Holder: Equatable, Sendable {
        /// No file.
        case none
        /// A live supervisor holds the lock.
        case live(pid: Int32?)
        /// A file nobody holds (its process died); the pid it names, if any.
        case stale(pid: Int32?)
    }

    /// Looks at `path` without changing anything.
    public static func inspect(_ path: String) -> Holder {
        let fd = baton_open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0)
        if fd < 0 {
            if errno == ENOENT { return .none }
            return .stale(pid: nil)  // a symlink or unreadable file: never ours
        }
        defer { close(fd) }
        let pid = Sys.readAll(fd, limit: 64).flatMap {
            Int32(String(decoding: $0, as: UTF8.self).trimmingSuffix(while: { $0 == "\n" || $0 == " " }))
        }
        if flock(fd, LOCK_SH | LOCK_NB) != 0 {
            return .live(pid: pid)
        }
        return .stale(pid: pid)
    }

    /// Checks that no live supervisor holds `path`; warns about a stale file.
    public init(checking path: String) throws(BatonError) {
        self.path = Sys.absolute(path)
        switch PidFile.inspect(self.path) {
        case .none:
            break
        case .live(let pid):
            throw BatonError(
                .alreadyRunning,
                "a supervisor is already running with pid file \(self.path)\(pid.map { " (pid \($0))" } ?? ""); stop it first or use another --pid-file"
            )
        case .stale(let pid) where pid == getpid():
            // Written for us by whoever started us (start-stop-daemon --make-pidfile).
            break
        case .stale(let pid):
            let why =
                pid.map { kill($0, 0) == 0 ? " (pid \($0) runs but holds no lock: not a supervisor)" : " (pid \($0) is not running)" } ?? ""
            Log.warning("replacing stale pid file \(self.path)\(why)")
        }
    }

    /// Writes this process's pid atomically and takes the lock.
    public func write() throws(BatonError) {
        let temp = "\(path).tmp.\(getpid())"
        let fd = baton_open(temp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let e = errno
            throw BatonError(.failure, "cannot write pid file \(path): \(Sys.describe(errno: e))", errno: e)
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0, Sys.writeAll(fd, "\(getpid())\n".utf8), rename(temp, path) == 0 else {
            let e = errno
            close(fd)
            unlink(temp)
            throw BatonError(.failure, "cannot write pid file \(path): \(Sys.describe(errno: e))", errno: e)
        }
        self.fd = fd
        self.identity = Sys.identity(fd: fd)
        // Two supervisors racing for a stale file: only the one whose file
        // stands at the path may go on.
        guard let now = Sys.identity(path), let mine = identity, now == mine else {
            close(fd)
            self.fd = -1
            throw BatonError(.alreadyRunning, "another supervisor took pid file \(path) at the same moment")
        }
    }

    /// The pid file a previous program of this process wrote and locked,
    /// taken over after a re-exec through its inherited descriptor `fd`.
    init(adopting path: String, fd: Int32) {
        self.path = path
        self.fd = fd
        self.identity = Sys.identity(fd: fd)
        _ = baton_fcntl_setfd(fd, FD_CLOEXEC)
    }

    /// The locked descriptor, for a re-exec to keep (-1 once removed).
    var descriptor: Int32 { fd }

    /// Removes the file if it is still ours, and drops the lock.
    public func remove() {
        if fd >= 0, let mine = identity, let now = Sys.identity(path), now == mine {
            unlink(path)
        }
        if fd >= 0 { close(fd) }
        fd = -1
    }
}

/// Writes Server::Starter's status file: one `generation:pid` line per live
/// generation, replaced atomically.
public struct StatusFile: Sendable {
    /// Where it is.
    public let path: String

    /// A status file at `path` (made absolute).
    public init(path: String) {
        self.path = Sys.absolute(path)
    }

    /// Rewrites it with these entries (the machine decides which generations are listed).
    ///
    /// The lines come in Server::Starter's order (its `sort keys`): by the
    /// generation's digits as text, so `10:...` stands before `9:...`.
    public func write(_ entries: [StatusEntry]) {
        let text = entries.sorted { String($0.generation) < String($1.generation) }.map { "\($0.generation):\($0.pid)\n" }.joined()
        do { try Sys.writeFileAtomically(path, text) } catch { Log.warning(error.message) }
    }

    /// Removes it.
    public func remove() {
        unlink(path)
    }
}
