import BatonControl
import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// An upgrade whose check passed, waiting for the machine to be quiet.
struct PendingUpgrade {
    var id: RequestID
    var binary: String
    var configuration: RunConfiguration
    var listeners: ListenerChange
}

/// What a re-exec changes in the listeners: addresses bound already (each
/// with how generations get it) and listeners to retire.
struct ListenerChange {
    var added: [(listener: Listener, mode: ListenerMode)] = []
    var removed: [Int] = []
}

// Re-exec in place: the supervisor checks the new program, waits for the
// machine to be quiet, writes its state to a memfd, clears close-on-exec on
// what must survive (listeners, notify and control sockets, the pid file's
// lock, waiting clients) and execs: same pid, so the generations stay its
// children. The new program (`__takeover`) reads the state back and goes on.

/// The variables a re-exec passes between the two programs.
enum ReexecVariable: String {
    /// Names the descriptor that holds the state.
    case state = "BATON_STATE_FD"
    /// Names a descriptor of the previous program, to go back to.
    case previousProgram = "BATON_PREVIOUS_PROGRAM_FD"
    /// Set when the previous program runs again because the new one could not take over.
    case takeOverError = "BATON_TAKEOVER_ERROR"
    /// Set (by a test's wrapper of the new binary) to make the take-over fail with this message.
    case failTakeOver = "BATON_TEST_FAIL_TAKEOVER"
    /// The state format version the check mode must read.
    case stateVersion = "BATON_STATE_VERSION"

    /// What one program passes to the next: cleared from an environment before it is set anew.
    static let passed: Set<String> = Set([state, previousProgram, takeOverError, stateVersion].map(\.rawValue))

    /// Its value in this process's environment.
    var value: String? { Sys.getenv(rawValue) }
    /// `NAME=value`, for an environment.
    func setting(_ value: some CustomStringConvertible) -> String { "\(rawValue)=\(value)" }
    /// Removes it from this process's environment.
    func unset() { unsetenv(rawValue) }
}

