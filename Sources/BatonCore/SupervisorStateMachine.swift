#if canImport(Glibc)
    import Glibc
#endif

/// Identifies a control request waiting for an outcome (a restart or a stop).
public typealias RequestID = Int

/// One generation of the app: its main process, its process group (same
/// number), its release directory and where it stands.
public struct Generation: Sendable, Equatable {
    /// Where a generation stands.
    public enum Phase: String, Sendable, Equatable {
        /// Spawned, not ready yet.
        case starting
        /// Said it is ready; its health probe has not passed yet.
        case probing
        /// Ready, waiting out `--settle` (and `--kill-old-delay`) before it takes over.
        case settling
        /// The generation that serves.
        case serving
        /// Signalled to finish; killed at its deadline.
        case draining
        /// Never became ready; being stopped.
        case failing
        /// SIGKILL sent to its process group; waiting for the main process to go.
        case killed
    }

    /// The generation number, from 1.
    public let number: Int
    /// The main process; also its process group.
    public let pid: Int32
    /// The release directory it runs (realpath at spawn).
    public let releaseDir: String
    /// When it was spawned.
    public let spawnedAt: Instant
    /// Where it stands.
    public internal(set) var phase: Phase
    /// The next deadline of its phase, if any.
    public internal(set) var deadline: Instant?
    /// When it counts as ready by being alive (alive/auto readiness), while starting.
    public internal(set) var aliveReadyAt: Instant?
    /// When it became ready.
    public internal(set) var readyAt: Instant?
    /// When it took over serving.
    public internal(set) var servingSince: Instant?
    /// When it was sent its graceful signal.
    public internal(set) var signalledAt: Instant?
    /// A graceful signal to send at `signalAt` (hand-over: after the door closed).
    public internal(set) var pendingSignal: Int32?
    /// When to send `pendingSignal`.
    public internal(set) var signalAt: Instant?
    /// The last `STATUS=` it sent.
    public internal(set) var status: String?
    /// The last health probe's result.
    public internal(set) var lastProbe: ProbeResult?
    /// When the next probe is due (none while one is under way).
    public internal(set) var probeDueAt: Instant?
    /// Failed probes in a row while serving.
    public internal(set) var probeFailures = 0
}

/// Why an attempt to bring up a generation was made.
public enum AttemptReason: String, Sendable, Equatable {
    /// The first generation of the supervisor.
    case initial
    /// A restart was asked for (signal or control request).
    case restart
    /// The serving generation died and nothing else was coming up.
    case respawn
}

/// The outcome of a restart (or of the initial start) as told to whoever asked.
public enum AttemptOutcome: Sendable, Equatable {
    /// The generation is ready and serving; the `retired` ones were signalled.
    case succeeded(generation: Int, pid: Int32, readyAfter: Duration, retired: [Int])
    /// The generation failed; whatever served before still serves.
    case failed(generation: Int?, reason: String)
    /// The request was not carried out (the supervisor is stopping).
    case rejected(reason: String)
}

/// One thing that happened, for the log (one line each) and for progress
/// streams of control clients.
public struct Report: Sendable, Equatable, CustomStringConvertible {
    /// What happened.
    public enum Kind: String, Sendable, Equatable {
        case spawned, ready, serving, signalled, drained, exited, crashed, failed
        case killed, respawnScheduled, queued, notified, ignored, stopping, stopped, rejected
    }
    /// What happened.
    public var kind: Kind
    /// The generation concerned, if any.
    public var generation: Int?
    /// Its main pid, if any.
    public var pid: Int32?
    /// A short sentence for people.
    public var message: String
    /// How long the step took, where that means something.
    public var elapsed: Duration?

    public var description: String {
        var prefix = ""
        if let generation { prefix += "gen \(generation) " }
        if let pid { prefix += "pid \(pid) " }
        return prefix + message
    }
}

