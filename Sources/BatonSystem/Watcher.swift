import BatonCore
import Glibc

/// Files under watch for development mode, with inotify (no polling):
/// directories recursively, new subdirectories included; a single file
/// through its directory (editors rename a new file over the old one).
final class Watcher {
    /// Editor swap and backup files, version control and build output,
    /// caches and logs: changes to these never restart the app.
    static let defaultIgnores = [
        ".*.swp", ".*.swx", ".*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", ".git", ".hg", ".svn", ".build*", "node_modules",
        "__pycache__", "*.pyc", "*.log", ".DS_Store",
    ]

    let fd: Int32
    /// Each watch: its directory, the root it belongs to, and (for a file watched alone) the only name it reports.
    private var watches: [Int32: (path: String, root: String, only: String?)] = [:]
    private let ignores: [String]
    private let mask: UInt32 =
        UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_MOVED_FROM) | UInt32(IN_CREATE) | UInt32(IN_DELETE)
        | UInt32(IN_ATTRIB) | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)

    /// Watches `paths` (absolute); fails naming the first that cannot be watched.
    init(paths: [String], ignoring extra: [String]) throws(BatonError) {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw BatonError(.failure, "inotify: \(Sys.describe(errno: errno))", errno: errno) }
        ignores = Self.defaultIgnores + extra
        for path in paths {
            var st = stat()
            guard stat(path, &st) == 0 else {
                let e = errno
                close(fd)
                throw BatonError(.usage, "--watch \(path): \(Sys.describe(errno: e))", errno: e)
            }
            if st.st_mode & S_IFMT == S_IFDIR {
                addTree(path, root: path)
            } else {
                let dir = Self.parent(of: path)
                addWatch(dir, root: dir, only: String(path.dropFirst(dir.count + (dir == "/" ? 0 : 1))))
            }
        }
        if watches.isEmpty {
            close(fd)
            throw BatonError(.usage, "--watch: nothing could be watched (\(paths.joined(separator: ", ")))")
        }
    }

    deinit { close(fd) }

    /// How many directories are watched.
    var count: Int { watches.count }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// True when a name (a file's or a directory's) is ignored.
    func ignored(_ name: String) -> Bool {
        ignores.contains { fnmatch($0, name, 0) == 0 }
    }

    private func addWatch(_ dir: String, root: String, only: String? = nil) {
        let wd = inotify_add_watch(fd, dir, mask)
        if wd < 0 {
            Log.warning("--watch: cannot watch \(dir): \(Sys.describe(errno: errno))")
            return
        }
        watches[wd] = (dir, root, only)
    }

    /// Watches `dir` and every directory under it that is not ignored.
    private func addTree(_ dir: String, root: String) {
        addWatch(dir, root: root)
        for name in Sys.directoryNames(dir) ?? [] where !ignored(name) {
            let path = dir + "/" + name
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR { addTree(path, root: root) }
        }
    }

    /// Reads every pending event; returns the changed paths (relative to
    /// their watched root) that are not ignored, in order. A rename counts
    /// once: as its new name, or as its old one when the new one is ignored
    /// (a file renamed to a backup name is a file gone).
    func read() -> [String] {
        var changed: [String] = []
        var movedFrom: (cookie: UInt32, path: String?)?
        func flushMove() {
            if let m = movedFrom, let path = m.path { changed.append(path) }
            movedFrom = nil
        }
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            var offset = 0
            let header = MemoryLayout<inotify_event>.size
            while offset + header <= n {
                let (wd, mask, cookie, length) = buffer.withUnsafeBytes { raw -> (Int32, UInt32, UInt32, Int) in
                    let e = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (e.wd, e.mask, e.cookie, Int(e.len))
                }
                let nameBytes = buffer[(offset + header)..<min(n, offset + header + length)]
                let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
                offset += header + length
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    flushMove()
                    changed.append("(many files)")
                    continue
                }
                guard let w = watches[wd] else { continue }
                if mask & UInt32(IN_IGNORED) != 0 {
                    watches[wd] = nil
                    continue
                }
                if name.isEmpty { continue }  // the directory itself (deleted or moved): its parent reports it
                if let only = w.only, name != only { continue }
                let path = w.path + "/" + name
                let relative = String(path.dropFirst(w.root.count + 1))
                // An ignored directory anywhere on the way, or an ignored name.
                let isIgnored = relative.split(separator: "/").contains { ignored(String($0)) }
                if mask & UInt32(IN_MOVED_TO) != 0, let m = movedFrom, m.cookie == cookie {
                    movedFrom = nil
                    if mask & UInt32(IN_ISDIR) != 0, !isIgnored { addTree(path, root: w.root) }
                    if let report = isIgnored ? m.path : relative { changed.append(report) }
                    continue
                }
                flushMove()
                if mask & UInt32(IN_MOVED_FROM) != 0 {
                    movedFrom = (cookie, isIgnored ? nil : relative)
                    continue
                }
                if isIgnored { continue }
                if mask & UInt32(IN_ISDIR) != 0 {
                    // A new directory: watch it (and what is already in it).
                    if mask & (UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) != 0 { addTree(path, root: w.root) }
                    continue
                }
                if mask & UInt32(IN_CREATE) != 0 { continue }  // its close-after-write follows
                changed.append(relative)
            }
        }
        flushMove()
        return changed
    }
}
