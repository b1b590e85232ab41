import BatonCore

/// What a supervisor that re-executes itself hands to the new program,
/// through an inherited descriptor: the machine's `Snapshot` and the shell's
/// part (its descriptors, configuration and counters, written by the shell),
/// in a versioned JSON form. Instants are decimal strings of nanoseconds on
/// the monotonic clock, which an exec does not reset; durations are
/// nanoseconds.
public struct HandOverState: Sendable, Equatable {
    /// The format's version. A program refuses a state of another version
    /// (in its check mode, before the old one execs).
    public static let version = 1

    /// The machine's state.
    public var machine: SupervisorStateMachine.Snapshot
    /// The shell's part, opaque here.
    public var shell: JSON

    /// A state.
    public init(machine: SupervisorStateMachine.Snapshot, shell: JSON) {
        self.machine = machine
        self.shell = shell
    }

    /// The state as one JSON object.
    public var json: JSON {
        .object(["baton_state": .int(Self.version), "machine": machine.json, "shell": shell])
    }

    /// Reads a state; refuses another version or a malformed one, saying which.
    public init(json j: JSON) throws(BatonError) {
        guard let version = j["baton_state"]?.int else {
            throw BatonError(.upgradeFailed, "not a baton state (no \"baton_state\" version)")
        }
        guard version == Self.version else {
            throw BatonError(
                .upgradeFailed, "state format version \(version) is not understood; this program reads version \(Self.version)")
        }
        guard let m = j["machine"], let shell = j["shell"] else {
            throw BatonError(.upgradeFailed, "the state lacks its machine or shell part")
        }
        self.machine = try SupervisorStateMachine.Snapshot(json: m)
        self.shell = shell
    }
}

private func malformed(_ what: String) -> BatonError {
    BatonError(.upgradeFailed, "the state is malformed: \(what)")
}

extension Instant {
    var stateJSON: JSON { .string(String(nanoseconds)) }

    init(stateJSON j: JSON?, _ what: String) throws(BatonError) {
        guard let text = j?.string, let ns = UInt64(text) else { throw malformed(what) }
        self.init(nanoseconds: ns)
    }

    static func optional(_ j: JSON?, _ what: String) throws(BatonError) -> Instant? {
        guard let j, j != .null else { return nil }
        return try Instant(stateJSON: j, what)
    }
}

extension Duration {
    var stateJSON: JSON { .string(String(nanosecondsClamped)) }

    init(stateJSON j: JSON?, _ what: String) throws(BatonError) {
        guard let text = j?.string, let ns = UInt64(text) else { throw malformed(what) }
        self = .nanoseconds(Int64(clamping: ns))
    }
}

extension ProbeResult {
    var stateJSON: JSON {
        var o: [String: JSON] = ["detail": .string(detail), "latency_ns": latency.stateJSON, "passed": .bool(passed)]
        if let status { o["status"] = .int(status) }
        return .object(o)
    }

    init(stateJSON j: JSON) throws(BatonError) {
        guard let detail = j["detail"]?.string, let passed = j["passed"]?.bool else { throw malformed("a probe result") }
        self.init(
            status: j["status"]?.int, detail: detail, latency: try Duration(stateJSON: j["latency_ns"], "a probe's latency"), passed: passed
        )
    }
}

extension Generation {
    var stateJSON: JSON {
        var o: [String: JSON] = [
            "number": .int(number), "pid": .int(pid), "release_dir": .string(releaseDir), "spawned_at": spawnedAt.stateJSON,
            "sockets": .array(sockets.map { .int($0) }),
        ]
        if case .serving(let probe, let failures) = phase {
            var p: [String: JSON] = ["state": .string("serving"), "failures": .int(failures)]
            if case .due(let at) = probe { p["probe_due"] = at.stateJSON }
            o["phase"] = .object(p)
        } else {
            // Only a quiet machine is handed over; any other phase is refused when read.
            o["phase"] = .object(["state": .string(stateName)])
        }
        if let healthSocket { o["health_socket"] = .int(healthSocket) }
        if let readyAt { o["ready_at"] = readyAt.stateJSON }
        if let servingSince { o["serving_since"] = servingSince.stateJSON }
        if let status { o["status"] = .string(status) }
        if let lastProbe { o["last_probe"] = lastProbe.stateJSON }
        return .object(o)
    }

