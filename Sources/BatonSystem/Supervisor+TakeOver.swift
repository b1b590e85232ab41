import BatonControl
import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// The shell's part of a handed-over state, read back.
struct TakeOverShell {
    var configuration: RunConfiguration
    var previousConfiguration: RunConfiguration
    var held: [SocketID: Listener] = [:]
    var templates: [Listener] = []
    var notifyFD: Int32
    var notifyName: String
    var control: (fd: Int32, path: String, dev: UInt64, ino: UInt64)?
    var pidFile: (fd: Int32, path: String)?
    var startReport: (id: RequestID, fd: Int32)?
    var connections: [(fd: Int32, request: RequestID)] = []
    var startedAt: Instant
    var startedWall: Int
    var reexecutions: Int
    var reexecutedAt: Int?
    var nextRequest: RequestID
    var upgradeRequest: RequestID
    var killedStrays: Set<Int32>
    var warnings: [String]
    var previousVersion: String
    var listenerChange = ListenerChange()
    var socketsFromSystemd: Bool

    init(json j: JSON) throws(BatonError) {
        func bad(_ what: String) -> BatonError { BatonError(.upgradeFailed, "the state is malformed: \(what)") }
        guard let c = j["configuration"], let p = j["previous_configuration"] else { throw bad("no configuration") }
        configuration = try RunConfiguration(json: c)
        previousConfiguration = try RunConfiguration(json: p)
        for item in j["held"]?.array ?? [] {
            guard let id = item["id"]?.int else { throw bad("a socket without an id") }
            held[id] = try Listener(stateJSON: item)
        }
        for item in j["templates"]?.array ?? [] { templates.append(try Listener(stateJSON: item)) }
        guard let nfd = j["notify"]?["fd"]?.int, let name = j["notify"]?["name"]?.string else { throw bad("no notify socket") }
        notifyFD = Int32(nfd)
        notifyName = name
        if let o = j["control"], let fd = o["fd"]?.int, let path = o["path"]?.string, let dev = o["dev"]?.string.flatMap({ UInt64($0) }),
            let ino = o["ino"]?.string.flatMap({ UInt64($0) })
        {
            control = (Int32(fd), path, dev, ino)
        }
        if let o = j["pid_file"], let fd = o["fd"]?.int, let path = o["path"]?.string { pidFile = (Int32(fd), path) }
        if let o = j["start_report"], let fd = o["fd"]?.int, let id = o["request"]?.int { startReport = (id, Int32(fd)) }
        for o in j["connections"]?.array ?? [] {
            guard let fd = o["fd"]?.int, let id = o["request"]?.int else { throw bad("a connection") }
            connections.append((Int32(fd), id))
        }
        guard let started = j["started_at_ns"]?.string.flatMap({ UInt64($0) }), let next = j["next_request"]?.int,
            let upgrade = j["upgrade_request"]?.int
        else { throw bad("no counters") }
        startedAt = Instant(nanoseconds: started)
        startedWall = j["started_wall"]?.int ?? Sys.wallClockSeconds()
        reexecutions = j["reexecutions"]?.int ?? 0
        reexecutedAt = j["reexecuted_at"]?.int
        nextRequest = next
        upgradeRequest = upgrade
        killedStrays = Set((j["killed_strays"]?.array ?? []).compactMap { $0.int.map(Int32.init) })
        warnings = (j["warnings"]?.array ?? []).compactMap(\.string)
        previousVersion = j["version"]?.string ?? "?"
        socketsFromSystemd = j["systemd_sockets"]?.bool ?? false
        for item in j["added_listeners"]?.array ?? [] {
            guard let l = item["listener"], let mode = item["mode"]?.string.flatMap(ListenerMode.init(rawValue:)) else {
                throw bad("an added listener")
            }
            listenerChange.added.append((try Listener(stateJSON: l), mode))
        }
        listenerChange.removed = (j["removed_listeners"]?.array ?? []).compactMap(\.int)
    }
}

