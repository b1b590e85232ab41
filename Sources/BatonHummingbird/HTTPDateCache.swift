import Glibc
import Synchronization

/// The `Date` header value (RFC 9110 IMF-fixdate, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`), formatted at most once a second.
///
/// Stock Hummingbird keeps it up to date with a timer service; this cache
/// instead reformats on the first request of each new second, so it needs
/// no service of its own and is never stale.
final class HTTPDateCache: Sendable {
    private let cached = Mutex<(second: Int, text: String)>((second: -1, text: ""))

    /// The header value for the current second.
    var current: String {
        let now = Int(time(nil))
        return self.cached.withLock { cached in
            if cached.second != now {
                cached = (now, Self.format(now))
            }
            return cached.text
        }
    }

    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Formats `seconds` since the epoch as an IMF-fixdate.
    static func format(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func twoDigits(_ value: Int32) -> String {
            value < 10 ? "0\(value)" : String(value)
        }
        return "\(self.days[Int(parts.tm_wday)]), \(twoDigits(parts.tm_mday)) \(self.months[Int(parts.tm_mon)]) "
            + "\(parts.tm_year + 1900) \(twoDigits(parts.tm_hour)):\(twoDigits(parts.tm_min)):\(twoDigits(parts.tm_sec)) GMT"
    }
}
