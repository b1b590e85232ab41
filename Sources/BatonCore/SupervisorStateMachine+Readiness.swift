import BatonProtocol

// A generation coming up: spawned, ready (READY=1, alive, probed), settled,
// then taking over from the one that served.
extension SupervisorStateMachine {
    mutating func spawned(_ number: Int, pid: Int32, releaseDir: String, now: Instant, _ out: inout [SupervisorAction]) {
        var aliveAt: Instant?
        switch policy.readiness {
        case .notify: break
        case .alive(let d), .auto(let d): aliveAt = now + d
        }
        for (id, record) in sockets where record.owner == number { sockets[id]?.isOpen = true }
        let health = sockets.first { $0.value.owner == number && $0.value.listener == nil }?.key
        let g = Generation(
            number: number, pid: pid, releaseDir: releaseDir, spawnedAt: now,
            phase: .starting(readyBy: now + policy.readyTimeout, aliveAt: aliveAt),
            sockets: socketSet(of: number), healthSocket: health)
        generations.append(g)
        out.append(.report(Reports.spawned(g)))
        if phase != .running || attempt?.generation != number {
            // A stop came in between: this one goes too.
            beginTeardown(at: generations.count - 1, .stop, now: now, &out)
        }
    }

    mutating func spawnFailed(_ number: Int, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        // The shell closed the sockets it opened for this spawn.
        for (id, record) in sockets where record.owner == number && !record.isOpen { forgetSocket(id) }
        releaseSockets(of: number, &out)
        out.append(.report(Reports.spawnFailed(number, reason)))
        attemptFailed(number, reason: "could not be spawned: \(reason)", now: now, &out)
    }

    mutating func notified(pid: Int32, message: NotifyMessage, now: Instant, _ out: inout [SupervisorAction]) {
        guard pid > 0, let i = generations.firstIndex(where: { $0.pid == pid }) else {
            out.append(.report(Reports.ignoredNotification(from: pid)))
            return
        }
        let g = generations[i]
        if !message.isWellFormed { out.append(.report(Reports.malformedNotification(g))) }
        if let status = message.status {
            generations[i].status = status
            out.append(.report(Reports.notified(g, "STATUS=\(status)")))
        }
        if let errno = message.errno { out.append(.report(Reports.notified(g, "reported ERRNO=\(errno)"))) }
        if message.stopping { out.append(.report(Reports.notified(g, "reported STOPPING=1"))) }
        if message.ready, case .starting = g.phase, policy.readiness.acceptsReadyMessage {
            becameReady(at: i, via: "READY=1", now: now, &out)
        }
    }

    /// It says it is ready: probed first if there is a health check.
    mutating func becameReady(at i: Int, via: String, now: Instant, _ out: inout [SupervisorAction]) {
        guard case .starting(let readyBy, _) = generations[i].phase else { return }
        if let health = policy.health {
            generations[i].phase = .probing(readyBy: readyBy, probe: .due(now))
            out.append(.report(Reports.probing(generations[i], via: via, path: health.path, now: now)))
            return
        }
        markReady(at: i, via: via, now: now, &out)
    }

    /// Ready: reported, then settling (or serving at once).
    mutating func markReady(at i: Int, via: String, now: Instant, _ out: inout [SupervisorAction]) {
        generations[i].readyAt = now
        out.append(.report(Reports.ready(generations[i], via: via, now: now)))
        if policy.settle <= .zero {
            promote(at: i, now: now, &out)
        } else {
            generations[i].phase = .settling(until: now + policy.settle)
        }
    }

    /// It takes over: new connections are steered to it, the generations
    /// that served before are retired.
    mutating func promote(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        let probe = policy.health?.every.map { ProbeSchedule.due(now + $0) }
        generations[i].phase = .serving(probe: probe, failures: 0)
        generations[i].servingSince = now
        let g = generations[i]
        let retiring = generations.indices.filter { generations[$0].isServing && $0 != i }
        // Steered first, so that "serving" (in the log, in `restart`'s
        // progress, in its answer) means new connections reach it already.
        if !ownSockets(of: g.number).isEmpty {
            steer(to: g.number, &out)
            if !retiring.isEmpty { out.append(.report(Reports.steered(g))) }
        }
        out.append(.report(Reports.serving(g, retiring: retiring.map { generations[$0].number })))
        for j in retiring { beginTeardown(at: j, .retire, now: now, &out) }
        if let current = attempt, current.generation == g.number {
            finishAttempt(
                current,
                .succeeded(
                    generation: g.number, pid: g.pid, readyAfter: (g.readyAt ?? now) - g.spawnedAt,
                    retired: retiring.map { generations[$0].number }),
                now: now, &out)
        }
    }

    /// It did not get ready in time: stopped, and the attempt failed.
    mutating func failBeforeReady(at i: Int, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        let g = generations[i]
        out.append(.report(Reports.failed(g, reason)))
        beginTeardown(at: i, .failed, now: now, &out)
        attemptFailed(g.number, reason: reason, now: now, &out)
    }
}
