import Foundation
import Glibc
import Testing

/// Zero loss by default, without privileges: `baton run` as uid 65534
/// (nobody), 20 restarts and a failing release under a load that runs until
/// after the last restart, on TCP and on a unix socket, in the machine's
/// network namespace (whatever its net.ipv4.tcp_migrate_req) and in a private
/// one with it at 1; with the test app exiting at once on its signal (so it
/// drops what it had accepted) and with Starman (4 workers, QUIT). Steered
/// (the default) must lose nothing; the same run with `--listen-mode shared`
/// must lose some, or the test could not tell the two apart.
@Suite(.serialized) struct HandoverTests {
    static let available = getuid() == 0 && Tools.setpriv != nil && Tools.privateNetwork

    enum Transport: String, CaseIterable, Sendable { case tcp, unix }

    /// The app under the supervisor, and how a release of it fails.
    enum App: String, CaseIterable, Sendable, CustomStringConvertible {
        /// baton-testapp `--notify --drop-on-term`; the failing release crashes at boot.
        case testapp
        /// Starman, 4 workers, `--signal-on-hup QUIT`, ready when `/health`
        /// answers; the failing release's app.psgi dies when a worker loads it.
        case starman

        var description: String {
            switch self {
            case .testapp: "the test app, exiting at once on SIGTERM"
            case .starman: "Starman, 4 workers, QUIT, --health /health"
            }
        }
    }

    struct Outcome {
        var stats: Load.Stats
        var restarts: Int
        var lastRestart: Date
        var log: String
    }

