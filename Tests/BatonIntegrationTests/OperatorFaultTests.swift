import Foundation
import Glibc
import Synchronization
import Testing

extension Reliability {
    /// The operator misbehaves: signals, commands at the wrong moment, broken
    /// releases, directories and files that are not what they should be.
    @Suite(.serialized) struct OperatorFaults {
        /// A daemon on `current` -> `releases/good`, serving; its watch.
        func startedDaemon(_ c: CaseRecord, _ s: Scratch, options: [String] = []) throws -> (Daemon, Watch, UInt16) {
            s.release("good", args: "--notify")
            s.point(to: "good")
            let d = Daemon(s: s)
            let started = d.start(["--dir", s.path + "/current", "--ready", "notify"] + options, app: [])
            c.expect(started.code == 0, "start: \(started.output)")
            let port = try c.require(d.port, "no port: \(started.output)")
            let pid = try c.require(d.supervisorPid, "no supervisor pid")
            return (d, Watch(pid), port)
        }

        /// Stops the daemon and checks it leaves nothing behind.
        /// With `checkRunningFirst`, first checks that the supervisor holds no
        /// new descriptor and no zombie.
        func stopDaemon(_ d: Daemon, _ watch: Watch, _ c: CaseRecord, checkRunningFirst: Bool = false) {
            if checkRunningFirst { watch.checkRunning(c) }
            watch.sample()
            let stop = d.run("stop")
            c.expect(stop.code == 0, "stop: \(stop.output)")
            c.expect(eventually(5) { isGone(watch.supervisor) }, "the supervisor is still running")
            watch.checkAllGone(c)
            c.expectNoFiles(in: d.s)
        }

        /// The arguments of `baton deploy` of `release` (under `s`'s releases/)
        /// to the supervisor of `app.pid`, with `current` as its symlink; with
        /// `fresh`, the options that start one if none runs.
        func deployArguments(_ s: Scratch, _ release: String, fresh: Bool = true, app: [String]) -> [String] {
            ["deploy", "--pid-file", s.path + "/app.pid", "--release", s.path + "/releases/" + release, "--current", s.path + "/current"]
                + (fresh ? ["--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--ready", "notify"] : []) + ["--"] + app
        }

        @Test func fiftyHangupsInOneSecond() throws {
            try faultCase("op.hup-storm") { c in
                let s = Scratch()
                let b = servingBaton(s, options: ["--settle", "0", "--probation", "0", "--ready", "notify"])
                c.expect(b.waitServing(1), "generation 1 did not serve: \(b.log)")
                let port = try c.require(b.port, "no port")
                let watch = Watch(b.child.pid)
                let rss = rssKiB(b.child.pid) ?? 0
                s.release("slow", args: "--notify --ready-delay 2000")
                s.point(to: "slow")
                let load = Load(port: port, clients: 8)
                watch.sampling {
                    // 50 signals within one second, all while generation 2 comes up.
                    let start = Date()
                    for i in 0..<50 {
                        let due = start.addingTimeInterval(Double(i) * 0.019)
                        if due > Date() { usleep(useconds_t(due.timeIntervalSinceNow * 1e6)) }
                        b.hup()
                    }
                    c.expect(Date().timeIntervalSince(start) < 1.5, "the 50 signals took \(Date().timeIntervalSince(start)) s")
                    c.expect(b.waitServing(3, 20), "no generation 3: \(b.log)")
                    c.expect(eventually(5) { b.count("drained after") == 2 }, "the old generations did not drain")
                    usleep(1_500_000)
                }
                c.load(load.stop())
                let spawned = b.count(" spawned in ")
                c.expect(spawned == 3, "\(spawned - 1) restarts ran for 50 SIGHUPs, expected 2")
                c.expect(b.count("one more restart will follow it") >= 1, "the restarts were not coalesced")
                c.note("\(spawned - 1) restarts ran (one, then one coalesced); supervisor RSS \(rss) -> \(rssKiB(b.child.pid) ?? 0) KiB")
                watch.checkRunning(c)
                stopAndCheck(b, watch, c, s)
            }
        }

