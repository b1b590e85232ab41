/// An address to listen on, as written in `SERVER_STARTER_PORT` or given on a
/// command line (`--bind`).
///
/// Forms: `8080` (a bare port: every IPv4 interface), `127.0.0.1:8080`,
/// `localhost:8080`, `[::1]:8080`, and a unix socket path (`/run/app.sock`,
/// or `unix:app.sock` on a command line).
public enum ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// A bare port, meaning every IPv4 interface.
    case port(Int)
    /// A host name or IP literal (IPv6 without brackets) and a port.
    case host(String, port: Int)
    /// A unix stream socket at a path.
    case unix(path: String)

    /// Parses an address given by a person, e.g. to `--bind`.
    ///
    /// Accepts `PORT`, `HOST:PORT`, `[IPV6]:PORT`, `unix:PATH`, and any
    /// string containing a `/` as a unix socket path. Port 0 asks the kernel
    /// for a free port.
    /// - Parameter text: The address.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/invalidAddress``.
    public init(parsing text: String) throws(ListenError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard !path.isEmpty else {
                throw ListenError(.invalidAddress, "the address \"\(text)\" has no path after \"unix:\"")
            }
            self = .unix(path: path)
            return
        }
        switch text.contains("/") ? .address(.unix(path: text)) : Self.parseInet(text, allowUnbracketedIPv6: false) {
        case .address(let address):
            self = address
        case .invalid(let reason):
            throw ListenError(.invalidAddress, "the address \"\(text)\" is not valid: \(reason)")
        case .notInet:
            throw ListenError(
                .invalidAddress,
                "the address \"\(text)\" is not PORT, HOST:PORT, [IPV6]:PORT or a unix socket path"
            )
        }
    }

    /// Parses the address part of one `SERVER_STARTER_PORT` entry.
    ///
    /// As in Server::Starter, a key that is neither `PORT` nor `HOST:PORT`
    /// is a unix socket path.
    /// - Parameter key: The text before the entry's last `=`.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/malformedServerStarterPort``.
    public init(serverStarterKey key: String) throws(ListenError) {
        guard !key.isEmpty else {
            throw ListenError(.malformedServerStarterPort, "SERVER_STARTER_PORT has an entry with an empty address")
        }
        // Anything with a slash, or that is not PORT or HOST:PORT, names a unix socket.
        switch key.contains("/") ? .notInet : Self.parseInet(key, allowUnbracketedIPv6: true) {
        case .notInet:
            self = .unix(path: key)
        case .address(let address):
            self = address
        case .invalid(let reason):
            throw ListenError(
                .malformedServerStarterPort,
                "SERVER_STARTER_PORT has an entry with the address \"\(key)\", which is not valid: \(reason)"
            )
        }
    }

    /// The port, for the IP forms.
    public var port: Int? {
        switch self {
        case .port(let port), .host(_, let port): return port
        case .unix: return nil
        }
    }

    /// The address in the form it parses from: `8080`, `127.0.0.1:8080`,
    /// `[::1]:8080` or the socket path.
    public var description: String {
        switch self {
        case .port(let port):
            return String(port)
        case .host(let host, let port):
            return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path):
            return path
        }
    }

    private enum InetParse {
        case address(ListenAddress)
        case invalid(String)
        case notInet
    }

    private static func parseInet(_ text: String, allowUnbracketedIPv6: Bool) -> InetParse {
        if isDigits(text) {
            guard let port = parsePort(text) else { return .invalid("the port must be 0 to 65535") }
            return .address(.port(port))
        }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .invalid("\"[\" without \"]\"") }
            let host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard !host.isEmpty else { return .invalid("the brackets hold no address") }
            guard rest.first == ":" else { return .invalid("no \":PORT\" after \"]\"") }
            let portText = rest.dropFirst()
            guard isDigits(portText), let port = parsePort(portText) else {
                return .invalid("the port must be 0 to 65535")
            }
            return .address(.host(String(host), port: port))
        }
        guard let colon = text.lastIndex(of: ":") else { return .notInet }
        let host = text[..<colon]
        let portText = text[text.index(after: colon)...]
        guard isDigits(portText) else { return .notInet }
        guard let port = parsePort(portText) else { return .invalid("the port must be 0 to 65535") }
        guard !host.isEmpty else { return .invalid("no host before \":\"") }
        if host.contains(":") && !allowUnbracketedIPv6 {
            return .invalid("write an IPv6 address in brackets, e.g. [::1]:8080")
        }
        return .address(.host(String(host), port: port))
    }

    private static func parsePort(_ text: some StringProtocol) -> Int? {
        guard text.utf8.count <= 5, let port = Int(text), (0...65535).contains(port) else { return nil }
        return port
    }
}

/// Whether `text` is one or more ASCII digits, nothing else.
func isDigits(_ text: some StringProtocol) -> Bool {
    !text.isEmpty && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
}

/// Parses a plain decimal number (digits only, no sign or space) that fits in `max`.
func parseDecimal(_ text: some StringProtocol, max: Int) -> Int? {
    guard isDigits(text), text.utf8.count <= 18, let value = Int(text), value <= max else { return nil }
    return value
}
