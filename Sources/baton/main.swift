import BatonCore
import BatonSystem
import Glibc

/// Prints an error the way every command does, and exits with its code.
func fail(_ error: BatonError) -> Never {
    // A message that names its command already ("baton run: unknown option ...") needs no second prefix.
    let text = error.message.hasPrefix("baton ") ? error.message : "baton: \(error.message)"
    Sys.writeAll(2, "\(text)\n".utf8)
    exit(error.exitCode)
}

let commands: [String: @Sendable ([String]) throws(BatonError) -> Int32] = [
    "run": runCommand, "start": startCommand, "restart": restartCommand, "deploy": deployCommand, "upgrade": upgradeCommand,
    "stop": stopCommand,
    "status": statusCommand, "logs": logsCommand, "list": listCommand, "completions": completionsCommand, "man": manCommand,
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

func completionsCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.completions, args, positional: .one)
    let names = Completions.Shell.allCases.map(\.rawValue)
    guard let name = o.positional, let shell = Completions.Shell(rawValue: name) else {
        throw BatonError(.usage, "completions: give a shell: \(names.joined(separator: ", ")) (for example 'baton completions bash')")
    }
    let program = o.last("program") ?? "baton"
    guard ["baton", "start_server"].contains(program) else {
        throw BatonError(.usage, "completions: --program takes baton or start_server, not '\(program)'")
    }
    let script =
        program == "start_server"
        ? Completions.script(shell, program: "start_server", commands: [StartServerTable.command])
        : Completions.script(shell, program: "baton", commands: Table.commands)
    Sys.writeAll(1, script.utf8)
    return 0
}

func manCommand(_ args: [String]) throws(BatonError) -> Int32 {
    let o = try parse(Table.man, args, positional: .one)
    switch o.positional ?? "baton" {
    case "baton":
        let page = ManPage.render(
            program: "baton", version: batonVersion, summary: Table.summary, description: Table.about, commands: Table.commands,
            sections: Table.manSections)
        Sys.writeAll(1, page.utf8)
    case "start_server":
        let page = ManPage.render(
            program: "start_server", version: batonVersion,
            summary: "hot-deploy server programs without dropping a connection (Server::Starter compatible)",
            description:
                "This start_server is Baton's drop-in for Perl's Server::Starter \(StartServerTable.compatibleVersion): same options, environment, status file and signals.",
            commands: [StartServerTable.command],
            sections: [ManPage.Section("See also", "baton(1), the Server::Starter documentation (perldoc Server::Starter)")])
        Sys.writeAll(1, page.utf8)
    case let page:
        throw BatonError(.usage, "man: no page '\(page)'; there are baton and start_server")
    }
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
