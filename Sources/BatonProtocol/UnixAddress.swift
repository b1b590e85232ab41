#if canImport(Glibc)
    import Glibc
#endif

/// A unix socket address: a filesystem path, or a name in the abstract
/// namespace (written `@name`, as `NOTIFY_SOCKET` does).
public struct UnixAddress: Sendable, Hashable, CustomStringConvertible {
    /// The name's bytes, without a leading NUL.
    public let bytes: [UInt8]
    /// True for the abstract namespace.
    public let isAbstract: Bool

    /// The longest name the kernel accepts: `sun_path` less one byte (a
    /// path's trailing NUL, or an abstract name's leading one).
    public static let maxBytes = 107

    /// Why a name is not a unix socket address.
    public enum Problem: Error, Sendable, Hashable {
        /// Empty, or nothing after `@`.
        case empty
        /// Holds a NUL byte.
        case nulByte
        /// Longer than ``UnixAddress/maxBytes``.
        case tooLong(Int)
    }

    /// A filesystem path (relative paths are relative to the caller's directory).
    public init(path: String) throws(Problem) {
        try self.init(bytes: Array(path.utf8), abstract: false)
    }

    /// `@name` for the abstract namespace, anything else for a path.
    public init(notation: String) throws(Problem) {
        if notation.hasPrefix("@") {
            try self.init(bytes: Array(notation.utf8.dropFirst()), abstract: true)
        } else {
            try self.init(bytes: Array(notation.utf8), abstract: false)
        }
    }

    private init(bytes: [UInt8], abstract: Bool) throws(Problem) {
        guard !bytes.isEmpty else { throw .empty }
        guard !bytes.contains(0) else { throw .nulByte }
        guard bytes.count <= Self.maxBytes else { throw .tooLong(bytes.count) }
        self.bytes = bytes
        self.isAbstract = abstract
    }

    /// `@name` or the path.
    public var description: String {
        (isAbstract ? "@" : "") + String(decoding: bytes, as: UTF8.self)
    }

    /// Calls `body` with the `sockaddr` and its exact length.
    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let start = isAbstract ? 1 : 0
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[start + index] = byte }
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        // A path counts its trailing NUL; an abstract name is exactly its bytes after the NUL.
        let length = socklen_t(offset + bytes.count + 1)
        return try withUnsafePointer(to: &address) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }
}
