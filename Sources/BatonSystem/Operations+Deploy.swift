import BatonControl
import BatonCore
import CBatonShims
import Glibc

extension Operations {
    /// A deploy: with `release` and `current`, the `current` symlink is
    /// re-pointed at the release first; then the supervisor restarts if it
    /// runs, or starts. If the new code did not come up, the symlink points
    /// back where it pointed (or is removed when there was none). Two deploys
    /// of one supervisor run one after the other (`lockTimeout`). With
    /// `over`, a running supervisor's options are compared with the ones the
    /// deploy names, laid over its own (what a deploy does not name is no
    /// change); without, with `configuration` as a whole.
    public static func deploy(
        _ configuration: RunConfiguration, at locations: Locations, release: String?, current: String?, lockTimeout: Duration,
        timeout: Duration, umask: UInt32 = 0o022, step: (Step) -> Void = { _ in },
        over: ((RunConfiguration) throws(BatonError) -> RunConfiguration)? = nil
    ) -> ControlResult {
        guard let pidFile = locations.pidFile, let control = locations.control else {
            return ControlResult(.usage, "baton deploy: give a NAME, --name NAME or --pid-file PATH")
        }
        // Everything is checked before anything is touched.
        var link: String?
        var target: String?
        if let r = release {
            guard let resolved = Sys.realpath(r) else {
                return ControlResult(.usage, "--release \(r): \(Sys.describe(errno: errno)); nothing was changed")
            }
            var st = stat()
            guard stat(resolved, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                return ControlResult(.usage, "--release \(r) is not a directory; nothing was changed")
            }
            guard let l = current ?? configuration.dir else {
                return ControlResult(.usage, "--release needs --current LINK (the symlink to re-point)")
            }
            link = Sys.absolute(l)
            target = resolved
        }
        var c = configuration
        if let link, c.dir == nil { c.dir = link }

        let lock: DeployLock
        do { lock = try DeployLock(path: pidFile + ".deploy-lock", timeout: lockTimeout, waiting: { step(.note($0)) }) } catch {
            return ControlResult(error)
        }
        defer { lock.release() }

        let previous = link.flatMap(Sys.readLink)
        if let link, let target {
            do { try Sys.pointSymlink(link, at: target) } catch { return ControlResult(error) }
            step(.note("\(link) -> \(target)\(previous.map { " (was \($0))" } ?? "")"))
        }
        var result: ControlResult
        if case .success(let channel) = ControlChannel.connect(control) {
            channel.close()
            result = redeploy(c, at: locations, control: control, timeout: timeout, step: step, over: over)
        } else if let problem = unreachable(locations, control: control) {
            result = problem
        } else {
            step(.note("not running; starting it"))
            result = start(c, at: locations, umask: umask, step: step)
        }
        if !result.ok, let link, target != nil {
            if let previous {
                try? Sys.pointSymlink(link, at: previous)
                result.steps = (result.steps ?? []) + ["the new release failed: \(link) points back to \(previous)"]
            } else {
                unlink(link)
                result.steps = (result.steps ?? []) + ["the new release failed: \(link) removed (there was none before)"]
            }
        }
        return result
    }

