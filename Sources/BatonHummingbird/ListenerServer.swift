public import BatonListen
import BatonNIO
public import HummingbirdCore
public import Logging
public import NIOCore
import NIOExtras
import NIOPosix
public import ServiceLifecycle

/// A server `Service` that accepts on a set of ``BatonListen/Listener``s
/// (inherited or bound) and hands every accepted connection to a
/// Hummingbird `ServerChildChannel`.
///
/// The counterpart of Hummingbird's `Server`, which can only bind an address
/// itself. It binds every listener, then calls `onServerRunning` for each
/// server channel and sends `READY=1` to `NOTIFY_SOCKET`. On graceful
/// shutdown it sends `STOPPING=1`, closes every listener in this process
/// (the supervisor and the next generation keep the socket), lets in-flight
/// requests finish, closes idle connections after
/// ``Configuration/drainGrace``, and returns once every connection has closed.
/// (``BatonApplication`` also marks every response written during the drain
/// `Connection: close`.)
///
/// ``BatonApplication`` runs one; use it directly to serve a custom child
/// channel.
public actor ListenerServer<ChildChannel: ServerChildChannel>: Service, CustomStringConvertible {
    /// How the server accepts and drains.
    public struct Configuration: Sendable {
        /// Decides when to stop accepting for a while (e.g. Hummingbird's
        /// `MaximumAvailableConnections`); one handler per listener.
        public var availableConnectionsDelegate: (any AvailableConnectionsDelegate)?
        /// How long an idle connection stays open once a graceful stop has
        /// begun, so that a request already on its way is read and answered
        /// rather than cut off; on TCP it then also stays open while the
        /// kernel holds bytes not yet read (up to 0.5 s more). Zero closes
        /// idle connections at once, as stock Hummingbird does.
        public var drainGrace: TimeAmount
        /// Whether to send `READY=1` and `STOPPING=1` to `NOTIFY_SOCKET`.
        public var notifiesSupervisor: Bool

        /// Creates a configuration.
        /// - Parameters:
        ///   - availableConnectionsDelegate: Limits concurrent connections, if set.
        ///   - drainGrace: How long idle connections stay open once a graceful stop has begun.
        ///   - notifiesSupervisor: Whether to send `READY=1` and `STOPPING=1`.
        public init(
            availableConnectionsDelegate: (any AvailableConnectionsDelegate)? = nil,
            drainGrace: TimeAmount = .milliseconds(100),
            notifiesSupervisor: Bool = true
        ) {
            self.availableConnectionsDelegate = availableConnectionsDelegate
            self.drainGrace = drainGrace
            self.notifiesSupervisor = notifiesSupervisor
        }
    }

    /// Errors of ``run()``.
    public enum Error: Swift.Error {
        /// ``run()`` was called while a graceful shutdown is in progress.
        case serverShuttingDown
        /// ``run()`` was called after the server stopped.
        case serverShutdown
        /// ``run()`` was called while the server is already running.
        case alreadyRunning
        /// There is no listener to serve.
        case noListeners
    }

    private struct Bound: Sendable {
        let listener: Listener
        let channel: any Channel
        let quiescingHelper: ServerQuiescingHelper
    }

    private enum State {
        case initial
        case starting
        case running([Bound])
        case shuttingDown(EventLoopFuture<Void>)
        case shutdown
    }

    private var state: State = .initial
    private let childChannelSetup: ChildChannel
    private let listeners: [Listener]
    private let configuration: Configuration
    private let onServerRunning: (@Sendable (any Channel) async -> Void)?
    private let prelude: [@Sendable () async throws -> Void]
    private let eventLoopGroup: any EventLoopGroup
    private let drainState: DrainState?
    private let connections = ConnectionTracker()
    /// The server's logger.
    public nonisolated let logger: Logger

    /// Creates a server.
    /// - Parameters:
    ///   - childChannelSetup: Sets up and handles each accepted connection, e.g. `HTTP1Channel`.
    ///   - listeners: The sockets to accept on, each served once; the server owns them from now on.
    ///   - configuration: How the server accepts and drains.
    ///   - onServerRunning: Called with each server channel once all are accepting.
    ///   - beforeServerStarts: Work run in ``run()`` before the first listener is served.
    ///   - eventLoopGroup: The event loops to run on.
    ///   - logger: The server's logger.
    public init(
        childChannelSetup: ChildChannel,
        listeners: [Listener],
        configuration: Configuration = .init(),
        onServerRunning: (@Sendable (any Channel) async -> Void)? = nil,
        beforeServerStarts: [@Sendable () async throws -> Void] = [],
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) {
        self.init(
            childChannelSetup: childChannelSetup,
            listeners: listeners,
            configuration: configuration,
            onServerRunning: onServerRunning,
            beforeServerStarts: beforeServerStarts,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            drainState: nil
        )
    }

    init(
        childChannelSetup: ChildChannel,
        listeners: [Listener],
        configuration: Configuration,
        onServerRunning: (@Sendable (any Channel) async -> Void)?,
        beforeServerStarts: [@Sendable () async throws -> Void],
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        drainState: DrainState?
    ) {
        self.drainState = drainState
        self.childChannelSetup = childChannelSetup
        self.listeners = listeners
        self.configuration = configuration
        self.onServerRunning = onServerRunning
        self.prelude = beforeServerStarts
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// "BatonServer".
    public nonisolated var description: String { "BatonServer" }

    /// Serves every listener until a graceful shutdown has drained all
    /// connections, or the task is cancelled.
    /// - Throws: ``Error``, or the error of a listener SwiftNIO cannot adopt.
    public func run() async throws {
        switch self.state {
        case .initial:
            break
        case .starting, .running:
            throw Error.alreadyRunning
        case .shuttingDown:
            throw Error.serverShuttingDown
        case .shutdown:
            throw Error.serverShutdown
        }
        guard !self.listeners.isEmpty else {
            self.state = .shutdown
            throw Error.noListeners
        }
        self.state = .starting
        let bound: [Bound]
        do {
            for step in self.prelude {
                try await step()
            }
            bound = try await self.bindAll()
        } catch {
            self.state = .shutdown
            throw error
        }
        guard case .starting = self.state else {
            // A graceful shutdown arrived while binding.
            for entry in bound {
                try? await entry.channel.close()
            }
            self.state = .shutdown
            return
        }
        self.state = .running(bound)

        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                for entry in bound {
                    await self.onServerRunning?(entry.channel)
                }
                self.announceReady(bound)
                // Serve until every listener is closed (graceful shutdown,
                // cancellation or error), then until every connection is done.
                for entry in bound {
                    try? await entry.channel.closeFuture.get()
                }
                if case .shuttingDown(let drained) = self.state {
                    try? await drained.get()
                }
                await self.connections.waitUntilIdle()
                self.state = .shutdown
            } onCancel: {
                for entry in bound {
                    entry.channel.close(promise: nil)
                }
                self.connections.closeAll()
            }
        } onGracefulShutdown: {
            Task {
                await self.shutdownGracefully()
            }
        }
    }

    /// Stops accepting on every listener, lets in-flight requests finish and
    /// closes idle connections; returns once every connection has closed.
    public func shutdownGracefully() async {
        switch self.state {
        case .initial, .starting:
            self.state = .shutdown
        case .running(let bound):
            self.drainState?.begin()
            if self.configuration.notifiesSupervisor {
                do {
                    try Notify.stopping()
                } catch {
                    self.logger.warning("Cannot notify the supervisor: \(error)")
                }
            }
            self.logger.info("Graceful shutdown: no longer accepting, draining connections")
            // Stop taking connections from the kernel (the next generation will)
            // and let the ones already taken through before the listeners close.
            await ListenerDrain.stopAccepting(bound.map(\.channel), eventLoopGroup: self.eventLoopGroup)
            let futures = bound.map { entry -> EventLoopFuture<Void> in
                let promise = entry.channel.eventLoop.makePromise(of: Void.self)
                entry.quiescingHelper.initiateShutdown(promise: promise)
                return promise.futureResult
            }
            let drained = EventLoopFuture.andAllComplete(futures, on: self.eventLoopGroup.next())
            self.state = .shuttingDown(drained)
            try? await drained.get()
        case .shuttingDown(let drained):
            try? await drained.get()
        case .shutdown:
            return
        }
    }

    // MARK: Private

    private func bindAll() async throws -> [Bound] {
        var bound: [Bound] = []
        do {
            for listener in self.listeners {
                bound.append(try await self.bind(listener))
            }
        } catch {
            for entry in bound {
                try? await entry.channel.close()
            }
            throw error
        }
        return bound
    }

    private func bind(_ listener: Listener) async throws -> Bound {
        let quiescingHelper = ServerQuiescingHelper(group: self.eventLoopGroup)
        let availableConnectionsDelegate = self.configuration.availableConnectionsDelegate
        let drainGrace = self.configuration.drainGrace
        let childChannelSetup = self.childChannelSetup
        let connections = self.connections
        let logger = self.logger
        let channel = try await ServerBootstrap(group: self.eventLoopGroup)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let availableConnectionsDelegate {
                        try channel.pipeline.syncOperations.addHandler(
                            makeAvailableConnectionsHandler(availableConnectionsDelegate)
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        quiescingHelper.makeServerChannelHandler(channel: channel)
                    )
                }
            }
            .childChannelInitializer { channel in
                if drainGrace > .zero {
                    do {
                        try channel.pipeline.syncOperations.addHandler(DrainHandler(grace: drainGrace))
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                return childChannelSetup.setup(channel: channel, logger: logger).map { value in
                    connections.start(channel) {
                        await childChannelSetup.handle(value: value, logger: logger)
                    }
                }
            }
            .withListener(listener)
            .get()
        self.logger.info("Server started and listening on \(listener)")
        return Bound(listener: listener, channel: channel, quiescingHelper: quiescingHelper)
    }

    private func announceReady(_ bound: [Bound]) {
        guard self.configuration.notifiesSupervisor else { return }
        let addresses = bound.map(\.listener.localAddress).joined(separator: ", ")
        do {
            if try Notify.ready(status: "serving \(addresses)") {
                self.logger.debug("Sent READY=1 to the supervisor")
            }
        } catch {
            self.logger.warning("Cannot notify the supervisor: \(error)")
        }
    }
}

/// Hummingbird's handler for an `AvailableConnectionsDelegate` (its own
/// shortcut to it is internal).
private func makeAvailableConnectionsHandler<Delegate: AvailableConnectionsDelegate>(_ delegate: Delegate)
    -> any ChannelDuplexHandler
{
    AvailableConnectionsChannelHandler(delegate: delegate)
}
