import BatonCore
import BatonSystem
import CBatonShims
import Glibc

/// The version printed by `baton --version`.
let batonVersion = "0.2.0"

let usage = """
    Usage: baton COMMAND [options] [-- command...]

    Zero-downtime restarts for web apps: baton holds the listening sockets and
    hands them to each new generation of the app, retiring the old one only
    once the new one is ready.

    Commands:
      run       supervise an app in the foreground (HUP: restart, TERM/INT: stop)
      start     start the supervisor as a daemon; return once the app is ready
      restart   restart gracefully; exit 0 only when the new generation serves
      deploy    restart if running, else start; with --release/--current, switch releases
      stop      stop every generation and the supervisor
      status    show the supervisor and its generations (LSB exit codes)
      logs      print the end of the daemon's log
      help      show help for a command
      version   print the version

    Run 'baton help COMMAND' for a command's options. Exit codes: docs/EXIT-CODES.md.
    """

func fail(_ error: BatonError) -> Never {
    Sys.writeAll(2, "baton: \(error.message)\n".utf8)
    exit(error.exitCode)
}

let runSpecs = RunOptions.specs + Locations.specs + [OptionSpec("help", "show this help")]

let runHelp = """
    Usage: baton run [options] -- command [args...]

    Binds the listeners once, starts the app with them (LISTEN_FDS, SERVER_STARTER_PORT,
    NOTIFY_SOCKET) and supervises it in the foreground. SIGHUP starts a new generation
    and retires the old one once the new one is ready; SIGTERM or SIGINT stops.
    With --pid-file (or --name) it also answers on a control socket.

    Options:
    \(ParsedOptions.helpText(runSpecs))
    """

func runCommand(_ args: [String]) -> Never {
    // Started by 'baton start': report the first generation's outcome on this pipe.
    let reportFD = Daemon.adoptReportPipe()
    do throws(BatonError) {
        let parsed = try ParsedOptions(args, specs: runSpecs, command: "baton run")
        if parsed.has("help") {
            print(runHelp)
            exit(0)
        }
        var configuration = try RunOptions.configuration(parsed)
        let loc = try Locations(parsed)
        configuration.pidFile = loc.pidFile
        configuration.controlPath = loc.control
        if let log = parsed.last("log-file") {
            let path = Sys.absolute(log)
            let fd = baton_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else { throw BatonError(.failure, "cannot open log file \(path): \(Sys.describe(errno: errno))", errno: errno) }
            dup2(fd, 1)
            dup2(fd, 2)
            close(fd)
            configuration.logFile = path
        }
        configuration.startReportFD = reportFD
        let supervisor = try Supervisor(configuration: configuration)
        let code = try supervisor.run()
        exit(code)
    } catch {
        if let fd = reportFD {
            Sys.writeAll(fd, (errorResult(error).text + "\n").utf8)
        }
        fail(error)
    }
}

func runClient(_ body: ([String]) throws(BatonError) -> Int32, _ args: [String]) -> Never {
    do {
        exit(try body(args))
    } catch {
        fail(error)
    }
}

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "__exec" { execHelper(Array(arguments.dropFirst())) }
Log.setProgram("baton")
// A supervisor that hangs up on us is an answer, not a reason to die.
signal(SIGPIPE, SIG_IGN)
let rest = Array(arguments.dropFirst())
switch arguments.first {
case "run": runCommand(rest)
case "start": runClient(startCommand, rest)
case "restart": runClient(restartCommand, rest)
case "deploy": runClient(deployCommand, rest)
case "stop": runClient(stopCommand, rest)
case "status": runClient(statusCommand, rest)
case "logs": runClient(logsCommand, rest)
case "help", "--help", "-h", nil:
    let commands: [String: ([String]) throws(BatonError) -> Int32] = [
        "start": startCommand, "restart": restartCommand, "deploy": deployCommand, "stop": stopCommand,
        "status": statusCommand, "logs": logsCommand,
    ]
    if let name = rest.first, name == "run" {
        print(runHelp)
    } else if let name = rest.first, let command = commands[name] {
        runClient(command, ["--help"])
    } else {
        print(usage)
    }
    exit(arguments.isEmpty ? 2 : 0)
case "version", "--version":
    print("baton \(batonVersion)")
    exit(0)
case let other?:
    fail(BatonError(.usage, "unknown command '\(other)'; see 'baton help'"))
}
