import Foundation
import Glibc
import Testing

// Releases that look alive but do not serve, or serve and then stop: the
// defaults (readiness as proof, probation) must keep the old code serving.
extension Reliability {
    @Suite(.serialized) struct ProbationFaults {
        /// A master that says READY=1 and lives while its workers die at boot.
        @Test func workersCrashLoopingBehindALiveMaster() throws {
            try faultCase("app.worker-crash-loop") { c in
                let v = try Serving(c, options: [])
                let b = v.b
                let began = Date()
                let stats = v.restart(into: "crashing-workers", args: "--worker-crash-loop") {
                    c.expect(eventually(20) { b.count("generation 2 failed:") == 1 }, "generation 2 did not fail: \(b.log)")
                    c.expect(body(httpGet(port: v.port))?.hasPrefix("good gen=1") == true, "generation 1 does not serve any more")
                }
                let failed = Date().timeIntervalSince(began)
                c.load(stats)
                let failure = line(b.log, containing: "generation 2 failed:") ?? ""
                c.expect(failure.contains("worker processes keep dying"), "not failed for its workers: \(failure)")
                // About 2 s of deaths; far from the 60 s ready timeout.
                c.expect(failed < 15, "it took \(String(format: "%.1f", failed)) s to fail")
                c.note(failure)
                v.finish(c)
            }
        }

        /// Serves, then stops accepting and exits by itself, gracefully, on probation.
        @Test func exitsOnProbation() throws {
            try faultCase("app.exits-on-probation") { c in
                let v = try Serving(c, options: [])
                let b = v.b
                let stats = v.restart(into: "gives-up", args: "--notify --exit-after 2500") {
                    c.expect(eventually(15) { b.count("generation 2 failed:") == 1 }, "generation 2 did not fail: \(b.log)")
                    c.expect(eventually(10) { b.count("drained after") >= 1 && b.count("gen 3 pid") >= 1 }, "no rescuer: \(b.log)")
                    // Some time on the old generation again, under the load.
                    usleep(1_000_000)
                    c.expect(body(httpGet(port: v.port))?.hasPrefix("good gen=1") == true, "generation 1 does not serve any more")
                }
                c.load(stats)
                c.expect(stats.releases.contains("gives-up"), "generation 2 never served: \(stats.releases)")
                c.note(b.log, lineWith: "generation 2 failed:")
                c.note(b.log, lineWith: "new connections go back to it")
                c.note(b.log, lineWith: "wait in the queue it takes over")
                v.finish(c)
            }
        }

        /// Serves, then stops accepting and stays up, on probation.
        @Test func stopsAcceptingOnProbation() throws {
            try faultCase("app.stops-accepting-on-probation") { c in
                let v = try Serving(c, options: [])
                let b = v.b
                let stats = v.restart(into: "stuck", args: "--notify --stop-accepting-after 1000") {
                    c.expect(eventually(15) { b.count("generation 2 failed:") == 1 }, "generation 2 did not fail: \(b.log)")
                    c.expect(
                        eventually(15) { b.count("gen 2 pid") > 0 && b.log.contains("gen 3 pid") && b.count("drained after") >= 1 },
                        "no rescuer: \(b.log)")
                    // The stuck generation goes at its stop deadline (it ignores nothing, but it never looks).
                    c.expect(eventually(10) { b.count("was killed by SIGKILL") + b.count("exited with") >= 2 }, "\(b.log)")
                    c.expect(body(httpGet(port: v.port))?.hasPrefix("good gen=1") == true, "generation 1 does not serve any more")
                }
                c.load(stats)
                let failure = line(b.log, containing: "generation 2 failed:") ?? ""
                c.expect(failure.contains("stopped accepting"), "not failed for its queue: \(failure)")
                c.note(failure)
                c.note(b.log, lineWith: "wait in the queue it takes over")
                v.finish(c)
            }
        }

        /// A release that crash-loops after it went live is rolled back.
        @Test func aCrashLoopIsNamedAndRolledBack() throws {
            try faultCase("app.crash-loop-rollback") { c in
                let v = try Serving(c, options: ["--probation", "1s"])
                let b = v.b
                let control = ["--pid-file", b.pidFile]
                let stats = v.restart(into: "looping", args: "--notify --exit-after 3000") {
                    c.expect(eventually(40) { b.count("is crash-looping") == 1 }, "no crash loop: \(b.log)")
                    c.expect(eventually(10) { b.count("rolling back: starting") == 1 }, "no rollback: \(b.log)")
                    let good = Paths.realPath(v.s.path + "/releases/good")
                    c.expect(eventually(10) { body(httpGet(port: v.port))?.hasPrefix("good gen=") == true }, "the good release is not back")
                    let status = run(Paths.baton, ["status"] + control + ["--json"])
                    c.expect(status.status == 13, "status exited \(status.status): \(status.output)")
                    c.expect(status.output.contains(#""rolled_back_to":"\#(good)""#), "\(status.output)")
                    let text = run(Paths.baton, ["status"] + control)
                    c.expect(text.status == 13 && text.output.contains("crash-looping"), "\(text.output)")
                    // `current` is left as it was; the next restart runs it again.
                    c.expect(v.s.pointed() == "looping", "current was changed: \(v.s.pointed() ?? "?")")
                }
                c.load(stats)
                c.note(b.log, lineWith: "is crash-looping")
                c.note(b.log, lineWith: "rolling back: starting")
                v.s.point(to: "good")
                v.finish(c)
            }
        }
    }
}
