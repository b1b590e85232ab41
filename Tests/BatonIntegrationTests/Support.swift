@_exported import BatonTestSupport
import CBatonShims
import Foundation
import Glibc
import Testing

/// A `baton run` under test.
final class Baton {
    let child: Child
    let scratch: Scratch
    let pidFile: String

    init(_ scratch: Scratch, listen: [String] = ["127.0.0.1:0"], options: [String] = [], app: [String] = []) {
        self.scratch = scratch
        pidFile = scratch.path + "/baton.pid"
        var args = ["run", "--pid-file", pidFile]
        for l in listen { args += ["--listen", l] }
        args += options + ["--", Binaries.testapp] + app
        child = Child(Binaries.baton, args, log: scratch.path + "/baton.log", cwd: scratch.path)
    }

    var log: String { child.log }

    /// The TCP port of the first listener, from the start-up line.
    var port: UInt16? {
        guard let line = child.lines("listening on").first,
            let range = line.range(of: #":(\d+)[,;]"#, options: .regularExpression)
                ?? line.range(of: #":(\d+)"#, options: .regularExpression)
        else { return nil }
        return UInt16(line[range].dropFirst().prefix { $0.isNumber })
    }

    /// Waits until generation `n` serves.
    func waitServing(_ n: Int, _ seconds: Double = 15) -> Bool {
        eventually(seconds) { !child.lines("gen \(n) pid").filter { $0.hasSuffix(" serving") || $0.contains(" serving;") }.isEmpty }
    }

    func count(_ text: String) -> Int { child.lines(text).count }

    func hup() { child.signal(SIGHUP) }

    /// A `baton run` whose generation 1 serves, and its port.
    static func serving(
        _ scratch: Scratch, listen: [String] = ["127.0.0.1:0"], options: [String] = [], app: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (Baton, UInt16) {
        let b = Baton(scratch, listen: listen, options: options, app: app)
        #expect(b.waitServing(1), "generation 1 did not serve: \(b.log)", sourceLocation: sourceLocation)
        return (b, try #require(b.port, "no port: \(b.log)", sourceLocation: sourceLocation))
    }

    /// Stops it with SIGTERM and expects exit 0.
    func stop(sourceLocation: SourceLocation = #_sourceLocation) {
        child.signal(SIGTERM)
        #expect(child.wait() == 0, "baton run did not exit 0: \(log)", sourceLocation: sourceLocation)
    }
}
