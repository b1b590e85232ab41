import BatonCore
import CBatonShims
import Glibc

/// One client of the control socket.
final class ControlConnection {
    let fd: Int32
    var input: [UInt8] = []
    /// The request it waits on (restart or stop).
    var request: RequestID?
    /// After a successful restart: retired generations not gone yet.
    var draining: Set<Int> = []
    /// The result to send once `draining` is empty.
    var pendingResult: JSON?
    /// Wait for the retired generations to exit before the result.
    var waitForDrain = true

    init(fd: Int32) { self.fd = fd }
}

/// The control protocol's version.
public let controlProtocolVersion = 1

extension Supervisor {
    // MARK: - The socket

    /// Refuses a control socket path that is too long or where another kind of file stands.
    static func checkControlPath(_ path: String) throws(BatonError) {
        guard path.utf8.count <= ListenAddress.maxUnixPathBytes else {
            throw BatonError(.usage, "--control \(path): the path is over the kernel's limit of \(ListenAddress.maxUnixPathBytes) bytes")
        }
        var st = stat()
        if lstat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFSOCK {
            throw BatonError(.usage, "--control \(path): a file that is not a socket stands there; remove it or choose another path")
        }
    }

    func openControlSocket(_ path: String) throws(BatonError) {
        try Self.checkControlPath(path)
        var st = stat()
        if lstat(path, &st) == 0 {
            if Listeners.unixSocketIsLive(path) {
                throw BatonError(.alreadyRunning, "a supervisor already answers on control socket \(path)")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw BatonError(.failure, "control socket: \(Sys.describe(errno: errno))", errno: errno) }
        // Created with mode 0600: nobody else may connect.
        let old = umask(0o177)
        let rc = Listeners.withUnixAddress(path) { bind(fd, $0, $1) }
        let e = errno
        umask(old)
        guard rc == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw BatonError(.failure, "cannot listen on control socket \(path): \(Sys.describe(errno: e))", errno: e)
        }
        controlFD = fd
        if let id = Sys.identity(path) { controlFile = (path, id.dev, id.ino) }
    }

    func closeControlSocket() {
        if controlFD >= 0 { close(controlFD) }
        controlFD = -1
        if let file = controlFile, let now = Sys.identity(file.path), now.dev == file.dev, now.ino == file.ino {
            unlink(file.path)
        }
        controlFile = nil
    }

    func acceptControlConnections() {
        while true {
            let fd = accept(controlFD, nil, nil)
            guard fd >= 0 else { return }
            _ = baton_fcntl_setfd(fd, FD_CLOEXEC)
            _ = baton_fcntl_setfl(fd, baton_fcntl_getfl(fd) | O_NONBLOCK)
            let uid = baton_peer_uid(fd)
            if uid != Int64(geteuid()) && uid != 0 {
                let reply = result(.failure, "permission denied: only uid \(geteuid()) may control this supervisor")
                Sys.writeAll(fd, (reply.text + "\n").utf8)
                close(fd)
                continue
            }
            connections[fd] = ControlConnection(fd: fd)
            baton_epoll_add(epfd, fd, Token.connectionBase.rawValue + UInt64(fd))
        }
    }

