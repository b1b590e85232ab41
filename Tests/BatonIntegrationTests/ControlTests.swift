import Foundation
import Glibc
import Synchronization
import Testing

/// Runs `baton ARGS` to completion; its exit code and output (stdout and stderr).
@discardableResult
func batonCommand(_ args: [String], in s: Scratch, env: [String]? = nil, timeout: Double = 60) -> (
    code: Int32?, output: String, seconds: Double
) {
    let started = Date()
    let c = Child(Binaries.baton, args, log: s.path + "/cmd-\(UUID().uuidString.prefix(8)).log", env: env, cwd: s.path)
    let code = c.wait(timeout)
    return (code, c.log, Date().timeIntervalSince(started))
}

/// A daemon started with `baton start --pid-file` in a scratch directory.
struct Daemon {
    let s: Scratch
    var pidFile: String { s.path + "/app.pid" }
    var where_: [String] { ["--pid-file", pidFile] }

    func start(_ options: [String] = [], app: [String] = ["--notify"]) -> (code: Int32?, output: String, seconds: Double) {
        batonCommand(
            ["start"] + where_ + ["--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0"] + options + ["--", Binaries.testapp]
                + app, in: s)
    }

    /// Starts it, which must succeed; its port and its supervisor's pid.
    func started(_ options: [String] = [], app: [String] = ["--notify"]) throws -> (port: UInt16, supervisor: pid_t) {
        let r = start(options, app: app)
        try #require(r.code == 0, "\(r.output)")
        return (try #require(port, "no port in the log"), try #require(supervisorPid, "no pid file"))
    }

    func run(_ command: String, _ options: [String] = []) -> (code: Int32?, output: String, seconds: Double) {
        batonCommand([command] + where_ + options, in: s)
    }

    var supervisorPid: pid_t? { pidInFile(pidFile) }

    var port: UInt16? {
        guard let log = try? String(contentsOfFile: s.path + "/app.log", encoding: .utf8),
            let range = log.range(of: #"listening on 127\.0\.0\.1:(\d+)"#, options: .regularExpression)
        else { return nil }
        return UInt16(log[range].split(separator: ":").last!)
    }
}

/// The notify socket of a pretend systemd: baton runs with `environment`
/// (`NOTIFY_SOCKET` set) and `receive()` returns its next message.
final class FakeSystemd {
    let fd: Int32
    let environment: [String]

    init(_ s: Scratch) throws {
        let path = s.path + "/notify.sock"
        fd = try TestSockets.notifyReceiver(name: path)
        environment = ProcessInfo.processInfo.environment.map { "\($0)=\($1)" } + ["NOTIFY_SOCKET=\(path)"]
    }

    deinit { close(fd) }

    /// The next message, waiting up to 10 s ("" if none came).
    func receive() -> String { ((try? TestSockets.receive(fd, timeoutMilliseconds: 10_000)) ?? nil)?.text ?? "" }
}

@Suite(.serialized) struct ControlTests {
    @Test func startStatusRestartStop() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let started = d.start()
        #expect(started.code == 0, "\(started.output)")
        #expect(started.output.contains("started: generation 1"))
        let port = try #require(d.port)
        let daemon = try #require(d.supervisorPid)
        #expect(body(httpGet(port: port))?.contains("gen=1") == true)
        // pgrep, killall and top find the daemon by its name, not "exe".
        #expect(processName(daemon) == "baton")
        // A second start is refused with its own code.
        let again = d.start()
        #expect(again.code == 5, "\(again.output)")
        #expect(again.output.contains("already running (pid \(daemon))"))

        let status = d.run("status")
        #expect(status.code == 0)
        #expect(status.output.contains("gen 1  pid"))
        #expect(status.output.contains("serving"))
        let json = d.run("status", ["--json"])
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        #expect(parsed["pid"] as? Int == Int(daemon))
        #expect((parsed["generations"] as? [[String: Any]])?.first?["state"] as? String == "serving")

        let load = Load(port: port, clients: 4)
        let restart = d.run("restart")
        #expect(restart.code == 0, "\(restart.output)")
        for step in ["gen 2 pid", "spawned", "ready after", "sent SIGTERM (retire)", "drained after", "generation 2 (pid"] {
            #expect(restart.output.contains(step), "missing '\(step)' in \(restart.output)")
        }
        let jsonRestart = d.run("restart", ["--json"])
        #expect(jsonRestart.code == 0)
        let lines = jsonRestart.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(lines.last?["type"] as? String == "result")
        #expect(lines.last?["generation"] as? Int == 3)
        #expect(lines.contains { $0["kind"] as? String == "ready" })
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")

        let stop = d.run("stop")
        #expect(stop.code == 0, "\(stop.output)")
        #expect(eventually(5) { isGone(daemon) })
        for file in ["app.pid", "app.control"] {
            #expect(!FileManager.default.fileExists(atPath: s.path + "/" + file), "\(file) left behind")
        }
        #expect(d.run("status").code == 3)
        // Stopping what is not running is not an error.
        #expect(d.run("stop").code == 0)
    }

    @Test func startFailuresLeaveNothingBehind() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        func clean() -> Bool {
            !FileManager.default.fileExists(atPath: d.pidFile) && !FileManager.default.fileExists(atPath: s.path + "/app.control")
        }
        let crash = d.start(app: ["--crash-at-boot"])
        #expect(crash.code == 10, "\(crash.output)")
        #expect(crash.output.contains("exited with exit code 1 before it was ready"))
        #expect(crash.output.contains("testapp: crashing at boot as asked"), "the log's end is shown: \(crash.output)")
        #expect(clean())

        let missing = batonCommand(["start", "--pid-file", d.pidFile, "--listen", "127.0.0.1:0", "--", "./nope"], in: s)
        #expect(missing.code == 9)
        #expect(clean())

        let hang = d.start(["--ready", "notify", "--ready-timeout", "1s"], app: ["--hang"])
        #expect(hang.code == 10, "\(hang.output)")
        #expect(hang.output.contains("not ready after 1 s"))
        #expect(clean())

        // A port taken by another daemon.
        let other = Scratch()
        let first = Daemon(s: other)
        #expect(first.start().code == 0)
        let port = try #require(first.port)
        let taken = batonCommand(["start", "--pid-file", d.pidFile, "--listen", "127.0.0.1:\(port)", "--", Binaries.testapp], in: s)
        #expect(taken.code == 8, "\(taken.output)")
        #expect(taken.output.contains("is already in use (by pid"))
        #expect(clean())
        #expect(first.run("stop").code == 0)
        // No daemon was left behind by any of them.
        #expect(processGroupMembers(getpgrp()).count <= 1)
    }

