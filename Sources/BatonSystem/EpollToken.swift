/// What an epoll event is about: the one place tokens are encoded and decoded.
enum EpollToken: Equatable {
    /// The signalfd.
    case signals
    /// The notify socket (readiness datagrams).
    case notify
    /// The control socket (new connections).
    case control
    /// A control connection.
    case connection(Int32)
    /// A health probe's connection.
    case probe(Int32)
    /// A listening socket watched for hang-ups.
    case listener(Int32)
    /// A proof connection (the app answers or closes it once it took it).
    case proof(Int32)
    /// The inotify descriptor of development mode.
    case watch

    private enum Kind: UInt64 {
        case signals = 1, notify, control, connection, probe, listener, watch, proof
    }

    /// The 64 bits epoll carries: the kind above, the descriptor below.
    var rawValue: UInt64 {
        switch self {
        case .signals: Kind.signals.rawValue << 32
        case .notify: Kind.notify.rawValue << 32
        case .control: Kind.control.rawValue << 32
        case .connection(let fd): Kind.connection.rawValue << 32 | UInt64(UInt32(bitPattern: fd))
        case .probe(let fd): Kind.probe.rawValue << 32 | UInt64(UInt32(bitPattern: fd))
        case .listener(let fd): Kind.listener.rawValue << 32 | UInt64(UInt32(bitPattern: fd))
        case .watch: Kind.watch.rawValue << 32
        case .proof(let fd): Kind.proof.rawValue << 32 | UInt64(UInt32(bitPattern: fd))
        }
    }

    init?(rawValue: UInt64) {
        let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: rawValue))
        switch Kind(rawValue: rawValue >> 32) {
        case .signals: self = .signals
        case .notify: self = .notify
        case .control: self = .control
        case .connection: self = .connection(fd)
        case .probe: self = .probe(fd)
        case .listener: self = .listener(fd)
        case .watch: self = .watch
        case .proof: self = .proof(fd)
        case nil: return nil
        }
    }
}
