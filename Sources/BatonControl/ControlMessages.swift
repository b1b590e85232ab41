import BatonCore

/// The control protocol between a supervisor and its clients: one JSON
/// object per line, each with `"v"` (the version) and a `"cmd"` (requests)
/// or a `"type"` (answers). A request gets `progress` lines while it is
/// carried out, then one `result` (or, for `status`, one `status`).
///
/// The wire types write out their memberwise initialisers, as every public
/// struct in Baton does (Swift synthesises only internal ones); ``ControlResult``
/// is the wire form of BatonCore's `Answer` (milliseconds instead of
/// `Duration`, an error code by name), kept apart so that the machine never
/// depends on the wire format.
public enum ControlProtocol {
    /// The version every message carries.
    public static let version = 1
    /// The longest request line a supervisor reads.
    public static let maxRequestBytes = 65536
}

/// What a client asks of a supervisor.
public enum ControlRequest: Sendable, Equatable {
    /// The supervisor and its generations.
    case status
    /// A graceful restart; the answer waits for the old generations to exit
    /// unless `waitForDrain` is false.
    case restart(waitForDrain: Bool)
    /// Stop every generation and the supervisor.
    case stop
    /// Replace the supervisor's program (and options) in place: `binary` to
    /// exec (nil: the one on disk where the running one was started from),
    /// `configuration` its run configuration as `RunConfiguration.json`
    /// writes it (nil: the same as now).
    case upgrade(binary: String?, configuration: JSON?)

    /// Why a line is not a request.
    public enum Problem: Error, Sendable, Equatable {
        /// Not one JSON object with a string `cmd`.
        case notARequest
        /// Another protocol version.
        case unsupportedVersion(String)
        /// A `cmd` this version does not know.
        case unknownCommand(String)
    }

    /// The request as one JSON object.
    public var json: JSON {
        var o: [String: JSON] = ["v": .int(ControlProtocol.version)]
        switch self {
        case .status: o["cmd"] = .string("status")
        case .restart(let wait):
            o["cmd"] = .string("restart")
            o["wait_drain"] = .bool(wait)
        case .stop: o["cmd"] = .string("stop")
        case .upgrade(let binary, let configuration):
            o["cmd"] = .string("upgrade")
            if let binary { o["binary"] = .string(binary) }
            if let configuration { o["configuration"] = configuration }
        }
        return .object(o)
    }

    /// Reads a request line.
    public static func decode(_ line: String) -> Result<ControlRequest, Problem> {
        guard let j = JSON(parsing: line), let command = j["cmd"]?.string else { return .failure(.notARequest) }
        guard j["v"]?.int == ControlProtocol.version else { return .failure(.unsupportedVersion(j["v"]?.text ?? "none")) }
        switch command {
        case "status": return .success(.status)
        case "restart": return .success(.restart(waitForDrain: j["wait_drain"]?.bool ?? true))
        case "stop": return .success(.stop)
        case "upgrade":
            return .success(.upgrade(binary: j["binary"]?.string, configuration: j["configuration"]))
        default: return .failure(.unknownCommand(command))
        }
    }
}

/// One step of a request under way, for the client to show.
public struct ControlProgress: Sendable, Equatable {
    /// What happened (a `Report.Kind` name: spawned, ready, serving, steered, ...).
    public var kind: String
    /// The generation concerned.
    public var generation: Int?
    /// Its main pid.
    public var pid: Int32?
    /// A sentence for people.
    public var message: String
    /// How long the step took, in milliseconds.
    public var elapsedMilliseconds: Int64?
}

// In an extension, so that the memberwise initialiser (the decoder's) stays.
extension ControlProgress {
    /// A line about no generation in particular.
    public init(kind: String, message: String) {
        self.init(kind: kind, generation: nil, pid: nil, message: message, elapsedMilliseconds: nil)
    }

    /// The wire form of one of the machine's reports.
    public init(_ report: Report) {
        self.init(
            kind: report.kind.rawValue, generation: report.generation, pid: report.pid, message: report.message,
            elapsedMilliseconds: report.elapsed?.milliseconds)
    }
}

