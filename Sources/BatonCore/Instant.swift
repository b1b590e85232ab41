/// A point on the monotonic clock, in nanoseconds since an arbitrary origin.
///
/// The state machine never reads a clock: every event comes with the time at
/// which it happened, so tests drive it with made-up instants.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: UInt64

    /// Creates an instant `nanoseconds` after the clock's origin.
    public init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    /// The instant `seconds` after the origin (for tests).
    public static func seconds(_ seconds: Double) -> Instant {
        Instant(nanoseconds: UInt64(seconds * 1e9))
    }

    public static func < (lhs: Instant, rhs: Instant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    /// The instant `duration` later (saturating).
    public static func + (lhs: Instant, rhs: Duration) -> Instant {
        let add = rhs.nanosecondsClamped
        let (sum, overflow) = lhs.nanoseconds.addingReportingOverflow(add)
        return Instant(nanoseconds: overflow ? .max : sum)
    }

    /// The time from `rhs` to `lhs`, zero when `rhs` is later.
    public static func - (lhs: Instant, rhs: Instant) -> Duration {
        lhs.nanoseconds > rhs.nanoseconds
            ? .nanoseconds(Int64(clamping: lhs.nanoseconds - rhs.nanoseconds)) : .zero
    }

    public var description: String { "\(Double(nanoseconds) / 1e9)s" }
}

extension Duration {
    /// Whole nanoseconds, clamped to zero and `UInt64.max`.
    public var nanosecondsClamped: UInt64 {
        let (seconds, attoseconds) = components
        if seconds < 0 { return 0 }
        let (ns, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (total, overflow2) = ns.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return overflow2 ? .max : total
    }

    /// Whole milliseconds (rounded down), for log lines and JSON.
    public var milliseconds: Int64 {
        Int64(clamping: nanosecondsClamped / 1_000_000)
    }

    /// A short human form: `250 ms`, `1.5 s`, `2 min`.
    public var humanDescription: String {
        let ms = milliseconds
        if ms < 1000 { return "\(ms) ms" }
        if ms < 120_000 {
            let tenths = (ms + 50) / 100
            return tenths % 10 == 0 ? "\(tenths / 10) s" : "\(tenths / 10).\(tenths % 10) s"
        }
        return "\(ms / 60_000) min"
    }
}
