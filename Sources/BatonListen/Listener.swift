import Glibc

/// A listening stream socket this process can accept on: inherited from a
/// supervisor and checked, or bound by the process itself.
///
/// The descriptor is close-on-exec. Hand it to one server (for instance
/// `ServerBootstrap.bind(listener:)` in BatonNIO), which then owns it and
/// closes it when it stops.
public struct Listener: Sendable, Hashable, CustomStringConvertible {
    /// The socket's address family.
    public enum Family: String, Sendable, Hashable {
        /// `AF_INET`.
        case ipv4
        /// `AF_INET6`.
        case ipv6
        /// `AF_UNIX`.
        case unix
    }

    /// Where the socket came from.
    public enum Origin: String, Sendable, Hashable {
        /// Passed by a supervisor (`LISTEN_FDS` or `SERVER_STARTER_PORT`).
        case inherited
        /// Bound by this process because nothing was inherited.
        case bound
    }

    /// The descriptor number.
    public let descriptor: Int32
    /// The socket's address family.
    public let family: Family
    /// Where the socket came from.
    public let origin: Origin
    /// Its name from `LISTEN_FDNAMES`, e.g. `baton-health`, if one was given.
    public let name: String?
    /// Its address as `SERVER_STARTER_PORT` states it, if that variable lists it.
    public let declaredAddress: ListenAddress?
    /// The address the socket is bound to, from `getsockname`:
    /// `127.0.0.1:8080`, `[::1]:8080`, a path, or `@name` for an abstract unix socket.
    public let localAddress: String
    /// The bound port, for IP sockets.
    public let port: Int?
    /// The socket's accept-queue limit when it was checked (TCP only: read
    /// from `TCP_INFO`), so that a server that calls `listen()` again can put
    /// it back.
    public let backlog: Int32?

    /// E.g. `127.0.0.1:8080 (inherited fd 3 "http")`.
    public var description: String {
        var text = "\(self.localAddress) (\(self.origin.rawValue) fd \(self.descriptor)"
        if let name { text += " \"\(name)\"" }
        return text + ")"
    }

    /// Calls `listen()` on the socket again with the accept-queue limit it had
    /// when it was checked (``backlog``), or the kernel's maximum
    /// (`net.core.somaxconn`) when that is unknown.
    ///
    /// Servers that adopt an existing socket may call `listen()` with a
    /// default limit of their own (SwiftNIO uses 128); the queue is shared
    /// with the supervisor and the other generations, so this puts the
    /// supervisor's choice back.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/systemCallFailed``.
    public func restoreBacklog() throws(ListenError) {
        // The kernel caps the value at net.core.somaxconn.
        guard Glibc.listen(self.descriptor, self.backlog ?? Int32.max) == 0 else {
            throw ListenError(.systemCallFailed, "listen() on fd \(self.descriptor) failed", systemError: errno)
        }
    }
}
