import BatonProtocol

/// Identifies a request waiting for an answer (a restart, a stop, the
/// start report of a daemon).
public typealias RequestID = Int

/// A restart someone waits for.
public struct RestartRequest: Sendable, Equatable {
    /// Who asked.
    public var id: RequestID
    /// The answer waits until the retired generations have exited.
    public var waitsForDrain: Bool
    /// A probation under way ends now, as passed, and this restart follows
    /// at once (`--watch`: the newest save wins; otherwise a restart waits
    /// for the probation).
    public var endsProbation: Bool

    /// A request.
    public init(id: RequestID, waitsForDrain: Bool = true, endsProbation: Bool = false) {
        self.id = id
        self.waitsForDrain = waitsForDrain
        self.endsProbation = endsProbation
    }
}

/// Everything that can happen to a supervisor.
public enum SupervisorEvent: Sendable, Equatable {
    /// The supervisor has its sockets: bring up the first generation;
    /// `report` waits for its outcome (the start pipe of a daemon).
    case start(report: RequestID?)
    /// A restart was asked for (nil: by a signal; nobody waits for the answer).
    case restartRequested(RestartRequest?)
    /// A stop was asked for.
    case stopRequested(RequestID?)
    /// The shell spawned a generation.
    case spawned(generation: Int, pid: Int32, releaseDir: String)
    /// The shell could not spawn a generation; the sockets it was to open are closed.
    case spawnFailed(generation: Int, reason: String)
    /// A datagram arrived on the notify socket from `pid` (0: unknown sender).
    case notified(pid: Int32, message: NotifyMessage)
    /// A child process exited (the shell has not reaped it yet).
    case childExited(pid: Int32, status: ExitStatus)
    /// A health probe finished.
    case probeFinished(generation: Int, result: ProbeResult)
    /// The proof connection to `socket` of a generation was made (`failure`
    /// nil) or could not be (`failure` says why).
    case proofConnected(generation: Int, socket: SocketID, failure: String?)
    /// Readings of the accept queues that hold a generation's proof connections.
    case proofQueues(generation: Int, lengths: [SocketID: Int])
    /// The processes the main process of a starting generation forked that
    /// run its program (its workers), read now.
    case workersRead(generation: Int, pids: [Int32])
    /// The app answered or closed a proof connection while its listener
    /// still listens: it took the connection from the queue.
    case proofAnswered(generation: Int, socket: SocketID)
    /// The accept queues of a retiring generation's own sockets hold this many connections.
    case queueMeasured(generation: Int, length: Int)
    /// A listening socket stopped listening (a process that holds it shut it down).
    case socketHungUp(SocketID)
    /// Time passed: handle every deadline up to now.
    case tick
    /// Replace the supervisor's program in place (`baton upgrade`, a
    /// deploy with new options); request `id` waits for the outcome.
    case reexecRequested(RequestID)
    /// The re-exec of request `id` could not be carried out; nothing changed.
    case reexecFailed(RequestID, reason: String)
    /// This program took over from the one that re-executed itself.
    case reexecuted
}

/// A socket the shell must open before a spawn.
public struct SocketOpening: Sendable, Equatable {
    /// The new socket.
    public var id: SocketID
    /// The configured listener it is for, or nil for a private health listener.
    public var listener: Int?
    /// The generation it is for.
    public var generation: Int
}

/// How a proof connection reaches a socket that is not the group's target:
/// while it connects, the group's program returns `probeIndex` for packets
/// from the connection's own source port and `otherIndex` for the rest.
public struct ProofSteer: Sendable, Equatable {
    /// The listener.
    public var listener: Int
    /// A socket of the group to attach the program through.
    public var via: SocketID
    /// The slot of the socket to prove.
    public var probeIndex: Int
    /// The slot every other connection goes to (the attached program's).
    public var otherIndex: Int

    /// A route.
    public init(listener: Int, via: SocketID, probeIndex: Int, otherIndex: Int) {
        self.listener = listener
        self.via = via
        self.probeIndex = probeIndex
        self.otherIndex = otherIndex
    }
}

