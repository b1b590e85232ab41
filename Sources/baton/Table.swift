import BatonCore

/// Every command of `baton` and its options: the help, the completions and
/// the man page are generated from this table (so its entries look alike).
enum Table {
    static let whereGroup = "Which supervisor"
    static let outputGroup = "Output"

    static let locations: [OptionSpec] = [
        OptionSpec(
            "name", value: "NAME",
            "the supervisor's name: its pid file, control socket and log are NAME.pid, NAME.control and NAME.log under the run directory",
            group: whereGroup),
        OptionSpec(
            "pid-file", value: "PATH",
            "the supervisor's pid file (its control socket and log go next to it: app.pid, app.control, app.log)", group: whereGroup,
            completes: .file),
        OptionSpec("control", value: "PATH", "the control socket (default: next to the pid file)", group: whereGroup, completes: .file),
        OptionSpec("log-file", value: "PATH", "the log (default: next to the pid file)", group: whereGroup, completes: .file),
    ]
    static let json = OptionSpec("json", "print JSON, one object per line, instead of text", group: outputGroup)
    static let help = OptionSpec("help", short: "h", "show this help", group: outputGroup)

    static let run = CommandSpec(
        "run", abstract: "Supervise an app in the foreground: SIGHUP restarts it, SIGTERM or SIGINT stops it.",
        usage: ["run [NAME] [options] -- command [args...]"],
        discussion: """
            Binds the listeners once, starts the app with them (LISTEN_FDS, SERVER_STARTER_PORT, NOTIFY_SOCKET) and supervises it. \
            A restart starts a new generation; once it has accepted a probe connection on its own socket (and sent READY=1 \
            where the app sends it), new connections go to it while the old one waits in reserve for --probation, and only then \
            is the old one signalled, once its queue is empty. With a NAME, --name or --pid-file it also answers on a control \
            socket.
            """,
        options: RunOptions.specs + RunOptions.watchSpecs(hidden: false) + locations + [help],
        exitCodes: [
            (0, "stopped"), (2, "bad option"), (8, "an address could not be bound"), (9, "the command is missing"),
            (10, "the first generation never became ready"),
        ],
        positional: "NAME")

    static let start = CommandSpec(
        "start", abstract: "Start the supervisor as a daemon; return once the app is ready.",
        usage: [
            "start NAME [run options] -- command [args...]", "start (--name NAME | --pid-file PATH) [run options] -- command [args...]",
        ],
        discussion: """
            Starts the supervisor in a session of its own (stdin from /dev/null, output to its log, working directory /) and \
            returns once the first generation serves and passed its probation: 0, or non-zero with the reason and the end of \
            the log, leaving no daemon, pid file or socket behind.
            """,
        options: RunOptions.specs + RunOptions.watchSpecs(hidden: true) + locations + [
            OptionSpec("umask", value: "MASK", "the daemon's umask (default 022)"), json, help,
        ],
        exitCodes: [
            (0, "started"), (2, "bad option"), (5, "already running"), (8, "bind failed"), (9, "command not found"),
            (10, "the first generation failed"),
        ],
        positional: "NAME")

    static let deploy = CommandSpec(
        "deploy", abstract: "Restart if running, else start; with --release and --current, switch releases first.",
        usage: ["deploy NAME [--release DIR --current LINK] [run options] -- command [args...]"],
        discussion: """
            Re-points the --current symlink at --release atomically, then restarts the supervisor if it runs or starts it if not, \
            and fails if neither brought the new code up: then the symlink points back where it pointed. When the run options or \
            the command differ from the running supervisor's, or the baton binary on disk is not the one running, the supervisor \
            first re-executes itself in place with them (same pid, same sockets; new --listen addresses are bound first, those \
            taken out close once their last generation exited); an option that cannot change live (--listen-mode, \
            --socket-mode, --backlog) is refused by name. A second deploy of the same supervisor waits for the \
            first (--lock-timeout).
            """,
        options: RunOptions.specs + RunOptions.watchSpecs(hidden: true) + locations + [
            OptionSpec("release", value: "DIR", "the release to deploy: --current is re-pointed at it first", completes: .directory),
            OptionSpec("current", value: "LINK", "the symlink that names the live release (default --dir)", completes: .file),
            OptionSpec("lock-timeout", value: "D", "wait this long for another deploy to finish (default 5m)"),
            OptionSpec("timeout", value: "D", "give up waiting for the restart after D (default 5m)"),
            OptionSpec("umask", value: "MASK", "the daemon's umask when it starts one (default 022)"), json, help,
        ],
        exitCodes: [
            (0, "the new code serves"), (2, "bad option; nothing was changed"),
            (6, "the new generation failed; the old one still serves and the symlink points back"), (7, "no outcome in time"),
            (10, "it was not running and did not start"), (11, "another deploy holds the lock"),
            (12, "the re-exec failed (the new binary's check, or its take-over); the supervisor goes on as it was"),
        ],
        positional: "NAME")

