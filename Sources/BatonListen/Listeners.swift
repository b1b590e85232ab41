import Glibc

/// Finding the listening sockets a process should serve: the ones a
/// supervisor passed down, or one the process binds itself.
///
/// Two ways of passing sockets are read, and either is enough:
/// - systemd's: the sockets sit at descriptors 3, 4, ... and `LISTEN_FDS`
///   counts them, `LISTEN_PID` is the pid of the process they are meant for,
///   and `LISTEN_FDNAMES` optionally names them (`name0:name1:...`);
/// - Server::Starter's: `SERVER_STARTER_PORT` lists `ADDRESS=FD` entries
///   joined by `;`, e.g. `127.0.0.1:8080=3;[::1]:8080=4;/run/app.sock=5`.
///
/// When both are present they must agree (see ``declared(in:processID:)``).
/// Every inherited descriptor is checked to be an open, listening stream
/// socket of the stated kind, and is made close-on-exec.
///
/// ```swift
/// // Serve what the supervisor passed, or bind 127.0.0.1:8080 in development.
/// let listeners = try Listeners.inheritedOrBind(.host("127.0.0.1", port: 8080))
/// ```
public enum Listeners {
    /// The listeners this process inherited, read once from its environment
    /// and checked; empty when nothing was inherited.
    ///
    /// The first call reads the environment, checks the descriptors, sets
    /// `FD_CLOEXEC` on them and then unsets `LISTEN_FDS`, `LISTEN_PID` and
    /// `LISTEN_FDNAMES`, so that a process this one starts does not take
    /// them for its own (as `sd_listen_fds(1)` does); `SERVER_STARTER_PORT`
    /// is left for the app to read. Later calls return the same result.
    /// - Throws: ``ListenError`` when the environment is malformed or
    ///   inconsistent or a descriptor is not what it claims to be.
    public static func inherited() throws(ListenError) -> [Listener] {
        try self.processListeners.get()
    }

    /// The listeners this process inherited, or, when it inherited none, one
    /// socket it binds itself to `fallback`: the same binary then runs under
    /// a supervisor and standalone in development.
    /// - Parameters:
    ///   - fallback: The address to bind when nothing was inherited.
    ///   - backlog: The accept-queue limit for the fallback socket; nil asks
    ///     for the kernel's maximum.
    /// - Throws: ``ListenError`` as ``inherited()`` does, or when binding fails.
    public static func inheritedOrBind(_ fallback: ListenAddress, backlog: Int32? = nil) throws(ListenError)
        -> [Listener]
    {
        let listeners = try self.inherited()
        guard listeners.isEmpty else { return listeners }
        return [try self.bind(fallback, backlog: backlog)]
    }

    /// Reads and checks the inherited listeners from `environment`, without
    /// caching and without changing the process environment.
    /// - Parameters:
    ///   - environment: The variables to read.
    ///   - processID: The pid `LISTEN_PID` must equal: this process's own.
    /// - Throws: ``ListenError``.
    public static func inherited(environment: [String: String], processID: Int32 = getpid()) throws(ListenError)
        -> [Listener]
    {
        try self.validate(try self.declared(in: environment, processID: processID))
    }

    /// Parses the socket-passing variables, without looking at any descriptor.
    ///
    /// - `LISTEN_FDS` must be a decimal count; with it, `LISTEN_PID` must be
    ///   set and equal `processID`; `LISTEN_FDNAMES`, when set, must hold one
    ///   name per descriptor. `LISTEN_PID` or `LISTEN_FDNAMES` without
    ///   `LISTEN_FDS` is an error.
    /// - `SERVER_STARTER_PORT` must be `ADDRESS=FD` entries joined by `;`,
    ///   with no empty entry, no descriptor below 3 and none twice.
    /// - With both, every `SERVER_STARTER_PORT` descriptor must be among
    ///   the `LISTEN_FDS` ones, and each `LISTEN_FDS` descriptor that
    ///   `SERVER_STARTER_PORT` leaves out must be named in `LISTEN_FDNAMES`
    ///   (a private listener, e.g. `baton-health`).
    /// - Parameters:
    ///   - environment: The variables to read.
    ///   - processID: The pid `LISTEN_PID` must equal.
    /// - Returns: The declared listeners in descriptor order for
    ///   `LISTEN_FDS`, in entry order for `SERVER_STARTER_PORT` alone; empty
    ///   when neither variable is set.
    /// - Throws: ``ListenError``.
    public static func declared(in environment: [String: String], processID: Int32) throws(ListenError)
        -> [DeclaredListener]
    {
        try EnvironmentParser.declared(in: environment, processID: processID)
    }

