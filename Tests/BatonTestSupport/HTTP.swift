import BatonProtocol
import Foundation
import Glibc

/// Why a request failed.
public struct HTTPFailure: Error, Hashable, CustomStringConvertible {
    public let text: String
    public init(_ text: String) { self.text = text }
    public var description: String { text }
}

/// An HTTP response: status code, head and body.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let head: String
    public let body: String
}

/// Where a request goes.
public enum Endpoint: Sendable, CustomStringConvertible {
    case tcp(UInt16, host: String = "127.0.0.1")
    case unix(String)

    public var description: String {
        switch self {
        case .tcp(let port, let host): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// Connects a stream socket to `endpoint`: the descriptor, or the error.
public func connectTo(_ endpoint: Endpoint) -> Result<Int32, HTTPFailure> {
    let fd: Int32
    let rc: Int32
    switch endpoint {
    case .unix(let path):
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard let address = try? UnixAddress(path: path) else { return .failure(HTTPFailure("bad unix path \(path)")) }
        rc = address.withSockaddr { connect(fd, $0, $1) }
    case .tcp(let port, let host):
        switch SocketName.resolve(host: host, port: port) {
        case .success(let resolved):
            fd = socket(resolved.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            rc = resolved.withSockaddr { connect(fd, $0, $1) }
        case .failure(let e):
            return .failure(HTTPFailure("cannot resolve \(host): \(e.message)"))
        }
    }
    if rc != 0 {
        let e = errno
        close(fd)
        return .failure(HTTPFailure("connect: \(String(cString: strerror(e)))"))
    }
    return .success(fd)
}

/// One HTTP/1.1 GET on a fresh connection with `Connection: close`; any
/// complete answer is a success (whatever its status).
public func httpGet(_ endpoint: Endpoint, _ path: String = "/", timeout: Int = 10) -> Result<HTTPResponse, HTTPFailure> {
    let fd: Int32
    switch connectTo(endpoint) {
    case .failure(let e): return .failure(e)
    case .success(let s): fd = s
    }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let request = "GET \(path) HTTP/1.1\r\nHost: baton.test\r\nConnection: close\r\n\r\n"
    // MSG_NOSIGNAL: a peer that closed before reading is a failed request
    // (EPIPE), not a SIGPIPE that kills the test process.
    guard request.withCString({ send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }) > 0 else {
        return .failure(HTTPFailure("write: \(String(cString: strerror(errno)))"))
    }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 8192)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return .failure(HTTPFailure("read: \(String(cString: strerror(errno)))")) }
        if n == 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard text.hasPrefix("HTTP/1."), let end = text.range(of: "\r\n\r\n") else {
        return .failure(HTTPFailure(text.isEmpty ? "empty response" : "garbled: \(text.prefix(40))"))
    }
    let status = Int(text.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
    return .success(HTTPResponse(status: status, head: String(text[..<end.lowerBound]), body: String(text[end.upperBound...])))
}

/// The integration tests' form: a port or a unix path; a status other than 200 is a failure.
public func httpGet(
    port: UInt16? = nil, unixPath: String? = nil, host: String = "127.0.0.1", path: String = "/", timeout: Int = 10
) -> Result<HTTPResponse, HTTPFailure> {
    let r = httpGet(unixPath.map { .unix($0) } ?? .tcp(port ?? 0, host: host), path, timeout: timeout)
    if case .success(let response) = r, response.status != 200 { return .failure(HTTPFailure("status: \(response.status)")) }
    return r
}

/// The body of a 200 answer, or nil.
public func body(_ r: Result<HTTPResponse, HTTPFailure>) -> String? {
    guard case .success(let response) = r, response.status == 200 else { return nil }
    return response.body
}

/// The pid in a `... pid=N` answer of the test app.
public func pidIn(_ body: String?) -> pid_t? {
    guard let body, let range = body.range(of: #"pid=(\d+)"#, options: .regularExpression) else { return nil }
    return pid_t(body[range].dropFirst(4))
}

/// The process group in a `/env` answer of the test app.
public func pgidIn(_ body: String?) -> pid_t? {
    guard let body, let range = body.range(of: #"pgid=(\d+)"#, options: .regularExpression) else { return nil }
    return pid_t(body[range].dropFirst(5))
}

/// The `generation:pid` lines of a Server::Starter status file.
public func statusGenerations(_ path: String) -> [(generation: Int, pid: Int)] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let parts = line.split(separator: ":")
        guard parts.count == 2, let g = Int(parts[0]), let p = Int(parts[1]) else { return nil }
        return (g, p)
    }
}
