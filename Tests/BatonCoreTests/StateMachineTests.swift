import BatonCore
import Glibc
import Testing

/// Drives the state machine with scripted events and made-up instants.
struct Harness {
    var machine: SupervisorStateMachine
    var now = Instant.seconds(100)

    init(_ configure: (inout SupervisorPolicy) -> Void = { _ in }) {
        var policy = SupervisorPolicy()
        configure(&policy)
        machine = SupervisorStateMachine(policy: policy)
    }

    @discardableResult
    mutating func send(_ event: SupervisorEvent) -> [SupervisorAction] {
        machine.handle(event, now: now)
    }

    /// Moves the clock and fires the deadline handling.
    @discardableResult
    mutating func advance(_ seconds: Double) -> [SupervisorAction] {
        now = now + .milliseconds(Int64(seconds * 1000))
        return send(.tick)
    }

    /// Starts the first generation as pid `pid` and makes it serve.
    mutating func startServing(pid: Int32 = 1000) {
        send(.start)
        send(.spawned(generation: 1, pid: pid, releaseDir: "/r1"))
        send(.notified(pid: pid, message: NotifyMessage(parsing: Array("READY=1".utf8))))
        advance(1)
    }

    func phase(of number: Int) -> Generation.Phase? {
        machine.generations.first { $0.number == number }?.phase
    }
}

func ready() -> NotifyMessage { NotifyMessage(parsing: Array("READY=1".utf8)) }

func signals(_ actions: [SupervisorAction]) -> [SupervisorAction] {
    actions.filter {
        if case .signal = $0 { return true }
        if case .signalGroup = $0 { return true }
        return false
    }
}

func outcomes(_ actions: [SupervisorAction]) -> [([RequestID], AttemptOutcome)] {
    actions.compactMap {
        if case .attemptFinished(let r, let o) = $0 { return (r, o) }
        return nil
    }
}

@Suite struct StateMachineTests {
    @Test func firstGenerationServesAfterReadyAndSettle() {
        var h = Harness()
        #expect(h.send(.start).contains(.spawn(generation: 1)))
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        #expect(h.phase(of: 1) == .starting)
        h.send(.notified(pid: 1000, message: ready()))
        #expect(h.phase(of: 1) == .settling)
        #expect(h.machine.nextDeadline == h.now + .seconds(1))
        let actions = h.advance(1)
        #expect(h.phase(of: 1) == .serving)
        #expect(outcomes(actions).count == 1)
        // Nothing left to wait for: the shell sleeps until an event.
        #expect(h.machine.nextDeadline == nil)
    }

    @Test func restartRetiresTheOldGenerationOnlyAfterTheNewOneSettled() {
        var h = Harness { $0.signalOnHup = SIGQUIT }
        h.startServing()
        #expect(h.send(.restartRequested(7)) == [.attemptStarted(requests: [7], generation: 2, reason: .restart), .spawn(generation: 2)])
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        #expect(h.phase(of: 1) == .serving)
        #expect(h.phase(of: 2) == .settling)
        let actions = h.advance(1)
        #expect(signals(actions) == [.signal(pid: 1000, signal: SIGQUIT)])
        #expect(h.phase(of: 1) == .draining)
        #expect(h.phase(of: 2) == .serving)
        let done = outcomes(actions)
        #expect(done.count == 1 && done[0].0 == [7])
        if case .succeeded(let gen, let pid, _, let retired) = done[0].1 {
            #expect(gen == 2 && pid == 2000 && retired == [1])
        } else {
            Issue.record("expected success, got \(done[0].1)")
        }
        h.advance(0.5)
        let exit = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(exit.contains { if case .report(let r) = $0 { return r.kind == .drained } else { return false } })
        #expect(h.machine.generations.map(\.number) == [2])
    }

    @Test func killOldDelayAddsToTheSettle() {
        var h = Harness {
            $0.settle = .zero
            $0.killOldDelay = .seconds(2)
        }
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        h.advance(2)
        h.send(.restartRequested(nil))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.send(.notified(pid: 2000, message: ready()))
        #expect(signals(h.advance(1.9)).isEmpty)
        #expect(signals(h.advance(0.1)) == [.signal(pid: 1000, signal: SIGTERM)])
    }

    @Test func zeroSettleRetiresAtOnce() {
        var h = Harness { $0.settle = .zero }
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        #expect(h.phase(of: 1) == .serving)
        h.send(.restartRequested(nil))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let actions = h.send(.notified(pid: 2000, message: ready()))
        #expect(signals(actions) == [.signal(pid: 1000, signal: SIGTERM)])
    }

