public import BatonListen
public import NIOCore
public import NIOPosix

/// Serving a SwiftNIO `ServerBootstrap` on a ``BatonListen/Listener``: a
/// socket inherited from a supervisor, or one the app bound itself.
///
/// ```swift
/// let listeners = try Listeners.inheritedOrBind(.host("127.0.0.1", port: 8080))
/// let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
///     .bind(listener: listeners[0]) { channel in
///         channel.eventLoop.makeCompletedFuture {
///             try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
///         }
///     }
/// try Notify.ready()
/// ```
///
/// SwiftNIO takes the descriptor over: it makes it non-blocking (a flag the
/// supervisor and the other generations share, which they do not mind),
/// calls `listen()` on it again with its own default queue limit (128),
/// and closes it when the server channel closes. These functions put the
/// listener's original queue limit back right after (see
/// ``BatonListen/Listener/restoreBacklog()``). Serve each listener once.
extension ServerBootstrap {
    /// Serves an existing listening socket, with the async `NIOAsyncChannel` API.
    ///
    /// - Parameters:
    ///   - listener: The socket to accept on; SwiftNIO owns it from now on.
    ///   - serverBackPressureStrategy: Back pressure for the stream of accepted channels.
    ///   - childChannelInitializer: Sets up each accepted channel and returns
    ///     what the server channel's inbound stream yields for it.
    /// - Returns: The server channel, already accepting.
    /// - Throws: When SwiftNIO cannot adopt the socket.
    public func bind<Output: Sendable>(
        listener: Listener,
        serverBackPressureStrategy: NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark? = nil,
        childChannelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Output>
    ) async throws -> NIOAsyncChannel<Output, Never> {
        let channel = try await self.bind(
            listener.descriptor,
            serverBackPressureStrategy: serverBackPressureStrategy,
            childChannelInitializer: childChannelInitializer
        )
        try await channel.channel.eventLoop.submit {
            try listener.restoreBacklog()
        }.get()
        return channel
    }

    /// Serves an existing listening socket, with the `EventLoopFuture` API.
    ///
    /// - Parameter listener: The socket to accept on; SwiftNIO owns it from now on.
    /// - Returns: A future for the server channel, already accepting.
    public func withListener(_ listener: Listener) -> EventLoopFuture<any Channel> {
        self.withBoundSocket(listener.descriptor).flatMapThrowing { channel in
            try listener.restoreBacklog()
            return channel
        }
    }
}