/// The final answer to a request.
///
/// The wire form of the machine's ``BatonCore/Answer``, with the same fields
/// on purpose: the protocol keeps its own names and units (milliseconds) so
/// that the machine's types can change without changing what clients read.
public struct ControlResult: Sendable, Equatable {
    /// nil on success; else what failed, which names the exit code.
    public var code: BatonError.Code?
    /// A sentence or two for people.
    public var message: String
    /// The generation the outcome is about.
    public var generation: Int?
    /// Its main pid.
    public var pid: Int32?
    /// How long it took to be ready, in milliseconds.
    public var readyMilliseconds: Int64?
    /// The generations it retired.
    public var retired: [Int]?
    /// How long the whole request took, in milliseconds (added by the client).
    public var durationMilliseconds: Int64?
    /// The supervisor's pid (`start`).
    public var supervisorPid: Int32?
    /// The supervisor's log file (`start`).
    public var logFile: String?
    /// The failed generation's last lines of output.
    public var output: [String]?
    /// The steps of a deploy or an upgrade, in order.
    public var steps: [String]?

    /// A result; `code` nil means success.
    public init(_ code: BatonError.Code?, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A failure from an error.
    public init(_ error: BatonError) {
        self.init(error.code, error.message)
    }

    /// The wire form of the machine's answer to a request (what it retired,
    /// only once a restart succeeded).
    public init(_ answer: Answer) {
        self.init(answer.code, answer.message)
        generation = answer.generation
        pid = answer.pid
        readyMilliseconds = answer.readyAfter?.milliseconds
        if answer.code == nil, answer.readyAfter != nil { retired = answer.retired }
    }

    /// True on success.
    public var ok: Bool { code == nil }
    /// The exit code a command answering with this result returns.
    public var exitCode: Int32 { code?.exitCode ?? 0 }
}

/// A supervisor's answer to `status`.
///
/// Swift makes memberwise initialisers internal only; the nested types'
/// public ones are spelled out, one field a line, so they look alike.
public struct ControlStatus: Sendable, Equatable {
    /// One listening address.
    public struct Listener: Sendable, Equatable {
        /// As given or bound (`127.0.0.1:8080`, `/run/app.sock`, `udp:127.0.0.1:8125`).
        public var address: String
        /// The descriptor the app finds it at.
        public var fd: Int32
        /// Its name in `LISTEN_FDNAMES`.
        public var name: String
        /// How generations get it: `steered`, `renamed`, `shared`, `adopted`.
        public var mode: String

        /// A listener.
        public init(address: String, fd: Int32, name: String, mode: String) {
            self.address = address
            self.fd = fd
            self.name = name
            self.mode = mode
        }
    }

    /// One health probe's outcome.
    public struct Probe: Sendable, Equatable {
        public var passed: Bool
        public var status: Int?
        public var detail: String
        public var latencyMilliseconds: Double

        /// A probe.
        public init(passed: Bool, status: Int?, detail: String, latencyMilliseconds: Double) {
            self.passed = passed
            self.status = status
            self.detail = detail
            self.latencyMilliseconds = latencyMilliseconds
        }
    }

    /// One live generation.
    public struct Generation: Sendable, Equatable {
        public var number: Int
        public var pid: Int32
        /// starting, probing, settling, probation, serving, reserve, draining, failing, killed.
        public var state: String
        public var ageMilliseconds: Int64
        public var releaseDir: String
        public var status: String?
        public var readyMilliseconds: Int64?
        public var lastProbe: Probe?
        /// Its own sockets (`127.0.0.1:8080#2`), where it has any.
        public var sockets: [String]

        /// A generation.
        public init(number: Int, pid: Int32, state: String, ageMilliseconds: Int64, releaseDir: String) {
            self.number = number
            self.pid = pid
            self.state = state
            self.ageMilliseconds = ageMilliseconds
            self.releaseDir = releaseDir
            self.sockets = []
        }
    }

