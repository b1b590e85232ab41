import BatonCore
import BatonSystem
import Glibc

/// Where a supervisor's pid file, control socket and log file are, from
/// `--name`, `--pid-file`, `--control` and `--log-file`.
struct Locations {
    var pidFile: String?
    var control: String?
    var logFile: String?

    static let specs: [OptionSpec] = [
        OptionSpec("name", value: "NAME", "derive the pid file, control socket and log file from NAME under the run directory"),
        OptionSpec("pid-file", value: "PATH", "the supervisor's pid file"),
        OptionSpec("control", value: "PATH", "the control socket (default: next to the pid file, app.pid -> app.control)"),
        OptionSpec("log-file", value: "PATH", "the daemon's log (default: next to the pid file, NAME.log)"),
    ]

    /// The directory `--name` uses: /run/baton as root, else
    /// $XDG_RUNTIME_DIR/baton, else /tmp/baton-UID.
    static func runDirectory() -> String {
        if geteuid() == 0 { return "/run/baton" }
        if let xdg = Sys.getenv("XDG_RUNTIME_DIR"), !xdg.isEmpty { return xdg + "/baton" }
        return "/tmp/baton-\(geteuid())"
    }

    init(_ o: ParsedOptions, creating: Bool = false) throws(BatonError) {
        if let name = o.last("name") {
            guard !name.isEmpty, name.count <= 64,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }), !name.hasPrefix(".")
            else {
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
            pidFile = "\(dir)/\(name).pid"
            control = "\(dir)/\(name).sock"
            logFile = "\(dir)/\(name).log"
        }
        if let p = o.last("pid-file") { pidFile = Sys.absolute(p) }
        if let c = o.last("control") { control = Sys.absolute(c) }
        if let l = o.last("log-file") { logFile = Sys.absolute(l) }
        if let p = pidFile {
            let stem = p.hasSuffix(".pid") ? String(p.dropLast(4)) : p
            if control == nil { control = PidFile.defaultControlPath(for: p) }
            if logFile == nil { logFile = stem + ".log" }
        }
    }

    /// Fails with a usage error when no supervisor can be named.
    func requireControl(_ command: String) throws(BatonError) -> String {
        guard let control else {
            throw BatonError(.usage, "\(command): say which supervisor: --name NAME, --pid-file PATH or --control PATH")
        }
        return control
    }
}

/// Terminal-aware output: colour only on a terminal and without NO_COLOR.
enum Out {
    static let colour = isatty(1) == 1 && (Sys.getenv("NO_COLOR") ?? "").isEmpty && Sys.getenv("TERM") != "dumb"

    static func line(_ text: String) {
        Sys.writeAll(1, (text + "\n").utf8)
    }

    static func error(_ text: String) {
        Sys.writeAll(2, (text + "\n").utf8)
    }

    static func green(_ s: String) -> String { colour ? "\u{1B}[32m\(s)\u{1B}[0m" : s }
    static func red(_ s: String) -> String { colour ? "\u{1B}[31m\(s)\u{1B}[0m" : s }
    static func dim(_ s: String) -> String { colour ? "\u{1B}[2m\(s)\u{1B}[0m" : s }
}
