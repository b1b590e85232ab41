/// One thing that happened, for the log (one line each) and for the
/// progress stream of whoever waits for a request.
public struct Report: Sendable, Equatable, CustomStringConvertible {
    /// What happened.
    public enum Kind: String, Sendable, Equatable {
        case spawned, ready, serving, signalled, drained, exited, crashed, failed
        case killed, respawnScheduled, queued, notified, ignored, stopping, stopped, rejected
        case steered, queueDrained
        case reexec
        case proven, probation, steeredBack, crashLoop
    }
    /// What happened.
    public var kind: Kind
    /// The generation concerned, if any.
    public var generation: Int?
    /// Its main pid, if any.
    public var pid: Int32?
    /// A short sentence for people.
    public var message: String
    /// How long the step took, where that means something.
    public var elapsed: Duration?

    public var description: String {
        var prefix = ""
        if let generation { prefix += "gen \(generation) " }
        if let pid { prefix += "pid \(pid) " }
        return prefix + message
    }
}

/// The human text of every report the machine makes, in one place.
enum Reports {
    static func about(_ g: Generation, _ kind: Report.Kind, _ message: String, elapsed: Duration? = nil) -> Report {
        Report(kind: kind, generation: g.number, pid: g.pid, message: message, elapsed: elapsed)
    }

    static func spawned(_ g: Generation) -> Report { about(g, .spawned, "spawned in \(g.releaseDir)") }

    static func spawnFailed(_ number: Int, _ reason: String) -> Report {
        Report(kind: .failed, generation: number, message: "could not be spawned: \(reason)")
    }

    static func ignoredNotification(from pid: Int32) -> Report {
        Report(kind: .ignored, message: "ignored a notify message from pid \(pid): not the main process of a generation")
    }

    static func malformedNotification(_ g: Generation) -> Report { about(g, .ignored, "ignored a malformed notify message") }

    static func notified(_ g: Generation, _ what: String) -> Report { about(g, .notified, what) }

    static func probing(_ g: Generation, via: String, path: String, now: Instant) -> Report {
        about(g, .notified, "says it is ready (\(via)) after \((now - g.spawnedAt).humanDescription); probing GET \(path)")
    }

    static func ready(_ g: Generation, via: String, now: Instant) -> Report {
        about(g, .ready, "ready after \((now - g.spawnedAt).humanDescription) (\(via))", elapsed: now - g.spawnedAt)
    }

    static func serving(_ g: Generation, retiring: [Int]) -> Report {
        about(
            g, .serving,
            retiring.isEmpty ? "serving" : "serving; retiring generation \(retiring.map(String.init).joined(separator: ", "))")
    }

    static func steered(_ g: Generation) -> Report {
        about(g, .steered, "new connections go to it now")
    }

    static func queueDrained(_ g: Generation, after: Duration, queuedAtSteer: Int) -> Report {
        about(
            g, .queueDrained,
            "accept queue emptied after \(after.humanDescription) (\(queuedAtSteer) queued when new connections went to the new generation)",
            elapsed: after)
    }

    static func lateHandshakes(_ g: Generation, _ count: Int, after: Duration) -> Report {
        about(
            g, .queueDrained,
            "\(count) connection(s) begun before the switch arrived in the handshake window; emptied after \(after.humanDescription)",
            elapsed: after)
    }

    static func queueNotEmpty(_ g: Generation, after: Duration) -> Report {
        about(g, .queueDrained, "accept queue still not empty after \(after.humanDescription): going on with its signal")
    }

    static func signalled(_ g: Generation, _ sig: Int32, _ reason: Teardown.Reason, deadline: Duration?) -> Report {
        let why = reason == .retire ? "retire" : "stop"
        let drain = deadline.map { "drain deadline \($0.humanDescription)" } ?? "no drain deadline"
        return about(g, .signalled, "sent \(OptionParsing.signalName(sig)) (\(why)); \(drain)")
    }

    static func killed(_ g: Generation, after waited: Duration) -> Report {
        about(g, .killed, "still running \(waited.humanDescription) after its signal: sent SIGKILL to its process group")
    }

    static func failed(_ g: Generation, _ reason: String, elapsed: Duration? = nil) -> Report {
        about(g, .failed, reason, elapsed: elapsed)
    }

    static func notReady(after timeout: Duration, missing: String = "") -> String {
        "not ready after \(timeout.humanDescription)\(missing.isEmpty ? "" : " (\(missing))"): stopped"
    }

    static func proofNotConnected(_ g: Generation, _ failure: String, retryingIn delay: Duration) -> Report {
        about(g, .notified, "cannot make a probe connection to its own socket (\(failure)); trying again in \(delay.humanDescription)")
    }

    static func proofImpossible(_ g: Generation, _ failure: String, attempts: Int) -> Report {
        about(
            g, .notified,
            "cannot reach a socket of its own to prove it accepts (\(failure), \(attempts) tries): judged by READY=1, else by being alive, as a generation without one"
        )
    }

    static func proven(_ g: Generation, how: String, socket: SocketID, after: Duration) -> Report {
        about(g, .proven, "accepts: it \(how) on its own socket \(socket), \(after.humanDescription) after its spawn", elapsed: after)
    }

    static func onProbation(_ g: Generation, for probation: Duration, reserve: [Int]) -> Report {
        let kept =
            reserve.isEmpty
            ? "nothing to fall back to"
            : "generation \(reserve.map(String.init).joined(separator: ", ")) kept in reserve, unsignalled"
        return about(g, .probation, "on probation for \(probation.humanDescription) (\(kept)); waiting")
    }

