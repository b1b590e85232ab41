import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// One address to listen on, as configured.
public struct ListenSpec: Sendable, Equatable {
    /// Where to listen.
    public var address: ListenAddress
    /// Its key in `SERVER_STARTER_PORT` (default: the address as bound).
    public var envKey: String?
    /// The descriptor number the app gets it at (default: 3, 4, ... in order).
    public var fd: Int32?

    /// A spec for `address`.
    public init(_ address: ListenAddress, envKey: String? = nil, fd: Int32? = nil) {
        self.address = address
        self.envKey = envKey
        self.fd = fd
    }
}

/// A listening socket the supervisor holds.
public struct Listener: Sendable {
    /// The address as bound (a port 0 replaced by the one the kernel chose).
    public var address: ListenAddress
    /// The supervisor's copy: close-on-exec, parked at a high number.
    public var fd: Int32
    /// Its name in `LISTEN_FDNAMES`.
    public var name: String
    /// A unix socket file this supervisor created (removed when it stops).
    public var createdFile: (path: String, dev: UInt64, ino: UInt64)?
    /// Its key in `SERVER_STARTER_PORT`.
    public var envKey: String = ""
    /// The descriptor number the app gets it at, if pinned.
    public var targetFD: Int32?
    /// Bound with SO_REUSEPORT (steered: one per generation).
    public var reusePort = false
    /// A unix socket bound at a temporary path, not yet renamed over its address.
    public var temporaryPath: String?
    /// The address as configured (`127.0.0.1:0` for one bound to a port the kernel chose).
    public var configured: ListenAddress?

    /// True for TCP listeners.
    public var isTCP: Bool {
        if case .tcp = address { return true }
        return false
    }
}

/// Binding, adopting and releasing the supervisor's listening sockets.
public enum Listeners {
    /// The lowest descriptor number the supervisor parks its sockets at, so
    /// that the child's `dup2` onto 3, 4, ... never meets a source.
    public static let parkAt: Int32 = 100

    /// Binds every address; on any failure closes what it bound and throws.
    /// With `reusePort`, TCP sockets get SO_REUSEPORT (steered listeners).
    public static func bind(
        _ specs: [ListenSpec], backlog: Int32?, socketMode: UInt32, reusePort: Bool = false
    ) throws(BatonError) -> [Listener] {
        var bound: [Listener] = []
        let depth = backlog ?? baton_somaxconn()
        do {
            for (i, spec) in specs.enumerated() {
                var l: Listener
                switch spec.address {
                case .tcp(let host, let port):
                    // SO_REUSEPORT would let this socket join one that another
                    // process (of the same user) listens on: make sure nobody does.
                    if reusePort, port != 0 { try probeFree(host: host, port: port, original: spec.address) }
                    l = try bindTCP(host: host, port: port, backlog: depth, original: spec.address, reusePort: reusePort)
                case .unix(let path):
                    l = try bindUnix(path: path, backlog: depth, mode: socketMode)
                case .udp(let host, let port):
                    l = try bindTCP(host: host, port: port, backlog: 0, original: spec.address, reusePort: false, datagram: true)
                }
                l.name = "listen\(i)"
                l.configured = spec.address
                l.envKey = spec.envKey ?? l.address.serverStarterKey
                l.targetFD = spec.fd
                bound.append(l)
            }
        } catch {
            release(bound)
            throw error
        }
        return bound
    }

    /// Binds another socket for the address of `listener`: one more
    /// SO_REUSEPORT TCP socket, or a unix socket at `temporaryPath` (to be
    /// renamed over the public path with `publish`).
    public static func bindAnother(
        _ listener: Listener, backlog: Int32?, socketMode: UInt32, temporaryPath: String?
    ) throws(BatonError) -> Listener {
        var l: Listener
        switch listener.address {
        case .tcp(let host, let port):
            l = try bindTCP(host: host, port: port, backlog: backlog ?? baton_somaxconn(), original: listener.address, reusePort: true)
        case .unix(let path):
            guard let temporaryPath else { return listener }
            l = try bindUnix(path: temporaryPath, backlog: backlog ?? baton_somaxconn(), mode: socketMode)
            l.address = .unix(path: path)
            l.temporaryPath = temporaryPath
        case .udp:
            return listener  // shared by every generation: never a socket of its own
        }
        l.name = listener.name
        l.envKey = listener.envKey
        l.targetFD = listener.targetFD
        l.configured = listener.configured
        return l
    }

