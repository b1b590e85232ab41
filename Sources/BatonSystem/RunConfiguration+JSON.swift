import BatonControl
import BatonCore

// The configuration as JSON: how `baton start` and `start_server
// --daemonize` hand it to the daemon they spawn, and how a re-exec hands it
// to the new program. Durations are microseconds.

extension Duration {
    var jsonMicroseconds: JSON { .number(Double(nanosecondsClamped / 1000)) }

    init?(jsonMicroseconds j: JSON?) {
        guard let us = j?.double, us >= 0 else { return nil }
        self = .nanoseconds(Int64(us * 1000))
    }
}

extension SupervisorPolicy.Readiness {
    var json: JSON {
        switch self {
        case .notify: .object(["mode": .string("notify")])
        case .alive(let d): .object(["mode": .string("alive"), "after_us": d.jsonMicroseconds])
        case .auto(let d): .object(["mode": .string("auto"), "after_us": d.jsonMicroseconds])
        }
    }

    init?(json j: JSON) {
        switch j["mode"]?.string {
        case "notify": self = .notify
        case "alive": self = .alive(Duration(jsonMicroseconds: j["after_us"]) ?? .seconds(1))
        case "auto": self = .auto(fallback: Duration(jsonMicroseconds: j["after_us"]) ?? .seconds(1))
        default: return nil
        }
    }
}

extension HealthCheck {
    var json: JSON {
        var o: [String: JSON] = [
            "path": .string(path), "timeout_us": timeout.jsonMicroseconds, "interval_us": interval.jsonMicroseconds,
            "expected": .array([.int(expected.lowerBound), .int(expected.upperBound)]), "failures": .int(failuresBeforeRestart),
        ]
        if let every { o["every_us"] = every.jsonMicroseconds }
        return .object(o)
    }

    init?(json j: JSON) {
        guard let path = j["path"]?.string else { return nil }
        self.init(path: path)
        timeout = Duration(jsonMicroseconds: j["timeout_us"]) ?? timeout
        interval = Duration(jsonMicroseconds: j["interval_us"]) ?? interval
        if let range = j["expected"]?.array?.compactMap(\.int), range.count == 2, range[0] <= range[1] { expected = range[0]...range[1] }
        every = Duration(jsonMicroseconds: j["every_us"])
        failuresBeforeRestart = j["failures"]?.int ?? failuresBeforeRestart
    }
}

extension SupervisorPolicy {
    var json: JSON {
        var o: [String: JSON] = [
            "readiness": readiness.json, "settle_us": settle.jsonMicroseconds, "ready_timeout_us": readyTimeout.jsonMicroseconds,
            "kill_old_delay_us": killOldDelay.jsonMicroseconds, "signal_on_hup": .int(signalOnHup), "signal_on_term": .int(signalOnTerm),
            "failed_stop_grace_us": failedStopGrace.jsonMicroseconds, "backoff_initial_us": backoffInitial.jsonMicroseconds,
            "backoff_max_us": backoffMax.jsonMicroseconds, "backoff_reset_us": backoffReset.jsonMicroseconds,
            "exit_when_first_fails": .bool(exitWhenFirstFails), "attempt_retries": .int(attemptRetries),
            "retry_delay_us": retryDelay.jsonMicroseconds, "handshake_window_us": handshakeWindow.jsonMicroseconds,
            "queue_poll_interval_us": queuePollInterval.jsonMicroseconds, "queue_timeout_us": queueTimeout.jsonMicroseconds,
            "probation_us": probation.jsonMicroseconds, "minimum_alive_us": minimumAlive.jsonMicroseconds,
        ]
        if let drainTimeout { o["drain_timeout_us"] = drainTimeout.jsonMicroseconds }
        if let health { o["health"] = health.json }
        if let autoRestartInterval { o["auto_restart_interval_us"] = autoRestartInterval.jsonMicroseconds }
        return .object(o)
    }