    /// A deploy to a running supervisor: with other options than it runs, or
    /// when the `baton` on disk is not the one running, it re-executes with
    /// the new options first (restarting at once when the app's command or
    /// environment changed); otherwise, or then, it restarts.
    static func redeploy(
        _ configuration: RunConfiguration, at locations: Locations, control: String, timeout: Duration, step: (Step) -> Void,
        over: ((RunConfiguration) throws(BatonError) -> RunConfiguration)? = nil
    ) -> ControlResult {
        let started = Sys.now()
        var reasons: [String] = []
        var binary: String?
        var wanted: RunConfiguration?
        if case .running(let s) = status(at: locations) {
            if let theirs = s.binaryID, let me = Supervisor.runningBinaryID(), theirs != me,
                let path = Supervisor.runningBinaryPath()
            {
                binary = path
                reasons.append("the baton binary \(path) is not the one running (\(s.binary ?? "deleted"), version \(s.version))")
            }
            if !configuration.command.isEmpty, let json = s.configuration, let running = try? RunConfiguration(json: json),
                let pidFile = running.pidFile, let control = running.controlPath
            {
                var given = configuration
                if let over {
                    do { given = try over(running) } catch { return ControlResult(error) }
                    if given.dir == nil { given.dir = configuration.dir }
                }
                let next = given.daemonForm(pidFile: pidFile, control: control, logFile: running.logFile ?? "")
                let changed = next.differences(from: running.daemonForm(pidFile: pidFile, control: control, logFile: running.logFile ?? ""))
                if !changed.isEmpty {
                    wanted = next
                    reasons.append("changed: " + changed.joined(separator: ", "))
                }
            }
        }
        guard !reasons.isEmpty else {
            step(.note("restarting"))
            return restart(control: control, timeout: timeout, waitDrain: true, step: step)
        }
        step(.note("re-executing the supervisor in place: " + reasons.joined(separator: "; ")))
        var r = upgrade(control: control, binary: binary, configuration: wanted, timeout: timeout, step: step)
        guard r.ok else { return r }
        if r.generation == nil {
            step(.note("re-executed in \(r.durationMilliseconds ?? 0) ms: \(r.message)"))
            step(.note("restarting"))
            r = restart(control: control, timeout: timeout - (Sys.now() - started), waitDrain: true, step: step)
        }
        r.durationMilliseconds = (Sys.now() - started).milliseconds
        return r
    }
}

/// An exclusive lock per supervisor, so two deploys run one after the other.
///
/// The file exists only while a deploy holds it: the holder unlinks it before
/// it lets go, and a waiter that gets the lock checks that the file it locked
/// is still the one at the path (else it locked a removed file, and opens the
/// path again). So no stale lock file outlives a deploy, and two deploys never
/// both hold a lock.
final class DeployLock {
    private let path: String
    private var fd: Int32 = -1

    init(path: String, timeout: Duration, waiting: (String) -> Void) throws(BatonError) {
        self.path = path
        let deadline = Sys.now() + timeout
        var told = false
        while true {
            fd = baton_open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else {
                throw BatonError(.failure, "cannot open deploy lock \(path): \(Sys.describe(errno: errno))", errno: errno)
            }
            var locked = flock(fd, LOCK_EX | LOCK_NB) == 0
            if !locked {
                if !told {
                    waiting("another deploy is running; waiting up to \(timeout.humanDescription) for it")
                    told = true
                }
                let left = deadline - Sys.now()
                locked = left > .zero && baton_flock_timeout(fd, Int64(left.milliseconds)) == 0
            }
            guard locked else {
                close(fd)
                fd = -1
                throw BatonError(
                    .busy, "another deploy still holds \(path) after \(timeout.humanDescription); try again later or raise --lock-timeout")
            }
            if isStillAtPath() { return }
            close(fd)  // the holder removed it as it let go: lock the file at the path now
            fd = -1
        }
    }

    /// Whether the locked file is the one `path` names.
    private func isStillAtPath() -> Bool {
        var held = stat()
        var named = stat()
        guard fstat(fd, &held) == 0, lstat(path, &named) == 0 else { return false }
        return held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    /// Removes the lock file and lets go of the lock.
    func release() {
        guard fd >= 0 else { return }
        unlink(path)
        close(fd)
        fd = -1
    }
}

extension Sys {
    /// The target of a symlink.
    public static func readLink(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buf, buf.count - 1)
        guard n > 0 else { return nil }
        return string(fromC: Array(buf[0..<n]) + [0])
    }

    /// Re-points `link` at `target` atomically: a new symlink renamed over it.
    public static func pointSymlink(_ link: String, at target: String) throws(BatonError) {
        let temp = "\(link).tmp.\(getpid())"
        unlink(temp)
        guard symlink(target, temp) == 0 else {
            throw BatonError(.failure, "cannot create symlink \(temp): \(describe(errno: errno))", errno: errno)
        }
        guard rename(temp, link) == 0 else {
            let e = errno
            unlink(temp)
            throw BatonError(.failure, "cannot re-point \(link): \(describe(errno: e))", errno: e)
        }
    }
}
