import BatonCore
import Testing

/// Development mode's decisions: debounce, build, cancel, no retry.
@Suite struct WatchLoopTests {
    let t0 = Instant(nanoseconds: 1_000_000_000)
    func at(_ ms: Int) -> Instant { t0 + .milliseconds(ms) }

    @Test func changesCloseTogetherAreOneRestart() {
        var w = WatchLoop(debounce: .milliseconds(200), builds: false)
        #expect(w.nextDeadline == nil)
        #expect(w.changed("a.pm", now: at(0)).isEmpty)
        #expect(w.changed("b.pm", now: at(150)).isEmpty)
        #expect(w.nextDeadline == at(350))
        #expect(w.tick(now: at(300)).isEmpty)
        #expect(w.tick(now: at(350)) == [.restart(trigger: "b.pm", changes: 2, since: at(0))])
        #expect(w.nextDeadline == nil)
    }

    @Test func anEndlessSeriesActsAtTheCap() {
        var w = WatchLoop(debounce: .milliseconds(100), builds: false)
        for ms in stride(from: 0, through: 1500, by: 50) { _ = w.changed("x", now: at(ms)) }
        // Ten debounce intervals after the first change at the latest.
        #expect(w.nextDeadline == at(1000))
    }

    @Test func aBuildRunsFirstAndAFailedOneStartsNothing() {
        var w = WatchLoop(debounce: .milliseconds(200), builds: true)
        _ = w.changed("main.swift", now: at(0))
        #expect(w.tick(now: at(200)) == [.build(trigger: "main.swift")])
        #expect(w.isBuilding)
        let failed = w.buildFinished(passed: false, detail: "it exited with exit code 1")
        #expect(failed.count == 1)
        if case .report(let text) = failed.first { #expect(text.contains("the build failed")) } else { Issue.record("\(failed)") }
        #expect(w.nextDeadline == nil, "no retry until the next change")
        _ = w.changed("main.swift", now: at(1000))
        #expect(w.tick(now: at(1200)) == [.build(trigger: "main.swift")])
        #expect(w.buildFinished(passed: true, detail: "") == [.restart(trigger: "main.swift", changes: 1, since: at(1000))])
    }

    @Test func aChangeDuringABuildCancelsItAndBuildsAgain() {
        var w = WatchLoop(debounce: .milliseconds(200), builds: true)
        _ = w.changed("a.swift", now: at(0))
        _ = w.tick(now: at(200))
        let during = w.changed("b.swift", now: at(500))
        #expect(during.first == .cancelBuild)
        #expect(!w.isBuilding)
        // The cancelled build's outcome, should it come, changes nothing.
        #expect(w.buildFinished(passed: true, detail: "").isEmpty)
        #expect(w.tick(now: at(700)) == [.build(trigger: "b.swift")])
        #expect(w.buildFinished(passed: true, detail: "") == [.restart(trigger: "b.swift", changes: 2, since: at(0))])
    }
}
