#if canImport(Glibc)
    import Glibc
#endif

/// The rules a supervisor follows: how it judges readiness, how long each wait
/// may last, which signals it sends.
public struct SupervisorPolicy: Sendable, Equatable {
    /// How a new generation proves it is ready.
    public enum Readiness: Sendable, Equatable, CustomStringConvertible {
        /// Proof, plus `READY=1` where it must come: `READY=1` is required
        /// and, where the generation has sockets of its own, a probe
        /// connection accepted on one of them.
        case notify
        /// The clock: being alive for this long counts (Server::Starter's
        /// `--interval`). A guess: it proves nothing about serving.
        case alive(Duration)
        /// The default. A generation with sockets of its own is ready once it
        /// took a probe connection from one of them, and `READY=1` too once
        /// the app has been seen to send it. One without (shared, UDP or no
        /// listeners): `READY=1`, otherwise alive for `fallback`.
        case auto(fallback: Duration)

        /// True when `READY=1` counts (not in `.alive`).
        public var acceptsReadyMessage: Bool {
            if case .alive = self { return false }
            return true
        }

        /// True when a probe connection must be accepted (not in `.alive`).
        public var wantsProof: Bool { acceptsReadyMessage }

        public var description: String {
            switch self {
            case .notify: return "notify (READY=1, and a probe connection accepted on its own socket)"
            case .alive(let d): return "\(d.humanDescription) alive (a guess: no proof)"
            case .auto(let d):
                return "auto (a probe connection accepted on its own socket, and READY=1 where the app sends it; "
                    + "without a socket of its own: READY=1, else alive \(d.humanDescription))"
            }
        }
    }

    /// How a new generation proves it is ready.
    public var readiness: Readiness = .auto(fallback: .seconds(1))
    /// A generation counts as ready no sooner than this after its spawn,
    /// whatever proved it (`start_server --interval`: Server::Starter's
    /// meaning, kept).
    public var minimumAlive: Duration = .zero
    /// How long a ready generation waits before it takes over (`--settle`;
    /// 0 by default: probation does this job with the old one in reserve).
    public var settle: Duration = .zero
    /// After a new generation took over, the old one is kept, unsignalled,
    /// this long in reserve: if the new one exits, stops accepting or fails
    /// its health probe meanwhile, new connections go back to the old one
    /// and the attempt fails. 0: no probation.
    public var probation: Duration = .seconds(5)
    /// How often the queue holding a proof connection is read while the app
    /// has not taken it (there is no event for "taken").
    public var proofReadInterval: Duration = .milliseconds(10)
    /// The wait before a proof connection that could not be made is tried again.
    public var proofRetryDelay: Duration = .milliseconds(200)
    /// After this many connects in a row that fail on every socket of its
    /// own (a firewall on the loopback, an address family the machine lacks),
    /// a generation is judged as one without sockets of its own.
    public var proofConnectAttempts = 5
    /// How often a generation on probation has its accept queue read.
    public var probationReadInterval: Duration = .milliseconds(20)
    /// On probation: a queue that grew and from which nothing was taken for
    /// this long means the generation stopped accepting.
    public var stallTimeout: Duration = .seconds(2)
    /// While a generation starts, how often the processes its main process
    /// forked are read (there is no event for a grandchild's exit).
    public var workerReadInterval: Duration = .milliseconds(50)
    /// A starting generation whose workers exited this many times, over at
    /// least `workerDeathSpan`, before it accepted has failed: its master
    /// lives while its workers crash in a loop (a prefork server whose app
    /// cannot load), and it would never accept.
    public var workerDeathsBeforeReady = 8
    /// See `workerDeathsBeforeReady`.
    public var workerDeathSpan: Duration = .seconds(2)
    /// Generations of one release that die this many times in a row, each
    /// within `crashLoopWindow` of getting ready, make it crash-looping.
    public var crashLoopDeaths = 3
    /// See `crashLoopDeaths`; a generation that served this long served stably.
    public var crashLoopWindow: Duration = .seconds(60)
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
