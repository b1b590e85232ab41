@_exported import BatonTestSupport
import CBatonShims
import Foundation
import Glibc
import Testing

/// A `baton run` of the test app (or any command), in the foreground.
final class BatonRun: @unchecked Sendable {
    let child: Child
    let pidFile: String

    init(_ scratch: Scratch, listen: [String], options: [String] = [], command: [String]) {
        pidFile = scratch.file("baton.pid")
        var args = ["run", "--pid-file", pidFile]
        for l in listen { args += ["--listen", l] }
        args += options + ["--"] + command
        child = Child(Paths.baton, args, log: scratch.file("baton.log"), cwd: scratch.path)
    }

    var log: String { child.log }

    /// Waits until generation `n` serves (its log line).
    func waitServing(_ n: Int, _ seconds: Double = 20) -> Bool {
        eventually(seconds) {
            !child.lines("gen \(n) pid").filter { $0.hasSuffix(" serving") || $0.contains(" serving;") }.isEmpty
        }
    }

    func count(_ text: String) -> Int { child.lines(text).count }

    func hup() { child.signal(SIGHUP) }

    /// One SIGHUP per generation in `generations`, each waited for until
    /// that generation serves; records an issue and stops at the first that does not.
    func restart(through generations: ClosedRange<Int>, sourceLocation: SourceLocation = #_sourceLocation) {
        for n in generations {
            hup()
            guard waitServing(n) else {
                Issue.record("generation \(n) did not take over\n\(log)", sourceLocation: sourceLocation)
                return
            }
        }
    }

    /// `baton deploy` against this supervisor: its exit status and output.
    func deploy(release: String, current: String, command: [String]) -> (status: Int32, output: String) {
        let args = ["deploy", "--pid-file", pidFile, "--release", release, "--current", current, "--timeout", "60s", "--"] + command
        return run(Paths.baton, args, timeout: 90)
    }

    /// Under a load that `stop` ends (after the last restart): restarts
    /// through `generations`, then deploys `scratch`'s releases/broken, which
    /// must fail (exit 6) and leave `current` on releases/v1; then `more`.
    /// Returns the load's figures, printed as `what`.
    func restartsAndABrokenDeploy(
        _ scratch: Scratch, through generations: ClosedRange<Int>, command: [String], load: Load, what: String,
        more: () -> Void = {}, sourceLocation: SourceLocation = #_sourceLocation
    ) -> Load.Stats {
        restart(through: generations, sourceLocation: sourceLocation)
        let broken = deploy(release: scratch.file("releases/broken"), current: scratch.file("current"), command: command)
        #expect(broken.status == 6, "\(broken.output)", sourceLocation: sourceLocation)
        #expect(
            Paths.realPath(scratch.file("current")) == Paths.realPath(scratch.file("releases/v1")), sourceLocation: sourceLocation)
        more()
        usleep(500_000)
        let stats = load.stop()
        print("\(what): \(stats.ok) requests, \(stats.failed) failed, \(stats.serverErrors) 5xx \(stats.errors)")
        #expect(stats.failed == 0, "\(stats.errors)", sourceLocation: sourceLocation)
        return stats
    }

    @discardableResult
    func stop() -> Int32? { child.stop(SIGTERM, grace: 20) }
}
