/// How generations get the socket of one configured listener.
public enum ListenerMode: String, Sendable, Equatable, CaseIterable {
    /// One socket, held by every generation (systemd's sockets, UDP, `--listen-mode shared`).
    case shared
    /// TCP: a SO_REUSEPORT socket per generation; new connections are
    /// steered to the serving one by a classic BPF program.
    case steered
    /// Unix: a socket per generation, renamed over the public path when it takes over.
    case renamed
}

/// A socket the supervisor holds.
public struct SocketRecord: Sendable, Equatable {
    /// The configured listener it is for (nil: a private health listener).
    public let listener: Int?
    /// The generation that holds it; nil for a spare or a shared socket.
    public internal(set) var owner: Int?
    /// Steered: still a member of its SO_REUSEPORT group.
    public internal(set) var inGroup: Bool
    /// Renamed: bound at, or renamed to, the public path.
    public internal(set) var published: Bool
    /// False between the spawn that is to open it and that spawn's outcome.
    public internal(set) var isOpen = true
}

/// The supervisor's decisions, free of I/O: `(state, event, now) -> actions`.
///
/// The shell feeds it every event with the current monotonic time, carries
/// out the returned actions in order (feeding back the events they
/// produce), and arms one timer for `nextDeadline`.
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
        public internal(set) var requests: [RestartRequest]
        /// When it began (the first try).
        public let startedAt: Instant
        /// Which try this is, from 1.
        public internal(set) var tries: Int
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

    /// A generation that took over and is on probation: the ones it replaced
    /// wait, unsignalled, in reserve until `until`.
    public struct Probation: Sendable, Equatable {
        /// The generation on probation.
        public let generation: Int
        /// The generations kept in reserve, oldest first.
        public internal(set) var reserve: [Int]
        /// When it began and when it passes.
        public let startedAt: Instant, until: Instant
        /// When its accept queue is read next (nil: not read, or a reading is under way).
        var nextReading: Instant?
        /// The last reading, and when the queue last read empty or shrank
        /// (the app took a connection) and whether it grew since.
        var lastLength = 0
        var lastProgress: Instant
        var grew = false
    }

    /// Generations of one release that died soon after getting ready, in a row.
    public struct CrashLoop: Sendable, Equatable {
        /// The release (realpath).
        public let releaseDir: String
        /// How many in a row.
        public internal(set) var deaths: Int
        /// The last one: its number, what ended it, and how long after it got ready.
        public internal(set) var lastGeneration: Int
        public internal(set) var lastReason: String
        public internal(set) var lastAt: Instant
        /// The release started instead, if it was rolled back (`rolledBackTo`).
        public internal(set) var rolledBackTo: String?
    }

    /// Requesters of a restart that succeeded, waiting for the retired generations to exit.
    struct DrainWaiter: Sendable, Equatable {
        var requests: [RequestID]
        var answer: Answer
        var generations: Set<Int>
    }

    /// The rules.
    public let policy: SupervisorPolicy
    /// How each configured listener is handed to generations.
    public internal(set) var listeners: [ListenerMode]
    /// The supervisor's first socket of each listener (a shared listener's only one).
    public internal(set) var listenerSockets: [SocketID]
    /// Listeners taken out of the configuration, each with the first
    /// generation that does not get it; closed once no older one is live.
    public internal(set) var retiredListeners: [Int: Int] = [:]
    /// Where the supervisor stands.
    public internal(set) var phase: Phase = .idle
    /// The live generations, oldest first.
    public internal(set) var generations: [Generation] = []
    /// The last generation number handed out.
    public internal(set) var lastGeneration = 0
    /// The attempt in flight, if any.
    public internal(set) var attempt: Attempt?
    /// Requests coalesced into one more restart after the current attempt.
    public internal(set) var queued: [RestartRequest]?
    /// When a crashed app is started again, if scheduled.
    public internal(set) var respawnAt: Instant?
    /// A failed attempt waiting to be tried again, and when.
    public internal(set) var retry: (attempt: Attempt, at: Instant)?
    /// When the last restart (or the start) was made, for auto-restart.
    public internal(set) var lastRestartAt: Instant?
    /// The delay the next respawn will wait.
    public internal(set) var backoff: Duration
    /// The last finished attempt.
    public internal(set) var lastAttempt: AttemptRecord?
    /// The exit code once stopping.
    public internal(set) var exitCode: Int32 = 0
    /// The sockets it holds.
    public internal(set) var sockets: [SocketID: SocketRecord] = [:]
    /// The SO_REUSEPORT group of each steered listener.
    public internal(set) var groups: [Int: ReuseportGroup] = [:]
    /// The last `generation:pid` list sent for the status file.
    public internal(set) var statusEntries: [StatusEntry] = []
    /// A re-exec asked for and not carried out yet: it waits until the
    /// machine is quiet (`isQuiet`); restarts asked for meanwhile wait for it.
    public internal(set) var reexecPending: RequestID?
    /// The generation on probation, if any (its attempt is still in flight).
    public internal(set) var probation: Probation?
    /// Generations of the previous release started only to answer the
    /// connections left in the queue of one that exited on probation; each
    /// is retired once that queue is empty, and never serves new connections.
    public internal(set) var rescuers: Set<Int> = []
    /// The app sends `READY=1`: a generation did. From then on it is a
    /// condition of readiness under `--ready auto`.
    public internal(set) var appSendsReady = false
    /// The deaths in a row of the last release that died soon after getting ready.
    public internal(set) var crashLoop: CrashLoop?
    /// The last release that served stably: one of its generations was
    /// retired by a restart, or served `crashLoopWindow`.
    public internal(set) var stableRelease: String?
    /// The release respawns start while a crash-looping one is rolled back
    /// (nil: the configured directory). A restart asked for clears it.
    public internal(set) var pinnedRelease: String?
    var stopRequests: [RequestID] = []
    var drainWaiters: [DrainWaiter] = []
    var nextSocketID: SocketID = 0

    /// Creates a machine with `policy`, for `listeners` whose first sockets
    /// the shell has opened as sockets `0..<listeners.count`.
    public init(policy: SupervisorPolicy, listeners: [ListenerMode] = []) {
        self.policy = policy
        self.listeners = listeners
        self.listenerSockets = Array(listeners.indices)
        self.backoff = policy.backoffInitial
        for (i, mode) in listeners.enumerated() { recordFirstSocket(i, of: i, mode) }
        nextSocketID = listeners.count
    }

    /// The generation that serves now, if any.
    public var serving: Generation? { generations.last { $0.isServing } }

    /// The generation `number`, if live.
    public func generation(_ number: Int) -> Generation? { generations.first { $0.number == number } }

    /// The earliest deadline, for the shell's one timer; `nil`: wait for events only.
    public var nextDeadline: Instant? {
        var candidates = [respawnAt, retry?.at, autoRestartDeadline]
        candidates += [probation?.until, probation?.nextReading]
        for g in generations {
            candidates += g.proof.values.map(\.instant)
            switch g.phase {
            case .starting(let readyBy, let aliveAt): candidates += [readyBy, aliveAt, g.notBefore, g.workersReadAt]
            case .probing(let readyBy, let probe): candidates += [readyBy, probe.instant]
            case .settling(let until): candidates.append(until)
            case .serving(let probe, _): candidates.append(probe?.instant)
            case .tearingDown(let t): candidates += [t.deadline, t.nextReading]
            }
        }
        return candidates.compactMap { $0 }.min()
    }

    /// When an auto-restart is due: one interval after the serving
    /// generation took over (as Server::Starter counts it: from the moment
    /// its new server is up), or two when old generations still drain then.
    var autoRestartDeadline: Instant? {
        guard phase == .running, let interval = policy.autoRestartInterval, let last = serving?.servingSince,
            attempt == nil, retry == nil
        else { return nil }
        let draining = generations.contains { $0.teardown != nil }
        return draining ? last + interval * 2 : last + interval
    }

    /// Handles one event that happened at `now` and returns what to do.
    public mutating func handle(_ event: SupervisorEvent, now: Instant) -> [SupervisorAction] {
        var out: [SupervisorAction] = []
        switch event {
        case .start(let report):
            guard phase == .idle else { break }
            phase = .running
            beginAttempt(.initial, requests: [], report: report, now: now, &out)
        case .restartRequested(let request):
            restartRequested(request, now: now, &out)
        case .stopRequested(let request):
            stopRequested(request, code: 0, now: now, &out)
        case .spawned(let number, let pid, let dir):
            spawned(number, pid: pid, releaseDir: dir, now: now, &out)
        case .spawnFailed(let number, let reason):
            spawnFailed(number, reason: reason, now: now, &out)
        case .notified(let pid, let message):
            notified(pid: pid, message: message, now: now, &out)
        case .childExited(let pid, let status):
            childExited(pid: pid, status: status, now: now, &out)
        case .probeFinished(let number, let result):
            probeFinished(number, result, now: now, &out)
        case .proofConnected(let number, let socket, let failure):
            proofConnected(number, socket: socket, failure: failure, now: now, &out)
        case .proofQueues(let number, let lengths):
            proofQueues(number, lengths: lengths, now: now, &out)
        case .proofAnswered(let number, let socket):
            proofAnswered(number, socket: socket, now: now, &out)
        case .workersRead(let number, let pids):
            workersRead(number, pids: pids, now: now, &out)
        case .queueMeasured(let number, let length):
            queueMeasured(number, length: length, now: now, &out)
        case .socketHungUp(let id):
            socketHungUp(id, &out)
        case .tick:
            tick(now: now, &out)
        case .reexecRequested(let id):
            reexecRequested(id, &out)
        case .reexecFailed(let id, let reason):
            reexecFailed(id, reason: reason, now: now, &out)
        case .reexecuted:
            resumeQueuedRestart(now: now, &out)
        }
        // The status file is rewritten before any answer goes out, so that a
        // requester that reads it on its answer finds it current.
        var status: [SupervisorAction] = []
        updateStatusFile(&status)
        if let first = out.firstIndex(where: { if case .answer = $0 { true } else if case .exit = $0 { true } else { false } }) {
            out.insert(contentsOf: status, at: first)
        } else {
            out += status
        }
        // Last: the shell execs when it carries this out.
        reexecIfQuiet(now: now, &out)
        return out
    }

    /// Rewrites the status file when the generations that are up changed.
    mutating func updateStatusFile(_ out: inout [SupervisorAction]) {
        let entries = generations.filter(\.isUp).sorted { $0.number < $1.number }.map {
            StatusEntry(generation: $0.number, pid: $0.pid)
        }
        if entries != statusEntries {
            statusEntries = entries
            out.append(.statusChanged(entries))
        }
    }

    /// Handles every deadline up to `now`.
    mutating func tick(now: Instant, _ out: inout [SupervisorAction]) {
        for number in generations.map(\.number) {
            guard let i = generations.firstIndex(where: { $0.number == number }) else { continue }
            switch generations[i].phase {
            case .starting(let readyBy, _):
                proofTick(at: i, now: now, &out)
                guard case .starting = generations[i].phase else { break }
                checkReady(at: i, now: now, &out)
                guard case .starting = generations[i].phase else { break }
                if readyBy <= now {
                    failBeforeReady(
                        at: i, reason: Reports.notReady(after: policy.readyTimeout, missing: missing(generations[i])), now: now, &out)
                }
            case .probing(let readyBy, let probe):
                if readyBy <= now {
                    let last = generations[i].lastProbe.map { "last health probe: \($0)" } ?? "no health probe answered"
                    if case .running = probe { out.append(.abortProbe(generation: number)) }
                    failBeforeReady(at: i, reason: Reports.notHealthy(after: policy.readyTimeout, last), now: now, &out)
                } else {
                    probeTick(at: i, probe, now: now, &out)
                }
            case .settling(let until):
                if until <= now { promote(at: i, now: now, &out) }
            case .serving(let probe?, _):
                probeTick(at: i, probe, now: now, &out)
            case .serving(nil, _):
                break
            case .tearingDown:
                teardownTick(at: i, now: now, &out)
            }
        }
        probationTick(now: now, &out)
        attemptTick(now: now, &out)
    }

    /// The name `status` shows for `g`: its phase's, or `probation` for the
    /// one on probation and `reserve` for those it may fall back to.
    public func stateName(of g: Generation) -> String {
        if rescuers.contains(g.number), g.teardown == nil { return "rescuing" }
        if let p = probation {
            if p.generation == g.number { return "probation" }
            if g.isServing, p.reserve.contains(g.number) { return "reserve" }
        }
        return g.stateName
    }
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

/// The outcome of a restart (or of the initial start).
public enum AttemptOutcome: Sendable, Equatable {
    /// The generation is ready and serving; the `retired` ones were signalled.
    case succeeded(generation: Int, pid: Int32, readyAfter: Duration, retired: [Int])
    /// The generation failed; whatever served before still serves.
    case failed(generation: Int?, reason: String)
    /// The request was not carried out (the supervisor is stopping).
    case rejected(reason: String)
}
