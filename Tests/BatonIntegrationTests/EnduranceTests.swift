import Foundation
import Glibc
import Testing

extension Reliability {
    /// Consecutive restarts under load: nothing fails, nothing grows.
    @Suite(.serialized) struct Endurance {
        /// BATON_ENDURANCE_RESTARTS overrides the count (1,000 by default).
        static let restarts = ProcessInfo.processInfo.environment["BATON_ENDURANCE_RESTARTS"].flatMap(Int.init) ?? 1000

        @Test func consecutiveRestartsUnderLoad() throws {
            try faultCase("endurance.restarts") { c in
                let s = Scratch()
                // A 20 ms handshake window instead of 200 ms: the clients are on
                // loopback (their handshakes take microseconds), and 1,000
                // restarts then take about 40 s instead of 4 minutes.
                let b = servingBaton(s, options: ["--settle", "0", "--probation", "0", "--ready", "notify", "--handshake-window", "20ms"])
                c.expect(b.waitServing(1), "generation 1 did not serve: \(b.log)")
                let port = try c.require(b.port, "no port")
                let supervisor = b.child.pid
                let control = s.path + "/baton.control"
                let started = Date()
                let load = Load(port: port, clients: 8, maxRequests: 10_000_000, maxSeconds: 1200)
                var after10: (rss: Int, fds: [Int: String])?
                var zombiesSeen = 0
                var restartSeconds: [Double] = []
                for n in 1...Self.restarts {
                    let t = Date()
                    let answer = controlExchange(control, #"{"v":1,"cmd":"restart"}"#)
                    restartSeconds.append(Date().timeIntervalSince(t))
                    guard exitOf(answer) == 0, answer.last?.contains("generation \(n + 1) ") == true else {
                        c.expect(false, "restart \(n): \(answer.suffix(3))")
                        break
                    }
                    if n == 10 {
                        after10 = (rssKiB(supervisor) ?? 0, settledDescriptors(supervisor))
                    }
                    // A generation that just exited may be a zombie for an instant
                    // (the result can arrive before the reap): only lasting ones count.
                    if n % 50 == 0, !zombies(of: supervisor).isEmpty {
                        var left: [pid_t] = []
                        eventually(1) {
                            left = zombies(of: supervisor)
                            return left.isEmpty
                        }
                        zombiesSeen += left.count
                    }
                }
                let stats = load.stop()
                for (when, what) in load.failures { print("endurance failure at \(when.timeIntervalSince1970): \(what)") }
                let elapsed = Date().timeIntervalSince(started)
                c.load(stats)
                let first = try c.require(after10, "fewer than 10 restarts")
                let endRSS = rssKiB(supervisor) ?? 0
                let endFDs = settledDescriptors(supervisor)
                c.expect(
                    descriptorKinds(endFDs) == descriptorKinds(first.fds),
                    "descriptors after 10: \(first.fds.sorted { $0.key < $1.key }), at the end: \(endFDs.sorted { $0.key < $1.key })")
                // Allocator noise is allowed, growth with the count is not.
                c.expect(endRSS <= first.rss + 512, "RSS grew from \(first.rss) KiB after 10 restarts to \(endRSS) KiB")
                c.expect(zombiesSeen == 0, "\(zombiesSeen) zombies seen along the way")
                c.expect(zombies(of: supervisor).isEmpty, "zombies at the end")
                let sorted = restartSeconds.sorted()
                let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
                c.note(
                    "\(restartSeconds.count) restarts in \(Int(elapsed)) s (median \(Int(median * 1000)) ms, slowest \(Int((sorted.last ?? 0) * 1000)) ms each, drain included)"
                )
                c.note("\(stats.ok + stats.failed) requests, \(stats.failed) failed")
                c.note("supervisor RSS \(first.rss) KiB after 10 restarts, \(endRSS) KiB at the end")
                c.note("supervisor descriptors \(first.fds.count) after 10 restarts, \(endFDs.count) at the end; no zombie")
                print("endurance: " + c.observed.joined(separator: "; "))
                let watch = Watch(supervisor)
                stopAndCheck(b, watch, c, s)
            }
        }
    }
}

/// The descriptors of `pid` once the last control connection has closed:
/// two readings 50 ms apart that agree and name only what is still open.
func settledDescriptors(_ pid: pid_t) -> [Int: String] {
    var last = openDescriptors(pid)
    eventually(3) {
        usleep(50_000)
        let now = openDescriptors(pid)
        defer { last = now }
        return now == last && !now.values.contains("?")
    }
    return last
}
