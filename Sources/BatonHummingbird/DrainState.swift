import Synchronization

/// Whether a graceful stop has begun, shared by the server (which starts
/// it) and the responder (which then asks clients to close).
final class DrainState: Sendable {
    private let draining = Atomic<Bool>(false)

    /// Marks the graceful stop as begun.
    func begin() {
        self.draining.store(true, ordering: .releasing)
    }

    /// Whether the graceful stop has begun.
    var isDraining: Bool {
        self.draining.load(ordering: .acquiring)
    }
}
