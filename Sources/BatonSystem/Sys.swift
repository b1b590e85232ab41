import BatonControl
import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// Thin wrappers over the system calls the supervisor uses.
public enum Sys {
    /// The text of an errno value.
    public static func describe(errno code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// The monotonic clock, as the state machine's `Instant`.
    public static func now() -> Instant {
        MonotonicClock.now()
    }

    /// `realpath(3)`, or nil with errno set.
    public static func realpath(_ path: String) -> String? {
        guard let resolved = Glibc.realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The text of a NUL-terminated C buffer.
    public static func string(fromC buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The current working directory.
    public static func cwd() -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return "/" }
        return string(fromC: buf)
    }

    /// Makes `path` absolute against the current directory (no symlink resolution).
    public static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : cwd() + "/" + path
    }

    /// Reads a whole file (at most `limit` bytes); nil with errno set on failure.
    public static func readFile(_ path: String, limit: Int = 1 << 20, followSymlinks: Bool = true) -> [UInt8]? {
        let fd = baton_open(path, O_RDONLY | O_CLOEXEC | (followSymlinks ? 0 : O_NOFOLLOW), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return readAll(fd, limit: limit)
    }

    /// Reads from `fd` until EOF or `limit` bytes.
    public static func readAll(_ fd: Int32, limit: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count < limit {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, min(4096, limit - out.count)) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    /// Writes all of `bytes` to `fd`.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: some Collection<UInt8>) -> Bool {
        Descriptor.writeAll(fd, bytes)
    }

    /// Writes all of `bytes` to a non-blocking socket; false when it would block or fails.
    public static func writeAllNonBlocking(_ fd: Int32, _ bytes: some Collection<UInt8>) -> Bool {
        Descriptor.writeAll(fd, bytes, sendFlags: Int32(MSG_NOSIGNAL))
    }

    /// Seconds since the epoch.
    public static func wallClockSeconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int(ts.tv_sec)
    }

