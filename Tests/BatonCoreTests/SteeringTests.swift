import BatonCore
import Glibc
import Testing

/// The steering model against the kernel's rules, and the machine's socket
/// decisions: new connections always reach the serving generation.
@Suite struct ReuseportGroupTests {
    @Test func aLeavingSocketIsReplacedByTheLast() {
        var g = ReuseportGroup()
        for id in [10, 11, 12] { g.join(id) }
        g.leave(10)
        #expect(g.members == [12, 11])
        g.join(13)
        #expect(g.members == [12, 11, 13])
        g.leave(13)
        #expect(g.members == [12, 11])
    }

    @Test func leavingIsSafeWhenTheTargetKeepsItsSlotOrIsAlone() {
        var g = ReuseportGroup()
        for id in [1, 2, 3] { g.join(id) }
        g.target = 2
        #expect(g.canLeaveSafely(1))  // 3 moves into slot 0; 2 stays in slot 1
        #expect(g.canLeaveSafely(3))  // the last leaves: nothing moves
        g.target = 3
        #expect(!g.canLeaveSafely(1))  // 3 would move into slot 0 with 2 still there
        #expect(g.canLeaveSafely(2) == false)
        var two = ReuseportGroup()
        two.join(1)
        two.join(2)
        two.target = 2
        #expect(two.canLeaveSafely(1))  // 2 alone is left: an index out of range hashes over it alone
    }
}

@Suite struct SteeringStateMachineTests {
    /// One steered listener (socket 0, bound by the shell before the start).
    func harness(migration: Bool = false, window: Duration = .milliseconds(200)) -> Harness {
        Harness(listeners: [.steered]) {
            $0.settle = .zero
            $0.handshakeWindow = window
            $0.queueMigration = migration
            $0.queuePollInterval = .milliseconds(5)
        }
    }

    func spawnPlan(_ actions: [SupervisorAction]) -> (sockets: [SocketID], open: [SocketOpening])? {
        for a in actions { if case .spawn(_, let s, let o, _) = a { return (s, o) } }
        return nil
    }

    func steers(_ actions: [SupervisorAction]) -> [Int] {
        actions.compactMap { if case .steer(_, _, let index) = $0 { return index } else { return nil } }
    }

    @Test func theFirstGenerationTakesTheBoundSocketAndNeedsNoProgram() {
        var h = harness()
        let start = h.start()
        #expect(spawnPlan(start)?.sockets == [0])
        #expect(spawnPlan(start)?.open == [])
        #expect(steers(start).isEmpty)
    }

    @Test func aRestartPointsTheProgramAtTheServingSocketBeforeTheNewOneJoins() {
        var h = harness()
        h.startServing()
        let restart = h.restart(1)
        // The program is attached (slot 0, the serving socket) before the spawn opens socket 1.
        guard let steerAt = restart.firstIndex(where: { if case .steer(0, 0, 0) = $0 { true } else { false } }),
            let spawnAt = restart.firstIndex(where: { if case .spawn = $0 { true } else { false } })
        else {
            Issue.record("expected a steer before the spawn: \(restart)")
            return
        }
        #expect(steerAt < spawnAt)
        #expect(spawnPlan(restart)?.open.map(\.id) == [1])
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        // Ready: new connections go to slot 1; the old socket's queue is read before any signal.
        let ready = h.becomeReady(pid: 2000)
        #expect(steers(ready) == [1])
        #expect(ready.contains(.measureQueues(generation: 1, sockets: [0])))
        #expect(signals(ready).isEmpty)
        // Still 3 queued: read again 5 ms later.
        #expect(h.send(.queueMeasured(generation: 1, length: 3)).isEmpty)
        #expect(h.advance(0.005).contains(.measureQueues(generation: 1, sockets: [0])))
        // Empty: the handshake window, then one more reading, then the signal.
        let drained = h.send(.queueMeasured(generation: 1, length: 0))
        #expect(reports(drained).contains { $0.kind == .queueDrained && $0.message.contains("3 queued") })
        #expect(signals(drained).isEmpty)
        #expect(signals(h.advance(0.1)).isEmpty)
        #expect(h.advance(0.1).contains(.measureQueues(generation: 1, sockets: [0])))
        #expect(signals(h.send(.queueMeasured(generation: 1, length: 0))) == [.signal(pid: 1000, signal: SIGTERM)])
        // Gone: its socket leaves the group (the serving one is alone after it) and the program follows it to slot 0.
        let gone = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(gone.contains(.close([0])))
        #expect(steers(gone) == [0])
        #expect(h.machine.groups[0]?.members == [1])
        #expect(answers(gone).first?.0 == 1)
    }