    @Test func aBrokenNewGenerationLeavesTheOldOneServingAndIsNotRetried() {
        var h = Harness()
        h.startServing()
        h.send(.restartRequested(1))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.advance(0.2)
        let actions = h.send(.childExited(pid: 2000, status: .exited(1)))
        #expect(signals(actions) == [.signalGroup(pgid: 2000, signal: SIGKILL)])
        let done = outcomes(actions)
        #expect(done.count == 1)
        if case .failed(let gen, let reason) = done[0].1 {
            #expect(gen == 2)
            #expect(reason.contains("exit code 1"))
        } else {
            Issue.record("expected failure")
        }
        #expect(h.machine.serving?.pid == 1000)
        #expect(!actions.contains { if case .spawn = $0 { return true } else { return false } })
        #expect(h.machine.nextDeadline == nil)
    }

    @Test func aGenerationThatDiesWhileSettlingIsAFailedRestart() {
        var h = Harness()
        h.startServing()
        h.send(.restartRequested(nil))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.advance(0.5)
        let actions = h.send(.childExited(pid: 2000, status: .signaled(SIGSEGV)))
        #expect(signals(actions) == [.signalGroup(pgid: 2000, signal: SIGKILL)])
        #expect(h.machine.serving?.pid == 1000)
        #expect(h.phase(of: 1) == .serving)
    }

    @Test func aHungGenerationIsStoppedAtTheReadyDeadline() {
        var h = Harness {
            $0.readiness = .notify
            $0.readyTimeout = .seconds(5)
        }
        h.startServing()
        h.send(.restartRequested(3))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        #expect(h.advance(4.9).isEmpty)
        let actions = h.advance(0.1)
        #expect(signals(actions) == [.signalGroup(pgid: 2000, signal: SIGTERM)])
        #expect(outcomes(actions).first?.0 == [3])
        #expect(h.phase(of: 2) == .failing)
        let kill = h.advance(5)
        #expect(signals(kill) == [.signalGroup(pgid: 2000, signal: SIGKILL)])
        h.send(.childExited(pid: 2000, status: .signaled(SIGKILL)))
        #expect(h.machine.generations.map(\.number) == [1])
    }

    @Test func anOldGenerationThatIgnoresItsSignalIsKilledAtTheDrainDeadline() {
        var h = Harness { $0.drainTimeout = .seconds(3) }
        h.startServing()
        h.send(.restartRequested(nil))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.advance(1)
        #expect(h.phase(of: 1) == .draining)
        #expect(signals(h.advance(2.9)).isEmpty)
        #expect(signals(h.advance(0.1)) == [.signalGroup(pgid: 1000, signal: SIGKILL)])
        #expect(h.phase(of: 1) == .killed)
    }

    @Test func aCrashedServingGenerationComesBackWithBackoff() {
        var h = Harness()
        h.startServing()
        var actions = h.send(.childExited(pid: 1000, status: .signaled(SIGKILL)))
        #expect(h.machine.respawnAt == h.now + .milliseconds(100))
        actions = h.advance(0.1)
        #expect(actions.contains(.spawn(generation: 2)))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        // It crashes at boot: the next try waits twice as long.
        h.advance(0.1)
        h.send(.childExited(pid: 2000, status: .exited(1)))
        #expect(h.machine.respawnAt == h.now + .milliseconds(200))
        h.advance(0.2)
        h.send(.spawned(generation: 3, pid: 3000, releaseDir: "/r"))
        h.send(.notified(pid: 3000, message: ready()))
        h.advance(1)
        #expect(h.machine.serving?.pid == 3000)
        // After a stable minute, the backoff starts again from the beginning.
        h.advance(61)
        h.send(.childExited(pid: 3000, status: .exited(2)))
        #expect(h.machine.respawnAt == h.now + .milliseconds(100))
    }

    @Test func theBackoffIsCapped() {
        var h = Harness { $0.backoffMax = .seconds(1) }
        h.startServing()
        h.send(.childExited(pid: 1000, status: .exited(1)))
        var pid: Int32 = 2000
        for _ in 0..<10 {
            let wait = h.machine.respawnAt! - h.now
            #expect(wait <= .seconds(1))
            h.now = h.machine.respawnAt!
            let actions = h.send(.tick)
            guard case .spawn(let number)? = actions.first(where: { if case .spawn = $0 { true } else { false } }) else {
                Issue.record("expected a spawn")
                return
            }
            h.send(.spawned(generation: number, pid: pid, releaseDir: "/r"))
            h.send(.childExited(pid: pid, status: .exited(1)))
            pid += 1
        }
        #expect(h.machine.respawnAt! - h.now == .seconds(1))
    }

