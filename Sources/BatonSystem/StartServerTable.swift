import BatonCore

/// The options of `start_server`, declared once: its parser, man page and
/// completions are made from this table (its `--help` keeps Server::Starter's layout).
///
/// Many names match `baton run`'s, but not their wording or units
/// (Server::Starter's seconds, its help), so this table is its own; the
/// listen-mode options, which mean the same in both, come from
/// ``ListenMode/optionSpecs(group:modeHelp:windowHelp:)``.
public enum StartServerTable {
    /// The Server::Starter release whose behaviour start_server follows.
    public static let compatibleVersion = "0.35"
    static let perlGroup = "Options (as Server::Starter's)"
    static let batonGroup = "Baton's additions"

    /// Server::Starter's own options: they win an abbreviation they share with Baton's additions (`-h` is `--help`).
    public static let perl: [OptionSpec] = [
        OptionSpec(
            "port", value: "PORT",
            "TCP port to listen to, repeatable: port, host:port or [v6]:port, with =fd to put the socket at that descriptor; u before the port for UDP",
            group: perlGroup),
        OptionSpec("path", value: "PATH", "unix socket to listen on, repeatable", group: perlGroup, completes: .file),
        OptionSpec(
            "interval", value: "SECONDS", "a new server takes over no sooner than this after its start (default 1)", group: perlGroup),
        OptionSpec(
            "log-file", value: "FILE", "send STDOUT and STDERR to a file, or to a command given as \"| cmd\"", group: perlGroup,
            completes: .file),
        OptionSpec("pid-file", value: "FILE", "write start_server's pid here", group: perlGroup, completes: .file),
        OptionSpec("dir", value: "PATH", "working directory of the server program", group: perlGroup, completes: .directory),
        OptionSpec(
            "signal-on-hup", value: "SIGNAL", "signal for the old server on SIGHUP (default TERM)", group: perlGroup, completes: .signal),
        OptionSpec(
            "signal-on-term", value: "SIGNAL", "signal for the servers on SIGTERM (default TERM)", group: perlGroup, completes: .signal),
        OptionSpec("backlog", value: "N", "listen backlog (default: the kernel's maximum)", group: perlGroup),
        OptionSpec("envdir", value: "DIR", "read environment variables from DIR at each start", group: perlGroup, completes: .directory),
        OptionSpec("enable-auto-restart", "restart by time (--auto-restart-interval)", group: perlGroup),
        OptionSpec("daemonize", "run in the background (needs --log-file)", group: perlGroup),
        OptionSpec("auto-restart-interval", value: "SECONDS", "auto-restart every this often (default 360)", group: perlGroup),
        OptionSpec(
            "kill-old-delay", value: "SECONDS", "wait before signalling old servers (default 0; 5 with auto-restart)", group: perlGroup),
        OptionSpec("status-file", value: "FILE", "write generation:pid lines here", group: perlGroup, completes: .file),
        OptionSpec("restart", "restart the running start_server (--pid-file, --status-file)", group: perlGroup),
        OptionSpec("stop", "stop the running start_server (--pid-file)", group: perlGroup),
        OptionSpec("help", "show the help", group: perlGroup),
        OptionSpec("version", "print the Server::Starter version it follows", group: perlGroup),
    ]

    /// Baton's additions.
    public static let baton: [OptionSpec] =
        [
            OptionSpec(
                "drain-timeout", value: "D", "SIGKILL old servers still running D after their signal (default: never)", group: batonGroup),
            OptionSpec("max-attempts", value: "N", "give up on a new server after N failed starts (default 10)", group: batonGroup),
        ]
        + ListenMode.optionSpecs(
            group: batonGroup,
            modeHelp:
                "steered (default): each server gets its own socket, new connections go to the new one and the old one drains before its signal; shared: one socket for all, as Server::Starter",
            windowHelp: "steered: wait for handshakes begun on the old socket (default 200ms)")
        + [
            OptionSpec("restart-timeout", value: "D", "how long --restart and --stop wait (default 5m)", group: batonGroup),
            OptionSpec(
                "control", value: "PATH", "control socket (default: next to --pid-file); 'baton status' talks to it", group: batonGroup,
                completes: .file),
            OptionSpec(
                "ready", value: "MODE",
                "auto (default): a new server takes over once it took a probe connection from its own socket (and sent READY=1 where it sends it) and has lived --interval; notify: READY=1 required too; a duration: alive that long, a guess",
                group: batonGroup),
            OptionSpec(
                "probation", value: "D",
                "keep the old server, unsignalled, this long after the new one took over; if the new one exits or stops accepting meanwhile, connections go back to the old one (default 5s; 0: none)",
                group: batonGroup),
            OptionSpec(
                "upgrade",
                "re-execute the running start_server in place (--pid-file) with the start_server now on disk: same pid, sockets and servers",
                group: batonGroup),
        ]

    /// Options whose value must be an integer.
    public static let integerOptions: Set<String> = ["backlog", "max-attempts"]

    /// The command as the man page and completions describe it.
    public static let command = CommandSpec(
        "start_server", abstract: "A superdaemon for hot-deploying server programs, on Baton's engine.",
        usage: ["start_server [options] -- server-prog server-arg1 server-arg2 ..."],
        discussion: """
            start_server binds the listening sockets, starts the server program with them (their addresses and descriptors in \
            SERVER_STARTER_PORT) and, on SIGHUP, starts a new server before signalling the old one (--signal-on-hup), as \
            Server::Starter \(compatibleVersion) does. By default each server gets its own socket and new connections go to the \
            newest one, so the old server's queue drains before its signal and no request is dropped; --listen-mode shared keeps \
            Server::Starter's one shared socket.

            The differences from Server::Starter are listed in /usr/share/doc/baton/start_server.md (docs/start_server.md in the source).
            """,
        options: perl + baton,
        exitCodes: [
            (0, "stopped cleanly (SIGTERM), or --restart, --stop, --upgrade, --help or --version succeeded"),
            (1, "a malformed option"),
            (255, "another failure (Server::Starter's die); a failed bind exits with its errno"),
        ])
}