        @Test func restartWhileAStopDrains() throws {
            try faultCase("op.restart-during-stop") { c in
                let s = Scratch()
                let (d, watch, port) = try startedDaemon(c, s)
                let load = Load(port: port, clients: 8)
                usleep(300_000)
                c.load(load.stop())
                // A slow request keeps generation 1 draining for a while.
                let slow = Threaded { body(httpGet(port: port, path: "/slow?ms=2000")) }
                usleep(200_000)
                let stop = Child(Binaries.baton, ["stop", "--pid-file", d.pidFile], log: s.path + "/stop.log", cwd: s.path)
                usleep(300_000)
                let restart = d.run("restart")
                c.expect(restart.code == 11, "restart during stop exited \(String(describing: restart.code)): \(restart.output)")
                c.expect(restart.output.contains("the supervisor is stopping"), "\(restart.output)")
                c.note("restart: exit \(restart.code.map(String.init) ?? "?"), \(line(restart.output, containing: "stopping") ?? "")")
                c.expect(stop.wait(20) == 0, "stop: \(stop.log)")
                let answer = slow.value(within: 10)
                c.expect(answer != nil, "the slow request did not end")
                c.expect(answer??.hasPrefix("good gen=1") == true, "the slow request was cut by the stop")
                c.note("stop: exit 0 after the 2 s request drained: '\(line(stop.log, containing: "stopped") ?? "")'")
                let late = d.run("restart")
                c.expect(late.code == 3, "restart after the stop: \(late.output)")
                watch.checkAllGone(c)
                c.expectNoFiles(in: s)
            }
        }

        @Test func stopWhileARestartBringsUpASlowGeneration() throws {
            try faultCase("op.stop-during-restart") { c in
                let s = Scratch()
                let (d, watch, port) = try startedDaemon(c, s)
                let load = Load(port: port, clients: 8)
                s.release("slow", args: "--notify --boot-delay 3000")
                s.point(to: "slow")
                let restart = Child(Binaries.baton, ["restart", "--pid-file", d.pidFile], log: s.path + "/restart.log", cwd: s.path)
                c.expect(eventually(5) { restart.log.contains("spawned") }, "the restart did not begin: \(restart.log)")
                c.load(load.stop())
                watch.sample()
                let stop = d.run("stop")
                c.expect(stop.code == 0, "stop: \(stop.output)")
                let code = restart.wait(20)
                c.expect(code == 11, "the interrupted restart exited \(String(describing: code)): \(restart.log)")
                c.expect(restart.log.contains("the supervisor is stopping"), "\(restart.log)")
                c.expect(!restart.log.contains("still serves"), "it claims something still serves: \(restart.log)")
                c.note("restart: exit \(code.map(String.init) ?? "?"), '\(line(restart.log, containing: "stopping") ?? "")'")
                c.note("stop: exit 0")
                c.expect(eventually(5) { isGone(watch.supervisor) }, "the supervisor is still running")
                watch.checkAllGone(c)
                c.expectNoFiles(in: s)
            }
        }

        @Test func twoDeploysAtOnce() throws {
            try faultCase("op.two-deploys") { c in
                let s = Scratch()
                for v in ["v1", "v2", "v3"] { s.release(v, args: "--notify --ready-delay 600") }
                func deploy(_ release: String) -> [String] { deployArguments(s, release, app: [Binaries.testapp]) }
                let first = batonCommand(deploy("v1"), in: s)
                c.expect(first.code == 0, "first deploy: \(first.output)")
                let d = Daemon(s: s)
                let port = try c.require(d.port, "no port")
                let watch = Watch(try c.require(d.supervisorPid, "no pid"))
                let load = Load(port: port, clients: 8)
                let a = Child(Binaries.baton, deploy("v2"), log: s.path + "/deploy-a.log", cwd: s.path)
                usleep(100_000)
                let b = Child(Binaries.baton, deploy("v3"), log: s.path + "/deploy-b.log", cwd: s.path)
                watch.sampling {
                    c.expect(a.wait(30) == 0, "deploy v2: \(a.log)")
                    c.expect(b.wait(30) == 0, "deploy v3: \(b.log)")
                }
                c.load(load.stop())
                c.expect(b.log.contains("another deploy is running; waiting"), "the second deploy did not wait: \(b.log)")
                c.expect(body(httpGet(port: port))?.hasPrefix("v3 gen=3") == true, "v3 does not serve")
                c.expect(s.pointed() == "v3", "current does not name v3")
                c.note("both exit 0; the second printed 'another deploy is running; waiting'; v3 serves as generation 3")
                // The deploy that holds the lock removes its file as it lets go.
                c.expect(!FileManager.default.fileExists(atPath: d.pidFile + ".deploy-lock"), "the lock file app.pid.deploy-lock stayed")
                c.note("the lock file app.pid.deploy-lock is gone after both")
                stopDaemon(d, watch, c, checkRunningFirst: true)
            }
        }

