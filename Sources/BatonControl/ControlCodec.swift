import BatonCore

// The JSON form of each control message. Field names are part of the
// protocol (scripts read `--json` output): snake_case, times in milliseconds.

extension JSON {
    fileprivate static func optional(_ value: (some BinaryInteger)?) -> JSON? { value.map { .int($0) } }
    fileprivate var int32: Int32? { int.flatMap { Int32(exactly: $0) } }
    fileprivate var int64: Int64? { int.map { Int64($0) } }
}

/// Builds an object from pairs, leaving out nil values.
private func object(_ pairs: [(String, JSON?)]) -> JSON {
    var o: [String: JSON] = [:]
    for (k, v) in pairs { if let v { o[k] = v } }
    return .object(o)
}

extension ControlProgress {
    /// The message as one JSON object.
    public var json: JSON {
        object([
            ("v", .int(ControlProtocol.version)), ("type", .string("progress")), ("kind", .string(kind)),
            ("generation", .optional(generation)), ("pid", .optional(pid)), ("message", .string(message)),
            ("elapsed_ms", .optional(elapsedMilliseconds)),
        ])
    }

    /// Reads a progress object.
    public init?(json j: JSON) {
        guard j["type"]?.string == "progress", let kind = j["kind"]?.string else { return nil }
        self.init(
            kind: kind, generation: j["generation"]?.int, pid: j["pid"]?.int32, message: j["message"]?.string ?? "",
            elapsedMilliseconds: j["elapsed_ms"]?.int64)
    }
}

extension ControlResult {
    /// The message as one JSON object.
    public var json: JSON {
        object([
            ("v", .int(ControlProtocol.version)), ("type", .string("result")), ("ok", .bool(ok)),
            ("code", .string(code?.name ?? "success")), ("exit", .int(exitCode)), ("message", .string(message)),
            ("generation", .optional(generation)), ("pid", .optional(pid)), ("ready_ms", .optional(readyMilliseconds)),
            ("retired", retired.map { .array($0.map { .int($0) }) }), ("duration_ms", .optional(durationMilliseconds)),
            ("supervisor_pid", .optional(supervisorPid)), ("log_file", logFile.map(JSON.string)),
            ("output", output.map { .array($0.map(JSON.string)) }), ("steps", steps.map { .array($0.map(JSON.string)) }),
        ])
    }

    /// Reads a result object; an unknown code counts as a plain failure.
    public init?(json j: JSON) {
        guard j["type"]?.string == "result", let ok = j["ok"]?.bool else { return nil }
        let code: BatonError.Code? =
            ok ? nil : (j["code"]?.string.flatMap(BatonError.Code.init(name:)) ?? .failure)
        self.init(code, j["message"]?.string ?? (ok ? "done" : "failed"))
        generation = j["generation"]?.int
        pid = j["pid"]?.int32
        readyMilliseconds = j["ready_ms"]?.int64
        retired = j["retired"]?.array?.compactMap(\.int)
        durationMilliseconds = j["duration_ms"]?.int64
        supervisorPid = j["supervisor_pid"]?.int32
        logFile = j["log_file"]?.string
        output = j["output"]?.array?.compactMap(\.string)
        steps = j["steps"]?.array?.compactMap(\.string)
    }
}

extension ControlStatus.Probe {
    var json: JSON {
        object([
            ("passed", .bool(passed)), ("status", .optional(status)), ("detail", .string(detail)),
            ("latency_ms", .number(latencyMilliseconds)),
        ])
    }

    init?(json j: JSON) {
        guard let passed = j["passed"]?.bool else { return nil }
        self.init(
            passed: passed, status: j["status"]?.int, detail: j["detail"]?.string ?? "", latencyMilliseconds: j["latency_ms"]?.double ?? 0)
    }
}

extension ControlStatus.Generation {
    var json: JSON {
        object([
            ("generation", .int(number)), ("pid", .int(pid)), ("state", .string(state)), ("age_ms", .int(ageMilliseconds)),
            ("release_dir", .string(releaseDir)), ("status", status.map(JSON.string)), ("ready_ms", .optional(readyMilliseconds)),
            ("last_probe", lastProbe?.json), ("sockets", .array(sockets.map(JSON.string))),
        ])
    }

    init?(json j: JSON) {
        guard let number = j["generation"]?.int, let pid = j["pid"]?.int32 else { return nil }
        self.init(
            number: number, pid: pid, state: j["state"]?.string ?? "?", ageMilliseconds: j["age_ms"]?.int64 ?? 0,
            releaseDir: j["release_dir"]?.string ?? "")
        status = j["status"]?.string
        readyMilliseconds = j["ready_ms"]?.int64
        lastProbe = j["last_probe"].flatMap(ControlStatus.Probe.init(json:))
        sockets = j["sockets"]?.array?.compactMap(\.string) ?? []
    }
}

extension ControlStatus.Attempt {
    var json: JSON {
        object([
            ("reason", .string(reason)), ("ok", .bool(ok)), ("generation", .optional(generation)),
            ("ready_ms", .optional(readyMilliseconds)), ("message", message.map(JSON.string)),
            ("duration_ms", .int(durationMilliseconds)), ("ago_ms", .int(agoMilliseconds)),
        ])
    }

    init?(json j: JSON) {
        guard let reason = j["reason"]?.string, let ok = j["ok"]?.bool else { return nil }
        self.init(reason: reason, ok: ok, durationMilliseconds: j["duration_ms"]?.int64 ?? 0, agoMilliseconds: j["ago_ms"]?.int64 ?? 0)
        generation = j["generation"]?.int
        readyMilliseconds = j["ready_ms"]?.int64
        message = j["message"]?.string
    }
}

