/// Identifies a socket the supervisor holds, across its whole life.
public typealias SocketID = Int

/// A model of the kernel's SO_REUSEPORT group of one TCP address: the
/// member sockets in the kernel's order, and the index the attached classic
/// BPF program returns. Rules (checked on Linux 6.x): a socket joins at the
/// end when it starts listening; a socket that leaves (closed in every
/// process, or shut down) is replaced in its slot by the last member; an
/// index out of range makes the kernel hash over every member.
public struct ReuseportGroup: Sendable, Equatable {
    /// The members in slot order.
    public private(set) var members: [SocketID] = []
    /// The socket new connections must reach.
    public var target: SocketID?
    /// The index the attached program returns (nil: none attached yet).
    public var attachedIndex: Int?

    /// An empty group.
    public init() {}

    /// A socket starts listening: it takes the next slot.
    public mutating func join(_ id: SocketID) {
        members.append(id)
    }

    /// A socket leaves: the last member moves into its slot.
    public mutating func leave(_ id: SocketID) {
        guard let i = members.firstIndex(of: id) else { return }
        members[i] = members[members.count - 1]
        members.removeLast()
        if target == id { target = nil }
    }

    /// The slot of `id`.
    public func index(of id: SocketID) -> Int? { members.firstIndex(of: id) }

    /// The index the program must return for the target, when that is not
    /// the attached one.
    public var indexToAttach: Int? {
        guard let target, let i = index(of: target), i != attachedIndex else { return nil }
        return i
    }

    /// True when `id` can leave without new connections reaching another
    /// socket than the target in the moment before the program is attached
    /// again: the target keeps its slot, or the target alone is left.
    public func canLeaveSafely(_ id: SocketID) -> Bool {
        guard let i = index(of: id) else { return true }
        guard let target, target != id, let t = index(of: target) else { return true }
        let last = members.count - 1
        return t != last || i == last || members.count == 2
    }
}
