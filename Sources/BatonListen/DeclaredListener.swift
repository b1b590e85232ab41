import BatonProtocol

/// A listening socket that the environment says this process inherited,
/// before the descriptor itself has been checked.
///
/// Built by ``Listeners/declared(in:processID:)`` from `LISTEN_FDS`,
/// `LISTEN_PID`, `LISTEN_FDNAMES` and `SERVER_STARTER_PORT`; checked and
/// turned into a ``Listener`` by ``Listeners/validate(_:)``.
public struct DeclaredListener: Sendable, Hashable, CustomStringConvertible {
    /// The descriptor number.
    public var descriptor: Int32
    /// Its name from `LISTEN_FDNAMES`, if one was given and is not empty.
    public var name: String?
    /// Its address from `SERVER_STARTER_PORT`, if that variable lists it.
    public var address: ListenAddress?

    /// Creates a declaration.
    /// - Parameters:
    ///   - descriptor: The descriptor number.
    ///   - name: Its name from `LISTEN_FDNAMES`.
    ///   - address: Its address from `SERVER_STARTER_PORT`.
    public init(descriptor: Int32, name: String? = nil, address: ListenAddress? = nil) {
        self.descriptor = descriptor
        self.name = name
        self.address = address
    }

    /// E.g. `fd 3 "http" 127.0.0.1:8080`.
    public var description: String {
        var text = "fd \(self.descriptor)"
        if let name { text += " \"\(name)\"" }
        if let address { text += " \(address)" }
        return text
    }
}

/// The environment variables of the socket-passing protocols.
typealias EnvironmentKey = EnvironmentName

extension EnvironmentName {
    /// Every variable this module reads.
    static let all = [
        listenFDs, listenPID, listenFDNames, serverStarterPort, serverStarterGeneration,
        batonGeneration, batonReleaseDir, notifySocket,
    ]
}

/// Parsing of the inherited-socket variables. Pure: no system call.
enum EnvironmentParser {
    /// The first descriptor of `LISTEN_FDS` (systemd's `SD_LISTEN_FDS_START`).
    static let firstDescriptor: Int32 = 3
    /// More descriptors than this is taken as a malformed count.
    static let maximumCount = 4096
    /// systemd limits descriptor names to 255 characters.
    static let maximumNameLength = 255

    static func declared(in environment: [String: String], processID: Int32) throws(ListenError)
        -> [DeclaredListener]
    {
        let systemd = try self.parseSystemd(environment, processID: processID)
        let starter = try self.parseServerStarter(environment[EnvironmentKey.serverStarterPort])
        switch (systemd, starter) {
        case (nil, nil):
            return []
        case (let systemd?, nil):
            return systemd
        case (nil, let starter?):
            return starter
        case (let systemd?, let starter?):
            return try self.merge(systemd: systemd, starter: starter)
        }
    }

    /// `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`; nil when none is set.
    private static func parseSystemd(_ environment: [String: String], processID: Int32) throws(ListenError)
        -> [DeclaredListener]?
    {
        let countText = environment[EnvironmentKey.listenFDs]
        let pidText = environment[EnvironmentKey.listenPID]
        let namesText = environment[EnvironmentKey.listenFDNames]
        guard let countText else {
            if pidText != nil || namesText != nil {
                let present = pidText != nil ? EnvironmentKey.listenPID : EnvironmentKey.listenFDNames
                throw ListenError(
                    .inconsistentEnvironment,
                    "\(present) is set but LISTEN_FDS is not: the supervisor's environment is incomplete"
                )
            }
            return nil
        }
        guard let count = parseDecimal(countText, max: self.maximumCount) else {
            throw ListenError(
                .malformedListenFDs,
                "LISTEN_FDS=\"\(countText)\" is not a count of descriptors (a decimal number from 0 to \(self.maximumCount))"
            )
        }
        guard let pidText else {
            throw ListenError(
                .missingListenPID,
                "LISTEN_FDS is set but LISTEN_PID is not: the sockets cannot be known to be meant for this process"
            )
        }
        guard let pid = parseDecimal(pidText, max: Int(Int32.max)), pid > 0 else {
            throw ListenError(.malformedListenPID, "LISTEN_PID=\"\(pidText)\" is not a process id")
        }
        guard pid == Int(processID) else {
            throw ListenError(
                .listenPIDMismatch,
                "LISTEN_PID=\(pid) but this process is \(processID): the sockets were passed to another process. "
                    + "Start the app with exec (so that it keeps the pid its supervisor set), "
                    + "or unset LISTEN_FDS and LISTEN_PID before starting it"
            )
        }
        var names: [String?] = Array(repeating: nil, count: count)
        if let namesText {
            let parts = namesText.split(separator: ":", omittingEmptySubsequences: false)
            // An empty LISTEN_FDNAMES names zero descriptors as well as one.
            let isEmptyForNone = count == 0 && namesText.isEmpty
            guard parts.count == count || isEmptyForNone else {
                throw ListenError(
                    .fdNamesCountMismatch,
                    "LISTEN_FDNAMES holds \(parts.count) name(s) but LISTEN_FDS=\(count)"
                )
            }
            if !isEmptyForNone {
                for (index, part) in parts.enumerated() {
                    guard part.utf8.count <= self.maximumNameLength,
                        part.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
                    else {
                        throw ListenError(
                            .malformedListenFDNames,
                            "LISTEN_FDNAMES has a name for fd \(Int(self.firstDescriptor) + index) that is longer "
                                + "than \(self.maximumNameLength) bytes or holds control characters"
                        )
                    }
                    names[index] = part.isEmpty ? nil : String(part)
                }
            }
        }
        return (0..<count).map { index in
            DeclaredListener(descriptor: self.firstDescriptor + Int32(index), name: names[index])
        }
    }

