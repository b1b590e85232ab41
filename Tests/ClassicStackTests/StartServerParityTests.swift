import Foundation
import Glibc
import Testing

extension ClassicStack {
    /// Our `start_server` against Debian's Perl one (Server::Starter 0.35),
    /// the same scenario for both in one test, where a script can see the
    /// difference: the status file at each step of a restart, UDP ports, the
    /// help and Getopt::Long's abbreviations.
    @Suite(
        .serialized,
        .enabled(if: Peers.available(Tools.perlStartServer != nil), "needs Debian's start_server (libserver-starter-perl)"))
    struct StartServerParityTests {
        enum Side: String, CaseIterable, CustomStringConvertible {
            case perl, ours
            var description: String { rawValue }
            func path() throws -> String {
                switch self {
                case .perl: try #require(Tools.perlStartServer, "Debian's start_server (libserver-starter-perl) is missing")
                case .ours: Paths.startServer
                }
            }
        }

        /// One state of the status file: the generations it lists (pids left
        /// out: they differ between runs), and when it was first seen.
        struct Seen: CustomStringConvertible {
            var generations: [Int]
            var at: Double
            var description: String { "\(generations) at \(String(format: "%.2f", at)) s" }
        }

        /// The generations a status file lists, or nil while it does not exist.
        static func generations(in file: String) -> [Int]? {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
            return text.split(separator: "\n").compactMap { line in line.split(separator: ":").first.flatMap { Int($0) } }
        }

        /// Watches `file` every 10 ms until `done` says so or `seconds` pass,
        /// recording each change of what it lists, timed from `origin`.
        static func record(
            _ file: String, from origin: Date, into seen: inout [Seen], seconds: Double, until done: ([Int]) -> Bool
        ) {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                let now = generations(in: file) ?? []
                if seen.last?.generations != now { seen.append(Seen(generations: now, at: Date().timeIntervalSince(origin))) }
                if done(now) { return }
                usleep(10_000)
            }
        }

        /// The status file through a start and one restart (a HUP, or the
        /// automatic one), with `options`; an app that serves until its signal.
        func statusFileSequence(_ side: Side, options: [String], hup: Bool) throws -> (start: [Seen], restart: [Seen]) {
            let s = Scratch("parity-status-\(side)")
            let status = s.file("status")
            let started = Date()
            // A server that accepts (ours takes a new one over once it took a
            // connection); without a probation, so that the old one is
            // signalled when Server::Starter signals it.
            let ss = Child(
                try side.path(),
                ["--port=127.0.0.1:0", "--status-file=\(status)", "--pid-file=\(s.file("pid"))"] + options
                    + (side == .ours ? ["--probation=0"] : []) + ["--", Paths.testapp],
                log: s.file("\(side).log"), cwd: s.path)
            defer { _ = ss.stop(SIGTERM, grace: 10) }
            var start: [Seen] = []
            Self.record(status, from: started, into: &start, seconds: 15) { $0 == [1] }
            var restart: [Seen] = []
            let restarted = Date()
            if hup { ss.signal(SIGHUP) }
            Self.record(status, from: restarted, into: &restart, seconds: 30) { $0 == [2] }
            return (start, restart)
        }

        /// `--interval=1 --kill-old-delay=3`: `1`, then after a HUP `1 2`
        /// (the new one listed once alive for --interval, next to the old one
        /// while the old one waits out --kill-old-delay), then `2`.
        @Test func theStatusFileThroughARestart() throws {
            // Within 0.7 s of Perl's at each step: Perl sleeps --interval in
            // whole seconds before it looks at a new server, so its own times
            // run up to a few tenths late; ours adds the 200 ms handshake
            // window before the old generation's signal.
            try compare(options: ["--interval=1", "--kill-old-delay=3"], hup: true, name: "HUP", within: 0.7)
        }

        /// The same through an automatic restart (`--enable-auto-restart
        /// --auto-restart-interval=3`, which Server::Starter checks once a second).
        @Test func theStatusFileThroughAnAutomaticRestart() throws {
            try compare(
                options: ["--interval=1", "--kill-old-delay=1", "--enable-auto-restart", "--auto-restart-interval=3"], hup: false,
                // Within 1.1 s: Perl compares whole seconds of time() once a
                // second (alarm 1), so its restart lands up to 1 s either side
                // of the interval; ours comes at the interval itself.
                name: "auto-restart", within: 1.1)
        }

