import BatonProtocol

// Attempts: bringing up a generation for a start, a restart or a respawn;
// coalescing restarts, retrying, backing off; stopping; answering.
extension SupervisorStateMachine {
    mutating func restartRequested(_ request: RestartRequest?, now: Instant, _ out: inout [SupervisorAction]) {
        let requests = request.map { [$0] } ?? []
        guard phase == .running else {
            out.append(.report(Reports.restartIgnoredWhileStopping()))
            for r in requests { out.append(.answer(r.id, Answer(.busy, "restart refused: the supervisor is stopping"))) }
            return
        }
        // A probation ends early for `--watch` (the newest save wins), and
        // when nothing is in reserve (the first generation, a respawn): it
        // guards a switch, and with nothing to switch back to, holding a
        // restart behind it would only delay the restart.
        if let p = probation, attempt?.generation == p.generation,
            requests.contains(where: \.endsProbation) || !p.reserve.contains(where: { generation($0)?.isServing == true })
        {
            queued = (queued ?? []) + requests
            out.append(.report(Reports.probationCutShort(p.generation)))
            probationPassed(now: now, &out)
            return
        }
        if let current = attempt ?? retry?.attempt {
            if queued == nil {
                out.append(
                    .report(Reports.restartQueued(behind: current.generation, onProbation: probation?.generation == current.generation)))
            }
            queued = (queued ?? []) + requests
            return
        }
        if reexecPending != nil {
            if queued == nil { out.append(.report(Reports.restartQueuedBehindReexec())) }
            queued = (queued ?? []) + requests
            return
        }
        beginAttempt(.restart, requests: requests, now: now, &out)
    }

    /// Starts bringing up the next generation: its sockets, then the spawn.
    mutating func beginAttempt(
        _ reason: AttemptReason, requests: [RestartRequest], report: RequestID? = nil, tries: Int = 1, startedAt: Instant? = nil,
        now: Instant, _ out: inout [SupervisorAction]
    ) {
        respawnAt = nil
        retry = nil
        lastGeneration += 1
        lastRestartAt = now
        var waiting = requests
        if let report { waiting.append(RestartRequest(id: report, waitsForDrain: false)) }
        attempt = Attempt(generation: lastGeneration, reason: reason, requests: waiting, startedAt: startedAt ?? now, tries: tries)
        if reason == .restart, tries == 1 {
            out.append(
                .notifySystemd(
                    "RELOADING=1\nMONOTONIC_USEC=\(now.nanoseconds / 1000)\nSTATUS=restarting: starting generation \(lastGeneration)"))
        }
        // A restart asked for runs what the configuration names again.
        if reason == .restart, tries == 1, pinnedRelease != nil { pinnedRelease = nil }
        let (sockets, open) = socketsForSpawn(of: lastGeneration, &out)
        out.append(.spawn(generation: lastGeneration, sockets: sockets, open: open, release: pinnedRelease))
    }

    mutating func stopRequested(_ request: RequestID?, code: Int32, now: Instant, _ out: inout [SupervisorAction]) {
        if let request { stopRequests.append(request) }
        guard phase != .stopping, phase != .stopped else { return }
        if let id = reexecPending {
            reexecPending = nil
            out.append(.answer(id, Answer(.busy, "re-exec refused: the supervisor is stopping")))
        }
        exitCode = code
        phase = .stopping
        respawnAt = nil
        if let pending = retry {
            retry = nil
            if attempt == nil { attempt = pending.attempt }
        }
        out.append(.report(Reports.stopping(generations.count)))
        let onProbation = probation?.generation
        probation = nil
        let queuedRequests = queued ?? []
        queued = nil
        if let current = attempt {
            // A restart cut short by the stop did not fail, and nothing serves
            // on after it: its requesters hear that the supervisor is stopping.
            let outcome: AttemptOutcome =
                current.reason == .initial
                ? .failed(generation: current.generation, reason: "the supervisor is stopping")
                : .rejected(
                    reason: "the supervisor is stopping; generation \(current.generation) was stopped "
                        + (onProbation == current.generation ? "during its probation" : "before it was ready"))
            finishAttempt(current, outcome, now: now, &out)
        }
        for r in queuedRequests { out.append(.answer(r.id, Answer(.busy, "restart refused: the supervisor is stopping"))) }
        attempt = nil
        for i in generations.indices {
            if let t = generations[i].teardown, !t.signalPending { continue }
            beginTeardown(at: i, .stop, now: now, &out)
        }
        finishStopIfDone(&out)
    }

