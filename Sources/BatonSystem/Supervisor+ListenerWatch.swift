import BatonCore
import CBatonShims
import Glibc

/// A listening socket shared by every generation is one socket: when any
/// process holding it calls `shutdown(SHUT_RD)` or `shutdown(SHUT_RDWR)` on
/// it (some servers do on their way out, to wake threads blocked in
/// accept), the kernel stops it for all of them, and the generation that
/// serves can accept nothing more. The supervisor watches its copies for
/// that hang-up and puts a TCP socket back to listening at once; a unix
/// socket cannot listen again once shut down, which is logged.
extension Supervisor {
    /// Tokens of watched listeners: this plus their descriptor.
    static let listenerTokenBase: UInt64 = 3_000_000

    /// Watches the shared listeners for hang-ups (not in hand-over mode,
    /// where each generation has its own TCP socket and the supervisor
    /// itself shuts the old ones).
    func watchSharedListeners() {
        guard !configuration.handover else { return }
        for l in listeners where l.fd >= 0 {
            baton_epoll_watch_hangup(epfd, l.fd, Self.listenerTokenBase + UInt64(l.fd))
        }
    }

    /// A watched listener hung up: listen again if it stopped.
    func handleListenerHangUp(_ fd: Int32) {
        guard let l = listeners.first(where: { $0.fd == fd }) else {
            baton_epoll_del(epfd, fd)
            return
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if Self.isListening(fd) { return }
        let what = "listener \(l.address) was shut down by a process that holds it (shutdown() stops a shared socket for every process)"
        guard l.isTCP else {
            baton_epoll_del(epfd, fd)
            Log.line("\(what); a unix socket cannot listen again: connections to it are refused until baton is restarted")
            return
        }
        // A port the kernel chose (port 0) was given back by the shutdown:
        // take the same one again; an explicit port is still bound (EINVAL).
        var storage = sockaddr_storage()
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        if named == 0 {
            _ = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        }
        let backlog = configuration.backlog ?? baton_somaxconn()
        if listen(fd, backlog) == 0, Self.isListening(fd), Listeners.localAddress(fd) == l.address {
            Log.line("\(what); listening on it again")
        } else {
            let e = errno
            baton_epoll_del(epfd, fd)
            Log.line("\(what); cannot listen on it again (\(Sys.describe(errno: e))): connections are refused until baton is restarted")
        }
    }

    static func isListening(_ fd: Int32) -> Bool {
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 && accepting == 1
    }
}