    init(stateJSON j: JSON) throws(BatonError) {
        guard let number = j["number"]?.int, let pid = j["pid"]?.int, let dir = j["release_dir"]?.string,
            let sockets = j["sockets"]?.array?.compactMap(\.int), let p = j["phase"]
        else { throw malformed("a generation") }
        guard p["state"]?.string == "serving", let failures = p["failures"]?.int else {
            throw malformed("generation \(number) is \(p["state"]?.string ?? "in no phase"); only serving generations are handed over")
        }
        let probe = try Instant.optional(p["probe_due"], "a probe's due time").map(ProbeSchedule.due)
        self.init(
            restoring: number, pid: Int32(pid), releaseDir: dir, spawnedAt: try Instant(stateJSON: j["spawned_at"], "spawned_at"),
            phase: .serving(probe: probe, failures: failures), sockets: sockets, healthSocket: j["health_socket"]?.int,
            readyAt: try Instant.optional(j["ready_at"], "ready_at"),
            servingSince: try Instant.optional(j["serving_since"], "serving_since"),
            status: j["status"]?.string,
            lastProbe: try j["last_probe"].map { (x: JSON) throws(BatonError) in try ProbeResult(stateJSON: x) })
    }
}

extension SupervisorStateMachine.AttemptRecord {
    var stateJSON: JSON {
        var o: [String: JSON] = [
            "reason": .string(reason.rawValue), "started_at": startedAt.stateJSON, "finished_at": finishedAt.stateJSON,
        ]
        switch outcome {
        case .succeeded(let generation, let pid, let readyAfter, let retired):
            o["outcome"] = .object([
                "kind": .string("succeeded"), "generation": .int(generation), "pid": .int(pid), "ready_after_ns": readyAfter.stateJSON,
                "retired": .array(retired.map { .int($0) }),
            ])
        case .failed(let generation, let reason):
            var f: [String: JSON] = ["kind": .string("failed"), "reason": .string(reason)]
            if let generation { f["generation"] = .int(generation) }
            o["outcome"] = .object(f)
        case .rejected(let reason):
            o["outcome"] = .object(["kind": .string("rejected"), "reason": .string(reason)])
        }
        return .object(o)
    }

    init(stateJSON j: JSON) throws(BatonError) {
        guard let reason = j["reason"]?.string.flatMap(AttemptReason.init(rawValue:)), let o = j["outcome"] else {
            throw malformed("the last attempt")
        }
        let outcome: AttemptOutcome
        switch o["kind"]?.string {
        case "succeeded":
            guard let generation = o["generation"]?.int, let pid = o["pid"]?.int, let retired = o["retired"]?.array?.compactMap(\.int)
            else {
                throw malformed("the last attempt's outcome")
            }
            outcome = .succeeded(
                generation: generation, pid: Int32(pid), readyAfter: try Duration(stateJSON: o["ready_after_ns"], "ready_after_ns"),
                retired: retired)
        case "failed":
            outcome = .failed(generation: o["generation"]?.int, reason: o["reason"]?.string ?? "")
        case "rejected":
            outcome = .rejected(reason: o["reason"]?.string ?? "")
        default:
            throw malformed("the last attempt's outcome")
        }
        self.init(
            restoring: reason, outcome: outcome, startedAt: try Instant(stateJSON: j["started_at"], "started_at"),
            finishedAt: try Instant(stateJSON: j["finished_at"], "finished_at"))
    }
}

extension SupervisorStateMachine.Snapshot {
    /// The snapshot as JSON.
    public var json: JSON {
        var o: [String: JSON] = [
            "listeners": .array(listeners.map { .string($0.rawValue) }),
            "generations": .array(generations.map(\.stateJSON)),
            "last_generation": .int(lastGeneration),
            "backoff_ns": backoff.stateJSON,
            "sockets": .array(
                sockets.sorted { $0.key < $1.key }.map { id, r in
                    var s: [String: JSON] = ["id": .int(id), "in_group": .bool(r.inGroup), "published": .bool(r.published)]
                    if let l = r.listener { s["listener"] = .int(l) }
                    if let owner = r.owner { s["owner"] = .int(owner) }
                    return .object(s)
                }),
            "groups": .array(
                groups.sorted { $0.key < $1.key }.map { listener, g in
                    var s: [String: JSON] = ["listener": .int(listener), "members": .array(g.members.map { .int($0) })]
                    if let t = g.target { s["target"] = .int(t) }
                    if let i = g.attachedIndex { s["attached_index"] = .int(i) }
                    return .object(s)
                }),
            "status_entries": .array(statusEntries.map { .object(["generation": .int($0.generation), "pid": .int($0.pid)]) }),
            "next_socket_id": .int(nextSocketID),
            "listener_sockets": .array(listenerSockets.map { .int($0) }),
            "retired_listeners": .array(
                retiredListeners.sorted { $0.key < $1.key }.map { .object(["listener": .int($0.key), "from_generation": .int($0.value)]) }),
        ]
        if let queued {
            o["queued"] = .array(queued.map { .object(["id": .int($0.id), "wait_drain": .bool($0.waitsForDrain)]) })
        }
        if let lastRestartAt { o["last_restart_at"] = lastRestartAt.stateJSON }
        if let lastAttempt { o["last_attempt"] = lastAttempt.stateJSON }
        if appSendsReady { o["app_sends_ready"] = .bool(true) }
        if let c = crashLoop {
            var l: [String: JSON] = [
                "release_dir": .string(c.releaseDir), "deaths": .int(c.deaths), "last_generation": .int(c.lastGeneration),
                "last_reason": .string(c.lastReason), "last_at": c.lastAt.stateJSON,
            ]
            if let to = c.rolledBackTo { l["rolled_back_to"] = .string(to) }
            o["crash_loop"] = .object(l)
        }
        if let stableRelease { o["stable_release"] = .string(stableRelease) }
        if let pinnedRelease { o["pinned_release"] = .string(pinnedRelease) }
        return .object(o)
    }

