import BatonCore
import CBatonShims
import Glibc

/// A restart that a change of watched files asked for: what changed, when.
struct WatchedRestart {
    var trigger: String
    var changes: Int
    var askedAt: Instant
    /// The first change it gathers.
    var changedAt: Instant
}

// Development mode (`baton run --watch`): inotify events feed the pure
// `WatchLoop`, which decides when to build and when to restart; a restart
// is an ordinary graceful one, with every readiness level, so a broken save
// leaves the running generation serving.
extension Supervisor {
    /// Starts watching, if `--watch` was given.
    func openWatcher() throws(BatonError) {
        guard !configuration.watch.isEmpty else { return }
        let w = try Watcher(paths: configuration.watch, ignoring: configuration.watchIgnore)
        watcher = w
        watchLoop = WatchLoop(debounce: configuration.watchDebounce, builds: configuration.build != nil)
        baton_epoll_add(epfd, w.fd, EpollToken.watch.rawValue)
        Log.line(
            "watching \(configuration.watch.joined(separator: ", ")) (\(w.count) director\(w.count == 1 ? "y" : "ies"), inotify)"
                + (configuration.build.map { "; each restart builds first: \($0)" } ?? ""))
    }

    /// Files changed.
    func handleWatchEvents() {
        guard let watcher else { return }
        for path in watcher.read() { carry(watchLoop?.changed(path, now: Sys.now()) ?? []) }
    }

    /// The watch loop's deadline passed.
    func watchTick() {
        carry(watchLoop?.tick(now: Sys.now()) ?? [])
    }

    private func carry(_ actions: [WatchLoop.Action]) {
        for action in actions {
            switch action {
            case .build(let trigger):
                startBuild(after: trigger)
            case .cancelBuild:
                cancelBuild()
            case .restart(let trigger, let changes, let since):
                let id = newRequestID()
                watchedRestarts[id] = WatchedRestart(trigger: trigger, changes: changes, askedAt: Sys.now(), changedAt: since)
                let more = changes > 1 ? " (and \(changes - 1) more change\(changes > 2 ? "s" : ""))" : ""
                Log.line("changed \(trigger)\(more): restarting")
                dispatch(.restartRequested(RestartRequest(id: id, waitsForDrain: false, endsProbation: true)))
            case .report(let text):
                Log.line(text)
            }
        }
    }

    /// Runs `--build` through `sh -c` in the release directory, in a
    /// process group of its own; its output goes where baton's goes.
    private func startBuild(after trigger: String) {
        guard let command = configuration.build else { return }
        let dir = configuration.dir.flatMap(Sys.realpath) ?? Sys.cwd()
        Log.line("changed \(trigger): building: \(command)")
        let devnull = baton_open("/dev/null", O_RDONLY | O_CLOEXEC, 0)
        defer { if devnull >= 0 { close(devnull) } }
        let argv = ["/bin/sh", "-c", "cd -- \"$1\" || exit 125; eval \"$2\"", "baton-build", dir, command]
        let stdio: [Int32] = [devnull, -1, -1]
        var pid: pid_t = 0
        let rc = withCStrings(argv) { a in
            withCStrings(Sys.environment()) { e in
                stdio.withUnsafeBufferPointer { s in baton_spawn(&pid, "/bin/sh", a, e, nil, nil, 0, s.baseAddress, 1, 0) }
            }
        }
        guard rc == 0 else {
            carry(watchLoop?.buildFinished(passed: false, detail: "cannot start /bin/sh: \(Sys.describe(errno: rc))") ?? [])
            return
        }
        build = (pid, Sys.now())
    }

    private func cancelBuild() {
        guard let b = build else { return }
        kill(-b.pid, SIGTERM)
        cancelledBuilds.insert(b.pid)
        build = nil
    }

    /// A child exited: true when it was a build (handled here).
    func buildExited(_ pid: Int32, _ status: ExitStatus) -> Bool {
        if cancelledBuilds.remove(pid) != nil { return true }
        guard let b = build, b.pid == pid else { return false }
        build = nil
        let took = (Sys.now() - b.startedAt).milliseconds
        switch status {
        case .exited(0):
            Log.line("the build passed in \(took) ms")
            carry(watchLoop?.buildFinished(passed: true, detail: "") ?? [])
        default:
            carry(watchLoop?.buildFinished(passed: false, detail: "it exited with \(status) after \(took) ms") ?? [])
        }
        return true
    }

    /// The outcome of a watched restart, in one line: true when `id` was one.
    func answeredWatchedRestart(_ id: RequestID, _ answer: Answer) -> Bool {
        guard let w = watchedRestarts.removeValue(forKey: id) else { return false }
        let now = Sys.now()
        if answer.code == nil, let g = answer.generation {
            Log.line(
                "changed \(w.trigger) → generation \(g) serving in \((now - w.askedAt).milliseconds) ms "
                    + "(\((now - w.changedAt).milliseconds) ms after the change)")
        } else {
            Log.line("✗ \(answer.message); not retried until the next change")
        }
        return true
    }

    /// Stops a build under way (the supervisor is exiting).
    func stopBuild() {
        if let b = build { kill(-b.pid, SIGTERM) }
        build = nil
    }
}