    static let restart = CommandSpec(
        "restart", abstract: "Restart gracefully; exit 0 only once the new generation serves.",
        usage: ["restart [NAME | --name NAME | --pid-file PATH | --control PATH] [--timeout D] [--json]"],
        discussion:
            "Starts a new generation; once it is proven, new connections go to it and the old one waits in reserve for --probation, then is retired. Exits 0 only if the new one kept serving through its probation; by default it returns once the old one has exited too.",
        options: locations + [
            OptionSpec("timeout", value: "D", "give up waiting after D (default 5m); the restart itself goes on"),
            OptionSpec(
                "no-wait-drain", "return once the new generation passed its probation, without waiting for the old one to exit"), json,
            help,
        ],
        exitCodes: [
            (0, "the new generation serves"), (3, "not running"), (4, "a pid file is held but nothing answers"),
            (6, "the new generation failed; the old one still serves"), (7, "no outcome within --timeout"),
            (11, "the supervisor is stopping"),
        ],
        positional: "NAME")

    static let upgrade = CommandSpec(
        "upgrade", abstract: "Re-execute the supervisor in place with the baton binary now on disk; the app goes on.",
        usage: ["upgrade [NAME | --name NAME | --pid-file PATH | --control PATH] [--binary PATH] [--timeout D] [--json]"],
        discussion: """
            After a package upgrade: the running supervisor checks the new binary (it must start, read the state format and accept \
            the options), then execs it in place with the same options: same pid, same sockets, same generations; the app is not \
            restarted. If the check fails nothing changes. A restart asked for meanwhile follows the re-exec; a stop cancels it.
            """,
        options: locations + [
            OptionSpec(
                "binary", value: "PATH", "exec this binary instead of the one on disk where the supervisor was started from",
                completes: .file),
            OptionSpec("timeout", value: "D", "give up waiting after D (default 5m)"), json, help,
        ],
        exitCodes: [
            (0, "the new program took over"), (2, "bad option"), (3, "not running"), (4, "a pid file is held but nothing answers"),
            (7, "no outcome within --timeout"), (11, "the supervisor is stopping, or another re-exec is under way"),
            (12, "the new binary failed its check, or could not take over; the previous program goes on"),
        ],
        positional: "NAME")

    static let stop = CommandSpec(
        "stop", abstract: "Stop every generation and the supervisor.",
        usage: ["stop [NAME | --name NAME | --pid-file PATH | --control PATH] [--timeout D] [--json]"],
        discussion:
            "Stops every generation gracefully, then the supervisor. Exits 0 once every process is gone and the pid file, status file, control socket and unix sockets are removed, or when nothing ran.",
        options: locations + [OptionSpec("timeout", value: "D", "give up waiting after D (default 2m)"), json, help],
        exitCodes: [(0, "stopped, or nothing ran"), (4, "a pid file is held but nothing answers"), (7, "still stopping after --timeout")],
        positional: "NAME")

    static let status = CommandSpec(
        "status", abstract: "Show the supervisor, its listeners and generations.",
        usage: ["status [NAME | --name NAME | --pid-file PATH | --control PATH] [--json]"],
        discussion:
            "Exit codes as LSB init scripts use them, and 13 while the release that runs is crash-looping (or was rolled back after it did).",
        options: locations + [json, help],
        exitCodes: [
            (0, "running"), (1, "dead, but the pid file is left"), (3, "not running"),
            (4, "unknown: a pid file is held but nothing answers"),
            (13, "running, but generations of its release die soon after getting ready, again and again"),
        ],
        positional: "NAME")

