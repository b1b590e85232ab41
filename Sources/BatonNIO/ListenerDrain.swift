public import NIOCore

/// Stopping server channels from accepting without dropping the
/// connections they have just taken from the kernel.
///
/// SwiftNIO sets up an accepted connection on that connection's event loop
/// and then, back on the listener's loop, closes it if the listener has been
/// closed meanwhile. Closing a listener at once can therefore reset a
/// client that had already connected and sent its request. Under a
/// supervisor the kernel queue belongs to the shared socket, so what this
/// process has not taken yet is served by the next generation; only what it
/// took must be served here.
///
/// ```swift
/// // On SIGTERM, before closing the server channels (e.g. with NIOExtras' ServerQuiescingHelper):
/// await ListenerDrain.stopAccepting([serverChannel], eventLoopGroup: group)
/// ```
public enum ListenerDrain {
    /// Stops reading new connections on `serverChannels` (the kernel keeps
    /// them queued), then waits until every connection already accepted has
    /// been set up and handed on by SwiftNIO's accept handler. Close the
    /// channels afterwards.
    ///
    /// The wait runs every event loop of the group once, then the listeners'
    /// loops once, twice over: enough for channel initializers that complete
    /// on their own loop without waiting for anything else.
    /// - Parameters:
    ///   - serverChannels: Server channels, e.g. from `ServerBootstrap.withListener(_:)`.
    ///   - eventLoopGroup: The group that runs the accepted channels.
    public static func stopAccepting(_ serverChannels: [any Channel], eventLoopGroup: any EventLoopGroup) async {
        for channel in serverChannels {
            try? await channel.setOption(ChannelOptions.autoRead, value: false).get()
        }
        for _ in 0..<2 {
            for loop in eventLoopGroup.makeIterator() {
                try? await loop.submit {}.get()
            }
            for channel in serverChannels {
                try? await channel.eventLoop.submit {}.get()
            }
        }
    }
}
