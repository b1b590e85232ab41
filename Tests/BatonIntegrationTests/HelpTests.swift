import Foundation
import Glibc
import Testing

/// The help, man pages and completions, all made from the command tables:
/// the help text of every command is compared exactly with the files in
/// Tests/golden/help (BATON_UPDATE_GOLDEN=1 writes them again, for a change
/// meant to be made), and every option the help lists must be in the man
/// page and in each completion script.
@Suite struct HelpTests {
    static let commands = [
        "run", "start", "restart", "deploy", "upgrade", "stop", "status", "logs", "list", "completions", "man", "help", "version",
    ]
    static let golden = Paths.repository + "/Tests/golden/help"

    func help(_ command: String?) -> String {
        let r = run(Paths.baton, ["help"] + (command.map { [$0] } ?? []), env: ["COLUMNS": "80"])
        #expect(r.status == 0, "\(r.output)")
        return r.output
    }

    /// The options the help of `command` lists (`--name`), hidden ones aside.
    func options(of command: String) -> Set<String> {
        let text = help(command)
        var names: Set<String> = []
        for line in text.split(separator: "\n") where line.hasPrefix("  -") {
            // The head only: "  -f, --follow     keep printing ..." -> "-f, --follow".
            let head = line.dropFirst(2).components(separatedBy: "  ").first ?? ""
            for word in head.split(separator: " ") where word.hasPrefix("--") {
                names.insert(String(word.prefix { $0 != "," && $0 != "=" }))
            }
        }
        return names
    }

    @Test(arguments: [nil] + commands)
    func theHelpIsExactlyAsReviewed(_ command: String?) throws {
        let text = help(command)
        let file = Self.golden + "/\(command ?? "baton").txt"
        if ProcessInfo.processInfo.environment["BATON_UPDATE_GOLDEN"] == "1" {
            try text.write(toFile: file, atomically: true, encoding: .utf8)
        }
        let expected = try #require(try? String(contentsOfFile: file, encoding: .utf8), "no \(file): run with BATON_UPDATE_GOLDEN=1")
        #expect(text == expected, "the help of '\(command ?? "baton")' changed; if meant, run the test with BATON_UPDATE_GOLDEN=1")
    }

