// Health probes: a generation coming up is ready only once its probe
// passes; a serving one probed every `--health-every` is replaced after
// `--health-failures` failures in a row. Every probe has a machine deadline.
extension SupervisorStateMachine {
    /// A probe is due, or the one under way is late.
    mutating func probeTick(at i: Int, _ probe: ProbeSchedule, now: Instant, _ out: inout [SupervisorAction]) {
        guard let health = policy.health, probe.instant <= now else { return }
        let g = generations[i]
        switch probe {
        case .due:
            guard let socket = g.healthSocket else { return }
            setProbe(at: i, .running(deadline: now + health.timeout))
            out.append(.probe(generation: g.number, socket: socket))
        case .running:
            // The shell answers with what came so far.
            setProbe(at: i, .running(deadline: now + health.timeout))
            out.append(.abortProbe(generation: g.number))
        }
    }

    mutating func setProbe(at i: Int, _ probe: ProbeSchedule?) {
        switch generations[i].phase {
        case .probing(let readyBy, _): if let probe { generations[i].phase = .probing(readyBy: readyBy, probe: probe) }
        case .serving(_, let failures): generations[i].phase = .serving(probe: probe, failures: failures)
        default: break
        }
    }

    mutating func probeFinished(_ number: Int, _ result: ProbeResult, now: Instant, _ out: inout [SupervisorAction]) {
        guard let health = policy.health, let i = generations.firstIndex(where: { $0.number == number }) else { return }
        let previous = generations[i].lastProbe
        generations[i].lastProbe = result
        let g = generations[i]
        switch g.phase {
        case .probing(let readyBy, .running):
            if result.passed {
                out.append(.report(Reports.probePassed(g, result)))
                markReady(at: i, via: "health probe", now: now, &out)
            } else {
                // Each new answer is told once; the same one again is not.
                if previous?.status != result.status || previous?.detail != result.detail {
                    out.append(.report(Reports.probeFailed(g, result, retryingEvery: health.interval)))
                }
                generations[i].phase = .probing(readyBy: readyBy, probe: .due(now + health.interval))
            }
        case .serving(.running?, let failures):
            let onProbation = probation?.generation == number
            let every = onProbation ? (health.every ?? health.interval) : health.every
            let next = every.map { ProbeSchedule.due(now + $0) }
            if result.passed {
                generations[i].phase = .serving(probe: next, failures: 0)
                return
            }
            let count = failures + 1
            out.append(.report(Reports.probeFailed(g, result, count: count, of: health.failuresBeforeRestart)))
            generations[i].phase = .serving(probe: next, failures: count)
            if onProbation, count >= health.failuresBeforeRestart {
                probationFailed(
                    reason: "failed \(count) health probes in a row during its probation (last: \(result))", exited: nil, now: now, &out)
                return
            }
            if count >= health.failuresBeforeRestart, phase == .running, attempt == nil, retry == nil {
                generations[i].phase = .serving(probe: next, failures: 0)
                out.append(.report(Reports.unhealthy(g, failures: health.failuresBeforeRestart)))
                beginAttempt(.respawn, requests: [], now: now, &out)
            }
        default:
            break
        }
    }
}
