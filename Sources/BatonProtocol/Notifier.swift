#if canImport(Glibc)
    import Glibc
#endif

/// Sends sd_notify datagrams to a supervisor's notify socket.
public enum Notifier {
    /// Why a message was not sent.
    public enum Failure: Error, Sendable, Hashable {
        /// The socket name is neither an absolute path nor `@name`.
        case badName(String)
        /// The name is not a valid unix address.
        case badAddress(UnixAddress.Problem)
        /// A system call failed with this errno.
        case system(String, Int32)
    }

    /// Sends `text` as one datagram to `name` (an absolute path or `@name`).
    public static func send(_ text: String, to name: String) -> Result<Void, Failure> {
        send(bytes: Array(text.utf8), to: name)
    }

    /// Sends `bytes` as one datagram to `name` (an absolute path or `@name`),
    /// with the descriptors `fds` attached (SCM_RIGHTS) if any.
    public static func send(bytes: [UInt8], to name: String, passing fds: [Int32] = []) -> Result<Void, Failure> {
        guard name.hasPrefix("@") || name.hasPrefix("/") else { return .failure(.badName(name)) }
        let address: UnixAddress
        do { address = try UnixAddress(notation: name) } catch { return .failure(.badAddress(error)) }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.system("socket", errno)) }
        defer { close(fd) }
        var bytes = bytes
        let sent: Int = address.withSockaddr { sa, length in
            bytes.withUnsafeMutableBytes { buffer in
                var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
                var message = msghdr()
                message.msg_name = UnsafeMutableRawPointer(mutating: UnsafeRawPointer(sa))
                message.msg_namelen = length
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    message.msg_iov = iovPointer
                    message.msg_iovlen = 1
                    guard !fds.isEmpty else { return sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
                    let space = Int(cmsgSpace(fds.count * MemoryLayout<Int32>.size))
                    var control = [UInt8](repeating: 0, count: space)
                    return control.withUnsafeMutableBytes { raw in
                        message.msg_control = raw.baseAddress
                        message.msg_controllen = space
                        let header = raw.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                        header.pointee.cmsg_level = SOL_SOCKET
                        header.pointee.cmsg_type = Int32(SCM_RIGHTS)
                        header.pointee.cmsg_len = Int(cmsgLength(fds.count * MemoryLayout<Int32>.size))
                        let data = raw.baseAddress! + MemoryLayout<cmsghdr>.size
                        for (i, d) in fds.enumerated() { data.storeBytes(of: d, toByteOffset: i * 4, as: Int32.self) }
                        return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                    }
                }
            }
        }
        guard sent == bytes.count else { return .failure(.system("sendmsg", errno)) }
        return .success(())
    }

    private static func cmsgAlign(_ n: Int) -> Int { (n + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1) }
    private static func cmsgSpace(_ n: Int) -> Int { cmsgAlign(MemoryLayout<cmsghdr>.size) + cmsgAlign(n) }
    private static func cmsgLength(_ n: Int) -> Int { cmsgAlign(MemoryLayout<cmsghdr>.size) + n }
}