/// What the shell must do, in order.
public enum SupervisorAction: Sendable, Equatable {
    /// Spawn this generation, then feed back `.spawned` or `.spawnFailed`.
    case spawn(generation: Int)
    /// An attempt began: these requesters now wait for this generation.
    case attemptStarted(requests: [RequestID], generation: Int, reason: AttemptReason)
    /// Send a signal to one process.
    case signal(pid: Int32, signal: Int32)
    /// Stop accepting on this generation's own listeners, so that what is
    /// queued there moves to the others (hand-over mode; otherwise nothing).
    case closeDoor(generation: Int)
    /// This generation is gone: release its own listeners (hand-over mode).
    case releaseSockets(generation: Int)
    /// Probe this generation's health; feed back `.probeFinished`.
    case probe(generation: Int)
    /// Send a signal to a whole process group.
    case signalGroup(pgid: Int32, signal: Int32)
    /// Log this and pass it to progress listeners.
    case report(Report)
    /// The set of live generations changed (rewrite the status file).
    case generationsChanged
    /// Tell these requesters how the attempt ended.
    case attemptFinished(requests: [RequestID], outcome: AttemptOutcome)
    /// Every generation is gone: clean up and exit with this code.
    case exit(code: Int32, requests: [RequestID])
}

/// Everything that can happen to a supervisor.
public enum SupervisorEvent: Sendable, Equatable {
    /// The supervisor has its sockets: bring up the first generation.
    case start
    /// A restart was asked for (`nil`: by a signal, nobody waits for an answer).
    case restartRequested(RequestID?)
    /// A stop was asked for.
    case stopRequested(RequestID?)
    /// The shell spawned a generation.
    case spawned(generation: Int, pid: Int32, releaseDir: String)
    /// The shell could not spawn a generation.
    case spawnFailed(generation: Int, reason: String)
    /// A datagram arrived on the notify socket from `pid` (0: unknown sender).
    case notified(pid: Int32, message: NotifyMessage)
    /// A child process exited (the shell has not reaped it yet).
    case childExited(pid: Int32, status: ExitStatus)
    /// A health probe finished.
    case probeFinished(generation: Int, result: ProbeResult)
    /// Time passed: handle every deadline up to now.
    case tick
}

/// The supervisor's decisions, free of I/O: `(state, event, now) -> actions`.
///
/// The shell feeds it every event with the current monotonic time, carries
/// out the returned actions in order, and arms one timer for `nextDeadline`.
public struct SupervisorStateMachine: Sendable {
    /// Where the supervisor as a whole stands.
    public enum Phase: String, Sendable, Equatable {
        /// Not started yet.
        case idle
        /// Serving (or bringing up) generations.
        case running
        /// Stopping every generation; exits when all are gone.
        case stopping
        /// Exited.
        case stopped
    }

    /// The attempt in flight: the generation being brought up and who waits.
    public struct Attempt: Sendable, Equatable {
        /// The generation number being brought up.
        public let generation: Int
        /// Why.
        public let reason: AttemptReason
        /// Who waits for the outcome.
        public var requests: [RequestID]
        /// When it began.
        public let startedAt: Instant
        /// Which try this is, from 1.
        public var tries: Int = 1
    }

    /// The last finished attempt, for `status`.
    public struct AttemptRecord: Sendable, Equatable {
        /// Why it was made.
        public let reason: AttemptReason
        /// How it ended.
        public let outcome: AttemptOutcome
        /// When it began and ended.
        public let startedAt: Instant, finishedAt: Instant
    }

    /// The rules.
    public let policy: SupervisorPolicy
    /// Where the supervisor stands.
    public private(set) var phase: Phase = .idle
    /// The live generations, oldest first.
    public private(set) var generations: [Generation] = []
    /// The last generation number handed out.
    public private(set) var lastGeneration = 0
    /// The attempt in flight, if any.
    public private(set) var attempt: Attempt?
    /// Requests coalesced into one more restart after the current attempt.
    public private(set) var queued: [RequestID]?
    /// When a crashed app is started again, if scheduled.
    public private(set) var respawnAt: Instant?
    /// A failed attempt waiting to be tried again, and when.
    public private(set) var retry: (attempt: Attempt, at: Instant)?
    /// When the last restart (or the start) was made, for auto-restart.
    public private(set) var lastRestartAt: Instant?
    /// The delay the next respawn will wait.
    public private(set) var backoff: Duration
    /// The last finished attempt.
    public private(set) var lastAttempt: AttemptRecord?
    /// The exit code once stopping.
    public private(set) var exitCode: Int32 = 0
    private var stopRequests: [RequestID] = []

    /// Creates a machine with `policy`.
    public init(policy: SupervisorPolicy) {
        self.policy = policy
        self.backoff = policy.backoffInitial
    }

    /// The generation that serves now, if any.
    public var serving: Generation? { generations.last { $0.phase == .serving } }

