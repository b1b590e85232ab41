import Foundation
import Glibc
import Testing

// Starman under each supervisor, a private network namespace for hand-over,
// and the measurement of failed requests over restarts under wrk.

/// The supervisors the Starman tests compare.
enum Supervisor: String, Sendable, CustomStringConvertible, CaseIterable {
    /// Debian's Perl Server::Starter: one socket shared by every generation.
    case perl = "Perl start_server"
    /// `baton run`: a socket per generation, new connections steered to the new one (the default).
    case baton = "baton run"
    /// `baton run --listen-mode shared`: one listener shared by every generation.
    case batonShared = "baton run --listen-mode shared"
    /// Our drop-in `start_server` (steered by default).
    case ours = "start_server (ours)"
    /// Our `start_server --listen-mode shared`.
    case oursShared = "start_server (ours) --listen-mode shared"

    var description: String { rawValue }

    /// True for the shared-socket ones, which lose what Starman drops at its QUIT.
    var shared: Bool { self == .perl || self == .batonShared || self == .oursShared }

    /// Whether it can run here; under `CI=true` a missing Perl start_server
    /// is recorded as a failure with its name, not left out of the table.
    var available: Bool {
        guard self == .perl, Tools.perlStartServer == nil else { return true }
        if Peers.inCI { Issue.record("Perl start_server is missing: apt-get install libserver-starter-perl") }
        return false
    }
}

/// Starman (4 workers, the example PSGI app) under one of the supervisors.
final class StarmanUnder: @unchecked Sendable {
    let supervisor: Supervisor
    let child: Child
    let port: UInt16
    let statusFile: String
    let pidFile: String

    /// `dir` is the release directory (or a `current` symlink to one); `prefix` enters a namespace;
    /// `extra` are more supervisor options, `starmanOptions` more Starman options.
    init(
        _ supervisor: Supervisor, scratch: Scratch, dir: String, port: UInt16 = freePort(), workers: Int = 4,
        prefix: [String] = [], extra: [String] = [], starmanOptions: [String] = []
    ) {
        self.supervisor = supervisor
        self.port = port
        statusFile = scratch.file("\(supervisor.logName).status")
        pidFile = scratch.file("\(supervisor.logName).pid")
        let app = [Tools.starman!, "--workers", "\(workers)"] + starmanOptions + ["app.psgi"]
        var command: [String]
        switch supervisor {
        case .perl, .ours, .oursShared:
            // The Server::Starter command line, word for word the same for both.
            command = [
                supervisor == .perl ? Tools.perlStartServer! : Paths.startServer,
                "--port=127.0.0.1:\(port)", "--signal-on-hup=QUIT", "--interval=1",
                "--dir=\(dir)", "--pid-file=\(pidFile)", "--status-file=\(statusFile)",
            ]
            if supervisor == .oursShared { command.append("--listen-mode=shared") }
            // Ours without a probation, as Perl's has none: each restart of
            // the comparison ends when the old server is gone, 5 s sooner.
            // (BrokenReleaseTests and OrdinaryUserTests run Starman with it.)
            if supervisor != .perl { command.append("--probation=0") }
        case .baton, .batonShared:
            command = [
                Paths.baton, "run", "--listen", "127.0.0.1:\(port)", "--signal-on-hup", "QUIT",
                "--dir", dir, "--pid-file", pidFile, "--status-file", statusFile, "--probation", "0",
            ]
            if supervisor == .batonShared { command += ["--listen-mode", "shared"] }
        }
        command = prefix + command + extra + ["--"] + app
        child = Child(command[0], Array(command.dropFirst()), log: scratch.file("\(supervisor.logName).log"), cwd: dir)
    }

    var log: String { child.log }

    /// The generations the status file lists.
    var generations: [(generation: Int, pid: Int)] { statusGenerations(statusFile) }

    /// Waits until exactly one generation, newer than `previous`, is left: the
    /// new one serves and the old ones are gone. Returns its number.
    func waitAlone(newerThan previous: Int, _ seconds: Double = 30) -> Int? {
        var found: Int?
        eventually(seconds) {
            let g = generations
            if g.count == 1, g[0].generation > previous {
                found = g[0].generation
                return true
            }
            return false
        }
        return found
    }

