import BatonCore
import CBatonShims
import Glibc

/// The thin shell around `SupervisorStateMachine`: one thread, one epoll
/// loop. Signals (signalfd), readiness datagrams and (later) control
/// connections are events; the only timer is the machine's next deadline,
/// used as the epoll timeout, so an idle supervisor sleeps in `epoll_wait`.
public final class Supervisor {
    let configuration: RunConfiguration
    var machine: SupervisorStateMachine
    /// The listeners as bound at start: the shared set, or in hand-over mode
    /// the first generation's.
    var listeners: [Listener] = []
    /// Hand-over mode: each generation's own socket set.
    var generationSockets: [Int: [Listener]] = [:]
    /// Hand-over mode: a socket set whose generation is gone while no other
    /// holds one; kept open (its queue waits) and given to the next generation.
    var spareSockets: [Listener]?
    /// Each generation's private health-probe listener.
    var healthSockets: [Int: Listener] = [:]
    /// Health probes under way, by descriptor.
    var probes: [Int32: HealthProbe] = [:]
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
    var credentials: Spawner.Credentials?
    let systemd = SystemdNotifier()
    var startReportFD: Int32?
    /// Processes of gone generations already sent SIGKILL, until reaped.
    var killedStrays: Set<Int32> = []
    let startedAt = Sys.now()
    let startedWall = Sys.wallClockSeconds()

    enum Token: UInt64 {
        case signal = 1
        case notify = 2
        case control = 3
        /// Control connections: this plus their descriptor.
        case connectionBase = 1_000_000
    }

