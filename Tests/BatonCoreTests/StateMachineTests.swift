import BatonCore
import BatonProtocol
import Glibc
import Testing

@Suite struct StateMachineTests {
    @Test func firstGenerationServesAfterReadyAndSettle() {
        var h = Harness()
        #expect(spawns(h.start()) == [1])
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        #expect(h.state(of: 1) == "starting")
        h.send(.notified(pid: 1000, message: ready()))
        #expect(h.state(of: 1) == "settling")
        #expect(h.machine.nextDeadline == h.now + .seconds(1))
        let actions = h.advance(1)
        #expect(h.state(of: 1) == "serving")
        #expect(actions.contains(.notifySystemd("READY=1\nSTATUS=serving generation 1 (pid 1000)")))
        // Nothing left to wait for: the shell sleeps until an event.
        #expect(h.machine.nextDeadline == nil)
    }

    @Test func restartRetiresTheOldGenerationOnlyAfterTheNewOneSettled() {
        var h = Harness { $0.signalOnHup = SIGQUIT }
        h.startServing()
        #expect(spawns(h.restart(7)) == [2])
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        #expect(h.state(of: 1) == "serving")
        #expect(h.state(of: 2) == "settling")
        let actions = h.advance(1)
        #expect(signals(actions) == [.signal(pid: 1000, signal: SIGQUIT)])
        #expect(h.state(of: 1) == "draining")
        #expect(h.state(of: 2) == "serving")
        // The answer waits for the old generation to exit.
        #expect(answers(actions).isEmpty)
        h.advance(0.5)
        let exit = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(reports(exit).contains { $0.kind == .drained })
        #expect(h.machine.generations.map(\.number) == [2])
        let done = answers(exit)
        #expect(done.count == 1 && done[0].0 == 7)
        #expect(done[0].1.code == nil && done[0].1.generation == 2 && done[0].1.pid == 2000 && done[0].1.retired == [1])
    }

    @Test func aRestartThatDoesNotWaitForTheDrainIsAnsweredAtTheTakeOver() {
        var h = Harness { $0.settle = .zero }
        h.startServing()
        h.restart(3, waitDrain: false)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        let actions = h.send(.notified(pid: 2000, message: ready()))
        #expect(answers(actions).map(\.0) == [3])
    }

    @Test func killOldDelayDelaysOnlyTheOldOnesSignal() {
        var h = Harness {
            $0.settle = .zero
            $0.killOldDelay = .seconds(2)
        }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        // The first generation is not delayed at all.
        h.send(.notified(pid: 1000, message: ready()))
        #expect(h.state(of: 1) == "serving")
        h.restart(1, waitDrain: false)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        // Nor is the new one's readiness: it serves, and the requester hears so, at once.
        let took = h.send(.notified(pid: 2000, message: ready()))
        #expect(h.state(of: 2) == "serving")
        #expect(answers(took).map(\.0) == [1])
        #expect(signals(h.advance(1.9)).isEmpty)
        #expect(signals(h.advance(0.1)) == [.signal(pid: 1000, signal: SIGTERM)])
    }

    /// As Server::Starter counts it: from the moment the serving generation
    /// took over, not from its spawn.
    @Test func anAutoRestartIsDueOneIntervalAfterTheTakeOver() {
        var h = Harness { $0.autoRestartInterval = .seconds(10) }
        h.startServing()
        #expect(h.state(of: 1) == "serving")
        #expect(h.machine.nextDeadline == h.now + .seconds(10))
        func spawnsTwo(_ actions: [SupervisorAction]) -> Bool {
            actions.contains { if case .spawn(2, _, _, _) = $0 { return true } else { return false } }
        }
        #expect(!spawnsTwo(h.advance(9.9)))
        #expect(spawnsTwo(h.advance(0.1)), "no auto-restart one interval after generation 1 took over")
    }

    @Test func theStatusFileListsEveryGenerationThatIsUp() {
        var h = Harness {
            $0.readiness = .alive(.seconds(1))
            $0.settle = .zero
            $0.killOldDelay = .seconds(3)
        }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        #expect(h.machine.statusEntries.isEmpty)
        h.advance(1)
        #expect(h.machine.statusEntries == [StatusEntry(generation: 1, pid: 1000)])
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.advance(1)
        #expect(h.machine.statusEntries == [StatusEntry(generation: 1, pid: 1000), StatusEntry(generation: 2, pid: 2000)])
        h.advance(3)
        h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(h.machine.statusEntries == [StatusEntry(generation: 2, pid: 2000)])
    }

