import Foundation
import Glibc
import Testing

extension Reliability {
    /// Bad input at every edge: malformed option values and environments.
    @Suite(.serialized) struct BadInput {
        /// Runs `program args` to completion in `s`; exit code and output.
        func run(_ program: String, _ args: [String], in s: Scratch, env: [String]? = nil) -> (code: Int32?, output: String) {
            let c = Child(program, args, log: s.path + "/out-\(UUID().uuidString.prefix(8)).log", env: env, cwd: s.path)
            let code = c.wait(20)
            let output = c.log
            unlink(c.logPath)
            return (code, output)
        }

        /// Nothing of a refused command is left: no file, no process naming the scratch directory.
        func checkNothingStarted(_ c: CaseRecord, _ s: Scratch, _ what: String) {
            c.expect(leftoverFiles(in: s.path).isEmpty, "\(what): files left \(leftoverFiles(in: s.path))")
            let running =
                (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { pid_t($0) }.filter {
                    $0 != getpid() && commandLineOf($0).contains(s.path)
                } ?? []
            c.expect(running.isEmpty, "\(what): processes started: \(running.map(commandLineOf))")
        }

        /// Each entry: the arguments, and text the one-line message must contain.
        func table(_ c: CaseRecord, program: String, code: Int32, cases: [([String], String)], s: Scratch) {
            var messages: [String] = []
            for (args, expected) in cases {
                let r = run(program, args, in: s)
                let text = r.output.trimmingCharacters(in: .whitespacesAndNewlines)
                c.expect(r.code == code, "\(args): exit \(r.code.map(String.init) ?? "none"), expected \(code): \(text)")
                c.expect(text.contains(expected), "\(args): expected '\(expected)' in '\(text)'")
                c.expect(!text.isEmpty && !text.contains("\n"), "\(args): not one line: '\(text)'")
                messages.append(text)
            }
            checkNothingStarted(c, s, program)
            c.note("\(cases.count) malformed values, each refused with exit \(code) and one line")
            if let sample = messages.first(where: { $0.contains("--settle") || $0.contains("--port") }) { c.note("e.g. '\(sample)'") }
        }

        @Test func everyBatonOptionMalformed() {
            faultCase("input.baton-options") { c in
                let s = Scratch()
                let app = ["--", Binaries.testapp, "--tag", s.path]
                let where_ = ["--pid-file", s.path + "/app.pid"]
                let long = "unix:" + s.path + "/" + String(repeating: "x", count: 110)
                var cases: [([String], String)] = []
                // run and start: every option of RunOptions.
                for command in ["run", "start"] {
                    let base = [command] + where_
                    let l = ["--listen", "127.0.0.1:0"]
                    // Options after a valid --listen, before the app.
                    func bad(_ options: [String], _ message: String) -> ([String], String) {
                        (base + l + options + app, message)
                    }
                    // A table: one bad value a line, with what the error must say.
                    cases += [
                        (base + ["--listen", "99999"] + app, "--listen '99999'"),
                        (base + ["--listen", "localhost:http"] + app, "not a port number"),
                        (base + ["--listen", "[::1"] + app, "missing ']'"),
                        (base + ["--listen", "::1:80"] + app, "must be written in brackets"),
                        (base + ["--listen", ":80"] + app, "the host is empty"),
                        (base + ["--listen", "/tmp/a.sock"] + app, "needs the prefix 'unix:'"),
                        (base + ["--listen", "unix:"] + app, "the unix socket path is empty"),
                        (base + ["--listen", long] + app, "over the kernel's limit of 107"),
                        bad(["--handover=yes"], "--handover takes no value"),
                        bad(["--handover-delay", "soon", "--handover"], "--handover-delay 'soon'"),
                        bad(["--socket-mode", "999"], "--socket-mode '999': not an octal file mode"),
                        bad(["--backlog", "0"], "--backlog '0': expected a whole number"),
                        bad(["--backlog", "many"], "--backlog 'many'"),
                        bad(["--dir", s.path + "/nowhere"], "--dir \(s.path)/nowhere: No such file or directory"),
                        bad(["--envdir", s.path + "/noenv"], "--envdir \(s.path)/noenv: No such file or directory"),
                        bad(["--env", "NOEQUALS"], "--env 'NOEQUALS': expected KEY=VALUE"),
                        bad(["--env", "=v"], "--env '=v': expected KEY=VALUE"),
                        bad(["--user", "no-such-user-baton"], "--user no-such-user-baton: no such user"),
                        bad(["--group", "no-such-group-baton"], "--group no-such-group-baton: no such group"),
                        bad(["--ready", "sometimes"], "--ready 'sometimes': not a duration"),
                        bad(["--settle", "soon"], "--settle 'soon': not a duration"),
                        bad(["--settle", "-1"], "--settle '-1'"),
                        bad(["--ready-timeout", "1y"], "--ready-timeout '1y'"),
                        bad(["--kill-old-delay", "1e9"], "--kill-old-delay '1e9'"),
                        bad(["--drain-timeout", "99999999999"], "--drain-timeout '99999999999'"),
                        bad(["--health", "health"], "--health 'health': expected a path"),
                        bad(["--health-timeout", "2s"], "--health-timeout needs --health PATH"),
                        bad(["--health", "/h", "--health-timeout", "x"], "--health-timeout 'x'"),
                        bad(["--health", "/h", "--health-interval", "x"], "--health-interval 'x'"),
                        bad(["--health", "/h", "--health-status", "600"], "--health-status '600'"),
                        bad(["--health", "/h", "--health-status", "299-200"], "--health-status '299-200'"),
                        bad(["--health", "/h", "--health-every", "x"], "--health-every 'x'"),
                        bad(["--health", "/h", "--health-failures", "0"], "--health-failures '0'"),
                        bad(["--signal-on-hup", "BOGUS"], "--signal-on-hup 'BOGUS': not a signal"),
                        bad(["--signal-on-hup", "99"], "--signal-on-hup '99'"),
                        bad(["--signal-on-term", "SIGNOPE"], "--signal-on-term 'SIGNOPE'"),
                        ([command, "--name", "../etc"] + l + app, "--name '../etc': use letters"),
                        (
                            [command, "--control", s.path + "/" + String(repeating: "c", count: 110)] + where_ + l + app,
                            "over the kernel's limit"
                        ),
                        bad(["--frobnicate"], "unknown option '--frobnicate'"),
                        bad(["-x"], "unknown option '-x'"),
                        (base + l + ["--settle"], "--settle needs a value"),
                        (base + l, "no command given"),
                    ]
                }
                cases += [
                    (["start", "--listen", "127.0.0.1:0"] + app, "--name NAME or --pid-file PATH"),
                    (["start"] + where_ + ["--listen", "127.0.0.1:0", "--umask", "999"] + app, "--umask '999': not an octal file mode"),
                    (["start"] + where_ + ["--listen", "127.0.0.1:0", "--json=1"] + app, "--json takes no value"),
                    (["deploy"] + where_ + ["--release", s.path + "/nope", "--current", s.path + "/cur"] + app, "nothing was changed"),
                    (["deploy"] + where_ + ["--release", s.path], "--release needs --current LINK"),
                    (["deploy"] + where_ + ["--lock-timeout", "x"] + app, "--lock-timeout 'x'"),
                    (["deploy"] + where_ + ["--timeout", "x"] + app, "--timeout 'x'"),
                    (["deploy", "--listen", "8080"] + app, "--name NAME or --pid-file PATH"),
                    (["restart"] + where_ + ["--timeout", "x"], "--timeout 'x'"),
                    (["restart"] + where_ + ["--no-wait-drain=1"], "--no-wait-drain takes no value"),
                    (["restart"], "say which supervisor"),
                    (["stop"] + where_ + ["--timeout", "-2"], "--timeout '-2'"),
                    (["stop"], "say which supervisor"),
                    (["status", "--json=yes"] + where_, "--json takes no value"),
                    (["status"], "say which supervisor"),
                    (["logs"] + where_ + ["--lines", "0"], "--lines '0'"),
                    (["logs"] + where_ + ["--lines", "x"], "--lines 'x'"),
                    (["logs"], "say which log"),
                    (["restart"] + where_ + ["--timeout"], "--timeout needs a value"),
                    (["launch"], "unknown command 'launch'"),
                ]
                table(c, program: Binaries.baton, code: 2, cases: cases, s: s)
            }
        }

        @Test func everyStartServerOptionMalformed() {
            faultCase("input.start-server-options") { c in
                let s = Scratch()
                let app = ["--", Binaries.testapp, "--tag", s.path]
                let p = "--port=127.0.0.1:0"
                let cases: [([String], String)] = [
                    (["--port=99999"] + app, "--port 99999: not a port number"),
                    (["--port=localhost:http"] + app, "'http' is not a port number"),
                    (["--port=8080=abc"] + app, "--port 8080=abc"),
                    (["--port=8080=200"] + app, "descriptor 200 is out of range"),
                    (["--port=u99999"] + app, "not a port number"),
                    (["--port=[::1"] + app, "--port [::1"),
                    (["--path=" + s.path + "/" + String(repeating: "p", count: 110)] + app, "over the kernel's limit of 107"),
                    ([p, "--interval=soon"] + app, "--interval 'soon': not a duration"),
                    ([p, "--signal-on-hup=BOGUS"] + app, "--signal-on-hup 'BOGUS'"),
                    ([p, "--signal-on-term=0"] + app, "--signal-on-term '0'"),
                    ([p, "--backlog=abc"] + app, "Value \"abc\" invalid for option backlog"),
                    ([p, "--backlog=0"] + app, "--backlog '0'"),
                    ([p, "--enable-auto-restart", "--auto-restart-interval=x"] + app, "--auto-restart-interval 'x'"),
                    ([p, "--kill-old-delay=x"] + app, "--kill-old-delay 'x'"),
                    ([p, "--drain-timeout=x"] + app, "--drain-timeout 'x'"),
                    ([p, "--max-attempts=0"] + app, "--max-attempts '0'"),
                    ([p, "--max-attempts=x"] + app, "Value \"x\" invalid for option max-attempts"),
                    ([p, "--handover", "--handover-delay=x"] + app, "--handover-delay 'x'"),
                    ([p, "--ready=sometimes"] + app, "--ready 'sometimes'"),
                    ([p, "--dir=" + s.path + "/nowhere"] + app, "--dir \(s.path)/nowhere: No such file or directory"),
                    ([p, "--envdir=" + s.path + "/noenv"] + app, "--envdir \(s.path)/noenv: No such file or directory"),
                    (
                        ["--restart", "--pid-file=" + s.path + "/x.pid", "--status-file=" + s.path + "/x.st", "--restart-timeout=x"],
                        "--restart-timeout 'x'"
                    ),
                    (["--stop", "--pid-file=" + s.path + "/x.pid", "--restart-timeout=x"], "--restart-timeout 'x'"),
                    ([p, "--frobnicate"] + app, "Unknown option: frobnicate"),
                    ([p, "--st"] + app, "Option st is ambiguous"),
                    ([p, "--daemonize=1"] + app, "Option daemonize does not take an argument"),
                    ([p, "--interval"], "Option interval requires an argument"),
                ]
                table(c, program: Binaries.directory + "/start_server", code: 1, cases: cases, s: s)
            }
        }

        /// A small, seeded generator: the same values on every run.
        struct SplitMix: RandomNumberGenerator {
            var state: UInt64
            mutating func next() -> UInt64 {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
        }

        static func randomValue(_ g: inout SplitMix) -> String {
            let pieces = [
                "0", "1", "8080", "65536", "-1", "99999999999999999999", "1.5", "1e3", "ms", "s", "m", "h", ":", "::", "[", "]", ".",
                "/", "unix:", "localhost", "127.0.0.1", "0x10", "TERM", "SIG", "=", ",", " ", "\t", "é", "🙂", "%s", "$(id)", "..",
                "-", "--", "nan", "inf", "\u{7F}", "\u{1}",
            ]
            return (0..<Int.random(in: 0...4, using: &g)).map { _ in pieces.randomElement(using: &g)! }.joined()
        }

        @Test func randomOptionValues() {
            faultCase("input.option-fuzz") { c in
                let s = Scratch()
                var g = SplitMix(state: 0xBA70_0006)
                let options = [
                    "listen", "handover-delay", "socket-mode", "backlog", "dir", "envdir", "env", "user", "group", "ready", "settle",
                    "ready-timeout", "kill-old-delay", "drain-timeout", "health", "signal-on-hup", "signal-on-term", "name", "status-file",
                ]
                var codes: [Int32: Int] = [:]
                var runs = 0
                for option in options {
                    for _ in 0..<6 {
                        let value = Self.randomValue(&g)
                        let args = ["run", "--listen", "127.0.0.1:0", "--\(option)", value, "--", "./no-such-app-\(s.path.count)"]
                        let r = run(Binaries.baton, args, in: s)
                        runs += 1
                        codes[r.code ?? -1, default: 0] += 1
                        c.expect(
                            r.code == 2 || r.code == 9, "--\(option) '\(value)': exit \(r.code.map(String.init) ?? "none"): \(r.output)")
                    }
                }
                let health = ["health-timeout", "health-interval", "health-status", "health-every", "health-failures"]
                for option in health {
                    for _ in 0..<6 {
                        let value = Self.randomValue(&g)
                        let r = run(
                            Binaries.baton, ["run", "--listen", "8080", "--health", "/h", "--\(option)", value, "--", "./nope"], in: s)
                        runs += 1
                        codes[r.code ?? -1, default: 0] += 1
                        c.expect(
                            r.code == 2 || r.code == 9, "--\(option) '\(value)': exit \(r.code.map(String.init) ?? "none"): \(r.output)")
                    }
                }
                checkNothingStarted(c, s, "fuzz")
                c.note(
                    "\(runs) runs, exit codes \(codes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")); no crash"
                )
            }
        }

