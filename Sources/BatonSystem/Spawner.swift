import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// Starts one generation of the app: computes its socket set and environment,
/// and spawns it through `baton __exec`, which sets `LISTEN_PID` to its own
/// pid, changes directory and user, then execs the app (keeping the pid).
struct Spawner {
    let configuration: RunConfiguration
    let notifySocket: String
    let credentials: Credentials?

    /// Resolved `--user`/`--group`.
    struct Credentials {
        var uid: uid_t
        var gid: gid_t
        var userName: String?

        /// The uid and gid `--user` and `--group` name, or nil when neither is given.
        static func resolve(user: String?, group: String?) throws(BatonError) -> Credentials? {
            guard user != nil || group != nil else { return nil }
            var c = Credentials(uid: getuid(), gid: getgid(), userName: nil)
            if let user {
                if let pw = getpwnam(user) {
                    c.uid = pw.pointee.pw_uid
                    c.gid = pw.pointee.pw_gid
                    c.userName = user
                } else if let uid = UInt32(user), let pw = getpwuid(uid) {
                    c.uid = uid
                    c.gid = pw.pointee.pw_gid
                    c.userName = String(cString: pw.pointee.pw_name)
                } else {
                    throw BatonError(.usage, "--user \(user): no such user")
                }
            }
            if let group {
                if let gr = getgrnam(group) {
                    c.gid = gr.pointee.gr_gid
                } else if let gid = UInt32(group) {
                    c.gid = gid
                } else {
                    throw BatonError(.usage, "--group \(group): no such group")
                }
            }
            if getuid() != 0, c.uid != getuid() || c.gid != getgid() {
                throw BatonError(.usage, "--user/--group need baton to run as root")
            }
            return c
        }
    }

    /// The release directory a spawn now would use.
    func releaseDirectory() -> Result<String, BatonError> {
        let dir = configuration.dir ?? "."
        guard let resolved = Sys.realpath(dir) else {
            let e = errno
            return .failure(
                BatonError(.failure, "--dir \(dir): \(Sys.describe(errno: e))\(e == ENOENT ? " (a dangling symlink?)" : "")", errno: e))
        }
        return .success(resolved)
    }

    /// The descriptor numbers the app gets a socket set at.
    static func targets(_ listeners: [Listener]) -> [Int32] {
        listeners.enumerated().map { $0.element.targetFD ?? Int32(3 + $0.offset) }
    }

    /// `SERVER_STARTER_PORT` for this socket set.
    static func serverStarterPort(_ listeners: [Listener]) -> String {
        ServerStarterPort.format(zip(listeners, targets(listeners)).map { ($0.envKey, $1) })
    }

