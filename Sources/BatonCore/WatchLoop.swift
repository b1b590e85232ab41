/// Development mode's decisions, free of I/O: file changes are gathered for
/// a debounce interval, then a build (if there is one) and a restart follow.
/// A change during a build cancels it; the build runs again after the next
/// quiet interval. The shell feeds it changes, build outcomes and time.
public struct WatchLoop: Sendable, Equatable {
    /// What the shell must do.
    public enum Action: Sendable, Equatable {
        /// Run the build; `trigger` is the last changed file.
        case build(trigger: String)
        /// Stop the build under way (its outcome will not be waited for).
        case cancelBuild
        /// Ask for a graceful restart.
        case restart(trigger: String, changes: Int, since: Instant)
        /// Say this in the log.
        case report(String)
    }

    enum State: Sendable, Equatable {
        case idle
        /// Changes seen; acting at `until` unless more come (at the latest at `cap`).
        case gathering(latest: String, count: Int, since: Instant, until: Instant, cap: Instant)
        /// The build runs for these changes.
        case building(trigger: String, count: Int, since: Instant)
    }

    /// How long the files must be quiet before acting.
    public let debounce: Duration
    /// True when a build runs before each restart.
    public let builds: Bool
    var state: State = .idle

    /// A loop waiting `debounce` after the last change, building first if `builds`.
    public init(debounce: Duration, builds: Bool) {
        self.debounce = debounce
        self.builds = builds
    }

    /// When the shell must call `tick`, if at all.
    public var nextDeadline: Instant? {
        if case .gathering(_, _, _, let until, let cap) = state { return min(until, cap) }
        return nil
    }

    /// True while a build runs.
    public var isBuilding: Bool {
        if case .building = state { return true }
        return false
    }

    /// A file changed (its path relative to the watched directory, for people).
    public mutating func changed(_ path: String, now: Instant) -> [Action] {
        // A long series of changes acts at most this long after its first one.
        let cap = debounce * 10
        switch state {
        case .idle:
            state = .gathering(latest: path, count: 1, since: now, until: now + debounce, cap: now + cap)
            return []
        case .gathering(_, let count, let since, _, let capAt):
            // The last change names the restart: a tool that writes a temporary
            // file and renames it over the real one shows the real one.
            state = .gathering(latest: path, count: count + 1, since: since, until: now + debounce, cap: capAt)
            return []
        case .building(_, let count, let since):
            state = .gathering(latest: path, count: count + 1, since: since, until: now + debounce, cap: now + cap)
            return [.cancelBuild, .report("\(path) changed during the build: the build is cancelled and runs again")]
        }
    }

    /// Time passed: acts once the files have been quiet long enough.
    public mutating func tick(now: Instant) -> [Action] {
        guard case .gathering(let latest, let count, let since, let until, let cap) = state, now >= min(until, cap) else { return [] }
        if builds {
            state = .building(trigger: latest, count: count, since: since)
            return [.build(trigger: latest)]
        }
        state = .idle
        return [.restart(trigger: latest, changes: count, since: since)]
    }

    /// The build finished: a restart follows if it passed; a failed one
    /// leaves the running code serving until the next change.
    public mutating func buildFinished(passed: Bool, detail: String) -> [Action] {
        guard case .building(let trigger, let count, let since) = state else { return [] }
        state = .idle
        if passed { return [.restart(trigger: trigger, changes: count, since: since)] }
        return [
            .report("✗ the build failed (\(detail)) after \(trigger) changed; the running generation keeps serving; save again to retry")
        ]
    }
}
