import BatonControl
import BatonCore

/// How generations get their listening sockets (`--listen-mode`).
public enum ListenMode: String, Sendable, Equatable, CaseIterable {
    /// Each generation gets its own socket: SO_REUSEPORT for TCP (new
    /// connections steered to the serving generation), a socket renamed
    /// over the public path for unix; the old one drains before its signal.
    case steered
    /// One socket for every generation, as Server::Starter does.
    case shared

    /// The value of `--listen-mode`, or a usage error naming the choices.
    public init(option value: String) throws(BatonError) {
        guard let mode = ListenMode(rawValue: value) else {
            throw BatonError(.usage, "--listen-mode '\(value)': expected steered or shared")
        }
        self = mode
    }

    /// `--listen-mode`, `--handshake-window` and their older spellings
    /// (`--handover`, `--handover-delay`), declared once for baton and
    /// start_server; the help texts say what each calls its processes.
    public static func optionSpecs(group: String, modeHelp: String, windowHelp: String) -> [OptionSpec] {
        [
            OptionSpec("listen-mode", value: "MODE", modeHelp, group: group, choices: allCases.map(\.rawValue)),
            OptionSpec("handover", "a spelling of --listen-mode steered, the default since 0.3", group: group, hidden: true),
            OptionSpec("handshake-window", value: "D", windowHelp, group: group),
            OptionSpec("handover-delay", value: "D", "a spelling of --handshake-window", group: group, hidden: true),
        ]
    }
}

/// Everything `baton run` (and `start_server`) needs to supervise an app.
public struct RunConfiguration: Sendable {
    /// Addresses to bind (ignored when systemd passes sockets).
    public var listen: [ListenSpec] = []
    /// Start even with no listener (start_server without --port).
    public var allowNoListeners = false
    /// How generations get the TCP and unix listeners: each its own socket,
    /// new connections steered to the serving one (the default), or one
    /// socket shared by all.
    public var listenMode: ListenMode = .steered
    /// The `--envdir` format: daemontools (trailing blanks trimmed, empty
    /// file unsets) or Server::Starter's (first line, newline removed).
    public var envdirStyle: EnvDir.Style = .daemontools
    /// Extra variables for the app and the supervisor's view (start_server's
    /// ENVDIR, KILL_OLD_DELAY, ...), applied before `env`.
    public var exportedEnv: [String] = []
    /// Mode of the unix socket files it creates.
    public var socketMode: UInt32 = 0o660
    /// The listen backlog; nil: the kernel's maximum.
    public var backlog: Int32?
    /// The pid file, if any.
    public var pidFile: String?
    /// Server::Starter's status file, if any.
    public var statusFile: String?
    /// The release directory, resolved with realpath at each spawn; nil: the current directory.
    public var dir: String?
    /// A daemontools-style envdir read at each spawn.
    public var envdir: String?
    /// Extra `KEY=VALUE` pairs for the app.
    public var env: [String] = []
    /// Run the app as this user (name or uid).
    public var user: String?
    /// Run the app with this group (name or gid).
    public var group: String?
    /// The app's command and arguments.
    public var command: [String] = []
    /// Readiness, deadlines and signals.
    public var policy = SupervisorPolicy()
    /// The control socket to listen on, if any.
    public var controlPath: String?
    /// The log file (reopened on SIGUSR1), when the daemon writes to one.
    public var logFile: String?
    /// A pipe to the `baton start` that spawned this daemon: the outcome of
    /// the first generation is written to it as one JSON line.
    public var startReportFD: Int32?
    /// Development mode: files and directories whose changes restart the app.
    public var watch: [String] = []
    /// More names or globs whose changes restart nothing.
    public var watchIgnore: [String] = []
    /// How long the watched files must be quiet before a restart.
    public var watchDebounce: Duration = .milliseconds(200)
    /// A command run (through `sh -c`, in the release directory) before each watched restart.
    public var build: String?

    /// An empty configuration.
    public init() {}
}

extension RunConfiguration {
    /// The configuration as a daemon findable at these paths runs it: the
    /// paths made absolute, the directory the current one when none is given.
    /// `deploy` compares this form with the running supervisor's.
    public func daemonForm(pidFile: String, control: String, logFile: String) -> RunConfiguration {
        var c = self
        c.pidFile = pidFile
        c.controlPath = control
        if c.logFile == nil { c.logFile = logFile }
        c.dir = Sys.absolute(c.dir ?? Sys.cwd())
        c.statusFile = c.statusFile.map(Sys.absolute)
        c.envdir = c.envdir.map(Sys.absolute)
        c.listen = c.listen.map { spec in
            var s = spec
            if case .unix(let path) = s.address { s.address = .unix(path: Sys.absolute(path)) }
            return s
        }
        return c
    }

    /// What differs from `other`, by option name (the run options that
    /// deploy and upgrade can change or must refuse).
    public func differences(from other: RunConfiguration) -> [String] {
        var out: [String] = []
        if command != other.command { out.append("the command") }
        if listen != other.listen { out.append("--listen") }
        if listenMode != other.listenMode { out.append("--listen-mode") }
        if socketMode != other.socketMode { out.append("--socket-mode") }
        if backlog != other.backlog { out.append("--backlog") }
        if dir != other.dir { out.append("--dir") }
        if envdir != other.envdir || envdirStyle != other.envdirStyle { out.append("--envdir") }
        if env != other.env || exportedEnv != other.exportedEnv { out.append("--env") }
        if user != other.user { out.append("--user") }
        if group != other.group { out.append("--group") }
        if statusFile != other.statusFile { out.append("--status-file") }
        if policy.json != other.policy.json { out.append("the readiness, retiring or health options") }
        if allowNoListeners != other.allowNoListeners { out.append("running without a listener") }
        return out
    }
}