    /// The earliest deadline, for the shell's one timer; `nil`: wait for events only.
    public var nextDeadline: Instant? {
        var next = respawnAt
        if let r = retry?.at, next == nil || r < next! { next = r }
        if let a = autoRestartDeadline, next == nil || a < next! { next = a }
        for g in generations {
            for d in [g.deadline, g.aliveReadyAt, g.signalAt, g.probeDueAt].compactMap({ $0 }) where next == nil || d < next! {
                next = d
            }
        }
        return next
    }

    /// When an auto-restart is due: one interval after the last restart, or
    /// two when old generations are still draining then.
    private var autoRestartDeadline: Instant? {
        guard phase == .running, let interval = policy.autoRestartInterval, let last = lastRestartAt,
            attempt == nil, retry == nil, serving != nil
        else { return nil }
        let draining = generations.contains { $0.phase == .draining || $0.phase == .killed }
        return draining ? last + interval * 2 : last + interval
    }

    /// Handles one event that happened at `now` and returns what to do.
    public mutating func handle(_ event: SupervisorEvent, now: Instant) -> [SupervisorAction] {
        var out: [SupervisorAction] = []
        switch event {
        case .start:
            guard phase == .idle else { break }
            phase = .running
            beginAttempt(.initial, requests: [], now: now, &out)
        case .restartRequested(let request):
            restartRequested(request, now: now, &out)
        case .stopRequested(let request):
            stopRequested(request, code: 0, now: now, &out)
        case .spawned(let number, let pid, let dir):
            spawned(number, pid: pid, releaseDir: dir, now: now, &out)
        case .spawnFailed(let number, let reason):
            out.append(.report(Report(kind: .failed, generation: number, message: "could not be spawned: \(reason)")))
            attemptFailed(number, reason: "could not be spawned: \(reason)", now: now, &out)
        case .notified(let pid, let message):
            notified(pid: pid, message: message, now: now, &out)
        case .childExited(let pid, let status):
            childExited(pid: pid, status: status, now: now, &out)
        case .probeFinished(let number, let result):
            probeFinished(number, result, now: now, &out)
        case .tick:
            tick(now: now, &out)
        }
        return out
    }

    // MARK: - Restart and stop

    private mutating func restartRequested(_ request: RequestID?, now: Instant, _ out: inout [SupervisorAction]) {
        let requests = request.map { [$0] } ?? []
        guard phase == .running else {
            out.append(.report(Report(kind: .rejected, message: "restart ignored: the supervisor is stopping")))
            out.append(.attemptFinished(requests: requests, outcome: .rejected(reason: "the supervisor is stopping")))
            return
        }
        if let attempt = attempt ?? retry?.attempt {
            if queued == nil {
                out.append(
                    .report(
                        Report(
                            kind: .queued, generation: attempt.generation,
                            message: "restart asked for while generation \(attempt.generation) is starting: one more restart will follow it"
                        )))
            }
            queued = (queued ?? []) + requests
            return
        }
        beginAttempt(.restart, requests: requests, now: now, &out)
    }

    private mutating func beginAttempt(
        _ reason: AttemptReason, requests: [RequestID], tries: Int = 1, startedAt: Instant? = nil, now: Instant,
        _ out: inout [SupervisorAction]
    ) {
        respawnAt = nil
        retry = nil
        lastGeneration += 1
        lastRestartAt = now
        attempt = Attempt(generation: lastGeneration, reason: reason, requests: requests, startedAt: startedAt ?? now, tries: tries)
        out.append(.attemptStarted(requests: requests, generation: lastGeneration, reason: reason))
        out.append(.spawn(generation: lastGeneration))
    }