        @Test func deployOfAMissingRelease() throws {
            try faultCase("op.deploy-missing") { c in
                let s = Scratch()
                let (d, watch, port) = try startedDaemon(c, s)
                let load = Load(port: port, clients: 8)
                let r = batonCommand(deployArguments(s, "nope", fresh: false, app: ["x"]), in: s)
                c.load(load.stop())
                c.expect(r.code == 2, "exit \(String(describing: r.code)): \(r.output)")
                c.expect(r.output.contains("--release \(s.path)/releases/nope: No such file or directory; nothing was changed"), r.output)
                c.expect(s.pointed() == "good", "the symlink moved")
                c.note("exit 2: '\(r.output.trimmingCharacters(in: .whitespacesAndNewlines))'")
                stopDaemon(d, watch, c, checkRunningFirst: true)
            }
        }

        @Test func deployOfANonExecutableCommand() throws {
            try faultCase("op.deploy-not-executable") { c in
                let s = Scratch()
                let script = "#!/bin/sh\nexec \(Binaries.testapp) \"$@\"\n"
                for (name, mode) in [("v1", 0o755), ("noexec", 0o644)] {
                    let dir = s.release(name, args: "--notify")
                    _ = FileManager.default.createFile(
                        atPath: dir + "/app", contents: Data(script.utf8), attributes: [.posixPermissions: mode])
                }
                func deploy(_ release: String) -> (code: Int32?, output: String, seconds: Double) {
                    batonCommand(deployArguments(s, release, app: ["./app"]), in: s)
                }
                let first = deploy("v1")
                c.expect(first.code == 0, "deploy v1: \(first.output)")
                let d = Daemon(s: s)
                let port = try c.require(d.port, "no port")
                let watch = Watch(try c.require(d.supervisorPid, "no pid"))
                let load = Load(port: port, clients: 8)
                let r = watch.sampling { deploy("noexec") }
                c.load(load.stop())
                c.expect(r.code == 6, "exit \(String(describing: r.code)): \(r.output)")
                c.expect(r.output.contains("'./app'") && r.output.contains("not executable"), "the reason is not named: \(r.output)")
                c.expect(r.output.contains("points back to \(s.path)/releases/v1"), r.output)
                c.expect(body(httpGet(port: port))?.hasPrefix("v1 gen=1") == true, "v1 does not serve")
                c.note("exit 6: '\(line(r.output, containing: "failed:") ?? "")'")
                stopDaemon(d, watch, c, checkRunningFirst: true)
            }
        }

        @Test func aDanglingDirSymlink() throws {
            try faultCase("op.dir-dangling") { c in
                let s = Scratch()
                symlink(s.path + "/releases/gone", s.path + "/dangling")
                let r = batonCommand(
                    [
                        "start", "--pid-file", s.path + "/other.pid", "--listen", "127.0.0.1:0", "--dir", s.path + "/dangling", "--",
                        Binaries.testapp,
                    ],
                    in: s)
                c.expect(r.code == 2, "start: exit \(String(describing: r.code)): \(r.output)")
                c.expect(r.output.contains("--dir \(s.path)/dangling: No such file or directory (a dangling symlink?)"), r.output)
                c.expect(!FileManager.default.fileExists(atPath: s.path + "/other.pid"), "a pid file was left")
                c.note("start: exit 2, '\(line(r.output, containing: "--dir") ?? "")'")
                let (d, watch, port) = try startedDaemon(c, s)
                let load = Load(port: port, clients: 8)
                s.point(to: "gone")
                let restart = watch.sampling { d.run("restart") }
                c.load(load.stop())
                c.expect(restart.code == 6, "restart: exit \(String(describing: restart.code)): \(restart.output)")
                c.expect(restart.output.contains("(a dangling symlink?)"), restart.output)
                c.expect(restart.output.contains("still serves"), restart.output)
                c.note("restart: exit 6, '\(line(restart.output, containing: "failed:") ?? "")'")
                s.point(to: "good")
                stopDaemon(d, watch, c, checkRunningFirst: true)
            }
        }

