#if canImport(Glibc)
    import Glibc
#endif

/// The rules a supervisor follows: how it judges readiness, how long each wait
/// may last, which signals it sends.
public struct SupervisorPolicy: Sendable, Equatable {
    /// How a new generation proves it is ready.
    public enum Readiness: Sendable, Equatable, CustomStringConvertible {
        /// Only `READY=1` on the notify socket counts.
        case notify
        /// Being alive for this long counts (Server::Starter's `--interval`).
        case alive(Duration)
        /// `READY=1` if it comes first, otherwise alive for `fallback`.
        case auto(fallback: Duration)

        /// True when `READY=1` makes a generation ready (not in `.alive`).
        public var acceptsReadyMessage: Bool {
            if case .alive = self { return false }
            return true
        }

        public var description: String {
            switch self {
            case .notify: return "notify"
            case .alive(let d): return d.humanDescription
            case .auto(let d): return "auto (READY=1, else alive \(d.humanDescription))"
            }
        }
    }

    /// How a new generation proves it is ready.
    public var readiness: Readiness = .auto(fallback: .seconds(1))
    /// How long a ready generation must stay up before the old one is signalled.
    public var settle: Duration = .seconds(1)
    /// A generation not ready by then is stopped and the attempt fails.
    public var readyTimeout: Duration = .seconds(60)
    /// Extra wait between the new generation settling and the old one's signal.
    public var killOldDelay: Duration = .zero
    /// How long a signalled generation may take to exit before SIGKILL;
    /// nil waits forever (Server::Starter's behaviour).
    public var drainTimeout: Duration? = .seconds(30)
    /// The signal that asks an old generation to finish (Starman needs QUIT).
    public var signalOnHup: Int32 = SIGTERM
    /// The signal every generation gets when the supervisor stops.
    public var signalOnTerm: Int32 = SIGTERM
    /// How long a failed (not ready) generation gets between TERM and KILL.
    public var failedStopGrace: Duration = .seconds(5)
    /// The first delay before a crashed generation is started again.
    public var backoffInitial: Duration = .milliseconds(100)
    /// The longest delay between two starts of a crashing app.
    public var backoffMax: Duration = .seconds(30)
    /// A generation that served this long resets the backoff.
    public var backoffReset: Duration = .seconds(60)
    /// When the very first generation fails (after its retries), stop with
    /// `startFailed` instead of retrying with backoff (what `baton run`,
    /// `baton start` and `start_server` do).
    public var exitWhenFirstFails: Bool = true
    /// How many more times a failed attempt is tried, `retryDelay` apart,
    /// before it counts as failed (0 for baton; start_server retries like
    /// Server::Starter, but a bounded number of times).
    public var attemptRetries: Int = 0
    /// The wait before a failed attempt is tried again.
    public var retryDelay: Duration = .seconds(1)
    /// Steered listeners: after the old generation's accept queue read
    /// empty, how long to wait before its signal. Handshakes that began on
    /// its socket before the steering complete there a round trip later, and
    /// connections it has just accepted get their answers.
    public var handshakeWindow: Duration = .milliseconds(200)
    /// Steered listeners: how often a retiring generation's accept queues
    /// are read while they drain (there is no event for "empty").
    public var queuePollInterval: Duration = .milliseconds(5)
    /// Steered listeners: the longest wait for a retiring generation's
    /// queues to drain before it is signalled anyway.
    public var queueTimeout: Duration = .seconds(10)
    /// `net.ipv4.tcp_migrate_req=1` here: shutting a drained socket down
    /// moves late handshakes to the serving one, so no window is needed.
    public var queueMigration = false
    /// Probe each new generation before it counts as ready (and, with
    /// `every`, while it serves).
    public var health: HealthCheck?
    /// Restart by itself this often (Server::Starter's `--enable-auto-restart`).
    public var autoRestartInterval: Duration?

    /// The default policy.
    public init() {}
}

/// A health probe of exactly one generation, over a private listener only
/// the supervisor connects to.
public struct HealthCheck: Sendable, Equatable {
    /// The path to GET, such as `/health`.
    public var path: String
    /// One probe's deadline.
    public var timeout: Duration = .seconds(2)
    /// The wait between probes while a generation comes up.
    public var interval: Duration = .milliseconds(200)
    /// The statuses that pass.
    public var expected: ClosedRange<Int> = 200...299
    /// While a generation serves, probe it this often (nil: never).
    public var every: Duration?
    /// Failed probes in a row that make a serving generation be replaced.
    public var failuresBeforeRestart = 3

    /// A probe of `path` with the default settings.
    public init(path: String) {
        self.path = path
    }
}

/// What one probe found.
public struct ProbeResult: Sendable, Equatable, CustomStringConvertible {
    /// The HTTP status, if an answer came.
    public var status: Int?
    /// The status line's reason and the body's first line, or what went wrong.
    public var detail: String
    /// How long it took.
    public var latency: Duration
    /// True when the status was expected.
    public var passed: Bool

    /// A result.
    public init(status: Int?, detail: String, latency: Duration, passed: Bool) {
        self.status = status
        self.detail = detail
        self.latency = latency
        self.passed = passed
    }

    public var description: String {
        (status.map { "\($0) " } ?? "") + detail + " (\(latency.humanDescription))"
    }
}
