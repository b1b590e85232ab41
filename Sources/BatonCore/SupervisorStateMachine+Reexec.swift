// Re-exec in place: the supervisor replaces its own program and hands its
// state to the new one. The machine decides when (once it is quiet) and what
// is handed over (`Snapshot`); the shell writes it, execs and reads it back.
extension SupervisorStateMachine {
    /// Everything a new program needs to take up where this one is: the
    /// machine's state at a quiet moment (no attempt, retry or respawn under
    /// way, every generation serving, no probe running).
    public struct Snapshot: Sendable, Equatable {
        /// How each configured listener is handed to generations.
        public var listeners: [ListenerMode]
        /// The supervisor's first socket of each listener.
        public var listenerSockets: [SocketID]
        /// Retired listeners and the first generation that does not get each.
        public var retiredListeners: [Int: Int]
        /// The live generations, oldest first.
        public var generations: [Generation]
        /// The last generation number handed out.
        public var lastGeneration: Int
        /// Restarts asked for while the re-exec waited: they follow it.
        public var queued: [RestartRequest]?
        /// When the last restart (or the start) was made.
        public var lastRestartAt: Instant?
        /// The delay the next respawn will wait.
        public var backoff: Duration
        /// The last finished attempt.
        public var lastAttempt: AttemptRecord?
        /// The sockets it holds.
        public var sockets: [SocketID: SocketRecord]
        /// The SO_REUSEPORT group of each steered listener.
        public var groups: [Int: ReuseportGroup]
        /// The last `generation:pid` list.
        public var statusEntries: [StatusEntry]
        /// The next socket id to hand out.
        public var nextSocketID: SocketID
        /// The app was seen to send `READY=1`.
        public var appSendsReady = false
        /// The deaths in a row of the last release that died soon after getting ready.
        public var crashLoop: CrashLoop?
        /// The last release that served stably.
        public var stableRelease: String?
        /// The release respawns start instead of the configured one (a rollback).
        public var pinnedRelease: String?

        /// A snapshot.
        public init(
            listeners: [ListenerMode], generations: [Generation], lastGeneration: Int, queued: [RestartRequest]?, lastRestartAt: Instant?,
            backoff: Duration, lastAttempt: AttemptRecord?, sockets: [SocketID: SocketRecord], groups: [Int: ReuseportGroup],
            statusEntries: [StatusEntry], nextSocketID: SocketID, listenerSockets: [SocketID]? = nil, retiredListeners: [Int: Int] = [:]
        ) {
            self.listeners = listeners
            self.listenerSockets = listenerSockets ?? Array(listeners.indices)
            self.retiredListeners = retiredListeners
            self.generations = generations
            self.lastGeneration = lastGeneration
            self.queued = queued
            self.lastRestartAt = lastRestartAt
            self.backoff = backoff
            self.lastAttempt = lastAttempt
            self.sockets = sockets
            self.groups = groups
            self.statusEntries = statusEntries
            self.nextSocketID = nextSocketID
        }
    }

    /// True when nothing is under way that a new program could not pick up:
    /// running, no attempt, retry or respawn, nobody waiting for a drain or a
    /// stop, every generation serving and no health probe running.
    public var isQuiet: Bool {
        guard phase == .running, attempt == nil, retry == nil, respawnAt == nil, stopRequests.isEmpty, drainWaiters.isEmpty else {
            return false
        }
        return generations.allSatisfy { g in
            guard case .serving(let probe, _) = g.phase else { return false }
            if case .running = probe { return false }
            return true
        }
    }

    /// The state to hand over; nil unless the machine is quiet.
    public var snapshot: Snapshot? {
        guard isQuiet else { return nil }
        var s = Snapshot(
            listeners: listeners, generations: generations, lastGeneration: lastGeneration, queued: queued, lastRestartAt: lastRestartAt,
            backoff: backoff, lastAttempt: lastAttempt, sockets: sockets, groups: groups, statusEntries: statusEntries,
            nextSocketID: nextSocketID, listenerSockets: listenerSockets, retiredListeners: retiredListeners)
        s.appSendsReady = appSendsReady
        s.crashLoop = crashLoop
        s.stableRelease = stableRelease
        s.pinnedRelease = pinnedRelease
        return s
    }

