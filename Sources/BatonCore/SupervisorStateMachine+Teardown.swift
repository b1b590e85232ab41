#if canImport(Glibc)
    import Glibc
#endif

// The end of a generation: one plan of steps for a retired, a stopped and a
// failed generation, carried out by `advance` and the deadlines of `tick`.
extension SupervisorStateMachine {
    /// How many handshake windows a retiring generation waits at the most:
    /// one, and one more each time connections arrived in the last (they
    /// can only be handshakes begun before the steering, so the count stops
    /// growing; the bound keeps a pathological reading from holding the
    /// signal back for more than about a second at the default 200 ms).
    public static let maxHandshakeWindows = 5

    /// The steps that end a generation for `reason`. `steeredAway`: when
    /// new connections stopped reaching it (a retirement after a probation
    /// longer than the handshake window needs no window: any handshake begun
    /// before the switch completed long ago).
    func plan(_ reason: Teardown.Reason, for number: Int, steeredAway: Instant? = nil, now: Instant? = nil) -> [Teardown.Step] {
        switch reason {
        case .failed:
            return [.signalGroup(SIGTERM), .awaitExit(timeout: policy.failedStopGrace), .killGroup]
        case .stop:
            return [.signal(policy.signalOnTerm), .awaitExit(timeout: policy.drainTimeout), .killGroup]
        case .retire:
            var steps: [Teardown.Step] = []
            if policy.killOldDelay > .zero { steps.append(.pause(policy.killOldDelay)) }
            // Its own sockets get no new connection since the steering: once
            // their queues are empty it has nothing left to drop.
            // Then a quiet window: handshakes begun on its socket before the
            // steering complete there a round trip later, and what it has just
            // accepted gets answered. With tcp_migrate_req=1 the socket is shut
            // down first and the kernel moves late handshakes to the new one.
            if !ownSockets(of: number).isEmpty {
                steps.append(.awaitEmptyQueue(timeout: policy.queueTimeout))
                if policy.queueMigration { steps.append(.shutDownSockets) }
                let windowPassed = steeredAway.flatMap { at in now.map { $0 - at >= policy.handshakeWindow } } ?? false
                if policy.handshakeWindow > .zero, !windowPassed {
                    steps.append(.pause(policy.handshakeWindow))
                    if !policy.queueMigration { steps.append(.awaitEmptyQueue(timeout: policy.queueTimeout)) }
                }
            }
            return steps + [.signal(policy.signalOnHup), .awaitExit(timeout: policy.drainTimeout), .killGroup]
        }
    }

    /// Begins (or, for a stop, replaces) the teardown of the generation at `i`.
    mutating func beginTeardown(
        at i: Int, _ reason: Teardown.Reason, steeredAway: Instant? = nil, now: Instant, _ out: inout [SupervisorAction]
    ) {
        let steps = plan(reason, for: generations[i].number, steeredAway: steeredAway, now: now)
        generations[i].phase = .tearingDown(Teardown(reason, steps: steps, now: now))
        advance(at: i, now: now, &out)
    }

    /// Carries out steps until one has to wait.
    mutating func advance(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        guard case .tearingDown(var t) = generations[i].phase else { return }
        let g = generations[i]
        defer { generations[i].phase = .tearingDown(t) }
        while !t.remaining.isEmpty {
            let step = t.remaining.removeFirst()
            t.current = step
            t.stepStartedAt = now
            t.deadline = nil
            t.nextReading = nil
            switch step {
            case .pause(let d):
                t.deadline = now + d
                return
            case .awaitEmptyQueue(let timeout):
                t.deadline = now + timeout
                t.queueWaits += 1
                t.queueAtStep = nil
                out.append(.measureQueues(generation: g.number, sockets: ownSockets(of: g.number)))
                return
            case .shutDownSockets:
                let shut = shutDownOwnSockets(of: g.number)
                if !shut.isEmpty {
                    out.append(.shutDown(shut))
                    for l in groups.keys.sorted() { attachIfNeeded(l, &out) }
                }
            case .signal(let sig):
                t.signalledAt = now
                out.append(.signal(pid: g.pid, signal: sig))
                out.append(.report(Reports.signalled(g, sig, t.reason, deadline: policy.drainTimeout)))
            case .signalGroup(let sig):
                t.signalledAt = now
                out.append(.signalGroup(pgid: g.pid, signal: sig))
            case .awaitExit(let timeout):
                t.deadline = timeout.map { now + $0 }
                return
            case .killGroup:
                t.killed = true
                out.append(.signalGroup(pgid: g.pid, signal: SIGKILL))
                let waited = now - (t.signalledAt ?? t.startedAt)
                out.append(.report(Reports.killed(g, after: waited)))
            }
        }
        t.current = nil
    }