    /// HUP, then waits until the new generation is alone: its number, or nil.
    func restart(_ seconds: Double = 30) -> Int? {
        let previous = generations.map(\.generation).max() ?? 0
        child.signal(SIGHUP)
        return waitAlone(newerThan: previous, seconds)
    }

    /// Stops the supervisor (TERM, the drain, then SIGKILL if it must).
    @discardableResult
    func stop() -> Int32? { child.stop(SIGTERM, grace: 20) }
}

extension Supervisor {
    var logName: String {
        switch self {
        case .perl: "perl-start_server"
        case .baton: "baton"
        case .batonShared: "baton-shared"
        case .ours: "start_server"
        case .oursShared: "start_server-shared"
        }
    }
}

/// Failed requests of one supervisor over a series of restarts under wrk.
struct RestartFigures: Sendable, CustomStringConvertible {
    let supervisor: Supervisor
    let restarts: Int
    let wrk: WrkResult
    var description: String { "\(supervisor): \(restarts) restarts, \(wrk)" }
}

/// Starman (4 workers) under `supervisor`, `wrk -t2 -c32 -H 'Connection: close'`
/// throughout, and `restarts` HUPs, each waited for until the old generation is
/// gone. Inside `network` when given.
///
/// With `throughNginx`, wrk talks to nginx (examples/nginx/myapp.conf) in front of
/// the supervisor, and nginx's 502s count as failures. Starman then runs with
/// `--disable-keepalive`: a prefork worker serves one connection at a time, so
/// with nginx's upstream keep-alive four workers get pinned by four connections
/// while the other requests wait in the queue (15 s of wrk -c32: 4,403 answers,
/// against 82,864 without keep-alive; docs/starman-restarts.md).
func measureStarmanRestarts(
    _ supervisor: Supervisor, restarts: Int, scratch: Scratch, network: PrivateNetwork? = nil, throughNginx: Bool = false
) -> RestartFigures? {
    let prefix = network?.prefix ?? []
    let s = StarmanUnder(
        supervisor, scratch: scratch, dir: Paths.examples + "/psgi/releases/v1", prefix: prefix,
        starmanOptions: throughNginx ? ["--disable-keepalive"] : [])
    defer { s.stop() }
    guard s.waitAlone(newerThan: 0) != nil else {
        Issue.record("\(supervisor) did not start\n\(s.log)")
        return nil
    }
    var url = "http://127.0.0.1:\(s.port)/"
    var nginx: Nginx?
    defer { nginx?.stop() }
    if throughNginx {
        do {
            nginx = try Nginx(scratch, upstream: "127.0.0.1:\(s.port)", name: "nginx-\(supervisor.logName)", network: network)
        } catch {
            Issue.record("nginx: \(error)")
            return nil
        }
        url = "http://127.0.0.1:\(nginx!.port)/"
    }
    // The socket is bound before the first generation: what arrives now waits in the backlog.
    usleep(1_500_000)
    let wrk = Wrk(url: url, log: scratch.file("wrk-\(supervisor.logName)\(throughNginx ? "-nginx" : "").log"), prefix: prefix)
    usleep(1_000_000)
    var done = 0
    for _ in 0..<restarts {
        guard s.restart() != nil else {
            Issue.record("\(supervisor): restart \(done + 1) did not complete\n\(s.log.suffix(3000))")
            break
        }
        done += 1
        usleep(300_000)
    }
    // Longer than wrk's timeout and its sweep: a connection stuck in a dead queue shows as a timeout.
    usleep(wrk.quietTail)
    let result = wrk.stop()
    #expect(result.requests > 1000, "\(supervisor): wrk made \(result.requests) requests\n\(wrk.child.log)")
    return RestartFigures(supervisor: supervisor, restarts: done, wrk: result)
}

/// Prints a comparison table (the figures the docs quote come from here).
func report(_ title: String, _ figures: [RestartFigures]) {
    var text = "\n== \(title)\n"
    for f in figures {
        text += "   \(f.supervisor.rawValue.padding(toLength: 32, withPad: " ", startingAt: 0)) \(f.restarts) restarts: "
        text += "\(f.wrk.failed) failed of \(f.wrk.requests) (read \(f.wrk.readErrors), connect \(f.wrk.connectErrors), "
        text += "write \(f.wrk.writeErrors), timeout \(f.wrk.timeouts), non-2xx \(f.wrk.non2xx))\n"
    }
    print(text)
}