extension Daemon {
    /// `__check-reexec`: run by a supervisor before it execs this program.
    /// Succeeds (printing the version) when this program reads the state
    /// version the supervisor writes and accepts the configuration.
    static func checkReexec(program: String) -> Never {
        func fail(_ message: String, _ code: Int32) -> Never {
            Sys.writeAll(2, "\(program) \(batonVersion): \(message)\n".utf8)
            exit(code)
        }
        let version = ReexecVariable.stateVersion.value.flatMap { Int($0) }
        guard version == HandOverState.version else {
            fail(
                "cannot take over: it reads state format version \(HandOverState.version), the running supervisor writes \(version.map(String.init) ?? "none")",
                BatonError.Code.upgradeFailed.exitCode)
        }
        guard let fd = Sys.getenv(configurationVariable).flatMap({ Int32($0) }), let bytes = Sys.readAll(fd, limit: 16 << 20),
            let json = JSON(parsing: bytes)
        else { fail("__check-reexec: no configuration on \(configurationVariable)", 2) }
        do throws(BatonError) {
            _ = try Supervisor(configuration: try RunConfiguration(json: json))
        } catch {
            fail("refuses the options: \(error.message)", error.exitCode)
        }
        Sys.writeAll(1, "\(program) \(batonVersion)\n".utf8)
        exit(0)
    }

    /// `__takeover`: the program a supervisor exec'd reads the state and goes
    /// on where the previous one was. One that cannot goes back to the
    /// previous program (which then reports the failure), or, failing that,
    /// holds on to the sockets and children.
    static func takeOver(program: String) -> Never {
        Log.setProgram(program)
        let stateFD = ReexecVariable.state.value.flatMap { Int32($0) }
        let previous = ReexecVariable.previousProgram.value.flatMap { Int32($0) }
        let earlierError = ReexecVariable.takeOverError.value
        for name in ReexecVariable.passed { unsetenv(name) }
        if let previous { _ = baton_fcntl_setfd(previous, FD_CLOEXEC) }
        if let stateFD { _ = baton_fcntl_setfd(stateFD, FD_CLOEXEC) }

        func fallBack(_ message: String) -> Never {
            Log.line("error: cannot take the supervisor's state over: \(message)")
            if earlierError == nil, let previous, let stateFD, lseek(stateFD, 0, SEEK_SET) == 0 {
                Log.line("going back to the previous program; it keeps the sockets and the generations")
                _ = baton_fcntl_setfd(stateFD, 0)
                let env =
                    Sys.environment() + [
                        ReexecVariable.state.setting(stateFD),
                        ReexecVariable.takeOverError.setting(message.split(separator: "\n").joined(separator: " ")),
                    ]
                let e = withCStrings([CommandLine.arguments.first ?? program, "__takeover"]) { argv in
                    withCStrings(env) { envp in
                        fexecve(previous, argv, envp)
                        return errno
                    }
                }
                Log.line("error: cannot exec the previous program: \(Sys.describe(errno: e))")
            }
            Log.line("error: holding the sockets and the generations; stop this supervisor with SIGTERM, then start it again")
            holdOn()
        }

        guard let stateFD, let bytes = Sys.readAll(stateFD, limit: 64 << 20), let json = JSON(parsing: bytes) else {
            fallBack("no readable state on \(ReexecVariable.state.rawValue)")
        }
        // Fault injection for the tests: a take-over that fails after the exec
        // (the kernel offers no way to make a real one fail on demand).
        if let injected = ReexecVariable.failTakeOver.value {
            ReexecVariable.failTakeOver.unset()
            if earlierError == nil { fallBack(injected) }
        }
        do throws(BatonError) {
            let state = try HandOverState(json: json)
            var shell = try TakeOverShell(json: state.shell)
            if earlierError != nil { shell.configuration = shell.previousConfiguration }
            let supervisor = try Supervisor(configuration: shell.configuration)
            close(stateFD)
            if let previous { close(previous) }
            exit(try supervisor.resume(state.machine, shell, failedUpgrade: earlierError))
        } catch {
            fallBack(error.message)
        }
    }

    /// The last resort of a program that knows nothing of what it holds:
    /// keep every descriptor, reap children, until a signal ends it.
    static func holdOn() -> Never {
        _ = baton_unblock_all_signals()
        while true {
            var status: Int32 = 0
            // No child left: sleep until a signal (no wake-up while idle).
            if waitpid(-1, &status, 0) < 0, errno == ECHILD { pause() }
        }
    }
}

extension Supervisor {
    /// Goes on from a handed-over state: adopts the descriptors, restores the
    /// machine, answers the upgrade (or restarts first when the app's
    /// command or environment changed) and supervises until stopped.
    func resume(_ snapshot: SupervisorStateMachine.Snapshot, _ shell: TakeOverShell, failedUpgrade: String?) throws(BatonError) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let signals: [Int32] = [SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD]
        signalFD = signals.withUnsafeBufferPointer { baton_signalfd($0.baseAddress, Int32($0.count)) }
        guard signalFD >= 0 else { throw BatonError(.failure, "signalfd: \(Sys.describe(errno: errno))", errno: errno) }
        _ = baton_set_subreaper()
        defer { cleanUp() }

