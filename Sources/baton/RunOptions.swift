import BatonCore
import BatonSystem

/// The options of `baton run` (shared with `start` and `deploy`), and how
/// they become a configuration.
enum RunOptions {
    static let listening = "Listening"
    static let release = "The app"
    static let readiness = "Readiness"
    static let retiring = "Retiring the old generation"
    static let health = "Health probe"
    static let development = "Development (baton run only)"

    /// `--watch` and its companions: for `baton run`; refused by name elsewhere.
    static func watchSpecs(hidden: Bool) -> [OptionSpec] {
        [
            OptionSpec(
                "watch", value: "PATH",
                "restart gracefully when a file under PATH changes (a directory recursively, or one file), repeatable; inotify, no polling",
                group: development, completes: .file, hidden: hidden),
            OptionSpec(
                "watch-ignore", value: "GLOB",
                "changes to names matching GLOB restart nothing, repeatable (editor swap and backup files, .git, .build*, node_modules, __pycache__, *.pyc, *.log are ignored already)",
                group: development, hidden: hidden),
            OptionSpec(
                "watch-debounce", value: "D", "changes this close together are one restart (default 200ms)", group: development,
                hidden: hidden),
            OptionSpec(
                "build", value: "CMD",
                "run CMD (sh -c, in the release directory) before each watched restart; a failing build starts nothing and the running code keeps serving",
                group: development, hidden: hidden),
        ]
    }

    /// Reads the development options (`baton run`).
    static func watch(_ o: ParsedOptions, into c: inout RunConfiguration) throws(BatonError) {
        c.watch = o.all("watch").map(Sys.absolute)
        c.watchIgnore = o.all("watch-ignore")
        if let v = o.last("watch-debounce") { c.watchDebounce = try OptionParsing.duration(v, option: "--watch-debounce") }
        c.build = o.last("build")
        if c.watch.isEmpty, let other = ["watch-ignore", "watch-debounce", "build"].first(where: o.has) {
            throw BatonError(.usage, "--\(other) needs --watch PATH")
        }
    }

    /// `start` and `deploy` refuse development mode by name.
    static func refuseWatch(_ o: ParsedOptions, _ command: String) throws(BatonError) {
        if let name = ["watch", "watch-ignore", "watch-debounce", "build"].first(where: o.has) {
            throw BatonError(
                .usage,
                "--\(name) is for development: use it with 'baton run' in a terminal (a daemon is restarted by deploys, not by saves); 'baton \(command)' does not take it"
            )
        }
    }

    static let specs: [OptionSpec] =
        [
            OptionSpec(
                "listen", value: "ADDR",
                "address to listen on, repeatable: 8080 (127.0.0.1), 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080, unix:/path.sock, udp:127.0.0.1:8125 (shared by every generation)",
                group: listening)
        ]
        + ListenMode.optionSpecs(
            group: listening,
            modeHelp:
                "steered (default): each generation gets its own socket and new connections go to the serving one, so the old one drains before its signal; shared: one socket for all",
            windowHelp:
                "steered: after the old generation's queue emptied, wait this long for handshakes begun before the switch (default 200ms; not used with net.ipv4.tcp_migrate_req=1)"
        )
        + [
            OptionSpec("socket-mode", value: "MODE", "mode of unix socket files (default 0660)", group: listening),
            OptionSpec("backlog", value: "N", "listen backlog (default: the kernel's maximum)", group: listening),
            OptionSpec(
                "dir", value: "DIR", "release directory, resolved with realpath at each spawn (default: .)", group: release,
                completes: .directory),
            OptionSpec("envdir", value: "DIR", "read one variable per file from DIR at each spawn", group: release, completes: .directory),
            OptionSpec("env", value: "K=V", "set a variable for the app, repeatable", group: release),
            OptionSpec("user", value: "USER", "run the app as USER (baton must be root)", group: release),
            OptionSpec("group", value: "GROUP", "run the app with GROUP", group: release),
            OptionSpec(
                "status-file", value: "PATH", "write 'generation:pid' lines here (Server::Starter format)", group: release, completes: .file
            ),
            OptionSpec(
                "ready", value: "MODE",
                "auto (default): ready once it took a probe connection from a socket of its own, and sent READY=1 where the app sends it; notify: READY=1 is required too; a duration (1s): alive that long, a guess that proves nothing",
                group: readiness,
                choices: ["notify", "auto"]),
            OptionSpec("ready-timeout", value: "D", "stop a generation not ready by then (default 60s)", group: readiness),
            OptionSpec(
                "probation", value: "D",
                "after the new generation took over, keep the old one in reserve this long: if the new one exits, stops accepting or fails --health, connections go back and the restart fails (default 5s; 0: none)",
                group: readiness),
            OptionSpec(
                "settle", value: "D", "a ready generation waits this long before it takes over (default 0)", group: readiness),
            OptionSpec(
                "kill-old-delay", value: "D", "wait this long after the new generation took over before the old one's signal (default 0)",
                group: retiring),
            OptionSpec(
                "drain-timeout", value: "D", "SIGKILL an old generation's process group this long after its signal (default 30s)",
                group: retiring),
            OptionSpec(
                "signal-on-hup", value: "SIG", "signal that retires an old generation (default TERM; Starman: QUIT)", group: retiring,
                completes: .signal),
            OptionSpec(
                "signal-on-term", value: "SIG", "signal every generation gets when baton stops (default TERM)", group: retiring,
                completes: .signal),
            OptionSpec(
                "health", value: "PATH", "probe each new generation with GET PATH over a private listener before it takes over",
                group: health),
            OptionSpec("health-timeout", value: "D", "one probe's deadline (default 2s)", group: health),
            OptionSpec("health-interval", value: "D", "wait between probes while a generation comes up (default 200ms)", group: health),
            OptionSpec("health-status", value: "RANGE", "statuses that pass, such as 200-299 (default) or 204", group: health),
            OptionSpec("health-every", value: "D", "keep probing the serving generation this often (default: never)", group: health),
            OptionSpec(
                "health-failures", value: "N", "failed probes in a row that replace a serving generation (default 3)", group: health),
        ]

