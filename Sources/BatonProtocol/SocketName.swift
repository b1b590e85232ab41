#if canImport(Glibc)
    import Glibc
#endif

/// A socket's own address as the kernel reports it (`getsockname`): the one
/// decoder of `sockaddr_in`, `sockaddr_in6` and `sockaddr_un` that the
/// supervisor and the app library share.
public enum SocketName: Sendable, Hashable {
    /// An IPv4 address and port.
    case ipv4(host: String, port: UInt16)
    /// An IPv6 address (without brackets) and port.
    case ipv6(host: String, port: UInt16)
    /// A unix socket: a path, `@name` in the abstract namespace, or empty
    /// when unnamed.
    case unix(path: String)

    /// The bound address of `fd`; nil when `getsockname` fails (errno tells
    /// why) or the family is none of the three.
    public static func of(_ fd: Int32) -> SocketName? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        return self.decode(&storage, length: length)
    }

    /// Decodes a `sockaddr_storage` of `length` bytes.
    public static func decode(_ storage: inout sockaddr_storage, length: socklen_t) -> SocketName? {
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
            }
            var ip = sin.sin_addr
            return .ipv4(host: ntop(AF_INET, &ip), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
            }
            var ip = sin6.sin6_addr
            return .ipv6(host: ntop(AF_INET6, &ip), port: UInt16(bigEndian: sin6.sin6_port))
        case AF_UNIX:
            let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
            let bytes = withUnsafeBytes(of: &storage) { raw in
                Array(raw[offset..<max(offset, min(Int(length), raw.count))])
            }
            if bytes.first == 0, bytes.count > 1 {
                return .unix(path: "@" + String(decoding: bytes.dropFirst().prefix { $0 != 0 }, as: UTF8.self))
            }
            return .unix(path: String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self))
        default:
            return nil
        }
    }

    /// `127.0.0.1:8080`, `[::1]:8080`, or the path.
    public var text: String {
        switch self {
        case .ipv4(let host, let port): return "\(host):\(port)"
        case .ipv6(let host, let port): return "[\(host)]:\(port)"
        case .unix(let path): return path
        }
    }

    /// The port of an IP address.
    public var port: UInt16? {
        switch self {
        case .ipv4(_, let port), .ipv6(_, let port): return port
        case .unix: return nil
        }
    }

    /// Resolves a host and port for `bind()` or `connect()` (`getaddrinfo`
    /// with `AI_PASSIVE | AI_NUMERICSERV`): the first address, or the
    /// resolver's message when nothing resolves.
    public static func resolve(
        host: String, port: UInt16, type: Int32 = Int32(SOCK_STREAM.rawValue)
    ) -> Result<Resolved, ResolveError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = type
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list, let address = first.pointee.ai_addr else {
            return .failure(ResolveError(message: status == 0 ? "no address" : String(cString: gai_strerror(status))))
        }
        defer { freeaddrinfo(list) }
        var resolved = Resolved(family: first.pointee.ai_family, storage: sockaddr_storage(), length: first.pointee.ai_addrlen)
        withUnsafeMutableBytes(of: &resolved.storage) { target in
            target.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(resolved.length)))
        }
        return .success(resolved)
    }

    /// An address `getaddrinfo` gave, copied out of its list.
    public struct Resolved: @unchecked Sendable {
        /// `AF_INET` or `AF_INET6`.
        public var family: Int32
        /// The address.
        public var storage: sockaddr_storage
        /// Its length.
        public var length: socklen_t

        /// Calls `body` with the address as a `sockaddr` (for `bind`).
        public func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
            withUnsafePointer(to: self.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, self.length) }
            }
        }
    }

    /// Why an address did not resolve.
    public struct ResolveError: Error, Sendable {
        /// The resolver's message.
        public var message: String
    }
}

private func ntop<Address>(_ family: Int32, _ address: inout Address) -> String {
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
    let count = buffer.count
    let result = buffer.withUnsafeMutableBufferPointer { output in
        withUnsafePointer(to: &address) { inet_ntop(family, $0, output.baseAddress, socklen_t(count)) }
    }
    guard result != nil else { return "?" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
