import BatonControl
import BatonCore
import BatonProtocol
import Testing

@Suite struct HandOverTests {
    /// A machine with one steered listener whose generation 2 serves after a restart.
    func servingMachine() -> (SupervisorStateMachine, Instant) {
        var policy = SupervisorPolicy()
        policy.readiness = .alive(.seconds(1))
        var m = SupervisorStateMachine(policy: policy, listeners: [.steered, .renamed])
        var now = Instant(nanoseconds: 123_456_789_012_345_678)
        _ = m.handle(.start(report: nil), now: now)
        _ = m.handle(.spawned(generation: 1, pid: 1001, releaseDir: "/srv/r1"), now: now)
        _ = m.handle(.notified(pid: 1001, message: NotifyMessage(parsing: Array("STATUS=warming up".utf8))), now: now)
        now = now + .seconds(1)
        _ = m.handle(.tick, now: now)
        now = now + .seconds(1)
        _ = m.handle(.tick, now: now)
        // Its probation (by default 5 s) passes: the machine is quiet.
        now = now + .seconds(5)
        _ = m.handle(.tick, now: now)
        return (m, now)
    }

    @Test func aSnapshotRoundTripsThroughItsText() throws {
        let (m, _) = servingMachine()
        let snapshot = try #require(m.snapshot)
        #expect(snapshot.generations.map(\.number) == [1])
        #expect(snapshot.generations.first?.status == "warming up")
        #expect(snapshot.generations.first?.readyAt != nil)
        let state = HandOverState(machine: snapshot, shell: .object(["fds": .array([.int(100)])]))
        let text = state.json.text
        let read = try HandOverState(json: try #require(JSON(parsing: text)))
        #expect(read == state)
        let restored = SupervisorStateMachine(restoring: read.machine, policy: m.policy)
        #expect(restored.snapshot == snapshot)
    }

    @Test func anotherVersionIsRefusedByName() throws {
        let (m, _) = servingMachine()
        var j = HandOverState(machine: try #require(m.snapshot), shell: .null).json
        if case .object(var o) = j {
            o["baton_state"] = .int(HandOverState.version + 1)
            j = .object(o)
        }
        #expect(throws: BatonError.self) { try HandOverState(json: j) }
        do throws(BatonError) {
            _ = try HandOverState(json: j)
        } catch {
            #expect(error.message.contains("version \(HandOverState.version + 1) is not understood"))
            #expect(error.code == .upgradeFailed)
        }
        #expect(throws: BatonError.self) { try HandOverState(json: .object(["x": .int(1)])) }
    }

    @Test func aMachineUnderWayHasNoSnapshot() {
        var (m, now) = servingMachine()
        _ = m.handle(.restartRequested(nil), now: now)
        #expect(m.snapshot == nil)
        #expect(!m.isQuiet)
        _ = m.handle(.reexecRequested(4), now: now)
        #expect(m.reexecPending == 4)
        now = now + .seconds(1)
        _ = m.handle(.tick, now: now)
        #expect(m.reexecPending == 4, "still starting: the re-exec waits")
    }

    /// What readiness, probation and crash loops learned survives a re-exec.
    @Test func theCrashLoopAndWhatTheAppSendsRoundTrip() throws {
        var policy = SupervisorPolicy()
        policy.probation = .seconds(1)
        var m = SupervisorStateMachine(policy: policy, listeners: [.shared])
        var now = Instant(nanoseconds: 5_000_000_000)
        let ready = NotifyMessage(parsing: Array("READY=1".utf8))
        _ = m.handle(.start(report: nil), now: now)
        _ = m.handle(.spawned(generation: 1, pid: 1001, releaseDir: "/srv/r1"), now: now)
        _ = m.handle(.notified(pid: 1001, message: ready), now: now)
        now = now + .seconds(2)
        _ = m.handle(.tick, now: now)
        // Generation 2 (release r2) takes over; generation 1 is retired and served stably.
        _ = m.handle(.restartRequested(nil), now: now)
        _ = m.handle(.spawned(generation: 2, pid: 1002, releaseDir: "/srv/r2"), now: now)
        _ = m.handle(.notified(pid: 1002, message: ready), now: now)
        now = now + .seconds(2)
        _ = m.handle(.tick, now: now)
        _ = m.handle(.childExited(pid: 1001, status: .exited(0)), now: now)
        // r2 dies 3 s after it got ready, and again: two deaths in a row.
        var pid: Int32 = 1002
        for n in 3...4 {
            now = now + .seconds(1)
            _ = m.handle(.childExited(pid: pid, status: .exited(1)), now: now)
            now = now + .seconds(30)
            _ = m.handle(.tick, now: now)
            pid = Int32(1000 + n)
            _ = m.handle(.spawned(generation: n, pid: pid, releaseDir: "/srv/r2"), now: now)
            _ = m.handle(.notified(pid: pid, message: ready), now: now)
            now = now + .seconds(2)
            _ = m.handle(.tick, now: now)
        }
        let snapshot = try #require(m.snapshot, "not quiet: \(m.generations)")
        #expect(snapshot.appSendsReady)
        #expect(snapshot.crashLoop?.deaths == 2 && snapshot.crashLoop?.releaseDir == "/srv/r2")
        #expect(snapshot.stableRelease == "/srv/r1")
        let text = HandOverState(machine: snapshot, shell: .null).json.text
        let read = try HandOverState(json: try #require(JSON(parsing: text)))
        #expect(read.machine == snapshot)
    }
}
