/// One command of a program, declared once: its help, completions and man
/// page are made from this.
public struct CommandSpec: Sendable {
    /// The command's name (`restart`), or the program's for a program without commands.
    public let name: String
    /// What it does, in one line (the list of commands shows it).
    public let abstract: String
    /// The usage lines, each after the program's name.
    public let usage: [String]
    /// Paragraphs saying more, separated by blank lines.
    public let discussion: String
    /// Its options, in the order the help lists them.
    public let options: [OptionSpec]
    /// Its exit codes and what each means.
    public let exitCodes: [(code: Int32, meaning: String)]
    /// The placeholder of its positional argument, if it takes one (`NAME`).
    public let positional: String?
    /// Listed in the help of the program.
    public let listed: Bool

    /// A command.
    public init(
        _ name: String, abstract: String, usage: [String], discussion: String = "", options: [OptionSpec] = [],
        exitCodes: [(code: Int32, meaning: String)] = [], positional: String? = nil, listed: Bool = true
    ) {
        self.name = name
        self.abstract = abstract
        self.usage = usage
        self.discussion = discussion
        self.options = options
        self.exitCodes = exitCodes
        self.positional = positional
        self.listed = listed
    }
}

/// Help text for people, wrapped to a width.
public enum HelpText {
    /// The full help of `command` of `program` (`baton`).
    public static func render(program: String, _ command: CommandSpec, width: Int = 80) -> String {
        var out: [String] = []
        for (i, line) in command.usage.enumerated() {
            out.append((i == 0 ? "Usage: " : "       ") + "\(program) \(line)")
        }
        out.append("")
        out += wrap(command.abstract, width: width)
        if !command.discussion.isEmpty {
            for paragraph in command.discussion.paragraphs() {
                out.append("")
                out += wrap(String(paragraph), width: width)
            }
        }
        var groups: [String] = []
        for o in command.options where !o.hidden && !groups.contains(o.group) { groups.append(o.group) }
        let column = optionColumn(command.options.filter { !$0.hidden })
        for group in groups {
            out.append("")
            out.append("\(group):")
            out += optionLines(command.options.filter { $0.group == group && !$0.hidden }, width: width, column: column)
        }
        if !command.exitCodes.isEmpty {
            out.append("")
            out.append("Exit codes:")
            let items = command.exitCodes.map { (head: "  \($0.code)", text: $0.meaning) }
            out += table(items, width: width, column: 6)
        }
        return out.joined(separator: "\n")
    }

    /// The help of a program with commands: usage, what it is, the commands with their abstracts.
    public static func overview(program: String, usage: String, about: String, commands: [CommandSpec], footer: String, width: Int = 80)
        -> String
    {
        var out = ["Usage: \(program) \(usage)", ""]
        out += wrap(about, width: width)
        out += ["", "Commands:"]
        out += table(commands.filter(\.listed).map { ("  \($0.name)", $0.abstract) }, width: width, column: 12)
        out.append("")
        out += wrap(footer, width: width)
        return out.joined(separator: "\n")
    }

    /// `--name VALUE` (with `-x,` before it if it has a short form) as the help shows it.
    public static func head(_ o: OptionSpec) -> String {
        "  " + (o.short.map { "-\($0), " } ?? "") + "--\(o.name)" + (o.valueName.map { " \($0)" } ?? "")
    }

    /// The column the help of options starts at.
    public static func optionColumn(_ options: [OptionSpec]) -> Int {
        min(32, (options.map { head($0).count }.max() ?? 0) + 2)
    }

    /// `--name VALUE` and its help, aligned and wrapped.
    public static func optionLines(_ options: [OptionSpec], width: Int, column: Int? = nil) -> [String] {
        table(options.map { (head($0), $0.help) }, width: width, column: column ?? optionColumn(options))
    }

    /// Two columns: heads, then texts wrapped at `width`, starting at `column`.
    static func table(_ items: [(String, String)], width: Int, column: Int) -> [String] {
        var out: [String] = []
        for (head, text) in items {
            let lines = wrap(text, width: max(20, width - column))
            let pad = String(repeating: " ", count: column)
            if head.count + 1 < column {
                out.append(head + String(repeating: " ", count: column - head.count) + (lines.first ?? ""))
                out += lines.dropFirst().map { pad + $0 }
            } else {
                out.append(head)
                out += lines.map { pad + $0 }
            }
        }
        return out
    }

    /// Words of `text` in lines of at most `width` characters (a longer word has a line of its own).
    public static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        for source in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = ""
            for word in source.split(separator: " ", omittingEmptySubsequences: true) {
                if line.isEmpty {
                    line = String(word)
                } else if line.count + 1 + word.count <= width {
                    line += " " + word
                } else {
                    lines.append(line)
                    line = String(word)
                }
            }
            lines.append(line)
        }
        return lines
    }
}
