import BatonControl
import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// The thin shell around `SupervisorStateMachine`: one thread, one epoll
/// loop. Signals (signalfd), child exits, readiness datagrams, control
/// connections, probe answers and listener hang-ups become events; the
/// machine decides, and the shell carries out its actions. The only timer is
/// the machine's next deadline, used as the epoll timeout, so an idle
/// supervisor sleeps in `epoll_wait`.
public final class Supervisor {
    let configuration: RunConfiguration
    var machine: SupervisorStateMachine
    /// Every socket the supervisor holds, by the machine's id.
    var held: [SocketID: Listener] = [:]
    /// Each configured listener as first bound: the template for the sockets of later generations.
    var templates: [Listener] = []
    /// Health probes under way, by generation.
    var probes: [Int: HealthProbe] = [:]
    /// Proof connections under way, by descriptor.
    var proofs: [Int32: ProofConnection] = [:]
    var pidFile: PidFile?
    let statusFile: StatusFile?
    var spawner: Spawner?
    var epfd: Int32 = -1
    var signalFD: Int32 = -1
    var notifyFD: Int32 = -1
    var controlFD: Int32 = -1
    var controlFile: (path: String, dev: UInt64, ino: UInt64)?
    var connections: [Int32: ControlConnection] = [:]
    var requestConnections: [RequestID: Int32] = [:]
    var nextRequestID: RequestID = 1
    var exitCode: Int32?
    let credentials: Spawner.Credentials?
    let systemd = SystemdNotifier()
    /// The pipe of the `baton start` that spawned this daemon, and the request id of its report.
    var startReport: (id: RequestID, fd: Int32)?
    /// Processes of gone generations already sent SIGKILL, until reaped.
    var killedStrays: Set<Int32> = []
    var startedAt = Sys.now()
    var startedWall = Sys.wallClockSeconds()
    /// The notify socket's abstract name.
    var notifyName = ""
    /// How many times this supervisor re-executed itself, and when it last did (seconds since the epoch).
    var reexecutions = 0
    var reexecutedAt: Int?
    /// Problems `status` shows (a state that could not be taken over, ...).
    var warnings: [String] = []
    /// The upgrade whose check passed, waiting for the machine to be quiet.
    var pendingUpgrade: PendingUpgrade?
    /// The listeners came from systemd (socket activation): they cannot change while baton runs.
    var socketsFromSystemd = false
    /// Development mode: the files watched, the loop that decides, the build under way.
    var watcher: Watcher?
    var watchLoop: WatchLoop?
    var build: (pid: Int32, startedAt: Instant)?
    var cancelledBuilds: Set<Int32> = []
    var watchedRestarts: [RequestID: WatchedRestart] = [:]
    /// The machine asked for the re-exec: carried out once the actions in hand are done.
    var reexecDue: RequestID?
    private var pendingEvents: [SupervisorEvent] = []
    private var dispatching = false

    /// Checks `configuration` (command, user, group, directories) without
    /// starting anything.
    public init(configuration: RunConfiguration) throws(BatonError) {
        self.configuration = configuration
        self.machine = SupervisorStateMachine(policy: configuration.policy)
        self.statusFile = configuration.statusFile.map(StatusFile.init(path:))
        guard let command = configuration.command.first else {
            throw BatonError(.usage, "no command given; put the app's command after '--'")
        }
        self.credentials = try Spawner.Credentials.resolve(user: configuration.user, group: configuration.group)
        if let dir = configuration.dir, Sys.realpath(dir) == nil {
            let e = errno
            throw BatonError(.usage, "--dir \(dir): \(Sys.describe(errno: e))\(e == ENOENT ? " (a dangling symlink?)" : "")", errno: e)
        }
        let directory = configuration.dir.flatMap(Sys.realpath) ?? Sys.cwd()
        let found = Sys.findExecutable(command, directory: directory, path: Sys.getenv("PATH"))
        if let problem = found.problem {
            throw BatonError(.commandNotFound, "cannot run '\(command)': it \(problem)")
        }
        if let envdir = configuration.envdir, case .failure(let e) = EnvDir.read(envdir, style: configuration.envdirStyle) {
            throw e
        }
        // Checked again when the socket is made; here too, so that 'baton
        // start' refuses before it spawns a daemon.
        if let path = configuration.controlPath {
            try Self.checkControlPath(path)
        }
    }