    /// Renames a unix socket from its temporary path over its public one:
    /// every new `connect()` reaches it from now on.
    public static func publish(_ listener: inout Listener) throws(BatonError) {
        guard let temporary = listener.temporaryPath, case .unix(let path) = listener.address else { return }
        guard rename(temporary, path) == 0 else {
            throw BatonError(.failure, "cannot rename \(temporary) over \(path): \(Sys.describe(errno: errno))", errno: errno)
        }
        listener.temporaryPath = nil
        listener.createdFile = Sys.identity(path).map { (path, $0.dev, $0.ino) }
    }

    /// The temporary path of a generation's own unix socket next to `path`,
    /// or nil when it would be too long for the kernel.
    public static func temporaryPath(for path: String, socket: Int) -> String? {
        let candidate = "\(path).baton-\(socket)"
        return candidate.utf8.count <= UnixAddress.maxBytes ? candidate : nil
    }

    /// Steers every new connection of the SO_REUSEPORT group of `fd` to slot `index`.
    public static func steer(_ fd: Int32, toSlot index: Int) throws(BatonError) {
        guard baton_steer_reuseport(fd, UInt32(index)) == 0 else {
            throw BatonError(.failure, "cannot attach the steering program: \(Sys.describe(errno: errno))", errno: errno)
        }
    }

    /// The connections waiting in a listener's accept queue (a unix socket
    /// whose count the kernel does not tell counts 1 for "some").
    public static func queueLength(_ listener: Listener) -> Int {
        let n = listener.isTCP ? baton_tcp_accept_queue(listener.fd) : baton_unix_accept_queue(listener.fd)
        if n >= 0 { return Int(n) }
        return baton_listener_has_pending(listener.fd) == 1 ? 1 : 0
    }

    /// Stops accepting on a listener: it leaves its SO_REUSEPORT group, and
    /// with `net.ipv4.tcp_migrate_req=1` the kernel moves its queued
    /// connections to the other members.
    public static func shutDown(_ listener: Listener) {
        shutdown(listener.fd, Int32(SHUT_RDWR))
    }

    /// True when `net.ipv4.tcp_migrate_req` is 1 in this network namespace.
    public static func queueMigrationEnabled() -> Bool {
        Sys.readFile("/proc/sys/net/ipv4/tcp_migrate_req", limit: 16).map { $0.first == UInt8(ascii: "1") } ?? false
    }

    /// Adopts sockets passed by systemd socket activation (`LISTEN_FDS` with
    /// `LISTEN_PID` equal to this process), or nil when there are none.
    public static func adoptSystemd() throws(BatonError) -> [Listener]? {
        guard let pidText = Sys.getenv("LISTEN_PID"), let countText = Sys.getenv("LISTEN_FDS") else { return nil }
        guard let pid = Int32(pidText), pid == getpid() else { return nil }
        guard let count = Int32(countText), count > 0, count < 64 else {
            throw BatonError(.usage, "LISTEN_FDS='\(countText)' is not a number of descriptors (1-63)")
        }
        let names = Sys.getenv("LISTEN_FDNAMES").map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        var out: [Listener] = []
        for i in 0..<count {
            let fd = 3 + i
            var accepting: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0, accepting == 1 else {
                throw BatonError(.usage, "LISTEN_FDS: descriptor \(fd) is not a listening socket")
            }
            guard let address = localAddress(fd) else {
                throw BatonError(.usage, "LISTEN_FDS: descriptor \(fd) is not a TCP or unix socket")
            }
            let parked = baton_fcntl_dupfd_cloexec(fd, parkAt)
            guard parked >= 0 else {
                throw BatonError(.failure, "cannot keep descriptor \(fd): \(Sys.describe(errno: errno))", errno: errno)
            }
            close(fd)
            let name = Int(i) < names.count && !names[Int(i)].isEmpty ? names[Int(i)] : "listen\(i)"
            var l = Listener(address: address, fd: parked, name: name, createdFile: nil)
            l.envKey = address.description
            out.append(l)
        }
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        return out
    }

    /// Closes the sockets and removes the unix socket files this process created.
    public static func release(_ listeners: [Listener]) {
        for l in listeners {
            if l.fd >= 0 { close(l.fd) }
            if let file = l.createdFile, let now = Sys.identity(file.path), now.dev == file.dev, now.ino == file.ino {
                unlink(file.path)
            }
        }
    }