    private mutating func stopRequested(
        _ request: RequestID?, code: Int32, now: Instant, _ out: inout [SupervisorAction]
    ) {
        if let request { stopRequests.append(request) }
        guard phase != .stopping, phase != .stopped else { return }
        exitCode = code
        phase = .stopping
        respawnAt = nil
        if let pending = retry {
            retry = nil
            if attempt == nil { attempt = pending.attempt }
        }
        out.append(.report(Report(kind: .stopping, message: "stopping: \(generations.count) generation(s) to stop")))
        let queuedRequests = queued ?? []
        queued = nil
        if let attempt {
            // A restart cut short by the stop did not fail, and nothing serves
            // on after it: its requesters hear that the supervisor is stopping.
            let outcome: AttemptOutcome =
                attempt.reason == .initial
                ? .failed(generation: attempt.generation, reason: "the supervisor is stopping")
                : .rejected(
                    reason: "the supervisor is stopping; generation \(attempt.generation) was stopped before it was ready")
            finishAttempt(attempt, outcome, now: now, &out)
        }
        if !queuedRequests.isEmpty {
            out.append(.attemptFinished(requests: queuedRequests, outcome: .rejected(reason: "the supervisor is stopping")))
        }
        attempt = nil
        for i in generations.indices {
            switch generations[i].phase {
            case .starting, .probing, .settling, .serving:
                generations[i].phase = .draining
                generations[i].aliveReadyAt = nil
                generations[i].probeDueAt = nil
                generations[i].signalledAt = now
                generations[i].deadline = policy.drainTimeout.map { now + $0 }
                out.append(.signal(pid: generations[i].pid, signal: policy.signalOnTerm))
                out.append(
                    .report(
                        Report(
                            kind: .signalled, generation: generations[i].number, pid: generations[i].pid,
                            message: "sent \(OptionParsing.signalName(policy.signalOnTerm)) (stop)")))
            case .draining where generations[i].pendingSignal != nil:
                sendGracefulSignal(at: i, signal: policy.signalOnTerm, why: "stop", now: now, &out)
            case .draining, .failing, .killed:
                break
            }
        }
        finishStopIfDone(&out)
    }

    private mutating func finishStopIfDone(_ out: inout [SupervisorAction]) {
        guard phase == .stopping, generations.isEmpty else { return }
        phase = .stopped
        out.append(.report(Report(kind: .stopped, message: "stopped (exit code \(exitCode))")))
        out.append(.exit(code: exitCode, requests: stopRequests))
        stopRequests = []
    }

    // MARK: - Generations coming up

    private mutating func spawned(
        _ number: Int, pid: Int32, releaseDir: String, now: Instant, _ out: inout [SupervisorAction]
    ) {
        var g = Generation(
            number: number, pid: pid, releaseDir: releaseDir, spawnedAt: now, phase: .starting,
            deadline: now + policy.readyTimeout)
        switch policy.readiness {
        case .notify: break
        case .alive(let d), .auto(let d): g.aliveReadyAt = now + d
        }
        generations.append(g)
        out.append(.report(Report(kind: .spawned, generation: number, pid: pid, message: "spawned in \(releaseDir)")))
        out.append(.generationsChanged)
        if phase != .running || attempt?.generation != number {
            // Stop asked for in between: this one goes too.
            stopGeneration(at: generations.count - 1, signal: policy.signalOnTerm, why: "stop", now: now, &out)
        }
    }

    private mutating func notified(pid: Int32, message: NotifyMessage, now: Instant, _ out: inout [SupervisorAction]) {
        guard pid > 0, let i = generations.firstIndex(where: { $0.pid == pid }) else {
            out.append(
                .report(
                    Report(
                        kind: .ignored,
                        message: "ignored a notify message from pid \(pid): not the main process of a generation")))
            return
        }
        let g = generations[i]
        if !message.isWellFormed {
            out.append(.report(Report(kind: .ignored, generation: g.number, pid: pid, message: "ignored a malformed notify message")))
        }
        if let status = message.status {
            generations[i].status = status
            out.append(.report(Report(kind: .notified, generation: g.number, pid: pid, message: "STATUS=\(status)")))
        }
        if let errno = message.errno {
            out.append(.report(Report(kind: .notified, generation: g.number, pid: pid, message: "reported ERRNO=\(errno)")))
        }
        if message.stopping {
            out.append(.report(Report(kind: .notified, generation: g.number, pid: pid, message: "reported STOPPING=1")))
        }
        if message.ready, g.phase == .starting, policy.readiness.acceptsReadyMessage {
            becameReady(at: i, via: "READY=1", now: now, &out)
        }
    }

    private mutating func becameReady(at i: Int, via: String, now: Instant, _ out: inout [SupervisorAction]) {
        if let health = policy.health, generations[i].phase == .starting {
            generations[i].phase = .probing
            generations[i].aliveReadyAt = nil
            generations[i].probeDueAt = now
            let g = generations[i]
            out.append(
                .report(
                    Report(
                        kind: .notified, generation: g.number, pid: g.pid,
                        message: "says it is ready (\(via)) after \((now - g.spawnedAt).humanDescription); probing GET \(health.path)")))
            return
        }
        markReady(at: i, via: via, now: now, &out)
    }