    /// Generation 2 took over and generation 1's queue read empty: its
    /// first handshake window has begun.
    func retiringInItsFirstWindow() -> Harness {
        var h = harness()
        h.startServing()
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.becomeReady(pid: 2000)
        h.send(.queueMeasured(generation: 1, length: 0))
        return h
    }

    @Test func connectionsArrivingInTheWindowEarnAnotherWindowBeforeTheSignal() {
        var h = retiringInItsFirstWindow()
        #expect(h.advance(0.2).contains(.measureQueues(generation: 1, sockets: [0])))
        // Two handshakes begun before the switch landed in the window: they are
        // accepted, then a whole window more before the signal.
        let late = h.send(.queueMeasured(generation: 1, length: 2))
        #expect(signals(late).isEmpty)
        let emptied = h.send(.queueMeasured(generation: 1, length: 0))
        #expect(reports(emptied).contains { $0.message.contains("2 connection(s) begun before the switch") })
        #expect(signals(emptied).isEmpty)
        #expect(signals(h.advance(0.1)).isEmpty)
        #expect(h.advance(0.1).contains(.measureQueues(generation: 1, sockets: [0])))
        // A quiet window: the signal.
        #expect(signals(h.send(.queueMeasured(generation: 1, length: 0))) == [.signal(pid: 1000, signal: SIGTERM)])
    }

    @Test func lateHandshakesExtendTheWaitAtMostAFewWindows() {
        var h = retiringInItsFirstWindow()
        var windows = 0
        var signalled = false
        for _ in 0..<20 where !signalled {
            guard h.advance(0.2).contains(.measureQueues(generation: 1, sockets: [0])) else { break }
            windows += 1
            h.send(.queueMeasured(generation: 1, length: 1))
            signalled = !signals(h.send(.queueMeasured(generation: 1, length: 0))).isEmpty
        }
        #expect(signalled)
        #expect(windows == SupervisorStateMachine.maxHandshakeWindows)
    }

    @Test func withQueueMigrationTheDrainedSocketIsShutDownInsteadOfAWindow() {
        var h = harness(migration: true)
        h.startServing()
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.becomeReady(pid: 2000)
        let drained = h.send(.queueMeasured(generation: 1, length: 0))
        #expect(drained.contains(.shutDown([0])))
        #expect(h.machine.groups[0]?.members == [1])
        // The window for what it has just accepted, then the signal without another reading.
        #expect(signals(drained).isEmpty)
        #expect(signals(h.advance(0.2)) == [.signal(pid: 1000, signal: SIGTERM)])
        let gone = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(gone.contains(.close([0])))
    }

    @Test func aFailedGenerationsSocketIsClosedAndTheProgramStillPointsAtTheServingOne() {
        var h = harness()
        h.startServing()
        h.restart(1)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let failed = h.send(.childExited(pid: 2000, status: .exited(1)))
        #expect(failed.contains(.close([1])))
        #expect(steers(failed).isEmpty)
        #expect(h.machine.groups[0]?.members == [0])
        #expect(h.machine.groups[0]?.target == 0)
        #expect(h.machine.groups[0]?.attachedIndex == 0)
    }

    @Test func aCrashedServingSocketWithItsQueueGoesToTheNextGeneration() {
        var h = harness()
        h.startServing()
        h.send(.childExited(pid: 1000, status: .signaled(SIGKILL)))
        let respawn = h.advance(0.1)
        #expect(spawnPlan(respawn)?.sockets == [0])
        #expect(spawnPlan(respawn)?.open == [])
    }