    /// True when the kernel can steer connections: a one-socket group takes
    /// a program that sends everything to its only slot.
    public static func canSteer(_ listener: Listener) -> Bool {
        listener.isTCP && listener.reusePort && baton_steer_reuseport(listener.fd, 0) == 0
    }

    // MARK: - TCP

    /// A TCP listener, or with `datagram` a bound UDP socket (no listen, no SO_REUSEADDR).
    private static func bindTCP(
        host: String, port: UInt16, backlog: Int32, original: ListenAddress, reusePort: Bool, listening: Bool = true,
        datagram: Bool = false
    ) throws(BatonError) -> Listener {
        let resolved: SocketName.Resolved
        switch SocketName.resolve(host: host, port: port) {
        case .success(let r): resolved = r
        case .failure(let e): throw BatonError(.bindFailed, "cannot listen on \(original): cannot resolve '\(host)': \(e.message)")
        }
        let family = resolved.family
        let type = datagram ? SOCK_DGRAM : SOCK_STREAM
        let fd = socket(family, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw BatonError(.bindFailed, "cannot listen on \(original): socket: \(Sys.describe(errno: errno))", errno: errno)
        }
        var one: Int32 = 1
        // On UDP, SO_REUSEADDR would let a second socket bind the same port
        // and take its datagrams: leave it off, so that a port in use fails.
        if !datagram { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        if family == AF_INET6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if reusePort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if resolved.withSockaddr({ Glibc.bind(fd, $0, $1) }) != 0 {
            let e = errno
            close(fd)
            throw bindError(original, errno: e, port: port)
        }
        guard !listening || datagram || listen(fd, backlog) == 0 else {
            let e = errno
            close(fd)
            throw BatonError(.bindFailed, "cannot listen on \(original): \(Sys.describe(errno: e))", errno: e)
        }
        let parked = try park(fd, original)
        var address = localAddress(parked) ?? original
        if datagram, case .tcp(let host, let port) = address { address = .udp(host: host, port: port) }
        var l = Listener(address: address, fd: parked, name: "", createdFile: nil)
        l.reusePort = reusePort
        return l
    }

    /// Binds (and closes) a socket without SO_REUSEPORT: EADDRINUSE when any
    /// other socket holds the address.
    private static func probeFree(host: String, port: UInt16, original: ListenAddress) throws(BatonError) {
        let probe = try bindTCP(host: host, port: port, backlog: 1, original: original, reusePort: false, listening: false)
        close(probe.fd)
    }

    private static func bindError(_ address: ListenAddress, errno e: Int32, port: UInt16) -> BatonError {
        switch e {
        case EADDRINUSE:
            // The owner lookup reads TCP listeners: a UDP port's is not there.
            guard !address.isDatagram, let owner = portOwner(port) else {
                return BatonError(
                    .bindFailed, "\(address) is already in use; stop that process or choose another address with --listen", errno: e)
            }
            if let generation = orphanedGeneration(owner.pid) {
                // A generation whose supervisor was killed keeps serving on the
                // inherited socket: say so, and how to take over.
                return BatonError(
                    .bindFailed,
                    "\(address) is held by pid \(owner.pid) '\(owner.command)', generation \(generation) of a baton supervisor that is gone; "
                        + "it still serves. Stop it with 'kill -TERM -\(owner.pid)' (its process group) and start baton again",
                    errno: e)
            }
            return BatonError(
                .bindFailed,
                "\(address) is already in use (by pid \(owner.pid) '\(owner.command)'); stop that process or choose another address with --listen",
                errno: e)
        case EACCES:
            return BatonError(
                .bindFailed,
                "\(address): permission denied; ports below 1024 need root (run baton as root with --user to drop privileges for the app)",
                errno: e)
        case EADDRNOTAVAIL:
            return BatonError(.bindFailed, "\(address): this machine has no such address", errno: e)
        default:
            return BatonError(.bindFailed, "cannot listen on \(address): \(Sys.describe(errno: e))", errno: e)
        }
    }

    /// The generation number of `pid` if it is an app generation whose
    /// supervisor is gone (BATON_GENERATION in its environment, and no
    /// live baton parent).
    static func orphanedGeneration(_ pid: Int32) -> String? {
        guard let generation = Sys.environmentValue("BATON_GENERATION", of: pid) else { return nil }
        // Its parent: a supervisor, or init/a subreaper after the supervisor died.
        guard let ppid = Sys.parentPid(of: pid) else { return generation }
        let parent = Sys.commandLine(of: ppid) ?? ""
        return parent.includes("baton") || parent.includes("start_server") ? nil : generation
    }

    /// The process holding a listening TCP socket on `port`, from /proc.
    public static func portOwner(_ port: UInt16) -> (pid: Int32, command: String)? {
        var inodes: Set<String> = []
        let hexPort = String(port, radix: 16, uppercase: true)
        let paddedPort = String(repeating: "0", count: 4 - hexPort.count) + hexPort
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let bytes = Sys.readFile(table, limit: 8 << 20) else { continue }
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst() {
                let cols = line.split(separator: " ")
                guard cols.count > 9, cols[3] == "0A", cols[1].hasSuffix(":" + paddedPort) else { continue }
                inodes.insert(String(cols[9]))
            }
        }
        guard !inodes.isEmpty else { return nil }
        var best: Int32?
        var buf = [CChar](repeating: 0, count: 64)
        for name in Sys.directoryNames("/proc") ?? [] {
            guard let pid = Int32(name), pid != getpid() else { continue }
            for fdName in Sys.directoryNames("/proc/\(pid)/fd") ?? [] {
                let n = readlink("/proc/\(pid)/fd/\(fdName)", &buf, buf.count - 1)
                guard n > 0 else { continue }
                let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("socket:["), inodes.contains(String(target.dropFirst(8).dropLast())) {
                    // The lowest pid holding it is usually the master.
                    if best == nil || pid < best! { best = pid }
                    break
                }
            }
        }
        guard let pid = best else { return nil }
        return (pid, Sys.commandLine(of: pid) ?? "?")
    }

