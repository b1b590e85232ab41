/// The end of a generation as a list of steps, carried out in order: the
/// same path for a generation retired by a restart, stopped with the
/// supervisor, or failed before it was ready. The main process exiting ends
/// it at any step.
public struct Teardown: Sendable, Equatable {
    /// Why the generation goes.
    public enum Reason: String, Sendable, Equatable {
        /// A newer generation took over.
        case retire
        /// The supervisor stops.
        case stop
        /// It never became ready.
        case failed
    }

    /// One step.
    public enum Step: Sendable, Equatable {
        /// Wait this long (`--kill-old-delay`, the handshake window).
        case pause(Duration)
        /// Wait until the accept queues of its own sockets read empty, at most this long.
        case awaitEmptyQueue(timeout: Duration)
        /// Shut its own sockets down: with `tcp_migrate_req=1` the kernel
        /// moves handshakes still under way to the serving socket.
        case shutDownSockets
        /// Send this graceful signal to the main process.
        case signal(Int32)
        /// Send this signal to the whole process group.
        case signalGroup(Int32)
        /// Wait for the main process to exit, at most this long (nil: for ever).
        case awaitExit(timeout: Duration?)
        /// SIGKILL the process group, then wait for the main process to go.
        case killGroup
    }

    /// Why.
    public let reason: Reason
    /// The steps not begun yet.
    public internal(set) var remaining: [Step]
    /// The step under way.
    public internal(set) var current: Step?
    /// When the step under way gives up (a pause ends, a wait times out).
    public internal(set) var deadline: Instant?
    /// Under `awaitEmptyQueue`: when to read the queues next (nil: a reading is under way).
    public internal(set) var nextReading: Instant?
    /// When the teardown began.
    public let startedAt: Instant
    /// When the step under way began.
    public internal(set) var stepStartedAt: Instant
    /// How many `awaitEmptyQueue` steps have begun.
    public internal(set) var queueWaits = 0
    /// The first queue length read in the `awaitEmptyQueue` step under way.
    public internal(set) var queueAtStep: Int?
    /// When it got its graceful signal.
    public internal(set) var signalledAt: Instant?
    /// True once its process group got SIGKILL.
    public internal(set) var killed = false

    /// A teardown beginning at `now`.
    public init(_ reason: Reason, steps: [Step], now: Instant) {
        self.reason = reason
        self.remaining = steps
        self.startedAt = now
        self.stepStartedAt = now
    }

    /// True until its graceful signal went out.
    public var signalPending: Bool {
        signalledAt == nil && !killed
    }
}