    /// Builds a configuration from parsed options: the options given,
    /// over `base` (a running supervisor's configuration, for a deploy: what
    /// the deploy does not name stays as it is).
    static func configuration(_ o: ParsedOptions, over base: RunConfiguration = RunConfiguration()) throws(BatonError)
        -> RunConfiguration
    {
        var c = base
        if o.has("listen") { c.listen = [] }
        for text in o.all("listen") { c.listen.append(ListenSpec(try ListenAddress(parsing: text))) }
        if let mode = o.last("listen-mode") { c.listenMode = try ListenMode(option: mode) }
        if o.has("handover") { c.listenMode = .steered }
        if let v = o.last("socket-mode") { c.socketMode = try OptionParsing.fileMode(v, option: "--socket-mode") }
        if let v = o.last("backlog") { c.backlog = Int32(try OptionParsing.integer(v, option: "--backlog", range: 1...1_000_000)) }
        if let v = o.last("status-file") { c.statusFile = v }
        if let v = o.last("dir") { c.dir = v }
        if let v = o.last("envdir") { c.envdir = v }
        if o.has("env") { c.env = [] }
        for pair in o.all("env") {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw BatonError(.usage, "--env '\(pair)': expected KEY=VALUE")
            }
            c.env.append(pair)
        }
        if let v = o.last("user") { c.user = v }
        if let v = o.last("group") { c.group = v }
        var p = c.policy
        if let v = o.last("ready") {
            switch v {
            case "notify": p.readiness = .notify
            case "auto": p.readiness = .auto(fallback: .seconds(1))
            default: p.readiness = .alive(try OptionParsing.duration(v, option: "--ready"))
            }
        }
        if let v = o.last("settle") { p.settle = try OptionParsing.duration(v, option: "--settle") }
        if let v = o.last("probation") { p.probation = try OptionParsing.duration(v, option: "--probation") }
        if let v = o.last("ready-timeout") { p.readyTimeout = try OptionParsing.duration(v, option: "--ready-timeout") }
        if let v = o.last("kill-old-delay") { p.killOldDelay = try OptionParsing.duration(v, option: "--kill-old-delay") }
        if let v = o.last("drain-timeout") { p.drainTimeout = try OptionParsing.duration(v, option: "--drain-timeout") }
        if let v = o.last("signal-on-hup") { p.signalOnHup = try OptionParsing.signal(v, option: "--signal-on-hup") }
        if let v = o.last("signal-on-term") { p.signalOnTerm = try OptionParsing.signal(v, option: "--signal-on-term") }
        for name in ["handshake-window", "handover-delay"] {
            if let v = o.last(name) { p.handshakeWindow = try OptionParsing.duration(v, option: "--\(name)") }
        }
        if let h = try healthCheck(o) { p.health = h }
        c.policy = p
        if !o.rest.isEmpty { c.command = o.rest }
        return c
    }

    private static func healthCheck(_ o: ParsedOptions) throws(BatonError) -> HealthCheck? {
        guard let path = o.last("health") else {
            if let other = ["health-timeout", "health-interval", "health-status", "health-every", "health-failures"].first(where: o.has) {
                throw BatonError(.usage, "--\(other) needs --health PATH")
            }
            return nil
        }
        guard path.hasPrefix("/"), !path.contains(" "), !path.contains("\r"), !path.contains("\n") else {
            throw BatonError(.usage, "--health '\(path)': expected a path such as /health")
        }
        var h = HealthCheck(path: path)
        if let v = o.last("health-timeout") { h.timeout = try OptionParsing.duration(v, option: "--health-timeout") }
        if let v = o.last("health-interval") { h.interval = try OptionParsing.duration(v, option: "--health-interval") }
        if let v = o.last("health-every") { h.every = try OptionParsing.duration(v, option: "--health-every") }
        if let v = o.last("health-failures") {
            h.failuresBeforeRestart = try OptionParsing.integer(v, option: "--health-failures", range: 1...1000)
        }
        if let v = o.last("health-status") {
            let parts = v.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(parts.count), let low = parts.first ?? nil, let high = parts.last ?? nil, 100 <= low, low <= high,
                high <= 599
            else {
                throw BatonError(.usage, "--health-status '\(v)': expected a status or a range such as 200-299")
            }
            h.expected = low...high
        }
        return h
    }
}
