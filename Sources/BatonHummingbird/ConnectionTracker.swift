import NIOCore
import Synchronization

/// Runs the handler of every accepted connection and knows when all have
/// finished.
///
/// Each connection is handed over from its channel initializer straight to
/// a task of its own, so no accepted connection ever waits in a buffer that
/// a closing server could drop. (With SwiftNIO's async `bind`, a connection
/// accepted as the listener closes can be dropped before anyone serves it,
/// and its unfinished `NIOAsyncWriter` then traps the process: swift-nio
/// issues 2637 and 3481. Under restarts with load this happened within
/// seconds.)
final class ConnectionTracker: Sendable {
    private struct State {
        var running = 0
        var channels: [ObjectIdentifier: any Channel] = [:]
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Runs `handle` for the connection on `channel` in a task of its own.
    func start(_ channel: any Channel, handle: @escaping @Sendable () async -> Void) {
        let key = ObjectIdentifier(channel)
        self.state.withLock {
            $0.running += 1
            $0.channels[key] = channel
        }
        Task {
            await handle()
            let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.running -= 1
                state.channels[key] = nil
                guard state.running == 0 else { return [] }
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters {
                waiter.resume()
            }
        }
    }

    /// Returns once no connection handler is running.
    func waitUntilIdle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = self.state.withLock { state -> Bool in
                if state.running == 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    /// Closes every connection still open (used when the server task is cancelled).
    func closeAll() {
        let channels = self.state.withLock { Array($0.channels.values) }
        for channel in channels {
            channel.close(promise: nil)
        }
    }
}
