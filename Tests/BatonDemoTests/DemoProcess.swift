import Glibc

/// Starting and stopping `baton-demo` as a real child process with
/// `posix_spawn`, optionally handing it listening sockets at 3, 4, ...
struct DemoProcess {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let pid: pid_t
    let logPath: String
    /// When the process was spawned, for measuring start-up.
    let spawnedAt: ContinuousClock.Instant
    private(set) var exitStatus: Int32?

    /// The `baton-demo` built next to the test bundle (`swift test` builds every product).
    static func demoExecutable() throws -> String {
        try self.executable(named: "baton-demo")
    }

    /// A product of this package built next to the test bundle.
    static func executable(named name: String) throws -> String {
        var candidates: [String] = []
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 {
            let exe = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            var directory = exe
            // On Linux the test bundle is an executable; on other layouts it may be a directory.
            while let slash = directory.lastIndex(of: "/") {
                directory = String(directory[..<slash])
                candidates.append(directory + "/" + name)
                if candidates.count == 3 { break }
            }
        }
        for candidate in candidates where access(candidate, X_OK) == 0 {
            return candidate
        }
        throw Failure(
            description: "no \(name) next to the test bundle (looked at \(candidates)); build it with swift build --product \(name)"
        )
    }

    /// The repository's root, from this file's path.
    static func repositoryRoot(filePath: String = #filePath) -> String {
        var path = filePath
        for _ in 0..<3 {
            if let slash = path.lastIndex(of: "/") { path = String(path[..<slash]) }
        }
        return path
    }

    /// Spawns the demo (or `executable`) through `/bin/sh`, which changes
    /// directory if asked, sets `LISTEN_PID` to its own pid when
    /// `setsListenPID`, then execs the program (keeping that pid).
    /// - Parameters:
    ///   - executable: The program; `baton-demo` by default.
    ///   - arguments: The program's arguments.
    ///   - environment: Its whole environment (PATH is added).
    ///   - sockets: Descriptors to hand over at 3, 4, ...
    ///   - directory: The working directory, if not ours.
    ///   - setsListenPID: Whether to set `LISTEN_PID` to the demo's pid.
    static func spawn(
        executable: String? = nil,
        arguments: [String] = [],
        environment: [String: String],
        sockets: [Int32] = [],
        directory: String? = nil,
        setsListenPID: Bool = false,
        logPath: String
    ) throws -> DemoProcess {
        let executable = try executable ?? self.demoExecutable()
        var script = ""
        if let directory { script += "cd '\(directory)' || exit 111; " }
        if setsListenPID { script += "LISTEN_PID=$$; export LISTEN_PID; " }
        script += "exec \"$0\" \"$@\""
        let argv = ["/bin/sh", "-c", script, executable] + arguments
        var environment = environment
        environment["PATH"] = environment["PATH"] ?? "/usr/bin:/bin"
        let envp = environment.map { "\($0.key)=\($0.value)" }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        for (index, fd) in sockets.enumerated() {
            // The sources are parked at high numbers, so they never collide with 3, 4, ...
            posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(index))
        }
        // Like a supervisor, pass nothing else: the test runner may hold
        // descriptors without FD_CLOEXEC just above the handed-over ones.
        for fd in (3 + Int32(sockets.count))..<64 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        sigdelset(&allSignals, SIGKILL)
        sigdelset(&allSignals, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = envp.map { strdup($0) } + [nil]
        defer {
            for pointer in cArguments + cEnvironment {
                free(pointer)
            }
        }
        var pid: pid_t = 0
        let spawnedAt = ContinuousClock.now
        let result = posix_spawn(&pid, "/bin/sh", &actions, &attributes, cArguments, cEnvironment)
        guard result == 0 else {
            throw Failure(description: "posix_spawn: \(String(cString: strerror(result)))")
        }
        return DemoProcess(pid: pid, logPath: logPath, spawnedAt: spawnedAt)
    }

    /// Sends `signal` to the process.
    func signal(_ signal: Int32) {
        kill(self.pid, signal)
    }

    /// Whether the process has exited (and reaps it if so).
    mutating func hasExited() -> Bool {
        if self.exitStatus != nil { return true }
        var status: Int32 = 0
        if waitpid(self.pid, &status, WNOHANG) == self.pid {
            self.exitStatus = status
            return true
        }
        return false
    }

    /// Waits up to `seconds` for the process to exit; returns its exit code,
    /// or 128 + the signal that killed it. Kills it and throws on timeout.
    mutating func waitForExit(seconds: Double) throws -> Int32 {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !self.hasExited() {
            guard ContinuousClock.now < deadline else {
                kill(self.pid, SIGKILL)
                var status: Int32 = 0
                waitpid(self.pid, &status, 0)
                self.exitStatus = status
                throw Failure(description: "process \(self.pid) did not exit within \(seconds) s; log:\n\(self.log())")
            }
            usleep(10_000)
        }
        let status = self.exitStatus!
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// Kills the process if it is still running (cleanup).
    mutating func stop() {
        if !self.hasExited() {
            kill(self.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(self.pid, &status, 0)
            self.exitStatus = status
        }
    }

    /// What the process wrote to stdout and stderr.
    func log() -> String {
        guard let file = fopen(self.logPath, "r") else { return "" }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk.prefix(count)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
