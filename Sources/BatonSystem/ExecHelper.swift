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
    var i = 0
    var dir: String?
    var uid: uid_t?
    var gid: gid_t?
    var userName: String?
    while i < args.count, args[i] != "--" {
        let value = i + 1 < args.count ? args[i + 1] : ""
        switch args[i] {
        case "--dir": dir = value
        case "--uid": uid = UInt32(value)
        case "--gid": gid = UInt32(value)
        case "--user-name": userName = value
        default: break
        }
        i += 2
    }
    let command = Array(args.dropFirst(i + 1))
    func fail(_ message: String, _ code: Int32) -> Never {
        let text = "baton: \(message)\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(code)
    }
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