    @Test func aBrokenNewGenerationLeavesTheOldOneServingAndIsNotRetried() {
        var h = Harness()
        h.startServing()
        h.restart(1)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.advance(0.2)
        let actions = h.send(.childExited(pid: 2000, status: .exited(1)))
        #expect(signals(actions) == [.signalGroup(pgid: 2000, signal: SIGKILL)])
        let done = answers(actions)
        #expect(done.count == 1)
        #expect(done.first?.1.code == .generationFailed)
        #expect(done.first?.1.message.contains("exited with exit code 1 before it was ready") == true)
        #expect(done.first?.1.message.contains("generation 1 (pid 1000) still serves") == true)
        #expect(h.machine.serving?.pid == 1000)
        #expect(spawns(actions).isEmpty)
        #expect(h.machine.nextDeadline == nil)
    }

    @Test func aGenerationThatDiesWhileSettlingIsAFailedRestart() {
        var h = Harness()
        h.startServing()
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.advance(0.5)
        let actions = h.send(.childExited(pid: 2000, status: .signaled(SIGSEGV)))
        #expect(signals(actions) == [.signalGroup(pgid: 2000, signal: SIGKILL)])
        #expect(reports(actions).contains { $0.message.contains("was killed by SIGSEGV while settling") })
        #expect(h.machine.serving?.pid == 1000)
    }

    @Test func aHungGenerationIsStoppedAtTheReadyDeadline() {
        var h = Harness {
            $0.readiness = .notify
            $0.readyTimeout = .seconds(5)
        }
        h.startServing()
        h.restart(3)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        // Nothing but a reading of its workers (it has none) until the deadline.
        #expect(h.advance(4.9) == [.readWorkers(generation: 2, pid: 2000)])
        let actions = h.advance(0.1)
        #expect(signals(actions) == [.signalGroup(pgid: 2000, signal: SIGTERM)])
        #expect(answers(actions).first?.0 == 3)
        #expect(h.state(of: 2) == "failing")
        let kill = h.advance(5)
        #expect(signals(kill) == [.signalGroup(pgid: 2000, signal: SIGKILL)])
        h.send(.childExited(pid: 2000, status: .signaled(SIGKILL)))
        #expect(h.machine.generations.map(\.number) == [1])
    }

    @Test func anOldGenerationThatIgnoresItsSignalIsKilledAtTheDrainDeadline() {
        var h = Harness { $0.drainTimeout = .seconds(3) }
        h.startServing()
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.advance(1)
        #expect(h.state(of: 1) == "draining")
        #expect(signals(h.advance(2.9)).isEmpty)
        #expect(signals(h.advance(0.1)) == [.signalGroup(pgid: 1000, signal: SIGKILL)])
        #expect(h.state(of: 1) == "killed")
    }