extension Supervisor {
    /// The path the running program was started from, as it stands on disk now.
    static func runningBinaryPath() -> String? {
        guard var path = Sys.readLink("/proc/self/exe") else { return nil }
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    /// The running program's file as `device:inode` (it may be deleted or
    /// replaced on disk by now).
    static func runningBinaryID() -> String? {
        var st = stat()
        guard stat("/proc/self/exe", &st) == 0 else { return nil }
        return "\(st.st_dev):\(st.st_ino)"
    }

    // MARK: - The request

    /// `upgrade`: checks what can change live, runs the new program's check
    /// mode, then asks the machine for the re-exec.
    func upgradeRequested(binary: String?, configuration json: JSON?, from c: ControlConnection) {
        guard pendingUpgrade == nil, machine.reexecPending == nil else {
            return finish(c, ControlResult(.busy, "re-exec refused: another re-exec is under way; try again once it finished"))
        }
        guard let program = binary ?? Self.runningBinaryPath() else {
            return finish(c, ControlResult(.upgradeFailed, "cannot tell which program runs (/proc/self/exe); give the binary"))
        }
        var next = configuration
        var change = ListenerChange()
        if let json {
            do throws(BatonError) {
                next = try RunConfiguration(json: json)
            } catch {
                return finish(c, ControlResult(.usage, "the new configuration: \(error.message); nothing changed"))
            }
            next.pidFile = configuration.pidFile
            next.controlPath = configuration.controlPath
            next.logFile = configuration.logFile
            if let problem = Self.unchangeable(from: configuration, to: next) {
                return finish(c, ControlResult(.usage, "\(problem); nothing changed"))
            }
            do throws(BatonError) {
                change = try planListeners(to: next)
            } catch {
                return finish(c, ControlResult(error.code, "\(error.message); nothing changed"))
            }
        }
        next.startReportFD = nil
        switch Self.check(program, configuration: next) {
        case .failure(let e):
            Log.line("re-exec of \(program) refused: \(e.message)")
            Listeners.release(change.added.map(\.listener))
            return finish(c, ControlResult(.upgradeFailed, "\(e.message); nothing changed"))
        case .success(let version):
            Log.line("re-exec: \(program) (\(version)) passed its check")
        }
        let id = newRequestID()
        c.request = id
        requestConnections[id] = c.fd
        for (l, _) in change.added { Log.line("\(l.address): bound for the next generations (the re-exec adds it)") }
        pendingUpgrade = PendingUpgrade(id: id, binary: program, configuration: next, listeners: change)
        dispatch(.reexecRequested(id))
    }

    /// The listeners a new configuration adds (bound here and now, so that
    /// an address in use fails the request before anything changed) and
    /// those it takes out. A listener that stays keeps its sockets.
    func planListeners(to next: RunConfiguration) throws(BatonError) -> ListenerChange {
        guard next.listen.map(\.address) != configuration.listen.map(\.address) else { return ListenerChange() }
        if socketsFromSystemd {
            throw BatonError(
                .usage, "--listen cannot change while baton runs on sockets systemd passed; change the .socket unit and restart the service"
            )
        }
        func matches(_ spec: ListenSpec, _ l: Int) -> Bool {
            spec.address == templates[l].address || spec.address == templates[l].configured
        }
        // Each listener that stays answers one address of the new list, in order.
        var unmatched = templates.indices.filter { machine.retiredListeners[$0] == nil }
        var fresh: [ListenSpec] = []
        for spec in next.listen {
            if let i = unmatched.firstIndex(where: { matches(spec, $0) }) {
                unmatched.remove(at: i)
            } else {
                fresh.append(spec)
            }
        }
        var change = ListenerChange()
        change.removed = unmatched
        guard !fresh.isEmpty else { return change }
        for spec in fresh {
            if let l = templates.indices.first(where: { machine.isListenerOpen($0) && matches(spec, $0) }) {
                throw BatonError(
                    .busy,
                    "\(spec.address) was taken out and is still open for \(templates[l].address)'s last generation; try again once it exited"
                )
            }
        }
        let steered = next.listenMode == .steered
        var bound = try Listeners.bind(fresh, backlog: next.backlog, socketMode: next.socketMode, reusePort: steered)
        for i in bound.indices { bound[i].name = "listen\(templates.count + i)" }
        change.added = bound.map { ($0, Self.mode(of: $0, steered: steered)) }
        return change
    }

    /// The first option that cannot change while the supervisor runs, named.
    static func unchangeable(from old: RunConfiguration, to new: RunConfiguration) -> String? {
        if old.listenMode != new.listenMode {
            return "--listen-mode cannot change while baton runs (\(old.listenMode.rawValue), asked for \(new.listenMode.rawValue))"
        }
        if old.socketMode != new.socketMode { return "--socket-mode cannot change while baton runs" }
        if old.backlog != new.backlog { return "--backlog cannot change while baton runs" }
        if old.allowNoListeners != new.allowNoListeners { return "whether baton may run without a listener cannot change while it runs" }
        return nil
    }

    /// True when the app's command or environment differ: a restart must follow the re-exec.
    static func appChanged(from old: RunConfiguration, to new: RunConfiguration) -> Bool {
        old.command != new.command || old.env != new.env || old.exportedEnv != new.exportedEnv || old.dir != new.dir
            || old.envdir != new.envdir || old.envdirStyle != new.envdirStyle || old.user != new.user || old.group != new.group
    }

    /// Runs `program __check-reexec` with the configuration and the state
    /// version this program writes: it must start, read that version and
    /// accept the configuration. Returns its version line, or its message.
    static func check(_ program: String, configuration: RunConfiguration, timeout: Duration = .seconds(10)) -> Result<
        String, BatonError
    > {
        guard access(program, X_OK) == 0 else {
            return .failure(BatonError(.upgradeFailed, "cannot run \(program): \(Sys.describe(errno: errno))"))
        }
        let config: Int32
        do { config = try Daemon.memoryFile(configuration.json.text, name: "baton-configuration") } catch { return .failure(error) }
        defer { close(config) }
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return .failure(BatonError(.failure, "pipe: \(Sys.describe(errno: errno))")) }
        for fd in ends { _ = baton_fcntl_setfd(fd, FD_CLOEXEC) }
        let devnull = baton_open("/dev/null", O_RDONLY | O_CLOEXEC, 0)
        defer { if devnull >= 0 { close(devnull) } }
        let drop = ReexecVariable.passed.union([Daemon.configurationVariable])
        let env =
            Sys.environment().filter { !drop.contains(String($0.prefix { $0 != "=" })) }
            + ["\(Daemon.configurationVariable)=3", ReexecVariable.stateVersion.setting(HandOverState.version)]
        var pid: pid_t = 0
        let stdio: [Int32] = [devnull, ends[1], ends[1]]
        let fds: [Int32] = [config]
        let rc = withCStrings([program, "__check-reexec"]) { argv in
            withCStrings(env) { envp in
                fds.withUnsafeBufferPointer { f in
                    stdio.withUnsafeBufferPointer { s in baton_spawn(&pid, program, argv, envp, f.baseAddress, nil, 1, s.baseAddress, 1, 0)
                    }
                }
            }
        }
        close(ends[1])
        defer { close(ends[0]) }
        guard rc == 0 else { return .failure(BatonError(.upgradeFailed, "cannot run \(program): \(Sys.describe(errno: rc))")) }
        let output = Self.readToEnd(ends[0], limit: 8192, timeout: timeout)
        var status: Int32 = 0
        if output == nil {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = String(decoding: output ?? [], as: UTF8.self).trimmingSuffix(while: { $0 == "\n" || $0 == " " })
        guard output != nil, baton_wifexited(status) != 0, baton_wexitstatus(status) == 0 else {
            let why =
                output == nil
                ? "gave no answer within \(timeout.humanDescription)"
                : baton_wifexited(status) != 0
                    ? "exited with \(baton_wexitstatus(status))" : "was killed by signal \(baton_wtermsig(status))"
            return .failure(BatonError(.upgradeFailed, "the check of \(program) failed: it \(why)\(text.isEmpty ? "" : ": \(text)")"))
        }
        return .success(text)
    }

    /// Everything written to `fd` until its writers close it (at most `limit`
    /// bytes kept); nil when that takes longer than `timeout`.
    static func readToEnd(_ fd: Int32, limit: Int, timeout: Duration) -> [UInt8]? {
        let deadline = Sys.now() + timeout
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let now = Sys.now()
            guard now < deadline else { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(clamping: (deadline - now).milliseconds + 1))
            if ready < 0, errno == EINTR { continue }
            if ready <= 0 { return ready == 0 ? nil : out }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return out }
            if out.count < limit { out += buf[0..<min(n, limit - out.count)] }
        }
    }

    // MARK: - The exec

    /// Hands the state over and execs the new program. Returns only when that
    /// could not be done, after enqueueing `.reexecFailed`: nothing changed.
    func reexec(_ id: RequestID) {
        guard let upgrade = pendingUpgrade, upgrade.id == id else {
            return dispatch(.reexecFailed(id, reason: "no upgrade waits for it"))
        }
        guard let snapshot = machine.snapshot else {
            // Something came up between the decision and now: wait again.
            return dispatch(.reexecRequested(id))
        }
        pendingUpgrade = nil
        let state = HandOverState(
            machine: snapshot, shell: shellState(next: upgrade.configuration, request: id, listeners: upgrade.listeners))
        let added = upgrade.listeners.added.map(\.listener)
        let stateFD: Int32
        do { stateFD = try Daemon.memoryFile(state.json.text, name: "baton-state") } catch {
            Listeners.release(added)
            return dispatch(.reexecFailed(id, reason: error.message))
        }
        let previous = baton_open("/proc/self/exe", O_RDONLY, 0)
        let kept = descriptorsToKeep() + added.map(\.fd) + [stateFD] + (previous >= 0 ? [previous] : [])
        for fd in kept { _ = baton_fcntl_setfd(fd, 0) }

        var env =
            Sys.environment().filter { !ReexecVariable.passed.contains(String($0.prefix { $0 != "=" })) } + [
                ReexecVariable.state.setting(stateFD)
            ]
        if previous >= 0 { env.append(ReexecVariable.previousProgram.setting(previous)) }
        let argv0 = CommandLine.arguments.first ?? upgrade.binary
        Log.line("re-executing \(upgrade.binary) in place (pid \(getpid()), \(machine.generations.count) generation(s) kept)")
        let e = withCStrings([argv0, "__takeover"]) { argv in
            withCStrings(env) { envp in
                execve(upgrade.binary, argv, envp)
                return errno
            }
        }
        for fd in kept { _ = baton_fcntl_setfd(fd, FD_CLOEXEC) }
        close(stateFD)
        if previous >= 0 { close(previous) }
        Listeners.release(added)
        dispatch(.reexecFailed(id, reason: "cannot exec \(upgrade.binary): \(Sys.describe(errno: e))"))
    }

    /// Every descriptor the new program takes over.
    func descriptorsToKeep() -> [Int32] {
        var fds = held.values.map(\.fd) + [notifyFD]
        if controlFD >= 0 { fds.append(controlFD) }
        if let p = pidFile?.descriptor, p >= 0 { fds.append(p) }
        fds += connections.values.filter { $0.request != nil }.map(\.fd)
        if let report = startReport { fds.append(report.fd) }
        return fds.filter { $0 >= 0 }
    }

    /// The shell's part of the state.
    func shellState(next: RunConfiguration, request: RequestID, listeners change: ListenerChange = ListenerChange()) -> JSON {
        var o: [String: JSON] = [:]
        o["added_listeners"] = .array(
            change.added.map { l, mode in .object(["listener": l.stateJSON(id: nil), "mode": .string(mode.rawValue)]) })
        o["removed_listeners"] = .array(change.removed.map { JSON.int($0) })
        o["systemd_sockets"] = .bool(socketsFromSystemd)
        o["configuration"] = next.json
        o["previous_configuration"] = configuration.json
        o["held"] = .array(held.sorted { $0.key < $1.key }.map { $0.value.stateJSON(id: $0.key) })
        o["templates"] = .array(templates.map { $0.stateJSON(id: nil) })
        o["notify"] = .object(["fd": .int(notifyFD), "name": .string(notifyName)])
        o["started_at_ns"] = .string(String(startedAt.nanoseconds))
        o["started_wall"] = .int(startedWall)
        o["reexecutions"] = .int(reexecutions)
        if let reexecutedAt { o["reexecuted_at"] = .int(reexecutedAt) }
        o["next_request"] = .int(nextRequestID)
        o["upgrade_request"] = .int(request)
        var waiting: [JSON] = []
        for c in connections.values {
            guard let id = c.request else { continue }
            waiting.append(.object(["fd": .int(c.fd), "request": .int(id)]))
        }
        o["connections"] = .array(waiting)
        o["killed_strays"] = .array(killedStrays.sorted().map { JSON.int($0) })
        o["warnings"] = .array(warnings.map(JSON.string))
        o["version"] = .string(batonVersion)
        if controlFD >= 0, let file = controlFile {
            o["control"] = .object([
                "fd": .int(controlFD), "path": .string(file.path), "dev": .string(String(file.dev)), "ino": .string(String(file.ino)),
            ])
        }
        if let p = pidFile, p.descriptor >= 0 { o["pid_file"] = .object(["fd": .int(p.descriptor), "path": .string(p.path)]) }
        if let report = startReport { o["start_report"] = .object(["fd": .int(report.fd), "request": .int(report.id)]) }
        return .object(o)
    }
}

