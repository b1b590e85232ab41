import BatonCore
import Glibc

/// One line per event on standard error: a UTC timestamp, the program and its
/// pid, and what happened.
public enum Log {
    nonisolated(unsafe) private static var program = "baton"

    /// Sets the name shown in each line (`baton`, `start_server`).
    public static func setProgram(_ name: String) {
        program = name
    }

    /// Writes one line.
    public static func line(_ text: String) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let stamp =
            "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + "\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
        Sys.writeAll(2, "\(stamp) \(program)[\(getpid())]: \(text)\n".utf8)
    }

    /// Writes a warning line.
    public static func warning(_ text: String) {
        line("warning: \(text)")
    }
}