    /// Ready: reported, then settling (or serving at once).
    private mutating func markReady(at i: Int, via: String, now: Instant, _ out: inout [SupervisorAction]) {
        generations[i].readyAt = now
        generations[i].aliveReadyAt = nil
        let g = generations[i]
        out.append(
            .report(
                Report(
                    kind: .ready, generation: g.number, pid: g.pid,
                    message: "ready after \((now - g.spawnedAt).humanDescription) (\(via))", elapsed: now - g.spawnedAt
                )))
        let wait = policy.settle + policy.killOldDelay
        if wait <= .zero {
            promote(at: i, now: now, &out)
        } else {
            generations[i].phase = .settling
            generations[i].deadline = now + wait
        }
    }

    private mutating func promote(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        generations[i].phase = .serving
        generations[i].deadline = nil
        generations[i].servingSince = now
        generations[i].probeFailures = 0
        generations[i].probeDueAt = policy.health?.every.map { now + $0 }
        let g = generations[i]
        let retiring = generations.indices.filter { generations[$0].phase == .serving && $0 != i }
        out.append(
            .report(
                Report(
                    kind: .serving, generation: g.number, pid: g.pid,
                    message: retiring.isEmpty
                        ? "serving"
                        : "serving; retiring generation \(retiring.map { String(generations[$0].number) }.joined(separator: ", "))"
                )))
        for j in retiring {
            stopGeneration(at: j, signal: policy.signalOnHup, why: "retire", now: now, &out)
        }
        out.append(.generationsChanged)
        if let attempt, attempt.generation == g.number {
            finishAttempt(
                attempt,
                .succeeded(
                    generation: g.number, pid: g.pid, readyAfter: (g.readyAt ?? now) - g.spawnedAt,
                    retired: retiring.map { generations[$0].number }),
                now: now, &out)
        }
    }

    /// Sends the graceful `signal` and starts the drain deadline.
    private mutating func stopGeneration(
        at i: Int, signal: Int32, why: String, now: Instant, _ out: inout [SupervisorAction]
    ) {
        generations[i].probeDueAt = nil
        generations[i].phase = .draining
        generations[i].aliveReadyAt = nil
        if why == "retire" {
            out.append(.closeDoor(generation: generations[i].number))
            if policy.doorDelay > .zero {
                generations[i].pendingSignal = signal
                generations[i].signalAt = now + policy.doorDelay
                generations[i].deadline = nil
                return
            }
        }
        sendGracefulSignal(at: i, signal: signal, why: why, now: now, &out)
    }

    private mutating func sendGracefulSignal(at i: Int, signal: Int32, why: String, now: Instant, _ out: inout [SupervisorAction]) {
        generations[i].pendingSignal = nil
        generations[i].signalAt = nil
        generations[i].signalledAt = now
        generations[i].deadline = policy.drainTimeout.map { now + $0 }
        out.append(.signal(pid: generations[i].pid, signal: signal))
        out.append(
            .report(
                Report(
                    kind: .signalled, generation: generations[i].number, pid: generations[i].pid,
                    message: "sent \(OptionParsing.signalName(signal)) (\(why)); "
                        + (policy.drainTimeout.map { "drain deadline \($0.humanDescription)" } ?? "no drain deadline")
                )))
    }

    private mutating func finishAttempt(
        _ finished: Attempt, _ outcome: AttemptOutcome, now: Instant, _ out: inout [SupervisorAction]
    ) {
        attempt = nil
        lastAttempt = AttemptRecord(reason: finished.reason, outcome: outcome, startedAt: finished.startedAt, finishedAt: now)
        out.append(.attemptFinished(requests: finished.requests, outcome: outcome))
        if phase == .running, let next = queued {
            queued = nil
            beginAttempt(.restart, requests: next, now: now, &out)
        }
    }

