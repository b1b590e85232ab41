import BatonCore
import CBatonShims
import Glibc

// The sockets, as the machine's actions ask: bound at start, opened for a
// generation, steered, renamed over a unix path, shut down, closed.
extension Supervisor {
    /// Binds (or adopts) the configured listeners and tells how each is handed to generations.
    func openListeners() throws(BatonError) -> [ListenerMode] {
        if let adopted = try Listeners.adoptSystemd() {
            templates = adopted
            socketsFromSystemd = true
            Log.line(
                "adopted \(adopted.count) socket(s) from systemd: \(adopted.map { $0.address.description }.joined(separator: ", ")); "
                    + "they stay shared by every generation (a socket systemd passed cannot be duplicated)")
            return adopted.map { _ in .shared }
        }
        guard !configuration.listen.isEmpty || configuration.allowNoListeners else {
            throw BatonError(.usage, "no address to listen on; give at least one --listen (for example --listen 8080)")
        }
        let steered = configuration.listenMode == .steered
        templates = try Listeners.bind(
            configuration.listen, backlog: configuration.backlog, socketMode: configuration.socketMode, reusePort: steered)
        return templates.map { Self.mode(of: $0, steered: steered) }
    }

    /// How generations get listener `l`: their own socket where the mode asks for it and the kernel allows.
    static func mode(of l: Listener, steered: Bool) -> ListenerMode {
        guard steered else { return .shared }
        switch l.address {
        case .tcp:
            if Listeners.canSteer(l) { return .steered }
            Log.warning("\(l.address): the kernel refuses a steering program (\(Sys.describe(errno: errno))); this listener is shared")
            return .shared
        case .unix(let path):
            if Listeners.temporaryPath(for: path, socket: 1_000_000) != nil { return .renamed }
            Log.warning("\(path): too long for a generation's own socket next to it; this listener is shared")
            return .shared
        case .udp:
            // Datagrams have no connections to drop at a signal and no
            // accept queue to drain: one socket serves every generation.
            return .shared
        }
    }

    /// The live listeners in the order of `--listen` (a listener systemd
    /// passed, or one the configuration does not name, keeps its place after them).
    func liveListenerOrder() -> [Int] {
        let live = templates.indices.filter { machine.retiredListeners[$0] == nil }
        func rank(_ l: Int) -> Int {
            configuration.listen.firstIndex { $0.address == templates[l].address || $0.address == templates[l].configured } ?? Int.max
        }
        return live.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }

    /// The listeners a generation gets, in the order of `--listen`, each
    /// with the key and descriptor number the configuration gives it now;
    /// its health listener last.
    func orderedForSpawn(_ ids: [SocketID]) -> [Listener]? {
        let order = Dictionary(uniqueKeysWithValues: liveListenerOrder().enumerated().map { ($1, $0) })
        var entries: [(rank: Int, listener: Listener)] = []
        for id in ids {
            guard var l = held[id] else { return nil }
            if let index = machine.sockets[id]?.listener, templates.indices.contains(index) {
                l.envKey = templates[index].envKey
                l.targetFD = templates[index].targetFD
                l.name = templates[index].name
                entries.append((order[index] ?? Int.max - 1, l))
            } else {
                entries.append((Int.max, l))
            }
        }
        return entries.enumerated().sorted { ($0.element.rank, $0.offset) < ($1.element.rank, $1.offset) }.map(\.element.listener)
    }

    /// Takes up the listener changes a re-exec brought: the new addresses
    /// (bound by the previous program) join, those taken out retire.
    func applyListenerChange(_ change: ListenerChange) {
        for (listener, mode) in change.added {
            let id = machine.addListener(mode)
            templates.append(listener)
            held[id] = listener
            _ = baton_fcntl_setfd(listener.fd, FD_CLOEXEC)
            watchHangUps(of: id)
            Log.line("\(listener.address): listening (added by the re-exec; \(mode.rawValue))")
        }
        for l in change.removed {
            for id in machine.retireListener(l) { closeSocket(id) }
            Log.line(
                machine.isListenerOpen(l)
                    ? "\(templates[l].address): taken out; it closes once the generations that hold it exited"
                    : "\(templates[l].address): taken out and closed")
        }
        // The keys and descriptor numbers the configuration gives the listeners that stay.
        for l in templates.indices where machine.retiredListeners[l] == nil {
            guard
                let spec = configuration.listen.first(where: { $0.address == templates[l].address || $0.address == templates[l].configured }
                )
            else { continue }
            templates[l].envKey = spec.envKey ?? templates[l].address.serverStarterKey
            templates[l].targetFD = spec.fd
        }
    }

