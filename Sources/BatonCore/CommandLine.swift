/// A small command-line parser for GNU-style long options (`--name value`,
/// `--name=value`, flags), followed by the app's command after `--` or the
/// first word that is not an option.
public struct OptionSpec: Sendable {
    /// The option's name without dashes.
    public let name: String
    /// True when it takes a value.
    public let takesValue: Bool
    /// Shown in help: the value's placeholder and what the option does.
    public let valueName: String
    /// What the option does.
    public let help: String

    /// Declares an option.
    public init(_ name: String, value: String? = nil, _ help: String) {
        self.name = name
        self.takesValue = value != nil
        self.valueName = value ?? ""
        self.help = help
    }
}

/// The result of parsing: each option's values in order, and the command.
public struct ParsedOptions: Sendable {
    /// Values by option name (flags get an empty string per occurrence).
    public var values: [String: [String]] = [:]
    /// The words after the options.
    public var rest: [String] = []

    /// The last value of `name`.
    public func last(_ name: String) -> String? { values[name]?.last }
    /// All values of `name`.
    public func all(_ name: String) -> [String] { values[name] ?? [] }
    /// True when the flag `name` was given.
    public func has(_ name: String) -> Bool { values[name] != nil }

    /// Parses `arguments` against `specs`. `command` names the command in errors.
    public init(_ arguments: [String], specs: [OptionSpec], command: String) throws(BatonError) {
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "--" {
                rest = Array(arguments[i...])
                return
            }
            guard arg.hasPrefix("--"), arg.count > 2 else {
                if arg.hasPrefix("-"), arg != "-", !(arg == "-h") {
                    throw BatonError(.usage, "\(command): unknown option '\(arg)'; see '\(command) --help'")
                }
                if arg == "-h" {
                    values["help", default: []].append("")
                    continue
                }
                rest = Array(arguments[(i - 1)...])
                return
            }
            var name = String(arg.dropFirst(2))
            var inlineValue: String?
            if let eq = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let spec = specs.first(where: { $0.name == name }) else {
                throw BatonError(.usage, "\(command): unknown option '--\(name)'; see '\(command) --help'")
            }
            if spec.takesValue {
                if let inlineValue {
                    values[name, default: []].append(inlineValue)
                } else {
                    guard i < arguments.count else {
                        throw BatonError(.usage, "\(command): --\(name) needs a value (\(spec.valueName))")
                    }
                    values[name, default: []].append(arguments[i])
                    i += 1
                }
            } else {
                guard inlineValue == nil else {
                    throw BatonError(.usage, "\(command): --\(name) takes no value")
                }
                values[name, default: []].append("")
            }
        }
    }

    /// Help lines for `specs`, aligned.
    public static func helpText(_ specs: [OptionSpec]) -> String {
        let heads = specs.map { "  --\($0.name)" + ($0.takesValue ? " \($0.valueName)" : "") }
        let width = min(34, (heads.map(\.count).max() ?? 0) + 2)
        return zip(heads, specs).map { head, spec in
            let pad = head.count < width ? String(repeating: " ", count: width - head.count) : "\n" + String(repeating: " ", count: width)
            return head + pad + spec.help
        }.joined(separator: "\n")
    }
}
