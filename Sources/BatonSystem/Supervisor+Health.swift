import BatonCore
import CBatonShims
import Glibc

/// One health probe under way: a non-blocking HTTP/1.1 GET over a
/// generation's private listener, driven by epoll like everything else.
/// Its deadline is the machine's: at the deadline the machine asks for
/// what came so far.
final class HealthProbe {
    let generation: Int
    let fd: Int32
    let startedAt: Instant
    var sent = false
    var response: [UInt8] = []

    init(generation: Int, fd: Int32, startedAt: Instant) {
        self.generation = generation
        self.fd = fd
        self.startedAt = startedAt
    }
}

extension Supervisor {
    /// Starts a probe of `number` over `socket`; its outcome comes back as `.probeFinished`.
    func startProbe(of number: Int, socket id: SocketID) {
        guard configuration.policy.health != nil else { return }
        let now = Sys.now()
        func fail(_ detail: String) {
            dispatch(.probeFinished(generation: number, result: ProbeResult(status: nil, detail: detail, latency: .zero, passed: false)))
        }
        guard let listener = held[id], case .tcp(_, let port) = listener.address else { return fail("no health listener") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return fail("socket: \(Sys.describe(errno: errno))") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0, errno != EINPROGRESS {
            let e = errno
            close(fd)
            return fail("connect: \(Sys.describe(errno: e))")
        }
        probes[number] = HealthProbe(generation: number, fd: fd, startedAt: now)
        baton_epoll_watch(epfd, fd, EpollToken.probe(fd).rawValue, 1, 0)
    }

    /// Moves a probe on when its socket is ready.
    func handleProbe(_ fd: Int32) {
        guard let probe = probes.values.first(where: { $0.fd == fd }), let health = configuration.policy.health else { return }
        if !probe.sent {
            var error: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len)
            guard error == 0 else { return finishProbe(probe, status: nil, detail: "connect: \(Sys.describe(errno: error))") }
            let request = "GET \(health.path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: baton-health\r\nConnection: close\r\n\r\n"
            guard Sys.writeAllNonBlocking(fd, request.utf8) else {
                return finishProbe(probe, status: nil, detail: "write: \(Sys.describe(errno: errno))")
            }
            probe.sent = true
            baton_epoll_watch(epfd, fd, EpollToken.probe(fd).rawValue, 0, 1)
        }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                probe.response += chunk[0..<n]
                if probe.response.count >= 16384 { break }
                continue
            }
            if n < 0, errno == EAGAIN { return }
            if n < 0, errno == EINTR { continue }
            break
        }
        // The whole answer (the server closed), or enough of it.
        let (status, detail) = HTTPAnswer.parse(probe.response)
        finishProbe(probe, status: status, detail: detail)
    }

    /// The machine's deadline for the probe of `number` passed: it fails with what came.
    func abortProbe(of number: Int) {
        guard let probe = probes[number] else { return }
        let (status, _) = HTTPAnswer.parse(probe.response)
        let timeout = configuration.policy.health?.timeout.humanDescription ?? ""
        finishProbe(probe, status: status, detail: "no complete answer within \(timeout)")
    }

    private func finishProbe(_ probe: HealthProbe, status: Int?, detail: String) {
        guard probes.removeValue(forKey: probe.generation) != nil else { return }
        baton_epoll_del(epfd, probe.fd)
        close(probe.fd)
        let passed = status.map { configuration.policy.health?.expected.contains($0) ?? false } ?? false
        let result = ProbeResult(status: status, detail: detail, latency: Sys.now() - probe.startedAt, passed: passed)
        dispatch(.probeFinished(generation: probe.generation, result: result))
    }
}

/// Reading an HTTP/1.x answer: the status, and the reason with the body's first line.
enum HTTPAnswer {
    static func parse(_ bytes: [UInt8]) -> (Int?, String) {
        guard bytes.starts(with: Array("HTTP/1.".utf8)), let lineEnd = bytes.firstIndex(where: { $0 == 13 || $0 == 10 }) else {
            return (nil, bytes.isEmpty ? "the connection closed without an answer" : "not an HTTP answer")
        }
        let statusLine = String(decoding: bytes[..<lineEnd], as: UTF8.self).split(separator: " ", maxSplits: 2)
        let status = statusLine.count > 1 ? Int(statusLine[1]) : nil
        var detail = statusLine.count > 2 ? String(statusLine[2]) : ""
        if let end = (0..<max(0, bytes.count - 3)).first(where: {
            bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10
        }) {
            let headers = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
            var lines = bytes[(end + 4)...].split(separator: 10, omittingEmptySubsequences: true)
                .map { String(decoding: $0.filter { $0 != 13 }, as: UTF8.self) }.filter { !$0.isEmpty }
            // A chunked body starts with the chunk's size in hex.
            if headers.includes("transfer-encoding: chunked"), let size = lines.first, size.allSatisfy(\.isHexDigit) {
                lines.removeFirst()
            }
            if let first = lines.first { detail += (detail.isEmpty ? "" : ": ") + String(first.prefix(120)) }
        }
        return (status, detail)
    }
}