        @Test func randomEnvironments() {
            faultCase("input.environment-fuzz") { c in
                let s = Scratch()
                var g = SplitMix(state: 0x5EED_0006)
                let base = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LISTEN_") && $0.key != "NOTIFY_SOCKET" }.map {
                    "\($0)=\($1)"
                }
                var codes: [Int32: Int] = [:]
                // baton itself under systemd: LISTEN_PID is set to its own pid by the shell.
                for i in 0..<40 {
                    var env = base
                    let fds = [Self.randomValue(&g), "1", "63", "64", "0", "-3"].randomElement(using: &g)!
                    env.append("LISTEN_FDS=\(fds)")
                    env.append("LISTEN_FDNAMES=\(Self.randomValue(&g))")
                    env.append(
                        "NOTIFY_SOCKET=\(["@", "/", ""].randomElement(using: &g)! + Self.randomValue(&g) + String(repeating: "n", count: i * 4))"
                    )
                    let pid = i % 3 == 0 ? Self.randomValue(&g) : "$$"
                    let r = run(
                        "/bin/sh",
                        [
                            "-c", "LISTEN_PID=\(pid) exec \"$0\" \"$@\"", Binaries.baton, "run", "--listen", "127.0.0.1:0", "--ready",
                            "notify",
                            "--ready-timeout", "2s", "--", "/bin/false",
                        ], in: s, env: env)
                    codes[r.code ?? -1, default: 0] += 1
                    c.expect(
                        r.code == 2 || r.code == 10,
                        "LISTEN_FDS=\(fds) LISTEN_PID=\(pid): exit \(r.code.map(String.init) ?? "none"): \(r.output)")
                }
                // start_server's variables.
                for _ in 0..<30 {
                    var env = base
                    env.append("KILL_OLD_DELAY=\(Self.randomValue(&g))")
                    env.append("ENABLE_AUTO_RESTART=\(["", "1", Self.randomValue(&g)].randomElement(using: &g)!)")
                    env.append("AUTO_RESTART_INTERVAL=\(Self.randomValue(&g))")
                    env.append("ENVDIR=\(Self.randomValue(&g))")
                    let r = run(
                        Binaries.directory + "/start_server",
                        ["--port=127.0.0.1:0", "--max-attempts=1", "--interval=0.1", "--", "/bin/false"],
                        in: s, env: env)
                    codes[r.code ?? -1, default: 0] += 1
                    c.expect(
                        r.code.map { $0 < 128 } ?? false, "start_server crashed: exit \(r.code.map(String.init) ?? "none"): \(r.output)")
                }
                checkNothingStarted(c, s, "environment fuzz")
                c.note(
                    "70 runs, exit codes \(codes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")); no crash"
                )
            }
        }

        @Test func theLibrarysOwnFuzzing() {
            faultCase("input.library-environment") { c in
                let here = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
                let fuzz = here.appendingPathComponent("BatonListenTests/FuzzTests.swift").path
                c.expect(FileManager.default.fileExists(atPath: fuzz), "no \(fuzz)")
                c.note(
                    "BatonListen is not linked by this target; its parser is fuzzed by BatonListenTests (random SERVER_STARTER_PORT and LISTEN_FDS values never crash it)"
                )
            }
        }
    }
}