    /// A machine that takes up from `snapshot` with `policy` (the new
    /// program's): running, its generations serving. Feed it `.reexecuted`
    /// to begin the restarts that waited for the re-exec.
    public init(restoring snapshot: Snapshot, policy: SupervisorPolicy) {
        self.init(policy: policy)
        listeners = snapshot.listeners
        listenerSockets = snapshot.listenerSockets
        retiredListeners = snapshot.retiredListeners
        phase = .running
        generations = snapshot.generations
        lastGeneration = snapshot.lastGeneration
        queued = snapshot.queued
        lastRestartAt = snapshot.lastRestartAt
        backoff = snapshot.backoff
        lastAttempt = snapshot.lastAttempt
        sockets = snapshot.sockets
        groups = snapshot.groups
        statusEntries = snapshot.statusEntries
        nextSocketID = snapshot.nextSocketID
        appSendsReady = snapshot.appSendsReady
        crashLoop = snapshot.crashLoop
        stableRelease = snapshot.stableRelease
        pinnedRelease = snapshot.pinnedRelease
    }

    mutating func reexecRequested(_ id: RequestID, _ out: inout [SupervisorAction]) {
        guard phase == .running else {
            out.append(.answer(id, Answer(.busy, "re-exec refused: the supervisor is stopping")))
            return
        }
        guard reexecPending == nil else {
            out.append(.answer(id, Answer(.busy, "re-exec refused: another re-exec is under way; try again once it finished")))
            return
        }
        reexecPending = id
        if !isQuiet { out.append(.report(Reports.reexecWaiting(generations.count))) }
    }

    mutating func reexecFailed(_ id: RequestID, reason: String, now: Instant, _ out: inout [SupervisorAction]) {
        if reexecPending == id { reexecPending = nil }
        out.append(.report(Reports.reexecFailed(reason)))
        out.append(.answer(id, Answer(.upgradeFailed, "re-exec failed: \(reason); nothing changed")))
        if let s = serving { out.append(.notifySystemd("READY=1\nSTATUS=serving generation \(s.number) (pid \(s.pid))")) }
        resumeQueuedRestart(now: now, &out)
    }

    /// The restarts that waited for a re-exec.
    mutating func resumeQueuedRestart(now: Instant, _ out: inout [SupervisorAction]) {
        guard phase == .running, reexecPending == nil, attempt == nil, retry == nil, let next = queued else { return }
        queued = nil
        beginAttempt(.restart, requests: next, now: now, &out)
    }

    /// Emits the pending re-exec once nothing is under way; last of the
    /// actions, since the shell execs when it carries it out.
    mutating func reexecIfQuiet(now: Instant, _ out: inout [SupervisorAction]) {
        guard let id = reexecPending, isQuiet else { return }
        reexecPending = nil
        out.append(.notifySystemd("RELOADING=1\nMONOTONIC_USEC=\(now.nanoseconds / 1000)\nSTATUS=re-executing the supervisor"))
        out.append(.reexec(id))
    }
}

extension Generation {
    /// A generation as a snapshot describes it.
    public init(
        restoring number: Int, pid: Int32, releaseDir: String, spawnedAt: Instant, phase: Phase, sockets: [SocketID],
        healthSocket: SocketID?, readyAt: Instant?, servingSince: Instant?, status: String?, lastProbe: ProbeResult?
    ) {
        self.init(
            number: number, pid: pid, releaseDir: releaseDir, spawnedAt: spawnedAt, phase: phase, sockets: sockets,
            healthSocket: healthSocket, readyAt: readyAt, servingSince: servingSince, status: status, lastProbe: lastProbe)
    }
}

extension SocketRecord {
    /// A socket record as a snapshot describes it.
    public init(restoring listener: Int?, owner: Int?, inGroup: Bool, published: Bool) {
        self.init(listener: listener, owner: owner, inGroup: inGroup, published: published, isOpen: true)
    }
}

extension ReuseportGroup {
    /// A group as a snapshot describes it.
    public init(restoring members: [SocketID], target: SocketID?, attachedIndex: Int?) {
        self.init()
        for m in members { join(m) }
        self.target = target
        self.attachedIndex = attachedIndex
    }
}

extension SupervisorStateMachine.CrashLoop {
    /// A crash loop as a snapshot describes it.
    public init(
        restoring releaseDir: String, deaths: Int, lastGeneration: Int, lastReason: String, lastAt: Instant, rolledBackTo: String?
    ) {
        self.init(
            releaseDir: releaseDir, deaths: deaths, lastGeneration: lastGeneration, lastReason: lastReason, lastAt: lastAt,
            rolledBackTo: rolledBackTo)
    }
}

extension SupervisorStateMachine.AttemptRecord {
    /// An attempt record as a snapshot describes it.
    public init(restoring reason: AttemptReason, outcome: AttemptOutcome, startedAt: Instant, finishedAt: Instant) {
        self.init(reason: reason, outcome: outcome, startedAt: startedAt, finishedAt: finishedAt)
    }
}