    /// Binds, starts the first generation and supervises until stopped.
    /// Throws when nothing could be started; otherwise returns the exit code.
    public func run() throws(BatonError) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let signals: [Int32] = [SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD]
        signalFD = signals.withUnsafeBufferPointer { baton_signalfd($0.baseAddress, Int32($0.count)) }
        guard signalFD >= 0 else { throw BatonError(.failure, "signalfd: \(Sys.describe(errno: errno))", errno: errno) }
        if baton_set_subreaper() != 0 {
            Log.warning("cannot become a child subreaper: \(Sys.describe(errno: errno))")
        }
        defer { cleanUp() }

        if let path = configuration.pidFile { pidFile = try PidFile(checking: path) }
        let modes = try openListeners()
        notifyName = try openNotifySocket()
        if let path = configuration.controlPath { try openControlSocket(path) }
        try pidFile?.write()
        let policy = try openEventLoop()
        try openWatcher()
        machine = SupervisorStateMachine(policy: policy, listeners: modes)
        for (id, listener) in templates.enumerated() {
            held[id] = listener
            watchHangUps(of: id)
        }
        Log.line(
            "listening on \(templates.map { $0.address.description }.joined(separator: ", ")); command: \(configuration.command.joined(separator: " "))"
        )
        var report: RequestID?
        if let fd = configuration.startReportFD {
            let id = newRequestID()
            startReport = (id, fd)
            report = id
        }
        dispatch(.start(report: report))
        return loop()
    }

    func loop() -> Int32 {
        var tokens = [UInt64](repeating: 0, count: 16)
        while exitCode == nil {
            var timeout: Int32 = -1
            if let deadline = [machine.nextDeadline, watchLoop?.nextDeadline].compactMap({ $0 }).min() {
                let now = Sys.now()
                timeout = deadline <= now ? 0 : Int32(clamping: (deadline.nanoseconds - now.nanoseconds + 999_999) / 1_000_000)
            }
            let n = tokens.withUnsafeMutableBufferPointer { baton_epoll_wait(epfd, $0.baseAddress, 16, timeout) }
            if n < 0 {
                if errno == EINTR { continue }
                Log.line("epoll_wait: \(Sys.describe(errno: errno)); stopping")
                dispatch(.stopRequested(nil))
                continue
            }
            for raw in tokens.prefix(Int(n)) {
                guard exitCode == nil, let token = EpollToken(rawValue: raw) else { continue }
                switch token {
                case .signals: handleSignals()
                case .notify: handleNotifications()
                case .control: acceptControlConnections()
                case .connection(let fd): handleConnection(fd)
                case .probe(let fd): handleProbe(fd)
                case .proof(let fd): handleProofActivity(fd)
                case .listener(let fd): handleListenerHangUp(fd)
                case .watch: handleWatchEvents()
                }
            }
            if exitCode == nil, let deadline = machine.nextDeadline, deadline <= Sys.now() {
                dispatch(.tick)
            }
            if exitCode == nil, let deadline = watchLoop?.nextDeadline, deadline <= Sys.now() { watchTick() }
        }
        return exitCode ?? 0
    }

    func handleSignals() {
        while exitCode == nil {
            let sig = baton_signalfd_read(signalFD)
            if sig <= 0 { return }
            switch sig {
            case SIGHUP:
                Log.line("received SIGHUP: restarting")
                dispatch(.restartRequested(nil))
            case SIGTERM, SIGINT, SIGQUIT:
                Log.line("received \(OptionParsing.signalName(sig)): stopping")
                dispatch(.stopRequested(nil))
            case SIGCHLD:
                reapChildren()
            case SIGUSR1:
                reopenLog()
            default:
                break
            }
        }
    }

    /// Handles every exited child: the machine hears of it while the zombie
    /// still holds its pid (so its process group cannot be reused under a
    /// KILL), then it is reaped.
    private func reapChildren() {
        var reaped = false
        while true {
            var signaled: Int32 = 0
            var code: Int32 = 0
            let pid = baton_peek_exited_child(&signaled, &code)
            guard pid > 0 else { break }
            let exit: ExitStatus = signaled != 0 ? .signaled(code) : .exited(code)
            if !buildExited(pid, exit) { dispatch(.childExited(pid: pid, status: exit)) }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            reaped = true
        }
        // A process that died may have left others of its generation to us.
        if reaped { killStrays() }
    }

    private func handleNotifications() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var pid: pid_t = 0
            let n = buffer.withUnsafeMutableBytes { baton_recv_with_pid(notifyFD, $0.baseAddress, $0.count, &pid) }
            if n < 0 { return }
            dispatch(.notified(pid: pid, message: NotifyMessage(parsing: buffer.prefix(min(n, buffer.count)))))
        }
    }

    /// Feeds one event to the machine and carries out its actions. Actions
    /// that produce events (a spawn, a queue reading) enqueue them: they are
    /// handled in order once the current actions are done, never from inside.
    func dispatch(_ event: SupervisorEvent) {
        pendingEvents.append(event)
        guard !dispatching else { return }
        dispatching = true
        defer { dispatching = false }
        while true {
            while !pendingEvents.isEmpty, exitCode == nil {
                let next = pendingEvents.removeFirst()
                for action in machine.handle(next, now: Sys.now()) { execute(action) }
            }
            // A re-exec is carried out with nothing left in hand; it returns
            // only when it failed, having enqueued `.reexecFailed`.
            guard exitCode == nil, let id = reexecDue else { break }
            reexecDue = nil
            reexec(id)
        }
        pendingEvents.removeAll()
    }

    private func execute(_ action: SupervisorAction) {
        switch action {
        case .spawn(let number, let sockets, let open, let release):
            spawn(number, sockets: sockets, opening: open, release: release)
        case .connectProof(let number, let socket, let steer):
            connectProof(number, socket: socket, steer: steer)
        case .readProofQueues(let number, let ids):
            var lengths: [SocketID: Int] = [:]
            for id in ids { lengths[id] = held[id].map(Listeners.queueLength) ?? 0 }
            dispatch(.proofQueues(generation: number, lengths: lengths))
        case .dropProof(let number):
            dropProofs(of: number)
        case .readWorkers(let number, let pid):
            dispatch(.workersRead(generation: number, pids: Sys.forkedChildren(of: pid)))
        case .steer(_, let via, let index):
            steer(via: via, index: index)
        case .publish(let id):
            publish(id)
        case .measureQueues(let number, let sockets):
            let length = sockets.compactMap { held[$0] }.reduce(0) { $0 + Listeners.queueLength($1) }
            dispatch(.queueMeasured(generation: number, length: length))
        case .shutDown(let ids):
            for id in ids { shutDown(id) }
        case .relisten(let id):
            relisten(id)
        case .close(let ids):
            for id in ids { closeSocket(id) }
        case .probe(let number, let socket):
            startProbe(of: number, socket: socket)
        case .abortProbe(let number):
            abortProbe(of: number)
        case .signal(let pid, let sig):
            kill(pid, sig)
        case .signalGroup(let pgid, let sig):
            kill(-pgid, sig)
        case .report(let report):
            Log.line(report.description)
            forward(report)
        case .statusChanged(let entries):
            statusFile?.write(entries)
        case .notifySystemd(let text):
            systemd.send(text)
        case .answer(let id, let answer):
            send(answer, to: id)
        case .exit(let code, let answers):
            exitCode = code
            cleanUp()
            finish(answers)
        case .reexec(let id):
            reexecDue = id
        }
    }

    /// Opens the sockets a spawn needs, then spawns; the outcome goes back as an event.
    private func spawn(_ number: Int, sockets: [SocketID], opening: [SocketOpening], release: String?) {
        var opened: [SocketID] = []
        func failed(_ error: BatonError) {
            for id in opened { closeSocket(id) }
            dispatch(.spawnFailed(generation: number, reason: error.message))
        }
        for socket in opening {
            switch openSocket(socket) {
            case .success: opened.append(socket.id)
            case .failure(let e): return failed(e)
            }
        }
        guard let set = orderedForSpawn(sockets) else { return failed(BatonError(.failure, "a socket of generation \(number) is missing")) }
        switch spawner!.spawn(generation: number, listeners: set, release: release) {
        case .success(let child):
            dispatch(.spawned(generation: number, pid: child.pid, releaseDir: child.releaseDir))
        case .failure(let error):
            failed(error)
        }
    }

    func newRequestID() -> RequestID {
        defer { nextRequestID += 1 }
        return nextRequestID
    }

    private func openNotifySocket() throws(BatonError) -> String {
        notifyFD = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard notifyFD >= 0 else { throw BatonError(.failure, "notify socket: \(Sys.describe(errno: errno))", errno: errno) }
        var one: Int32 = 1
        setsockopt(notifyFD, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size))
        var seed = UInt64(Sys.now().nanoseconds) ^ UInt64(getpid())
        seed = seed &* 6_364_136_223_846_793_005 &+ 1
        // An abstract name: no file to clean up, reachable by an app running as another user.
        let name = "@baton/\(getpid())/\(String(seed >> 16, radix: 36))"
        let rc = try! UnixAddress(notation: name).withSockaddr { bind(notifyFD, $0, $1) }
        guard rc == 0 else { throw BatonError(.failure, "notify socket: bind: \(Sys.describe(errno: errno))", errno: errno) }
        return name
    }

    /// Releases every file and socket this supervisor created. Control
    /// connections stay open for the final answer to `stop`.
    func cleanUp() {
        stopBuild()
        watcher = nil
        for probe in probes.values { close(probe.fd) }
        probes = [:]
        for fd in proofs.keys { close(fd) }
        proofs = [:]
        Listeners.release(Array(held.values))
        held = [:]
        if let added = pendingUpgrade?.listeners.added.map(\.listener) { Listeners.release(added) }
        pendingUpgrade = nil
        statusFile?.remove()
        closeControlSocket()
        pidFile?.remove()
        pidFile = nil
        for fd in [notifyFD, signalFD, epfd] where fd >= 0 { close(fd) }
        notifyFD = -1
        signalFD = -1
        epfd = -1
    }

    private func reopenLog() {
        guard let path = configuration.logFile else { return }
        do {
            try LogFile.redirect(to: path)
            Log.line("received SIGUSR1: reopened log file \(path)")
        } catch {
            Log.warning("cannot reopen log file \(path): \(error.message)")
        }
    }
}

extension Supervisor {
    /// The spawner, the epoll set (signals, notify socket, control socket)
    /// and the policy with this namespace's tcp_migrate_req: the same for a
    /// start and for a take-over after a re-exec.
    func openEventLoop() throws(BatonError) -> SupervisorPolicy {
        spawner = Spawner(configuration: configuration, notifySocket: notifyName, credentials: credentials)
        epfd = baton_epoll_create()
        guard epfd >= 0 else { throw BatonError(.failure, "epoll_create1: \(Sys.describe(errno: errno))", errno: errno) }
        baton_epoll_add(epfd, signalFD, EpollToken.signals.rawValue)
        baton_epoll_add(epfd, notifyFD, EpollToken.notify.rawValue)
        if controlFD >= 0 { baton_epoll_add(epfd, controlFD, EpollToken.control.rawValue) }
        var policy = configuration.policy
        policy.queueMigration = Listeners.queueMigrationEnabled()
        return policy
    }
}
