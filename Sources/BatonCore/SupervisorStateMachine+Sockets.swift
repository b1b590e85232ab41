// Which sockets each generation holds, and where new connections go.
//
// Steered listeners keep the machine's model of their SO_REUSEPORT group in
// step with the kernel: a socket joins when the shell opens it, leaves only
// when the machine closes or shuts it down, and the steering program is
// attached again whenever the target's slot changes. A socket whose
// generation is gone stays open as a spare while closing it would move the
// target, and is given to the next generation instead of a new one.
extension SupervisorStateMachine {
    /// The sockets generation `number` gets, one per listener (its own or
    /// the shared one), its health listener last; and the new ones to open.
    mutating func socketsForSpawn(of number: Int, _ out: inout [SupervisorAction]) -> ([SocketID], [SocketOpening]) {
        var open: [SocketOpening] = []
        for (l, mode) in listeners.enumerated() where retiredListeners[l] == nil {
            switch mode {
            case .shared:
                continue
            case .steered:
                let group = groups[l] ?? ReuseportGroup()
                if let spare = spare(for: l, preferring: group.target) {
                    sockets[spare]?.owner = number
                    continue
                }
                // A socket joins only once the program points at the target,
                // or new connections would be hashed onto it before its app boots.
                if let target = group.target, let index = group.index(of: target), group.attachedIndex != index {
                    groups[l]?.attachedIndex = index
                    out.append(.steer(listener: l, via: target, index: index))
                }
                let id = newSocket(listener: l, owner: number)
                groups[l, default: ReuseportGroup()].join(id)
                sockets[id]?.inGroup = true
                open.append(SocketOpening(id: id, listener: l, generation: number))
            case .renamed:
                if let spare = spare(for: l, preferring: nil) {
                    sockets[spare]?.owner = number
                    continue
                }
                let id = newSocket(listener: l, owner: number)
                sockets[id]?.published = false
                open.append(SocketOpening(id: id, listener: l, generation: number))
            }
        }
        if policy.health != nil {
            let id = newSocket(listener: nil, owner: number)
            open.append(SocketOpening(id: id, listener: nil, generation: number))
        }
        return (socketSet(of: number), open)
    }

    /// The descriptors generation `number` gets, in order.
    public func socketSet(of number: Int) -> [SocketID] {
        var set: [SocketID] = []
        for (l, mode) in listeners.enumerated() where retiredListeners[l].map({ number < $0 }) ?? true {
            if mode == .shared {
                if sockets[listenerSockets[l]] != nil { set.append(listenerSockets[l]) }
            } else if let own = sockets.first(where: { $0.value.listener == l && $0.value.owner == number })?.key {
                set.append(own)
            }
        }
        if let health = sockets.first(where: { $0.value.listener == nil && $0.value.owner == number })?.key { set.append(health) }
        return set
    }

    /// The sockets of `number` that are its own (not shared, not its health listener).
    public func ownSockets(of number: Int) -> [SocketID] {
        sockets.filter { $0.value.owner == number && $0.value.listener.map { listeners[$0] != .shared } == true }.map(\.key).sorted()
    }

    /// A spare socket of listener `l`: `preferring` if it is spare, else the
    /// lowest-numbered one. A renamed listener's only spare is the published one.
    func spare(for l: Int, preferring: SocketID?) -> SocketID? {
        let spares = sockets.filter { $0.value.listener == l && $0.value.owner == nil && $0.value.isOpen }
            .filter { listeners[l] != .steered || $0.value.inGroup }
            .filter { listeners[l] != .renamed || $0.value.published }
            .map(\.key).sorted()
        if let preferring, spares.contains(preferring) { return preferring }
        return spares.first
    }

    mutating func newSocket(listener: Int?, owner: Int) -> SocketID {
        let id = nextSocketID
        nextSocketID += 1
        sockets[id] = SocketRecord(listener: listener, owner: owner, inGroup: false, published: true, isOpen: false)
        return id
    }

    /// The socket is closed (by the shell): out of the model, out of its group.
    mutating func forgetSocket(_ id: SocketID) {
        if let l = sockets[id]?.listener, sockets[id]?.inGroup == true { groups[l]?.leave(id) }
        sockets[id] = nil
    }

    /// New connections go to generation `number`'s own sockets from now on.
    mutating func steer(to number: Int, _ out: inout [SupervisorAction]) {
        for id in ownSockets(of: number) {
            guard let l = sockets[id]?.listener else { continue }
            switch listeners[l] {
            case .steered:
                groups[l]?.target = id
                attachIfNeeded(l, &out)
            case .renamed:
                if sockets[id]?.published == false {
                    // The socket at the public path before becomes a plain unnamed one.
                    for (other, r) in sockets where r.listener == l && r.published { sockets[other]?.published = false }
                    sockets[id]?.published = true
                    out.append(.publish(id))
                }
            case .shared:
                break
            }
        }
    }

    /// Attaches the program again when the target's slot changed.
    mutating func attachIfNeeded(_ l: Int, _ out: inout [SupervisorAction]) {
        guard let group = groups[l], let index = group.indexToAttach, let target = group.target else { return }
        // A lone socket needs no program until another one joins.
        guard group.members.count > 1 || group.attachedIndex != nil else { return }
        groups[l]?.attachedIndex = index
        out.append(.steer(listener: l, via: target, index: index))
    }

