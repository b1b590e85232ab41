public import BatonListen
public import Hummingbird
public import HummingbirdCore
public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
public import UnixSignals

/// A Hummingbird 2 application served on the listening sockets a supervisor
/// passed down (or, standalone, on one it binds itself), as a
/// swift-service-lifecycle `Service`.
///
/// ```swift
/// let router = Router()
/// router.get("/") { _, _ in "hello" }
/// let app = BatonApplication(router: router)
/// try await app.runService()   // drains and returns on SIGTERM or SIGINT
/// ```
///
/// It answers requests exactly as Hummingbird's `Application` does: the same
/// router and middleware, a `Date` header on every response, the `Server`
/// header when ``Configuration/serverName`` is set, a request id in each
/// request's logger metadata (`hb.request.id`), errors that are not HTTP
/// errors turned into a 500, the same HTTP/1 channel (or any child channel
/// through ``BatonServerBuilder``), and `Service`s run alongside in one
/// `ServiceGroup`.
///
/// What differs from `Application.run`, and why:
/// - **Sockets.** Hummingbird 2.28 can only bind an address itself (its
///   `BindAddress` has no descriptor case and `Server.makeServer` is
///   internal), so this type builds the server from public pieces
///   (``ListenerServer``) and serves every inherited socket, e.g. IPv4,
///   IPv6 and unix listeners plus a private health-probe listener, with
///   SwiftNIO's `bind(_ socket:)`. With nothing inherited it binds
///   ``Configuration/fallbackAddress``. `ApplicationConfiguration`'s
///   `address`, `backlog` and `reuseAddress` have no meaning for a socket
///   someone else bound, so they are not offered.
/// - **Readiness.** Once every listener is accepting it sends `READY=1` (with
///   a `STATUS=` line) to `NOTIFY_SOCKET`, and `STOPPING=1` when a graceful
///   stop begins, so a supervisor knows when to retire the previous
///   generation. `Application` has no such signal.
/// - **Draining.** On graceful shutdown the listeners first stop taking
///   connections from the kernel (the next generation takes the shared queue)
///   and the connections already taken are let through SwiftNIO's accept
///   handler before the listeners close (it resets a connection whose setup
///   ends after its listener closed). Each accepted connection is served by a
///   task of its own, so none can be dropped between accept and service (a
///   SwiftNIO async-bind hazard that traps the process). Every response
///   written once the stop has begun says `Connection: close`, so a keep-alive
///   client opens its next connection to the new generation. Idle connections
///   are closed after ``Configuration/drainGrace`` (100 ms by default) and, on
///   TCP, only once the kernel holds no unread request bytes for them, instead
///   of at once. Stock Hummingbird does none of this; a first version of
///   this server built the way its `Server` is lost 8 to 18 requests over
///   20 restarts under load, and this one none (see docs/LIBRARY.md).
/// - **`Connection: close`** in a request is answered with `Connection: close`
///   in its response, which stock Hummingbird leaves out.
/// - **The `Date` header** is formatted on the first request of each second
///   rather than by a timer service; the value is the same.
public struct BatonApplication<Responder: HTTPResponder>: Service, CustomStringConvertible
where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    /// How the application listens, answers and drains.
    public struct Configuration: Sendable {
        /// The address to bind when no socket was inherited (standalone
        /// development). Default `127.0.0.1:8080`.
        public var fallbackAddress: ListenAddress
        /// The accept-queue limit of the fallback socket; nil asks for the
        /// kernel's maximum. Inherited sockets keep the supervisor's.
        public var fallbackBacklog: Int32?
        /// The value of the `Server` response header, if any.
        public var serverName: String?
        /// Decides when to stop accepting for a while (e.g. `MaximumAvailableConnections`).
        public var availableConnectionsDelegate: (any AvailableConnectionsDelegate)?
        /// How long idle connections stay open once a graceful stop has
        /// begun (see ``ListenerServer/Configuration/drainGrace``).
        public var drainGrace: TimeAmount
        /// Whether to send `READY=1` and `STOPPING=1` to `NOTIFY_SOCKET`.
        public var notifiesSupervisor: Bool

        /// Creates a configuration. The last three settings repeat
        /// ``ListenerServer/Configuration``'s on purpose: an app sets
        /// everything in one place, as with Hummingbird's `Application`.
        /// - Parameters:
        ///   - fallbackAddress: The address to bind when nothing was inherited.
        ///   - fallbackBacklog: The fallback socket's accept-queue limit.
        ///   - serverName: The `Server` response header, if any.
        ///   - availableConnectionsDelegate: Limits concurrent connections, if set.
        ///   - drainGrace: How long idle connections stay open once a graceful stop has begun.
        ///   - notifiesSupervisor: Whether to send `READY=1` and `STOPPING=1`.
        public init(
            fallbackAddress: ListenAddress = .host("127.0.0.1", port: 8080),
            fallbackBacklog: Int32? = nil,
            serverName: String? = nil,
            availableConnectionsDelegate: (any AvailableConnectionsDelegate)? = nil,
            drainGrace: TimeAmount = .milliseconds(100),
            notifiesSupervisor: Bool = true
        ) {
            self.fallbackAddress = fallbackAddress
            self.fallbackBacklog = fallbackBacklog
            self.serverName = serverName
            self.availableConnectionsDelegate = availableConnectionsDelegate
            self.drainGrace = drainGrace
            self.notifiesSupervisor = notifiesSupervisor
        }
    }

    /// Answers requests.
    public let responder: Responder
    /// Builds the per-connection channel setup.
    public let server: BatonServerBuilder
    /// How the application listens, answers and drains.
    public var configuration: Configuration
    /// The sockets to serve; nil takes ``BatonListen/Listeners/inheritedOrBind(_:backlog:)``
    /// with the configuration's fallback address when ``run()`` starts.
    public var listeners: [Listener]?
    /// Services run alongside the server, started before it and stopped after it.
    public var services: [any Service]
    /// The application's logger.
    public var logger: Logger
    /// The event loops the server runs on.
    public let eventLoopGroup: any EventLoopGroup
    private let onServerRunning: @Sendable (any Channel) async -> Void
    private var processesRunBeforeServerStart: [@Sendable () async throws -> Void]

    // The two initialisers list the same parameters on purpose: Hummingbird's
    // `Application` offers both `init(responder:)` and `init(router:)`, and
    // Swift cannot share default arguments between initialisers.

    /// Creates an application from a responder.
    /// - Parameters:
    ///   - responder: Answers requests.
    ///   - server: The per-connection channel setup; HTTP/1 by default.
    ///   - configuration: How the application listens, answers and drains.
    ///   - listeners: The sockets to serve; nil (the default) serves the
    ///     inherited ones, or binds the fallback address when there are none.
    ///   - services: Services run alongside the server.
    ///   - onServerRunning: Called with each server channel once all are accepting.
    ///   - eventLoopGroupProvider: Where the event loops come from.
    ///   - logger: The logger; by default one labelled with the server name
    ///     or "Hummingbird", at the level `LOG_LEVEL` names.
    public init(
        responder: Responder,
        server: BatonServerBuilder = .http1(),
        configuration: Configuration = Configuration(),
        listeners: [Listener]? = nil,
        services: [any Service] = [],
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in },
        eventLoopGroupProvider: EventLoopGroupProvider = .singleton,
        logger: Logger? = nil
    ) {
        if let logger {
            self.logger = logger
        } else {
            var logger = Logger(label: configuration.serverName ?? "Hummingbird")
            if let level = Environment().get("LOG_LEVEL").flatMap({ Logger.Level(rawValue: $0) }) {
                logger.logLevel = level
            }
            self.logger = logger
        }
        self.responder = responder
        self.server = server
        self.configuration = configuration
        self.listeners = listeners
        self.services = services
        self.onServerRunning = onServerRunning
        self.eventLoopGroup = eventLoopGroupProvider.eventLoopGroup
        self.processesRunBeforeServerStart = []
    }

    /// Creates an application from a router (or any responder builder).
    /// - Parameters:
    ///   - router: Builds the responder, e.g. a `Router`.
    ///   - server: The per-connection channel setup; HTTP/1 by default.
    ///   - configuration: How the application listens, answers and drains.
    ///   - listeners: The sockets to serve; nil (the default) serves the
    ///     inherited ones, or binds the fallback address when there are none.
    ///   - services: Services run alongside the server.
    ///   - onServerRunning: Called with each server channel once all are accepting.
    ///   - eventLoopGroupProvider: Where the event loops come from.
    ///   - logger: The logger; by default one labelled with the server name
    ///     or "Hummingbird", at the level `LOG_LEVEL` names.
    public init<ResponderBuilder: HTTPResponderBuilder>(
        router: ResponderBuilder,
        server: BatonServerBuilder = .http1(),
        configuration: Configuration = Configuration(),
        listeners: [Listener]? = nil,
        services: [any Service] = [],
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in },
        eventLoopGroupProvider: EventLoopGroupProvider = .singleton,
        logger: Logger? = nil
    ) where Responder == ResponderBuilder.Responder {
        self.init(
            responder: router.buildResponder(),
            server: server,
            configuration: configuration,
            listeners: listeners,
            services: services,
            onServerRunning: onServerRunning,
            eventLoopGroupProvider: eventLoopGroupProvider,
            logger: logger
        )
    }

    /// "BatonApplication".
    public var description: String { "BatonApplication" }

    /// Adds services to run alongside the server.
    /// - Parameter services: The services.
    public mutating func addServices(_ services: any Service...) {
        self.services.append(contentsOf: services)
    }

    /// Adds work to run once the services are running but before the server
    /// accepts (for instance a database migration); `READY=1` waits for it.
    /// - Parameter process: The work.
    public mutating func beforeServerStarts(perform process: @escaping @Sendable () async throws -> Void) {
        self.processesRunBeforeServerStart.append(process)
    }

    /// Runs the services and the server until a graceful shutdown has
    /// drained every connection.
    /// - Throws: ``BatonListen/ListenError`` when the inherited sockets are
    ///   wrong or the fallback cannot be bound, or any service's error.
    public func run() async throws {
        let listeners =
            try self.listeners
            ?? Listeners.inheritedOrBind(
                self.configuration.fallbackAddress,
                backlog: self.configuration.fallbackBacklog
            )
        let drainState = DrainState()
        let childChannel = try self.server.build(self.makeChannelResponder(drainState: drainState))
        let server = self.makeServer(childChannel, listeners: listeners, drainState: drainState)
        let serviceGroup = ServiceGroup(
            configuration: .init(services: self.services + [server], logger: self.logger)
        )
        try await serviceGroup.run()
    }

    /// Runs the application in a `ServiceGroup` that starts a graceful
    /// shutdown on the given signals, and returns when it has drained.
    /// - Parameter gracefulShutdownSignals: The signals that stop the
    ///   application gracefully; SIGTERM and SIGINT by default.
    /// - Throws: As ``run()``.
    public func runService(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint]) async throws {
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [self],
                gracefulShutdownSignals: gracefulShutdownSignals,
                logger: self.logger
            )
        )
        try await serviceGroup.run()
    }

    // MARK: Private

    private func makeServer<ChildChannel: ServerChildChannel>(
        _ childChannel: ChildChannel,
        listeners: [Listener],
        drainState: DrainState
    ) -> any Service {
        ListenerServer(
            childChannelSetup: childChannel,
            listeners: listeners,
            configuration: .init(
                availableConnectionsDelegate: self.configuration.availableConnectionsDelegate,
                drainGrace: self.configuration.drainGrace,
                notifiesSupervisor: self.configuration.notifiesSupervisor
            ),
            onServerRunning: self.onServerRunning,
            beforeServerStarts: self.processesRunBeforeServerStart,
            eventLoopGroup: self.eventLoopGroup,
            logger: self.logger,
            drainState: drainState
        )
    }

    /// The responder handed to the channel: the same steps as the one
    /// `Application.run` builds, plus `Connection: close` once draining.
    private func makeChannelResponder(drainState: DrainState) -> HTTPChannelHandler.Responder {
        let responder = self.responder
        let logger = self.logger
        let serverName = self.configuration.serverName
        let dateCache = HTTPDateCache()
        return { (request, responseWriter: consuming ResponseWriter, channel) in
            var requestLogger = logger
            requestLogger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
            let response = try await withLogger(requestLogger) { logger in
                let context = Responder.Context(source: .init(channel: channel, logger: logger))
                var response: Response
                do {
                    response = try await responder.respond(to: request, context: context)
                } catch let error as HTTPParserError {
                    throw error
                } catch {
                    logger.debug("Unrecognised Error", metadata: ["error.type": "\(error)"])
                    response = Response(status: .internalServerError, body: .init())
                }
                response.headers[.date] = dateCache.current
                if let serverName {
                    response.headers[.server] = serverName
                }
                if drainState.isDraining || request.asksToClose {
                    // Draining: tell a keep-alive client not to send its next
                    // request here. Asked to close: say so (RFC 9112, 9.6), or
                    // a client may send its next request on this connection.
                    response.headers[.connection] = "close"
                }
                return response
            }
            do {
                try await responseWriter.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // Rethrowing the parser error would make the channel write a
                // second (400) response; any other error just closes it.
                throw ParseErrorWhileWritingResponse()
            }
        }
    }
}

extension Request {
    /// Whether the request's `Connection` header carries the `close` option.
    fileprivate var asksToClose: Bool {
        self.headers[values: .connection].contains { value in
            value.split(separator: ",").contains { option in
                option.filter { $0 != " " && $0 != "\t" }.lowercased() == "close"
            }
        }
    }
}

/// Thrown when a request turns out malformed while its response is being
/// written: the channel then closes without answering twice.
struct ParseErrorWhileWritingResponse: Error {}