    init(json j: JSON) {
        self.init()
        readiness = j["readiness"].flatMap(Readiness.init(json:)) ?? readiness
        settle = Duration(jsonMicroseconds: j["settle_us"]) ?? settle
        probation = Duration(jsonMicroseconds: j["probation_us"]) ?? probation
        minimumAlive = Duration(jsonMicroseconds: j["minimum_alive_us"]) ?? minimumAlive
        readyTimeout = Duration(jsonMicroseconds: j["ready_timeout_us"]) ?? readyTimeout
        killOldDelay = Duration(jsonMicroseconds: j["kill_old_delay_us"]) ?? killOldDelay
        drainTimeout = Duration(jsonMicroseconds: j["drain_timeout_us"])
        signalOnHup = j["signal_on_hup"]?.int.map(Int32.init) ?? signalOnHup
        signalOnTerm = j["signal_on_term"]?.int.map(Int32.init) ?? signalOnTerm
        failedStopGrace = Duration(jsonMicroseconds: j["failed_stop_grace_us"]) ?? failedStopGrace
        backoffInitial = Duration(jsonMicroseconds: j["backoff_initial_us"]) ?? backoffInitial
        backoffMax = Duration(jsonMicroseconds: j["backoff_max_us"]) ?? backoffMax
        backoffReset = Duration(jsonMicroseconds: j["backoff_reset_us"]) ?? backoffReset
        exitWhenFirstFails = j["exit_when_first_fails"]?.bool ?? exitWhenFirstFails
        attemptRetries = j["attempt_retries"]?.int ?? attemptRetries
        retryDelay = Duration(jsonMicroseconds: j["retry_delay_us"]) ?? retryDelay
        handshakeWindow = Duration(jsonMicroseconds: j["handshake_window_us"]) ?? handshakeWindow
        queuePollInterval = Duration(jsonMicroseconds: j["queue_poll_interval_us"]) ?? queuePollInterval
        queueTimeout = Duration(jsonMicroseconds: j["queue_timeout_us"]) ?? queueTimeout
        health = j["health"].flatMap(HealthCheck.init(json:))
        autoRestartInterval = Duration(jsonMicroseconds: j["auto_restart_interval_us"])
    }
}

extension ListenSpec {
    var json: JSON {
        var o: [String: JSON] = ["address": .string(address.notation)]
        if let envKey { o["env_key"] = .string(envKey) }
        if let fd { o["fd"] = .int(fd) }
        return .object(o)
    }

    init?(json j: JSON) {
        guard let text = j["address"]?.string, let address = try? ListenAddress(parsing: text) else { return nil }
        self.init(address, envKey: j["env_key"]?.string, fd: j["fd"]?.int.map(Int32.init))
    }
}

extension RunConfiguration {
    /// The configuration as one JSON object (the start-report descriptor is not part of it).
    public var json: JSON {
        var o: [String: JSON] = [
            "listen": .array(listen.map(\.json)), "allow_no_listeners": .bool(allowNoListeners),
            "listen_mode": .string(listenMode.rawValue),
            "envdir_style": .string(envdirStyle == .daemontools ? "daemontools" : "server-starter"),
            "exported_env": .array(exportedEnv.map(JSON.string)), "socket_mode": .int(socketMode), "env": .array(env.map(JSON.string)),
            "command": .array(command.map(JSON.string)), "policy": policy.json,
        ]
        let optionals: [(String, String?)] = [
            ("pid_file", pidFile), ("status_file", statusFile), ("dir", dir), ("envdir", envdir), ("user", user), ("group", group),
            ("control", controlPath), ("log_file", logFile),
        ]
        for (k, v) in optionals { if let v { o[k] = .string(v) } }
        if let backlog { o["backlog"] = .int(backlog) }
        if !watch.isEmpty {
            o["watch"] = .array(watch.map(JSON.string))
            o["watch_ignore"] = .array(watchIgnore.map(JSON.string))
            o["watch_debounce_us"] = .int(Int(clamping: watchDebounce.nanosecondsClamped / 1000))
        }
        if let build { o["build"] = .string(build) }
        return .object(o)
    }

    /// Reads a configuration written by `json`.
    public init(json j: JSON) throws(BatonError) {
        self.init()
        guard case .object = j, let command = j["command"]?.array?.compactMap(\.string) else {
            throw BatonError(.usage, "not a baton configuration")
        }
        self.command = command
        for item in j["listen"]?.array ?? [] {
            guard let spec = ListenSpec(json: item) else {
                throw BatonError(.usage, "a listener of the configuration is malformed: \(item.text)")
            }
            listen.append(spec)
        }
        allowNoListeners = j["allow_no_listeners"]?.bool ?? false
        listenMode = j["listen_mode"]?.string.flatMap(ListenMode.init(rawValue:)) ?? .steered
        envdirStyle = j["envdir_style"]?.string == "server-starter" ? .serverStarter : .daemontools
        exportedEnv = j["exported_env"]?.array?.compactMap(\.string) ?? []
        socketMode = j["socket_mode"]?.int.map(UInt32.init) ?? socketMode
        backlog = j["backlog"]?.int.map(Int32.init)
        env = j["env"]?.array?.compactMap(\.string) ?? []
        pidFile = j["pid_file"]?.string
        statusFile = j["status_file"]?.string
        dir = j["dir"]?.string
        envdir = j["envdir"]?.string
        user = j["user"]?.string
        group = j["group"]?.string
        controlPath = j["control"]?.string
        logFile = j["log_file"]?.string
        policy = j["policy"].map(SupervisorPolicy.init(json:)) ?? SupervisorPolicy()
        watch = j["watch"]?.array?.compactMap(\.string) ?? []
        watchIgnore = j["watch_ignore"]?.array?.compactMap(\.string) ?? []
        if let us = j["watch_debounce_us"]?.int { watchDebounce = .microseconds(us) }
        build = j["build"]?.string
    }
}