    /// `SERVER_STARTER_PORT`; nil when unset.
    private static func parseServerStarter(_ text: String?) throws(ListenError) -> [DeclaredListener]? {
        guard let text else { return nil }
        guard !text.isEmpty else {
            throw ListenError(.malformedServerStarterPort, "SERVER_STARTER_PORT is set but empty")
        }
        let entries: [ServerStarterPort.Entry]
        switch ServerStarterPort.split(text) {
        case .success(let e): entries = e
        case .failure(.empty):
            throw ListenError(.malformedServerStarterPort, "SERVER_STARTER_PORT is set but empty")
        case .failure(.emptyEntry):
            throw ListenError(
                .malformedServerStarterPort,
                "SERVER_STARTER_PORT=\"\(text)\" has an empty entry (entries are ADDRESS=FD joined by \";\")"
            )
        case .failure(.missingDescriptor(let entry)):
            throw ListenError(
                .malformedServerStarterPort,
                "SERVER_STARTER_PORT has the entry \"\(entry)\" without \"=FD\" (entries are ADDRESS=FD joined by \";\")"
            )
        }
        var result: [DeclaredListener] = []
        for entry in entries {
            let key = entry.key
            let fdText = entry.descriptor
            guard let fd = parseDecimal(fdText, max: Int(Int32.max)) else {
                throw ListenError(
                    .malformedServerStarterPort,
                    "SERVER_STARTER_PORT has the entry \"\(key)=\(fdText)\" whose descriptor \"\(fdText)\" is not a number"
                )
            }
            let address = try ListenAddress(serverStarterKey: key)
            guard fd > 2 else {
                throw ListenError(
                    .standardStreamDescriptor,
                    "SERVER_STARTER_PORT gives descriptor \(fd) for \(key), but 0, 1 and 2 are the standard streams"
                )
            }
            guard !result.contains(where: { $0.descriptor == Int32(fd) }) else {
                throw ListenError(.duplicateDescriptor, "SERVER_STARTER_PORT lists descriptor \(fd) twice")
            }
            result.append(DeclaredListener(descriptor: Int32(fd), address: address))
        }
        return result
    }

    /// Cross-checks both protocols. Every `SERVER_STARTER_PORT` descriptor must
    /// be one of `LISTEN_FDS`; a `LISTEN_FDS` descriptor that
    /// `SERVER_STARTER_PORT` does not list must be named in `LISTEN_FDNAMES`
    /// (a private listener such as `baton-health`).
    private static func merge(systemd: [DeclaredListener], starter: [DeclaredListener]) throws(ListenError)
        -> [DeclaredListener]
    {
        let range: String
        if let first = systemd.first, let last = systemd.last {
            range = first.descriptor == last.descriptor ? "only \(first.descriptor)" : "\(first.descriptor) to \(last.descriptor)"
        } else {
            range = "none"
        }
        for entry in starter where !systemd.contains(where: { $0.descriptor == entry.descriptor }) {
            throw ListenError(
                .inconsistentEnvironment,
                "SERVER_STARTER_PORT gives descriptor \(entry.descriptor) for \(entry.address.map { "\($0)" } ?? "?"), "
                    + "but LISTEN_FDS=\(systemd.count) passes \(range)"
            )
        }
        var merged = systemd
        for index in merged.indices {
            if let entry = starter.first(where: { $0.descriptor == merged[index].descriptor }) {
                merged[index].address = entry.address
            } else if merged[index].name == nil {
                throw ListenError(
                    .inconsistentEnvironment,
                    "LISTEN_FDS=\(systemd.count) but SERVER_STARTER_PORT lists \(starter.count) socket(s), "
                        + "and descriptor \(merged[index].descriptor) is neither in SERVER_STARTER_PORT nor named in LISTEN_FDNAMES"
                )
            }
        }
        return merged
    }
}