    /// The attempt for `number` failed: the serving generation (if any) goes on.
    private mutating func attemptFailed(_ number: Int, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        guard let current = attempt, current.generation == number else { return }
        out.append(.closeDoor(generation: number))
        if phase == .running, current.tries <= policy.attemptRetries {
            attempt = nil
            retry = (current, now + policy.retryDelay)
            out.append(
                .report(
                    Report(
                        kind: .respawnScheduled, generation: number,
                        message:
                            "trying again in \(policy.retryDelay.humanDescription) (try \(current.tries + 1) of \(policy.attemptRetries + 1))"
                    )))
            return
        }
        let nothingServes = serving == nil
        if phase == .running, nothingServes, current.reason == .initial, policy.exitWhenFirstFails {
            attempt = nil
            let why = reason + (current.tries > 1 ? " (gave up after \(current.tries) tries)" : "")
            lastAttempt = AttemptRecord(
                reason: current.reason, outcome: .failed(generation: number, reason: why),
                startedAt: current.startedAt, finishedAt: now)
            out.append(.attemptFinished(requests: current.requests, outcome: .failed(generation: number, reason: why)))
            stopRequested(nil, code: BatonError.Code.startFailed.exitCode, now: now, &out)
            return
        }
        let gaveUp = current.tries > 1 ? " (gave up after \(current.tries) tries)" : ""
        finishAttempt(current, .failed(generation: number, reason: reason + gaveUp), now: now, &out)
        if phase == .running, serving == nil, attempt == nil {
            scheduleRespawn(now: now, &out)
        }
    }

    private mutating func scheduleRespawn(now: Instant, _ out: inout [SupervisorAction]) {
        respawnAt = now + backoff
        out.append(
            .report(Report(kind: .respawnScheduled, message: "nothing serves: starting a new generation in \(backoff.humanDescription)")))
        backoff = min(backoff * 2, policy.backoffMax)
    }

    // MARK: - Health probes

    private mutating func probeFinished(_ number: Int, _ result: ProbeResult, now: Instant, _ out: inout [SupervisorAction]) {
        guard let health = policy.health, let i = generations.firstIndex(where: { $0.number == number }) else { return }
        let previous = generations[i].lastProbe
        generations[i].lastProbe = result
        let g = generations[i]
        switch g.phase {
        case .probing:
            if result.passed {
                out.append(
                    .report(
                        Report(
                            kind: .notified, generation: number, pid: g.pid, message: "health probe passed: \(result)",
                            elapsed: result.latency)))
                markReady(at: i, via: "health probe", now: now, &out)
            } else {
                // Each new answer is told once; the same one again is not.
                if previous?.status != result.status || previous?.detail != result.detail {
                    out.append(
                        .report(
                            Report(
                                kind: .notified, generation: number, pid: g.pid,
                                message: "health probe failed: \(result); trying again every \(health.interval.humanDescription)")))
                }
                generations[i].probeDueAt = now + health.interval
            }
        case .serving:
            if result.passed {
                generations[i].probeFailures = 0
            } else {
                generations[i].probeFailures += 1
                out.append(
                    .report(
                        Report(
                            kind: .notified, generation: number, pid: g.pid,
                            message: "health probe failed (\(generations[i].probeFailures) of \(health.failuresBeforeRestart)): \(result)"))
                )
                if generations[i].probeFailures >= health.failuresBeforeRestart, phase == .running, attempt == nil, retry == nil {
                    generations[i].probeFailures = 0
                    out.append(
                        .report(
                            Report(
                                kind: .crashed, generation: number, pid: g.pid,
                                message: "unhealthy: \(health.failuresBeforeRestart) failed probes in a row; starting a new generation")))
                    beginAttempt(.respawn, requests: [], now: now, &out)
                }
            }
            if let i = generations.firstIndex(where: { $0.number == number }), generations[i].phase == .serving {
                generations[i].probeDueAt = health.every.map { now + $0 }
            }
        default:
            break
        }
    }

    // MARK: - Exits and deadlines

