import BatonProtocol

// A generation coming up: spawned, proven (a probe connection accepted on a
// socket of its own, READY=1 where the app sends it, or the clock where
// asked), probed (`--health`), settled, then taking over from the one that
// served, on probation.
extension SupervisorStateMachine {
    mutating func spawned(_ number: Int, pid: Int32, releaseDir: String, now: Instant, _ out: inout [SupervisorAction]) {
        var aliveAt: Instant?
        let proofSockets = policy.readiness.wantsProof ? provableSockets(of: number) : []
        switch policy.readiness {
        case .notify: break
        case .alive(let d): aliveAt = now + d
        case .auto(let d): if proofSockets.isEmpty { aliveAt = now + max(d, policy.minimumAlive) }
        }
        for (id, record) in sockets where record.owner == number { sockets[id]?.isOpen = true }
        let health = sockets.first { $0.value.owner == number && $0.value.listener == nil }?.key
        var g = Generation(
            number: number, pid: pid, releaseDir: releaseDir, spawnedAt: now,
            phase: .starting(readyBy: now + policy.readyTimeout, aliveAt: aliveAt),
            sockets: socketSet(of: number), healthSocket: health)
        g.needsProof = !proofSockets.isEmpty
        if policy.readiness.wantsProof { g.workersReadAt = now + policy.workerReadInterval }
        if policy.minimumAlive > .zero, policy.readiness.wantsProof { g.notBefore = now + policy.minimumAlive }
        generations.append(g)
        out.append(.report(Reports.spawned(g)))
        if phase != .running || (attempt?.generation != number && !rescuers.contains(number)) {
            // A stop came in between: this one goes too.
            beginTeardown(at: generations.count - 1, .stop, now: now, &out)
            return
        }
        // The proof connections go out at once: they wait in the queue
        // until the app takes them, so one each is enough.
        for s in proofSockets { connectProof(at: generations.count - 1, socket: s, &out) }
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
        guard message.ready, policy.readiness.acceptsReadyMessage else { return }
        appSendsReady = true
        guard case .starting = g.phase, !g.notified else { return }
        generations[i].notified = true
        if g.needsProof, g.proven == nil {
            out.append(.report(Reports.notified(g, "sent READY=1 after \((now - g.spawnedAt).humanDescription); waiting for it to accept")))
        }
        checkReady(at: i, now: now, &out)
    }

    /// Makes the generation at `i` ready when every condition of the policy holds.
    mutating func checkReady(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        guard case .starting(let readyBy, let aliveAt) = generations[i].phase else { return }
        let g = generations[i]
        let alive = aliveAt.map { $0 <= now } ?? false
        if let notBefore = g.notBefore, notBefore > now { return }
        var via: String?
        switch policy.readiness {
        case .alive:
            if alive { via = "alive for \((now - g.spawnedAt).humanDescription)" }
        case .notify:
            if g.notified, !g.needsProof || g.proven != nil { via = g.needsProof ? "READY=1, and \(g.proven!)" : "READY=1" }
        case .auto:
            if g.needsProof {
                if let proven = g.proven, g.notified || !appSendsReady { via = g.notified ? "READY=1, and \(proven)" : proven }
            } else if g.notified {
                via = "READY=1"
            } else if alive {
                via = "alive for \((now - g.spawnedAt).humanDescription); no socket of its own to prove it on"
            }
        }
        if let via {
            becameReady(at: i, via: via, now: now, &out)
        } else if alive {
            // The clock's part is done: no deadline left in the past.
            generations[i].phase = .starting(readyBy: readyBy, aliveAt: nil)
        }
    }

    /// What the generation still waits for, for a failure's message.
    func missing(_ g: Generation) -> String {
        var parts: [String] = []
        if policy.readiness.wantsProof, g.needsProof, g.proven == nil {
            parts.append("it never took a probe connection from its own socket (nothing accepted on it)")
        }
        let wantsReady: Bool
        switch policy.readiness {
        case .notify: wantsReady = true
        case .auto: wantsReady = g.needsProof && appSendsReady
        case .alive: wantsReady = false
        }
        if wantsReady, !g.notified { parts.append("it sent no READY=1") }
        return parts.joined(separator: ", and ")
    }

