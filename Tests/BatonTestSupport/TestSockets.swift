import BatonProtocol
import Glibc

/// Low-level sockets for the tests: listeners to hand to a process, a
/// notify receiver, and a minimal HTTP/1.1 client with keep-alive. Every
/// wait is bounded.
public enum TestSockets {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Sends `text` in one UDP datagram to host:port and returns the answer
    /// that comes within 1 s, if any.
    public static func udpExchange(host: String, port: UInt16, _ text: String) -> String? {
        guard case .success(let address) = SocketName.resolve(host: host, port: port, type: Int32(SOCK_DGRAM.rawValue)) else {
            return nil
        }
        let fd = socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        setTimeout(fd, seconds: 1)
        let sent = address.withSockaddr { sendto(fd, text, text.utf8.count, 0, $0, $1) }
        guard sent == text.utf8.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    @discardableResult
    public static func check(_ result: Int32, _ what: String) throws -> Int32 {
        guard result >= 0 else { throw Failure(description: "\(what): \(String(cString: strerror(errno)))") }
        return result
    }

    /// Moves `fd` to a free number of at least 500, without FD_CLOEXEC: as a
    /// socket a process inherited (a spawn passes it on at 3, 4, ... anyway,
    /// and closes everything above).
    public static func park(_ fd: Int32) throws -> Int32 {
        let parked = try check(fcntl(fd, F_DUPFD, 500), "F_DUPFD")
        close(fd)
        return parked
    }

    /// A listening TCP socket on 127.0.0.1 (or ::1) with a kernel-chosen port.
    public static func tcpListener(ipv6: Bool = false, backlog: Int32 = 128, listening: Bool = true) throws -> (fd: Int32, port: Int) {
        let fd = try check(socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0), "socket")
        var result: Int32
        if ipv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_addr = in6addr_loopback
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = loopback(port: 0)
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "bind: \(String(cString: strerror(errno)))")
        }
        if listening { try check(listen(fd, backlog), "listen") }
        let port = try localPort(fd)  // sin_port and sin6_port share their offset
        return (try park(fd), port)
    }

    public static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    public static func localPort(_ fd: Int32) throws -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try check(
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
    public static func unixListener(path: String) throws -> Int32 {
        let fd = try check(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0), "socket")
        try bindUnix(fd, path)
        try check(listen(fd, 16), "listen")
        return try park(fd)
    }

    private static func bindUnix(_ fd: Int32, _ name: String) throws {
        guard let address = try? UnixAddress(notation: name) else { throw Failure(description: "bad unix address \(name)") }
        guard address.withSockaddr({ bind(fd, $0, $1) }) == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "bind \(name): \(String(cString: strerror(e)))")
        }
    }

    public static func isListening(_ fd: Int32) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 && value != 0
    }

    /// The accept-queue limit of a TCP listener, from TCP_INFO.
    public static func backlog(_ fd: Int32) -> UInt32 {
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        _ = getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length)
        return info.tcpi_sacked
    }

    public static func isCloseOnExec(_ fd: Int32) -> Bool {
        (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0
    }

    /// A fresh private directory under /tmp.
    public static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/baton-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
        }
        guard let path else { throw Failure(description: "mkdtemp: \(String(cString: strerror(errno)))") }
        return path
    }

    public static func removeDirectory(_ path: String) {
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

    // MARK: Notify

    /// A datagram socket bound to `name` (a path, or `@abstract`) with
    /// SO_PASSCRED, to receive notifications.
    public static func notifyReceiver(name: String) throws -> Int32 {
        let fd = try check(socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size))
        try bindUnix(fd, name)
        return fd
    }

    /// Waits up to `timeoutMilliseconds` for one datagram; returns its text
    /// and the sender's pid from SCM_CREDENTIALS (0 when absent).
    public static func receive(_ fd: Int32, timeoutMilliseconds: Int32) throws -> (text: String, pid: Int32)? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65536)
        // cmsghdr (16 bytes) + ucred (12 bytes), aligned.
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
        // struct cmsghdr { size_t len; int level; int type; } then struct ucred { pid; uid; gid; }.
        if controlLength >= 28 {
            let level = control.withUnsafeBytes { $0.load(fromByteOffset: 8, as: Int32.self) }
            let type = control.withUnsafeBytes { $0.load(fromByteOffset: 12, as: Int32.self) }
            if level == SOL_SOCKET && type == 2 {  // SCM_CREDENTIALS
                pid = control.withUnsafeBytes { $0.load(fromByteOffset: 16, as: Int32.self) }
            }
        }
        return (String(decoding: buffer.prefix(count), as: UTF8.self), pid)
    }

    // MARK: HTTP with keep-alive

    public struct Response {
        public var status: Int
        public var headers: [String: String]
        public var body: String
    }

    /// Connects to 127.0.0.1:`port`, with a receive timeout.
    public static func connect(port: Int, timeoutSeconds: Int = 10) throws -> Int32 {
        try connect(.tcp(UInt16(port)), timeoutSeconds: timeoutSeconds)
    }

    /// Connects to the unix socket at `path`, with a receive timeout.
    public static func connect(path: String, timeoutSeconds: Int = 10) throws -> Int32 {
        try connect(.unix(path), timeoutSeconds: timeoutSeconds)
    }

    static func connect(_ endpoint: Endpoint, timeoutSeconds: Int) throws -> Int32 {
        switch connectTo(endpoint) {
        case .failure(let e): throw Failure(description: "connect to \(endpoint): \(e.text.dropFirst("connect: ".count))")
        case .success(let fd):
            setTimeout(fd, seconds: timeoutSeconds)
            return fd
        }
    }

    public static func setTimeout(_ fd: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends a GET request on `fd`.
    public static func sendGet(_ fd: Int32, path: String, keepAlive: Bool = false) throws {
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
    public static func readResponse(_ fd: Int32) throws -> Response {
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
            if headerEnd == nil, let range = find([13, 10, 13, 10], in: data) {
                headerEnd = range + 4
                let head = String(decoding: data.prefix(range), as: UTF8.self)
                let lines = head.split(separator: "\r\n")
                let statusParts = lines.first?.split(separator: " ") ?? []
                status = statusParts.count > 1 ? Int(statusParts[1]) ?? 0 : 0
                for line in lines.dropFirst() {
                    if let colon = line.firstIndex(of: ":") {
                        headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...].trimmingPrefix(" "))
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
    public static func closesWithin(_ fd: Int32, milliseconds: Int32) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .milliseconds(Int(milliseconds))
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 10) == 1 else { continue }
            if recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT)) <= 0 { return true }
        }
        return false
    }

    /// GET `path` on a new connection to `port`, `Connection: close`.
    public static func get(port: Int, _ path: String) throws -> Response {
        let fd = try connect(port: port)
        defer { close(fd) }
        try sendGet(fd, path: path)
        return try readResponse(fd)
    }

    /// GET `path` on a new connection to the unix socket at `socketPath`.
    public static func get(socketPath: String, _ path: String) throws -> Response {
        let fd = try connect(path: socketPath)
        defer { close(fd) }
        try sendGet(fd, path: path)
        return try readResponse(fd)
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for index in 0...(haystack.count - needle.count) where haystack[index..<index + needle.count].elementsEqual(needle) {
            return index
        }
        return nil
    }
}

/// A TCP port that is free on 127.0.0.1 and ::1 now and lies outside the
/// kernel's ephemeral range (net.ipv4.ip_local_port_range), so that no
/// client socket of a load can take it between this check and the bind of
/// the server the test starts. For servers that cannot be told port 0.
public func freePort() -> UInt16 {
    let range =
        (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
        .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) } ?? [32768, 60999]
    let low = range.first ?? 32768
    // Below the ephemeral range, above the well-known ports.
    let candidates = low > 12000 ? Array(10000..<(low - 1000)) : Array((range.last ?? 60999) + 1..<65535)
    for _ in 0..<200 {
        let port = UInt16(candidates.randomElement()!)
        if portIsFree(port) { return port }
    }
    preconditionFailure("no free port outside the ephemeral range")
}

private func portIsFree(_ port: UInt16) -> Bool {
    for v6 in [false, true] {
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let rc: Int32
        if v6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            a.sin6_addr = in6addr_loopback
            rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var a = TestSockets.loopback(port: Int(port))
            rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        if rc != 0 { return false }
    }
    return true
}