    private mutating func childExited(pid: Int32, status: ExitStatus, now: Instant, _ out: inout [SupervisorAction]) {
        guard let i = generations.firstIndex(where: { $0.pid == pid }) else { return }
        let g = generations.remove(at: i)
        // Workers the main process left behind have nobody to manage them.
        out.append(.signalGroup(pgid: pid, signal: SIGKILL))
        out.append(.releaseSockets(generation: g.number))
        out.append(.generationsChanged)
        switch g.phase {
        case .starting, .probing, .settling:
            var when = g.phase == .settling ? "while settling" : "before it was ready"
            if g.phase == .probing, let last = g.lastProbe { when += " (last health probe: \(last))" }
            let reason = "exited with \(status) \(when), after \((now - g.spawnedAt).humanDescription)"
            out.append(.report(Report(kind: .failed, generation: g.number, pid: pid, message: reason, elapsed: now - g.spawnedAt)))
            attemptFailed(g.number, reason: reason, now: now, &out)
        case .serving:
            out.append(
                .report(
                    Report(
                        kind: .crashed, generation: g.number, pid: pid,
                        message: "exited unexpectedly with \(status) after serving \((now - (g.servingSince ?? now)).humanDescription)"
                    )))
            if let since = g.servingSince, now - since >= policy.backoffReset {
                backoff = policy.backoffInitial
            }
            if phase == .running, attempt == nil, serving == nil {
                scheduleRespawn(now: now, &out)
            }
        case .draining:
            let took = now - (g.signalledAt ?? now)
            out.append(
                .report(
                    Report(
                        kind: .drained, generation: g.number, pid: pid,
                        message: "exited with \(status), drained after \(took.humanDescription)", elapsed: took)))
        case .failing, .killed:
            out.append(.report(Report(kind: .exited, generation: g.number, pid: pid, message: "exited with \(status)")))
        }
        finishStopIfDone(&out)
    }

    private mutating func tick(now: Instant, _ out: inout [SupervisorAction]) {
        var i = 0
        while i < generations.count {
            let g = generations[i]
            switch g.phase {
            case .starting:
                if let at = g.aliveReadyAt, at <= now {
                    becameReady(at: i, via: "alive for \((at - g.spawnedAt).humanDescription)", now: now, &out)
                } else if let d = g.deadline, d <= now {
                    generations[i].phase = .failing
                    generations[i].aliveReadyAt = nil
                    generations[i].deadline = now + policy.failedStopGrace
                    let reason = "not ready after \(policy.readyTimeout.humanDescription): stopped"
                    out.append(.signalGroup(pgid: g.pid, signal: SIGTERM))
                    out.append(.report(Report(kind: .failed, generation: g.number, pid: g.pid, message: reason)))
                    attemptFailed(g.number, reason: reason, now: now, &out)
                }
            case .probing:
                if let d = g.deadline, d <= now {
                    generations[i].phase = .failing
                    generations[i].probeDueAt = nil
                    generations[i].deadline = now + policy.failedStopGrace
                    let last = g.lastProbe.map { "last health probe: \($0)" } ?? "no health probe answered"
                    let reason = "not healthy after \(policy.readyTimeout.humanDescription) (\(last)): stopped"
                    out.append(.signalGroup(pgid: g.pid, signal: SIGTERM))
                    out.append(.report(Report(kind: .failed, generation: g.number, pid: g.pid, message: reason)))
                    attemptFailed(g.number, reason: reason, now: now, &out)
                } else if let due = g.probeDueAt, due <= now {
                    generations[i].probeDueAt = nil
                    out.append(.probe(generation: g.number))
                }
            case .settling:
                if let d = g.deadline, d <= now { promote(at: i, now: now, &out) }
            case .draining, .failing:
                if let at = g.signalAt, at <= now, let sig = g.pendingSignal {
                    sendGracefulSignal(at: i, signal: sig, why: "retire", now: now, &out)
                } else if let d = g.deadline, d <= now {
                    generations[i].phase = .killed
                    generations[i].deadline = nil
                    out.append(.signalGroup(pgid: g.pid, signal: SIGKILL))
                    let waited = g.phase == .draining ? now - (g.signalledAt ?? now) : policy.failedStopGrace
                    out.append(
                        .report(
                            Report(
                                kind: .killed, generation: g.number, pid: g.pid,
                                message: "still running \(waited.humanDescription) after its signal: sent SIGKILL to its process group"
                            )))
                }
            case .serving:
                if let due = g.probeDueAt, due <= now {
                    generations[i].probeDueAt = nil
                    out.append(.probe(generation: g.number))
                }
            case .killed:
                break
            }
            i += 1
        }
        if let at = respawnAt, at <= now, phase == .running {
            beginAttempt(.respawn, requests: [], now: now, &out)
        }
        if let pending = retry, pending.at <= now, phase == .running {
            beginAttempt(
                pending.attempt.reason, requests: pending.attempt.requests, tries: pending.attempt.tries + 1,
                startedAt: pending.attempt.startedAt, now: now, &out)
        }
        if let due = autoRestartDeadline, due <= now {
            out.append(.report(Report(kind: .queued, message: "auto-restart (every \(policy.autoRestartInterval!.humanDescription))")))
            beginAttempt(.restart, requests: [], now: now, &out)
        }
    }
}