        startedAt = shell.startedAt
        startedWall = shell.startedWall
        reexecutions = shell.reexecutions + (failedUpgrade == nil ? 1 : 0)
        reexecutedAt = failedUpgrade == nil ? Sys.wallClockSeconds() : shell.reexecutedAt
        warnings = shell.warnings
        if let failedUpgrade {
            warnings.append("an upgrade failed after its exec: \(failedUpgrade); the previous program (\(shell.previousVersion)) went on")
        }
        if let p = shell.pidFile { pidFile = PidFile(adopting: p.path, fd: p.fd) }
        templates = shell.templates
        socketsFromSystemd = shell.socketsFromSystemd
        held = shell.held
        for l in held.values { _ = baton_fcntl_setfd(l.fd, FD_CLOEXEC) }
        notifyFD = shell.notifyFD
        notifyName = shell.notifyName
        _ = baton_fcntl_setfd(notifyFD, FD_CLOEXEC)
        if let c = shell.control {
            controlFD = c.fd
            controlFile = (c.path, c.dev, c.ino)
            _ = baton_fcntl_setfd(controlFD, FD_CLOEXEC)
        }
        let policy = try openEventLoop()
        machine = SupervisorStateMachine(restoring: snapshot, policy: policy)
        for (id, record) in machine.sockets where record.listener != nil && held[id] != nil { watchHangUps(of: id) }
        for (fd, id) in shell.connections {
            _ = baton_fcntl_setfd(fd, FD_CLOEXEC)
            let c = ControlConnection(fd: fd)
            c.request = id
            connections[fd] = c
            requestConnections[id] = fd
            baton_epoll_add(epfd, fd, EpollToken.connection(fd).rawValue)
        }
        if let report = shell.startReport {
            _ = baton_fcntl_setfd(report.fd, FD_CLOEXEC)
            startReport = report
        }
        nextRequestID = max(nextRequestID, shell.nextRequest)
        killedStrays = shell.killedStrays

        if failedUpgrade != nil {
            Listeners.release(shell.listenerChange.added.map(\.listener))
        } else {
            applyListenerChange(shell.listenerChange)
        }
        let listenersChanged =
            !shell.listenerChange.added.isEmpty || !shell.listenerChange.removed.isEmpty
            || shell.previousConfiguration.listen != configuration.listen
        let generations = machine.generations.map { "\($0.number) (pid \($0.pid), \($0.stateName))" }.joined(separator: ", ")
        let id = shell.upgradeRequest
        if let failedUpgrade {
            Log.line(
                "error: the upgrade failed after its exec: \(failedUpgrade); baton \(batonVersion) goes on with generation(s) \(generations)"
            )
            send(Answer(.upgradeFailed, "the new program could not take over: \(failedUpgrade); the previous one goes on"), to: id)
            if let s = machine.serving { systemd.send("READY=1\nSTATUS=serving generation \(s.number) (pid \(s.pid))") }
            dispatch(.reexecuted)
        } else if listenersChanged || Self.appChanged(from: shell.previousConfiguration, to: configuration) {
            Log.line("re-executed in place: baton \(batonVersion) (was \(shell.previousVersion)) took over generation(s) \(generations)")
            let what = listenersChanged ? "listeners" : "command or environment"
            Log.line("the app's \(what) changed: restarting; command: \(configuration.command.joined(separator: " "))")
            if let fd = requestConnections[id], let c = connections[fd] {
                let note =
                    "baton \(batonVersion) took over in place (pid \(getpid()), re-exec \(reexecutions)); restarting with the new \(listenersChanged ? "listeners" : "command")"
                send(c, .progress(ControlProgress(kind: "reexec", message: note)))
            }
            dispatch(.restartRequested(RestartRequest(id: id)))
            dispatch(.reexecuted)
        } else {
            Log.line("re-executed in place: baton \(batonVersion) (was \(shell.previousVersion)) took over generation(s) \(generations)")
            if let s = machine.serving { systemd.send("READY=1\nSTATUS=serving generation \(s.number) (pid \(s.pid))") }
            send(Answer(nil, "baton \(batonVersion) took over in place (pid \(getpid()), re-exec \(reexecutions))"), to: id)
            dispatch(.reexecuted)
        }
        return loop()
    }
}
