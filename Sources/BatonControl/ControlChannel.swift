import BatonCore
import BatonProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// One end of a control conversation: a connection to a supervisor's
/// control socket, or the pipe on which a daemon reports its start. Lines
/// in, lines out; every wait has a deadline.
public struct ControlChannel: Sendable {
    /// The descriptor (close-on-exec).
    public let fd: Int32
    /// What it is connected to, for messages.
    public let peer: String

    /// A channel over an open descriptor.
    public init(fd: Int32, peer: String) {
        self.fd = fd
        self.peer = peer
    }

    /// Connects to the control socket at `path`; `.notRunning` when nothing
    /// listens there.
    public static func connect(_ path: String) -> Result<ControlChannel, BatonError> {
        let address: UnixAddress
        do { address = try UnixAddress(path: path) } catch {
            return .failure(BatonError(.usage, "control socket path \(path) is empty or longer than \(UnixAddress.maxBytes) bytes"))
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(BatonError(.failure, "socket: \(describe(errno))", errno: errno)) }
        let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            switch e {
            case ENOENT, ECONNREFUSED:
                return .failure(BatonError(.notRunning, "no supervisor is running (nothing answers on \(path))", errno: e))
            case EACCES, EPERM:
                return .failure(BatonError(.failure, "permission denied on control socket \(path): it belongs to another user", errno: e))
            default:
                return .failure(BatonError(.failure, "cannot connect to \(path): \(describe(e))", errno: e))
            }
        }
        return .success(ControlChannel(fd: fd, peer: path))
    }

    /// Closes the descriptor.
    public func close() { Glibc.close(fd) }

    /// Writes one line (blocking); false when the other end is gone.
    @discardableResult
    public func send(line: String) -> Bool {
        var bytes = Array(line.utf8)
        if bytes.last != 10 { bytes.append(10) }
        return Descriptor.writeAll(fd, bytes)
    }

    /// Sends `request`, then reads the answer: every `progress` line goes to
    /// `onProgress`, the final line (result or status) is returned. A
    /// `timeout` that passes is `.timeout`; the other end closing without a
    /// final line is `.failure`.
    public func exchange(
        _ request: ControlRequest, timeout: Duration?, onProgress: (ControlProgress) -> Void = { _ in }
    ) -> Result<ControlMessage, BatonError> {
        let written = send(line: request.json.text)
        let writeError = errno
        // If the write failed, the supervisor may have said why before it hung up: read on.
        let answer = receive(timeout: timeout, onProgress: onProgress)
        if case .failure(let e) = answer, !written, e.code != .timeout {
            return .failure(BatonError(.failure, "cannot write to \(peer): \(describe(writeError))", errno: writeError))
        }
        return answer
    }

    /// Reads lines until a final message, the end of the stream or `timeout`.
    public func receive(timeout: Duration?, onProgress: (ControlProgress) -> Void = { _ in }) -> Result<ControlMessage, BatonError> {
        let deadline = timeout.map { MonotonicClock.now() + $0 }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            while let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                switch ControlMessage(line: line) {
                case .progress(let p)?: onProgress(p)
                case let final?: return .success(final)
                case nil: continue
                }
            }
            var wait: Int32 = -1
            if let deadline {
                let now = MonotonicClock.now()
                guard deadline > now else { return .failure(BatonError(.timeout, "no answer from \(peer) before the deadline")) }
                wait = Int32(clamping: (deadline - now).milliseconds + 1)
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, wait)
            if r < 0 {
                if errno == EINTR { continue }
                return .failure(BatonError(.failure, "poll: \(describe(errno))", errno: errno))
            }
            if r == 0 { continue }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return .failure(BatonError(.failure, "read from \(peer): \(describe(errno))", errno: errno))
            }
            if n == 0 { return .failure(BatonError(.failure, "the supervisor closed the connection without an answer")) }
            buffer += chunk[0..<n]
        }
    }

    /// One request to the supervisor at `path`: connect, exchange, close.
    public static func request(
        _ request: ControlRequest, at path: String, timeout: Duration?, onProgress: (ControlProgress) -> Void = { _ in }
    ) -> Result<ControlMessage, BatonError> {
        switch connect(path) {
        case .failure(let e): return .failure(e)
        case .success(let channel):
            defer { channel.close() }
            return channel.exchange(request, timeout: timeout, onProgress: onProgress)
        }
    }
}

/// The monotonic clock, for the clients' deadlines.
public enum MonotonicClock {
    /// Now, as the state machine's `Instant`.
    public static func now() -> Instant {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Instant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }
}

private func describe(_ code: Int32) -> String { String(cString: strerror(code)) }
