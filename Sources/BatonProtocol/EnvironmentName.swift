/// The environment variables through which a supervisor speaks to the
/// generations it starts (systemd's socket activation and notify protocols,
/// Server::Starter's, and Baton's own).
public enum EnvironmentName {
    /// How many sockets are passed, from descriptor 3 on (systemd).
    public static let listenFDs = "LISTEN_FDS"
    /// The process the sockets are meant for (systemd).
    public static let listenPID = "LISTEN_PID"
    /// The sockets' names, joined by `:` (systemd).
    public static let listenFDNames = "LISTEN_FDNAMES"
    /// The pidfd inode of `LISTEN_PID` (systemd 254+); never passed on.
    public static let listenPIDFDID = "LISTEN_PIDFDID"
    /// The datagram socket readiness is reported to (sd_notify).
    public static let notifySocket = "NOTIFY_SOCKET"
    /// Watchdog settings of systemd; never passed on.
    public static let watchdogPID = "WATCHDOG_PID"
    /// Watchdog settings of systemd; never passed on.
    public static let watchdogUSec = "WATCHDOG_USEC"
    /// `ADDRESS=FD` entries joined by `;` (Server::Starter).
    public static let serverStarterPort = "SERVER_STARTER_PORT"
    /// The generation number (Server::Starter).
    public static let serverStarterGeneration = "SERVER_STARTER_GENERATION"
    /// The generation number (Baton).
    public static let batonGeneration = "BATON_GENERATION"
    /// The real path of the release a generation runs (Baton).
    public static let batonReleaseDir = "BATON_RELEASE_DIR"

    /// The variables a supervisor sets for each generation: an app never
    /// inherits the supervisor's own values of these.
    public static let perGeneration: Set<String> = [
        listenFDs, listenPID, listenFDNames, listenPIDFDID, notifySocket, watchdogPID, watchdogUSec,
        serverStarterPort, serverStarterGeneration, batonGeneration, batonReleaseDir,
    ]
}
