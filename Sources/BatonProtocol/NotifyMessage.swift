/// One message of the sd_notify protocol: newline-separated `KEY=VALUE`
/// lines in one datagram, such as `READY=1` or `STATUS=warming up`.
public struct NotifyMessage: Sendable, Equatable {
    /// `READY=1` was present.
    public var ready = false
    /// `STOPPING=1` was present.
    public var stopping = false
    /// `RELOADING=1` was present.
    public var reloading = false
    /// The text of `STATUS=` (at most 200 characters).
    public var status: String?
    /// The number of `ERRNO=`.
    public var errno: Int32?
    /// Lines that are not `KEY=VALUE` (the message is garbage if any).
    public var malformedLines = 0

    /// A message with nothing in it.
    public init() {}

    /// Parses a datagram; bytes that are not UTF-8 count as malformed.
    public init(parsing bytes: some Collection<UInt8>) {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            malformedLines = 1
            return
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let eq = line.firstIndex(of: "="), eq != line.startIndex else {
                malformedLines += 1
                continue
            }
            let key = line[..<eq]
            let value = line[line.index(after: eq)...]
            switch key {
            case "READY": ready = value == "1"
            case "STOPPING": stopping = value == "1"
            case "RELOADING": reloading = value == "1"
            case "STATUS": status = String(value.prefix(200))
            case "ERRNO": errno = Int32(value)
            default:
                if !key.allSatisfy({ $0.isASCII && ($0.isUppercase || $0.isNumber || $0 == "_") }) {
                    malformedLines += 1
                }
            }
        }
        if text.isEmpty { malformedLines = 1 }
    }

    /// True when the message carries nothing but well-formed lines.
    public var isWellFormed: Bool { malformedLines == 0 }

    /// The datagram's text: the lines this message sets, in protocol order.
    public var text: String {
        var lines: [String] = []
        if ready { lines.append("READY=1") }
        if reloading { lines.append("RELOADING=1") }
        if stopping { lines.append("STOPPING=1") }
        if let status { lines.append("STATUS=" + String(status.map { $0.isNewline ? " " : $0 })) }
        if let errno { lines.append("ERRNO=\(errno)") }
        return lines.joined(separator: "\n")
    }
}