    @Test func restartExitCodes() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        #expect(d.run("restart").code == 3)
        s.release("good")
        s.release("broken", args: "--crash-at-boot")
        s.release("slow", args: "--boot-delay 3000")
        s.point(to: "good")
        #expect(d.start(["--dir", s.path + "/current", "--ready", "notify"]).code == 0)
        let port = try #require(d.port)
        s.point(to: "broken")
        let broken = d.run("restart")
        #expect(broken.code == 6, "\(broken.output)")
        #expect(broken.output.contains("generation 1 (pid"))
        #expect(broken.output.contains("still serves"))
        #expect(body(httpGet(port: port))?.hasPrefix("good gen=1") == true)
        s.point(to: "slow")
        let slow = d.run("restart", ["--timeout", "0.5s"])
        #expect(slow.code == 7, "\(slow.output)")
        #expect(slow.output.contains("the restart goes on"))
        // The restart finished by itself; a second restart during it would have been coalesced.
        #expect(eventually(10) { body(httpGet(port: port))?.hasPrefix("slow gen=3") == true })
        #expect(d.run("stop").code == 0)
    }

    @Test func deployStartsRestartsAndRollsBackTheSymlink() throws {
        let s = Scratch()
        s.release("v1")
        s.release("v2")
        s.release("broken", args: "--crash-at-boot")
        let pid = s.path + "/app.pid"
        let link = s.path + "/current"
        func deploy(_ release: String, extra: [String] = []) -> (code: Int32?, output: String, seconds: Double) {
            batonCommand(
                [
                    "deploy", "--pid-file", pid, "--release", s.path + "/releases/" + release, "--current", link, "--listen", "127.0.0.1:0",
                    "--settle", "0", "--probation", "0",
                ]
                    + extra + ["--", Binaries.testapp, "--notify"], in: s)
        }
        let first = deploy("v1")
        #expect(first.code == 0, "\(first.output)")
        #expect(first.output.contains("not running; starting it"))
        let port = try #require(Daemon(s: s).port)
        #expect(body(httpGet(port: port))?.hasPrefix("v1 gen=1") == true)
        let second = deploy("v2")
        #expect(second.code == 0, "\(second.output)")
        #expect(body(httpGet(port: port))?.hasPrefix("v2 gen=2") == true)
        let bad = deploy("broken")
        #expect(bad.code == 6, "\(bad.output)")
        #expect(s.pointed() == "v2")
        #expect(bad.output.contains("points back to"))
        #expect(body(httpGet(port: port))?.hasPrefix("v2 gen=2") == true)
        let missing = deploy("does-not-exist")
        #expect(missing.code == 2)
        #expect(missing.output.contains("nothing was changed"))
        #expect(s.pointed() == "v2")
        #expect(batonCommand(["stop", "--pid-file", pid], in: s).code == 0)
    }

    @Test func aSecondDeployWaitsForTheFirstOrGivesUp() throws {
        let s = Scratch()
        s.release("slow", args: "--boot-delay 1500")
        let pid = s.path + "/app.pid"
        let args = [
            "deploy", "--pid-file", pid, "--dir", s.path + "/releases/slow", "--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0",
            "--ready",
            "notify",
        ]
        let first = Child(Binaries.baton, args + ["--", Binaries.testapp, "--notify"], log: s.path + "/d1.log", cwd: s.path)
        usleep(300_000)
        let impatient = batonCommand(args + ["--lock-timeout", "0.3s", "--", Binaries.testapp, "--notify"], in: s)
        #expect(impatient.code == 11, "\(impatient.output)")
        #expect(impatient.output.contains("another deploy"))
        let patient = batonCommand(args + ["--", Binaries.testapp, "--notify"], in: s)
        #expect(first.wait() == 0, "\(first.log)")
        #expect(patient.code == 0, "\(patient.output)")
        #expect(patient.output.contains("restarting"))
        #expect(batonCommand(["stop", "--pid-file", pid], in: s).code == 0)
    }

    @Test func stalePidFileAndForeignUsers() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        _ = FileManager.default.createFile(atPath: d.pidFile, contents: Data("999999\n".utf8))
        let status = d.run("status")
        #expect(status.code == 1, "\(status.output)")
        #expect(status.output.contains("pid file"))
        #expect(d.start().code == 0)
        guard getuid() == 0 else { return }
        // Another user cannot reach the control socket (mode 0600)...
        chmod(s.path, 0o755)
        let asNobody = ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", Binaries.baton]
        let denied = Child(
            asNobody[0], Array(asNobody.dropFirst()) + ["restart", "--pid-file", d.pidFile], log: s.path + "/nobody.log", cwd: "/")
        #expect(denied.wait() == 1)
        #expect(denied.log.contains("permission denied"), "\(denied.log)")
        // ...and even with the file opened up, the supervisor checks the peer's uid.
        chmod(s.path + "/app.control", 0o666)
        let refused = Child(
            asNobody[0], Array(asNobody.dropFirst()) + ["restart", "--pid-file", d.pidFile], log: s.path + "/nobody2.log", cwd: "/")
        #expect(refused.wait() == 1)
        #expect(refused.log.contains("only uid 0 may control"), "\(refused.log)")
        #expect(d.run("stop").code == 0)
    }

    /// examples/systemd/myapp.service as systemd reads it (`systemd-analyze
    /// verify`), with its baton path pointed at the one just built.
    @Test(.enabled(if: Peers.available(Paths.tool("systemd-analyze") != nil), "needs systemd-analyze (systemd)"))
    func theExampleUnitVerifies() throws {
        let analyze = try #require(Paths.tool("systemd-analyze"), "systemd-analyze is missing: apt-get install systemd")
        let s = Scratch()
        let unit = try String(contentsOfFile: Paths.examples + "/systemd/myapp.service", encoding: .utf8)
        #expect(unit.contains("/usr/local/bin/baton "), "the example no longer names /usr/local/bin/baton")
        s.write("myapp.service", unit.replacingOccurrences(of: "/usr/local/bin/baton ", with: Binaries.baton + " "))
        let r = run(analyze, ["verify", s.path + "/myapp.service"], timeout: 60)
        #expect(r.status == 0 && r.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(r.output)")
    }

    @Test func systemdHearsReadyReloadingAndStopping() throws {
        let s = Scratch()
        let systemd = try FakeSystemd(s)
        let b = Child(
            Binaries.baton, ["run", "--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--", Binaries.testapp, "--notify"],
            log: s.path + "/b.log",
            env: systemd.environment, cwd: s.path)
        let receive = systemd.receive
        let ready = receive()
        #expect(ready.contains("READY=1") && ready.contains("STATUS=serving generation 1"), "\(ready)")
        b.signal(SIGHUP)
        let reloading = receive()
        #expect(reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="), "\(reloading)")
        let again = receive()
        #expect(again.contains("READY=1") && again.contains("generation 2"), "\(again)")
        b.signal(SIGTERM)
        #expect(receive().contains("STOPPING=1"))
        #expect(b.wait() == 0)
        // The app never saw baton's own NOTIFY_SOCKET.
        #expect(!b.log.contains("ignored a notify"))
    }

    @Test func theLogIsReopenedOnUsr1() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        #expect(d.start().code == 0)
        let log = s.path + "/app.log"
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        kill(try #require(d.supervisorPid), SIGUSR1)
        #expect(eventually(5) { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("reopened log file") })
        let logs = d.run("logs", ["--lines", "5"])
        #expect(logs.code == 0 && logs.output.contains("reopened log file"))
        #expect(d.run("stop").code == 0)
    }
}

