/// One address to listen on, as given to `--listen`.
public enum ListenAddress: Hashable, Sendable, CustomStringConvertible {
    /// A TCP address: `host` is an IPv4 or IPv6 literal or a host name.
    case tcp(host: String, port: UInt16)
    /// A unix stream socket at a filesystem path.
    case unix(path: String)

    /// The longest unix socket path the kernel accepts (sun_path less the NUL).
    public static let maxUnixPathBytes = 107

    /// Parses `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`, `localhost:8080`,
    /// a bare `8080` (meaning 127.0.0.1) or `unix:/path/app.sock`.
    public init(parsing text: String) throws(BatonError) {
        let bad = { (why: String) in
            BatonError(
                .usage,
                "--listen '\(text)': \(why); expected HOST:PORT, [IPV6]:PORT, PORT or unix:PATH")
        }
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw bad("the unix socket path is empty") }
            guard path.utf8.count <= Self.maxUnixPathBytes else {
                throw bad(
                    "the unix socket path is \(path.utf8.count) bytes long, over the kernel's limit of \(Self.maxUnixPathBytes)"
                )
            }
            self = .unix(path: path)
            return
        }
        if text.hasPrefix("/") || text.hasPrefix("./") {
            throw bad("a unix socket path needs the prefix 'unix:'")
        }
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw bad("missing ']'") }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw bad("missing ':PORT' after ']'") }
            portText = rest.dropFirst()
            guard host.contains(":") else { throw bad("'\(host)' is not an IPv6 address") }
        } else if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
            guard !host.contains(":") else { throw bad("an IPv6 address must be written in brackets") }
            guard !host.isEmpty else { throw bad("the host is empty") }
        } else {
            host = "127.0.0.1"
            portText = Substring(text)
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let port = Int(portText), port <= 65535
        else {
            throw bad("'\(portText)' is not a port number (0-65535)")
        }
        self = .tcp(host: host, port: UInt16(port))
    }

    /// The form used in `SERVER_STARTER_PORT` and in messages:
    /// `127.0.0.1:8080`, `[::1]:8080`, `/path/app.sock`.
    public var description: String {
        switch self {
        case .tcp(let host, let port):
            return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path):
            return path
        }
    }

    /// The form `init(parsing:)` reads back: `127.0.0.1:8080`, `[::1]:8080`, `unix:/path/app.sock`.
    public var notation: String {
        if case .unix(let path) = self { return "unix:" + path }
        return description
    }
}
