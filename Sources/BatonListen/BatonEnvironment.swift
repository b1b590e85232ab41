import Glibc

/// What a supervisor tells an app generation about itself, besides its
/// sockets: its generation number and its release directory.
///
/// ```swift
/// let environment = BatonEnvironment.current
/// print("generation \(environment.generation ?? 0) of \(environment.releaseName ?? "dev")")
/// ```
public struct BatonEnvironment: Sendable, Hashable {
    /// The generation number: `BATON_GENERATION`, else
    /// `SERVER_STARTER_GENERATION`; nil when neither is a plain number.
    public var generation: Int?
    /// `BATON_RELEASE_DIR`: the absolute real path of the release this
    /// generation runs (also its working directory); nil when unset or empty.
    public var releaseDirectory: String?
    /// `NOTIFY_SOCKET`, where readiness is reported; nil when unset or empty.
    public var notifySocket: String?
    /// Whether `LISTEN_FDS` or `SERVER_STARTER_PORT` is set: whether a
    /// supervisor passed sockets (read before ``Listeners/inherited()``
    /// unsets `LISTEN_FDS`).
    public var passesSockets: Bool

    /// Reads the values from `environment`.
    /// - Parameter environment: Variables, e.g. a child's environment in a test.
    public init(_ environment: [String: String]) {
        func number(_ key: String) -> Int? {
            environment[key].flatMap { parseDecimal($0, max: Int(Int32.max)) }
        }
        func nonEmpty(_ key: String) -> String? {
            environment[key].flatMap { $0.isEmpty ? nil : $0 }
        }
        self.generation = number(EnvironmentKey.batonGeneration) ?? number(EnvironmentKey.serverStarterGeneration)
        self.releaseDirectory = nonEmpty(EnvironmentKey.batonReleaseDir)
        self.notifySocket = nonEmpty(EnvironmentKey.notifySocket)
        self.passesSockets =
            environment[EnvironmentKey.listenFDs] != nil || environment[EnvironmentKey.serverStarterPort] != nil
    }

    /// The values in this process's environment now.
    public static var current: BatonEnvironment {
        BatonEnvironment(ProcessEnvironment.read(EnvironmentKey.all))
    }

    /// The last component of ``releaseDirectory``, e.g. `v2` for
    /// `/srv/app/releases/v2`; nil without a release directory.
    public var releaseName: String? {
        guard let directory = self.releaseDirectory else { return nil }
        let components = directory.split(separator: "/")
        return components.last.map(String.init)
    }
}