@Suite struct FailedRestartOutputTests {
    /// A failed restart says why in the app's own words, in text and in --json.
    @Test func aFailedRestartPrintsTheAppsLastLines() throws {
        let s = Scratch()
        s.write(
            "app.sh",
            """
            #!/bin/sh
            [ -e broken ] && { echo "no templates directory at $PWD/templates" >&2; exit 1; }
            exec \(Binaries.testapp) --notify

            """)
        chmod(s.file("app.sh"), 0o755)
        let d = Daemon(s: s)
        let started = batonCommand(
            ["start"] + d.where_ + ["--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--dir", s.path, "--", "./app.sh"],
            in: s)
        #expect(started.code == 0, "\(started.output)")
        s.write("broken", "")
        let text = d.run("restart")
        #expect(text.code == 6, "\(text.output)")
        #expect(text.output.contains("generation 2's last lines of output"), "\(text.output)")
        #expect(text.output.contains("no templates directory at \(s.path)/templates"), "\(text.output)")
        let json = d.run("restart", ["--json"])
        let result = try #require(
            json.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.last)
        #expect(result["code"] as? String == "generation-failed")
        #expect((result["output"] as? [String])?.contains { $0.contains("no templates directory") } == true, "\(result)")
        #expect(d.run("stop").code == 0)
    }
}
