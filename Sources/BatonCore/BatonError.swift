/// The one error type of Baton: a code, a message for people that says what
/// happened and what to do, and the errno behind it where there is one.
public struct BatonError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is; each code has one documented exit code
    /// (docs/EXIT-CODES.md).
    /// The codes below are a table, one line each, so they look alike.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// A stable, machine-readable name (used in `--json` output).
        public let name: String
        /// The process exit code for this failure.
        public let exitCode: Int32

        public var description: String { name }

        /// Something failed that has no more specific code (a system call).
        public static let failure = Code(name: "failure", exitCode: 1)
        /// The command line or configuration is malformed.
        public static let usage = Code(name: "usage", exitCode: 2)
        /// No supervisor is running where one was expected.
        public static let notRunning = Code(name: "not-running", exitCode: 3)
        /// A supervisor is already running (the pid file is locked).
        public static let alreadyRunning = Code(name: "already-running", exitCode: 5)
        /// The new generation failed; the serving one still serves.
        public static let generationFailed = Code(name: "generation-failed", exitCode: 6)
        /// A deadline passed before the outcome was known.
        public static let timeout = Code(name: "timeout", exitCode: 7)
        /// A listening address could not be bound.
        public static let bindFailed = Code(name: "bind-failed", exitCode: 8)
        /// The app's command does not exist or is not executable.
        public static let commandNotFound = Code(name: "command-not-found", exitCode: 9)
        /// The first generation never became ready, so nothing serves.
        public static let startFailed = Code(name: "start-failed", exitCode: 10)
        /// Another operation holds the lock (a second deploy, a restart during a stop).
        public static let busy = Code(name: "busy", exitCode: 11)
        /// The state of a supervisor cannot be known (LSB status 4): a pid
        /// file is held, but nothing answers on the control socket.
        public static let unknown = Code(name: "unknown", exitCode: 4)
        /// A re-exec of the supervisor was refused: the new program's check failed.
        public static let upgradeFailed = Code(name: "upgrade-failed", exitCode: 12)
        /// `status`: the supervisor runs, but the release it runs is
        /// crash-looping, or was rolled back after it did.
        public static let crashLooping = Code(name: "crash-looping", exitCode: 13)

        /// Every code, in exit-code order.
        public static let all: [Code] = [
            .failure, .usage, .notRunning, .unknown, .alreadyRunning, .generationFailed, .timeout, .bindFailed, .commandNotFound,
            .startFailed, .busy, .upgradeFailed, .crashLooping,
        ]

        /// The code with this `name`, if there is one.
        public init?(name: String) {
            guard let code = Code.all.first(where: { $0.name == name }) else { return nil }
            self = code
        }

        private init(name: String, exitCode: Int32) {
            self.name = name
            self.exitCode = exitCode
        }
    }

    /// What kind of failure.
    public var code: Code
    /// One or two sentences for people: what went wrong and what to do.
    public var message: String
    /// The errno of the failed system call, if any.
    public var errno: Int32?

    /// Creates an error. (BatonListen's `ListenError` has the same shape on
    /// purpose: the app-side library depends on nothing of the supervisor's.)
    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    /// The exit code a command that fails with this error returns.
    public var exitCode: Int32 { code.exitCode }

    public var description: String { message }
}
