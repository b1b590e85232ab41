import CBatonShims
import Foundation
import Glibc
import Synchronization

/// Waits up to `seconds` for `condition`, checking every 10 ms.
@discardableResult
public func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Waits up to `seconds` for `condition`, then checks that it still holds
/// `steady` seconds later (a count that must reach N and not go past it).
public func eventuallyAndSteady(_ seconds: Double, steady: Double, _ condition: () -> Bool) -> Bool {
    guard eventually(seconds, condition) else { return false }
    usleep(useconds_t(steady * 1_000_000))
    return condition()
}

/// A child process in a process group of its own, stdout and stderr to a log file.
public final class Child: @unchecked Sendable {
    public let pid: pid_t
    public let logPath: String
    private let state = Mutex<Int32?>(nil)

    /// Spawns `path` with `args`: the test's environment (or `env`, a whole
    /// environment) with `extraEnv` on top, in `cwd`, with `fds` at 3, 4, ...
    public init(
        _ path: String, _ args: [String], log: String, env: [String]? = nil, extraEnv: [String: String] = [:], cwd: String? = nil,
        fds: [Int32] = []
    ) {
        logPath = log
        let out = baton_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let devnull = baton_open("/dev/null", O_RDONLY | O_CLOEXEC, 0)
        var environment = env ?? ProcessInfo.processInfo.environment.map { "\($0)=\($1)" }
        for (k, v) in extraEnv { environment = environment.filter { !$0.hasPrefix(k + "=") } + ["\(k)=\(v)"] }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        let saved = FileManager.default.currentDirectoryPath
        if let cwd { chdir(cwd) }
        var pid: pid_t = 0
        let stdio: [Int32] = [devnull, out, out]
        let rc = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                stdio.withUnsafeBufferPointer { s in
                    fds.withUnsafeBufferPointer { f in
                        baton_spawn(&pid, path, a.baseAddress!, e.baseAddress!, f.baseAddress, nil, Int32(fds.count), s.baseAddress, 1, 0)
                    }
                }
            }
        }
        if cwd != nil { chdir(saved) }
        for p in argv + envp { free(p) }
        close(out)
        close(devnull)
        precondition(rc == 0, "spawn \(path): \(String(cString: strerror(rc)))")
        self.pid = pid
    }

    /// Everything it wrote so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The lines of the log that contain `text`.
    public func lines(_ text: String) -> [String] {
        log.split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }

    public func signal(_ sig: Int32) { kill(pid, sig) }

    /// Waits for the exit: the exit code (128+signal when killed), nil on timeout.
    @discardableResult
    public func wait(_ seconds: Double = 15) -> Int32? {
        if let done = state.withLock({ $0 }) { return done }
        var result: Int32?
        eventually(seconds) {
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { return false }
            result = baton_wifexited(status) != 0 ? baton_wexitstatus(status) : 128 + baton_wtermsig(status)
            return true
        }
        if let result { state.withLock { $0 = result } }
        return result
    }

    public var exited: Bool { state.withLock { $0 } != nil || wait(0) != nil }

    /// Stops it: `sig`, up to `grace` seconds, then SIGKILL to its whole process group.
    @discardableResult
    public func stop(_ sig: Int32 = SIGTERM, grace: Double = 15) -> Int32? {
        if !exited {
            kill(pid, sig)
            if wait(grace) == nil {
                kill(-pid, SIGKILL)
                wait(5)
            }
        }
        // Whatever it left behind in its group (workers of a dead master).
        kill(-pid, SIGKILL)
        return state.withLock { $0 }
    }

    deinit {
        if state.withLock({ $0 }) == nil {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}

/// Runs a command to its end (at most `timeout` seconds); its exit status and output (stdout and stderr).
public func run(
    _ path: String, _ args: [String], cwd: String? = nil, env: [String: String] = [:], timeout: Double = 30
) -> (status: Int32, output: String) {
    let log = NSTemporaryDirectory() + "baton-run-" + UUID().uuidString.prefix(8) + ".log"
    defer { unlink(log) }
    let child = Child(path, args, log: log, extraEnv: env, cwd: cwd)
    let status = child.wait(timeout) ?? -1
    return (status, child.log)
}

/// The fields of /proc/PID/stat after the command: state, ppid, pgrp, ...
public func procStat(_ pid: pid_t) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
        return nil
    }
    return stat[stat.index(after: close)...].split(separator: " ")
}

/// The pids of every live process (zombies left out).
public func livePids() -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { pid_t($0) }.filter { !isGone($0) }
}

/// The pids of every live process in process group `pgid`.
public func processGroupMembers(_ pgid: pid_t) -> [pid_t] {
    livePids().filter { pid in procStat(pid).map { $0.count > 3 && pid_t($0[2]) == pgid } ?? false }
}

/// A field of /proc/PID/status, such as VmRSS or Uid.
public func procStatus(_ pid: pid_t, _ field: String) -> String? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return line.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces)
    }
    return nil
}

/// The live processes whose real uid is `uid`, each as "PID command line".
public func processesOf(uid: uid_t) -> [String] {
    livePids().compactMap { pid in
        guard procStatus(pid, "Uid")?.split(whereSeparator: \.isWhitespace).first == Substring(String(uid)) else { return nil }
        return "\(pid) \(commandLineOf(pid))"
    }
}

/// The pid a pid file holds, if it holds one.
public func pidInFile(_ path: String) -> pid_t? {
    (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// True when `pid` is gone (or a zombie).
public func isGone(_ pid: pid_t) -> Bool {
    guard let fields = procStat(pid) else { return true }
    return fields.first == "Z"
}

/// The name ps, top and pgrep show for a process (/proc/PID/comm).
public func processName(_ pid: pid_t) -> String {
    ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
}

/// The command line of a process, spaces between the arguments.
public func commandLineOf(_ pid: pid_t) -> String {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
    return String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
}

/// Runs `body` on a thread of its own; `value` waits for its result.
public final class Threaded<T: Sendable>: @unchecked Sendable {
    private var result: T?
    private let done = DispatchSemaphore(value: 0)

    public init(_ body: @escaping @Sendable () -> T) {
        Thread.detachNewThread { [self] in
            result = body()
            done.signal()
        }
    }

    public var value: T {
        done.wait()
        done.signal()
        return result!
    }

    /// The result, or nil when `body` has not returned within `seconds`.
    public func value(within seconds: Double) -> T? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        done.signal()
        return result
    }
}
