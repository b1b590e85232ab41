import Foundation
import Glibc

/// A private network namespace (`unshare -n`) with loopback up and
/// `net.ipv4.tcp_migrate_req=1`, held open by a sleeping process; commands
/// enter it through `nsenter --net`, which execs them (their pid is theirs).
public final class PrivateNetwork: @unchecked Sendable {
    public let holder: Child
    public let ready: Bool

    public init(_ scratch: Scratch, migrateRequests: Bool = true) {
        let setup = [
            "\(Tools.ip!) link set lo up",
            "\(Tools.sysctl!) -qw net.ipv4.tcp_migrate_req=\(migrateRequests ? 1 : 0)",
            "echo namespace-ready",
            "exec sleep 600",
        ].joined(separator: " && ")
        let holder = Child(Tools.unshare!, ["-n", "--", "/bin/sh", "-c", setup], log: scratch.file("netns.log"))
        self.holder = holder
        ready = eventually(10) { holder.log.contains("namespace-ready") }
    }

    /// Runs a command inside the namespace when put in front of it.
    public var prefix: [String] { [Tools.nsenter!, "--net=/proc/\(holder.pid)/ns/net", "--"] }

    /// Runs `body` on a thread of its own that has entered the namespace (a
    /// network namespace is per thread: the test's other threads stay outside).
    public func perform<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        let pid = holder.pid
        return Threaded {
            precondition(enterNetworkNamespace(of: pid), "setns: \(String(cString: strerror(errno)))")
            return body()
        }.value
    }

    deinit { holder.stop(SIGKILL, grace: 2) }
}

/// Moves the calling thread into the network namespace of process `pid` (setns(2), looked up at run time).
public func enterNetworkNamespace(of pid: pid_t) -> Bool {
    typealias SetNamespace = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "setns") else { return false }
    let setNamespace = unsafeBitCast(symbol, to: SetNamespace.self)
    let fd = open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let cloneNewNet: Int32 = 0x4000_0000  // CLONE_NEWNET, behind _GNU_SOURCE in sched.h
    return setNamespace(fd, cloneNewNet) == 0
}