    @Test func overlappingDrainsNeverMoveTheTargetWhileOthersRemain() {
        var h = harness()
        h.startServing()
        // Generation 1 drains slowly (it never exits) while two restarts go through.
        for (number, pid) in [(2, Int32(2000)), (3, 3000)] {
            h.restart()
            h.send(.spawned(generation: number, pid: pid, releaseDir: "/r"))
            h.becomeReady(pid: pid)
        }
        // [s0 gen 1, s1 gen 2, s2 gen 3]; gen 3 serves in the last slot.
        #expect(h.machine.groups[0]?.members == [0, 1, 2])
        #expect(h.machine.groups[0]?.target == 2)
        // Gen 2 exits first: closing its socket would move the target: it stays as a spare.
        let gone2 = h.send(.childExited(pid: 2000, status: .exited(0)))
        #expect(!gone2.contains { if case .close = $0 { true } else { false } })
        #expect(h.machine.groups[0]?.members == [0, 1, 2])
        // The next restart takes the spare instead of opening a socket.
        let restart = h.restart()
        #expect(spawnPlan(restart)?.open == [])
        #expect(spawnPlan(restart)?.sockets == [1])
    }

    @Test func aUnixListenerIsRenamedOverThePublicPathWhenTheNewOneTakesOver() {
        var h = Harness(listeners: [.renamed]) { $0.settle = .zero }
        h.startServing()
        let restart = h.restart()
        #expect(spawnPlan(restart)?.open.map(\.id) == [1])
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let ready = h.becomeReady(pid: 2000)
        #expect(ready.contains(.publish(1)))
        #expect(ready.contains(.measureQueues(generation: 1, sockets: [0])))
        h.send(.queueMeasured(generation: 1, length: 0))
        h.advance(0.2)
        h.send(.queueMeasured(generation: 1, length: 0))
        let gone = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(gone.contains(.close([0])))
    }

    @Test func aSharedListenerGoesToEveryGenerationAndNeedsNoQueueWait() {
        var h = Harness(listeners: [.shared]) { $0.settle = .zero }
        h.startServing()
        let restart = h.restart()
        #expect(spawnPlan(restart)?.sockets == [0])
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        #expect(signals(h.becomeReady(pid: 2000)) == [.signal(pid: 1000, signal: SIGTERM)])
    }

    @Test func aServingSocketShutDownByItsAppListensAgainAtTheEnd() {
        var h = harness()
        h.startServing()
        h.restart()
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        // [s0 serving, s1 starting]; the serving app shuts its socket down.
        let hung = h.send(.socketHungUp(0))
        #expect(hung.contains(.relisten(0)))
        #expect(h.machine.groups[0]?.members == [1, 0])
        #expect(steers(hung) == [1])
    }

    @Test func anAddedListenerGoesToTheNextGenerationAndARetiredOneClosesWithItsLast() {
        var h = Harness(listeners: [.steered, .shared]) {
            $0.settle = .zero
            $0.handshakeWindow = .milliseconds(10)
            $0.queuePollInterval = .milliseconds(5)
        }
        h.startServing()
        let added = h.machine.addListener(.shared)
        #expect(added == 2)
        // Generation 1 still holds listener 0: nothing closes yet.
        #expect(h.machine.retireListener(0) == [])
        #expect(h.machine.isListenerOpen(0))
        let restart = h.restart(1)
        // The next generation gets the shared listener and the added one, and no socket of the retired one.
        #expect(spawnPlan(restart)?.sockets == [1, 2])
        #expect(spawnPlan(restart)?.open == [])
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        var actions = h.becomeReady(pid: 2000)
        for _ in 0..<20 where signals(actions).isEmpty {
            actions = h.send(.queueMeasured(generation: 1, length: 0)) + h.advance(0.02)
        }
        #expect(signals(actions) == [.signal(pid: 1000, signal: SIGTERM)])
        let gone = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(gone.contains(.close([0])))
        #expect(!h.machine.isListenerOpen(0))
        #expect(h.machine.groups[0] == nil)
        // A crash-restart after it still leaves the retired listener out.
        #expect(h.machine.socketSet(of: 3) == [1, 2])
    }
}