extension Listener {
    func stateJSON(id: SocketID?) -> JSON {
        var o: [String: JSON] = [
            "address": .string(address.notation), "fd": .int(fd), "name": .string(name), "env_key": .string(envKey),
            "reuse_port": .bool(reusePort),
        ]
        if let id { o["id"] = .int(id) }
        if let targetFD { o["target_fd"] = .int(targetFD) }
        if let temporaryPath { o["temporary_path"] = .string(temporaryPath) }
        if let configured { o["configured"] = .string(configured.notation) }
        if let f = createdFile {
            o["created_file"] = .object(["path": .string(f.path), "dev": .string(String(f.dev)), "ino": .string(String(f.ino))])
        }
        return .object(o)
    }

    init(stateJSON j: JSON) throws(BatonError) {
        guard let text = j["address"]?.string, let fd = j["fd"]?.int, let name = j["name"]?.string else {
            throw BatonError(.upgradeFailed, "the state is malformed: a listener")
        }
        var created: (path: String, dev: UInt64, ino: UInt64)?
        if let f = j["created_file"], let path = f["path"]?.string, let dev = f["dev"]?.string.flatMap({ UInt64($0) }),
            let ino = f["ino"]?.string.flatMap({ UInt64($0) })
        {
            created = (path, dev, ino)
        }
        self.init(address: try ListenAddress(parsing: text), fd: Int32(fd), name: name, createdFile: created)
        envKey = j["env_key"]?.string ?? ""
        targetFD = j["target_fd"]?.int.map(Int32.init)
        reusePort = j["reuse_port"]?.bool ?? false
        temporaryPath = j["temporary_path"]?.string
        configured = try j["configured"]?.string.map { (t: String) throws(BatonError) in try ListenAddress(parsing: t) }
    }
}
