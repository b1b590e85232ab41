/// One address to listen on, as given to `--listen`.
public enum ListenAddress: Hashable, Sendable, CustomStringConvertible {
    /// A TCP address: `host` is an IPv4 or IPv6 literal or a host name.
    case tcp(host: String, port: UInt16)
    /// A unix stream socket at a filesystem path.
    case unix(path: String)
    /// A UDP socket (bound, not listening: datagrams have no connections to
    /// hand over, so every generation shares it).
    case udp(host: String, port: UInt16)

    /// The longest unix socket path the kernel accepts (sun_path less the NUL).
    public static let maxUnixPathBytes = 107

    /// Parses `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`, `localhost:8080`,
    /// a bare `8080` (meaning 127.0.0.1), `unix:/path/app.sock`, or any IP
    /// form after `udp:` (`udp:127.0.0.1:8125`, `udp:8125`).
    public init(parsing text: String) throws(BatonError) {
        let bad = { (why: String) in
            BatonError(
                .usage,
                "--listen '\(text)': \(why); expected HOST:PORT, [IPV6]:PORT, PORT, unix:PATH or udp:HOST:PORT")
        }
        if text.hasPrefix("udp:") {
            let inner = String(text.dropFirst(4))
            guard !inner.hasPrefix("unix:"), !inner.hasPrefix("/") else { throw bad("udp: takes HOST:PORT, [IPV6]:PORT or PORT") }
            let (host, port) = try Self.inet(inner, bad)
            self = .udp(host: host, port: port)
            return
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
        let (host, port) = try Self.inet(text, bad)
        self = .tcp(host: host, port: port)
    }

    /// The host and port of `HOST:PORT`, `[IPV6]:PORT` or a bare `PORT` (127.0.0.1).
    private static func inet(_ text: String, _ bad: (String) -> BatonError) throws(BatonError) -> (String, UInt16) {
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
        return (host, UInt16(port))
    }

    /// The form used in messages: `127.0.0.1:8080`, `[::1]:8080`,
    /// `/path/app.sock`, `udp:127.0.0.1:8125`.
    public var description: String {
        switch self {
        case .tcp(let host, let port):
            return Self.hostPort(host, String(port))
        case .unix(let path):
            return path
        case .udp(let host, let port):
            return "udp:" + Self.hostPort(host, String(port))
        }
    }

    /// The key in `SERVER_STARTER_PORT`: as ``description`` for TCP and unix
    /// sockets; for UDP `127.0.0.1:8125`, without the `u` of `--port=u8125`,
    /// as Server::Starter 0.35 writes it (an app tells UDP by the socket's type).
    public var serverStarterKey: String {
        guard case .udp(let host, let port) = self else { return description }
        return Self.hostPort(host, String(port))
    }

    /// True for a UDP socket.
    public var isDatagram: Bool {
        if case .udp = self { return true }
        return false
    }

    /// The form `init(parsing:)` reads back: `127.0.0.1:8080`, `[::1]:8080`,
    /// `unix:/path/app.sock`, `udp:127.0.0.1:8125`.
    public var notation: String {
        if case .unix(let path) = self { return "unix:" + path }
        return description
    }

    private static func hostPort(_ host: String, _ port: String) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