    /// It is ready: probed first if there is a health check.
    mutating func becameReady(at i: Int, via: String, now: Instant, _ out: inout [SupervisorAction]) {
        guard case .starting(let readyBy, _) = generations[i].phase else { return }
        generations[i].workersReadAt = nil
        if !generations[i].proof.isEmpty {
            generations[i].proof = [:]
            out.append(.dropProof(generation: generations[i].number))
        }
        if let health = policy.health {
            generations[i].phase = .probing(readyBy: readyBy, probe: .due(now))
            out.append(.report(Reports.probing(generations[i], via: via, path: health.path, now: now)))
            return
        }
        markReady(at: i, via: via, now: now, &out)
    }

    /// Ready: reported, then settling (or taking over at once). A rescuer
    /// is retired at once: it answers what waits on its sockets, no more.
    mutating func markReady(at i: Int, via: String, now: Instant, _ out: inout [SupervisorAction]) {
        generations[i].readyAt = now
        out.append(.report(Reports.ready(generations[i], via: via, now: now)))
        if rescuers.contains(generations[i].number) {
            beginTeardown(at: i, .retire, now: now, &out)
            return
        }
        if policy.settle <= .zero {
            promote(at: i, now: now, &out)
        } else {
            generations[i].phase = .settling(until: now + policy.settle)
        }
    }

    /// It takes over: new connections are steered to it. With a probation,
    /// the generations that served before wait in reserve and the attempt
    /// stays open; without, they are retired and the attempt succeeds.
    mutating func promote(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        let probe = policy.health?.every.map { ProbeSchedule.due(now + $0) }
        generations[i].phase = .serving(probe: probe, failures: 0)
        generations[i].servingSince = now
        generations[i].forgetStart()
        let g = generations[i]
        let replaced = generations.indices.filter { generations[$0].isServing && $0 != i }.map { generations[$0].number }
        // Steered first, so that "serving" (in the log, in `restart`'s
        // progress, in its answer) means new connections reach it already.
        if !ownSockets(of: g.number).isEmpty {
            steer(to: g.number, &out)
            if !replaced.isEmpty { out.append(.report(Reports.steered(g))) }
        }
        if policy.probation > .zero, let current = attempt, current.generation == g.number {
            beginProbation(at: i, reserve: replaced, now: now, &out)
            return
        }
        out.append(.report(Reports.serving(g, retiring: replaced)))
        retire(replaced, now: now, &out)
        if let current = attempt, current.generation == g.number {
            finishAttempt(
                current,
                .succeeded(generation: g.number, pid: g.pid, readyAfter: (g.readyAt ?? now) - g.spawnedAt, retired: replaced),
                now: now, &out)
        }
    }

    /// Retires the generations `numbers` (still serving): each served until a
    /// restart replaced it, so its release served stably.
    mutating func retire(_ numbers: [Int], steeredAway: Instant? = nil, now: Instant, _ out: inout [SupervisorAction]) {
        for n in numbers {
            guard let j = generations.firstIndex(where: { $0.number == n }), generations[j].isServing else { continue }
            noteServedStably(generations[j])
            beginTeardown(at: j, .retire, steeredAway: steeredAway, now: now, &out)
        }
    }

    /// It did not get ready in time: stopped, and the attempt failed.
    mutating func failBeforeReady(at i: Int, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        let g = generations[i]
        out.append(.report(Reports.failed(g, reason)))
        if !g.proof.isEmpty {
            generations[i].proof = [:]
            out.append(.dropProof(generation: g.number))
        }
        beginTeardown(at: i, .failed, now: now, &out)
        if attempt?.reason == .respawn { countDeath(g, reason: reason, now: now, &out) }
        attemptFailed(g.number, reason: reason, now: now, &out)
    }
}
