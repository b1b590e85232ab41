import BatonProtocol
import Glibc

/// Thin wrappers around the socket system calls this module needs.
enum Socket {
    /// What `inspect` learns about a descriptor.
    struct Inspection {
        var family: Listener.Family
        var localAddress: String
        var port: Int?
        var backlog: Int32?
    }

    /// Checks that `fd` is an open, listening stream socket of a supported
    /// family and reads its address.
    static func inspect(_ fd: Int32, label: String) throws(ListenError) -> Inspection {
        guard fcntl(fd, F_GETFD) >= 0 else {
            let error = errno
            if error == EBADF {
                throw ListenError(
                    .descriptorNotOpen,
                    "\(label) is not open in this process: the supervisor did not pass it, or it was closed"
                )
            }
            throw ListenError(.systemCallFailed, "fcntl(F_GETFD) on \(label) failed", systemError: error)
        }
        let type: Int32
        switch self.intOption(fd, SOL_SOCKET, SO_TYPE) {
        case .success(let value):
            type = value
        case .failure(let error):
            if error.value == ENOTSOCK {
                throw ListenError(.notASocket, "\(label) is open but is not a socket")
            }
            throw ListenError(.systemCallFailed, "getsockopt(SO_TYPE) on \(label) failed", systemError: error.value)
        }
        guard type == Int32(SOCK_STREAM.rawValue) else {
            throw ListenError(
                .notAStreamSocket,
                "\(label) is a \(type == Int32(SOCK_DGRAM.rawValue) ? "datagram" : "non-stream") socket, not a stream listener"
            )
        }
        let domain = try self.requireIntOption(fd, SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN", label)
        let family: Listener.Family
        switch domain {
        case AF_INET: family = .ipv4
        case AF_INET6: family = .ipv6
        case AF_UNIX: family = .unix
        default:
            throw ListenError(
                .unsupportedFamily,
                "\(label) is a socket of address family \(domain), not IPv4, IPv6 or unix"
            )
        }
        let accepting = try self.requireIntOption(fd, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN", label)
        guard accepting != 0 else {
            throw ListenError(.notListening, "\(label) is a stream socket but is not listening (listen() was not called)")
        }
        var inspection = try self.localAddress(fd, family: family, label: label)
        if family != .unix {
            inspection.backlog = self.tcpBacklog(fd)
        }
        return inspection
    }

    /// Sets `FD_CLOEXEC` on `fd`.
    static func setCloseOnExec(_ fd: Int32, label: String) throws(ListenError) {
        let flags = fcntl(fd, F_GETFD)
        guard flags >= 0, fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0 else {
            throw ListenError(.systemCallFailed, "setting FD_CLOEXEC on \(label) failed", systemError: errno)
        }
    }

    /// Whether `FD_CLOEXEC` is set on `fd`; nil when `fd` is not open.
    static func isCloseOnExec(_ fd: Int32) -> Bool? {
        let flags = fcntl(fd, F_GETFD)
        return flags < 0 ? nil : (flags & FD_CLOEXEC) != 0
    }

    // MARK: Binding

    /// Creates a close-on-exec listening socket bound to `address`.
    static func bind(_ address: ListenAddress, backlog: Int32?) throws(ListenError) -> Int32 {
        switch address {
        case .unix(let path):
            return try self.bindUnix(path: path, backlog: backlog)
        case .port(let port):
            return try self.bindInet(host: "0.0.0.0", port: port, backlog: backlog, shown: address)
        case .host(let host, let port):
            return try self.bindInet(host: host, port: port, backlog: backlog, shown: address)
        }
    }

    private static func bindInet(host: String, port: Int, backlog: Int32?, shown: ListenAddress) throws(ListenError)
        -> Int32
    {
        let resolved: SocketName.Resolved
        switch SocketName.resolve(host: host, port: UInt16(clamping: port)) {
        case .success(let r): resolved = r
        case .failure(let e): throw ListenError(.invalidAddress, "cannot resolve \(shown): \(e.message)")
        }
        let fd = socket(resolved.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw ListenError(.bindFailed, "cannot create a socket for \(shown)", systemError: errno)
        }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard resolved.withSockaddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
            let error = errno
            close(fd)
            throw ListenError(.bindFailed, "cannot bind \(shown)", systemError: error)
        }
        return try self.listen(fd, backlog: backlog, shown: shown)
    }

    private static func bindUnix(path: String, backlog: Int32?) throws(ListenError) -> Int32 {
        let shown = ListenAddress.unix(path: path)
        let address: UnixAddress
        do { address = try UnixAddress(path: path) } catch {
            throw ListenError(
                .invalidAddress, "the path \(path) is empty, holds a NUL byte or is longer than \(UnixAddress.maxBytes) bytes")
        }
        // Like Hummingbird's cleanupExistingSocketFile: a stale socket file
        // from an earlier run would make bind() fail; other files are kept.
        var status = stat()
        if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK {
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw ListenError(.bindFailed, "cannot create a socket for \(path)", systemError: errno)
        }
        let result = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        guard result == 0 else {
            let error = errno
            close(fd)
            throw ListenError(.bindFailed, "cannot bind \(path)", systemError: error)
        }
        return try self.listen(fd, backlog: backlog, shown: shown)
    }

    private static func listen(_ fd: Int32, backlog: Int32?, shown: ListenAddress) throws(ListenError) -> Int32 {
        // Without a backlog, ask for the kernel's maximum (net.core.somaxconn).
        guard Glibc.listen(fd, backlog ?? Int32.max) == 0 else {
            let error = errno
            close(fd)
            throw ListenError(.bindFailed, "cannot listen on \(shown)", systemError: error)
        }
        return fd
    }

    // MARK: Reading addresses and options

    /// Reads the bound address of `fd`.
    static func localAddress(_ fd: Int32, family: Listener.Family, label: String) throws(ListenError)
        -> Inspection
    {
        guard let name = SocketName.of(fd) else {
            throw ListenError(.systemCallFailed, "getsockname() on \(label) failed", systemError: errno)
        }
        let text = name.text
        return Inspection(
            family: family, localAddress: text.isEmpty ? "(unnamed unix socket)" : text, port: name.port.map { Int($0) })
    }

    /// The accept-queue limit of a TCP listener (Linux reports it in
    /// `tcpi_sacked` for a socket in the LISTEN state).
    private static func tcpBacklog(_ fd: Int32) -> Int32? {
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0,
            Int(length) >= MemoryLayout<tcp_info>.offset(of: \tcp_info.tcpi_sacked)! + 4,
            info.tcpi_state == 10,  // TCP_LISTEN
            info.tcpi_sacked > 0, info.tcpi_sacked <= UInt32(Int32.max)
        else { return nil }
        return Int32(info.tcpi_sacked)
    }

    private static func intOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Result<Int32, SystemErrno> {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, level, name, &value, &length) == 0 else { return .failure(SystemErrno(value: errno)) }
        return .success(value)
    }

    private static func requireIntOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ optionName: String, _ label: String)
        throws(ListenError) -> Int32
    {
        switch self.intOption(fd, level, name) {
        case .success(let value):
            return value
        case .failure(let error):
            throw ListenError(.systemCallFailed, "getsockopt(\(optionName)) on \(label) failed", systemError: error.value)
        }
    }
}

/// An `errno` value as an `Error`, for `Result`.
struct SystemErrno: Error {
    let value: Int32
}
