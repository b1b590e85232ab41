import BatonCore
import BatonProtocol
import Glibc
import Testing

@Suite struct ReexecTests {
    func reexecs(_ actions: [SupervisorAction]) -> [RequestID] {
        actions.compactMap {
            if case .reexec(let id) = $0 { return id }
            return nil
        }
    }

    @Test func aQuietMachineReexecsAtOnceAndLast() {
        var h = Harness(listeners: [.steered])
        h.startServing()
        #expect(h.machine.isQuiet)
        let actions = h.send(.reexecRequested(5))
        #expect(reexecs(actions) == [5])
        if case .reexec = actions.last {} else { Issue.record("the re-exec must be the last action: \(actions)") }
        #expect(actions.contains { if case .notifySystemd(let t) = $0 { return t.hasPrefix("RELOADING=1\n") } else { return false } })
        #expect(h.machine.reexecPending == nil)
    }

    @Test func aReexecWaitsForTheDrainAndHoldsTheRestartsAskedMeanwhile() {
        var h = Harness(listeners: [.steered])
        h.startServing()
        h.restart(1, waitDrain: false)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.prove(2)
        h.advance(1)
        #expect(h.state(of: 1) == "draining")
        #expect(!h.machine.isQuiet)
        #expect(reexecs(h.send(.reexecRequested(8))).isEmpty)
        // A HUP during the wait follows the re-exec, not before it.
        #expect(spawns(h.restart(nil)).isEmpty)
        #expect(h.machine.queued == [])
        h.advance(0.3)
        let exit = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(reexecs(exit) == [8])
        #expect(spawns(exit).isEmpty)
        // The new program takes over from the snapshot and begins the held restart.
        let snapshot = h.machine.snapshot!
        #expect(snapshot.queued == [])
        var restored = SupervisorStateMachine(restoring: snapshot, policy: h.machine.policy)
        #expect(restored.snapshot == snapshot)
        #expect(spawns(restored.handle(.reexecuted, now: h.now)) == [3])
    }

    @Test func aFailedReexecAnswersAndLetsTheHeldRestartGo() {
        var h = Harness(listeners: [.steered])
        h.startServing()
        #expect(reexecs(h.send(.reexecRequested(3))) == [3])
        let failed = h.send(.reexecFailed(3, reason: "the check failed"))
        #expect(answers(failed).map(\.0) == [3])
        #expect(answers(failed).first?.1.code == .upgradeFailed)
    }

    @Test func aStopCancelsAPendingReexec() {
        var h = Harness(listeners: [.steered])
        h.startServing()
        h.restart(1)
        #expect(reexecs(h.send(.reexecRequested(4))).isEmpty)
        let stop = h.send(.stopRequested(5))
        #expect(answers(stop).contains { $0.0 == 4 && $0.1.code == .busy })
        #expect(h.machine.reexecPending == nil)
    }

    @Test func aSecondReexecIsRefusedWhileOneWaits() {
        var h = Harness(listeners: [.steered])
        h.startServing()
        h.restart(1)
        h.send(.reexecRequested(4))
        let second = h.send(.reexecRequested(5))
        #expect(answers(second).map(\.0) == [5])
        #expect(answers(second).first?.1.code == .busy)
    }

    @Test func aRestoredMachineActsAsTheOriginal() {
        var h = Harness(listeners: [.steered, .renamed]) { $0.signalOnHup = SIGQUIT }
        h.startServing()
        h.restart(1, waitDrain: false)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.prove(2)
        h.advance(1)
        h.advance(1)
        h.send(.childExited(pid: 1000, status: .exited(0)))
        guard let snapshot = h.machine.snapshot else {
            Issue.record("not quiet: \(h.machine.generations)")
            return
        }
        var restored = SupervisorStateMachine(restoring: snapshot, policy: h.machine.policy)
        var original = h.machine
        for event: SupervisorEvent in [
            .restartRequested(RestartRequest(id: 9)), .spawned(generation: 3, pid: 3000, releaseDir: "/r3"),
            .notified(pid: 3000, message: ready()),
        ] {
            #expect(original.handle(event, now: h.now) == restored.handle(event, now: h.now))
        }
        let later = h.now + .seconds(1)
        #expect(original.handle(.tick, now: later) == restored.handle(.tick, now: later))
        #expect(original.generations == restored.generations)
        #expect(original.sockets == restored.sockets)
        #expect(original.groups == restored.groups)
    }
}
