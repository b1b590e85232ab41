#if canImport(Glibc)
    import Glibc
#endif

/// The one loop that writes a whole buffer to a descriptor, shared by the
/// supervisor, its control clients and the daemon's report pipe.
public enum Descriptor {
    /// Writes all of `bytes` to `fd`, again after `EINTR`; false on any other
    /// error (errno says which), `EAGAIN` of a non-blocking descriptor too.
    /// With `sendFlags`, `send(2)` with those flags instead of `write(2)`
    /// (e.g. `MSG_NOSIGNAL` for a socket whose peer may be gone).
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: some Collection<UInt8>, sendFlags: Int32? = nil) -> Bool {
        let array = Array(bytes)
        var offset = 0
        while offset < array.count {
            let n = array.withUnsafeBytes { raw in
                let start = raw.baseAddress! + offset
                return sendFlags.map { send(fd, start, array.count - offset, $0) } ?? write(fd, start, array.count - offset)
            }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }
}
