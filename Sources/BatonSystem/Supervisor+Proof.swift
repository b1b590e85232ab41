import BatonCore
import BatonProtocol
import CBatonShims
import Glibc

/// The supervisor's end of one proof connection: a connection to a
/// generation's own socket that only the app can take.
final class ProofConnection {
    let fd: Int32
    let generation: Int
    let socket: SocketID

    init(fd: Int32, generation: Int, socket: SocketID) {
        self.fd = fd
        self.generation = generation
        self.socket = socket
    }
}

// The proof of readiness, as the machine asks: connect to a socket of the
// generation's own (through a program that sends this one connection there),
// read the queue that holds it, hear the app answer or close it.
extension Supervisor {
    /// The longest a proof connection may take to connect: it stays on this
    /// machine, and the program that routes it must not outlive the connect.
    static let proofConnectTimeoutMilliseconds: Int32 = 200

    func connectProof(_ number: Int, socket id: SocketID, steer: ProofSteer?) {
        switch makeProofConnection(socket: id, steer: steer) {
        case .success(let fd):
            proofs[fd] = ProofConnection(fd: fd, generation: number, socket: id)
            baton_epoll_watch(epfd, fd, EpollToken.proof(fd).rawValue, 0, 0)
            dispatch(.proofConnected(generation: number, socket: id, failure: nil))
        case .failure(let failure):
            dispatch(.proofConnected(generation: number, socket: id, failure: failure.reason))
        }
    }

    struct ProofFailure: Error {
        var reason: String
    }

    /// A connected proof connection, its sending side shut (an app that
    /// reads it sees the end at once), or why there is none.
    private func makeProofConnection(socket id: SocketID, steer: ProofSteer?) -> Result<Int32, ProofFailure> {
        guard let listener = held[id] else { return .failure(ProofFailure(reason: "the socket is closed")) }
        let fd: Int32
        var connected: Int32
        switch listener.address {
        case .tcp:
            guard let name = SocketName.of(listener.fd), let port = name.port else {
                return .failure(ProofFailure(reason: "getsockname: \(Sys.describe(errno: errno))"))
            }
            let host: String
            switch name {
            case .ipv4(let h, _): host = h == "0.0.0.0" ? "127.0.0.1" : h
            case .ipv6(let h, _): host = h == "::" ? "::1" : h
            case .unix: return .failure(ProofFailure(reason: "not a TCP socket"))
            }
            guard case .success(let destination) = SocketName.resolve(host: host, port: port) else {
                return .failure(ProofFailure(reason: "cannot resolve \(host)"))
            }
            fd = socket(destination.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return .failure(ProofFailure(reason: "socket: \(Sys.describe(errno: errno))")) }
            // A port of its own first: the program recognises the connection by it.
            var any = sockaddr_storage()
            any.ss_family = sa_family_t(destination.family)
            let anyLength = socklen_t(destination.family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafePointer(to: &any) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, anyLength) } }
            guard bound == 0, let sourcePort = SocketName.of(fd)?.port else {
                let e = errno
                close(fd)
                return .failure(ProofFailure(reason: "bind: \(Sys.describe(errno: e))"))
            }
            if let steer {
                guard let via = held[steer.via] else {
                    close(fd)
                    return .failure(ProofFailure(reason: "the serving socket is closed"))
                }
                guard baton_steer_reuseport_probe(via.fd, UInt32(sourcePort), UInt32(steer.probeIndex), UInt32(steer.otherIndex)) == 0
                else {
                    let e = errno
                    close(fd)
                    return .failure(ProofFailure(reason: "cannot attach the program that routes it: \(Sys.describe(errno: e))"))
                }
            }
            connected = destination.withSockaddr { connect(fd, $0, $1) }
            let e = errno
            if connected != 0, e == EINPROGRESS { connected = Self.awaitConnect(fd) } else if connected != 0 { connected = e }
            // The plain program again, whatever came of it.
            if let steer, let via = held[steer.via] { _ = baton_steer_reuseport(via.fd, UInt32(steer.otherIndex)) }
        case .unix(let path):
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return .failure(ProofFailure(reason: "socket: \(Sys.describe(errno: errno))")) }
            // Before it is renamed over the public path, only its own path reaches it.
            connected = Listeners.withUnixAddress(listener.temporaryPath ?? path) { connect(fd, $0, $1) }
            if connected != 0 { connected = errno == EINPROGRESS ? Self.awaitConnect(fd) : errno }
        case .udp:
            return .failure(ProofFailure(reason: "a UDP socket takes no connection"))
        }
        guard connected == 0 else {
            close(fd)
            return .failure(ProofFailure(reason: "connect: \(Sys.describe(errno: connected))"))
        }
        shutdown(fd, Int32(SHUT_WR))
        return .success(fd)
    }

    /// Waits for a non-blocking connect to finish; 0 or its errno.
    private static func awaitConnect(_ fd: Int32) -> Int32 {
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        var rc: Int32
        repeat { rc = poll(&p, 1, proofConnectTimeoutMilliseconds) } while rc < 0 && errno == EINTR
        if rc == 0 { return ETIMEDOUT }
        if rc < 0 { return errno }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        return error
    }

    /// A proof connection became readable: the app answered, closed or reset
    /// it, which it can only do once it took it from the queue (a listener
    /// shut down resets its queue too, so that one does not count).
    func handleProofActivity(_ fd: Int32) {
        guard let proof = proofs[fd] else { return }
        var byte: UInt8 = 0
        var n: Int
        repeat { n = read(fd, &byte, 1) } while n < 0 && errno == EINTR
        if n < 0, errno == EAGAIN { return }
        closeProof(fd)
        guard let listener = held[proof.socket], Self.isListening(listener.fd) else { return }
        dispatch(.proofAnswered(generation: proof.generation, socket: proof.socket))
    }

    /// Closes the proof connections of generation `number`.
    func dropProofs(of number: Int) {
        for (fd, proof) in proofs where proof.generation == number { closeProof(fd) }
    }

    private func closeProof(_ fd: Int32) {
        guard proofs.removeValue(forKey: fd) != nil else { return }
        if epfd >= 0 { baton_epoll_del(epfd, fd) }
        close(fd)
    }
}
