import BatonCore
import BatonProtocol
import Glibc

/// Drives the state machine with scripted events and made-up instants: no
/// process, no clock, no socket.
struct Harness {
    var machine: SupervisorStateMachine
    var now = Instant.seconds(100)

    /// A machine for `listeners`. `defaults`: the policy as shipped; without,
    /// the rules the teardown, steering and re-exec tests were written
    /// against (no probation, a settle of 1 s), so that they test one thing.
    init(listeners: [ListenerMode] = [], defaults: Bool = false, _ configure: (inout SupervisorPolicy) -> Void = { _ in }) {
        var policy = SupervisorPolicy()
        if !defaults {
            policy.probation = .zero
            policy.settle = .seconds(1)
        }
        configure(&policy)
        machine = SupervisorStateMachine(policy: policy, listeners: listeners)
    }

    @discardableResult
    mutating func send(_ event: SupervisorEvent) -> [SupervisorAction] {
        machine.handle(event, now: now)
    }

    /// Moves the clock and fires the deadline handling.
    @discardableResult
    mutating func advance(_ seconds: Double) -> [SupervisorAction] {
        now = now + .milliseconds(Int64(seconds * 1000))
        return send(.tick)
    }

    @discardableResult
    mutating func start() -> [SupervisorAction] { send(.start(report: nil)) }

    @discardableResult
    mutating func restart(_ id: RequestID? = nil, waitDrain: Bool = true) -> [SupervisorAction] {
        send(.restartRequested(id.map { RestartRequest(id: $0, waitsForDrain: waitDrain) }))
    }

    /// Starts the first generation as pid `pid` and makes it serve.
    mutating func startServing(pid: Int32 = 1000) {
        start()
        send(.spawned(generation: 1, pid: pid, releaseDir: "/r1"))
        send(.notified(pid: pid, message: ready()))
        prove(1)
        advance(1)
    }

    /// READY=1 from the generation whose main pid is `pid`, then its proof:
    /// what the app and the shell together make a generation ready with.
    @discardableResult
    mutating func becomeReady(pid: Int32) -> [SupervisorAction] {
        var out = send(.notified(pid: pid, message: ready()))
        if let n = machine.generations.first(where: { $0.pid == pid })?.number { out += prove(n) }
        return out
    }

    /// Generation `n` takes its proof connection (the first one asked for)
    /// from the queue, as the shell would report it; nothing if it needs none.
    @discardableResult
    mutating func prove(_ n: Int) -> [SupervisorAction] {
        guard let g = machine.generation(n), let socket = g.proof.keys.sorted().first else { return [] }
        var out = send(.proofConnected(generation: n, socket: socket, failure: nil))
        out += send(.proofQueues(generation: n, lengths: [socket: 1]))
        out += send(.proofQueues(generation: n, lengths: [socket: 0]))
        return out
    }

    func state(of number: Int) -> String? { machine.generation(number).map(machine.stateName(of:)) }
}

func ready() -> NotifyMessage { NotifyMessage(parsing: Array("READY=1".utf8)) }

func signals(_ actions: [SupervisorAction]) -> [SupervisorAction] {
    actions.filter {
        if case .signal = $0 { return true }
        if case .signalGroup = $0 { return true }
        return false
    }
}

func answers(_ actions: [SupervisorAction]) -> [(RequestID, Answer)] {
    actions.compactMap {
        if case .answer(let id, let a) = $0 { return (id, a) }
        return nil
    }
}

func spawns(_ actions: [SupervisorAction]) -> [Int] {
    actions.compactMap {
        if case .spawn(let n, _, _, _) = $0 { return n }
        return nil
    }
}

func reports(_ actions: [SupervisorAction]) -> [Report] {
    actions.compactMap {
        if case .report(let r) = $0 { return r }
        return nil
    }
}

func exits(_ actions: [SupervisorAction]) -> [(Int32, [RequestID: Answer])] {
    actions.compactMap {
        if case .exit(let code, let a) = $0 { return (code, a) }
        return nil
    }
}
