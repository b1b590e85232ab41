/// One option of a command, declared once: the parser, the help, the
/// completions and the man pages are all made from these.
public struct OptionSpec: Sendable, Equatable {
    /// The option's name without dashes.
    public let name: String
    /// The value's placeholder (`ADDR`, `D`), or nil for a flag.
    public let valueName: String?
    /// What the option does, one sentence.
    public let help: String
    /// The heading it is listed under in the help.
    public var group: String
    /// Listed in neither help nor completions (a spelling kept for old scripts).
    public var hidden = false
    /// Values it takes, for completions (`notify`, `auto`, ...); empty: any.
    public var choices: [String] = []
    /// The kind of value, for completions: a path, a directory, or anything.
    public var completes: Completion = .anything
    /// A one-letter spelling (`-f`), if it has one.
    public var short: Character?

    /// What a shell may complete an option's value with.
    public enum Completion: String, Sendable, Equatable {
        case anything, file, directory, signal
    }

    /// True when it takes a value.
    public var takesValue: Bool { valueName != nil }

    /// Declares an option.
    public init(
        _ name: String, short: Character? = nil, value: String? = nil, _ help: String, group: String = "Options",
        choices: [String] = [], completes: Completion = .anything, hidden: Bool = false
    ) {
        self.short = short
        self.name = name
        self.valueName = value
        self.help = help
        self.group = group
        self.choices = choices
        self.completes = completes
        self.hidden = hidden
    }
}

/// How a command line is read.
public enum OptionStyle: Sendable, Equatable {
    /// GNU long options: `--name value`, `--name=value`, `-h` for help; the
    /// command after `--` or the first word that is not an option.
    case gnu
    /// Perl's Getopt::Long as Server::Starter uses it: `-name` or `--name`,
    /// `=value` or the next word, names in any case, and any unique
    /// abbreviation; a name of `preferred` wins an abbreviation it shares
    /// with the others (the options of the program being replaced come first).
    case getoptLong(preferred: Set<String>)
}

/// Where a command takes a word that is not an option.
public enum PositionalRule: Sendable, Equatable {
    /// Nowhere: the first such word begins the rest (the app's command).
    case none
    /// One word (a supervisor's name), anywhere among the options; nothing else.
    case one
    /// One word before a later `--` (`baton start NAME --listen 8080 -- ./app`).
    case beforeDashes
}

/// The result of parsing: each option's values in order, and the rest.
public struct ParsedOptions: Sendable {
    /// Values by option name (flags get an empty string per occurrence).
    public var values: [String: [String]] = [:]
    /// The words after the options (the app's command).
    public var rest: [String] = []
    /// The positional word, if the command takes one and it was given.
    public var positional: String?

    /// The last value of `name`.
    public func last(_ name: String) -> String? { values[name]?.last }
    /// All values of `name`.
    public func all(_ name: String) -> [String] { values[name] ?? [] }
    /// True when the flag `name` was given.
    public func has(_ name: String) -> Bool { values[name] != nil }

    /// An empty result.
    public init() {}

    /// Parses `arguments` against `specs`. `command` names the command in errors.
    public init(
        _ arguments: [String], specs: [OptionSpec], command: String, style: OptionStyle = .gnu, positional rule: PositionalRule = .none
    ) throws(BatonError) {
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "--" {
                rest = Array(arguments[i...])
                return
            }
            let (spec, inline) = try Self.match(arg, specs: specs, command: command, style: style)
            guard let spec else {
                switch rule {
                case .one:
                    guard positional == nil else {
                        throw BatonError(.usage, "\(command): unexpected argument '\(arg)'; see '\(command) --help'")
                    }
                    positional = arg
                    continue
                case .beforeDashes where positional == nil && arguments[i...].contains("--"):
                    positional = arg
                    continue
                default:
                    rest = Array(arguments[(i - 1)...])
                    return
                }
            }
            if let valueName = spec.valueName {
                let value: String
                if let inline {
                    value = inline
                } else {
                    guard i < arguments.count else {
                        throw BatonError(
                            .usage,
                            Self.message(
                                style, command, "--\(spec.name) needs a value (\(valueName))", "Option \(spec.name) requires an argument"))
                    }
                    value = arguments[i]
                    i += 1
                }
                values[spec.name, default: []].append(value)
            } else {
                guard inline == nil else {
                    throw BatonError(
                        .usage,
                        Self.message(style, command, "--\(spec.name) takes no value", "Option \(spec.name) does not take an argument"))
                }
                values[spec.name, default: []].append("")
            }
        }
    }

    private static func message(_ style: OptionStyle, _ command: String, _ gnu: String, _ perl: String) -> String {
        style == .gnu ? "\(command): \(gnu)" : perl
    }

    /// The option `arg` names and its inline value; nil for a word that is not an option.
    private static func match(_ arg: String, specs: [OptionSpec], command: String, style: OptionStyle) throws(BatonError) -> (
        OptionSpec?, String?
    ) {
        switch style {
        case .gnu:
            if arg.count >= 2, arg.hasPrefix("-"), !arg.hasPrefix("--") {
                let letter = arg[arg.index(after: arg.startIndex)]
                if let spec = specs.first(where: { $0.short == letter }) {
                    let attached = String(arg.dropFirst(2))
                    guard attached.isEmpty || spec.takesValue else {
                        throw BatonError(.usage, "\(command): -\(letter) takes no value; see '\(command) --help'")
                    }
                    return (spec, attached.isEmpty ? nil : attached)
                }
            }
            guard arg.hasPrefix("--"), arg.count > 2 else {
                if arg.hasPrefix("-"), arg != "-" {
                    throw BatonError(.usage, "\(command): unknown option '\(arg)'; see '\(command) --help'")
                }
                return (nil, nil)
            }
            var name = String(arg.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let spec = specs.first(where: { $0.name == name }) else {
                let hint = suggestion(for: name, among: specs.filter { !$0.hidden }.map(\.name)).map { "did you mean '--\($0)'? " } ?? ""
                throw BatonError(.usage, "\(command): unknown option '--\(name)'; \(hint)see '\(command) --help'")
            }
            return (spec, inline)
        case .getoptLong(let preferred):
            guard arg.hasPrefix("-"), arg.count > 1 else { return (nil, nil) }
            var name = String(arg.drop { $0 == "-" })
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            let lower = name.lowercased()
            if let exact = specs.first(where: { $0.name == lower }) { return (exact, inline) }
            let candidates = specs.filter { $0.name.hasPrefix(lower) }
            let first = candidates.filter { preferred.contains($0.name) }
            let chosen = first.count == 1 ? first : candidates
            guard chosen.count == 1, !lower.isEmpty else {
                throw BatonError(
                    .usage,
                    chosen.isEmpty
                        ? "Unknown option: \(name)"
                        : "Option \(name) is ambiguous (\(chosen.map(\.name).joined(separator: ", ")))")
            }
            return (chosen[0], inline)
        }
    }

    /// The closest of `names` to a mistyped `name`, if one is close enough.
    public static func suggestion(for name: String, among names: [String]) -> String? {
        let scored = names.map { ($0, editDistance(name, $0)) }.filter { $0.1 <= max(2, name.count / 3) }
        return scored.min { $0.1 < $1.1 }?.0 ?? names.first { $0.hasPrefix(name) && !name.isEmpty }
    }

    /// Levenshtein distance.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let saved = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = saved
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}
