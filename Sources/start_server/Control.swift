import BatonControl
import BatonCore
import BatonSystem
import CBatonShims
import Glibc

func readPid(_ path: String) -> pid_t? {
    Sys.readFile(path, limit: 64).flatMap { pid_t(String(decoding: $0, as: UTF8.self).trimmingSuffix(while: { $0 == "\n" || $0 == " " })) }
}

func generations(_ statusFile: String) -> [Int] {
    guard let bytes = Sys.readFile(statusFile, limit: 1 << 16) else { return [] }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
        line.split(separator: ":").first.flatMap { Int($0) }
    }.sorted()
}

/// `--restart`: against our own start_server, the real outcome over the
/// control socket; against any other (Perl's too), HUP and the status file.
func restartServer() -> Never {
    guard let pidFile = last("pid-file"), let statusFile = last("status-file") else {
        die("--restart option requires --pid-file and --status-file to be set as well")
    }
    let timeout = restartTimeout()
    let control = controlPath(pidFile: pidFile)
    if case .success(let channel) = ControlChannel.connect(control) {
        channel.close()
        let r = Operations.restart(control: control, timeout: timeout, waitDrain: true) { step in
            if case .progress(let p) = step { Sys.writeAll(2, "start_server: gen \(p.generation ?? 0) \(p.message)\n".utf8) }
        }
        if r.ok { exit(0) }
        die(r.message, code: r.exitCode)
    }
    // Watch the status file (inotify, no polling) until one generation, newer than before, is left.
    let deadline = Sys.now() + timeout
    guard let pid = readPid(pidFile) else { die("failed to open file:\(pidFile): \(Sys.describe(errno: errno))") }
    guard let before = generations(statusFile).max() else { die("no active process found in the status file") }
    let dir = String(Sys.absolute(statusFile).split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
    let inotify = baton_inotify_watch(dir.isEmpty ? "/" : dir)
    guard kill(pid, SIGHUP) == 0 else { die("failed to send SIGHUP to the server process:\(Sys.describe(errno: errno))") }
    while true {
        let now = generations(statusFile)
        if now.count == 1, now[0] > before { exit(0) }
        guard inotify >= 0 else { die("cannot watch \(dir): \(Sys.describe(errno: errno))") }
        let left = deadline - Sys.now()
        var p = pollfd(fd: inotify, events: Int16(POLLIN), revents: 0)
        guard left > .zero, poll(&p, 1, Int32(clamping: left.milliseconds + 1)) >= 0 || errno == EINTR else {
            die(
                "no single generation newer than \(before) is serving after \(timeout.humanDescription) (status: \(now.map(String.init).joined(separator: ",")))",
                code: 7)
        }
        if p.revents != 0 {
            var buf = [UInt8](repeating: 0, count: 4096)
            _ = buf.withUnsafeMutableBytes { read(inotify, $0.baseAddress, $0.count) }
        }
    }
}

/// `--upgrade`: the running start_server re-executes the binary now on
/// disk in place, over its control socket (after a package upgrade).
func upgradeServer() -> Never {
    guard let pidFile = last("pid-file") else { die("--upgrade option requires --pid-file to be set as well") }
    let r = Operations.upgrade(control: controlPath(pidFile: pidFile), binary: nil, configuration: nil, timeout: restartTimeout())
    if r.ok {
        Sys.writeAll(2, "start_server: \(r.message)\n".utf8)
        exit(0)
    }
    die(r.message, code: r.exitCode)
}

/// `--stop`: SIGTERM, then wait until the server released its pid file's lock.
func stopServer() -> Never {
    guard let pidFile = last("pid-file") else { die("--stop option requires --pid-file to be set as well") }
    let timeout = restartTimeout()
    let fd = baton_open(pidFile, O_RDWR | O_CLOEXEC, 0)
    guard fd >= 0, let pid = readPid(pidFile) else { die("failed to open file:\(pidFile):\(Sys.describe(errno: errno))") }
    Sys.writeAll(2, "stop_server (pid:\(getpid())) stopping now (pid:\(pid))...\n".utf8)
    guard kill(pid, SIGTERM) == 0 else { die("failed to send SIGTERM to the server process:\(Sys.describe(errno: errno))") }
    // The server holds the pid file's lock until it has exited.
    guard baton_flock_timeout(fd, Int64(timeout.milliseconds)) == 0 else {
        die("the server (pid \(pid)) is still running after \(timeout.humanDescription)", code: 7)
    }
    exit(0)
}
