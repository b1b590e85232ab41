// Probation: a generation that took over serves every new connection, while
// the ones it replaced wait unsignalled in reserve. If it exits, stops
// accepting (its queue grows and nothing is taken from it) or fails its
// health probe before the probation ends, new connections go back to the
// reserve at once, it is stopped, and the attempt fails. Otherwise the reserve
// is retired and the attempt succeeds.
//
// Crash loops: generations of one release that die soon after getting ready,
// several in a row, make the release crash-looping; a crash-looping release
// is replaced by the last release that served stably, where there is one.
extension SupervisorStateMachine {
    /// The generation at `i` took over: its probation begins.
    mutating func beginProbation(at i: Int, reserve: [Int], now: Instant, _ out: inout [SupervisorAction]) {
        let g = generations[i]
        var p = Probation(
            generation: g.number, reserve: reserve, startedAt: now, until: now + policy.probation, lastProgress: now)
        if !provableSockets(of: g.number).isEmpty { p.nextReading = now + policy.probationReadInterval }
        probation = p
        if let health = policy.health {
            // Probed through the probation too, however often it is probed later.
            generations[i].phase = .serving(probe: .due(now + (health.every ?? health.interval)), failures: 0)
        }
        out.append(.report(Reports.serving(g, retiring: [])))
        out.append(.report(Reports.onProbation(g, for: policy.probation, reserve: reserve)))
    }

    /// Probation deadlines: a queue reading, or its end.
    mutating func probationTick(now: Instant, _ out: inout [SupervisorAction]) {
        guard var p = probation else { return }
        if p.until <= now {
            probationPassed(now: now, &out)
            return
        }
        if let next = p.nextReading, next <= now {
            p.nextReading = nil
            probation = p
            out.append(.measureQueues(generation: p.generation, sockets: provableSockets(of: p.generation)))
        }
    }

    /// A reading of the queues of the generation on probation.
    mutating func probationReading(length: Int, now: Instant, _ out: inout [SupervisorAction]) {
        guard var p = probation else { return }
        if length == 0 || length < p.lastLength {
            p.lastProgress = now
            p.grew = false
        } else if length > p.lastLength {
            p.grew = true
        }
        p.lastLength = length
        p.nextReading = now + policy.probationReadInterval
        probation = p
        if length > 0, p.grew, now - p.lastProgress >= policy.stallTimeout {
            probationFailed(
                reason: "stopped accepting: its queue grew to \(length) connection(s) and none was taken for "
                    + "\((now - p.lastProgress).humanDescription), during its probation", exited: nil, now: now, &out)
        }
    }

    /// The probation ended with the generation serving: the reserve is retired, the attempt succeeds.
    mutating func probationPassed(now: Instant, _ out: inout [SupervisorAction]) {
        guard let p = probation, let i = generations.firstIndex(where: { $0.number == p.generation }) else {
            probation = nil
            return
        }
        probation = nil
        let g = generations[i]
        let reserve = p.reserve.filter { generation($0)?.isServing == true }
        out.append(.report(Reports.probationPassed(g, after: now - p.startedAt, retiring: reserve)))
        retire(reserve, steeredAway: p.startedAt, now: now, &out)
        if let current = attempt, current.generation == g.number {
            finishAttempt(
                current,
                .succeeded(generation: g.number, pid: g.pid, readyAfter: (g.readyAt ?? now) - g.spawnedAt, retired: reserve),
                now: now, &out)
        }
    }

    /// The generation on probation failed: new connections go back to the
    /// newest generation in reserve, it is stopped (unless it `exited`),
    /// and its attempt fails.
    mutating func probationFailed(
        reason: String, exited: Generation?, stranded: [SocketID] = [], now: Instant, _ out: inout [SupervisorAction]
    ) {
        guard let p = probation else { return }
        probation = nil
        let failed = exited ?? generation(p.generation)
        var reserve: Generation?
        if let back = p.reserve.last(where: { generation($0)?.isServing == true }), let b = generation(back) {
            steer(to: back, &out)
            out.append(.report(Reports.steeredBack(b, from: p.generation)))
            reserve = b
        }
        if exited == nil, let i = generations.firstIndex(where: { $0.number == p.generation }) {
            let g = generations[i]
            out.append(.report(Reports.failed(g, reason)))
            if case .serving(.running?, _) = g.phase { out.append(.abortProbe(generation: g.number)) }
            if let reserve {
                // What waits in its queue is answered by a rescuer of the old
                // release, which shares its sockets until it is gone.
                let own = ownSockets(of: g.number)
                beginTeardown(at: i, .failed, now: now, &out)
                beginRescue(of: g.number, sockets: own, release: reserve.releaseDir, now: now, &out)
            } else {
                // Out of the group: with tcp_migrate_req=1 what waits in its
                // queue moves to the socket the program points at; otherwise it is reset.
                let shut = shutDownOwnSockets(of: g.number)
                if !shut.isEmpty {
                    out.append(.shutDown(shut))
                    for l in groups.keys.sorted() { attachIfNeeded(l, &out) }
                }
                beginTeardown(at: i, .failed, now: now, &out)
            }
        } else if let reserve {
            beginRescue(of: p.generation, sockets: stranded, release: reserve.releaseDir, now: now, &out)
        }
        // A respawn that dies on probation is one more death of its release;
        // a restart's is a refused release, told by the attempt's failure.
        if let failed, attempt?.reason == .respawn { countDeath(failed, reason: reason, now: now, &out) }
        attemptFailed(p.generation, reason: reason, now: now, &out)
    }