        @Test func aBadEnvdir() throws {
            try faultCase("op.envdir-bad") { c in
                let s = Scratch()
                let envdir = s.path + "/env"
                try FileManager.default.createDirectory(atPath: envdir, withIntermediateDirectories: true)
                _ = FileManager.default.createFile(atPath: envdir + "/BAD", contents: Data([0x66, 0xFF, 0xFE, 0x0A]))
                let r = batonCommand(
                    ["start", "--pid-file", s.path + "/other.pid", "--listen", "127.0.0.1:0", "--envdir", envdir, "--", Binaries.testapp],
                    in: s)
                c.expect(r.code == 2, "start: exit \(String(describing: r.code)): \(r.output)")
                c.expect(r.output.contains("--envdir: \(envdir)/BAD is not valid UTF-8 text"), r.output)
                c.expect(!FileManager.default.fileExists(atPath: s.path + "/other.pid"), "a pid file was left")
                c.note("start, not UTF-8: exit 2, '\(line(r.output, containing: "--envdir") ?? "")'")
                unlink(envdir + "/BAD")
                _ = FileManager.default.createFile(atPath: envdir + "/BIG", contents: Data(count: 10 << 20))
                let big = batonCommand(
                    ["start", "--pid-file", s.path + "/other.pid", "--listen", "127.0.0.1:0", "--envdir", envdir, "--", Binaries.testapp],
                    in: s)
                c.expect(big.code == 2 && big.output.contains("is 10485760 bytes, over the limit"), "start with 10 MB: \(big.output)")
                c.note("start, 10 MB: exit 2, '\(line(big.output, containing: "--envdir") ?? "")'")
                unlink(envdir + "/BIG")
                _ = FileManager.default.createFile(atPath: envdir + "/FROM_ENVDIR", contents: Data("ok\n".utf8))
                let (d, watch, port) = try startedDaemon(c, s, options: ["--envdir", envdir])
                let load = Load(port: port, clients: 8)
                var codes: [Int32?] = []
                watch.sampling {
                    for (name, data) in [("BAD", Data([0xC3, 0x28])), ("BIG", Data(count: 10 << 20))] {
                        _ = FileManager.default.createFile(atPath: envdir + "/" + name, contents: data)
                        let restart = d.run("restart")
                        codes.append(restart.code)
                        c.expect(restart.code == 6, "restart with \(name): \(restart.output)")
                        c.expect(restart.output.contains(envdir + "/" + name), "the file is not named: \(restart.output)")
                        c.note("restart with \(name): exit 6, '\(line(restart.output, containing: "failed:") ?? "")'")
                        unlink(envdir + "/" + name)
                    }
                }
                c.load(load.stop())
                c.expect(body(httpGet(port: port))?.hasPrefix("good gen=1") == true, "generation 1 does not serve")
                stopDaemon(d, watch, c, checkRunningFirst: true)
            }
        }

        @Test func theSupervisorIsKilled() throws {
            try faultCase("op.sigkill-supervisor") { c in
                let s = Scratch()
                let port = freePort()
                let (d, watch, _) = try startedDaemon(c, s, options: ["--listen", "127.0.0.1:\(port)"])
                let app = try c.require(pidIn(body(httpGet(port: port))), "no app pid")
                let load = Load(port: port, clients: 8)
                usleep(200_000)
                kill(watch.supervisor, SIGKILL)
                c.expect(eventually(5) { isGone(watch.supervisor) }, "the supervisor survived SIGKILL")
                usleep(500_000)
                c.load(load.stop())
                c.expect(body(httpGet(port: port))?.contains("pid=\(app)") == true, "the orphaned generation does not serve")
                c.note("the orphaned generation (pid \(app)) served on: no request failed")
                // A new start names the orphan and how to stop it, and leaves nothing.
                let other = Scratch()
                let again = batonCommand(
                    ["start", "--pid-file", other.path + "/app.pid", "--listen", "127.0.0.1:\(port)", "--", Binaries.testapp], in: other)
                c.expect(again.code == 8, "second start: exit \(String(describing: again.code)): \(again.output)")
                c.expect(again.output.contains("is held by pid \(app)"), again.output)
                c.expect(again.output.contains("kill -TERM -\(app)"), again.output)
                c.expect(leftoverFiles(in: other.path).isEmpty, "the refused start left \(leftoverFiles(in: other.path))")
                c.note("new start: exit 8, '\(line(again.output, containing: "is held by") ?? "")'")
                // Following the advice, then starting again over the stale files.
                kill(-app, SIGTERM)
                c.expect(eventually(5) { isGone(app) }, "the orphan did not stop")
                let status = d.run("status")
                c.expect(status.code == 1, "status with the stale pid file: \(status.output)")
                let restarted = d.start(["--dir", s.path + "/current", "--listen", "127.0.0.1:\(port)"], app: [])
                c.expect(restarted.code == 0, "start after the orphan stopped: \(restarted.output)")
                let watch2 = Watch(try c.require(d.supervisorPid, "no new pid"))
                c.expect(body(httpGet(port: port))?.hasPrefix("good gen=1") == true, "the new supervisor does not serve")
                stopDaemon(d, watch2, c)
                watch.checkAllGone(c)
            }
        }

