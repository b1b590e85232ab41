import BatonCore
import BatonSystem
import CBatonShims
import Glibc

func logsCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.logs, args, positional: .one)
    try noCommand(o, "logs")
    let loc = try locations(o)
    guard let path = loc.logFile else {
        throw BatonError(.usage, "baton logs: say which log: a NAME, --name NAME, --pid-file PATH or --log-file PATH")
    }
    // -n 0 prints nothing of the past: only with --follow.
    let least = o.has("follow") ? 0 : 1
    let count =
        try o.last("lines").map { (t: String) throws(BatonError) in try OptionParsing.integer(t, option: "--lines", range: least...100_000)
        } ?? 50
    guard access(path, R_OK) == 0 else { throw BatonError(.notRunning, "no log at \(path): \(Sys.describe(errno: errno))") }
    if count > 0 { for line in Sys.tail(path, lines: count) { Out.line(line) } }
    guard o.has("follow") else { return 0 }
    return follow(path)
}

/// Prints what is added to `path` until interrupted: inotify on its
/// directory tells of writes, of a new file renamed over it or created in
/// its place (logrotate), and of truncation (copytruncate).
func follow(_ path: String) -> Int32 {
    let slash = path.lastIndex(of: "/").map { path[..<$0] } ?? "."
    let watch = baton_inotify_watch(slash.isEmpty ? "/" : String(slash))
    guard watch >= 0 else {
        Out.error("baton: cannot watch \(slash): \(Sys.describe(errno: errno))")
        return 1
    }
    var fd = baton_open(path, O_RDONLY | O_CLOEXEC, 0)
    var identity = Sys.identity(fd: fd)
    if fd >= 0 { lseek(fd, 0, SEEK_END) }
    var buffer = [UInt8](repeating: 0, count: 65536)
    func drain() {
        guard fd >= 0 else { return }
        var st = stat()
        if fstat(fd, &st) == 0, st.st_size < lseek(fd, 0, SEEK_CUR) { lseek(fd, 0, SEEK_SET) }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            Sys.writeAll(1, buffer[0..<n])
        }
    }
    while true {
        var p = pollfd(fd: watch, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, -1) > 0 || errno == EINTR else { return 1 }
        _ = buffer.withUnsafeMutableBytes { read(watch, $0.baseAddress, $0.count) }
        drain()
        // Rotated: the name now belongs to another file; read the old one to its end, then follow the new one.
        if let now = Sys.identity(path), identity.map({ $0 != now }) ?? true {
            let next = baton_open(path, O_RDONLY | O_CLOEXEC, 0)
            if next >= 0 {
                if fd >= 0 { close(fd) }
                fd = next
                identity = Sys.identity(fd: fd)
                drain()
            }
        }
    }
}
