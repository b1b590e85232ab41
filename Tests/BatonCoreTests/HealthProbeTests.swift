import BatonCore
import Glibc
import Testing

func probes(_ actions: [SupervisorAction]) -> [Int] {
    actions.compactMap {
        if case .probe(let n, _) = $0 { return n }
        return nil
    }
}

@Suite struct HealthProbeStateMachineTests {
    func passed(_ status: Int = 200) -> ProbeResult { ProbeResult(status: status, detail: "OK", latency: .milliseconds(3), passed: true) }
    func failed(_ status: Int = 500) -> ProbeResult {
        ProbeResult(status: status, detail: "Oops", latency: .milliseconds(3), passed: false)
    }

    /// Brings generation 1 up through its probe.
    func serve(_ h: inout Harness) {
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        h.advance(0)
        h.send(.probeFinished(generation: 1, result: passed()))
        h.advance(1)
    }

    @Test func eachGenerationGetsAPrivateHealthListenerLast() {
        var h = Harness(listeners: [.shared]) { $0.health = HealthCheck(path: "/health") }
        let start = h.start()
        guard case .spawn(1, let sockets, let open, _)? = start.first(where: { if case .spawn = $0 { true } else { false } }) else {
            Issue.record("no spawn")
            return
        }
        #expect(sockets.count == 2 && sockets[0] == 0)
        #expect(open.map(\.listener) == [nil])
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        #expect(h.machine.generation(1)?.healthSocket == sockets[1])
        // Gone: its health listener is closed.
        let exit = h.send(.childExited(pid: 1000, status: .exited(1)))
        #expect(exit.contains(.close([sockets[1]])))
    }

    @Test func aGenerationIsReadyOnlyOnceItsProbePasses() {
        var h = Harness {
            $0.health = HealthCheck(path: "/health")
            $0.settle = .zero
        }
        serve(&h)
        h.restart(1)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        let said = h.send(.notified(pid: 2000, message: ready()))
        #expect(h.state(of: 2) == "probing")
        #expect(signals(said).isEmpty)
        #expect(probes(h.advance(0)) == [2])
        h.send(.probeFinished(generation: 2, result: failed()))
        #expect(h.state(of: 2) == "probing")
        #expect(probes(h.advance(0.2)) == [2])
        let ok = h.send(.probeFinished(generation: 2, result: passed()))
        #expect(signals(ok) == [.signal(pid: 1000, signal: SIGTERM)])
        #expect(h.state(of: 2) == "serving")
        let gone = h.send(.childExited(pid: 1000, status: .exited(0)))
        #expect(answers(gone).first?.0 == 1)
    }

    @Test func aProbeWithoutAnAnswerIsAbortedAtItsDeadline() {
        var h = Harness {
            var health = HealthCheck(path: "/health")
            health.timeout = .seconds(2)
            $0.health = health
        }
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        #expect(probes(h.advance(0)) == [1])
        #expect(h.advance(1.9).isEmpty)
        #expect(h.advance(0.1).contains(.abortProbe(generation: 1)))
    }

    @Test func aGenerationWhoseProbeNeverPassesFailsWithTheLastAnswer() {
        var h = Harness {
            $0.health = HealthCheck(path: "/health")
            $0.readyTimeout = .seconds(2)
        }
        serve(&h)
        h.restart(1)
        h.send(.spawned(generation: 2, pid: 2000, releaseDir: "/r"))
        h.send(.notified(pid: 2000, message: ready()))
        h.advance(0)
        h.send(.probeFinished(generation: 2, result: failed()))
        let end = h.advance(2)
        let failure = answers(end).first?.1
        #expect(failure?.code == .generationFailed)
        #expect(failure?.message.contains("500 Oops") == true)
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
        h.start()
        h.send(.spawned(generation: 1, pid: 1000, releaseDir: "/r"))
        h.send(.notified(pid: 1000, message: ready()))
        h.advance(0)
        h.send(.probeFinished(generation: 1, result: passed()))
        #expect(h.state(of: 1) == "serving")
        #expect(probes(h.advance(1)) == [1])
        #expect(spawns(h.send(.probeFinished(generation: 1, result: failed(503)))).isEmpty)
        #expect(probes(h.advance(1)) == [1])
        #expect(spawns(h.send(.probeFinished(generation: 1, result: failed(503)))) == [2])
    }
}