    static let logs = CommandSpec(
        "logs", abstract: "Print the end of the supervisor's log, or follow it.",
        usage: ["logs [NAME | --name NAME | --pid-file PATH | --log-file PATH] [-n N] [-f]"],
        discussion: "The supervisor reopens its log file on SIGUSR1 (for logrotate); --follow goes on reading the new file.",
        options: locations + [
            OptionSpec("lines", short: "n", value: "N", "how many lines (default 50)"),
            OptionSpec("follow", short: "f", "keep printing what is added, across rotations, until interrupted"), help,
        ],
        exitCodes: [(0, "printed"), (3, "no log there")],
        positional: "NAME")

    static let list = CommandSpec(
        "list", abstract: "List every supervisor under the run directory.",
        usage: ["list [--json]"],
        discussion: "Every supervisor started with a NAME or --name: its name, pid, serving generation, uptime and last restart.",
        options: [json, help], exitCodes: [(0, "listed (also when there are none)")])

    static let helpCommand = CommandSpec(
        "help", abstract: "Show the help of baton or of a command.", usage: ["help [COMMAND]"], options: [help],
        exitCodes: [(0, "shown"), (2, "no such command")], positional: "COMMAND")

    static let version = CommandSpec(
        "version", abstract: "Print the version.", usage: ["version"], options: [help], exitCodes: [(0, "printed")])

    static let completions = CommandSpec(
        "completions", abstract: "Print a shell completion script for bash, zsh or fish.",
        usage: ["completions bash|zsh|fish [--program baton|start_server]"],
        discussion: """
            bash: baton completions bash > /etc/bash_completion.d/baton (or source it from ~/.bashrc). \
            zsh: baton completions zsh > a directory of $fpath, as _baton. \
            fish: baton completions fish > ~/.config/fish/completions/baton.fish. \
            --program start_server prints the script for start_server's options instead.
            """,
        options: [
            OptionSpec("program", value: "NAME", "the program to complete (default baton)", choices: ["baton", "start_server"]), help,
        ], exitCodes: [(0, "printed"), (2, "no such shell")], positional: "SHELL")

    static let man = CommandSpec(
        "man", abstract: "Print a manual page in roff: baton(1), or start_server(1).", usage: ["man [baton|start_server]"],
        discussion: "man -l <(baton man) shows it; packages install it under /usr/share/man/man1.",
        options: [help], exitCodes: [(0, "printed"), (2, "no such page")], positional: "PAGE")

    static let commands: [CommandSpec] = [
        run, start, restart, deploy, upgrade, stop, status, logs, list, completions, man, helpCommand, version,
    ]

    static let summary = "zero-downtime restarts and deploys for web apps"

    static let about =
        "Zero-downtime restarts for web apps: baton holds the listening sockets and hands them to each new generation of the app, retiring the old one only once the new one proved that it serves and kept serving through its probation."

    /// The sections of baton(1) after the commands.
    static let manSections: [ManPage.Section] = [
        ManPage.Section(
            "Exit status",
            """
            Every command exits with one of these codes: 0 success, 1 failure, 2 usage, 3 not running, 4 unknown (a live \
            process holds the pid file but nothing answers its control socket), 5 already running, 6 the new generation \
            failed (the old one still serves), 7 timeout, 8 bind failed, 9 command not found, 10 the first generation never \
            became ready, 11 busy, 12 upgrade failed, 13 (status) the release crash-loops. The full table: \
            /usr/share/doc/baton/EXIT-CODES.md.
            """),
        ManPage.Section(
            "Environment",
            """
            NO_COLOR: no colour, even on a terminal. XDG_RUNTIME_DIR: the run directory of --name is $XDG_RUNTIME_DIR/baton \
            (as root /run/baton; else /tmp/baton-UID). NOTIFY_SOCKET: under systemd, baton run reports READY=1, RELOADING=1 \
            and STATUS=.

            The app gets SERVER_STARTER_PORT, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, NOTIFY_SOCKET and \
            SERVER_STARTER_GENERATION.
            """),
        ManPage.Section(
            "Files",
            """
            NAME.pid, NAME.control and NAME.log under the run directory, for a supervisor started with --name NAME; with \
            --pid-file PATH, the control socket and the log go next to it (app.pid, app.control, app.log).
            """),
        ManPage.Section("See also", "start_server(1), systemd.service(5), logrotate(8)"),
    ]

    static func command(_ name: String) -> CommandSpec? { commands.first { $0.name == name } }

    static let overview = HelpText.overview(
        program: "baton", usage: "COMMAND [options] [-- command...]",
        about: about,
        commands: commands,
        footer: "Run 'baton help COMMAND' for a command's options. Exit codes: docs/EXIT-CODES.md.")
}
