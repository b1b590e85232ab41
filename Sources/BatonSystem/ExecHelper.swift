import BatonCore
import CBatonShims
import Glibc

/// `baton __exec --dir DIR [--uid U --gid G [--user-name NAME]] -- command...`
///
/// Runs in the freshly spawned child, before the app: posix_spawn cannot know
/// the child's pid in advance, so this sets `LISTEN_PID` to its own pid,
/// enters the release directory, drops privileges, and execs the app, which
/// keeps the pid. It never returns; on failure it exits 126/127 like a shell.
public func execHelper(_ args: [String]) -> Never {
    func fail(_ message: String, _ code: Int32) -> Never {
        let text = "baton: \(message)\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(code)
    }
    let specs = ["dir", "uid", "gid", "user-name"].map { OptionSpec($0, value: "X", "") }
    guard let o = try? ParsedOptions(args, specs: specs, command: "__exec") else { fail("__exec: bad arguments", 127) }
    let (dir, userName) = (o.last("dir"), o.last("user-name"))
    let uid = o.last("uid").flatMap { uid_t($0) }
    let gid = o.last("gid").flatMap { gid_t($0) }
    let command = o.rest
    guard !command.isEmpty else { fail("__exec: no command", 127) }
    if let dir, chdir(dir) != 0 { fail("cannot enter \(dir): \(String(cString: strerror(errno)))", 127) }
    if let gid {
        if let userName, initgroups(userName, gid) != 0 {
            fail("initgroups(\(userName)): \(String(cString: strerror(errno)))", 126)
        } else if userName == nil, setgroups(0, nil) != 0, getuid() == 0 {
            fail("setgroups: \(String(cString: strerror(errno)))", 126)
        }
        if setgid(gid) != 0 { fail("setgid(\(gid)): \(String(cString: strerror(errno)))", 126) }
    }
    if let uid, setuid(uid) != 0 { fail("setuid(\(uid)): \(String(cString: strerror(errno)))", 126) }
    setenv("LISTEN_PID", String(getpid()), 1)
    withCStrings(command) { argv in _ = execvp(command[0], argv) }
    let e = errno
    fail("cannot run '\(command[0])': \(String(cString: strerror(e)))", e == ENOENT ? 127 : 126)
}