    static func probationPassed(_ g: Generation, after: Duration, retiring: [Int]) -> Report {
        about(
            g, .serving,
            "passed its probation (\(after.humanDescription))"
                + (retiring.isEmpty ? "" : "; retiring generation \(retiring.map(String.init).joined(separator: ", "))"),
            elapsed: after)
    }

    static func rescuing(_ number: Int, from failed: Int, release: String) -> Report {
        Report(
            kind: .spawned, generation: number,
            message: "starting in \(release) to answer what waits in generation \(failed)'s queue; it is retired once that is empty")
    }

    static func rescueQueue(_ number: Int, _ length: Int) -> Report {
        Report(kind: .queueDrained, generation: number, message: "\(length) connection(s) wait in the queue it takes over")
    }

    static func probationCutShort(_ generation: Int) -> Report {
        Report(kind: .probation, generation: generation, message: "a restart came: its probation ends here")
    }

    static func steeredBack(_ g: Generation, from failed: Int) -> Report {
        about(g, .steeredBack, "new connections go back to it (generation \(failed) failed its probation)")
    }

    static func crashLooping(_ loop: SupervisorStateMachine.CrashLoop, window: Duration) -> Report {
        Report(
            kind: .crashLoop, generation: loop.lastGeneration,
            message:
                "release \(loop.releaseDir) is crash-looping: \(loop.deaths) generations in a row died within "
                + "\(window.humanDescription) of getting ready (last: \(loop.lastReason))")
    }

    static func rollingBack(from looping: String, to stable: String) -> Report {
        Report(
            kind: .crashLoop,
            message: "rolling back: starting \(stable), the last release that served stably, instead of the crash-looping \(looping)")
    }

    static func notHealthy(after timeout: Duration, _ last: String) -> String {
        "not healthy after \(timeout.humanDescription) (\(last)): stopped"
    }

    static func crashed(_ g: Generation, _ status: ExitStatus, servedFor: Duration) -> Report {
        let what: String
        switch status {
        case .exited: what = "exited unexpectedly with \(status)"
        case .signaled: what = "was killed unexpectedly by \(status)"
        }
        return about(g, .crashed, "\(what) after serving \(servedFor.humanDescription)")
    }

    static func drained(_ g: Generation, _ status: ExitStatus, after: Duration) -> Report {
        about(g, .drained, "\(status.clause), drained after \(after.humanDescription)", elapsed: after)
    }

    static func exited(_ g: Generation, _ status: ExitStatus) -> Report { about(g, .exited, status.clause) }

    static func probePassed(_ g: Generation, _ result: ProbeResult) -> Report {
        about(g, .notified, "health probe passed: \(result)", elapsed: result.latency)
    }

    static func probeFailed(_ g: Generation, _ result: ProbeResult, retryingEvery interval: Duration) -> Report {
        about(g, .notified, "health probe failed: \(result); trying again every \(interval.humanDescription)")
    }

    static func probeFailed(_ g: Generation, _ result: ProbeResult, count: Int, of limit: Int) -> Report {
        about(g, .notified, "health probe failed (\(count) of \(limit)): \(result)")
    }

    static func unhealthy(_ g: Generation, failures: Int) -> Report {
        about(g, .crashed, "unhealthy: \(failures) failed probes in a row; starting a new generation")
    }

    static func restartIgnoredWhileStopping() -> Report {
        Report(kind: .rejected, message: "restart ignored: the supervisor is stopping")
    }

    static func restartQueued(behind generation: Int, onProbation: Bool = false) -> Report {
        Report(
            kind: .queued, generation: generation,
            message:
                "restart asked for while generation \(generation) is \(onProbation ? "on probation" : "starting"): one more restart will follow it"
        )
    }

    static func retrying(_ number: Int, in delay: Duration, try n: Int, of total: Int) -> Report {
        Report(kind: .respawnScheduled, generation: number, message: "trying again in \(delay.humanDescription) (try \(n) of \(total))")
    }

    static func restartQueuedBehindReexec() -> Report {
        Report(kind: .queued, message: "restart asked for while a re-exec waits: it follows the re-exec")
    }

    static func reexecWaiting(_ generations: Int) -> Report {
        Report(kind: .reexec, message: "re-exec asked for: it follows once no generation is starting or draining (\(generations) live)")
    }

    static func reexecFailed(_ reason: String) -> Report {
        Report(kind: .reexec, message: "re-exec failed: \(reason); nothing changed")
    }

    static func respawnScheduled(in delay: Duration) -> Report {
        Report(kind: .respawnScheduled, message: "nothing serves: starting a new generation in \(delay.humanDescription)")
    }

    static func autoRestart(every interval: Duration) -> Report {
        Report(kind: .queued, message: "auto-restart (every \(interval.humanDescription))")
    }

    static func stopping(_ count: Int) -> Report { Report(kind: .stopping, message: "stopping: \(count) generation(s) to stop") }

    static func stopped(_ code: Int32) -> Report { Report(kind: .stopped, message: "stopped (exit code \(code))") }

    /// The log line that ends an attempt (not forwarded as progress: it has no generation).
    static func outcome(_ outcome: AttemptOutcome, stillServing: Generation?) -> Report {
        switch outcome {
        case .succeeded(let generation, _, let readyAfter, _):
            return Report(kind: .serving, message: "generation \(generation) is serving (ready after \(readyAfter.humanDescription))")
        case .failed(let generation, let reason):
            let still = stillServing.map { "; generation \($0.number) (pid \($0.pid)) still serves" } ?? ""
            return Report(kind: .failed, message: "generation \(generation.map(String.init) ?? "?") failed: \(reason)\(still)")
        case .rejected(let reason):
            return Report(kind: .rejected, message: "request rejected: \(reason)")
        }
    }
}
