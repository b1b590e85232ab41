public import HummingbirdCore
public import NIOCore

/// Builds the per-connection channel setup (HTTP/1, or another
/// `ServerChildChannel` such as Hummingbird's HTTP/2 or WebSocket channels)
/// from the responder ``BatonApplication`` builds.
///
/// The counterpart of Hummingbird's `HTTPServerBuilder`, whose build closure
/// is not public.
///
/// ```swift
/// let app = BatonApplication(router: router, server: .http1(configuration: .init(idleTimeout: .seconds(30))))
/// ```
public struct BatonServerBuilder: Sendable {
    let build: @Sendable (@escaping HTTPChannelHandler.Responder) throws -> any ServerChildChannel

    /// Creates a builder from a closure that turns the application's
    /// responder into a child channel setup.
    /// - Parameter build: Returns the child channel setup for a responder.
    public init(_ build: @escaping @Sendable (@escaping HTTPChannelHandler.Responder) throws -> any ServerChildChannel) {
        self.build = build
    }

    /// HTTP/1.1, as Hummingbird's `.http1(configuration:)`.
    /// - Parameter configuration: The HTTP/1 channel configuration (idle timeout, decoder limits, extra handlers).
    /// - Returns: The builder.
    public static func http1(configuration: HTTP1Channel.Configuration = .init()) -> BatonServerBuilder {
        BatonServerBuilder { responder in
            HTTP1Channel(responder: responder, configuration: configuration)
        }
    }
}
