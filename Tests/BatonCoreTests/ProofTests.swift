import BatonCore
import BatonProtocol
import Glibc
import Testing

/// Readiness as proof, with the policy as shipped: a generation with a
/// socket of its own is ready only once it took a probe connection from it.
@Suite struct ProofTests {
    func proofConnects(_ actions: [SupervisorAction]) -> [(Int, SocketID, ProofSteer?)] {
        actions.compactMap {
            if case .connectProof(let g, let s, let steer) = $0 { return (g, s, steer) }
            return nil
        }
    }

    func readings(_ actions: [SupervisorAction]) -> [[SocketID]] {
        actions.compactMap {
            if case .readProofQueues(_, let s) = $0 { return s }
            return nil
        }
    }

    /// A machine with one steered listener whose generation 1 serves.
    func serving() -> Harness {
        var h = Harness(listeners: [.steered], defaults: true)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.prove(1)
        h.advance(5)
        #expect(h.state(of: 1) == "serving")
        return h
    }

    @Test func theFirstGenerationIsProvedOnItsOwnSocketDirectly() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.start()
        let spawned = h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        // Its socket is the only one in the group: no program needed to reach it.
        let connects = proofConnects(spawned)
        #expect(connects.count == 1 && connects[0].0 == 1 && connects[0].1 == 0 && connects[0].2 == nil)
        #expect(h.state(of: 1) == "starting")
        // Alive for a long time proves nothing.
        h.advance(10)
        #expect(h.state(of: 1) == "starting")
        let read = h.send(.proofConnected(generation: 1, socket: 0, failure: nil))
        #expect(readings(read) == [[0]])
        h.send(.proofQueues(generation: 1, lengths: [0: 1]))
        #expect(h.state(of: 1) == "starting")
        h.advance(0.01)
        let took = h.send(.proofQueues(generation: 1, lengths: [0: 0]))
        #expect(took.contains(.dropProof(generation: 1)))
        #expect(reports(took).contains { $0.kind == .proven })
        #expect(h.state(of: 1) == "probation")
    }

    @Test func anEmptyFirstReadingDoesNotCountTheConnectionMightNotBeQueuedYet() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.send(.proofConnected(generation: 1, socket: 0, failure: nil))
        h.send(.proofQueues(generation: 1, lengths: [0: 0]))
        #expect(h.state(of: 1) == "starting")
        // The next reading is due one interval later.
        #expect(h.machine.nextDeadline == h.now + .milliseconds(10))
        #expect(readings(h.advance(0.01)) == [[0]])
        h.send(.proofQueues(generation: 1, lengths: [0: 1]))
        h.advance(0.01)
        h.send(.proofQueues(generation: 1, lengths: [0: 0]))
        #expect(h.state(of: 1) == "probation")
    }

    @Test func anAnsweredProofConnectionProvesIt() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.send(.proofConnected(generation: 1, socket: 0, failure: nil))
        let took = h.send(.proofAnswered(generation: 1, socket: 0))
        #expect(h.state(of: 1) == "probation")
        #expect(reports(took).contains { $0.kind == .proven && $0.message.contains("answered a probe connection") })
    }

    @Test func aRestartsProofGoesThroughAProgramThatSendsOnlyItToTheNewSocket() {
        var h = serving()
        h.restart(1)
        let spawned = h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        let connects = proofConnects(spawned)
        #expect(connects.count == 1)
        // The group is [socket 0 (serving, slot 0), socket 1 (new, slot 1)].
        #expect(connects.first?.2 == ProofSteer(listener: 0, via: 0, probeIndex: 1, otherIndex: 0))
        // READY=1 alone does not make it ready.
        h.send(.notified(pid: 2000, message: ready()))
        #expect(h.state(of: 2) == "starting")
        h.prove(2)
        #expect(h.state(of: 2) == "probation")
        #expect(h.state(of: 1) == "reserve")
    }

    @Test func aProofConnectionThatCannotBeMadeIsTriedAgain() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        let failed = h.send(.proofConnected(generation: 1, socket: 0, failure: "connect: Resource temporarily unavailable"))
        #expect(reports(failed).contains { $0.message.contains("trying again") })
        #expect(proofConnects(h.advance(0.1)).isEmpty)
        #expect(proofConnects(h.advance(0.1)).count == 1)
    }

    /// A loopback that refuses (a firewall, an address family the machine
    /// lacks): after five tries it is judged as one without a socket of its own.
    @Test func aSocketThatCannotBeReachedAtAllIsGivenUpOn() {
        var h = Harness(listeners: [.steered], defaults: true)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        var out: [SupervisorAction] = []
        for _ in 0..<5 {
            out = h.send(.proofConnected(generation: 1, socket: 0, failure: "connect: Network is unreachable"))
            h.advance(0.2)
        }
        #expect(reports(out).contains { $0.message.hasPrefix("cannot reach a socket of its own") })
        #expect(h.machine.generation(1)?.needsProof == false)
        // Alive 1 s since its spawn: ready.
        #expect(h.state(of: 1) == "probation")
    }

    @Test func aGenerationThatNeverAcceptsFailsAtTheReadyTimeoutSayingSo() {
        var h = serving()
        h.restart(4)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        h.send(.proofConnected(generation: 2, socket: 1, failure: nil))
        h.send(.proofQueues(generation: 2, lengths: [1: 1]))
        let end = h.advance(60)
        #expect(h.state(of: 2) == "failing")
        #expect(end.contains(.dropProof(generation: 2)))
        let answer = answers(end).first { $0.0 == 4 }?.1
        #expect(answer?.code == .generationFailed)
        #expect(answer?.message.contains("never took a probe connection") == true)
        #expect(h.state(of: 1) == "serving")
    }

    @Test func onceTheAppSentReadyLaterGenerationsMustSendItToo() {
        var h = serving()
        #expect(!h.machine.appSendsReady)
        // Generation 1 proved without READY=1; generation 2 sends it.
        h.restart(1)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        #expect(h.machine.appSendsReady)
        h.prove(2)
        h.advance(5)
        h.send(.childExited(pid: 1000, status: .exited(0)))
        // Generation 3 accepts but has said nothing yet: not ready.
        h.restart(2)
        h.send(.spawned(generation: 3, pid: 3000, releaseDir: "/r3"))
        h.prove(3)
        #expect(h.state(of: 3) == "starting")
        h.send(.notified(pid: 3000, message: ready()))
        #expect(h.state(of: 3) == "probation")
    }

    @Test func withoutASocketOfItsOwnReadyOrTheClockCounts() {
        var h = Harness(listeners: [.shared], defaults: true)
        h.start()
        let spawned = h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        #expect(proofConnects(spawned).isEmpty)
        #expect(h.machine.generation(1)?.needsProof == false)
        h.advance(1)
        #expect(h.state(of: 1) == "probation")
    }

    @Test func theClockIsAGuessThatNeedsNoProof() {
        var h = Harness(listeners: [.steered], defaults: true) { $0.readiness = .alive(.seconds(1)) }
        h.start()
        #expect(proofConnects(h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))).isEmpty)
        h.advance(1)
        #expect(h.state(of: 1) == "probation")
    }

    /// `start_server --interval`: proved, and alive that long.
    @Test func aMinimumAliveHoldsAProvedGenerationBack() {
        var h = Harness(listeners: [.steered], defaults: true) { $0.minimumAlive = .seconds(1) }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.prove(1)
        #expect(h.state(of: 1) == "starting")
        h.advance(0.5)
        #expect(h.state(of: 1) == "starting")
        h.advance(0.5)
        #expect(h.state(of: 1) == "probation")
    }

    @Test func aUnixListenerIsProvedOnItsOwnSocketToo() {
        var h = Harness(listeners: [.renamed], defaults: true)
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r1"))
        h.prove(1)
        h.advance(5)
        h.restart(1)
        let spawned = h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r1"))
        let connect = proofConnects(spawned)
        // Its socket is at a path of its own until it takes over: no program needed.
        #expect(connect.count == 1 && connect[0].1 != 0 && connect[0].2 == nil)
        let took = h.prove(2)
        #expect(took.contains(.publish(connect[0].1)))
    }

    /// A prefork master whose app cannot load: it lives, its workers die
    /// and are forked again, nothing ever accepts. Failed in seconds, not at
    /// the ready timeout.
    @Test func aMasterWhoseWorkersKeepDyingFailsBeforeTheReadyTimeout() {
        var h = serving()
        h.restart(3)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.send(.notified(pid: 2000, message: ready()))
        var out: [SupervisorAction] = []
        var next: Int32 = 2001
        for _ in 0..<80 where h.state(of: 2) == "starting" {
            out = h.advance(0.05)
            if out.contains(.readWorkers(generation: 2, pid: 2000)) {
                // Two workers each reading, both new: the two before died.
                out += h.send(.workersRead(generation: 2, pids: [next, next + 1]))
                next += 2
            }
        }
        #expect(h.state(of: 2) == "failing")
        let answer = answers(out).first { $0.0 == 3 }?.1
        #expect(answer?.code == .generationFailed)
        #expect(answer?.message.contains("worker processes keep dying") == true)
        // About 2 s after the first death, far before the 60 s timeout.
        #expect(h.now - Instant.seconds(105) < .seconds(3))
    }

    /// Workers that come and go once while it boots (a pool closed) are no crash loop.
    @Test func aBurstOfWorkerExitsAtBootIsNoCrashLoop() {
        var h = serving()
        h.restart(3)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r2"))
        h.advance(0.05)
        h.send(.workersRead(generation: 2, pids: Array(2001...2010)))
        h.advance(0.05)
        h.send(.workersRead(generation: 2, pids: []))
        for _ in 0..<40 {
            h.advance(0.05)
            h.send(.workersRead(generation: 2, pids: [2011]))
        }
        #expect(h.state(of: 2) == "starting")
        #expect(h.machine.generation(2)?.workerExits == 10)
        h.prove(2)
        #expect(h.state(of: 2) == "probation")
    }
}