    /// Checks that each declared descriptor is an open, listening stream
    /// socket (IPv4, IPv6 or unix) whose kind and port match its declared
    /// address, and sets `FD_CLOEXEC` on it.
    /// - Parameter declared: The declarations, e.g. from ``declared(in:processID:)``.
    /// - Returns: One ``Listener`` per declaration, in the same order.
    /// - Throws: ``ListenError`` for the first descriptor that fails a check.
    public static func validate(_ declared: [DeclaredListener]) throws(ListenError) -> [Listener] {
        var listeners: [Listener] = []
        listeners.reserveCapacity(declared.count)
        for entry in declared {
            let label = self.label(for: entry)
            let inspection = try Socket.inspect(entry.descriptor, label: label)
            if let address = entry.address {
                try self.check(address, matches: inspection, label: label)
            }
            try Socket.setCloseOnExec(entry.descriptor, label: label)
            listeners.append(
                Listener(
                    descriptor: entry.descriptor,
                    family: inspection.family,
                    origin: .inherited,
                    name: entry.name,
                    declaredAddress: entry.address,
                    localAddress: inspection.localAddress,
                    port: inspection.port,
                    backlog: inspection.backlog
                )
            )
        }
        return listeners
    }

    /// Binds a new close-on-exec listening socket to `address`.
    ///
    /// A bare port binds every IPv4 interface; a host name is resolved and
    /// its first address used; `SO_REUSEADDR` is set on IP sockets; a stale
    /// unix socket file at the path is removed first (other files are not).
    /// - Parameters:
    ///   - address: Where to listen.
    ///   - backlog: The accept-queue limit; nil asks for the kernel's maximum.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/invalidAddress``
    ///   or ``ListenError/Code/bindFailed``.
    public static func bind(_ address: ListenAddress, backlog: Int32? = nil) throws(ListenError) -> Listener {
        let fd = try Socket.bind(address, backlog: backlog)
        let label = "the socket bound to \(address)"
        do {
            let inspection = try Socket.inspect(fd, label: label)
            return Listener(
                descriptor: fd,
                family: inspection.family,
                origin: .bound,
                name: nil,
                declaredAddress: address,
                localAddress: inspection.localAddress,
                port: inspection.port,
                backlog: inspection.backlog
            )
        } catch {
            close(fd)
            throw error
        }
    }

    // MARK: Private

    private static let processListeners: Result<[Listener], ListenError> = {
        let environment = ProcessEnvironment.read(
            [EnvironmentKey.listenFDs, EnvironmentKey.listenPID, EnvironmentKey.listenFDNames, EnvironmentKey.serverStarterPort]
        )
        let result = Result { () throws(ListenError) -> [Listener] in
            try Listeners.inherited(environment: environment, processID: getpid())
        }
        unsetenv(EnvironmentKey.listenFDs)
        unsetenv(EnvironmentKey.listenPID)
        unsetenv(EnvironmentKey.listenFDNames)
        return result
    }()

    private static func label(for entry: DeclaredListener) -> String {
        var label = "fd \(entry.descriptor)"
        var details: [String] = []
        if let name = entry.name { details.append("named \"\(name)\"") }
        if let address = entry.address { details.append("for \(address)") }
        if !details.isEmpty { label += " (\(details.joined(separator: ", ")))" }
        return label
    }

    private static func check(_ address: ListenAddress, matches inspection: Socket.Inspection, label: String)
        throws(ListenError)
    {
        func mismatch(_ what: String) -> ListenError {
            ListenError(
                .addressMismatch,
                "\(label) is \(what) (bound to \(inspection.localAddress)), which does not match SERVER_STARTER_PORT"
            )
        }
        switch address {
        case .unix:
            guard inspection.family == .unix else { throw mismatch("an \(inspection.family.rawValue) socket") }
        case .port(let port):
            guard inspection.family != .unix else { throw mismatch("a unix socket") }
            guard inspection.port == port else { throw mismatch("on port \(inspection.port ?? -1)") }
        case .host(let host, let port):
            guard inspection.family != .unix else { throw mismatch("a unix socket") }
            guard inspection.port == port else { throw mismatch("on port \(inspection.port ?? -1)") }
            if IPLiteral.isIPv4(host), inspection.family != .ipv4 {
                throw mismatch("an \(inspection.family.rawValue) socket")
            }
            if IPLiteral.isIPv6(host), inspection.family != .ipv6 {
                throw mismatch("an \(inspection.family.rawValue) socket")
            }
        }
    }
}

/// Recognizes numeric IP addresses.
enum IPLiteral {
    static func isIPv4(_ text: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1
    }

    static func isIPv6(_ text: String) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, text, &address) == 1
    }
}

/// Reads this process's environment without Foundation.
enum ProcessEnvironment {
    /// The values of `keys` that are set.
    static func read(_ keys: [String]) -> [String: String] {
        var environment: [String: String] = [:]
        for key in keys {
            if let value = getenv(key) {
                environment[key] = String(cString: value)
            }
        }
        return environment
    }
}
