import Glibc

/// Sockets for the demo tests: listeners to hand over, a notify receiver,
/// and a minimal HTTP/1.1 client. Every wait is bounded.
enum Sockets {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func check(_ result: Int32, _ what: String) throws -> Int32 {
        guard result >= 0 else { throw Failure(description: "\(what): \(String(cString: strerror(errno)))") }
        return result
    }

    /// Moves `fd` to a free number of at least 500, close-on-exec (posix_spawn's dup2 clears it in the child).
    static func park(_ fd: Int32) throws -> Int32 {
        let parked = try self.check(fcntl(fd, F_DUPFD_CLOEXEC, 500), "F_DUPFD_CLOEXEC")
        close(fd)
        return parked
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    /// A listening socket on 127.0.0.1 with a kernel-chosen port.
    static func tcpListener() throws -> (fd: Int32, port: Int) {
        let fd = try self.check(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0), "socket")
        var address = self.loopback(port: 0)
        _ = try self.check(
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            },
            "bind"
        )
        _ = try self.check(listen(fd, 128), "listen")
        let port = try self.localPort(fd)
        return (try self.park(fd), port)
    }

    static func localPort(_ fd: Int32) throws -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = try self.check(
            withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            },
            "getsockname"
        )
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A port that was free a moment ago (for the demo's standalone bind).
    static func freePort() throws -> Int {
        let (fd, port) = try self.tcpListener()
        close(fd)
        return port
    }

    static func unixAddress(_ path: String, abstract: Bool = false) -> (sockaddr_un, socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index + (abstract ? 1 : 0)] = byte }
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        return (address, socklen_t(offset + bytes.count + 1))
    }

    /// A listening unix stream socket at `path`.
    static func unixListener(path: String) throws -> Int32 {
        let fd = try self.check(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0), "socket")
        var (address, length) = self.unixAddress(path)
        _ = try self.check(
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } },
            "bind \(path)"
        )
        _ = try self.check(listen(fd, 128), "listen")
        return try self.park(fd)
    }

    static func isListening(_ fd: Int32) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 && value != 0
    }

    // MARK: Notify

    /// A datagram socket bound to `name` (`@abstract` or a path), with SO_PASSCRED.
    static func notifyReceiver(name: String) throws -> Int32 {
        let fd = try self.check(socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size))
        let abstract = name.hasPrefix("@")
        var (address, length) = self.unixAddress(abstract ? String(name.dropFirst()) : name, abstract: abstract)
        _ = try self.check(
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } },
            "bind \(name)"
        )
        return fd
    }

    /// Waits up to `timeoutMilliseconds` for one datagram: its text and the
    /// sender's pid from SCM_CREDENTIALS (0 when absent).
    static func receive(_ fd: Int32, timeoutMilliseconds: Int32) throws -> (text: String, pid: Int32)? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var control = [UInt8](repeating: 0, count: 64)
        let (count, controlLength) = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    return (recvmsg(fd, &message, 0), message.msg_controllen)
                }
            }
        }
        guard count >= 0 else { throw Failure(description: "recvmsg: \(String(cString: strerror(errno)))") }
        var pid: Int32 = 0
        // struct cmsghdr { size_t len; int level; int type; } followed by struct ucred { pid; uid; gid; }.
        if controlLength >= 28 {
            let level = control.withUnsafeBytes { $0.load(fromByteOffset: 8, as: Int32.self) }
            let type = control.withUnsafeBytes { $0.load(fromByteOffset: 12, as: Int32.self) }
            if level == SOL_SOCKET && type == 2 {  // SCM_CREDENTIALS
                pid = control.withUnsafeBytes { $0.load(fromByteOffset: 16, as: Int32.self) }
            }
        }
        return (String(decoding: buffer.prefix(count), as: UTF8.self), pid)
    }

    // MARK: HTTP

    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    /// Connects to 127.0.0.1:`port`, with a receive timeout.
    static func connect(port: Int, timeoutSeconds: Int = 10) throws -> Int32 {
        let fd = try self.check(socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
        self.setTimeout(fd, seconds: timeoutSeconds)
        var address = self.loopback(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let error = errno
            close(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): \(String(cString: strerror(error)))")
        }
        return fd
    }

    /// Connects to the unix socket at `path`, with a receive timeout.
    static func connect(path: String, timeoutSeconds: Int = 10) throws -> Int32 {
        let fd = try self.check(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
        self.setTimeout(fd, seconds: timeoutSeconds)
        var (address, length) = self.unixAddress(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        guard result == 0 else {
            let error = errno
            close(fd)
            throw Failure(description: "connect to \(path): \(String(cString: strerror(error)))")
        }
        return fd
    }

    static func setTimeout(_ fd: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends a GET request on `fd`.
    static func sendGet(_ fd: Int32, path: String, keepAlive: Bool = false) throws {
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (keepAlive ? "" : "Connection: close\r\n") + "\r\n"
        var bytes = Array(request.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeMutableBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            offset += sent
        }
    }

    /// Reads one response (Content-Length framed) from `fd`.
    static func readResponse(_ fd: Int32) throws -> Response {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        var headerEnd: Int?
        var contentLength = 0
        var headers: [String: String] = [:]
        var status = 0
        for _ in 0..<10_000 {
            if let end = headerEnd, data.count >= end + contentLength { break }
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else {
                let reason = count == 0 ? "connection closed after \(data.count) bytes" : "recv: \(String(cString: strerror(errno)))"
                throw Failure(description: reason)
            }
            data += chunk.prefix(count)
            if headerEnd == nil, let range = self.find([13, 10, 13, 10], in: data) {
                headerEnd = range + 4
                let head = String(decoding: data.prefix(range), as: UTF8.self)
                let lines = head.split(separator: "\r\n")
                let statusParts = lines.first?.split(separator: " ") ?? []
                status = statusParts.count > 1 ? Int(statusParts[1]) ?? 0 : 0
                for line in lines.dropFirst() {
                    if let colon = line.firstIndex(of: ":") {
                        let name = line[..<colon].lowercased()
                        let value = line[line.index(after: colon)...].trimmingPrefix(" ")
                        headers[name] = String(value)
                    }
                }
                contentLength = Int(headers["content-length"] ?? "0") ?? 0
            }
        }
        guard let end = headerEnd else { throw Failure(description: "no complete response head") }
        let body = String(decoding: data[end..<min(data.count, end + contentLength)], as: UTF8.self)
        return Response(status: status, headers: headers, body: body)
    }

    /// Whether the peer closes `fd` within `milliseconds` (reads and drops any data).
    static func closesWithin(_ fd: Int32, milliseconds: Int32) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .milliseconds(Int(milliseconds))
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 10) == 1 else { continue }
            let count = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if count <= 0 { return true }
        }
        return false
    }

    /// GET `path` on a new connection to `port`, `Connection: close`.
    static func get(port: Int, _ path: String) throws -> Response {
        let fd = try self.connect(port: port)
        defer { close(fd) }
        try self.sendGet(fd, path: path)
        return try self.readResponse(fd)
    }

    /// GET `path` on a new connection to the unix socket at `socketPath`.
    static func get(socketPath: String, _ path: String) throws -> Response {
        let fd = try self.connect(path: socketPath)
        defer { close(fd) }
        try self.sendGet(fd, path: path)
        return try self.readResponse(fd)
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for index in 0...(haystack.count - needle.count) where haystack[index..<index + needle.count].elementsEqual(needle) {
            return index
        }
        return nil
    }
}
