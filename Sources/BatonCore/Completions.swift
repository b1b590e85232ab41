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

    /// The words a command takes after its options (`help COMMAND`,
    /// `completions SHELL`), with what zsh calls them; nil for the rest.
    static func operands(_ c: CommandSpec, _ commands: [CommandSpec]) -> (label: String, words: [String])? {
        switch c.name {
        case "help": return ("command", commands.map(\.name))
        case "completions": return ("shell", Shell.allCases.map(\.rawValue))
        default: return nil
        }
    }

    static func identifier(_ program: String) -> String {
        String(program.map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    /// How a shell completes an option's value, for each kind of ``Values``.
    struct ValueSyntax: Sendable {
        var words: @Sendable (String) -> String
        var files: String
        var directories: String
        var anything: String

        func render(_ o: OptionSpec) -> String {
            switch values(o) {
            case .words(let words): return self.words(words.joined(separator: " "))
            case .files: return files
            case .directories: return directories
            case .anything: return anything
            }
        }
    }

    // MARK: - bash

    static let bashValues = ValueSyntax(
        words: { "COMPREPLY=($(compgen -W \"\($0)\" -- \"$cur\"))" }, files: "COMPREPLY=($(compgen -f -- \"$cur\"))",
        directories: "COMPREPLY=($(compgen -d -- \"$cur\"))", anything: "COMPREPLY=()")

    static func bash(_ program: String, _ commands: [CommandSpec]) -> String {
        let f = "_\(identifier(program))"
        var out = """
            # bash completion for \(program), generated from its command table
            \(f)() {
                local cur prev command i
                cur="${COMP_WORDS[COMP_CWORD]}"
                prev="${COMP_WORDS[COMP_CWORD-1]}"

            """
        if single(program, commands) {
            out += "    command=\(program)\n"
        } else {
            out += """
                    command=
                    for ((i = 1; i < COMP_CWORD; i++)); do
                        case "${COMP_WORDS[i]}" in
                            --) return 0 ;;
                            -*) ;;
                            *) command="${COMP_WORDS[i]}"; break ;;
                        esac
                    done
                    if [[ -z $command ]]; then
                        COMPREPLY=($(compgen -W "\(commands.map(\.name).joined(separator: " ")) --help --version" -- "$cur"))
                        return 0
                    fi

                """
        }
        out += "    case \"$command\" in\n"
        for c in commands {
            out += "        \(c.name))\n            case \"$prev\" in\n"
            for o in options(c) where o.takesValue {
                let names = ["--\(o.name)"] + (o.short.map { ["-\($0)"] } ?? [])
                out += "                \(names.joined(separator: "|"))) \(bashValues.render(o)); return 0 ;;\n"
            }
            let words = options(c).map { "--\($0.name)" } + (operands(c, commands)?.words ?? [])
            out += """
                            esac
                            COMPREPLY=($(compgen -W "\(words.joined(separator: " "))" -- "$cur"))
                            ;;

                """
        }
        return out + "    esac\n}\ncomplete -F \(f) \(program)\n"
    }

    // MARK: - zsh

    static let zshValues = ValueSyntax(
        words: { "(\($0))" }, files: "_files", directories: "_files -/", anything: " ")

    static func zsh(_ program: String, _ commands: [CommandSpec]) -> String {
        let f = "_\(identifier(program))"
        var out = "#compdef \(program)\n# zsh completion for \(program), generated from its command table\n\n"
        func arguments(_ c: CommandSpec, indent: String) -> String {
            options(c).map { o in
                var spec = "[\(zshQuote(o.help))]"
                if o.takesValue { spec += ":\(zshQuote(o.valueName ?? "value")):\(zshValues.render(o))" }
                if let s = o.short { return "\(indent)'(-\(s) --\(o.name))'{-\(s),--\(o.name)}'\(spec)' \\\n" }
                return "\(indent)'--\(o.name)\(spec)' \\\n"
            }.joined()
        }
        if single(program, commands) {
            return out + "_arguments -s \\\n" + arguments(commands[0], indent: "    ") + "    '*::command:_normal'\n"
        }
        out += """
            \(f)() {
                local line state
                _arguments -C '1: :->command' '*:: :->option' && return
                case $state in
                    command)
                        local -a commands
                        commands=(

            """
        for c in commands { out += "                '\(c.name):\(zshQuote(c.abstract))'\n" }
        out += """
                        )
                        _describe command commands
                        ;;
                    option)
                        case $line[1] in

            """
        for c in commands {
            let extra = operands(c, commands).map { "'1:\($0.label):(\($0.words.joined(separator: " ")))'" } ?? "'*::command:_normal'"
            out += "                \(c.name))\n                    _arguments \\\n"
            out += arguments(c, indent: "                        ")
            out += "                        \(extra)\n                    ;;\n"
        }
        return out + """
                        esac
                        ;;
                esac
            }
            \(f) "$@"

            """
    }

    static func zshQuote(_ text: String) -> String {
        text.escaping(["'": "'\\''", "[": "\\[", "]": "\\]", ":": "\\:"])
    }

    // MARK: - fish

    static let fishValues = ValueSyntax(
        words: { " -f -a \(fishQuote($0))" }, files: " -F", directories: " -f -a '(__fish_complete_directories)'", anything: " -f")

    static func fish(_ program: String, _ commands: [CommandSpec]) -> String {
        var out = ["# fish completion for \(program), generated from its command table"]
        let isSingle = single(program, commands)
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
                if o.takesValue { line += " -r" + fishValues.render(o) }
                out.append(line + " -d \(fishQuote(o.help))")
            }
            if let operands = operands(c, commands) {
                out.append("complete -c \(program)\(condition) -a \(fishQuote(operands.words.joined(separator: " ")))")
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    static func fishQuote(_ text: String) -> String { "'" + text.escaping(["'": "\\'", "\\": "\\\\"]) + "'" }
}
