import BatonControl
import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// One client of the control socket.
final class ControlConnection {
    let fd: Int32
    var input: [UInt8] = []
    /// The request it waits on (restart or stop).
    var request: RequestID?

    init(fd: Int32) { self.fd = fd }
}

extension Supervisor {
    // MARK: - The socket

    /// Refuses a control socket path that is too long or where another kind of file stands.
    static func checkControlPath(_ path: String) throws(BatonError) {
        guard path.utf8.count <= UnixAddress.maxBytes else {
            throw BatonError(.usage, "--control \(path): the path is over the kernel's limit of \(UnixAddress.maxBytes) bytes")
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
                let reply = ControlResult(.failure, "permission denied: only uid \(geteuid()) may control this supervisor")
                Sys.writeAll(fd, ControlMessage.result(reply).line.utf8)
                close(fd)
                continue
            }
            connections[fd] = ControlConnection(fd: fd)
            baton_epoll_add(epfd, fd, EpollToken.connection(fd).rawValue)
        }
    }

    func handleConnection(_ fd: Int32) {
        guard let c = connections[fd] else { return }
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                c.input += buf[0..<n]
                if c.input.count > ControlProtocol.maxRequestBytes {
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
        let request: ControlRequest
        switch ControlRequest.decode(line) {
        case .success(let r): request = r
        case .failure(.notARequest):
            return finish(c, ControlResult(.usage, "not a control request: expected one JSON object with \"cmd\" per line"))
        case .failure(.unsupportedVersion(let v)):
            return finish(
                c, ControlResult(.usage, "unsupported protocol version \(v); this supervisor speaks v\(ControlProtocol.version)"))
        case .failure(.unknownCommand(let command)):
            return finish(c, ControlResult(.usage, "unknown command '\(command)'; expected status, restart, stop or upgrade"))
        }
        guard c.request == nil else { return finish(c, ControlResult(.busy, "one request per connection")) }
        switch request {
        case .status:
            send(c, .status(status()))
            drop(c)
        case .restart(let wait):
            let id = newRequestID()
            c.request = id
            requestConnections[id] = c.fd
            dispatch(.restartRequested(RestartRequest(id: id, waitsForDrain: wait)))
        case .stop:
            let id = newRequestID()
            c.request = id
            requestConnections[id] = c.fd
            dispatch(.stopRequested(id))
        case .upgrade(let binary, let configuration):
            upgradeRequested(binary: binary, configuration: configuration, from: c)
        }
    }

    // MARK: - Progress and answers

    /// A restart's client hears of every generation while it waits: the new
    /// one coming up and the old ones being retired.
    func forward(_ report: Report) {
        guard report.generation != nil else { return }
        let progress = ControlProgress(report)
        for c in Array(connections.values) where c.request != nil { send(c, .progress(progress)) }
        // 'baton start' shows how its first generation comes up.
        if let report = startReport { Sys.writeAll(report.fd, ControlMessage.progress(progress).line.utf8) }
    }

    /// The machine's answer to request `id`, to whoever asked.
    func send(_ answer: Answer, to id: RequestID) {
        if answeredWatchedRestart(id, answer) { return }
        let result = ControlResult(answer)
        if let report = startReport, report.id == id {
            Sys.writeAll(report.fd, ControlMessage.result(result).line.utf8)
            // On a failure the pipe stays open until the daemon has cleaned up and exits.
            if result.ok {
                close(report.fd)
                startReport = nil
            }
            return
        }
        guard let fd = requestConnections[id], let c = connections[fd] else { return }
        finish(c, result)
    }

    /// After the files are gone: the last answers, then everyone else hears the supervisor stopped.
    func finish(_ answers: [RequestID: Answer]) {
        for (id, answer) in answers.sorted(by: { $0.key < $1.key }) { send(answer, to: id) }
        if let report = startReport {
            close(report.fd)
            startReport = nil
        }
        for c in Array(connections.values) { finish(c, ControlResult(.notRunning, "the supervisor stopped")) }
    }

    func send(_ c: ControlConnection, _ message: ControlMessage) {
        // Answers are small; a client that does not read them is dropped.
        if !Sys.writeAllNonBlocking(c.fd, message.line.utf8) { drop(c) }
    }

    func finish(_ c: ControlConnection, _ result: ControlResult) {
        send(c, .result(result))
        drop(c)
    }

    private func drop(_ c: ControlConnection) {
        guard connections.removeValue(forKey: c.fd) != nil else { return }
        if epfd >= 0 { baton_epoll_del(epfd, c.fd) }
        close(c.fd)
        if let id = c.request { requestConnections[id] = nil }
    }

    // MARK: - Status

    func status() -> ControlStatus {
        let now = Sys.now()
        var s = ControlStatus(
            pid: getpid(), uptimeMilliseconds: (now - startedAt).milliseconds, startedAt: startedWall, state: machine.phase.rawValue,
            version: batonVersion)
        s.binary = Self.runningBinaryPath()
        s.binaryID = Self.runningBinaryID()
        s.configuration = configuration.json
        s.reexecutions = reexecutions
        s.reexecutedAt = reexecutedAt
        s.warnings = warnings
        let live = liveListenerOrder()
        s.listeners = live.enumerated().map { position, i in
            let l = templates[i]
            return ControlStatus.Listener(
                address: l.address.description, fd: l.targetFD ?? Int32(3 + position), name: l.name,
                mode: machine.listeners.indices.contains(i) ? machine.listeners[i].rawValue : "shared")
        }
        for i in templates.indices where machine.retiredListeners[i] != nil && machine.isListenerOpen(i) {
            let l = templates[i]
            s.listeners.append(ControlStatus.Listener(address: l.address.description, fd: l.targetFD ?? -1, name: l.name, mode: "closing"))
        }
        s.generations = machine.generations.map { g in
            var o = ControlStatus.Generation(
                number: g.number, pid: g.pid, state: machine.stateName(of: g), ageMilliseconds: (now - g.spawnedAt).milliseconds,
                releaseDir: g.releaseDir)
            o.status = g.status
            o.readyMilliseconds = g.readyAt.map { ($0 - g.spawnedAt).milliseconds }
            if let p = g.lastProbe {
                o.lastProbe = ControlStatus.Probe(
                    passed: p.passed, status: p.status, detail: p.detail, latencyMilliseconds: Double(p.latency.nanosecondsClamped) / 1e6)
            }
            o.sockets = machine.ownSockets(of: g.number).compactMap { id in held[id].map { "\($0.address) (socket \(id))" } }
            return o
        }
        s.command = configuration.command
        s.serving = machine.serving?.number
        s.pidFile = pidFile?.path
        s.control = controlFile?.path
        s.logFile = configuration.logFile
        if let loop = machine.crashLoop(at: now) {
            var c = ControlStatus.CrashLoop(
                release: loop.releaseDir, deaths: loop.deaths, lastGeneration: loop.lastGeneration, lastReason: loop.lastReason,
                agoMilliseconds: (now - loop.lastAt).milliseconds)
            c.rolledBackTo = loop.rolledBackTo
            s.crashLoop = c
        }
        if let p = machine.probation {
            s.probation = ControlStatus.Probation(
                generation: p.generation, reserve: p.reserve, leftMilliseconds: max(0, (p.until - now).milliseconds))
        }
        s.stableRelease = machine.stableRelease
        if let last = machine.lastAttempt {
            var a = ControlStatus.Attempt(
                reason: last.reason.rawValue, ok: false, durationMilliseconds: (last.finishedAt - last.startedAt).milliseconds,
                agoMilliseconds: (now - last.finishedAt).milliseconds)
            switch last.outcome {
            case .succeeded(let gen, _, let ready, _):
                a.ok = true
                a.generation = gen
                a.readyMilliseconds = ready.milliseconds
            case .failed(let gen, let reason):
                a.generation = gen
                a.message = reason
            case .rejected(let reason):
                a.message = reason
            }
            s.lastAttempt = a
        }
        return s
    }
}

/// Tells systemd (`Type=notify`) how the supervisor stands, through the
/// `NOTIFY_SOCKET` baton itself was given; does nothing without one.
final class SystemdNotifier {
    private let socket: String?

    init() {
        socket = Sys.getenv(EnvironmentName.notifySocket).flatMap { $0.isEmpty ? nil : $0 }
    }

    func send(_ message: String) {
        guard let socket else { return }
        _ = Notifier.send(message, to: socket)
    }
}