    @Test func aCrashedServingGenerationComesBackWithBackoff() {
        var h = Harness()
        h.startServing()
        h.send(.childExited(pid: 1000, status: .signaled(SIGKILL)))
        #expect(h.machine.respawnAt == h.now + .milliseconds(100))
        #expect(spawns(h.advance(0.1)) == [2])
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
            guard let number = spawns(h.send(.tick)).first else {
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
        h.restart(1, waitDrain: false)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        for id in 2...50 { #expect(spawns(h.restart(id, waitDrain: false)).isEmpty) }
        let actions = h.send(.notified(pid: 2000, message: ready()))
        #expect(answers(actions).map(\.0) == [1])
        #expect(spawns(actions) == [3])
        h.send(.spawned(generation: 3, pid: 3000, releaseDir: "/r"))
        let second = h.send(.notified(pid: 3000, message: ready()))
        #expect(answers(second).map(\.0) == Array(2...50))
        #expect(spawns(second).isEmpty)
        #expect(h.machine.lastGeneration == 3)
    }

    @Test func stopSignalsEveryGenerationAndExitsWhenAllAreGone() {
        var h = Harness { $0.signalOnTerm = SIGINT }
        h.startServing()
        h.restart(5)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let actions = h.send(.stopRequested(9))
        #expect(Set(signals(actions).map { "\($0)" }) == ["signal(pid: 1000, signal: 2)", "signal(pid: 2000, signal: 2)"])
        // The restart in flight is not a failed generation: it was cut short.
        let cut = answers(actions).first { $0.0 == 5 }?.1
        #expect(cut?.code == .busy)
        #expect(cut?.message == "restart refused: the supervisor is stopping; generation 2 was stopped before it was ready")
        // A restart during the stop is refused.
        #expect(answers(h.restart(6)).first?.1.code == .busy)
        h.send(.childExited(pid: 2000, status: .exited(0)))
        let last = h.send(.childExited(pid: 1000, status: .exited(0)))
        let exit = exits(last)
        #expect(exit.count == 1 && exit[0].0 == 0 && exit[0].1[9]?.code == nil)
        #expect(last.contains(.notifySystemd("STOPPING=1")))
        #expect(h.machine.phase == .stopped)
    }

    @Test func aStopDuringARetirementSignalsTheOldOneWithTheStopSignal() {
        var h = Harness {
            $0.settle = .zero
            $0.killOldDelay = .seconds(5)
            $0.signalOnHup = SIGQUIT
            $0.signalOnTerm = SIGINT
        }
        h.startServing()
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.send(.notified(pid: 2000, message: ready()))
        let stop = h.send(.stopRequested(nil))
        #expect(Set(signals(stop).map { "\($0)" }) == ["signal(pid: 1000, signal: 2)", "signal(pid: 2000, signal: 2)"])
    }

    @Test func stopKillsWhatOutlivesTheDrainDeadline() {
        var h = Harness { $0.drainTimeout = .seconds(2) }
        h.startServing()
        h.send(.stopRequested(nil))
        #expect(signals(h.advance(2)) == [.signalGroup(pgid: 1000, signal: SIGKILL)])
        #expect(exits(h.send(.childExited(pid: 1000, status: .signaled(SIGKILL)))).first?.0 == 0)
    }

    @Test func theFirstGenerationFailingStopsTheSupervisor() {
        var h = Harness()
        let start = h.send(.start(report: 42))
        #expect(spawns(start) == [1])
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        let actions = h.send(.childExited(pid: 1000, status: .exited(127)))
        #expect(answers(actions).first.map { $0.0 == 42 && $0.1.code == .startFailed } == true)
        #expect(exits(actions).first?.0 == BatonError.Code.startFailed.exitCode)
    }

    @Test func theFirstGenerationFailingRetriesWhenAsked() {
        var h = Harness { $0.exitWhenFirstFails = false }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.childExited(pid: 1000, status: .exited(1)))
        #expect(h.machine.respawnAt != nil)
        #expect(h.machine.phase == .running)
    }

    @Test func aSpawnFailureIsAFailedRestart() {
        var h = Harness()
        h.startServing()
        h.restart(4)
        let actions = h.send(.spawnFailed(generation: 2, reason: "--dir /x: No such file or directory"))
        #expect(answers(actions).first?.0 == 4)
        #expect(h.machine.serving?.pid == 1000)
        #expect(h.machine.attempt == nil)
    }

    @Test func readinessFromAnotherProcessIsIgnored() {
        var h = Harness { $0.readiness = .notify }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1001, message: ready()))
        h.send(.notified(pid: 0, message: ready()))
        #expect(h.state(of: 1) == "starting")
        h.send(.notified(pid: 1000, message: NotifyMessage(parsing: Array("garbage".utf8))))
        #expect(h.state(of: 1) == "starting")
    }

    @Test func aliveReadinessCountsAfterTheInterval() {
        var h = Harness { $0.readiness = .alive(.seconds(2)) }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        #expect(h.state(of: 1) == "starting")
        h.advance(2)
        #expect(h.state(of: 1) == "settling")
    }

    @Test func autoReadinessTakesWhicheverComesFirst() {
        var h = Harness()
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.advance(1)
        #expect(h.state(of: 1) == "settling")
    }

    @Test func orphansAreIgnored() {
        var h = Harness()
        h.startServing()
        #expect(h.send(.childExited(pid: 4242, status: .exited(0))).isEmpty)
    }

    @Test func systemdHearsOfRestarts() {
        var h = Harness { $0.settle = .zero }
        h.startServing()
        h.now = Instant(nanoseconds: 123_456_000_000)
        let begun = h.restart()
        #expect(begun.contains(.notifySystemd("RELOADING=1\nMONOTONIC_USEC=123456000\nSTATUS=restarting: starting generation 2")))
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.send(.childExited(pid: 2000, status: .exited(1)))
        // A failed restart still serves: systemd hears READY=1 again.
        #expect(h.machine.serving?.number == 1)
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

    @Test func theTextRoundTrips() {
        var m = NotifyMessage()
        m.ready = true
        m.status = "two\nlines"
        #expect(m.text == "READY=1\nSTATUS=two lines")
        #expect(NotifyMessage(parsing: Array(m.text.utf8)).status == "two lines")
    }
}
