import NIOCore

/// Holds back the quiesce event of a graceful stop for a short grace period
/// before passing it on to the HTTP handlers.
///
/// On quiesce, Hummingbird closes a connection at once unless a request is
/// in progress on it. A connection the kernel handed over just before the
/// stop, whose request bytes have arrived but not yet been read, counts as
/// idle and would be reset, failing a request that a supervisor's
/// zero-downtime restart promised to serve. Within the grace period such a
/// request is read, so the HTTP handler answers it and then closes.
final class QuiesceDelayHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let delay: TimeAmount
    private var delayed = false

    init(delay: TimeAmount) {
        self.delay = delay
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard !self.delayed else { return }
        self.delayed = true
        context.eventLoop.assumeIsolated().scheduleTask(in: self.delay) {
            if context.channel.isActive {
                context.fireUserInboundEventTriggered(event)
            }
        }
    }
}

@available(*, unavailable)
extension QuiesceDelayHandler: Sendable {}