extension ControlStatus {
    /// The message as one JSON object.
    public var json: JSON {
        object([
            ("v", .int(ControlProtocol.version)), ("type", .string("status")), ("ok", .bool(true)),
            ("code", .string(crashLoop == nil ? "running" : BatonError.Code.crashLooping.name)), ("exit", .int(exitCode)),
            ("pid", .int(pid)), ("uptime_ms", .int(uptimeMilliseconds)), ("started_at", .int(startedAt)),
            ("state", .string(state)), ("version", .string(version)), ("binary", binary.map(JSON.string)),
            ("binary_id", binaryID.map(JSON.string)), ("configuration", configuration),
            ("reexecuted_at", .optional(reexecutedAt)), ("reexecutions", .int(reexecutions)),
            ("warnings", .array(warnings.map(JSON.string))),
            (
                "listeners",
                .array(
                    listeners.map {
                        .object(["address": .string($0.address), "fd": .int($0.fd), "name": .string($0.name), "mode": .string($0.mode)])
                    })
            ),
            ("generations", .array(generations.map(\.json))), ("command", .array(command.map(JSON.string))),
            ("serving", .optional(serving)), ("pid_file", pidFile.map(JSON.string)), ("control", control.map(JSON.string)),
            ("log_file", logFile.map(JSON.string)), ("last_attempt", lastAttempt?.json),
            ("crash_loop", crashLoop?.json), ("probation", probation?.json), ("stable_release", stableRelease.map(JSON.string)),
        ])
    }

    /// Reads a status object.
    public init?(json j: JSON) {
        guard j["type"]?.string == "status", j["ok"]?.bool == true, let pid = j["pid"]?.int32 else { return nil }
        self.init(
            pid: pid, uptimeMilliseconds: j["uptime_ms"]?.int64 ?? 0, startedAt: j["started_at"]?.int ?? 0,
            state: j["state"]?.string ?? "?", version: j["version"]?.string ?? "?")
        binary = j["binary"]?.string
        binaryID = j["binary_id"]?.string
        configuration = j["configuration"]
        reexecutedAt = j["reexecuted_at"]?.int
        reexecutions = j["reexecutions"]?.int ?? 0
        warnings = j["warnings"]?.array?.compactMap(\.string) ?? []
        listeners = (j["listeners"]?.array ?? []).map {
            Listener(
                address: $0["address"]?.string ?? "?", fd: $0["fd"]?.int32 ?? 0, name: $0["name"]?.string ?? "",
                mode: $0["mode"]?.string ?? "shared")
        }
        generations = (j["generations"]?.array ?? []).compactMap(Generation.init(json:))
        command = j["command"]?.array?.compactMap(\.string) ?? []
        serving = j["serving"]?.int
        pidFile = j["pid_file"]?.string
        control = j["control"]?.string
        logFile = j["log_file"]?.string
        lastAttempt = j["last_attempt"].flatMap(Attempt.init(json:))
        crashLoop = j["crash_loop"].flatMap(CrashLoop.init(json:))
        probation = j["probation"].flatMap(Probation.init(json:))
        stableRelease = j["stable_release"]?.string
    }
}

extension ControlStatus.CrashLoop {
    var json: JSON {
        object([
            ("release", .string(release)), ("deaths", .int(deaths)), ("last_generation", .int(lastGeneration)),
            ("last_reason", .string(lastReason)), ("ago_ms", .int(agoMilliseconds)), ("rolled_back_to", rolledBackTo.map(JSON.string)),
        ])
    }

    init?(json j: JSON) {
        guard let release = j["release"]?.string, let deaths = j["deaths"]?.int else { return nil }
        self.init(
            release: release, deaths: deaths, lastGeneration: j["last_generation"]?.int ?? 0, lastReason: j["last_reason"]?.string ?? "",
            agoMilliseconds: j["ago_ms"]?.int64 ?? 0)
        rolledBackTo = j["rolled_back_to"]?.string
    }
}

extension ControlStatus.Probation {
    var json: JSON {
        object([("generation", .int(generation)), ("reserve", .array(reserve.map { .int($0) })), ("left_ms", .int(leftMilliseconds))])
    }

    init?(json j: JSON) {
        guard let generation = j["generation"]?.int else { return nil }
        self.init(generation: generation, reserve: j["reserve"]?.array?.compactMap(\.int) ?? [], leftMilliseconds: j["left_ms"]?.int64 ?? 0)
    }
}

extension ControlMessage {
    /// The message as one JSON object.
    public var json: JSON {
        switch self {
        case .progress(let p): p.json
        case .result(let r): r.json
        case .status(let s): s.json
        }
    }

    /// The message as one protocol line, newline included.
    public var line: String { json.text + "\n" }

    /// Reads a line; nil when it is not a message of this protocol.
    public init?(line: some StringProtocol) {
        guard let j = JSON(parsing: String(line)) else { return nil }
        self.init(json: j)
    }

    /// Reads a message object.
    public init?(json j: JSON) {
        switch j["type"]?.string {
        case "progress":
            guard let p = ControlProgress(json: j) else { return nil }
            self = .progress(p)
        case "result":
            guard let r = ControlResult(json: j) else { return nil }
            self = .result(r)
        case "status":
            guard let s = ControlStatus(json: j) else { return nil }
            self = .status(s)
        default: return nil
        }
    }
}
