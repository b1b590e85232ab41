import BatonCore
import BatonSystem
import Glibc

/// Prints an error the way every command does, and exits with its code.
func fail(_ error: BatonError) -> Never {
    Sys.writeAll(2, "baton: \(error.message)\n".utf8)
    exit(error.exitCode)
}

let commands: [String: ([String]) throws(BatonError) -> Int32] = [
    "run": runCommand, "start": startCommand, "restart": restartCommand, "deploy": deployCommand, "upgrade": upgradeCommand,
    "stop": stopCommand,
    "status": statusCommand, "logs": logsCommand, "list": listCommand,
]

func helpCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.helpCommand, args, positional: .one)
    guard let name = o.positional else {
        Out.line(Table.overview)
        return 0
    }
    guard let command = Table.command(name) else {
        let hint = ParsedOptions.suggestion(for: name, among: Table.commands.map(\.name)).map { " (did you mean '\($0)'?)" } ?? ""
        throw BatonError(.usage, "no command '\(name)'\(hint); see 'baton help'")
    }
    Out.line(HelpText.render(program: "baton", command, width: terminalWidth()))
    return 0
}

func versionCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.version, args, positional: .none)
    try noCommand(o, "version")
    Out.line("baton \(batonVersion)")
    return 0
}

let arguments = Array(CommandLine.arguments.dropFirst())
Daemon.enterHiddenMode(arguments, program: "baton")
Log.setProgram("baton")
// A supervisor that hangs up on us is an answer, not a reason to die.
signal(SIGPIPE, SIG_IGN)
let rest = Array(arguments.dropFirst())
do throws(BatonError) {
    switch arguments.first {
    case nil:
        Out.error(Table.overview)
        exit(2)
    case "help", "--help", "-h": exit(try helpCommand(rest))
    case "version", "--version": exit(try versionCommand(arguments.first == "--version" ? [] : rest))
    case let name?:
        guard let command = commands[name] else {
            let hint = ParsedOptions.suggestion(for: name, among: Table.commands.map(\.name)).map { "did you mean '\($0)'? " } ?? ""
            throw BatonError(.usage, "unknown command '\(name)'; \(hint)see 'baton help'")
        }
        exit(try command(rest))
    }
} catch {
    fail(error)
}