        func compare(options: [String], hup: Bool, name: String, within bound: Double) throws {
            var results: [Side: (start: [Seen], restart: [Seen])] = [:]
            for side in Side.allCases { results[side] = try statusFileSequence(side, options: options, hup: hup) }
            let perl = try #require(results[.perl])
            let ours = try #require(results[.ours])
            print("status file, \(name) \(options.joined(separator: " ")):\n  perl: \(perl)\n  ours: \(ours)")
            // Steps: the states the file went through, in order.
            #expect(ours.start.map(\.generations) == perl.start.map(\.generations), "start: ours \(ours.start), perl \(perl.start)")
            #expect(
                ours.restart.map(\.generations) == perl.restart.map(\.generations), "restart: ours \(ours.restart), perl \(perl.restart)")
            #expect(perl.restart.map(\.generations) == [[1], [1, 2], [2]], "Perl's own sequence: \(perl.restart)")
            for (o, p) in zip(ours.start + ours.restart, perl.start + perl.restart) where !p.generations.isEmpty {
                #expect(abs(o.at - p.at) < bound, "\(o.generations): ours at \(o.at) s, Perl at \(p.at) s")
            }
        }

        /// A UDP echo server under each: `--port=127.0.0.1:u0`, `[::1]:u0` and
        /// a bare `u0`; the same SERVER_STARTER_PORT keys; it echoes, before
        /// and after a HUP (the socket is the same for both generations).
        @Test(arguments: ["127.0.0.1:u0", "[::1]:u0", "u0"])
        func aUDPEchoServer(_ port: String) throws {
            var keys: [Side: String] = [:]
            for side in Side.allCases {
                let s = Scratch("parity-udp-\(side)")
                Self.writeEcho(s)
                let python = try #require(Paths.tool("python3"), "python3 is missing")
                let ss = Child(
                    try side.path(), ["--port=\(port)", "--interval=0", "--", python, s.file("echo.py"), s.file("bound")],
                    log: s.file("\(side).log"), cwd: s.path)
                defer { _ = ss.stop(SIGTERM, grace: 10) }
                #expect(eventually(10) { FileManager.default.fileExists(atPath: s.file("bound")) }, "\(side): no server\n\(ss.log)")
                let fields = ((try? String(contentsOfFile: s.file("bound"), encoding: .utf8)) ?? "").split(separator: " ")
                try #require(fields.count == 4, "\(side): \(fields)\n\(ss.log)")
                keys[side] = String(fields[0].split(separator: "=").dropLast().joined(separator: "="))
                #expect(fields[1] == "\(SOCK_DGRAM.rawValue)", "\(side): not a datagram socket: \(fields)")
                let udpPort = try #require(UInt16(fields[2]))
                let host = port.hasPrefix("[") ? "::1" : "127.0.0.1"
                #expect(
                    TestSockets.udpExchange(host: host, port: udpPort, "ping") == "1 ping", "\(side): no echo from generation 1\n\(ss.log)")
                unlink(s.file("bound"))
                ss.signal(SIGHUP)
                #expect(eventually(10) { FileManager.default.fileExists(atPath: s.file("bound")) }, "\(side): no generation 2\n\(ss.log)")
                #expect(
                    eventually(10) { TestSockets.udpExchange(host: host, port: udpPort, "pong") == "2 pong" },
                    "\(side): no echo from generation 2 on the same port\n\(ss.log)")
            }
            print("UDP \(port): SERVER_STARTER_PORT keys perl '\(keys[.perl] ?? "?")', ours '\(keys[.ours] ?? "?")'")
            #expect(keys[.ours] == keys[.perl], "SERVER_STARTER_PORT keys differ")
        }

        /// echo.py in `s`: a UDP echo server on the first socket of
        /// SERVER_STARTER_PORT that answers "GENERATION TEXT", having written
        /// "SERVER_STARTER_PORT SOCKET-TYPE PORT GENERATION" to the file named
        /// by its argument.
        static func writeEcho(_ s: Scratch) {
            s.write(
                "echo.py",
                """
                import os, socket, sys
                fd = int(os.environ["SERVER_STARTER_PORT"].split(";")[0].rsplit("=", 1)[1])
                sock = socket.socket(fileno=fd)
                with open(sys.argv[1] + ".tmp", "w") as f:
                    f.write("%s %d %d %s\\n" % (os.environ["SERVER_STARTER_PORT"], sock.type, sock.getsockname()[1], os.environ.get("SERVER_STARTER_GENERATION")))
                os.rename(sys.argv[1] + ".tmp", sys.argv[1])
                while True:
                    data, peer = sock.recvfrom(2048)
                    sock.sendto(os.environ["SERVER_STARTER_GENERATION"].encode() + b" " + data, peer)
                """)
        }

        /// `baton run --listen udp:127.0.0.1:0`: the same echo server, the key
        /// in SERVER_STARTER_PORT as Server::Starter writes it (the bound port,
        /// no "u"), one socket for both generations, shown as shared in `status`.
        @Test func batonRunServesUDP() throws {
            let s = Scratch("baton-udp")
            Self.writeEcho(s)
            let python = try #require(Paths.tool("python3"), "python3 is missing")
            let pid = s.file("baton.pid")
            let b = Child(
                Paths.baton,
                [
                    "run", "--listen", "udp:127.0.0.1:0", "--pid-file", pid, "--ready", "0.3s", "--settle", "0", "--probation", "0", "--", python,
                    s.file("echo.py"), s.file("bound"),
                ],
                log: s.file("baton.log"), cwd: s.path)
            defer { _ = b.stop(SIGTERM, grace: 10) }
            #expect(eventually(10) { FileManager.default.fileExists(atPath: s.file("bound")) }, "no server\n\(b.log)")
            let fields = ((try? String(contentsOfFile: s.file("bound"), encoding: .utf8)) ?? "").split(separator: " ")
            try #require(fields.count == 4, "\(fields)\n\(b.log)")
            let udpPort = try #require(UInt16(fields[2]))
            #expect(fields[0].hasPrefix("127.0.0.1:\(udpPort)="), "SERVER_STARTER_PORT: \(fields[0])")
            #expect(fields[1] == "\(SOCK_DGRAM.rawValue)", "not a datagram socket: \(fields)")
            #expect(TestSockets.udpExchange(host: "127.0.0.1", port: udpPort, "ping") == "1 ping", "no echo\n\(b.log)")
            let status = run(Paths.baton, ["status", "--pid-file", pid], timeout: 20)
            #expect(status.output.contains("udp:127.0.0.1:\(udpPort)"), "status: \(status.output)")
            #expect(status.output.contains("shared"), "status does not say shared: \(status.output)")
            unlink(s.file("bound"))
            b.signal(SIGHUP)
            #expect(
                eventually(10) { TestSockets.udpExchange(host: "127.0.0.1", port: udpPort, "pong") == "2 pong" },
                "no echo from generation 2 on the same port\n\(b.log)")
            #expect(b.stop(SIGTERM, grace: 10) == 0, "\(b.log)")
        }

        /// `-h`, `--help`, `-help`, `-H` print the usage and exit 0; `-v`
        /// prints 0.35; abbreviations resolve the same way or are refused as
        /// ambiguous or unknown the same way (exit 1), as Getopt::Long does
        /// in Server::Starter's script.
        @Test func helpAndAbbreviations() throws {
            let perl = try Side.perl.path()
            let cases: [[String]] = [
                ["-h"], ["--help"], ["-help"], ["-H"], ["--he"], ["-v"], ["--version"], ["--vers"],
                // ambiguous: p (path, pid-file, port), d (daemonize, dir), e (enable-auto-restart, envdir),
                // s (signal-on-hup, signal-on-term, status-file, stop), st (status-file, stop), signal-on
                ["-p=1"], ["-d"], ["-e"], ["-s"], ["--st"], ["--signal-on=HUP"],
                ["--bogus"], ["-x"],
                // unique abbreviations of Server::Starter's options, with a value a run would refuse anyway:
                // --stop/--restart without a pid file, which both refuse
                ["--sto"], ["--res"],
            ]
            var table = ""
            for args in cases {
                let s = Scratch("parity-getopt")
                let p = run(perl, args, cwd: s.path, timeout: 20)
                let o = run(Paths.startServer, args, cwd: s.path, timeout: 20)
                table += "  \(args.joined(separator: " ")): perl \(p.status), ours \(o.status)\n"
                #expect(o.status == p.status, "\(args): exit ours \(o.status), Perl \(p.status)\nours: \(o.output)\nperl: \(p.output)")
                if p.output.contains("ambiguous") {
                    #expect(o.output.contains("ambiguous"), "\(args): Perl says ambiguous, ours: \(o.output)")
                }
                if p.output.contains("Unknown option") {
                    #expect(o.output.contains("Unknown option"), "\(args): Perl says unknown, ours: \(o.output)")
                }
                if p.status == 0, p.output.contains("Usage:") {
                    #expect(o.output.contains("Usage:") && o.output.contains("--port"), "\(args): no usage from ours: \(o.output)")
                }
                if p.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0.35" {
                    #expect(o.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0.35", "\(args): \(o.output)")
                }
            }
            print("start_server options, exit codes:\n" + table)
        }
    }
}