/// The final answer to a request, decided by the machine: its code names the exit code.
public struct Answer: Sendable, Equatable {
    /// nil on success.
    public var code: BatonError.Code?
    /// For people.
    public var message: String
    /// The generation it is about.
    public var generation: Int?
    /// Its main pid.
    public var pid: Int32?
    /// How long it took to be ready.
    public var readyAfter: Duration?
    /// What it retired.
    public var retired: [Int] = []

    /// An answer.
    public init(_ code: BatonError.Code?, _ message: String, generation: Int? = nil, pid: Int32? = nil) {
        self.code = code
        self.message = message
        self.generation = generation
        self.pid = pid
    }
}

/// What the shell must do, in order.
public enum SupervisorAction: Sendable, Equatable {
    /// Open the `open` sockets (closing them again if one fails), then spawn
    /// the generation with `sockets` at descriptors 3, 4, ..., in `release`
    /// (nil: the configured directory, resolved now); feed back `.spawned` or
    /// `.spawnFailed`.
    case spawn(generation: Int, sockets: [SocketID], open: [SocketOpening], release: String?)
    /// Attach a classic BPF program to the SO_REUSEPORT group of `via` that
    /// sends every new connection to slot `index`.
    case steer(listener: Int, via: SocketID, index: Int)
    /// Rename a unix socket from its temporary path over the public path.
    case publish(SocketID)
    /// Read the accept queues of these sockets; feed back `.queueMeasured`.
    case measureQueues(generation: Int, sockets: [SocketID])
    /// `shutdown()` these sockets (they leave their group).
    case shutDown([SocketID])
    /// Listen again on a socket a process shut down.
    case relisten(SocketID)
    /// Close these sockets (and remove a unix socket's temporary file).
    case close([SocketID])
    /// Connect a proof connection to generation `generation`'s own `socket`
    /// from a port of the supervisor's own (through `steer`, when the socket
    /// is not the one clients reach: a program that sends that port alone to
    /// it, attached for the connect and replaced by the plain one after),
    /// then shut its sending side; feed back `.proofConnected`, and
    /// `.proofAnswered` when the app answers or closes it.
    case connectProof(generation: Int, socket: SocketID, steer: ProofSteer?)
    /// Read the accept queues of these sockets; feed back `.proofQueues`.
    case readProofQueues(generation: Int, sockets: [SocketID])
    /// Close every proof connection of this generation.
    case dropProof(generation: Int)
    /// Read the children of `pid` that run its program; feed back `.workersRead`.
    case readWorkers(generation: Int, pid: Int32)
    /// Probe this generation's health over `socket`; feed back `.probeFinished`.
    case probe(generation: Int, socket: SocketID)
    /// Give up on the probe under way; feed back `.probeFinished` with what came.
    case abortProbe(generation: Int)
    /// Send a signal to one process.
    case signal(pid: Int32, signal: Int32)
    /// Send a signal to a whole process group.
    case signalGroup(pgid: Int32, signal: Int32)
    /// Log this and pass it to whoever waits for a request.
    case report(Report)
    /// The generations that are up changed: rewrite the status file with these `generation:pid` entries.
    case statusChanged([StatusEntry])
    /// Tell systemd (its notify socket, if it gave one).
    case notifySystemd(String)
    /// Send this answer to the requester.
    case answer(RequestID, Answer)
    /// Every generation is gone: release everything, then send these answers and exit with `code`.
    case exit(code: Int32, answers: [RequestID: Answer])
    /// The machine is quiet: hand its state over and exec the new program
    /// for request `id` (feed back `.reexecFailed` if that cannot be done).
    case reexec(RequestID)
}

/// One line of Server::Starter's status file.
public struct StatusEntry: Sendable, Equatable {
    /// The generation.
    public var generation: Int
    /// Its main pid.
    public var pid: Int32

    /// An entry.
    public init(generation: Int, pid: Int32) {
        self.generation = generation
        self.pid = pid
    }
}