    /// Checks `configuration` (command, user, group, directories) without
    /// starting anything.
    public init(configuration: RunConfiguration) throws(BatonError) {
        self.configuration = configuration
        self.machine = SupervisorStateMachine(policy: configuration.policy)
        self.statusFile = configuration.statusFile.map(StatusFile.init(path:))
        guard let command = configuration.command.first else {
            throw BatonError(.usage, "no command given; put the app's command after '--'")
        }
        self.credentials = try Self.resolveCredentials(user: configuration.user, group: configuration.group)
        if let dir = configuration.dir, Sys.realpath(dir) == nil {
            let e = errno
            throw BatonError(.usage, "--dir \(dir): \(Sys.describe(errno: e))\(e == ENOENT ? " (a dangling symlink?)" : "")", errno: e)
        }
        let directory = configuration.dir.flatMap(Sys.realpath) ?? Sys.cwd()
        let found = Sys.findExecutable(command, directory: directory, path: Sys.getenv("PATH"))
        if let problem = found.problem {
            throw BatonError(.commandNotFound, "cannot run '\(command)': it \(problem)")
        }
        if configuration.handover, configuration.listen.contains(where: { $0.fd != nil }) {
            throw BatonError(.usage, "--handover cannot be combined with pinned descriptor numbers")
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

    private static func resolveCredentials(user: String?, group: String?) throws(BatonError) -> Spawner.Credentials? {
        guard user != nil || group != nil else { return nil }
        var c = Spawner.Credentials(uid: getuid(), gid: getgid(), userName: nil)
        if let user {
            if let pw = getpwnam(user) {
                c.uid = pw.pointee.pw_uid
                c.gid = pw.pointee.pw_gid
                c.userName = user
            } else if let uid = UInt32(user), let pw = getpwuid(uid) {
                c.uid = uid
                c.gid = pw.pointee.pw_gid
                c.userName = String(cString: pw.pointee.pw_name)
            } else {
                throw BatonError(.usage, "--user \(user): no such user")
            }
        }
        if let group {
            if let gr = getgrnam(group) {
                c.gid = gr.pointee.gr_gid
            } else if let gid = UInt32(group) {
                c.gid = gid
            } else {
                throw BatonError(.usage, "--group \(group): no such group")
            }
        }
        if getuid() != 0, c.uid != getuid() || c.gid != getgid() {
            throw BatonError(.usage, "--user/--group need baton to run as root")
        }
        return c
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
        if let adopted = try Listeners.adoptSystemd() {
            listeners = adopted
            Log.line("adopted \(adopted.count) socket(s) from systemd: \(adopted.map { $0.address.description }.joined(separator: ", "))")
        } else {
            guard !configuration.listen.isEmpty || configuration.allowNoListeners else {
                throw BatonError(.usage, "no address to listen on; give at least one --listen (for example --listen 8080)")
            }
            if configuration.handover, configuration.listen.contains(where: { if case .tcp = $0.address { true } else { false } }),
                !Listeners.queueMigrationEnabled()
            {
                throw BatonError(
                    .usage,
                    "--handover needs net.ipv4.tcp_migrate_req=1 (it is 0 in this network namespace), or the old generation's queued connections would be reset; run 'sysctl -w net.ipv4.tcp_migrate_req=1' or drop --handover"
                )
            }
            listeners = try Listeners.bind(
                configuration.listen, backlog: configuration.backlog, socketMode: configuration.socketMode,
                reusePort: configuration.handover)
        }
        if configuration.handover { spareSockets = listeners }
        let notifyName = try openNotifySocket()
        if let path = configuration.controlPath { try openControlSocket(path) }
        try pidFile?.write()
        spawner = Spawner(configuration: configuration, notifySocket: notifyName, credentials: credentials)

        epfd = baton_epoll_create()
        guard epfd >= 0 else { throw BatonError(.failure, "epoll_create1: \(Sys.describe(errno: errno))", errno: errno) }
        baton_epoll_add(epfd, signalFD, Token.signal.rawValue)
        baton_epoll_add(epfd, notifyFD, Token.notify.rawValue)
        if controlFD >= 0 { baton_epoll_add(epfd, controlFD, Token.control.rawValue) }
        watchSharedListeners()
        startReportFD = configuration.startReportFD

        Log.line(
            "listening on \(listeners.map { $0.address.description }.joined(separator: ", ")); command: \(configuration.command.joined(separator: " "))"
        )
        dispatch(.start)
        return loop()
    }

    private func loop() -> Int32 {
        var tokens = [UInt64](repeating: 0, count: 16)
        while exitCode == nil {
            var timeout: Int32 = -1
            let probeDeadline = nextProbeDeadline
            if let deadline = [machine.nextDeadline, probeDeadline].compactMap({ $0 }).min() {
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
            for token in tokens.prefix(Int(n)) {
                switch Token(rawValue: token) {
                case .signal: handleSignals()
                case .notify: handleNotifications()
                case .control: acceptControlConnections()
                case .connectionBase, nil:
                    if token > Self.listenerTokenBase {
                        handleListenerHangUp(Int32(token - Self.listenerTokenBase))
                    } else if token > Self.probeTokenBase {
                        handleProbe(Int32(token - Self.probeTokenBase))
                    } else if token > Token.connectionBase.rawValue {
                        handleConnection(Int32(token - Token.connectionBase.rawValue))
                    }
                }
                if exitCode != nil { break }
            }
            if exitCode == nil, let deadline = nextProbeDeadline, deadline <= Sys.now() {
                expireProbes(now: Sys.now())
            }
            if exitCode == nil, let deadline = machine.nextDeadline, deadline <= Sys.now() {
                dispatch(.tick)
            }
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
            dispatch(.childExited(pid: pid, status: signaled != 0 ? .signaled(code) : .exited(code)))
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

    /// Feeds one event to the machine and carries out its actions, feeding
    /// back the results of spawns.
    func dispatch(_ event: SupervisorEvent) {
        var queue = machine.handle(event, now: Sys.now())
        var i = 0
        while i < queue.count {
            let action = queue[i]
            i += 1
            switch action {
            case .spawn(let number):
                let sockets: [Listener]
                switch socketSet(for: number) {
                case .success(let set): sockets = set
                case .failure(let error):
                    queue += machine.handle(.spawnFailed(generation: number, reason: error.message), now: Sys.now())
                    continue
                }
                switch spawner!.spawn(generation: number, listeners: sockets) {
                case .success(let child):
                    queue += machine.handle(.spawned(generation: number, pid: child.pid, releaseDir: child.releaseDir), now: Sys.now())
                case .failure(let error):
                    queue += machine.handle(.spawnFailed(generation: number, reason: error.message), now: Sys.now())
                }
            case .signal(let pid, let sig):
                kill(pid, sig)
            case .signalGroup(let pgid, let sig):
                kill(-pgid, sig)
            case .closeDoor(let number):
                closeDoor(of: number)
            case .releaseSockets(let number):
                releaseSockets(of: number)
            case .probe(let number):
                startProbe(of: number)
            case .attemptStarted(let requests, let generation, let reason):
                attemptStarted(requests, generation: generation, reason: reason)
            case .report(let report):
                Log.line(report.description)
                forward(report)
            case .generationsChanged:
                statusFile?.write(machine.generations)
            case .attemptFinished(let requests, let outcome):
                logOutcome(outcome)
                attemptFinished(requests, outcome)
            case .exit(let code, let requests):
                exitCode = code
                systemd.send("STOPPING=1")
                cleanUp()
                finishStop(requests, code: code)
            }
        }
    }

    private func logOutcome(_ outcome: AttemptOutcome) {
        switch outcome {
        case .succeeded(let generation, _, let readyAfter, _):
            Log.line("generation \(generation) is serving (ready after \(readyAfter.humanDescription))")
        case .failed(let generation, let reason):
            let still = machine.serving.map { "; generation \($0.number) (pid \($0.pid)) still serves" } ?? ""
            Log.line("generation \(generation.map(String.init) ?? "?") failed: \(reason)\(still)")
        case .rejected(let reason):
            Log.line("request rejected: \(reason)")
        }
    }

    private func openNotifySocket() throws(BatonError) -> String {
        notifyFD = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard notifyFD >= 0 else { throw BatonError(.failure, "notify socket: \(Sys.describe(errno: errno))", errno: errno) }
        var one: Int32 = 1
        setsockopt(notifyFD, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size))
        var seed = UInt64(Sys.now().nanoseconds) ^ UInt64(getpid())
        seed = seed &* 6_364_136_223_846_793_005 &+ 1
        let name = "baton/\(getpid())/\(String(seed >> 16, radix: 36))"
        // An abstract name: no file to clean up, reachable by an app running as another user.
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i + 1] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(notifyFD, $0, len) } }
        guard rc == 0 else { throw BatonError(.failure, "notify socket: bind: \(Sys.describe(errno: errno))", errno: errno) }
        return "@" + name
    }

    // MARK: - Socket sets

    /// The sockets generation `number` inherits: the shared listeners, or in
    /// hand-over mode its own SO_REUSEPORT TCP listeners (unix ones shared).
    func socketSet(for number: Int) -> Result<[Listener], BatonError> {
        let shared: Result<[Listener], BatonError> = sharedOrOwnSockets(for: number)
        guard configuration.policy.health != nil, case .success(let set) = shared else { return shared }
        switch makeHealthListener() {
        case .success(let health):
            healthSockets[number] = health
            return .success(set + [health])
        case .failure(let e):
            return .failure(e)
        }
    }

    private func sharedOrOwnSockets(for number: Int) -> Result<[Listener], BatonError> {
        guard configuration.handover else { return .success(listeners) }
        if let spare = spareSockets {
            spareSockets = nil
            generationSockets[number] = spare
            return .success(spare)
        }
        var set: [Listener] = []
        for l in listeners {
            if l.isTCP {
                do { set.append(try Listeners.bindAgain(l, backlog: configuration.backlog)) } catch {
                    for opened in set where opened.isTCP { close(opened.fd) }
                    return .failure(error)
                }
            } else {
                set.append(l)
            }
        }
        generationSockets[number] = set
        return .success(set)
    }

    /// True when a generation other than `number` holds an open socket set.
    private func anotherDoorIsOpen(besides number: Int) -> Bool {
        spareSockets != nil || generationSockets.keys.contains { $0 != number }
    }

    /// Hand-over: shuts the generation's own TCP listeners, so that what is
    /// queued on them moves to the other generation's, before its signal.
    func closeDoor(of number: Int) {
        guard configuration.handover, let set = generationSockets[number], anotherDoorIsOpen(besides: number) else { return }
        for l in set where l.isTCP { Listeners.shutDown(l) }
    }

    /// Hand-over: a generation is gone; close its sockets, unless it held the
    /// only ones (then they wait, with their queue, for the next generation).
    func releaseSockets(of number: Int) {
        if let health = healthSockets.removeValue(forKey: number) { close(health.fd) }
        guard configuration.handover, let set = generationSockets.removeValue(forKey: number) else { return }
        if !anotherDoorIsOpen(besides: number) {
            spareSockets = set
            return
        }
        for l in set where l.isTCP {
            Listeners.shutDown(l)
            close(l.fd)
            // The first generation's set is the one bound at start: forget the numbers.
            for i in listeners.indices where listeners[i].fd == l.fd { listeners[i].fd = -1 }
        }
    }

    /// Releases every file and socket this supervisor created. Control
    /// connections stay open for the final answer to `stop`.
    func cleanUp() {
        for set in Array(generationSockets.values) + [spareSockets ?? []] {
            for l in set where l.isTCP && !listeners.contains(where: { $0.fd == l.fd }) { close(l.fd) }
        }
        generationSockets = [:]
        spareSockets = nil
        for h in healthSockets.values { close(h.fd) }
        healthSockets = [:]
        for p in probes.values { close(p.fd) }
        probes = [:]
        Listeners.release(listeners)
        listeners = []
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
        let fd = baton_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            Log.warning("cannot reopen log file \(path): \(Sys.describe(errno: errno))")
            return
        }
        dup2(fd, 1)
        dup2(fd, 2)
        close(fd)
        Log.line("received SIGUSR1: reopened log file \(path)")
    }
}