    /// Writes `contents` to `path` through a temporary file renamed over it,
    /// so a reader sees the old or the new contents, never a part. A symlink
    /// at `path` is replaced, never followed.
    public static func writeFileAtomically(_ path: String, _ contents: String, mode: mode_t = 0o644) throws(BatonError) {
        let temp = "\(path).tmp.\(getpid())"
        let fd = baton_open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            let e = errno
            throw BatonError(.failure, "cannot write \(path): \(describe(errno: e))", errno: e)
        }
        let ok = writeAll(fd, contents.utf8)
        close(fd)
        guard ok, rename(temp, path) == 0 else {
            let e = errno
            unlink(temp)
            throw BatonError(.failure, "cannot write \(path): \(describe(errno: e))", errno: e)
        }
    }

    /// The device and inode of `path` (not following a final symlink).
    public static func identity(_ path: String) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// The device and inode of an open descriptor.
    public static func identity(fd: Int32) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// The environment of this process as `KEY=VALUE` strings.
    public static func environment() -> [String] {
        var out: [String] = []
        guard var p = baton_environ() else { return out }
        while let entry = p.pointee {
            out.append(String(cString: entry))
            p += 1
        }
        return out
    }

    /// One variable of this process's environment.
    public static func getenv(_ name: String) -> String? {
        Glibc.getenv(name).map { String(cString: $0) }
    }

    /// The command line of a process, spaces between the arguments, shortened.
    public static func commandLine(of pid: Int32) -> String? {
        guard let bytes = readFile("/proc/\(pid)/cmdline", limit: 4096), !bytes.isEmpty else { return nil }
        let text = String(decoding: bytes.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            .trimmingSuffix(while: { $0 == " " })
        return text.count > 80 ? String(text.prefix(77)) + "..." : text
    }

    /// The last `count` lines of a file (empty when it cannot be read).
    public static func tail(_ path: String, lines count: Int) -> [String] {
        let fd = baton_open(path, O_RDONLY | O_CLOEXEC, 0)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        let window = count * 400 + 4096
        let from = max(0, size - off_t(window))
        lseek(fd, from, SEEK_SET)
        guard let bytes = readAll(fd, limit: window) else { return [] }
        var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        if from > 0, !lines.isEmpty { lines.removeFirst() }
        return Array(lines.suffix(count))
    }

    // MARK: - /proc

    /// The names in a directory, without "." and "..", or nil if it cannot be opened.
    public static func directoryNames(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The parent pid of `pid`, from /proc/PID/stat.
    public static func parentPid(of pid: Int32) -> Int32? {
        guard let stat = readFile("/proc/\(pid)/stat", limit: 4096), let close = stat.lastIndex(of: UInt8(ascii: ")")) else {
            return nil
        }
        // After the command in parentheses: the state, then the parent pid.
        let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 1 else { return nil }
        return Int32(String(decoding: fields[1], as: UTF8.self))
    }

    /// The value of `name` in the environment `pid` started with, from /proc/PID/environ.
    public static func environmentValue(_ name: String, of pid: Int32) -> String? {
        guard let env = readFile("/proc/\(pid)/environ", limit: 1 << 20) else { return nil }
        let key = Array((name + "=").utf8)
        for entry in env.split(separator: 0) where entry.starts(with: key) {
            return String(decoding: entry.dropFirst(key.count), as: UTF8.self)
        }
        return nil
    }

    /// The children of `pid`: the /proc/PID/task/TID/children list of each of
    /// its threads (a child is listed under the thread that forked it, or that
    /// adopted it as a subreaper); where the kernel lacks those files
    /// (CONFIG_PROC_CHILDREN), the parent of every process.
    public static func children(of pid: Int32) -> Set<Int32> {
        let threads = directoryNames("/proc/\(pid)/task") ?? []
        var children: Set<Int32> = []
        var listed = false
        for thread in threads {
            guard let list = readFile("/proc/\(pid)/task/\(thread)/children") else { continue }
            listed = true
            for field in list.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") }) {
                if let child = Int32(String(decoding: field, as: UTF8.self)) { children.insert(child) }
            }
        }
        if listed { return children }
        for name in directoryNames("/proc") ?? [] {
            if let child = Int32(name), child != pid, parentPid(of: child) == pid { children.insert(child) }
        }
        return children
    }

    /// The children of `pid` that run its own program (forked without an
    /// exec: a prefork server's workers), as the kernel lists them in
    /// `/proc/PID/task/*/children`; none where it does not list them.
    public static func forkedChildren(of pid: Int32) -> [Int32] {
        guard let program = readLink("/proc/\(pid)/exe") else { return [] }
        var found: [Int32] = []
        for thread in directoryNames("/proc/\(pid)/task") ?? [] {
            guard let list = readFile("/proc/\(pid)/task/\(thread)/children") else { continue }
            for field in list.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") }) {
                if let child = Int32(String(decoding: field, as: UTF8.self)), readLink("/proc/\(child)/exe") == program {
                    found.append(child)
                }
            }
        }
        return found
    }

    /// Finds an executable for `command` the way execvp would: a name with a
    /// slash is taken relative to `directory`, others are searched in `path`.
    public static func findExecutable(_ command: String, directory: String, path: String?) -> (found: String?, problem: String?) {
        func check(_ candidate: String) -> String? {
            var st = stat()
            guard stat(candidate, &st) == 0 else { return "does not exist" }
            guard (st.st_mode & S_IFMT) == S_IFREG else { return "is not a regular file" }
            guard access(candidate, X_OK) == 0 else { return "is not executable" }
            return nil
        }
        if command.contains("/") {
            let full = command.hasPrefix("/") ? command : directory + "/" + command
            let problem = check(full)
            return (problem == nil ? full : nil, problem)
        }
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let full = (dir.hasPrefix("/") ? String(dir) : directory + "/" + dir) + "/" + command
            if check(full) == nil { return (full, nil) }
        }
        return (nil, "was not found in PATH")
    }
}

extension String {
    /// The string without the trailing characters that match `predicate`.
    public func trimmingSuffix(while predicate: (Character) -> Bool) -> String {
        var s = Substring(self)
        while let last = s.last, predicate(last) { s = s.dropLast() }
        return String(s)
    }
}