    /// Spawns generation `number` with the socket set `listeners`, in
    /// `release` (nil: the configured directory, resolved now); returns its
    /// pid and release directory.
    func spawn(generation number: Int, listeners: [Listener], release: String? = nil) -> Result<
        (pid: Int32, releaseDir: String), BatonError
    > {
        let releaseDir: String
        switch release.map({ Result<String, BatonError>.success($0) }) ?? releaseDirectory() {
        case .success(let d): releaseDir = d
        case .failure(let e): return .failure(e)
        }
        // A command given by path is looked for in this release, so that a
        // release whose command is missing or not executable fails with the
        // reason, not with the exec helper's bare 126/127. (A bare name is
        // searched in the app's PATH by the exec helper.)
        if let command = configuration.command.first, command.contains("/"),
            let problem = Sys.findExecutable(command, directory: releaseDir, path: nil).problem
        {
            return .failure(BatonError(.commandNotFound, "cannot run '\(command)' in \(releaseDir): it \(problem)"))
        }
        var env: [String: String] = [:]
        var order: [String] = []
        func set(_ key: String, _ value: String?) {
            if env[key] == nil, value != nil { order.append(key) }
            env[key] = value
        }
        for entry in Sys.environment() {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            let key = String(entry[..<eq])
            if !EnvironmentName.perGeneration.contains(key) { set(key, String(entry[entry.index(after: eq)...])) }
        }
        for pair in configuration.exportedEnv {
            let eq = pair.firstIndex(of: "=")!
            set(String(pair[..<eq]), String(pair[pair.index(after: eq)...]))
        }
        if let envdir = configuration.envdir {
            switch EnvDir.read(envdir, style: configuration.envdirStyle) {
            case .success(let vars): for (k, v) in vars { set(k, v) }
            case .failure(let e): return .failure(e)
            }
        }
        for pair in configuration.env {
            let eq = pair.firstIndex(of: "=")!
            set(String(pair[..<eq]), String(pair[pair.index(after: eq)...]))
        }
        set(EnvironmentName.serverStarterPort, Self.serverStarterPort(listeners))
        set(EnvironmentName.serverStarterGeneration, String(number))
        // sd_listen_fds() wants them at 3, 4, ... in order; pinned elsewhere,
        // only SERVER_STARTER_PORT can describe them.
        let targets = Self.targets(listeners)
        if targets == (0..<listeners.count).map({ Int32(3 + $0) }), !listeners.isEmpty {
            set(EnvironmentName.listenFDs, String(listeners.count))
            set(EnvironmentName.listenFDNames, listeners.map(\.name).joined(separator: ":"))
        }
        set(EnvironmentName.notifySocket, notifySocket)
        set(EnvironmentName.batonGeneration, String(number))
        set(EnvironmentName.batonReleaseDir, releaseDir)
        let envp = order.compactMap { key in env[key].map { "\(key)=\($0)" } }

        var argv = ["baton-exec", "__exec", "--dir", releaseDir]
        if let c = credentials {
            argv += ["--uid", String(c.uid), "--gid", String(c.gid)]
            if let name = c.userName { argv += ["--user-name", name] }
        }
        argv += ["--"] + configuration.command

        var pid: pid_t = 0
        let fds = listeners.map(\.fd)
        let rc = withCStrings(argv) { cargv in
            withCStrings(envp) { cenvp in
                fds.withUnsafeBufferPointer { fdp in
                    targets.withUnsafeBufferPointer { tp in
                        baton_spawn(&pid, "/proc/self/exe", cargv, cenvp, fdp.baseAddress, tp.baseAddress, Int32(fds.count), nil, 1, 0)
                    }
                }
            }
        }
        guard rc == 0 else {
            return .failure(BatonError(.failure, "posix_spawn: \(Sys.describe(errno: rc))", errno: rc))
        }
        return .success((pid, releaseDir))
    }
}

/// Calls `body` with a NULL-terminated C array of the strings.
public func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// A daemontools-style environment directory: one file per variable, the
/// file name is the name, the file's first line (trailing blanks removed,
/// NUL bytes turned into newlines) is the value; an empty file unsets it.
public enum EnvDir {
    /// How a file's contents become a value.
    public enum Style: Sendable {
        /// daemontools: the first line, trailing blanks removed; an empty file unsets the variable.
        case daemontools
        /// Server::Starter: the first line without its newline; an empty file is ignored.
        case serverStarter
    }

    /// The largest file it reads.
    public static let maxFileBytes = 64 * 1024

    /// Reads the variables, or a clear error.
    public static func read(_ dir: String, style: Style = .daemontools) -> Result<[(String, String?)], BatonError> {
        guard let d = opendir(dir) else {
            let e = errno
            // A directory that is not there is a bad option value (as for --dir).
            return .failure(
                BatonError(e == ENOENT || e == ENOTDIR ? .usage : .failure, "--envdir \(dir): \(Sys.describe(errno: e))", errno: e))
        }
        defer { closedir(d) }
        var names: [String] = []
        while let entry = readdir(d) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(".") || name.contains("=") { continue }
            names.append(name)
        }
        var out: [(String, String?)] = []
        for name in names.sorted() {
            let path = "\(dir)/\(name)"
            var st = stat()
            guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            guard st.st_size <= maxFileBytes else {
                return .failure(
                    BatonError(
                        .usage,
                        "--envdir: \(path) is \(st.st_size) bytes, over the limit of \(maxFileBytes); an envdir file holds one value"))
            }
            guard let bytes = Sys.readFile(path, limit: maxFileBytes) else {
                let e = errno
                return .failure(BatonError(.failure, "--envdir: cannot read \(path): \(Sys.describe(errno: e))", errno: e))
            }
            if bytes.isEmpty {
                if style == .daemontools { out.append((name, nil)) }
                continue
            }
            let firstLine = bytes.prefix { $0 != 10 }.map { $0 == 0 ? 10 : $0 }
            guard let text = String(validating: firstLine, as: UTF8.self) else {
                return .failure(BatonError(.usage, "--envdir: \(path) is not valid UTF-8 text"))
            }
            out.append((name, style == .daemontools ? text.trimmingSuffix(while: { $0 == " " || $0 == "\t" }) : text))
        }
        return .success(out)
    }
}