    @Test func restartsDuringARestartCoalesceIntoOneMore() {
        var h = Harness { $0.settle = .zero }
        h.startServing()
        h.send(.restartRequested(1))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        for id in 2...50 { #expect(h.send(.restartRequested(id)).allSatisfy { if case .spawn = $0 { false } else { true } }) }
        let actions = h.send(.notified(pid: 2000, message: ready()))
        let done = outcomes(actions)
        #expect(done.first?.0 == [1])
        #expect(actions.contains(.spawn(generation: 3)))
        h.send(.spawned(generation: 3, pid: 3000, releaseDir: "/r"))
        let second = h.send(.notified(pid: 3000, message: ready()))
        #expect(outcomes(second).first?.0 == Array(2...50))
        #expect(!second.contains { if case .spawn = $0 { return true } else { return false } })
        #expect(h.machine.lastGeneration == 3)
    }

    @Test func stopSignalsEveryGenerationAndExitsWhenAllAreGone() {
        var h = Harness { $0.signalOnTerm = SIGINT }
        h.startServing()
        h.send(.restartRequested(5))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let actions = h.send(.stopRequested(9))
        #expect(Set(signals(actions).map { "\($0)" }) == ["signal(pid: 1000, signal: 2)", "signal(pid: 2000, signal: 2)"])
        #expect(outcomes(actions).first?.0 == [5])
        // The restart in flight is not a failed generation: it was cut short.
        #expect(
            outcomes(actions).first?.1
                == .rejected(reason: "the supervisor is stopping; generation 2 was stopped before it was ready"))
        // A restart during the stop is refused.
        let refused = h.send(.restartRequested(6))
        #expect(outcomes(refused).first?.1 == .rejected(reason: "the supervisor is stopping"))
        h.send(.childExited(pid: 2000, status: .exited(0)))
        let last = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(last.last == .exit(code: 0, requests: [9]))
        #expect(h.machine.phase == .stopped)
    }

    @Test func stopKillsWhatOutlivesTheDrainDeadline() {
        var h = Harness { $0.drainTimeout = .seconds(2) }
        h.startServing()
        h.send(.stopRequested(nil))
        #expect(signals(h.advance(2)) == [.signalGroup(pgid: 1000, signal: SIGKILL)])
        #expect(h.send(.childExited(pid: 1000, status: .signaled(SIGKILL))).last == .exit(code: 0, requests: []))
    }

    @Test func theFirstGenerationFailingStopsTheSupervisor() {
        var h = Harness()
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        let actions = h.send(.childExited(pid: 1000, status: .exited(127)))
        #expect(actions.last == .exit(code: BatonError.Code.startFailed.exitCode, requests: []))
    }

    @Test func theFirstGenerationFailingRetriesWhenAsked() {
        var h = Harness { $0.exitWhenFirstFails = false }
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.childExited(pid: 1000, status: .exited(1)))
        #expect(h.machine.respawnAt != nil)
        #expect(h.machine.phase == .running)
    }

    @Test func aSpawnFailureIsAFailedRestart() {
        var h = Harness()
        h.startServing()
        h.send(.restartRequested(4))
        let actions = h.send(.spawnFailed(generation: 2, reason: "--dir /x: No such file or directory"))
        #expect(outcomes(actions).first?.0 == [4])
        #expect(h.machine.serving?.pid == 1000)
        #expect(h.machine.attempt == nil)
    }

    @Test func readinessFromAnotherProcessIsIgnored() {
        var h = Harness { $0.readiness = .notify }
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1001, message: ready()))
        h.send(.notified(pid: 0, message: ready()))
        #expect(h.phase(of: 1) == .starting)
        h.send(.notified(pid: 1000, message: NotifyMessage(parsing: Array("garbage".utf8))))
        #expect(h.phase(of: 1) == .starting)
    }

    @Test func aliveReadinessCountsAfterTheInterval() {
        var h = Harness { $0.readiness = .alive(.seconds(2)) }
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        #expect(h.phase(of: 1) == .starting)
        h.advance(2)
        #expect(h.phase(of: 1) == .settling)
    }

    @Test func autoReadinessTakesWhicheverComesFirst() {
        var h = Harness()
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.advance(1)
        #expect(h.phase(of: 1) == .settling)
    }

    @Test func orphansAreIgnored() {
        var h = Harness()
        h.startServing()
        #expect(h.send(.childExited(pid: 4242, status: .exited(0))).isEmpty)
    }
}

