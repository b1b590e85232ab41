import Glibc
import Testing

/// Real sockets for the tests: created here, parked at high descriptor
/// numbers (as a supervisor would pass them), closed by the test.
enum TestSockets {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func check(_ result: Int32, _ what: String) throws -> Int32 {
        guard result >= 0 else { throw Failure(description: "\(what): \(String(cString: strerror(errno)))") }
        return result
    }

    /// Moves `fd` to a free number of at least 500, without FD_CLOEXEC.
    static func park(_ fd: Int32) throws -> Int32 {
        let parked = try self.check(fcntl(fd, F_DUPFD, 500), "F_DUPFD")
        close(fd)
        return parked
    }

    /// A listening TCP socket on 127.0.0.1 (or ::1) with a kernel-chosen port.
    static func tcpListener(ipv6: Bool = false, backlog: Int32 = 77, listening: Bool = true) throws -> (fd: Int32, port: Int) {
        let fd = try self.check(socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0), "socket")
        var result: Int32
        if ipv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_addr = in6addr_loopback
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "bind: \(String(cString: strerror(errno)))")
        }
        if listening {
            _ = try self.check(listen(fd, backlog), "listen")
        }
        let port = try self.localPort(fd)  // sin_port and sin6_port share their offset
        return (try self.park(fd), port)
    }

    static func localPort(_ fd: Int32) throws -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try self.check(
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            },
            "getsockname"
        )
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    /// A listening unix stream socket at `path`.
    static func unixListener(path: String) throws -> Int32 {
        let fd = try self.check(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0), "socket")
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "bind \(path): \(String(cString: strerror(errno)))")
        }
        _ = try self.check(listen(fd, 16), "listen")
        return try self.park(fd)
    }

    /// A fresh private directory under /tmp.
    static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/baton-listen-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
        }
        guard let path else { throw Failure(description: "mkdtemp: \(String(cString: strerror(errno)))") }
        return path
    }

    static func removeDirectory(_ path: String) {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(directory)
        }
        rmdir(path)
    }

    /// The accept-queue limit of a TCP listener, from TCP_INFO.
    static func backlog(_ fd: Int32) -> UInt32 {
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        _ = getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length)
        return info.tcpi_sacked
    }

    static func isCloseOnExec(_ fd: Int32) -> Bool {
        (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0
    }

    /// A datagram socket bound to `name` (a path, or `@abstract`) with
    /// SO_PASSCRED, to receive notifications.
    static func notifyReceiver(name: String) throws -> Int32 {
        let fd = try self.check(socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let abstract = name.hasPrefix("@")
        let bytes = Array((abstract ? String(name.dropFirst()) : name).utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index + (abstract ? 1 : 0)] = byte }
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        let length = socklen_t(offset + bytes.count + 1)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "bind \(name): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Waits up to `timeoutMilliseconds` for one datagram; returns its text
    /// and the sender's pid from SCM_CREDENTIALS (0 when absent).
    static func receive(_ fd: Int32, timeoutMilliseconds: Int32) throws -> (text: String, pid: Int32)? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        // cmsghdr (16 bytes) + ucred (12 bytes), aligned.
        var control = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    let received = recvmsg(fd, &message, 0)
                    return (received, message.msg_controllen)
                }
            }
        }
        guard count.0 >= 0 else { throw Failure(description: "recvmsg: \(String(cString: strerror(errno)))") }
        let text = String(decoding: buffer.prefix(count.0), as: UTF8.self)
        var pid: Int32 = 0
        // struct cmsghdr { size_t len; int level; int type; } then struct ucred { pid; uid; gid; }.
        if count.1 >= 28 {
            let level = control.withUnsafeBytes { $0.load(fromByteOffset: 8, as: Int32.self) }
            let type = control.withUnsafeBytes { $0.load(fromByteOffset: 12, as: Int32.self) }
            if level == SOL_SOCKET && type == 2 {  // SCM_CREDENTIALS
                pid = control.withUnsafeBytes { $0.load(fromByteOffset: 16, as: Int32.self) }
            }
        }
        return (text, pid)
    }
}
