import BatonCore
import BatonProtocol
import Glibc

/// Where a supervisor's pid file, control socket and log file are: the one
/// rule every command and both faces use, whichever way it was started.
/// `--name NAME` puts them in the run directory as `NAME.pid`, `NAME.control`
/// and `NAME.log`; `--pid-file PATH.pid` puts the others next to it as
/// `PATH.control` and `PATH.log`; `--control` and `--log-file` override.
public struct Locations: Sendable, Equatable {
    public var pidFile: String?
    public var control: String?
    public var logFile: String?
    /// The name, when given.
    public var name: String?

    /// The directory `--name` uses: /run/baton as root, else
    /// $XDG_RUNTIME_DIR/baton, else /tmp/baton-UID.
    public static func runDirectory() -> String {
        if geteuid() == 0 { return "/run/baton" }
        if let xdg = Sys.getenv("XDG_RUNTIME_DIR"), !xdg.isEmpty { return xdg + "/baton" }
        return "/tmp/baton-\(geteuid())"
    }

    /// The control socket that goes with a pid file: `app.pid` → `app.control`.
    public static func controlPath(forPidFile pidFile: String) -> String { stem(pidFile) + ".control" }

    /// The log file that goes with a pid file: `app.pid` → `app.log`.
    public static func logPath(forPidFile pidFile: String) -> String { stem(pidFile) + ".log" }

    private static func stem(_ pidFile: String) -> String {
        pidFile.hasSuffix(".pid") ? String(pidFile.dropLast(4)) : pidFile
    }

    /// True for a name `--name` accepts.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.hasPrefix(".")
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    /// The locations from the options given; `creating` makes the run directory.
    public init(name: String?, pidFile: String?, control: String?, logFile: String?, creating: Bool = false) throws(BatonError) {
        if let name {
            guard Self.isValidName(name) else {
                throw BatonError(.usage, "--name '\(name)': use letters, digits, '.', '_' and '-' (at most 64)")
            }
            let dir = Self.runDirectory()
            if creating {
                mkdir(dir, 0o700)
                var st = stat()
                guard stat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                    throw BatonError(.failure, "cannot create run directory \(dir): \(Sys.describe(errno: errno))", errno: errno)
                }
            }
            self.name = name
            self.pidFile = "\(dir)/\(name).pid"
        }
        if let pidFile { self.pidFile = Sys.absolute(pidFile) }
        self.control = control.map(Sys.absolute) ?? self.pidFile.map(Self.controlPath(forPidFile:))
        self.logFile = logFile.map(Sys.absolute) ?? self.pidFile.map(Self.logPath(forPidFile:))
        if let c = self.control, c.utf8.count > UnixAddress.maxBytes {
            throw BatonError(.usage, "the control socket \(c) is over the kernel's limit of \(UnixAddress.maxBytes) bytes; give --control")
        }
    }

    /// Fails with a usage error when no supervisor can be named.
    public func requireControl(_ command: String) throws(BatonError) -> String {
        guard let control else {
            throw BatonError(.usage, "\(command): say which supervisor: a NAME, --name NAME, --pid-file PATH or --control PATH")
        }
        return control
    }

    /// Every supervisor with a pid file in the run directory, by name.
    public static func all() -> [(name: String, locations: Locations)] {
        let dir = runDirectory()
        return (Sys.directoryNames(dir) ?? []).filter { $0.hasSuffix(".pid") }.sorted().compactMap { file in
            let name = String(file.dropLast(4))
            guard isValidName(name), let l = try? Locations(name: name, pidFile: nil, control: nil, logFile: nil) else { return nil }
            return (name, l)
        }
    }
}
