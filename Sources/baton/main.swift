import BatonCore
import BatonSystem
import Glibc

/// The version printed by `baton --version`.
let batonVersion = "0.1.0"

let usage = """
    Usage: baton COMMAND [options] [-- command...]

    Zero-downtime restarts for web apps: baton holds the listening sockets and
    hands them to each new generation of the app, retiring the old one only
    once the new one is ready.

    Commands:
      run       supervise an app in the foreground (HUP: restart, TERM/INT: stop)
      help      show help for a command
      version   print the version

    Run 'baton help COMMAND' for a command's options. Exit codes: docs/EXIT-CODES.md.
    """

func fail(_ error: BatonError) -> Never {
    Sys.writeAll(2, "baton: \(error.message)\n".utf8)
    exit(error.exitCode)
}

func runCommand(_ args: [String]) -> Never {
    do {
        let parsed = try ParsedOptions(args, specs: RunOptions.specs, command: "baton run")
        if parsed.has("help") {
            print(runHelp)
            exit(0)
        }
        let configuration = try RunOptions.configuration(parsed)
        let supervisor = try Supervisor(configuration: configuration)
        let code = try supervisor.run()
        exit(code)
    } catch {
        fail(error)
    }
}

let runHelp = """
    Usage: baton run [options] -- command [args...]

    Binds the listeners once, starts the app with them (LISTEN_FDS, SERVER_STARTER_PORT,
    NOTIFY_SOCKET) and supervises it in the foreground. SIGHUP starts a new generation
    and retires the old one once the new one is ready; SIGTERM or SIGINT stops.

    Options:
    \(OptionParsing_help(RunOptions.specs))
    """

func OptionParsing_help(_ specs: [OptionSpec]) -> String { ParsedOptions.helpText(specs) }

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "__exec" { execHelper(Array(arguments.dropFirst())) }
Log.setProgram("baton")
switch arguments.first {
case "run":
    runCommand(Array(arguments.dropFirst()))
case "help", "--help", "-h", nil:
    if arguments.count > 1, arguments[1] == "run" { print(runHelp) } else { print(usage) }
    exit(arguments.isEmpty ? 2 : 0)
case "version", "--version":
    print("baton \(batonVersion)")
    exit(0)
case let other?:
    fail(BatonError(.usage, "unknown command '\(other)'; see 'baton help'"))
}