    /// Generation `number` is gone: its health listener is closed, its own
    /// sockets become spares or are closed.
    mutating func releaseSockets(of number: Int, _ out: inout [SupervisorAction]) {
        var closing: [SocketID] = []
        for (id, record) in sockets where record.owner == number {
            sockets[id]?.owner = nil
            guard let l = record.listener else {
                closing.append(id)
                continue
            }
            // Renamed: a socket that never reached the public path has nobody to serve.
            if listeners[l] == .renamed, !record.published { closing.append(id) }
            // Steered: a socket shut down is out of its group for good.
            if listeners[l] == .steered, !record.inGroup { closing.append(id) }
        }
        for id in closing { sockets[id] = nil }
        closing += closeRetiredListeners()
        closing += tidySpares()
        if !closing.isEmpty { out.append(.close(closing.sorted())) }
        for l in groups.keys.sorted() { attachIfNeeded(l, &out) }
    }

    /// Adds a listener whose first socket the shell has opened; generations
    /// spawned from now on get it. Returns that socket's id.
    public mutating func addListener(_ mode: ListenerMode) -> SocketID {
        let l = listeners.count
        let id = nextSocketID
        nextSocketID += 1
        listeners.append(mode)
        listenerSockets.append(id)
        recordFirstSocket(id, of: l, mode)
        return id
    }

    /// The first socket of listener `l`, bound by the shell: a steered one
    /// starts its group and is its target.
    mutating func recordFirstSocket(_ id: SocketID, of l: Int, _ mode: ListenerMode) {
        sockets[id] = SocketRecord(listener: l, owner: nil, inGroup: mode == .steered, published: true)
        guard mode == .steered else { return }
        var group = ReuseportGroup()
        group.join(id)
        group.target = id
        groups[l] = group
    }

    /// Takes listener `l` out: generations spawned from now on do not get
    /// it; its sockets close once no live generation holds it (see
    /// `closeRetiredListeners`). Returns the sockets to close now.
    public mutating func retireListener(_ l: Int) -> [SocketID] {
        guard listeners.indices.contains(l), retiredListeners[l] == nil else { return [] }
        retiredListeners[l] = lastGeneration + 1
        return closeRetiredListeners()
    }

    /// True while listener `l` has a socket open (a retired one until its last generation is gone).
    public func isListenerOpen(_ l: Int) -> Bool {
        retiredListeners[l] == nil || sockets.values.contains { $0.listener == l }
    }

    /// Closes every socket of the retired listeners that no live generation
    /// holds any more: the supervisor's copies and the spares.
    mutating func closeRetiredListeners() -> [SocketID] {
        var closed: [SocketID] = []
        for (l, from) in retiredListeners.sorted(by: { $0.key < $1.key }) {
            guard !generations.contains(where: { $0.number < from }), attempt.map({ $0.generation < from }) != true else { continue }
            for (id, record) in sockets where record.listener == l && record.owner == nil {
                sockets[id] = nil
                closed.append(id)
            }
            groups[l] = nil
        }
        return closed.sorted()
    }

    /// Closes the spare sockets of steered listeners that can leave their
    /// group without moving the target. The others stay open, out of the
    /// program's reach, until they can go or a new generation takes one.
    mutating func tidySpares() -> [SocketID] {
        var closed: [SocketID] = []
        for l in groups.keys.sorted() {
            while let group = groups[l],
                let victim = group.members.first(where: { id in
                    sockets[id]?.owner == nil && id != group.target && group.canLeaveSafely(id)
                })
            {
                groups[l]?.leave(victim)
                sockets[victim] = nil
                closed.append(victim)
            }
        }
        return closed
    }

    /// Shuts generation `number`'s steered sockets down where leaving is
    /// safe; returns those shut down.
    mutating func shutDownOwnSockets(of number: Int) -> [SocketID] {
        var shut: [SocketID] = []
        for id in ownSockets(of: number) {
            guard let l = sockets[id]?.listener, listeners[l] == .steered, sockets[id]?.inGroup == true,
                groups[l]?.target != id, groups[l]?.canLeaveSafely(id) == true
            else { continue }
            groups[l]?.leave(id)
            sockets[id]?.inGroup = false
            shut.append(id)
        }
        return shut
    }

    /// A socket stopped listening: a shared or serving one listens again
    /// (and rejoins its group at the end); one of a retiring generation is out.
    mutating func socketHungUp(_ id: SocketID, _ out: inout [SupervisorAction]) {
        guard let record = sockets[id], let l = record.listener else { return }
        if record.inGroup {
            let wasTarget = groups[l]?.target == id
            groups[l]?.leave(id)
            sockets[id]?.inGroup = false
            if let owner = record.owner, generation(owner)?.teardown != nil { return }
            // Listening again, it takes the last slot; the target keeps its role.
            groups[l]?.join(id)
            sockets[id]?.inGroup = true
            if wasTarget { groups[l]?.target = id }
            out.append(.relisten(id))
            attachIfNeeded(l, &out)
        } else if listeners[l] != .steered {
            out.append(.relisten(id))
        }
    }
}
