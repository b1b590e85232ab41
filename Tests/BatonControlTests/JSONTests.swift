import BatonControl
import BatonCore
import Testing

@Suite struct JSONTests {
    @Test func escapesRoundTrip() {
        let text = "quote \" backslash \\ slash / newline \n tab \t cr \r bell \u{07} del \u{7F} é 😀 \u{2028}"
        let encoded = JSON.string(text).text
        #expect(!encoded.contains("\n"), "one line")
        #expect(encoded.contains("\\u0007") && encoded.contains("\\u2028"))
        #expect(JSON(parsing: encoded) == .string(text))
    }

    @Test func surrogatePairsDecodeToOneScalar() {
        #expect(JSON(parsing: #""\uD83D\uDE00""#) == .string("😀"))
        #expect(JSON(parsing: #""\uD83D\uDE00"#)?.string == nil)
        #expect(JSON(parsing: #""a\u00e9b""#) == .string("aéb"))
        // A lone surrogate is not a character: it becomes U+FFFD.
        #expect(JSON(parsing: #""\uD83Dx""#) == .string("\u{FFFD}x"))
        #expect(JSON(parsing: #""\uDE00""#) == .string("\u{FFFD}"))
        #expect(JSON(parsing: #""\uD83D\u0041""#) == .string("\u{FFFD}A"))
    }

    @Test(arguments: ["+1", ".5", "01", "1.", "-", "1e", "--1", "0x10", "1.e5", "Infinity", "NaN", "1e999"])
    func numbersJSONForbidsAreRefused(_ text: String) {
        #expect(JSON(parsing: text) == nil, "\(text)")
    }

    @Test func numbersJSONAllowsAreRead() {
        #expect(JSON(parsing: "0") == .number(0))
        #expect(JSON(parsing: "-0.5") == .number(-0.5))
        #expect(JSON(parsing: "12e2") == .number(1200))
        #expect(JSON(parsing: "1.25E-1") == .number(0.125))
        #expect(JSON(parsing: "9007199254740992")?.int == 9_007_199_254_740_992)
        #expect(JSON.int(1_700_000_000_123).text == "1700000000123")
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "[", count: JSON.maxDepth) + String(repeating: "]", count: JSON.maxDepth)
        #expect(JSON(parsing: deep) != nil)
        let tooDeep = String(repeating: "[", count: JSON.maxDepth + 1) + String(repeating: "]", count: JSON.maxDepth + 1)
        #expect(JSON(parsing: tooDeep) == nil)
        #expect(JSON(parsing: String(repeating: "{\"a\":", count: 10_000)) == nil)
    }

    @Test(arguments: ["", " ", "{", "[1,]", "{\"a\":1,}", "{a:1}", "'x'", "\"a\nb\"", "[1 2]", "nul", "true false", "\"\\x\""])
    func malformedTextIsRefused(_ text: String) {
        #expect(JSON(parsing: text) == nil, "\(text)")
    }

    @Test func objectsAreWrittenWithSortedKeys() {
        let o = JSON.object(["b": .int(1), "a": .array([.null, .bool(true), .string("x")]), "c": .object([:])])
        #expect(o.text == #"{"a":[null,true,"x"],"b":1,"c":{}}"#)
        #expect(JSON(parsing: o.prettyText) == o)
    }
}

@Suite struct ControlMessageTests {
    @Test func everyRequestRoundTrips() {
        let requests: [ControlRequest] = [
            .status, .restart(waitForDrain: true), .restart(waitForDrain: false), .stop,
            .upgrade(binary: "/usr/bin/baton", configuration: .object(["command": .array([.string("./app")])])),
            .upgrade(binary: nil, configuration: nil),
        ]
        for r in requests { #expect(ControlRequest.decode(r.json.text) == .success(r), "\(r)") }
    }

    @Test func badRequestsSayWhy() {
        #expect(ControlRequest.decode("hello") == .failure(.notARequest))
        #expect(ControlRequest.decode(#"{"v":2,"cmd":"status"}"#) == .failure(.unsupportedVersion("2")))
        #expect(ControlRequest.decode(#"{"v":1,"cmd":"dance"}"#) == .failure(.unknownCommand("dance")))
    }

    @Test func everyMessageRoundTrips() {
        var progress = ControlProgress(kind: "ready", message: "ready after 5 ms")
        (progress.generation, progress.pid, progress.elapsedMilliseconds) = (2, 1234, 5)
        var result = ControlResult(nil, "generation 2 (pid 1234) is serving")
        result.generation = 2
        result.pid = 1234
        result.readyMilliseconds = 5
        result.retired = [1]
        result.durationMilliseconds = 1027
        result.output = ["line one", "line two"]
        result.steps = ["current -> v2"]
        var failure = ControlResult(.generationFailed, "generation 3 failed")
        failure.supervisorPid = 99
        failure.logFile = "/run/x.log"
        var status = ControlStatus(pid: 42, uptimeMilliseconds: 1000, startedAt: 1_700_000_000, state: "running", version: "0.3.0")
        status.binary = "/usr/bin/baton"
        status.reexecutedAt = 1_700_000_100
        status.reexecutions = 2
        status.binaryID = "2049:1234"
        status.configuration = .object(["command": .array([.string("./app")])])
        status.warnings = ["w"]
        status.listeners = [ControlStatus.Listener(address: "127.0.0.1:8080", fd: 3, name: "listen0", mode: "steered")]
        var g = ControlStatus.Generation(number: 1, pid: 43, state: "serving", ageMilliseconds: 900, releaseDir: "/r")
        g.status = "ok"
        g.readyMilliseconds = 10
        g.lastProbe = ControlStatus.Probe(passed: true, status: 200, detail: "OK", latencyMilliseconds: 1.5)
        g.sockets = ["127.0.0.1:8080 (socket 0)"]
        status.generations = [g]
        status.command = ["./app", "--workers", "2"]
        status.serving = 1
        status.pidFile = "/run/a.pid"
        status.control = "/run/a.sock"
        status.logFile = "/run/a.log"
        var attempt = ControlStatus.Attempt(reason: "restart", ok: false, durationMilliseconds: 30, agoMilliseconds: 5)
        attempt.generation = 2
        attempt.message = "boom"
        status.lastAttempt = attempt
        for m: ControlMessage in [.progress(progress), .result(result), .result(failure), .status(status)] {
            #expect(ControlMessage(line: m.line.dropLast()) == m, "\(m)")
            #expect(m.line.filter { $0 == "\n" }.count == 1)
        }
        #expect(ControlMessage.result(failure).json["exit"]?.int == 6)
        #expect(ControlMessage.result(failure).json["code"]?.string == "generation-failed")
    }

    @Test func everyErrorCodeHasAName() {
        for code in BatonError.Code.all { #expect(BatonError.Code(name: code.name) == code) }
        #expect(Set(BatonError.Code.all.map(\.exitCode)).count == BatonError.Code.all.count, "one exit code per code")
    }
}