    /// 20 restarts, then a release that fails at boot (refused), then one
    /// more good restart; each checked to have changed the generation that answers.
    func restartsUnderLoad(app: App, mode: [String], transport: Transport, network: PrivateNetwork?) throws -> Outcome {
        let setpriv = try #require(Tools.setpriv, "setpriv is missing (util-linux)")
        let s = Scratch("zero-loss")
        chmod(s.path, 0o777)  // the unprivileged supervisor writes its pid file, control socket and unix socket here
        // Copies of the binaries the unprivileged user can surely reach (the
        // checkout may sit below a directory only root can enter).
        let baton = s.path + "/baton"
        var copies = [(Binaries.baton, baton)]
        let appCommand: [String]
        let appOptions: [String]
        switch app {
        case .testapp:
            s.release("good", args: "--notify --drop-on-term")
            s.release("broken", args: "--crash-at-boot")
            copies.append((Binaries.testapp, s.path + "/baton-testapp"))
            appCommand = [s.path + "/baton-testapp"]
            appOptions = ["--ready", "notify", "--ready-timeout", "2s"]
        case .starman:
            let starman = try #require(Tools.starman, "starman is missing")
            try #require(Tools.hasStarman, "starman or libplack-perl is missing")
            let psgi = URL(fileURLWithPath: Paths.examples + "/psgi/releases/v1/app.psgi").resolvingSymlinksInPath().path
            copies.append((psgi, s.release("good") + "/app.psgi"))  // the file itself, not the release's symlink
            s.write("releases/broken/app.psgi", "die \"no templates directory at releases/broken/templates\\n\";\n")
            appCommand = [starman, "--workers", "4", "app.psgi"]
            appOptions = ["--signal-on-hup", "QUIT", "--health", "/health", "--ready-timeout", "8s"]
        }
        s.point(to: "good")
        for (from, to) in copies {
            try FileManager.default.copyItem(atPath: from, toPath: to)
            chmod(to, 0o755)
        }
        let socketPath = s.path + "/app.sock"
        let listen = transport == .tcp ? "127.0.0.1:0" : "unix:" + socketPath
        let command =
            (network?.prefix ?? []) + [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", baton, "run"]
            + ["--listen", listen, "--dir", s.path + "/current", "--settle", "0", "--probation", "0"] + appOptions
            + ["--pid-file", s.path + "/baton.pid"] + mode + ["--"] + appCommand
        let b = Child(command[0], Array(command.dropFirst()), log: s.path + "/baton.log", cwd: s.path)
        defer { b.stop(SIGTERM, grace: 20) }
        func serving(_ n: Int) -> Bool {
            eventually(15) { !b.lines("gen \(n) pid").filter { $0.hasSuffix(" serving") || $0.contains(" serving;") }.isEmpty }
        }
        try #require(serving(1), "generation 1 did not serve: \(b.log)")
        let uid = procStatus(b.pid, "Uid")?.split(whereSeparator: { $0 == "\t" || $0 == " " }).first
        #expect(uid == "65534", "the supervisor runs as uid \(uid.map(String.init) ?? "?"), not as nobody")
        let endpoint: Endpoint
        switch transport {
        case .unix:
            endpoint = .unix(socketPath)
        case .tcp:
            let line = try #require(b.lines("listening on").first, "no listening line: \(b.log)")
            let port = try #require(
                line.range(of: #":(\d+)[,;]"#, options: .regularExpression).flatMap { UInt16(line[$0].dropFirst().dropLast()) },
                "no port in: \(line)")
            endpoint = .tcp(port)
        }
        func answeringGeneration() -> Int? {
            let answer = network.map { n in n.perform { body(httpGet(endpoint)) } } ?? body(httpGet(endpoint))
            return answer.flatMap { a in a.range(of: #"gen=(\d+)"#, options: .regularExpression).flatMap { Int(a[$0].dropFirst(4)) } }
        }
        #expect(answeringGeneration() == 1)
        // Bounded: 8 clients (32 for Starman, whose losses on a shared socket
        // come from connections queued at its QUIT), at most 180 s; stopped
        // after the last restart.
        let load = Load(endpoint, clients: app == .starman ? 32 : 8, maxSeconds: 180, network: network)
        usleep(300_000)
        var restarts = 0
        for n in 2...21 {
            b.signal(SIGHUP)
            guard serving(n) else {
                Issue.record("restart \(n - 1): generation \(n) did not serve\n\(b.log.suffix(3000))")
                break
            }
            // Steered, a new connection reaches the new generation as soon as it
            // serves; on a shared socket the old one may take a few more until
            // its signal lands, so there it need only happen within 5 s.
            let changed = mode.isEmpty ? answeringGeneration() == n : eventually(5) { answeringGeneration() == n }
            #expect(
                changed,
                "\(mode.isEmpty ? "steered" : "shared"): restart \(n - 1) did not change the generation that answers (now: \(answeringGeneration().map(String.init) ?? "none"))\n\(b.lines("gen \(n)").joined(separator: "\n"))"
            )
            restarts += 1
        }
        s.point(to: "broken")
        b.signal(SIGHUP)
        #expect(eventually(15) { !b.lines("generation 22 failed:").isEmpty }, "the broken release was not refused: \(b.log)")
        #expect(answeringGeneration() == 21, "the serving generation changed after a refused release")
        s.point(to: "good")
        b.signal(SIGHUP)
        #expect(serving(23), "no good restart after the broken one: \(b.log)")
        let lastRestart = Date()
        // Longer than a restart's drain: a request stuck in a dead queue shows as a stall.
        usleep(1_000_000)
        let stats = load.stop()
        #expect(b.stop(SIGTERM, grace: 20) == 0, "baton run did not stop cleanly: \(b.log.suffix(2000))")
        return Outcome(stats: stats, restarts: restarts, lastRestart: lastRestart, log: b.log)
    }

    @Test(
        .enabled(if: Peers.available(available), "needs root (to make a namespace and a user switch), setpriv, unshare, ip"),
        // Starman only over TCP: its Server::Starter path (Net::Server::SS::PreFork)
        // takes every inherited socket for TCP and answers nothing on a unix one.
        arguments: zip([App.testapp, .testapp, .starman], [Transport.tcp, .unix, .tcp]))
    func steeringLosesNothingAsAnUnprivilegedUser(_ app: App, _ transport: Transport) throws {
        try #require(Self.available, "needs root, setpriv (util-linux), unshare, nsenter, ip and sysctl")
        let machine =
            (try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_migrate_req", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        let network = PrivateNetwork(Scratch("zero-loss-netns"), migrateRequests: true)
        try #require(network.ready, "\(network.holder.log)")
        let runs: [(String, [String], PrivateNetwork?)] = [
            ("steered, machine's namespace (tcp_migrate_req=\(machine))", [], nil),
            ("steered, private namespace (tcp_migrate_req=1)", [], network),
            ("--listen-mode shared, machine's namespace", ["--listen-mode", "shared"], nil),
        ]
        var text = "\n== zero loss as uid 65534 over \(transport): 20 restarts + a failing release, \(app)\n"
        for (name, mode, network) in runs {
            let r = try restartsUnderLoad(app: app, mode: mode, transport: transport, network: network)
            text += "   \(name): \(r.restarts) restarts, \(r.stats.failed) failed of \(r.stats.total) \(r.stats.errors)\n"
            #expect(r.restarts == 20, "\(name): \(r.log.suffix(2000))")
            #expect(r.stats.ok > 1000, "\(name): too little load: \(r.stats.ok)")
            #expect((r.stats.lastSuccess ?? .distantPast) > r.lastRestart, "\(name): the load ended before the last restart")
            if mode.isEmpty {
                #expect(r.stats.failed == 0, "\(name): \(r.stats.errors)\n\(r.log.suffix(3000))")
                #expect(r.log.contains("new connections go to it now"), "\(name): no steering in the log")
            } else if app == .testapp {
                // 20 restarts of an app that drops its accepted connections on
                // one shared socket: some requests fail (0 would mean the test
                // cannot see the difference; measured here: 37 to 62 over TCP
                // and unix). Starman drops only what a worker had accepted at
                // its QUIT (3 of 70,175 here), too few to demand in every run:
                // its shared figure is printed, not asserted.
                #expect(r.stats.failed > 0, "\(name): the shared socket lost nothing, so this test cannot tell")
            }
        }
        print(text)
    }
}
