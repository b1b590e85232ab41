// The proof of readiness: a generation counts as ready only once it has been
// seen to take a connection from a socket it will serve. The supervisor
// connects to each socket of the generation's own from a port of its own
// (a steered socket is reached through a program that sends that one port
// to it while every client still goes to the serving socket), shuts its
// sending side, and watches: the app answering or closing the connection,
// or the queue that held it reading empty, proves that it accepts.
extension SupervisorStateMachine {
    /// The sockets of `number` a proof connection can reach before clients
    /// do: its own TCP (steered) and unix (renamed) sockets.
    public func provableSockets(of number: Int) -> [SocketID] {
        ownSockets(of: number).filter { id in
            guard let l = sockets[id]?.listener else { return false }
            return listeners[l] == .steered || listeners[l] == .renamed
        }
    }

    /// Asks the shell for a proof connection to `socket` of the generation at `i`.
    mutating func connectProof(at i: Int, socket s: SocketID, _ out: inout [SupervisorAction]) {
        var steer: ProofSteer?
        if let l = sockets[s]?.listener, listeners[l] == .steered, let group = groups[l], let target = group.target, target != s,
            let probeIndex = group.index(of: s), let otherIndex = group.attachedIndex ?? group.index(of: target)
        {
            steer = ProofSteer(listener: l, via: target, probeIndex: probeIndex, otherIndex: otherIndex)
        }
        generations[i].proof[s] = .connecting
        out.append(.connectProof(generation: generations[i].number, socket: s, steer: steer))
    }

    /// Proof connections due, queue readings due, a reading of its workers due.
    mutating func proofTick(at i: Int, now: Instant, _ out: inout [SupervisorAction]) {
        if let at = generations[i].workersReadAt, at <= now {
            generations[i].workersReadAt = nil
            out.append(.readWorkers(generation: generations[i].number, pid: generations[i].pid))
        }
        var reading: [SocketID] = []
        for (s, probe) in generations[i].proof.sorted(by: { $0.key < $1.key }) {
            switch probe {
            case .due(let at) where at <= now:
                connectProof(at: i, socket: s, &out)
            case .waiting(let seen, let next?) where next <= now:
                generations[i].proof[s] = .waiting(seen: seen, nextReading: nil)
                reading.append(s)
            default:
                break
            }
        }
        if !reading.isEmpty { out.append(.readProofQueues(generation: generations[i].number, sockets: reading)) }
    }

    mutating func proofConnected(_ number: Int, socket s: SocketID, failure: String?, now: Instant, _ out: inout [SupervisorAction]) {
        guard let i = generations.firstIndex(where: { $0.number == number }), case .starting = generations[i].phase,
            generations[i].proof[s] == .connecting
        else { return }
        if let failure {
            let failures = (generations[i].proofFailures[s] ?? 0) + 1
            generations[i].proofFailures[s] = failures
            guard failures >= policy.proofConnectAttempts else {
                generations[i].proof[s] = .due(now + policy.proofRetryDelay)
                if failures == 1 {
                    out.append(.report(Reports.proofNotConnected(generations[i], failure, retryingIn: policy.proofRetryDelay)))
                }
                return
            }
            generations[i].proof[s] = nil
            guard generations[i].proof.isEmpty else { return }
            // None of its sockets can be reached from here: judged as a
            // generation without sockets of its own.
            generations[i].needsProof = false
            if case .starting(let readyBy, _) = generations[i].phase, case .auto(let fallback) = policy.readiness {
                generations[i].phase = .starting(readyBy: readyBy, aliveAt: generations[i].spawnedAt + max(fallback, policy.minimumAlive))
            }
            out.append(.report(Reports.proofImpossible(generations[i], failure, attempts: failures)))
            checkReady(at: i, now: now, &out)
            return
        }
        generations[i].proofFailures[s] = nil
        // Read at once: the connection is in the queue by now (or taken already).
        generations[i].proof[s] = .waiting(seen: false, nextReading: nil)
        out.append(.readProofQueues(generation: number, sockets: [s]))
    }

    mutating func proofQueues(_ number: Int, lengths: [SocketID: Int], now: Instant, _ out: inout [SupervisorAction]) {
        guard let i = generations.firstIndex(where: { $0.number == number }), case .starting = generations[i].phase else { return }
        for (s, length) in lengths.sorted(by: { $0.key < $1.key }) {
            guard case .waiting(let seen, _) = generations[i].proof[s] else { continue }
            if length == 0, seen {
                // It was in the queue and the queue is empty: the app took it
                // (and whatever clients had queued before it).
                proven(at: i, socket: s, how: "took a probe connection from its queue", now: now, &out)
                return
            }
            // An empty first reading may come before the kernel queued the
            // connection: only a later one, after it was seen there, counts.
            generations[i].proof[s] = .waiting(seen: seen || length > 0, nextReading: now + policy.proofReadInterval)
        }
    }

    mutating func proofAnswered(_ number: Int, socket s: SocketID, now: Instant, _ out: inout [SupervisorAction]) {
        guard let i = generations.firstIndex(where: { $0.number == number }), case .starting = generations[i].phase,
            case .waiting = generations[i].proof[s]
        else { return }
        proven(at: i, socket: s, how: "answered a probe connection", now: now, &out)
    }

    /// A reading of a starting generation's workers: those gone since the
    /// last one exited. A master whose workers keep exiting before it
    /// accepted anything is crash-looping them and will not accept.
    mutating func workersRead(_ number: Int, pids: [Int32], now: Instant, _ out: inout [SupervisorAction]) {
        guard let i = generations.firstIndex(where: { $0.number == number }), case .starting = generations[i].phase else { return }
        let seen = Set(pids)
        let gone = generations[i].workers.subtracting(seen).count
        generations[i].workers = seen
        generations[i].workersReadAt = now + policy.workerReadInterval
        guard gone > 0 else { return }
        generations[i].workerExits += gone
        let first = generations[i].firstWorkerExit ?? now
        generations[i].firstWorkerExit = first
        let g = generations[i]
        if g.workerExits >= policy.workerDeathsBeforeReady, now - first >= policy.workerDeathSpan {
            failBeforeReady(
                at: i,
                reason: "its worker processes keep dying before it accepts: \(g.workerExits) exited in \((now - first).humanDescription), "
                    + "\((now - g.spawnedAt).humanDescription) after its spawn (a prefork master whose app cannot load?): stopped",
                now: now, &out)
        }
    }

    /// The generation at `i` took a proof connection from socket `s`.
    mutating func proven(at i: Int, socket s: SocketID, how: String, now: Instant, _ out: inout [SupervisorAction]) {
        let g = generations[i]
        generations[i].proven = "accepted on its own socket (\(how))"
        generations[i].proof = [:]
        out.append(.dropProof(generation: g.number))
        out.append(.report(Reports.proven(g, how: how, socket: s, after: now - g.spawnedAt)))
        checkReady(at: i, now: now, &out)
    }
}
