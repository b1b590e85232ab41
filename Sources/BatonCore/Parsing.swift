#if canImport(Glibc)
    import Glibc
#endif

/// Parsers for option values shared by `baton` and `start_server`.
public enum OptionParsing {
    /// Parses a duration: `500ms`, `1s`, `1.5s`, `2m`, `1h`, or a bare number
    /// of seconds (`3`, `0.5`), as Server::Starter takes them.
    public static func duration(_ text: String, option: String) throws(BatonError) -> Duration {
        let units: [(String, Double)] = [("ms", 1e-3), ("s", 1), ("m", 60), ("min", 60), ("h", 3600)]
        var number = Substring(text)
        var scale = 1.0
        for (suffix, factor) in units.sorted(by: { $0.0.count > $1.0.count }) where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = factor
            break
        }
        guard !number.isEmpty,
            number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
            let value = Double(number), value.isFinite, value >= 0, value * scale <= 31_536_000
        else {
            throw BatonError(
                .usage,
                "\(option) '\(text)': not a duration; expected for example 500ms, 2s, 1.5s, 5m or a number of seconds"
            )
        }
        return .nanoseconds(Int64(value * scale * 1e9))
    }

    /// The signals a user may name, by name without `SIG`.
    public static let signalNames: [(String, Int32)] = [
        ("HUP", SIGHUP), ("INT", SIGINT), ("QUIT", SIGQUIT), ("KILL", SIGKILL),
        ("USR1", SIGUSR1), ("USR2", SIGUSR2), ("TERM", SIGTERM), ("CONT", SIGCONT),
        ("STOP", SIGSTOP), ("TSTP", SIGTSTP), ("WINCH", SIGWINCH), ("ALRM", SIGALRM),
    ]

    /// Parses a signal name (`TERM`, `SIGTERM`, `term`) or number (`15`).
    public static func signal(_ text: String, option: String) throws(BatonError) -> Int32 {
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name = String(name.dropFirst(3)) }
        if let match = signalNames.first(where: { $0.0 == name }) { return match.1 }
        if let number = Int32(text), number > 0, number < 65 { return number }
        throw BatonError(
            .usage,
            "\(option) '\(text)': not a signal; expected a name such as TERM, QUIT, INT, HUP, USR1 or a number"
        )
    }

    /// The name of a signal number, `SIGTERM` style, for messages.
    public static func signalName(_ number: Int32) -> String {
        if let match = signalNames.first(where: { $0.1 == number }) { return "SIG" + match.0 }
        switch number {
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGBUS: return "SIGBUS"
        case SIGFPE: return "SIGFPE"
        case SIGILL: return "SIGILL"
        case SIGPIPE: return "SIGPIPE"
        case SIGTRAP: return "SIGTRAP"
        default: return "signal \(number)"
        }
    }

    /// Parses an octal file mode such as `0660` or `660`.
    public static func fileMode(_ text: String, option: String) throws(BatonError) -> UInt32 {
        guard !text.isEmpty, text.count <= 4, let mode = UInt32(text, radix: 8), mode <= 0o7777 else {
            throw BatonError(.usage, "\(option) '\(text)': not an octal file mode; expected for example 0660")
        }
        return mode
    }

    /// Parses a whole number within `range`.
    public static func integer(_ text: String, option: String, range: ClosedRange<Int>) throws(BatonError) -> Int {
        guard let value = Int(text), range.contains(value) else {
            throw BatonError(
                .usage,
                "\(option) '\(text)': expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }
}
