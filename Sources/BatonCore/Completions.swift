/// Shell completion scripts made from the command table: commands, their
/// options, and option values (choices, files, directories, signals).
public enum Completions {
    /// The shells a script can be made for.
    public enum Shell: String, Sendable, CaseIterable {
        case bash, zsh, fish
    }

    /// The signal names an option that takes a signal completes with.
    static let signals = ["TERM", "QUIT", "INT", "HUP", "USR1", "USR2", "KILL", "WINCH"]

    /// The script for `shell`. A program whose only command bears its name
    /// (`start_server`) completes options alone.
    public static func script(_ shell: Shell, program: String, commands: [CommandSpec]) -> String {
        let visible = commands.filter(\.listed)
        switch shell {
        case .bash: return bash(program, visible)
        case .zsh: return zsh(program, visible)
        case .fish: return fish(program, visible)
        }
    }

    static func single(_ program: String, _ commands: [CommandSpec]) -> Bool {
        commands.count == 1 && commands[0].name == program
    }

    static func options(_ c: CommandSpec) -> [OptionSpec] { c.options.filter { !$0.hidden } }

    /// What an option's value completes with, whatever the shell.
    enum Values {
        case words([String]), files, directories, anything
    }

    static func values(_ o: OptionSpec) -> Values {
        if !o.choices.isEmpty { return .words(o.choices) }
        switch o.completes {
        case .file: return .files
        case .directory: return .directories
        case .signal: return .words(signals)
        case .anything: return .anything
        }
    }

