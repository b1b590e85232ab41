import BatonProtocol
import Foundation
import Glibc
import Synchronization
import Testing

// Every case ends alike (notes for the table, then `finish` with its stated
// limit), so the ends of cases look alike.
extension Reliability {
    /// The app misbehaves: a good generation serves under load while a
    /// release built with one of the test app's fault switches comes up (or
    /// goes down).
    @Suite(.serialized) struct AppFaults {
        /// Restarts into a release with testapp.args `args` under load; the
        /// attempt must fail with `reason` while generation 1 serves on.
        func failedRestart(
            _ c: CaseRecord, args: String, options: [String] = ["--ready", "notify", "--ready-timeout", "1s"], reason: String,
            during: ((Baton, UInt16) throws -> Void)? = nil
        ) throws {
            let v = try Serving(c, options: ["--settle", "0", "--probation", "0"] + options)
            let b = v.b
            let stats = try v.restart(into: "bad", args: args) {
                c.expect(eventually(15) { b.count("generation 2 failed:") == 1 }, "generation 2 did not fail: \(b.log)")
                try during?(b, v.port)
                c.expect(body(httpGet(port: v.port))?.hasPrefix("good gen=1") == true, "generation 1 does not serve any more")
            }
            c.load(stats)
            let failure = line(b.log, containing: "generation 2 failed:") ?? ""
            c.expect(failure.contains(reason), "expected '\(reason)' in: \(failure)")
            c.expect(failure.contains("generation 1 (pid"), "the failure does not say who still serves: \(failure)")
            c.note(failure)
            // The failed generation is gone with its group, nothing leaked.
            let failedPid = generationPid(b.log, 2)
            c.expect(failedPid.map { pid in eventually(8) { isGone(pid) } } ?? false, "generation 2 is still running")
            v.finish(c)
        }

        /// Releases that fail before they are ready, by the test app's
        /// switches: (case, testapp.args, the failure's reason). `never-ready`
        /// accepts on its socket while starting: what it took, it drains.
        @Test(
            arguments: [
                ("app.crash-at-boot", "--crash-at-boot", "exited with exit code 1 before it was ready"),
                ("app.exit-0-at-boot", "--exit-at-boot", "exited with exit code 0 before it was ready"),
                ("app.hang-before-ready", "--hang", "not ready after 1 s"),
                ("app.never-ready", "", "not ready after 1 s"),
                ("app.close-listener", "--close-listener --hang", "not ready after 1 s"),
            ])
        func failsBeforeReady(_ id: String, _ args: String, _ reason: String) throws {
            try faultCase(id) { c in try failedRestart(c, args: args, reason: reason) }
        }

        @Test func notifyErrno() throws {
            try faultCase("app.notify-errno") { c in
                try failedRestart(c, args: "--notify-errno 5", reason: "not ready after 1 s") { b, _ in
                    c.expect(b.count("reported ERRNO=5") == 1, "ERRNO=5 not logged: \(b.log)")
                    c.expect(b.count("STATUS=cannot open the database") == 1, "STATUS not logged")
                    c.note(b.log, lineWith: "reported ERRNO=5")
                }
            }
        }

        @Test func readyFromAChild() throws {
            try faultCase("app.ready-from-child") { c in
                try failedRestart(c, args: "--notify-from-child", reason: "not ready after 1 s") { b, _ in
                    let ignored = line(b.log, containing: "ignored a notify message from pid")
                    c.expect(ignored != nil, "the child's READY=1 was not rejected: \(b.log)")
                    c.note(ignored ?? "")
                }
            }
        }