    @Test func startServersHelpNamesEveryOptionOfItsTable() throws {
        let page = run(Paths.baton, ["man", "start_server"])
        #expect(page.status == 0)
        let help = run(Paths.startServer, ["--help"]).output
        let options = startServerOptions()
        #expect(options.count > 20, "\(options)")
        for option in options { #expect(help.contains(option), "start_server --help lacks \(option)") }
    }

    @Test func theManPagesNameEveryOptionAndRenderWithoutWarnings() throws {
        let groff = Paths.tool("groff")
        if Peers.inCI { try #require(groff != nil, "groff is missing (groff-base, installed by .ci/run)") }
        let scratch = Scratch()
        for page in ["baton", "start_server"] {
            let r = run(Paths.baton, ["man", page])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.hasPrefix(#".\" Generated"#))
            #expect(r.output.contains(".TH \"\(page.uppercased())\" 1"))
            if let groff {
                let file = scratch.file("\(page).1")
                try r.output.write(toFile: file, atomically: true, encoding: .utf8)
                // -ww: every warning; -z: no output but the warnings.
                let checked = run(groff, ["-man", "-Tutf8", "-ww", "-z", file])
                #expect(checked.status == 0 && checked.output.isEmpty, "groff on \(page)(1): \(checked.output)")
            }
        }
        let page = run(Paths.baton, ["man"]).output
        for command in Self.commands {
            #expect(page.contains(".SS \"baton \(command)"), "baton(1) has no section for \(command)")
            for option in options(of: command) {
                #expect(
                    page.contains("\\fB" + option.replacingOccurrences(of: "-", with: "\\-") + "\\fR"),
                    "baton(1) lacks \(option) of \(command)")
            }
        }
        #expect(run(Paths.baton, ["man", "bogus"]).status == 2)
    }

    @Test func theCompletionsOfEachShellKnowEveryCommandAndOption() throws {
        let scratch = Scratch()
        for shell in ["bash", "zsh", "fish"] {
            let r = run(Paths.baton, ["completions", shell])
            #expect(r.status == 0, "\(r.output)")
            for command in Self.commands {
                #expect(r.output.contains(command), "the \(shell) completions lack \(command)")
                for option in options(of: command) {
                    let name = String(option.dropFirst(2))
                    let found = shell == "fish" ? r.output.contains("-l \(name) ") : r.output.contains(option)
                    #expect(found, "the \(shell) completions lack \(option) of \(command)")
                }
            }
            let starter = run(Paths.baton, ["completions", shell, "--program", "start_server"])
            #expect(starter.status == 0, "\(starter.output)")
            for option in startServerOptions() {
                let found = shell == "fish" ? starter.output.contains("-l \(option.dropFirst(2)) ") : starter.output.contains(option)
                #expect(found, "the \(shell) completions of start_server lack \(option)")
            }
            // The shell itself reads both scripts without a syntax error.
            let tool = Paths.tool(shell)
            if Peers.inCI { try #require(tool != nil, "\(shell) is missing (installed by .ci/run)") }
            if let tool {
                for (name, script) in [("baton", r.output), ("start_server", starter.output)] {
                    let file = scratch.file("\(name).\(shell)")
                    try script.write(toFile: file, atomically: true, encoding: .utf8)
                    let checked = run(tool, ["-n", file])
                    #expect(checked.status == 0, "\(shell) -n on \(name)'s: \(checked.output)")
                }
            }
        }
        #expect(run(Paths.baton, ["completions", "tcsh"]).status == 2)
        #expect(run(Paths.baton, ["completions", "bash", "--program", "nginx"]).status == 2)
    }

    /// The long options start_server(1) lists, from its roff.
    func startServerOptions() -> [String] {
        run(Paths.baton, ["man", "start_server"]).output.split(separator: "\n").filter { $0.hasPrefix("\\fB\\-\\-") }.map {
            // `\fB\-\-log\-file\fR ...`: the name runs to the first `\f`.
            "--" + String($0.dropFirst("\\fB\\-\\-".count)).components(separatedBy: "\\f")[0].replacingOccurrences(of: "\\-", with: "-")
        }
    }

    /// bash completes what a user types: commands, options, values.
    @Test func bashCompletesCommandsOptionsAndValues() throws {
        let bash = try #require(Paths.tool("bash"), "bash is missing")
        let scratch = Scratch()
        for program in ["baton", "start_server"] {
            try run(Paths.baton, ["completions", "bash", "--program", program]).output.write(
                toFile: scratch.file("\(program).bash"), atomically: true, encoding: .utf8)
        }
        /// What bash offers for the last word, with the script of the program `words[0]`.
        func complete(_ words: [String]) -> [String] {
            let quoted = words.map { "'\($0)'" }.joined(separator: " ")
            let program =
                ". \(scratch.file("\(words[0]).bash")); COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1); _\(words[0]); printf '%s\\n' \"${COMPREPLY[@]}\""
            return run(bash, ["-c", program]).output.split(separator: "\n").map(String.init).sorted()
        }
        #expect(complete(["baton", "rest"]) == ["restart"])
        #expect(complete(["baton", "run", "--listen-m"]) == ["--listen-mode"])
        #expect(complete(["baton", "run", "--listen-mode", ""]) == ["shared", "steered"])
        #expect(complete(["baton", "start", "--signal-on-hup", "QU"]) == ["QUIT"])
        #expect(complete(["baton", "help", "dep"]) == ["deploy"])
        #expect(complete(["baton", "completions", "f"]) == ["fish"])
        #expect(complete(["baton", "completions", "bash", "--program", ""]) == ["baton", "start_server"])
        #expect(complete(["start_server", "--signal-on-te"]) == ["--signal-on-term"])
        #expect(complete(["start_server", "--listen-mode", "sh"]) == ["shared"])
    }
}
