import Glibc
import NIOCore

/// Holds back the quiesce event of a graceful stop until no request can be
/// waiting unread on the connection, then passes it on to the HTTP handlers.
///
/// On quiesce, Hummingbird closes a connection at once unless it has begun
/// reading a request. A connection the kernel handed over just before the
/// stop, or a keep-alive connection whose next request is arriving, may hold
/// request bytes that have not been read yet: closing it then resets it and
/// fails a request that a zero-downtime restart should have served.
///
/// So the event waits for the grace period, then, on TCP, for as long as the
/// kernel has received more bytes than this connection has read
/// (`tcpi_bytes_received` against a count kept here, this handler being the
/// first of the pipeline), checking every 10 ms, at most 50 times. Once the bytes are read, the HTTP handler knows about
/// the request and closes the connection after answering it.
final class DrainHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let grace: TimeAmount
    private var bytesRead: UInt64 = 0
    private var inputClosed = false
    private var quiescing = false

    static let checkInterval: TimeAmount = .milliseconds(10)
    static let maximumChecks = 50

    init(grace: TimeAmount) {
        self.grace = grace
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.bytesRead &+= UInt64(self.unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            self.inputClosed = true
        }
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard !self.quiescing else { return }
        self.quiescing = true
        self.check(context: context, after: self.grace, checksLeft: Self.maximumChecks)
    }

    private func check(context: ChannelHandlerContext, after delay: TimeAmount, checksLeft: Int) {
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            guard context.channel.isActive else { return }
            guard checksLeft > 0, let provider = context.channel as? any SocketOptionProvider else {
                context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
                return
            }
            let info: EventLoopFuture<KernelTCPInfo> = provider.unsafeGetSocketOption(
                level: SocketOptionLevel(IPPROTO_TCP),
                name: TCP_INFO
            )
            info.hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
                guard context.channel.isActive else { return }
                // A received FIN counts one byte too.
                let read = self.bytesRead + (self.inputClosed ? 1 : 0)
                if case .success(let info) = result, info.bytesReceived > read {
                    self.check(context: context, after: Self.checkInterval, checksLeft: checksLeft - 1)
                } else {
                    context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
                }
            }
        }
    }
}

@available(*, unavailable)
extension DrainHandler: Sendable {}

/// The kernel's `struct tcp_info`, which is longer than glibc's: glibc's
/// stops before `tcpi_bytes_received` (a 64-bit count at byte 128, since
/// Linux 4.1). The storage is zeroed before `getsockopt`, so an older kernel
/// reads as zero bytes received.
struct KernelTCPInfo: Sendable {
    private var words:
        (
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
        )

    /// `tcpi_bytes_received`: bytes received in order, read or not.
    var bytesReceived: UInt64 {
        withUnsafeBytes(of: self.words) { $0.load(fromByteOffset: 128, as: UInt64.self) }
    }
}