@Suite struct NotifyMessageTests {
    @Test func parsesKnownKeys() {
        let m = NotifyMessage(parsing: Array("READY=1\nSTATUS=warming up\nERRNO=2\n".utf8))
        #expect(m.ready && m.status == "warming up" && m.errno == 2 && m.isWellFormed)
    }

    @Test func garbageIsMalformed() {
        #expect(!NotifyMessage(parsing: Array("hello".utf8)).isWellFormed)
        #expect(!NotifyMessage(parsing: [0xff, 0xfe]).isWellFormed)
        #expect(!NotifyMessage(parsing: []).isWellFormed)
        #expect(!NotifyMessage(parsing: Array("READY=1".utf8) + [0xff]).ready)
    }
}

@Suite struct HealthProbeStateMachineTests {
    func passed(_ status: Int = 200) -> ProbeResult { ProbeResult(status: status, detail: "OK", latency: .milliseconds(3), passed: true) }
    func failed(_ status: Int = 500) -> ProbeResult {
        ProbeResult(status: status, detail: "Oops", latency: .milliseconds(3), passed: false)
    }

    /// Brings generation 1 up through its probe.
    func serve(_ h: inout Harness) {
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        h.advance(0)
        h.send(.probeFinished(generation: 1, result: passed()))
        h.advance(1)
    }

    @Test func aGenerationIsReadyOnlyOnceItsProbePasses() {
        var h = Harness {
            $0.health = HealthCheck(path: "/health")
            $0.settle = .zero
        }
        serve(&h)
        h.send(.restartRequested(1))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let said = h.send(.notified(pid: 2000, message: ready()))
        #expect(h.phase(of: 2) == .probing)
        #expect(signals(said).isEmpty)
        #expect(h.advance(0).contains(.probe(generation: 2)))
        #expect(h.machine.nextDeadline == h.machine.generations.last?.deadline, "no probe is due while one is under way")
        h.send(.probeFinished(generation: 2, result: failed()))
        #expect(h.phase(of: 2) == .probing)
        #expect(h.advance(0.2).contains(.probe(generation: 2)))
        let ok = h.send(.probeFinished(generation: 2, result: passed()))
        #expect(
            signals(ok)
                == [.closeDoor(generation: 1), .signal(pid: 1000, signal: SIGTERM)].filter { if case .signal = $0 { true } else { false } })
        #expect(h.phase(of: 2) == .serving)
        #expect(outcomes(ok).first?.0 == [1])
    }

    @Test func aGenerationWhoseProbeNeverPassesFailsWithTheLastAnswer() {
        var h = Harness {
            $0.health = HealthCheck(path: "/health")
            $0.readyTimeout = .seconds(2)
        }
        serve(&h)
        h.send(.restartRequested(1))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.send(.notified(pid: 2000, message: ready()))
        h.advance(0)
        h.send(.probeFinished(generation: 2, result: failed()))
        let end = h.advance(2)
        guard case .failed(_, let reason)? = outcomes(end).first?.1 else {
            Issue.record("expected a failed restart")
            return
        }
        #expect(reason.contains("500 Oops"))
        #expect(h.machine.serving?.pid == 1000)
    }

    @Test func aServingGenerationFailingItsProbesIsReplaced() {
        var h = Harness {
            var health = HealthCheck(path: "/health")
            health.every = .seconds(1)
            health.failuresBeforeRestart = 2
            $0.health = health
            $0.settle = .zero
        }
        h.send(.start)
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        h.advance(0)
        h.send(.probeFinished(generation: 1, result: passed()))
        #expect(h.phase(of: 1) == .serving)
        #expect(h.advance(1).contains(.probe(generation: 1)))
        #expect(!h.send(.probeFinished(generation: 1, result: failed(503))).contains(.spawn(generation: 2)))
        #expect(h.advance(1).contains(.probe(generation: 1)))
        #expect(h.send(.probeFinished(generation: 1, result: failed(503))).contains(.spawn(generation: 2)))
    }
}