        @Test func readyFromAStranger() throws {
            try faultCase("app.ready-from-stranger") { c in
                let v = try Serving(c, options: ["--settle", "0", "--probation", "0", "--ready", "notify", "--ready-timeout", "3s"])
                let b = v.b
                let stats = try v.restart(into: "silent", args: "") {
                    let pid = try c.require(eventually(5) { generationPid(b.log, 2) != nil } ? generationPid(b.log, 2) : nil, "no gen 2")
                    // Its NOTIFY_SOCKET, as any process of the machine could find it.
                    let environ = (try? String(contentsOfFile: "/proc/\(pid)/environ", encoding: .utf8)) ?? ""
                    let name = try c.require(
                        environ.split(separator: "\0").first { $0.hasPrefix("NOTIFY_SOCKET=") }.map { String($0.dropFirst(14)) },
                        "no NOTIFY_SOCKET in the app's environment")
                    c.expect((try? Notifier.send("READY=1\nSTATUS=forged", to: name).get()) != nil, "could not send to \(name)")
                    c.expect(eventually(3) { b.count("ignored a notify message from pid \(getpid())") == 1 }, "not rejected: \(b.log)")
                    c.note(b.log, lineWith: "ignored a notify message from pid")
                    let status = controlExchange(v.s.path + "/baton.control", #"{"v":1,"cmd":"status"}"#).joined()
                    c.expect(status.contains(#""state":"starting""#), "generation 2 is not starting any more: \(status)")
                    c.expect(!b.log.contains("STATUS=forged"), "the forged STATUS was taken")
                    c.expect(eventually(8) { b.count("generation 2 failed:") == 1 }, "generation 2 did not fail")
                }
                c.load(stats)
                v.finish(c)
            }
        }

        @Test func notifyGarbage() throws {
            try faultCase("app.notify-garbage") { c in
                let v = try Serving(c, options: ["--settle", "0", "--probation", "0", "--ready", "notify", "--ready-timeout", "10s"])
                let b = v.b
                c.load(
                    v.restart(into: "garbage", args: "--notify-garbage --notify-flood 1000 --notify") {
                        c.expect(b.waitServing(2), "the real READY=1 after the garbage was not taken: \(b.log)")
                    })
                let malformed = b.count("ignored a malformed notify message")
                c.expect(malformed >= 1003, "\(malformed) malformed messages ignored, expected the 1,003 sent")
                c.note("\(malformed) datagrams logged as malformed and ignored; generation 2 ready on its READY=1")
                c.expect(body(httpGet(port: v.port))?.hasPrefix("garbage gen=2") == true, "generation 2 does not serve")
                // The three descriptors passed with a datagram were closed.
                v.finish(c)
            }
        }

        @Test func crashAfterReadyWhileTheOldOneDrains() throws {
            try faultCase("app.crash-after-ready") { c in
                let v = try Serving(c, options: ["--settle", "0", "--probation", "0", "--ready", "notify"])
                let (s, b, port) = (v.s, v.b, v.port)
                // A slow request that generation 1 takes before the restart.
                var slow: Threaded<String?>?
                let start = {
                    slow = Threaded { body(httpGet(port: port, path: "/slow?ms=2500")) }
                    usleep(150_000)
                }
                let stats = v.restart(into: "crashy", args: "--notify --crash-after 400", before: start) {
                    c.expect(b.waitServing(2), "generation 2 did not serve: \(b.log)")
                    s.point(to: "good")
                    c.expect(eventually(5) { b.count("exited unexpectedly with exit code 3") == 1 }, "no crash: \(b.log)")
                    c.expect(b.waitServing(3), "no respawn: \(b.log)")
                }
                let answer = slow?.value(within: 10)
                c.expect(answer != nil, "the slow request did not finish")
                c.expect(answer??.hasPrefix("good gen=1") == true, "the slow request on generation 1 failed")
                c.expect(eventually(5) { b.count("gen 1 pid") > 0 && b.count("drained after") >= 1 }, "generation 1 did not drain")
                c.load(stats, allowed: 8)
                c.note(b.log, lineWith: "exited unexpectedly")
                c.note(b.log, lineWith: "nothing serves: starting a new generation")
                c.note("the 2.5 s request on generation 1 completed")
                v.finish(
                    c,
                    limit:
                        "a process that dies takes the connections it had accepted with it (the kernel resets them): at most one per client can fail (\(stats.failed) of \(stats.ok + stats.failed) here); connections still queued wait for the respawn, since the supervisor keeps the socket open"
                )
            }
        }

        /// Generation 1's processes outlive its signal: its main process
        /// ignores TERM (its group is killed at --drain-timeout), or exits at
        /// once and leaves its two workers behind (killed with the group).
        @Test(arguments: [("app.ignore-term", "--ignore-term"), ("app.orphan-workers", "--orphan-workers")])
        func outlivesItsSignal(_ id: String, _ fault: String) throws {
            let ignoresTerm = fault == "--ignore-term"
            try faultCase(id) { c in
                let options = ["--settle", "0", "--probation", "0"] + (ignoresTerm ? ["--drain-timeout", "1s"] : [])
                let v = try Serving(c, options: options, args: "--notify \(fault) --workers 2")
                let b = v.b
                let group = try c.require(pgidIn(body(httpGet(port: v.port, path: "/env"))), "no pgid")
                c.expect(eventually(5) { processGroupMembers(group).count == 3 }, "no workers")
                let members = processGroupMembers(group)
                let stats = v.restart(into: "next", args: "--notify") {
                    c.expect(b.waitServing(2), "generation 2 did not serve")
                    c.expect(eventually(5) { members.allSatisfy(isGone) }, "left: \(members.filter { !isGone($0) })")
                }
                c.load(stats)
                if ignoresTerm {
                    c.expect(eventually(3) { b.count("sent SIGKILL to its process group") == 1 }, "no SIGKILL: \(b.log)")
                    c.note(b.log, lineWith: "sent SIGKILL to its process group")
                    c.limit =
                        "none may fail: steering sends every new connection to generation 2 before generation 1 is signalled, so the SIGKILL finds it idle (\(stats.failed) here). With --listen-mode shared it keeps accepting until it is killed, and the requests it holds then are reset"
                } else {
                    c.note("the main process exited at once; its 2 workers were killed with the group and reaped")
                    c.limit =
                        "none may fail: the workers get no new connection once generation 2 is steered to, so they are idle when they are killed with their group (\(stats.failed) here); with --listen-mode shared, the requests they hold are reset"
                }
                v.finish(c)
            }
        }

        @Test func workersLeaveTheProcessGroup() throws {
            try faultCase("app.escape-group") { c in
                let v = try Serving(
                    c, options: ["--settle", "0", "--probation", "0", "--drain-timeout", "2s"],
                    args: "--notify --orphan-workers --escape-group --workers 2")
                let b = v.b
                c.expect(eventually(5) { descendants(of: b.child.pid).count == 3 }, "no workers")
                let first = descendants(of: b.child.pid)
                let stats = v.restart(into: "next", args: "--notify") {
                    c.expect(b.waitServing(2), "generation 2 did not serve")
                    c.expect(
                        eventually(8) { first.allSatisfy(isGone) },
                        "generation 1's escaped workers still run: \(first.filter { !isGone($0) })")
                }
                c.load(stats)
                let killed = "outlived its generation outside its process group: sent SIGKILL"
                c.expect(eventuallyAndSteady(3, steady: 0.3) { b.count(killed) == 2 }, "not logged once each: \(b.log)")
                c.note(b.log, lineWith: "outlived its generation")
                v.finish(
                    c,
                    limit:
                        "none may fail: workers that left their process group are killed once their generation's main process is gone, and the supervisor shuts that generation's socket down so they accept nothing more (a socket leaves its SO_REUSEPORT group only when its last holder closes it; before this shutdown the escaped workers kept it in the group and were sent new connections) (\(stats.failed) here)"
                )
            }
        }

        @Test func bindsItsOwnSocket() throws {
            try faultCase("app.bind-own") { c in
                try failedRestart(c, args: "--notify --bind-own plain", reason: "exited with exit code 1 before it was ready")
                let s = Scratch()
                let b = servingBaton(s, options: ["--settle", "0", "--probation", "0", "--listen-mode", "shared"])
                c.expect(b.waitServing(1), "generation 1 did not serve")
                s.release("reuse", args: "--notify --bind-own reuseport")
                s.point(to: "reuse")
                b.hup()
                c.expect(eventually(10) { b.count("generation 2 failed:") == 1 }, "SO_REUSEPORT bind was not refused: \(b.log)")
                c.expect(b.log.contains("cannot bind a socket of my own on the inherited address: Address already in use"), "\(b.log)")
                c.note("with --listen-mode shared, SO_REUSEPORT too: EADDRINUSE (the shared listener has no SO_REUSEPORT)")
                b.child.signal(SIGTERM)
                c.expect(b.child.wait() == 0, "baton did not stop")
                c.limit =
                    "steered listeners (the default) carry SO_REUSEPORT, so an app running as the same user can bind the port beside them and join their group; an app run with --user as another uid cannot"
            }
        }

        @Test func leaksDescriptors() throws {
            try faultCase("app.leak-fds") { c in
                let v = try Serving(c, options: ["--settle", "0", "--probation", "0"], args: "--notify --leak-fds 1000")
                let leaky = try c.require(pidIn(body(httpGet(port: v.port, path: "/env"))), "no pid")
                let leaked = openDescriptors(leaky).count
                c.expect(leaked > 1000, "generation 1 did not leak")
                c.load(v.restart(into: "next", args: "--notify") { c.expect(v.b.waitServing(2), "generation 2 did not serve") })
                let env = body(httpGet(port: v.port, path: "/env")) ?? ""
                c.expect(env.contains("fds=0,1,2,3\n"), "generation 2 inherited more: \(env)")
                c.note("generation 1 held \(leaked) descriptors; generation 2 started with 0,1,2,3")
                v.finish(c)
            }
        }

        @Test func floodsItsOutput() throws {
            try faultCase("app.flood-output") { c in
                let v = try Serving(c, options: ["--settle", "0", "--probation", "0"])
                let (s, b) = (v.s, v.b)
                let control = s.path + "/baton.control"
                func status() -> String { controlExchange(control, #"{"v":1,"cmd":"status"}"#).joined() }
                func logSize() -> Int { ((try? FileManager.default.attributesOfItem(atPath: b.child.logPath))?[.size] as? Int) ?? 0 }
                var worst = 0.0
                var queries = 0
                let started = Date()
                let stats = v.restart(into: "loud", args: "--notify --flood-output 200") {
                    // The log grows too fast to be read while waiting: ask the supervisor.
                    c.expect(eventually(20) { status().contains(#""serving":2"#) }, "generation 2 did not serve")
                    s.point(to: "good")
                    // While it floods, the supervisor answers at once.
                    while logSize() < 200 << 20, Date().timeIntervalSince(started) < 30 {
                        let t = Date()
                        let answer = status()
                        worst = max(worst, Date().timeIntervalSince(t))
                        queries += 1
                        c.expect(answer.contains(#""state":"running""#), "no status: \(answer)")
                    }
                    let t = Date()
                    let restart = controlExchange(control, #"{"v":1,"cmd":"restart"}"#)
                    c.expect(exitOf(restart) == 0, "restart after the flood: \(restart.suffix(2))")
                    c.note("a restart right after it took \(Int(Date().timeIntervalSince(t) * 1000)) ms")
                }
                c.load(stats)
                let size = logSize() >> 20
                c.expect(size >= 200, "only \(size) MiB were written")
                c.note(
                    "\(size) MiB of log in \(String(format: "%.1f", Date().timeIntervalSince(started))) s; \(queries) status queries during the flood, the slowest answered in \(Int(worst * 1000)) ms"
                )
                v.finish(
                    c,
                    limit:
                        "the app writes to the supervisor's own stdout and stderr: to a file that costs nothing, but if they are a pipe (systemd's journal, start_server's '--log-file=| cmd') a reader slower than the flood blocks the supervisor's log writes too"
                )
                // The supervisor's own lines are all there, between the app's.
                let fd = open(b.child.logPath, O_RDONLY)
                lseek(fd, -4096, SEEK_END)
                var tail = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &tail, tail.count)
                close(fd)
                let end = String(decoding: tail.prefix(max(0, n)), as: UTF8.self)
                c.expect(end.contains("stopped (exit code 0)"), "the supervisor's last line is missing")
                unlink(b.child.logPath)
            }
        }

        /// Shutting down the shared listener: the kernel stops the one socket
        /// every generation and the supervisor hold.
        /// One shared listener (`--listen-mode shared`), shut down by a
        /// generation of the test app (`first`, then `second` after a HUP).
        func shutdownScenario(_ c: CaseRecord, first: String, second: String) throws {
            let v = try Serving(
                c, options: ["--listen-mode", "shared", "--settle", "0", "--probation", "0", "--ready", "notify", "--ready-timeout", "1s"],
                args: first)
            let (b, port) = (v.b, v.port)
            let during = v.restart(into: "next", args: second) { usleep(1_500_000) }
            // Afterwards: served again, without a single failure.
            let after = Load(port: port, clients: 8)
            usleep(500_000)
            let stats = after.stop()
            c.load(stats)
            c.requests += during.ok + during.failed
            c.failed += during.failed
            // The fault happened: the app shut the socket down, the supervisor
            // saw it and listened on it again.
            c.expect(b.log.contains("testapp: shutdown("), "the app did not shut the listener down: \(b.log)")
            c.expect(b.log.contains("was shut down by a process that holds it"), "the supervisor did not see it: \(b.log)")
            c.expect(b.log.contains("listening on it again"), "the supervisor did not listen again: \(b.log)")
            c.expect(during.ok > 0, "nothing was served around the shutdown: \(during.errors)")
            // How many fail depends on how fast the clients retry while the socket
            // is down (a refused connect is immediate); how long it is down is
            // bounded: from the first failure to the last at most 500 ms, because
            // the supervisor listens again on the EPOLLHUP its one epoll_wait
            // returns (a few ms here), with room for a loaded 2-core machine.
            let times = during.failureTimes.map(\.0)
            let window = times.isEmpty ? 0 : times.max()!.timeIntervalSince(times.min()!)
            c.expect(window <= 0.5, "failures for \(Int(window * 1000)) ms around the shutdown")
            let kinds = during.errors.isEmpty ? "" : " (\(during.errors.keys.sorted().joined(separator: ", ")))"
            c.note(
                "around the shutdown: \(during.failed) of \(during.ok + during.failed) failed\(kinds), within \(Int(window * 1000)) ms")
            c.note("afterwards: \(stats.failed) of \(stats.ok + stats.failed) failed")
            c.note(b.log, lineWith: "was shut down")
            v.finish(
                c,
                limit:
                    "with --listen-mode shared, shutdown(SHUT_RD or SHUT_RDWR) on the listening socket stops it for every process holding it (one socket, one state): the connections queued at that instant are reset and new ones refused until the supervisor, woken by EPOLLHUP, listens on it again (a unix socket cannot listen again once shut down). Steered listeners, the default, give each generation a socket of its own (the next case)"
            )
        }

        @Test func shutsDownTheSharedListenerWhileStarting() throws {
            try faultCase("app.shutdown-listener-boot") { c in
                try shutdownScenario(c, first: "--notify", second: "--shutdown-listener boot --hang")
            }
        }

        @Test func shutsDownTheSharedListenerWhenRetired() throws {
            try faultCase("app.shutdown-listener-term") { c in
                try shutdownScenario(c, first: "--notify --shutdown-listener term", second: "--notify")
            }
        }

        static let namespaces =
            getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")

        /// Both shutdowns again in hand-over mode, in a private network
        /// namespace (net.ipv4.tcp_migrate_req=1 there only), load included.
        @Test(.enabled(if: Peers.available(namespaces), "needs root, unshare and ip"))
        func shutdownsInHandoverMode() {
            faultCase("app.shutdown-listener-handover") { c in
                let s = Scratch()
                s.release("a", args: "--notify --shutdown-listener term")
                s.release("b", args: "--shutdown-listener boot --hang")
                s.release("c", args: "--notify")
                s.point(to: "a")
                let script = """
                    set -e
                    ip link set lo up
                    sysctl -q -w net.ipv4.tcp_migrate_req=1
                    B="$1"; T="$2"; D="$3"
                    point() { ln -sfn "$D/releases/$1" "$D/current.tmp"; mv -T "$D/current.tmp" "$D/current"; }
                    "$B" run --listen 127.0.0.1:8080 --handover --settle 0 --probation 0 --ready notify --ready-timeout 1s --dir "$D/current" -- "$T" > "$D/baton.log" 2>&1 &
                    BP=$!
                    i=0; while ! grep -q ' serving' "$D/baton.log"; do i=$((i+1)); [ $i -lt 200 ] || exit 3; sleep 0.05; done
                    ( while [ ! -f "$D/stop-load" ]; do "$T" --load 8080 --requests 400 --concurrency 8; done > "$D/load.out" ) &
                    LP=$!
                    sleep 0.3; point b; kill -HUP $BP; sleep 1.6
                    point c; kill -HUP $BP; sleep 0.8
                    touch "$D/stop-load"; wait $LP
                    kill -TERM $BP; wait $BP || true
                    awk -F'[= ]' '{ ok += $2; failed += $4 } END { print "ok=" ok " failed=" failed }' "$D/load.out"
                    """
                let run = Child(
                    "/usr/bin/unshare", ["-n", "/bin/sh", "-c", script, "sh", Binaries.baton, Binaries.testapp, s.path],
                    log: s.path + "/scenario.log")
                c.expect(run.wait(60) == 0, "the scenario failed: \(run.log)")
                let out = run.log
                func number(_ key: String) -> Int {
                    guard let r = out.range(of: key + #"=(\d+)"#, options: .regularExpression) else { return -1 }
                    return Int(out[r].split(separator: "=").last!) ?? -1
                }
                let log = (try? String(contentsOfFile: s.path + "/baton.log", encoding: .utf8)) ?? ""
                c.requests = number("ok") + number("failed")
                c.failed = number("failed")
                c.expect(number("ok") > 500, "too few requests: \(out)")
                c.expect(number("failed") == 0, "\(number("failed")) failed requests: \(log)")
                c.expect(log.contains("generation 2 failed: not ready after 1 s"), "generation 2 did not fail: \(log)")
                c.expect(log.contains("gen 3 pid") && log.contains("drained after"), "generation 3 did not take over: \(log)")
                c.expect(log.contains("shutdown(3, SHUT_RDWR) = 0"), "no shutdown happened: \(log)")
                c.note(
                    "a generation's shutdown() closes only its own SO_REUSEPORT socket; with tcp_migrate_req=1 its queue moves to the other"
                )
                c.expectNoFiles(in: s)
            }
        }
    }
}