    /// The attempt for `number` succeeded or failed: answers, then the coalesced restart, if any.
    mutating func finishAttempt(_ finished: Attempt, _ outcome: AttemptOutcome, now: Instant, _ out: inout [SupervisorAction]) {
        attempt = nil
        lastAttempt = AttemptRecord(reason: finished.reason, outcome: outcome, startedAt: finished.startedAt, finishedAt: now)
        out.append(.report(Reports.outcome(outcome, stillServing: serving)))
        switch outcome {
        case .succeeded(let generation, let pid, _, _):
            // New code went live and passed its probation: a crash loop before it is over.
            if finished.reason == .restart { crashLoop = nil }
            out.append(.notifySystemd("READY=1\nSTATUS=serving generation \(generation) (pid \(pid))"))
        case .failed:
            if let s = serving {
                out.append(.notifySystemd("READY=1\nSTATUS=restart failed; generation \(s.number) (pid \(s.pid)) still serves"))
            }
        case .rejected:
            break
        }
        let answer = answer(for: outcome, initial: finished.reason == .initial)
        if case .succeeded(_, _, _, let retired) = outcome {
            let stillThere = Set(retired.filter { generation($0) != nil })
            let waiting = finished.requests.filter { $0.waitsForDrain }.map(\.id)
            if !stillThere.isEmpty, !waiting.isEmpty {
                drainWaiters.append(DrainWaiter(requests: waiting, answer: answer, generations: stillThere))
            }
            for r in finished.requests where !(r.waitsForDrain && !stillThere.isEmpty) { out.append(.answer(r.id, answer)) }
        } else {
            for r in finished.requests { out.append(.answer(r.id, answer)) }
        }
        if phase == .running, reexecPending == nil, let next = queued {
            queued = nil
            beginAttempt(.restart, requests: next, now: now, &out)
        }
    }

    /// The answer a requester gets for `outcome`.
    func answer(for outcome: AttemptOutcome, initial: Bool) -> Answer {
        switch outcome {
        case .succeeded(let generation, let pid, let readyAfter, let retired):
            var a = Answer(nil, "generation \(generation) (pid \(pid)) is serving", generation: generation, pid: pid)
            a.readyAfter = readyAfter
            a.retired = retired
            return a
        case .failed(let generation, let reason):
            let still = serving.map { "; generation \($0.number) (pid \($0.pid)) still serves" } ?? ""
            return Answer(
                initial ? .startFailed : .generationFailed, "generation \(generation.map(String.init) ?? "?") failed: \(reason)\(still)",
                generation: generation)
        case .rejected(let reason):
            return Answer(.busy, "restart refused: \(reason)")
        }
    }

    /// A retired generation is gone: answer whoever waited for it.
    mutating func drainFinished(_ number: Int, _ out: inout [SupervisorAction]) {
        for i in drainWaiters.indices { drainWaiters[i].generations.remove(number) }
        for waiter in drainWaiters where waiter.generations.isEmpty {
            for id in waiter.requests { out.append(.answer(id, waiter.answer)) }
        }
        drainWaiters.removeAll { $0.generations.isEmpty }
    }

    /// The attempt for `number` failed: the serving generation (if any) goes on.
    mutating func attemptFailed(_ number: Int, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        guard let current = attempt, current.generation == number else { return }
        if phase == .running, current.tries <= policy.attemptRetries {
            attempt = nil
            retry = (current, now + policy.retryDelay)
            out.append(.report(Reports.retrying(number, in: policy.retryDelay, try: current.tries + 1, of: policy.attemptRetries + 1)))
            return
        }
        let why = reason + (current.tries > 1 ? " (gave up after \(current.tries) tries)" : "")
        if phase == .running, serving == nil, current.reason == .initial, policy.exitWhenFirstFails {
            finishAttempt(current, .failed(generation: number, reason: why), now: now, &out)
            stopRequested(nil, code: BatonError.Code.startFailed.exitCode, now: now, &out)
            return
        }
        finishAttempt(current, .failed(generation: number, reason: why), now: now, &out)
        if phase == .running, serving == nil, attempt == nil { scheduleRespawn(now: now, &out) }
    }

    mutating func scheduleRespawn(now: Instant, _ out: inout [SupervisorAction]) {
        rollBackIfLooping(&out)
        respawnAt = now + backoff
        out.append(.report(Reports.respawnScheduled(in: backoff)))
        backoff = min(backoff * 2, policy.backoffMax)
    }

    /// Respawns, retries and auto-restarts that are due.
    mutating func attemptTick(now: Instant, _ out: inout [SupervisorAction]) {
        guard phase == .running else { return }
        if let at = respawnAt, at <= now {
            beginAttempt(.respawn, requests: [], now: now, &out)
        }
        if let pending = retry, pending.at <= now {
            beginAttempt(
                pending.attempt.reason, requests: pending.attempt.requests, tries: pending.attempt.tries + 1,
                startedAt: pending.attempt.startedAt, now: now, &out)
        }
        if let due = autoRestartDeadline, due <= now, let interval = policy.autoRestartInterval {
            out.append(.report(Reports.autoRestart(every: interval)))
            beginAttempt(.restart, requests: [], now: now, &out)
        }
    }

    /// Every generation gone while stopping: exit, answering everyone still waiting.
    mutating func finishStopIfDone(_ out: inout [SupervisorAction]) {
        guard phase == .stopping, generations.isEmpty else { return }
        phase = .stopped
        out.append(.notifySystemd("STOPPING=1"))
        out.append(.report(Reports.stopped(exitCode)))
        var answers: [RequestID: Answer] = [:]
        for waiter in drainWaiters {
            for id in waiter.requests { answers[id] = Answer(.notRunning, "the supervisor stopped") }
        }
        drainWaiters = []
        for id in stopRequests {
            answers[id] =
                exitCode == 0
                ? Answer(nil, "stopped; every process is gone and every file removed")
                : Answer(.startFailed, "stopped with exit code \(exitCode)")
        }
        stopRequests = []
        out.append(.exit(code: exitCode, answers: answers))
    }
}