    /// Reads a snapshot written by `json`.
    public init(json j: JSON) throws(BatonError) {
        guard let modes = j["listeners"]?.array, let gens = j["generations"]?.array, let last = j["last_generation"]?.int,
            let socketList = j["sockets"]?.array, let groupList = j["groups"]?.array, let entries = j["status_entries"]?.array,
            let next = j["next_socket_id"]?.int
        else { throw malformed("the machine part lacks a field") }
        var listeners: [ListenerMode] = []
        for m in modes {
            guard let mode = m.string.flatMap(ListenerMode.init(rawValue:)) else { throw malformed("a listener mode") }
            listeners.append(mode)
        }
        var generations: [Generation] = []
        for g in gens { generations.append(try Generation(stateJSON: g)) }
        var sockets: [SocketID: SocketRecord] = [:]
        for s in socketList {
            guard let id = s["id"]?.int, let inGroup = s["in_group"]?.bool, let published = s["published"]?.bool else {
                throw malformed("a socket")
            }
            sockets[id] = SocketRecord(restoring: s["listener"]?.int, owner: s["owner"]?.int, inGroup: inGroup, published: published)
        }
        var groups: [Int: ReuseportGroup] = [:]
        for g in groupList {
            guard let listener = g["listener"]?.int, let members = g["members"]?.array?.compactMap(\.int) else {
                throw malformed("a group")
            }
            groups[listener] = ReuseportGroup(restoring: members, target: g["target"]?.int, attachedIndex: g["attached_index"]?.int)
        }
        var statusEntries: [StatusEntry] = []
        for e in entries {
            guard let g = e["generation"]?.int, let pid = e["pid"]?.int else { throw malformed("a status entry") }
            statusEntries.append(StatusEntry(generation: g, pid: Int32(pid)))
        }
        var listenerSockets: [SocketID]?
        if let list = j["listener_sockets"]?.array {
            let ids = list.compactMap(\.int)
            guard ids.count == listeners.count else { throw malformed("the listeners' sockets") }
            listenerSockets = ids
        }
        var retired: [Int: Int] = [:]
        for r in j["retired_listeners"]?.array ?? [] {
            guard let l = r["listener"]?.int, let from = r["from_generation"]?.int else { throw malformed("a retired listener") }
            retired[l] = from
        }
        var queued: [RestartRequest]?
        if let q = j["queued"]?.array {
            queued = []
            for r in q {
                guard let id = r["id"]?.int else { throw malformed("a queued restart") }
                queued?.append(RestartRequest(id: id, waitsForDrain: r["wait_drain"]?.bool ?? true))
            }
        }
        self.init(
            listeners: listeners, generations: generations, lastGeneration: last, queued: queued,
            lastRestartAt: try Instant.optional(j["last_restart_at"], "last_restart_at"),
            backoff: try Duration(stateJSON: j["backoff_ns"], "backoff_ns"),
            lastAttempt: try j["last_attempt"].map { (x: JSON) throws(BatonError) in try SupervisorStateMachine.AttemptRecord(stateJSON: x)
            },
            sockets: sockets, groups: groups, statusEntries: statusEntries, nextSocketID: next, listenerSockets: listenerSockets,
            retiredListeners: retired)
        appSendsReady = j["app_sends_ready"]?.bool ?? false
        if let c = j["crash_loop"] {
            guard let dir = c["release_dir"]?.string, let deaths = c["deaths"]?.int, let last = c["last_generation"]?.int else {
                throw malformed("the crash loop")
            }
            crashLoop = SupervisorStateMachine.CrashLoop(
                restoring: dir, deaths: deaths, lastGeneration: last, lastReason: c["last_reason"]?.string ?? "",
                lastAt: try Instant(stateJSON: c["last_at"], "the crash loop's last_at"), rolledBackTo: c["rolled_back_to"]?.string)
        }
        stableRelease = j["stable_release"]?.string
        pinnedRelease = j["pinned_release"]?.string
    }
}