    // MARK: - Unix

    private static func bindUnix(path: String, backlog: Int32, mode: UInt32) throws(BatonError) -> Listener {
        let original = ListenAddress.unix(path: path)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw BatonError(.bindFailed, "\(path) exists and is not a socket; remove it or choose another path")
            }
            if unixSocketIsLive(path) {
                throw BatonError(
                    .bindFailed, "\(path) is already in use by a running server; stop it or choose another path")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw BatonError(.bindFailed, "cannot listen on \(path): socket: \(Sys.describe(errno: errno))", errno: errno)
        }
        let rc = withUnixAddress(path) { Glibc.bind(fd, $0, $1) }
        if rc != 0 {
            let e = errno
            close(fd)
            let hint = e == EACCES ? "; check the permissions of its directory" : e == ENOENT ? "; its directory does not exist" : ""
            throw BatonError(.bindFailed, "cannot listen on \(path): \(Sys.describe(errno: e))\(hint)", errno: e)
        }
        chmod(path, mode_t(mode))
        guard listen(fd, backlog) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw BatonError(.bindFailed, "cannot listen on \(path): \(Sys.describe(errno: e))", errno: e)
        }
        let parked: Int32
        do { parked = try park(fd, original) } catch {
            unlink(path)
            throw error
        }
        let id = Sys.identity(path)
        return Listener(
            address: original, fd: parked, name: "",
            createdFile: id.map { (path, $0.dev, $0.ino) })
    }

    /// True when something accepts connections on the unix socket at `path`.
    public static func unixSocketIsLive(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let rc = withUnixAddress(path) { connect(fd, $0, $1) }
        return rc == 0 || errno == EAGAIN
    }

    /// Calls `body` with a `sockaddr_un` for `path` (cut to the kernel's limit).
    public static func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        if let address = try? UnixAddress(path: String(decoding: path.utf8.prefix(UnixAddress.maxBytes), as: UTF8.self)) {
            return address.withSockaddr(body)
        }
        // An empty path: an address the kernel refuses (EINVAL).
        var family = sa_family_t(AF_UNIX)
        return withUnsafePointer(to: &family) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sa_family_t>.size)) }
        }
    }

    private static func park(_ fd: Int32, _ address: ListenAddress) throws(BatonError) -> Int32 {
        let parked = baton_fcntl_dupfd_cloexec(fd, parkAt)
        let e = errno
        close(fd)
        guard parked >= 0 else {
            throw BatonError(.failure, "cannot keep the socket for \(address): \(Sys.describe(errno: e))", errno: e)
        }
        return parked
    }

    /// The local address of a socket.
    public static func localAddress(_ fd: Int32) -> ListenAddress? {
        switch SocketName.of(fd) {
        case .ipv4(let host, let port), .ipv6(let host, let port): return .tcp(host: host, port: port)
        case .unix(let path): return .unix(path: path)
        case nil: return nil
        }
    }
}
