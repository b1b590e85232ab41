import BatonCore
import BatonProtocol
import Glibc
import Testing

/// Probation, crash loops and the rollback, with the policy as shipped.
@Suite struct ProbationTests {
    static let passed = ProbeResult(status: 200, detail: "OK", latency: .milliseconds(1), passed: true)

    func steers(_ actions: [SupervisorAction]) -> [Int] {
        actions.compactMap {
            if case .steer(_, _, let index) = $0 { return index }
            return nil
        }
    }

    func spawnReleases(_ actions: [SupervisorAction]) -> [String?] {
        actions.compactMap {
            if case .spawn(_, _, _, let release) = $0 { return release }
            return nil
        }
    }

    /// Generation 1 serves on one steered listener, its probation over.
    func serving(_ configure: (inout SupervisorPolicy) -> Void = { _ in }) -> Harness {
        var h = Harness(listeners: [.steered], defaults: true, configure)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.prove(1)
        if h.machine.policy.health != nil {
            h.advance(0)
            h.send(.probeFinished(generation: 1, result: Self.passed))
        }
        h.advance(5)
        #expect(h.state(of: 1) == "serving")
        return h
    }

    /// A restart (request `id`) whose generation 2 (pid 2000, in `release`) took over.
    func onProbation(_ h: inout Harness, id: RequestID = 7, release: String = "/r2") {
        h.restart(id)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: release))
        h.prove(2)
        #expect(h.state(of: 2) == "probation")
        #expect(h.state(of: 1) == "reserve")
    }

    @Test func theOldGenerationWaitsUnsignalledUntilTheProbationPasses() {
        var h = serving()
        h.restart(7)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        let took = h.prove(2)
        // New connections go to generation 2 at once (slot 1)...
        #expect(steers(took) == [1])
        #expect(reports(took).contains { $0.kind == .probation && $0.message.contains("waiting") })
        // ...generation 1 gets no signal, and nobody is answered yet.
        #expect(signals(h.advance(4.9)).isEmpty)
        #expect(answers(h.advance(0)).isEmpty)
        let passed = h.advance(0.1)
        #expect(h.state(of: 2) == "serving")
        #expect(h.state(of: 1) == "draining")
        #expect(reports(passed).contains { $0.message.hasPrefix("passed its probation") })
        // No handshake window: nothing was steered to it for 5 s.
        h.send(.queueMeasured(generation: 1, length: 0))
        let done = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(answers(done).map(\.0) == [7])
        #expect(answers(done).first?.1.code == nil)
    }

    @Test func aNewGenerationThatExitsOnProbationSendsConnectionsBackAndFails() {
        var h = serving()
        onProbation(&h)
        h.advance(3)
        let died = h.send(.childExited(pid: 2000, status: .exited(1)))
        // Back to generation 1's slot, at once.
        #expect(steers(died) == [0])
        #expect(reports(died).contains { $0.kind == .steeredBack && $0.generation == 1 })
        let answer = answers(died).first { $0.0 == 7 }?.1
        #expect(answer?.code == .generationFailed)
        #expect(answer?.message.contains("during its probation") == true)
        #expect(answer?.message.contains("generation 1 (pid 1000) still serves") == true)
        #expect(h.state(of: 1) == "serving")
        #expect(h.machine.probation == nil)
        // A failed deploy is not a crash loop.
        #expect(h.machine.crashLoop == nil)
        // The old generation was never signalled.
        #expect(!died.contains(.signal(pid: 1000, signal: SIGTERM)))
        // A generation of the old release answers what waited in generation 2's queue.
        #expect(spawnReleases(died) == ["/r1"])
        #expect(spawns(died) == [3])
        #expect(died.contains(.measureQueues(generation: 3, sockets: [1])))
        #expect(
            reports(h.send(.queueMeasured(generation: 3, length: 4))).map(\.message) == ["4 connection(s) wait in the queue it takes over"])
        let spawned = h.send(.spawned(generation: 3, pid: 3000, releaseDir: "/r1"))
        #expect(h.state(of: 3) == "rescuing")
        // Its proof goes through the program to socket 1 (generation 2's), slot 1.
        #expect(
            spawned.contains(.connectProof(generation: 3, socket: 1, steer: ProofSteer(listener: 0, via: 0, probeIndex: 1, otherIndex: 0))))
        let ready = h.prove(3)
        #expect(steers(ready).isEmpty, "a rescuer never gets new connections")
        #expect(h.state(of: 3) == "draining")
        h.send(.queueMeasured(generation: 3, length: 0))
        h.advance(0.2)
        #expect(signals(h.send(.queueMeasured(generation: 3, length: 0))) == [.signal(pid: 3000, signal: SIGTERM)])
        let gone = h.send(.childExited(pid: 3000, status: .exited(0)))
        #expect(gone.contains(.close([1])))
        #expect(h.machine.rescuers.isEmpty)
        #expect(h.state(of: 1) == "serving")
    }

    @Test func aNewGenerationThatStopsAcceptingOnProbationIsStopped() {
        var h = serving()
        onProbation(&h)
        // Readings every 20 ms; the queue grows and nothing is taken.
        var out: [SupervisorAction] = []
        var length = 0
        for _ in 0..<120 {
            out = h.advance(0.02)
            if out.contains(where: { if case .measureQueues = $0 { true } else { false } }) {
                length += 1
                out += h.send(.queueMeasured(generation: 2, length: length))
            }
            if h.machine.probation == nil { break }
        }
        #expect(h.machine.probation == nil, "still on probation after 2.4 s of a growing queue")
        #expect(steers(out) == [0])
        // Its socket is not reset: a rescuer of the old release takes it, and what waits there.
        #expect(!out.contains { if case .shutDown = $0 { true } else { false } })
        #expect(spawnReleases(out) == ["/r1"])
        #expect(h.machine.sockets[1]?.owner == 3)
        #expect(out.contains(.signalGroup(pgid: 2000, signal: SIGTERM)))
        #expect(answers(out).first?.1.message.contains("stopped accepting") == true)
    }

    @Test func aBusyQueueFromWhichConnectionsAreTakenIsNoStall() {
        var h = serving()
        onProbation(&h)
        var lengths = [3, 5, 4, 6, 5, 7, 6]
        for _ in 0..<250 {
            let out = h.advance(0.02)
            if out.contains(where: { if case .measureQueues = $0 { true } else { false } }) {
                let n = lengths.removeFirst()
                lengths.append(n)
                h.send(.queueMeasured(generation: 2, length: n))
            }
        }
        #expect(h.state(of: 2) == "serving")
        #expect(h.state(of: 1) == "draining")
    }

    @Test func aFailedHealthProbeOnProbationFailsIt() {
        var h = serving { $0.health = HealthCheck(path: "/health") }
        h.restart(7)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.prove(2)
        h.advance(0)
        h.send(.probeFinished(generation: 2, result: Self.passed))
        #expect(h.state(of: 2) == "probation")
        var out: [SupervisorAction] = []
        for _ in 0..<3 {
            h.advance(0.2)
            out = h.send(
                .probeFinished(generation: 2, result: ProbeResult(status: 500, detail: "boom", latency: .milliseconds(1), passed: false)))
        }
        #expect(steers(out) == [0])
        #expect(answers(out).first?.1.message.contains("health probes") == true)
        #expect(h.state(of: 1) == "serving")
    }

    @Test func aRestartDuringProbationFollowsIt() {
        var h = serving()
        onProbation(&h)
        let queued = h.restart(8)
        #expect(spawns(queued).isEmpty)
        #expect(reports(queued).contains { $0.message.contains("on probation") })
        #expect(spawns(h.advance(5)) == [3])
    }

    /// `--watch`: the newest save wins.
    @Test func aWatchedChangeDuringProbationEndsItAndFollowsAtOnce() {
        var h = serving()
        onProbation(&h)
        let out = h.send(.restartRequested(RestartRequest(id: 9, waitsForDrain: false, endsProbation: true)))
        #expect(reports(out).contains { $0.message.contains("its probation ends here") })
        #expect(h.state(of: 1) == "draining")
        #expect(spawns(out) == [3])
        #expect(h.machine.lastAttempt?.outcome == .succeeded(generation: 2, pid: 2000, readyAfter: .zero, retired: [1]))
    }

    /// With nothing in reserve there is nothing to switch back to: a restart
    /// does not wait for the probation of the first generation.
    @Test func aRestartDuringTheFirstGenerationsProbationFollowsAtOnce() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.send(.start(report: 1))
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.prove(1)
        #expect(h.state(of: 1) == "probation")
        let out = h.restart(2)
        #expect(spawns(out) == [2])
        #expect(answers(out).map(\.0) == [1])
        #expect(h.state(of: 1) == "serving")
    }

    @Test func aStopDuringProbationStopsBoth() {
        var h = serving()
        onProbation(&h)
        let stop = h.send(.stopRequested(9))
        #expect(h.machine.probation == nil)
        #expect(answers(stop).first { $0.0 == 7 }?.1.code == .busy)
        #expect(signals(stop).count == 2)
    }

    @Test func theFirstGenerationsStartIsAnsweredAfterItsProbation() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.send(.start(report: 1))
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        #expect(answers(h.prove(1)).isEmpty)
        let died = h.advance(2.5) + h.send(.childExited(pid: 1000, status: .exited(2)))
        #expect(answers(died).first?.1.code == .startFailed)
        #expect(exits(died).first?.0 == BatonError.Code.startFailed.exitCode)
    }

    // MARK: - Crash loops

    /// Generation `n` (pid n*1000) of the respawn under way takes over and dies `after` seconds later.
    func respawnDies(_ h: inout Harness, _ n: Int, release: String, after: Double) -> [SupervisorAction] {
        var out = h.advance(30)  // past any backoff
        let pid = Int32(n * 1000)
        out += h.send(.spawned(generation: n, pid: pid, releaseDir: release))
        out += h.prove(n)
        out += h.advance(after)
        out += h.send(.childExited(pid: pid, status: .exited(1)))
        return out
    }

    @Test func generationsOfOneReleaseDyingSoonAfterGettingReadyAreACrashLoop() {
        var h = serving()
        h.advance(10)
        // Generation 1 served 10 s, then died: a first death of /r1.
        h.send(.childExited(pid: 1000, status: .exited(1)))
        #expect(h.machine.crashLoop?.deaths == 1)
        #expect(!h.machine.isCrashLooping)
        // The respawn (generation 2) dies on its probation: not "succeeded".
        let second = respawnDies(&h, 2, release: "/r1", after: 2.5)
        #expect(
            h.machine.lastAttempt?.outcome
                == .failed(generation: 2, reason: "exited with exit code 1 during its probation, 2.5 s after it took over"))
        #expect(!reports(second).contains { $0.kind == .crashLoop })
        let third = respawnDies(&h, 3, release: "/r1", after: 2.5)
        #expect(h.machine.isCrashLooping)
        #expect(reports(third).contains { $0.kind == .crashLoop && $0.message.contains("crash-looping") })
        #expect(h.machine.crashLoop(at: h.now)?.deaths == 3)
        // Nothing served stably yet: no rollback, the respawns go on with backoff.
        #expect(h.machine.pinnedRelease == nil)
        #expect(h.machine.respawnAt != nil)
    }

    @Test func aCrashLoopingReleaseIsRolledBackToTheLastOneThatServedStably() {
        var h = serving()
        // A deploy of /r2 passes its probation: /r1 was retired, so it served stably.
        onProbation(&h, release: "/r2")
        h.advance(5)
        h.send(.queueMeasured(generation: 1, length: 0))
        h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(h.machine.stableRelease == "/r1")
        // /r2 dies 10 s after it got ready, and its respawns soon after theirs.
        h.advance(5)
        h.send(.childExited(pid: 2000, status: .exited(1)))
        _ = respawnDies(&h, 3, release: "/r2", after: 6)
        let third = respawnDies(&h, 4, release: "/r2", after: 6)
        #expect(h.machine.isCrashLooping)
        #expect(reports(third).contains { $0.kind == .crashLoop && $0.message.hasPrefix("rolling back") })
        #expect(h.machine.pinnedRelease == "/r1")
        // The next respawn starts /r1 by its realpath.
        #expect(spawnReleases(h.advance(30)) == ["/r1"])
        #expect(h.machine.crashLoop(at: h.now)?.rolledBackTo == "/r1")
        // A restart asked for runs what --dir names again.
        h.send(.spawned(generation: 5, pid: 5000, releaseDir: "/r1"))
        h.prove(5)
        h.advance(5)
        #expect(spawnReleases(h.restart(11)) == [nil])
        #expect(h.machine.pinnedRelease == nil)
    }

    @Test func aReleaseThatServedTheWholeWindowIsNoLongerCrashLooping() {
        var h = serving()
        for (n, after) in [(1, 10.0)] {
            h.advance(after)
            h.send(.childExited(pid: Int32(n * 1000), status: .exited(1)))
        }
        _ = respawnDies(&h, 2, release: "/r1", after: 3)
        _ = respawnDies(&h, 3, release: "/r1", after: 3)
        #expect(h.machine.isCrashLooping)
        h.advance(30)
        h.send(.spawned(generation: 4, pid: 4000, releaseDir: "/r1"))
        h.prove(4)
        h.advance(5)
        #expect(h.machine.crashLoop(at: h.now) != nil)
        h.advance(60)
        #expect(h.machine.crashLoop(at: h.now) == nil)
    }
}
