import BatonCore
import BatonSystem
import CBatonShims
import Glibc

/// A connection to a running supervisor's control socket.
struct ControlClient {
    let fd: Int32
    let path: String

    /// Connects, or explains why not: `.notRunning` when nothing listens.
    static func connect(_ path: String) -> Result<ControlClient, BatonError> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(BatonError(.failure, "socket: \(Sys.describe(errno: errno))", errno: errno)) }
        let rc = Listeners.withUnixAddress(path) { Glibc.connect(fd, $0, $1) }
        if rc != 0 {
            let e = errno
            close(fd)
            switch e {
            case ENOENT, ECONNREFUSED:
                return .failure(BatonError(.notRunning, "no supervisor is running (nothing answers on \(path))", errno: e))
            case EACCES, EPERM:
                return .failure(BatonError(.failure, "permission denied on control socket \(path): it belongs to another user", errno: e))
            default:
                return .failure(BatonError(.failure, "cannot connect to \(path): \(Sys.describe(errno: e))", errno: e))
            }
        }
        return .success(ControlClient(fd: fd, path: path))
    }

    /// Sends one request and reads answer lines until a `result`/`status`
    /// line, the connection's end or `deadline` (nil: none). Each line goes
    /// to `onLine` first. Returns the final line, or an error.
    func exchange(_ request: JSON, deadline: Instant?, onLine: (JSON) -> Void) -> Result<JSON, BatonError> {
        defer { close(fd) }
        // If the write fails, the supervisor may have said why before hanging up: read on.
        let written = Sys.writeAll(fd, (request.text + "\n").utf8)
        let writeError = errno
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            while let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                guard let json = JSON(parsing: line) else { continue }
                onLine(json)
                if let type = json["type"]?.string, type == "result" || type == "status" { return .success(json) }
            }
            var timeout: Int32 = -1
            if let deadline {
                let now = Sys.now()
                if deadline <= now {
                    return .failure(BatonError(.timeout, "no answer before the deadline"))
                }
                timeout = Int32(clamping: (deadline.nanoseconds - now.nanoseconds) / 1_000_000 + 1)
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, timeout)
            if r < 0 {
                if errno == EINTR { continue }
                return .failure(BatonError(.failure, "poll: \(Sys.describe(errno: errno))", errno: errno))
            }
            if r == 0 { continue }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(BatonError(.failure, "read: \(Sys.describe(errno: errno))", errno: errno))
            }
            if n == 0 {
                if !written {
                    return .failure(BatonError(.failure, "cannot write to \(path): \(Sys.describe(errno: writeError))", errno: writeError))
                }
                return .failure(BatonError(.failure, "the supervisor closed the control connection without an answer"))
            }
            buffer += chunk[0..<n]
        }
    }
}

/// A request in protocol v1.
func controlRequest(_ command: String, _ extra: [String: JSON] = [:]) -> JSON {
    var o = extra
    o["v"] = .number(Double(controlProtocolVersion))
    o["cmd"] = .string(command)
    return .object(o)
}
