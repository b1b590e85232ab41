/// One generation of the app: its main process, its process group (same
/// number), its release directory, its sockets and where it stands.
public struct Generation: Sendable, Equatable {
    /// Where a generation stands; each phase carries what it waits for.
    public enum Phase: Sendable, Equatable {
        /// Spawned, not ready yet: stopped at `readyBy`; ready by being alive at `aliveAt`.
        case starting(readyBy: Instant, aliveAt: Instant?)
        /// Said it is ready; its health probe has not passed yet.
        case probing(readyBy: Instant, probe: ProbeSchedule)
        /// Ready, waiting out `--settle` before it takes over.
        case settling(until: Instant)
        /// The generation that serves; probed on `probe` if `--health-every`.
        case serving(probe: ProbeSchedule?, failures: Int)
        /// Being retired, stopped or failed, step by step.
        case tearingDown(Teardown)
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
    /// The sockets it was given, in descriptor order (its health listener last).
    public internal(set) var sockets: [SocketID]
    /// Its private health-probe listener, if it has one.
    public internal(set) var healthSocket: SocketID?
    /// When it became ready.
    public internal(set) var readyAt: Instant?
    /// When it took over serving.
    public internal(set) var servingSince: Instant?
    /// The last `STATUS=` it sent.
    public internal(set) var status: String?
    /// The last health probe's result.
    public internal(set) var lastProbe: ProbeResult?
    /// `READY=1` came from its main process.
    public internal(set) var notified = false
    /// It must prove that it accepts: it has sockets of its own (TCP or unix
    /// stream) that the supervisor can reach it on before any client does.
    public internal(set) var needsProof = false
    /// The probe connections of that proof, one per socket of its own, while
    /// none has been taken yet.
    public internal(set) var proof: [SocketID: ProofProbe] = [:]
    /// How it proved that it accepts, once it did.
    public internal(set) var proven: String?
    /// Proof connections that could not be made, by socket, in a row.
    public internal(set) var proofFailures: [SocketID: Int] = [:]
    /// It counts as ready no sooner than this (`start_server --interval`).
    public internal(set) var notBefore: Instant?
    /// While it starts: the processes its main process forked (running the
    /// same program: its workers), as last read, and when they are read next.
    public internal(set) var workers: Set<Int32> = []
    public internal(set) var workersReadAt: Instant?
    /// How many of those exited before it accepted, and when the first did.
    public internal(set) var workerExits = 0
    public internal(set) var firstWorkerExit: Instant?

    /// The phase's name, as `status` shows it: starting, probing, settling,
    /// serving, draining, failing or killed.
    public var stateName: String {
        switch phase {
        case .starting: return "starting"
        case .probing: return "probing"
        case .settling: return "settling"
        case .serving: return "serving"
        case .tearingDown(let t):
            if t.killed { return "killed" }
            return t.reason == .failed ? "failing" : "draining"
        }
    }

    /// Drops what only counts while it starts (its proof, its workers'
    /// readings): a serving generation is the same whether it came up here
    /// or was handed over by a re-exec.
    mutating func forgetStart() {
        notified = false
        needsProof = false
        proof = [:]
        proven = nil
        proofFailures = [:]
        notBefore = nil
        workers = []
        workersReadAt = nil
        workerExits = 0
        firstWorkerExit = nil
    }

    /// True while it serves.
    public var isServing: Bool {
        if case .serving = phase { return true }
        return false
    }

    /// The teardown under way, if any.
    public var teardown: Teardown? {
        if case .tearingDown(let t) = phase { return t }
        return nil
    }

    /// True once it counts as up (ready, not failed): Server::Starter's status file lists it.
    public var isUp: Bool {
        guard readyAt != nil else { return false }
        return teardown?.reason != .failed
    }
}

/// One probe connection of the proof of readiness: the supervisor connects
/// to a socket of the generation's own, where no client is sent yet, and
/// watches the app take it from the accept queue.
public enum ProofProbe: Sendable, Equatable {
    /// To be connected then (at the spawn; again after a connect failed).
    case due(Instant)
    /// The shell is connecting it.
    case connecting
    /// Connected and not known to be taken yet. `seen`: a reading found the
    /// queue holding it (a later empty reading then means the app took it);
    /// the next reading is due at `nextReading` (nil: one is under way).
    case waiting(seen: Bool, nextReading: Instant?)

    /// The instant the machine must act at, if any.
    public var instant: Instant? {
        switch self {
        case .due(let at): return at
        case .connecting: return nil
        case .waiting(_, let next): return next
        }
    }
}

/// When a health probe is due, or the deadline of the one under way.
public enum ProbeSchedule: Sendable, Equatable {
    /// The next probe starts then.
    case due(Instant)
    /// A probe is under way; it fails if no answer comes by then.
    case running(deadline: Instant)

    /// The instant the machine must act at.
    public var instant: Instant {
        switch self {
        case .due(let at): return at
        case .running(let deadline): return deadline
        }
    }
}

/// How a child process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// It called exit with this code.
    case exited(Int32)
    /// A signal killed it.
    case signaled(Int32)

    public var description: String {
        switch self {
        case .exited(let code): return "exit code \(code)"
        case .signaled(let sig): return OptionParsing.signalName(sig)
        }
    }

    /// The status as a clause: `exited with exit code 1`, `was killed by SIGKILL`.
    public var clause: String {
        switch self {
        case .exited: return "exited with \(self)"
        case .signaled: return "was killed by \(self)"
        }
    }
}