    /// Opens one socket a spawn needs.
    func openSocket(_ opening: SocketOpening) -> Result<Void, BatonError> {
        do {
            guard let l = opening.listener else {
                held[opening.id] = try makeHealthListener()
                return .success(())
            }
            let template = templates[l]
            var temporary: String?
            if case .unix(let path) = template.address { temporary = Listeners.temporaryPath(for: path, socket: opening.id) }
            held[opening.id] = try Listeners.bindAnother(
                template, backlog: configuration.backlog, socketMode: configuration.socketMode, temporaryPath: temporary)
            watchHangUps(of: opening.id)
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    /// A private listener for one generation's health probe: 127.0.0.1 on a
    /// port the kernel chooses, known only to the supervisor and that generation.
    func makeHealthListener() throws(BatonError) -> Listener {
        var l = try Listeners.bind([ListenSpec(.tcp(host: "127.0.0.1", port: 0))], backlog: 64, socketMode: 0o600)[0]
        l.name = "baton-health"
        l.envKey = l.address.description
        return l
    }

    func steer(via id: SocketID, index: Int) {
        guard let l = held[id] else { return }
        do { try Listeners.steer(l.fd, toSlot: index) } catch { Log.warning("\(l.address): \(error.message)") }
    }

    /// Renames a generation's own unix socket over the public path. The
    /// socket it displaces keeps a path of its own (a hard link made first),
    /// so that new connections can be sent back to it (a failed probation).
    func publish(_ id: SocketID) {
        guard var l = held[id], case .unix(let path) = l.address else { return }
        let displaced = held.first { $0.key != id && $0.value.createdFile?.path == path }?.key
        var kept: String?
        if let displaced, let keep = Listeners.temporaryPath(for: path, socket: displaced) {
            unlink(keep)
            if link(path, keep) == 0 { kept = keep }
        }
        do {
            try Listeners.publish(&l)
        } catch {
            if let kept { unlink(kept) }
            Log.warning(error.message)
            return
        }
        // The file at the public path is this socket's now.
        for (other, o) in held where other != id && o.createdFile?.path == path { held[other]?.createdFile = nil }
        if let displaced, let kept {
            held[displaced]?.temporaryPath = kept
            held[displaced]?.createdFile = Sys.identity(kept).map { (kept, $0.dev, $0.ino) }
        }
        held[id] = l
    }

    func shutDown(_ id: SocketID) {
        guard let l = held[id] else { return }
        baton_epoll_del(epfd, l.fd)
        Listeners.shutDown(l)
    }

    func closeSocket(_ id: SocketID) {
        guard let l = held.removeValue(forKey: id) else { return }
        if epfd >= 0 { baton_epoll_del(epfd, l.fd) }
        // A steered socket leaves its SO_REUSEPORT group only when its last
        // descriptor closes: workers that escaped their process group may
        // still hold it, and the machine's model of the group (and the
        // slot the program names) would then be wrong. shutdown() takes it
        // out of the group for every holder; its queue is empty by now.
        if l.reusePort { Listeners.shutDown(l) }
        Listeners.release([l])
    }

    /// Watches a listener for hang-ups only (epoll reports EPOLLHUP whatever the mask).
    func watchHangUps(of id: SocketID) {
        guard let l = held[id], l.fd >= 0 else { return }
        baton_epoll_watch_hangup(epfd, l.fd, EpollToken.listener(l.fd).rawValue)
    }

    /// A watched listener hung up: a process that holds it called
    /// `shutdown()`, which stops a socket for every process that holds it.
    func handleListenerHangUp(_ fd: Int32) {
        baton_epoll_del(epfd, fd)
        guard let id = held.first(where: { $0.value.fd == fd })?.key else { return }
        if Self.isListening(fd) {
            watchHangUps(of: id)
            return
        }
        Log.line("listener \(held[id]!.address) was shut down by a process that holds it")
        dispatch(.socketHungUp(id))
    }

    /// Puts a shut-down socket back to listening (a TCP one; a unix socket cannot).
    func relisten(_ id: SocketID) {
        guard let l = held[id] else { return }
        guard l.isTCP else {
            Log.line(
                l.address.isDatagram
                    ? "\(l.address): a UDP socket cannot be used again once shut down: nothing reaches it until baton is restarted"
                    : "\(l.address): a unix socket cannot listen again once shut down: connections to it are refused until baton is restarted"
            )
            return
        }
        // A port the kernel chose (port 0) was given back by the shutdown:
        // take the same one again; an explicit port is still bound (EINVAL).
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(l.fd, $0, &length) }
        }
        if named == 0 {
            _ = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(l.fd, $0, length) } }
        }
        let backlog = configuration.backlog ?? baton_somaxconn()
        if listen(l.fd, backlog) == 0, Self.isListening(l.fd), Listeners.localAddress(l.fd) == l.address {
            Log.line("\(l.address): listening on it again")
            watchHangUps(of: id)
        } else {
            Log.line(
                "\(l.address): cannot listen on it again (\(Sys.describe(errno: errno))): connections are refused until baton is restarted")
        }
    }

    static func isListening(_ fd: Int32) -> Bool {
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 && accepting == 1
    }
}