    static func identifier(_ program: String) -> String {
        String(program.map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    // MARK: - bash

    static func bash(_ program: String, _ commands: [CommandSpec]) -> String {
        let f = "_\(identifier(program))"
        let isSingle = single(program, commands)
        var out = ["# bash completion for \(program), generated from its command table", "\(f)() {"]
        out.append("    local cur prev command i")
        out.append("    cur=\"${COMP_WORDS[COMP_CWORD]}\"")
        out.append("    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"")
        if isSingle {
            out.append("    command=\(program)")
        } else {
            out.append("    command=")
            out.append("    for ((i = 1; i < COMP_CWORD; i++)); do")
            out.append("        case \"${COMP_WORDS[i]}\" in")
            out.append("            --) return 0 ;;")
            out.append("            -*) ;;")
            out.append("            *) command=\"${COMP_WORDS[i]}\"; break ;;")
            out.append("        esac")
            out.append("    done")
            out.append("    if [[ -z $command ]]; then")
            out.append("        COMPREPLY=($(compgen -W \"\(commands.map(\.name).joined(separator: " ")) --help --version\" -- \"$cur\"))")
            out.append("        return 0")
            out.append("    fi")
        }
        out.append("    case \"$command\" in")
        for c in commands {
            out.append("        \(c.name))")
            out.append("            case \"$prev\" in")
            for o in options(c) where o.takesValue {
                let names = ["--\(o.name)"] + (o.short.map { ["-\($0)"] } ?? [])
                out.append("                \(names.joined(separator: "|"))) \(bashValue(o)); return 0 ;;")
            }
            out.append("            esac")
            var words = options(c).map { "--\($0.name)" }
            if c.name == "help" { words += commands.map(\.name) }
            if c.name == "completions" { words += Shell.allCases.map(\.rawValue) }
            out.append("            COMPREPLY=($(compgen -W \"\(words.joined(separator: " "))\" -- \"$cur\"))")
            out.append("            ;;")
        }
        out.append("    esac")
        out.append("}")
        out.append("complete -F \(f) \(program)")
        return out.joined(separator: "\n") + "\n"
    }

    static func bashValue(_ o: OptionSpec) -> String {
        switch values(o) {
        case .words(let words): return "COMPREPLY=($(compgen -W \"\(words.joined(separator: " "))\" -- \"$cur\"))"
        case .files: return "COMPREPLY=($(compgen -f -- \"$cur\"))"
        case .directories: return "COMPREPLY=($(compgen -d -- \"$cur\"))"
        case .anything: return "COMPREPLY=()"
        }
    }

    // MARK: - zsh

    static func zsh(_ program: String, _ commands: [CommandSpec]) -> String {
        let f = "_\(identifier(program))"
        var out = ["#compdef \(program)", "# zsh completion for \(program), generated from its command table", ""]
        func arguments(_ c: CommandSpec) -> [String] {
            options(c).map { o in
                var spec = "[\(zshQuote(o.help))]"
                if o.takesValue { spec += ":\(zshQuote(o.valueName ?? "value")):\(zshValue(o))" }
                if let s = o.short { return "'(-\(s) --\(o.name))'{-\(s),--\(o.name)}'\(spec)'" }
                return "'--\(o.name)\(spec)'"
            }
        }
        if single(program, commands) {
            out.append("_arguments -s \\")
            out += arguments(commands[0]).map { "    \($0) \\" }
            out.append("    '*::command:_normal'")
            return out.joined(separator: "\n") + "\n"
        }
        out.append("\(f)() {")
        out.append("    local line state")
        out.append("    _arguments -C '1: :->command' '*:: :->option' && return")
        out.append("    case $state in")
        out.append("        command)")
        out.append("            local -a commands")
        out.append("            commands=(")
        for c in commands { out.append("                '\(c.name):\(zshQuote(c.abstract))'") }
        out.append("            )")
        out.append("            _describe command commands")
        out.append("            ;;")
        out.append("        option)")
        out.append("            case $line[1] in")
        for c in commands {
            out.append("                \(c.name))")
            var extra = "'*::command:_normal'"
            if c.name == "help" { extra = "'1:command:(\(commands.map(\.name).joined(separator: " ")))'" }
            if c.name == "completions" { extra = "'1:shell:(\(Shell.allCases.map(\.rawValue).joined(separator: " ")))'" }
            out.append("                    _arguments \\")
            out += arguments(c).map { "                        \($0) \\" }
            out.append("                        \(extra)")
            out.append("                    ;;")
        }
        out.append("            esac")
        out.append("            ;;")
        out.append("    esac")
        out.append("}")
        out.append("\(f) \"$@\"")
        return out.joined(separator: "\n") + "\n"
    }

    static func zshValue(_ o: OptionSpec) -> String {
        switch values(o) {
        case .words(let words): return "(\(words.joined(separator: " ")))"
        case .files: return "_files"
        case .directories: return "_files -/"
        case .anything: return " "
        }
    }

    static func zshQuote(_ text: String) -> String {
        text.escaping(["'": "'\\''", "[": "\\[", "]": "\\]", ":": "\\:"])
    }

    // MARK: - fish

    static func fish(_ program: String, _ commands: [CommandSpec]) -> String {
        var out = ["# fish completion for \(program), generated from its command table"]
        let isSingle = single(program, commands)
        let names = commands.map(\.name).joined(separator: " ")
        if !isSingle {
            out.append("complete -c \(program) -f")
            for c in commands {
                out.append("complete -c \(program) -n '__fish_use_subcommand' -a \(c.name) -d \(fishQuote(c.abstract))")
            }
        }
        for c in commands {
            let condition = isSingle ? "" : " -n '__fish_seen_subcommand_from \(c.name)'"
            for o in options(c) {
                var line = "complete -c \(program)\(condition) -l \(o.name)"
                if let s = o.short { line += " -s \(s)" }
                if o.takesValue {
                    line += " -r"
                    switch values(o) {
                    case .words(let words): line += " -f -a \(fishQuote(words.joined(separator: " ")))"
                    case .files: line += " -F"
                    case .directories: line += " -f -a '(__fish_complete_directories)'"
                    case .anything: line += " -f"
                    }
                }
                out.append(line + " -d \(fishQuote(o.help))")
            }
            if c.name == "help" { out.append("complete -c \(program)\(condition) -a \(fishQuote(names))") }
            if c.name == "completions" {
                out.append("complete -c \(program)\(condition) -a \(fishQuote(Shell.allCases.map(\.rawValue).joined(separator: " ")))")
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    static func fishQuote(_ text: String) -> String { "'" + text.escaping(["'": "\\'", "\\": "\\\\"]) + "'" }
}