        @Test func aStalePidFile() throws {
            try faultCase("op.pidfile-stale") { c in
                try pidFileCase(c, contents: Data("999999\n".utf8), statusCode: 1, warning: "replacing stale pid file")
            }
        }

        @Test func aGarbagePidFile() throws {
            try faultCase("op.pidfile-garbage") { c in
                try pidFileCase(
                    c, contents: Data([0x6E, 0x6F, 0x70, 0x65, 0x00, 0xFF, 0x0A, 0x31, 0x32]), statusCode: 1,
                    warning: "replacing stale pid file")
            }
        }

        func pidFileCase(_ c: CaseRecord, contents: Data, statusCode: Int32, warning: String) throws {
            let s = Scratch()
            let d = Daemon(s: s)
            _ = FileManager.default.createFile(atPath: d.pidFile, contents: contents)
            let status = d.run("status")
            c.expect(status.code == statusCode, "status: exit \(String(describing: status.code)): \(status.output)")
            c.note(
                "status: exit \(status.code.map(String.init) ?? "?"), '\(status.output.trimmingCharacters(in: .whitespacesAndNewlines))'")
            let (_, watch, port) = try startedDaemon(c, s)
            let log = (try? String(contentsOfFile: s.path + "/app.log", encoding: .utf8)) ?? ""
            c.expect(log.contains(warning), "no warning: \(log)")
            c.note(log, lineWith: warning)
            c.expect(
                (try? String(contentsOfFile: d.pidFile, encoding: .utf8)) == "\(watch.supervisor)\n",
                "the pid file does not hold the new pid")
            c.expect(body(httpGet(port: port)) != nil, "nothing serves")
            stopDaemon(d, watch, c)
        }

        @Test func aPidFileSymlink() throws {
            try faultCase("op.pidfile-symlink") { c in
                let s = Scratch()
                let d = Daemon(s: s)
                let victim = s.path + "/precious.txt"
                _ = FileManager.default.createFile(atPath: victim, contents: Data("precious\n".utf8))
                symlink(victim, d.pidFile)
                let (_, watch, _) = try startedDaemon(c, s)
                c.expect((try? String(contentsOfFile: victim, encoding: .utf8)) == "precious\n", "the symlink's target was written")
                var st = stat()
                lstat(d.pidFile, &st)
                c.expect((st.st_mode & S_IFMT) == S_IFREG, "the pid file is not a regular file now")
                c.note("the symlink was replaced by the pid file; its target kept 'precious'")
                stopDaemon(d, watch, c)
                c.expect((try? String(contentsOfFile: victim, encoding: .utf8)) == "precious\n", "the target changed at stop")
            }
        }

        @Test func aFileStandsAtTheControlSocketPath() {
            faultCase("op.control-occupied") { c in
                let s = Scratch()
                let d = Daemon(s: s)
                let control = s.path + "/app.control"
                for (kind, make) in [
                    ("a regular file", { _ = FileManager.default.createFile(atPath: control, contents: Data("keep me\n".utf8)) }),
                    ("a directory", { mkdir(control, 0o755) }),
                    ("a symlink to a socket", { symlink("/run/systemd/notify", control) }),
                ] as [(String, () -> Void)] {
                    make()
                    let r = d.start()
                    c.expect(r.code == 2, "\(kind): exit \(String(describing: r.code)): \(r.output)")
                    c.expect(r.output.contains("--control \(control): a file that is not a socket stands there"), "\(kind): \(r.output)")
                    c.expect(!FileManager.default.fileExists(atPath: d.pidFile), "\(kind): a pid file was left")
                    c.note("\(kind): exit 2, '\(line(r.output, containing: "stands there") ?? "")'")
                    _ = try? FileManager.default.removeItem(atPath: control)
                }
                c.expectNoFiles(in: s)
                c.expect(d.run("stop").code == 0, "stop")
            }
        }
    }
}