    /// The last finished restart (or start).
    public struct Attempt: Sendable, Equatable {
        /// initial, restart, respawn.
        public var reason: String
        public var ok: Bool
        public var generation: Int?
        public var readyMilliseconds: Int64?
        public var message: String?
        public var durationMilliseconds: Int64
        public var agoMilliseconds: Int64

        /// An attempt.
        public init(reason: String, ok: Bool, durationMilliseconds: Int64, agoMilliseconds: Int64) {
            self.reason = reason
            self.ok = ok
            self.durationMilliseconds = durationMilliseconds
            self.agoMilliseconds = agoMilliseconds
        }
    }

    /// A release whose generations died soon after getting ready, several in a row.
    public struct CrashLoop: Sendable, Equatable {
        /// The release (realpath).
        public var release: String
        /// How many generations died in a row.
        public var deaths: Int
        /// The last one, and what ended it.
        public var lastGeneration: Int
        public var lastReason: String
        public var agoMilliseconds: Int64
        /// The release started instead, if it was rolled back.
        public var rolledBackTo: String?

        /// A crash loop.
        public init(release: String, deaths: Int, lastGeneration: Int, lastReason: String, agoMilliseconds: Int64) {
            self.release = release
            self.deaths = deaths
            self.lastGeneration = lastGeneration
            self.lastReason = lastReason
            self.agoMilliseconds = agoMilliseconds
        }
    }

    /// A generation on probation.
    public struct Probation: Sendable, Equatable {
        public var generation: Int
        /// The generations kept in reserve.
        public var reserve: [Int]
        /// How long it has left.
        public var leftMilliseconds: Int64

        /// A probation.
        public init(generation: Int, reserve: [Int], leftMilliseconds: Int64) {
            self.generation = generation
            self.reserve = reserve
            self.leftMilliseconds = leftMilliseconds
        }
    }

    public var pid: Int32
    public var uptimeMilliseconds: Int64
    /// Seconds since the epoch.
    public var startedAt: Int
    /// running, stopping.
    public var state: String
    public var version: String
    /// The running program.
    public var binary: String?
    /// The running program's file as `device:inode`, to tell whether the
    /// file on disk is still the one running.
    public var binaryID: String?
    /// The run configuration as `RunConfiguration.json` writes it.
    public var configuration: JSON?
    /// Seconds since the epoch of the last re-exec, if any.
    public var reexecutedAt: Int?
    /// How many times it re-executed itself.
    public var reexecutions: Int
    /// Problems the operator should know of (a state that could not be restored, ...).
    public var warnings: [String]
    public var listeners: [Listener]
    public var generations: [Generation]
    public var command: [String]
    public var serving: Int?
    public var pidFile: String?
    public var control: String?
    public var logFile: String?
    public var lastAttempt: Attempt?
    /// The crash loop of the release it runs, if any: `status` then exits 13.
    public var crashLoop: CrashLoop?
    /// The generation on probation, if one is.
    public var probation: Probation?
    /// The last release that served stably (realpath), where known.
    public var stableRelease: String?

    /// The exit code of `status`: 0, or 13 while the release crash-loops.
    public var exitCode: Int32 { crashLoop == nil ? 0 : BatonError.Code.crashLooping.exitCode }

    /// A status with no generation.
    public init(pid: Int32, uptimeMilliseconds: Int64, startedAt: Int, state: String, version: String) {
        self.pid = pid
        self.uptimeMilliseconds = uptimeMilliseconds
        self.startedAt = startedAt
        self.state = state
        self.version = version
        self.reexecutions = 0
        self.warnings = []
        self.listeners = []
        self.generations = []
        self.command = []
    }
}

/// Any line a supervisor sends.
public enum ControlMessage: Sendable, Equatable {
    case progress(ControlProgress)
    case result(ControlResult)
    case status(ControlStatus)

    /// True for the last line of an answer (a result or a status).
    public var isFinal: Bool {
        if case .progress = self { return false }
        return true
    }
}