    func handleConnection(_ fd: Int32) {
        guard let c = connections[fd] else { return }
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                c.input += buf[0..<n]
                if c.input.count > 65536 {
                    drop(c)
                    return
                }
                continue
            }
            if n == 0 || (errno != EAGAIN && errno != EINTR) {
                drop(c)
                return
            }
            if errno == EAGAIN { break }
        }
        while let newline = c.input.firstIndex(of: 10), connections[fd] != nil {
            let line = String(decoding: c.input[..<newline], as: UTF8.self)
            c.input.removeSubrange(...newline)
            handleRequest(line, from: c)
        }
    }

    private func handleRequest(_ line: String, from c: ControlConnection) {
        guard let request = JSON(parsing: line), let command = request["cmd"]?.string else {
            finish(c, result(.usage, "not a control request: expected one JSON object with \"cmd\" per line"))
            return
        }
        guard request["v"]?.int == controlProtocolVersion else {
            finish(
                c,
                result(
                    .usage,
                    "unsupported protocol version \(request["v"]?.text ?? "none"); this supervisor speaks v\(controlProtocolVersion)"))
            return
        }
        guard c.request == nil else {
            finish(c, result(.busy, "one request per connection"))
            return
        }
        switch command {
        case "status":
            send(c, statusJSON())
            drop(c)
        case "restart":
            let id = nextRequestID
            nextRequestID += 1
            c.request = id
            c.waitForDrain = request["wait_drain"]?.bool ?? true
            requestConnections[id] = c.fd
            dispatch(.restartRequested(id))
        case "stop":
            let id = nextRequestID
            nextRequestID += 1
            c.request = id
            requestConnections[id] = c.fd
            dispatch(.stopRequested(id))
        default:
            finish(c, result(.usage, "unknown command '\(command)'; expected status, restart or stop"))
        }
    }

    // MARK: - Progress and results

    func attemptStarted(_ requests: [RequestID], generation: Int, reason: AttemptReason) {
        if reason == .restart {
            systemd.send(
                "RELOADING=1\nMONOTONIC_USEC=\(Sys.now().nanoseconds / 1000)\nSTATUS=restarting: starting generation \(generation)")
        }
    }

    func forward(_ report: Report) {
        guard let generation = report.generation else { return }
        // A restart's client hears of every generation while it waits: the
        // new one coming up and the old ones being retired.
        for c in connections.values where c.request != nil {
            var fields: [String: JSON] = [
                "v": .number(Double(controlProtocolVersion)), "type": .string("progress"), "kind": .string(report.kind.rawValue),
                "generation": .number(Double(generation)), "message": .string(report.message),
            ]
            if let pid = report.pid { fields["pid"] = .number(Double(pid)) }
            if let elapsed = report.elapsed { fields["elapsed_ms"] = .number(Double(elapsed.milliseconds)) }
            send(c, .object(fields))
            if report.kind == .drained || report.kind == .exited { c.draining.remove(generation) }
            if let pending = c.pendingResult, c.draining.isEmpty { finish(c, pending) }
        }
    }

    func attemptFinished(_ requests: [RequestID], _ outcome: AttemptOutcome) {
        let initial = machine.lastAttempt?.reason == .initial
        switch outcome {
        case .succeeded(let generation, let pid, _, _):
            systemd.send("READY=1\nSTATUS=serving generation \(generation) (pid \(pid))")
        case .failed:
            if let s = machine.serving {
                systemd.send("READY=1\nSTATUS=restart failed; generation \(s.number) (pid \(s.pid)) still serves")
            }
        case .rejected:
            break
        }
        if initial, let fd = startReportFD {
            Sys.writeAll(fd, (outcomeJSON(outcome).text + "\n").utf8)
            if case .succeeded = outcome {
                close(fd)
                startReportFD = nil
            }
        }
        for id in requests {
            guard let fd = requestConnections[id], let c = connections[fd] else { continue }
            let answer = outcomeJSON(outcome)
            if case .succeeded(_, _, _, let retired) = outcome, c.waitForDrain {
                let stillThere = Set(retired.filter { n in machine.generations.contains { $0.number == n } })
                if !stillThere.isEmpty {
                    c.draining = stillThere
                    c.pendingResult = answer
                    continue
                }
            }
            finish(c, answer)
        }
    }

    /// After the files are gone: answers `stop` requesters and the starter.
    func finishStop(_ requests: [RequestID], code: Int32) {
        if let fd = startReportFD {
            if let last = machine.lastAttempt, case .failed = last.outcome {
                // Already reported; the pipe's end tells the starter all is cleaned up.
            } else {
                Sys.writeAll(fd, (result(.startFailed, "the supervisor stopped before the first generation was ready").text + "\n").utf8)
            }
            close(fd)
            startReportFD = nil
        }
        for id in requests {
            guard let fd = requestConnections[id], let c = connections[fd] else { continue }
            finish(
                c,
                result(
                    code == 0 ? nil : .startFailed,
                    code == 0 ? "stopped; every process is gone and every file removed" : "stopped with exit code \(code)"))
        }
        for c in Array(connections.values) {
            finish(c, result(.notRunning, "the supervisor stopped"))
        }
    }

    func outcomeJSON(_ outcome: AttemptOutcome) -> JSON {
        switch outcome {
        case .succeeded(let generation, let pid, let readyAfter, let retired):
            var r = result(nil, "generation \(generation) (pid \(pid)) is serving")
            if case .object(var o) = r {
                o["generation"] = .number(Double(generation))
                o["pid"] = .number(Double(pid))
                o["ready_ms"] = .number(Double(readyAfter.milliseconds))
                o["retired"] = .array(retired.map { .number(Double($0)) })
                r = .object(o)
            }
            return r
        case .failed(let generation, let reason):
            let still = machine.serving.map { "; generation \($0.number) (pid \($0.pid)) still serves" } ?? ""
            var r = result(
                machine.lastAttempt?.reason == .initial ? .startFailed : .generationFailed,
                "generation \(generation.map(String.init) ?? "?") failed: \(reason)\(still)")
            if case .object(var o) = r, let generation {
                o["generation"] = .number(Double(generation))
                r = .object(o)
            }
            return r
        case .rejected(let reason):
            return result(.busy, "restart refused: \(reason)")
        }
    }

    /// A final answer: `code` nil means success.
    func result(_ code: BatonError.Code?, _ message: String) -> JSON {
        .object([
            "v": .number(Double(controlProtocolVersion)), "type": .string("result"), "ok": .bool(code == nil),
            "code": .string(code?.name ?? "success"), "exit": .number(Double(code?.exitCode ?? 0)),
            "message": .string(message),
        ])
    }

    private func send(_ c: ControlConnection, _ message: JSON) {
        // Answers are small; a client that does not read them is dropped.
        if !Sys.writeAllNonBlocking(c.fd, (message.text + "\n").utf8) { drop(c) }
    }

    private func finish(_ c: ControlConnection, _ message: JSON) {
        send(c, message)
        drop(c)
    }

    private func drop(_ c: ControlConnection) {
        guard connections.removeValue(forKey: c.fd) != nil else { return }
        if epfd >= 0 { baton_epoll_del(epfd, c.fd) }
        close(c.fd)
        if let id = c.request { requestConnections[id] = nil }
    }

    // MARK: - Status

    func statusJSON() -> JSON {
        let now = Sys.now()
        func ms(_ d: Duration) -> JSON { .number(Double(d.milliseconds)) }
        let generations: [JSON] = machine.generations.map { g in
            var o: [String: JSON] = [
                "generation": .number(Double(g.number)), "pid": .number(Double(g.pid)), "state": .string(g.phase.rawValue),
                "age_ms": ms(now - g.spawnedAt), "release_dir": .string(g.releaseDir),
            ]
            if let s = g.status { o["status"] = .string(s) }
            if let r = g.readyAt { o["ready_ms"] = ms(r - g.spawnedAt) }
            if let p = g.lastProbe {
                var probe: [String: JSON] = [
                    "passed": .bool(p.passed), "detail": .string(p.detail),
                    "latency_ms": .number(Double(p.latency.nanosecondsClamped) / 1e6),
                ]
                if let status = p.status { probe["status"] = .number(Double(status)) }
                o["last_probe"] = .object(probe)
            }
            return .object(o)
        }
        var o: [String: JSON] = [
            "v": .number(Double(controlProtocolVersion)), "type": .string("status"), "ok": .bool(true),
            "pid": .number(Double(getpid())), "uptime_ms": ms(now - startedAt), "started_at": .number(Double(startedWall)),
            "state": .string(machine.phase.rawValue),
            "listeners": .array(
                listeners.enumerated().map {
                    .object(["address": .string($1.address.description), "fd": .number(Double(3 + $0)), "name": .string($1.name)])
                }),
            "generations": .array(generations),
            "command": .array(configuration.command.map(JSON.string)),
        ]
        if let serving = machine.serving { o["serving"] = .number(Double(serving.number)) }
        if let p = pidFile?.path { o["pid_file"] = .string(p) }
        if let c = controlFile?.path { o["control"] = .string(c) }
        if let l = configuration.logFile { o["log_file"] = .string(l) }
        if let last = machine.lastAttempt {
            var a: [String: JSON] = [
                "reason": .string(last.reason.rawValue), "duration_ms": ms(last.finishedAt - last.startedAt),
                "ago_ms": ms(now - last.finishedAt),
            ]
            switch last.outcome {
            case .succeeded(let gen, _, let ready, _):
                a["ok"] = .bool(true)
                a["generation"] = .number(Double(gen))
                a["ready_ms"] = ms(ready)
            case .failed(let gen, let reason):
                a["ok"] = .bool(false)
                if let gen { a["generation"] = .number(Double(gen)) }
                a["message"] = .string(reason)
            case .rejected(let reason):
                a["ok"] = .bool(false)
                a["message"] = .string(reason)
            }
            o["last_attempt"] = .object(a)
        }
        return .object(o)
    }
}

/// Tells systemd (`Type=notify`) how the supervisor stands, through the
/// `NOTIFY_SOCKET` baton itself was given; does nothing without one.
final class SystemdNotifier {
    private let address: [UInt8]?

    init() {
        guard var bytes = Sys.getenv("NOTIFY_SOCKET").map({ Array($0.utf8) }), !bytes.isEmpty,
            bytes.count <= ListenAddress.maxUnixPathBytes
        else {
            address = nil
            return
        }
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        address = bytes
    }

    func send(_ message: String) {
        guard let address else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in address.enumerated() { raw[i] = b } }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + address.count + (address[0] == 0 ? 0 : 1))
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, len) }
            }
        }
    }
}
