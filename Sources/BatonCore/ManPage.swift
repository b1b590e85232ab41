/// Manual pages in roff (`man(7)` macros), made from the same command table
/// as the help: a program with commands gets one page with a section per
/// command; a program without commands (`start_server`) one page of options.
public enum ManPage {
    /// A section of prose after the generated ones: a title and paragraphs
    /// separated by blank lines.
    public struct Section: Sendable {
        /// The heading (`EXIT STATUS`).
        public let title: String
        /// Paragraphs; a line that begins with two spaces is shown as is.
        public let text: String

        /// A section.
        public init(_ title: String, _ text: String) {
            self.title = title
            self.text = text
        }
    }

    /// The page of `program`: NAME, SYNOPSIS, DESCRIPTION, then the commands
    /// (or the options of the only one), then `sections`.
    public static func render(
        program: String, section: Int = 1, version: String, summary: String, description: String, commands: [CommandSpec],
        sections: [Section] = []
    ) -> String {
        var out: [String] = []
        out.append(#".\" Generated from the command table of \#(program) \#(version); do not edit."#)
        out.append(".TH \(quote(program.uppercased())) \(section) \"\" \(quote("\(program) \(version)")) \"User Commands\"")
        out.append(".SH NAME")
        out.append("\(escape(program)) \\- \(escape(summary))")
        out.append(".SH SYNOPSIS")
        let single = commands.count == 1 && commands[0].name == program
        for c in commands where c.listed {
            for line in c.usage {
                out.append(".br")
                out.append(".B \(escape(program))")
                out.append(escape(single ? line.replacing(prefix: program + " ") : line))
            }
        }
        out.append(".SH DESCRIPTION")
        out += paragraphs(description)
        if single {
            let c = commands[0]
            out += paragraphs(c.discussion)
            out += optionSections(c.options, heading: ".SH")
            out += exitCodes(c.exitCodes, heading: ".SH")
        } else {
            out.append(".SH COMMANDS")
            for c in commands where c.listed {
                out.append(".SS \(quote(c.usage.first.map { "\(program) \($0)" } ?? c.name))")
                out += paragraphs(c.abstract)
                out += paragraphs(c.discussion)
                out += optionSections(c.options, heading: ".TP\n.I")
                out += exitCodes(c.exitCodes, heading: ".TP\n.I")
            }
        }
        for s in sections {
            out.append(".SH \(quote(s.title.uppercased()))")
            out += paragraphs(s.text)
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// The options by group, each as a tagged paragraph.
    static func optionSections(_ options: [OptionSpec], heading: String) -> [String] {
        var out: [String] = []
        var groups: [String] = []
        for o in options where !o.hidden && !groups.contains(o.group) { groups.append(o.group) }
        for group in groups {
            if heading == ".SH" {
                out.append(".SH \(quote(group.uppercased()))")
            } else {
                out.append(".PP")
                out.append(".I \(quote(group))")
                out.append(".RS")
            }
            for o in options where o.group == group && !o.hidden {
                out.append(".TP")
                var head = o.short.map { "\\fB\\-\(escape(String($0)))\\fR, " } ?? ""
                head += "\\fB\\-\\-\(escape(o.name))\\fR"
                if let v = o.valueName { head += " \\fI\(escape(v))\\fR" }
                out.append(head)
                out.append(escape(o.help) + (o.choices.isEmpty ? "" : " (\(escape(o.choices.joined(separator: ", "))))"))
            }
            if heading != ".SH" { out.append(".RE") }
        }
        return out
    }

    static func exitCodes(_ codes: [(code: Int32, meaning: String)], heading: String) -> [String] {
        guard !codes.isEmpty else { return [] }
        var out = heading == ".SH" ? [".SH \"EXIT STATUS\""] : [".PP", ".I \"Exit codes\"", ".RS"]
        for (code, meaning) in codes {
            out.append(".TP")
            out.append(".B \(code)")
            out.append(escape(meaning))
        }
        if heading != ".SH" { out.append(".RE") }
        return out
    }

    /// Paragraphs of text: blank lines separate them; lines indented by two
    /// spaces are kept as they are (examples).
    static func paragraphs(_ text: String) -> [String] {
        var out: [String] = []
        for paragraph in text.paragraphs() {
            let lines = paragraph.split(separator: "\n", omittingEmptySubsequences: false)
            let example = lines.allSatisfy { $0.hasPrefix("  ") || $0.isEmpty }
            if example {
                out += [".PP", ".nf", ".RS 4"]
                out += lines.map { escape(String($0.dropFirst(2))) }
                out += [".RE", ".fi"]
            } else {
                out.append(".PP")
                out.append(lines.map { escape(String($0)) }.joined(separator: "\n"))
            }
        }
        return out
    }

    /// Text safe in roff: backslashes and hyphens escaped, no line starting with a control character.
    public static func escape(_ text: String) -> String {
        let out = text.escaping(["\\": "\\e", "-": "\\-"])
        return out.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.first == "." || line.first == "'" ? "\\&" + line : String(line)
        }.joined(separator: "\n")
    }

    static func quote(_ text: String) -> String { "\"" + escape(text).escaping(["\"": "\\(dq"]) + "\"" }
}

extension String {
    /// This string without `prefix` at its start, if it starts with it.
    func replacing(prefix: String) -> String { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self }

    /// Each character that `replacements` names replaced by its text (no Foundation).
    func escaping(_ replacements: [Character: String]) -> String {
        var out = ""
        for ch in self {
            if let r = replacements[ch] { out += r } else { out.append(ch) }
        }
        return out
    }
}