    /// The deadlines of a teardown.
    mutating func teardownTick(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        guard case .tearingDown(var t) = generations[i].phase else { return }
        if case .awaitEmptyQueue = t.current {
            if let d = t.deadline, d <= now {
                out.append(.report(Reports.queueNotEmpty(generations[i], after: now - t.stepStartedAt)))
                advance(at: i, now: now, &out)
                return
            }
            if let next = t.nextReading, next <= now {
                t.nextReading = nil
                generations[i].phase = .tearingDown(t)
                out.append(.measureQueues(generation: generations[i].number, sockets: ownSockets(of: generations[i].number)))
            }
            return
        }
        if let d = t.deadline, d <= now { advance(at: i, now: now, &out) }
    }

    /// A reading of a retiring generation's queues.
    mutating func queueMeasured(_ number: Int, length: Int, now: Instant, _ out: inout [SupervisorAction]) {
        if probation?.generation == number {
            probationReading(length: length, now: now, &out)
            return
        }
        if rescuers.contains(number), generation(number) == nil {
            // Read before the rescuer's spawn: what it is started for.
            out.append(.report(Reports.rescueQueue(number, length)))
            return
        }
        guard let i = generations.firstIndex(where: { $0.number == number }), case .tearingDown(var t) = generations[i].phase,
            case .awaitEmptyQueue = t.current
        else { return }
        if t.queueAtStep == nil { t.queueAtStep = length }
        if length > 0 {
            t.nextReading = now + policy.queuePollInterval
            generations[i].phase = .tearingDown(t)
            return
        }
        // The first wait is told; the one after the handshake window only when connections came in it.
        let queued = t.queueAtStep ?? 0
        if t.queueWaits == 1 {
            out.append(.report(Reports.queueDrained(generations[i], after: now - t.stepStartedAt, queuedAtSteer: queued)))
        } else if queued > 0 {
            out.append(.report(Reports.lateHandshakes(generations[i], queued, after: now - t.stepStartedAt)))
            // Those were accepted a moment ago and the machine is slow enough
            // that handshakes are still landing: one more quiet window, so
            // they get answered and any later one arrives, before the signal.
            if t.queueWaits <= Self.maxHandshakeWindows {
                t.remaining.insert(contentsOf: [.pause(policy.handshakeWindow), .awaitEmptyQueue(timeout: policy.queueTimeout)], at: 0)
            }
        }
        generations[i].phase = .tearingDown(t)
        advance(at: i, now: now, &out)
    }

    /// A child exited: a generation's main process ends its generation.
    mutating func childExited(pid: Int32, status: ExitStatus, now: Instant, _ out: inout [SupervisorAction]) {
        guard let i = generations.firstIndex(where: { $0.pid == pid }) else { return }
        let g = generations.remove(at: i)
        // Workers the main process left behind have nobody to manage them.
        out.append(.signalGroup(pgid: pid, signal: SIGKILL))
        if case .probing(_, .running) = g.phase { out.append(.abortProbe(generation: g.number)) }
        if case .serving(.running?, _) = g.phase { out.append(.abortProbe(generation: g.number)) }
        if !g.proof.isEmpty { out.append(.dropProof(generation: g.number)) }
        rescuers.remove(g.number)
        if case .serving = g.phase, probation?.generation == g.number {
            // New connections go back to the reserve; what waits on its own
            // sockets goes to a rescuer of the reserve's release.
            let reason = "\(status.clause) during its probation, \((now - (g.servingSince ?? now)).humanDescription) after it took over"
            out.append(.report(Reports.failed(g, reason, elapsed: now - g.spawnedAt)))
            let stranded = ownSockets(of: g.number)
            releaseSockets(of: g.number, &out)
            probationFailed(reason: reason, exited: g, stranded: stranded, now: now, &out)
            finishStopIfDone(&out)
            return
        }
        releaseSockets(of: g.number, &out)
        switch g.phase {
        case .starting, .probing, .settling:
            var when = { if case .settling = g.phase { "while settling" } else { "before it was ready" } }()
            if case .probing = g.phase, let last = g.lastProbe { when += " (last health probe: \(last))" }
            let reason = "\(status.clause) \(when), after \((now - g.spawnedAt).humanDescription)"
            out.append(.report(Reports.failed(g, reason, elapsed: now - g.spawnedAt)))
            if attempt?.generation == g.number, attempt?.reason == .respawn { countDeath(g, reason: reason, now: now, &out) }
            attemptFailed(g.number, reason: reason, now: now, &out)
        case .serving:
            let served = now - (g.servingSince ?? now)
            out.append(.report(Reports.crashed(g, status, servedFor: served)))
            reserveExited(g.number, &out)
            if let since = g.servingSince, now - since >= policy.backoffReset { backoff = policy.backoffInitial }
            if phase == .running {
                let after = g.readyAt.map { " \((now - $0).humanDescription) after it got ready" } ?? ""
                countDeath(g, reason: "\(status.clause)\(after)", now: now, &out)
            }
            if phase == .running, attempt == nil, serving == nil, retry == nil { scheduleRespawn(now: now, &out) }
        case .tearingDown(let t):
            if t.reason == .failed || t.killed {
                out.append(.report(Reports.exited(g, status)))
            } else {
                out.append(.report(Reports.drained(g, status, after: now - (t.signalledAt ?? t.startedAt))))
            }
            drainFinished(g.number, &out)
        }
        finishStopIfDone(&out)
    }
}