    /// A generation that failed on probation may have left connections in
    /// the queues of its own sockets (those that arrived after its last
    /// accept, before new ones went back to the reserve). A generation of
    /// the reserve's release takes those sockets (shared with the failed one
    /// while it is being stopped), answers what waits there, and is retired
    /// once they are empty: nothing is reset.
    mutating func beginRescue(of failed: Int, sockets stranded: [SocketID], release: String, now: Instant, _ out: inout [SupervisorAction])
    {
        // Its own sockets: spares once it exited, or still its while it is stopped.
        let own = stranded.filter { sockets[$0] != nil && (sockets[$0]?.owner == nil || sockets[$0]?.owner == failed) }
        guard phase == .running, !own.isEmpty else { return }
        lastGeneration += 1
        let number = lastGeneration
        rescuers.insert(number)
        for id in own { sockets[id]?.owner = number }
        var open: [SocketOpening] = []
        if policy.health != nil {
            let id = newSocket(listener: nil, owner: number)
            open.append(SocketOpening(id: id, listener: nil, generation: number))
        }
        out.append(.report(Reports.rescuing(number, from: failed, release: release)))
        out.append(.measureQueues(generation: number, sockets: own))
        out.append(.spawn(generation: number, sockets: socketSet(of: number), open: open, release: release))
    }

    /// A generation in reserve exited during a probation: nothing to fall back to.
    mutating func reserveExited(_ number: Int, _ out: inout [SupervisorAction]) {
        guard var p = probation, p.reserve.contains(number) else { return }
        p.reserve.removeAll { $0 == number }
        probation = p
    }

    // MARK: - Crash loops

    /// The release of `g` served stably: a restart replaced it, or it served long enough.
    mutating func noteServedStably(_ g: Generation) {
        if let loop = crashLoop, loop.releaseDir == g.releaseDir, loop.deaths > 0, loop.rolledBackTo == nil {
            // It died soon after getting ready, in this run of deaths: not stable.
            return
        }
        stableRelease = g.releaseDir
    }

    /// `g` died soon after getting ready (or, started by a respawn, before):
    /// one more death in a row for its release.
    mutating func countDeath(_ g: Generation, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        if let ready = g.readyAt, now - ready >= policy.crashLoopWindow {
            noteServedStably(g)
            if crashLoop?.releaseDir == g.releaseDir { crashLoop = nil }
            return
        }
        var loop =
            crashLoop.flatMap { $0.releaseDir == g.releaseDir && $0.rolledBackTo == nil ? $0 : nil }
            ?? CrashLoop(releaseDir: g.releaseDir, deaths: 0, lastGeneration: g.number, lastReason: reason, lastAt: now)
        loop.deaths += 1
        loop.lastGeneration = g.number
        loop.lastReason = reason
        loop.lastAt = now
        crashLoop = loop
        if loop.deaths == policy.crashLoopDeaths {
            out.append(.report(Reports.crashLooping(loop, window: policy.crashLoopWindow)))
        }
    }

    /// True while the release that runs is crash-looping (or was rolled back).
    public var isCrashLooping: Bool {
        guard let loop = crashLoop else { return false }
        return loop.deaths >= policy.crashLoopDeaths
    }

    /// The crash loop `status` reports at `now`: none once the looping
    /// release has served `crashLoopWindow` since it last died.
    public func crashLoop(at now: Instant) -> CrashLoop? {
        guard isCrashLooping, let loop = crashLoop else { return nil }
        if loop.rolledBackTo == nil, let s = serving, s.releaseDir == loop.releaseDir, let since = s.servingSince,
            since > loop.lastAt, now - since >= policy.crashLoopWindow
        {
            return nil
        }
        return loop
    }

    /// Before a respawn: a crash-looping release is replaced by the last
    /// release that served stably, if there is another one.
    mutating func rollBackIfLooping(_ out: inout [SupervisorAction]) {
        guard isCrashLooping, var loop = crashLoop, loop.rolledBackTo == nil, let stable = stableRelease,
            stable != loop.releaseDir
        else { return }
        loop.rolledBackTo = stable
        crashLoop = loop
        pinnedRelease = stable
        out.append(.report(Reports.rollingBack(from: loop.releaseDir, to: stable)))
    }
}
