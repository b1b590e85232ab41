import Foundation
import Glibc
import Testing

/// Runs `binary ARGS` (a copy of baton) to completion, as `batonCommand` does.
private func command(_ binary: String, _ args: [String], in s: Scratch, timeout: Double = 60) -> (
    code: Int32?, output: String, seconds: Double
) {
    let started = Date()
    let c = Child(binary, args, log: s.path + "/cmd-\(UUID().uuidString.prefix(8)).log", cwd: s.path)
    let code = c.wait(timeout)
    return (code, c.log, Date().timeIntervalSince(started))
}

/// A copy of the baton binary at `path`, put there atomically (a new inode, as a package upgrade does).
private func installBaton(at path: String) {
    let temp = path + ".new"
    try? FileManager.default.removeItem(atPath: temp)
    try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try! FileManager.default.copyItem(atPath: Binaries.baton, toPath: temp)
    chmod(temp, 0o755)
    rename(temp, path)
}

private func statusJSON(_ d: Daemon, binary: String = Binaries.baton) -> [String: Any]? {
    let r = command(binary, ["status", "--json"] + d.where_, in: d.s)
    return try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any]
}

private func socketCount(_ pid: pid_t) -> Int { descriptorKinds(openDescriptors(pid))["socket", default: 0] }

/// Runs `args` with baton and measures how long until the app's answer
/// begins with `prefix` (the new generation serves), polling every 5 ms.
private func untilServing(
    _ prefix: String, port: UInt16, _ args: [String], binary: String = Binaries.baton, in s: Scratch
) -> (code: Int32?, output: String, seconds: Double) {
    let started = Date()
    let c = Child(binary, args, log: s.path + "/cmd-\(UUID().uuidString.prefix(8)).log", cwd: s.path)
    var serving: Double?
    while Date().timeIntervalSince(started) < 20 {
        if body(httpGet(port: port, timeout: 2))?.hasPrefix(prefix) == true {
            serving = Date().timeIntervalSince(started)
            break
        }
        usleep(5000)
    }
    let code = c.wait(60)
    return (code, c.log, serving ?? -1)
}

@Suite(.serialized) struct ReexecTests {
    @Test func aDeployThatChangesTheAppsArgumentsReexecsInPlaceUnderLoad() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        // --dir given: the tests' Child changes this process's directory for a moment (other suites run meanwhile).
        let (port, supervisor) = try d.started(["--dir", s.path], app: ["--notify", "--tag", "a"])
        let sockets = socketCount(supervisor)
        func deploy(_ app: [String]) -> [String] {
            ["deploy"] + d.where_ + [
                "--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--dir", s.path, "--", Binaries.testapp, "--notify",
            ] + app
        }
        let load = Load(port: port, clients: 4)
        // The same options: a plain restart.
        let plain = untilServing("a gen=2", port: port, deploy(["--tag", "a"]), in: s)
        #expect(plain.code == 0, "\(plain.output)")
        #expect(!plain.output.contains("re-executing"), "\(plain.output)")
        #expect(body(httpGet(port: port))?.hasPrefix("a gen=2") == true)
        // Other app arguments: a re-exec with them, then the restart.
        let changed = untilServing("b gen=3", port: port, deploy(["--tag", "b"]), in: s)
        #expect(changed.code == 0, "\(changed.output)")
        #expect(changed.output.contains("re-executing the supervisor in place: changed: the command"), "\(changed.output)")
        #expect(body(httpGet(port: port))?.hasPrefix("b gen=3") == true)
        // Two workers instead of one.
        let workers = untilServing("b gen=4", port: port, deploy(["--tag", "b", "--workers", "2"]), in: s)
        #expect(workers.code == 0, "\(workers.output)")
        #expect(workers.output.contains("re-executing the supervisor in place: changed: the command"), "\(workers.output)")
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(d.supervisorPid == supervisor)
        #expect(!isGone(supervisor))
        let status = try #require(statusJSON(d))
        #expect(status["pid"] as? Int == Int(supervisor))
        #expect(status["reexecutions"] as? Int == 2)
        #expect(status["reexecuted_at"] as? Int != nil)
        #expect((status["command"] as? [String])?.suffix(4) == ["--tag", "b", "--workers", "2"])
        // The same options again: no second re-exec.
        let again = batonCommand(deploy(["--tag", "b", "--workers", "2"]), in: s)
        #expect(again.code == 0 && !again.output.contains("re-executing"), "\(again.output)")
        // The figures: five of each, alternately, under the same load; the medians.
        let timed = Load(port: port, clients: 4)
        var plainTimes: [Double] = []
        var reexecTimes: [Double] = []
        var generation = 6
        var tag = "b"
        for _ in 0..<5 {
            let p = untilServing("\(tag) gen=\(generation)", port: port, deploy(["--tag", tag, "--workers", "2"]), in: s)
            #expect(p.code == 0 && !p.output.contains("re-executing"), "\(p.output)")
            plainTimes.append(p.seconds)
            generation += 1
            tag = tag == "b" ? "c" : "b"
            let r = untilServing("\(tag) gen=\(generation)", port: port, deploy(["--tag", tag, "--workers", "2"]), in: s)
            #expect(r.code == 0 && r.output.contains("re-executing"), "\(r.output)")
            reexecTimes.append(r.seconds)
            generation += 1
        }
        let timedStats = timed.stop()
        #expect(timedStats.failed == 0, "\(timedStats.errors)")
        func median(_ xs: [Double]) -> Int { Int(xs.sorted()[xs.count / 2] * 1000) }
        print(
            "deploy -> new generation serving, median of 5 under load (\(timedStats.ok) requests, \(timedStats.failed) failed): "
                + "plain restart \(median(plainTimes)) ms \(plainTimes.map { Int($0 * 1000) }), "
                + "with a re-exec \(median(reexecTimes)) ms \(reexecTimes.map { Int($0 * 1000) })")
        #expect(eventually(5) { socketCount(supervisor) == sockets }, "sockets: \(socketCount(supervisor)) against \(sockets)")
        #expect(zombies(of: supervisor).isEmpty)
        print(
            "re-exec deploy: \(stats.ok) requests, \(stats.failed) failed; deploy -> new generation serving: "
                + "plain restart \(Int(plain.seconds * 1000)) ms, with a re-exec \(Int(changed.seconds * 1000)) ms, "
                + "with a re-exec to two workers \(Int(workers.seconds * 1000)) ms")
        let watch = descendants(of: supervisor)
        #expect(d.run("stop").code == 0)
        #expect(eventually(5) { isGone(supervisor) && watch.allSatisfy(isGone) })
    }

    @Test func anUpgradeExecsTheBinaryNowOnDiskKeepingTheGenerations() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let baton = s.path + "/bin/baton"
        installBaton(at: baton)
        let started = command(
            baton,
            ["start"] + d.where_ + ["--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--", Binaries.testapp, "--notify"],
            in: s)
        #expect(started.code == 0, "\(started.output)")
        let port = try #require(d.port)
        let supervisor = try #require(d.supervisorPid)
        let before = try #require(statusJSON(d, binary: baton))
        let fds = openDescriptors(supervisor).count
        let load = Load(port: port, clients: 4)
        // A package upgrade replaces the file.
        installBaton(at: baton)
        let upgrade = command(baton, ["upgrade"] + d.where_, in: s)
        #expect(upgrade.code == 0, "\(upgrade.output)")
        #expect(upgrade.output.contains("took over in place"), "\(upgrade.output)")
        let after = try #require(statusJSON(d, binary: baton))
        #expect(after["pid"] as? Int == Int(supervisor))
        #expect(after["binary_id"] as? String != before["binary_id"] as? String)
        #expect(after["reexecutions"] as? Int == 1)
        #expect(after["serving"] as? Int == 1, "the app is not restarted by an upgrade")
        #expect(processName(supervisor) == "baton")
        // The new program restarts as the old one did.
        let restart = command(baton, ["restart"] + d.where_, in: s)
        #expect(restart.code == 0, "\(restart.output)")
        #expect(body(httpGet(port: port))?.contains("gen=2") == true)
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(eventually(3) { openDescriptors(supervisor).count == fds }, "\(openDescriptors(supervisor)) against \(fds)")
        // Deploying with the baton on disk when another one runs re-executes.
        installBaton(at: baton)
        let deploy = command(
            baton,
            ["deploy"] + d.where_ + ["--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--", Binaries.testapp, "--notify"],
            in: s)
        #expect(deploy.code == 0, "\(deploy.output)")
        #expect(deploy.output.contains("is not the one running"), "\(deploy.output)")
        #expect(body(httpGet(port: port))?.contains("gen=3") == true)
        #expect(d.supervisorPid == supervisor)
        #expect(command(baton, ["stop"] + d.where_, in: s).code == 0)
        #expect(eventually(5) { isGone(supervisor) })
    }

    @Test func aBinaryWhoseCheckFailsChangesNothing() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let (port, supervisor) = try d.started()
        let broken = s.path + "/broken-baton"
        s.write("broken-baton", "#!/bin/sh\necho 'this build cannot run here' >&2\nexit 3\n")
        chmod(broken, 0o755)
        let load = Load(port: port, clients: 4)
        let upgrade = d.run("upgrade", ["--binary", broken])
        #expect(upgrade.code == 12, "\(upgrade.output)")
        #expect(upgrade.output.contains("this build cannot run here"), "\(upgrade.output)")
        #expect(upgrade.output.contains("nothing changed"), "\(upgrade.output)")
        // An option that cannot change live is refused by name.
        let listen = batonCommand(
            ["deploy"] + d.where_ + [
                "--listen", "127.0.0.1:0", "--listen-mode", "shared", "--settle", "0", "--probation", "0", "--", Binaries.testapp,
                "--notify",
            ],
            in: s)
        #expect(listen.code == 2, "\(listen.output)")
        #expect(listen.output.contains("--listen-mode cannot change while baton runs"), "\(listen.output)")
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        let status = try #require(statusJSON(d))
        #expect(status["reexecutions"] as? Int == 0)
        #expect(status["serving"] as? Int == 1)
        #expect(d.supervisorPid == supervisor)
        #expect(zombies(of: supervisor).isEmpty)
        #expect(d.run("stop").code == 0)
    }

    @Test func aHundredReexecsInARowKeepMemoryAndDescriptorsFlat() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let (port, supervisor) = try d.started()
        let load = Load(port: port, clients: 2)
        var rss: [Int] = []
        var fds: [Int] = []
        var failures: [String] = []
        let started = Date()
        for i in 1...100 {
            let r = d.run("upgrade")
            if r.code != 0 { failures.append("\(i): \(r.output)") }
            if i == 10 || i == 100 {
                usleep(200_000)
                rss.append(rssKiB(supervisor) ?? 0)
                fds.append(openDescriptors(supervisor).count)
            }
            if failures.count > 3 { break }
        }
        let took = Date().timeIntervalSince(started)
        let stats = load.stop()
        #expect(failures.isEmpty, "\(failures)")
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(fds.count == 2 && fds[0] == fds[1], "descriptors after 10 and 100 re-execs: \(fds)")
        #expect(rss.count == 2 && rss[1] - rss[0] < 1024, "RSS after 10 and 100 re-execs: \(rss) KiB")
        let status = try #require(statusJSON(d))
        #expect(status["reexecutions"] as? Int == 100)
        #expect(status["serving"] as? Int == 1)
        #expect(d.supervisorPid == supervisor)
        #expect(zombies(of: supervisor).isEmpty)
        print(
            "100 re-execs: \(Int(took * 1000 / 100)) ms each (client included); RSS \(rss) KiB, descriptors \(fds); "
                + "\(stats.ok) requests, \(stats.failed) failed")
        #expect(d.run("stop").code == 0)
    }

    @Test func aHupDuringAPendingReexecFollowsItAndAStopCancelsIt() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let (port, supervisor) = try d.started(["--kill-old-delay", "1s"])
        let load = Load(port: port, clients: 2)
        // Generation 1 drains for a second: the re-exec waits for it.
        #expect(d.run("restart", ["--no-wait-drain"]).code == 0)
        let upgrade = Child(Binaries.baton, ["upgrade"] + d.where_, log: s.path + "/upgrade.log", cwd: s.path)
        let log = s.path + "/app.log"
        #expect(eventually(5) { s.read("app.log").contains("re-exec asked for") }, "\(s.read("app.log"))")
        kill(supervisor, SIGHUP)
        #expect(eventually(5) { s.read("app.log").contains("restart asked for while a re-exec waits") })
        #expect(upgrade.wait(30) == 0, "\(upgrade.log)")
        #expect(eventually(10) { body(httpGet(port: port))?.contains("gen=3") == true })
        let lines = s.read("app.log").split(separator: "\n")
        let reexecuted = lines.firstIndex { $0.contains("re-executed in place") }
        let spawned = lines.firstIndex { $0.contains("gen 3 pid") }
        #expect(reexecuted != nil && spawned != nil && reexecuted! < spawned!, "the HUP must follow the re-exec: \(log)")
        // A stop while a re-exec waits cancels it.
        #expect(d.run("restart", ["--no-wait-drain"]).code == 0)
        let cancelled = Child(Binaries.baton, ["upgrade"] + d.where_, log: s.path + "/upgrade2.log", cwd: s.path)
        #expect(eventually(5) { s.read("app.log").components(separatedBy: "re-exec asked for").count == 3 })
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(d.run("stop").code == 0)
        #expect(cancelled.wait(30) == 11, "\(cancelled.log)")
        #expect(cancelled.log.contains("the supervisor is stopping"), "\(cancelled.log)")
        #expect(eventually(5) { isGone(supervisor) })
    }

    @Test func aProgramThatCannotTakeOverGoesBackToThePreviousOneKeepingEverything() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let (port, supervisor) = try d.started()
        let fds = openDescriptors(supervisor).count
        // A new "binary" that passes its check but fails once exec'd.
        s.write(
            "new-baton",
            """
            #!/bin/sh
            if [ "$1" = "__takeover" ]; then BATON_TEST_FAIL_TAKEOVER="this build cannot read the state" exec \(Binaries.baton) "$@"; fi
            exec \(Binaries.baton) "$@"

            """)
        chmod(s.path + "/new-baton", 0o755)
        let load = Load(port: port, clients: 4)
        let upgrade = d.run("upgrade", ["--binary", s.path + "/new-baton"])
        #expect(upgrade.code == 12, "\(upgrade.output)")
        #expect(upgrade.output.contains("could not take over: this build cannot read the state"), "\(upgrade.output)")
        let status = try #require(statusJSON(d))
        #expect(status["pid"] as? Int == Int(supervisor))
        #expect(status["serving"] as? Int == 1)
        #expect(status["reexecutions"] as? Int == 0)
        // Exec'd from a descriptor, it would be named by its number.
        #expect(processName(supervisor) == "baton")
        #expect((status["warnings"] as? [String])?.first?.contains("this build cannot read the state") == true, "\(status)")
        #expect(d.run("status").output.contains("warning: an upgrade failed after its exec"))
        #expect(s.read("app.log").contains("error: cannot take the supervisor's state over: this build cannot read the state"))
        // Everything is still held: the sockets, the generation, and restarts work.
        #expect(d.run("restart").code == 0)
        #expect(body(httpGet(port: port))?.contains("gen=2") == true)
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(eventually(3) { openDescriptors(supervisor).count == fds }, "\(openDescriptors(supervisor)) against \(fds)")
        #expect(d.run("stop").code == 0)
        #expect(eventually(5) { isGone(supervisor) })
    }

    @Test func aUnixListenerSurvivesAnUpgradeAndIsRemovedAtTheStop() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let socketPath = s.path + "/app.sock"
        #expect(d.start(["--listen", "unix:" + socketPath]).code == 0)
        let supervisor = try #require(d.supervisorPid)
        #expect(body(httpGet(.unix(socketPath)))?.contains("gen=1") == true)
        let load = Load(.unix(socketPath), clients: 4)
        #expect(d.run("upgrade").code == 0)
        // The renamed socket of the next generation replaces the public path, as before the upgrade.
        #expect(d.run("restart").code == 0)
        #expect(body(httpGet(.unix(socketPath)))?.contains("gen=2") == true)
        #expect(d.run("upgrade").code == 0)
        #expect(d.run("restart").code == 0)
        let stats = load.stop()
        #expect(stats.failed == 0, "\(stats.errors)")
        #expect(body(httpGet(.unix(socketPath)))?.contains("gen=3") == true)
        #expect(d.supervisorPid == supervisor)
        #expect(d.run("stop").code == 0)
        #expect(eventually(5) { isGone(supervisor) })
        #expect(!FileManager.default.fileExists(atPath: socketPath), "the socket file is removed by the program that took over")
        #expect(leftoverFiles(in: s.path).filter { $0.contains(".baton-") }.isEmpty)
    }

    @Test func aDeployThatAddsAListenerThenOneThatRemovesOneLoseNothing() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let unixPath = s.path + "/added.sock"
        let (port, supervisor) = try d.started(["--dir", s.path], app: ["--notify", "--tag", "a"])
        let sockets = socketCount(supervisor)
        func deploy(_ listen: [String], tag: String) -> (code: Int32?, output: String, seconds: Double) {
            batonCommand(
                ["deploy"] + d.where_ + listen.flatMap { ["--listen", $0] }
                    + ["--settle", "0", "--probation", "0", "--dir", s.path, "--", Binaries.testapp, "--notify", "--tag", tag], in: s)
        }
        let tcpLoad = Load(port: port, clients: 4)
        // Added: the unix socket is bound before the new generation starts, which gets both.
        let added = deploy(["127.0.0.1:0", "unix:" + unixPath], tag: "b")
        #expect(added.code == 0, "\(added.output)")
        #expect(added.output.contains("re-executing the supervisor in place: changed: "), "\(added.output)")
        #expect(body(httpGet(.unix(unixPath)))?.hasPrefix("b gen=2") == true)
        #expect(body(httpGet(port: port))?.hasPrefix("b gen=2") == true)
        let both = try #require(statusJSON(d))
        let addresses = (both["listeners"] as? [[String: Any]])?.compactMap { $0["address"] as? String }
        #expect(addresses == ["127.0.0.1:\(port)", unixPath], "\(both)")
        let unixLoad = Load(.unix(unixPath), clients: 4)
        // Removed: the TCP address (its load stops first: a removed address is meant to refuse).
        let tcpStats = tcpLoad.stop()
        #expect(tcpStats.failed == 0, "\(tcpStats.errors)")
        #expect(tcpStats.ok > 0)
        let removed = deploy(["unix:" + unixPath], tag: "c")
        #expect(removed.code == 0, "\(removed.output)")
        #expect(body(httpGet(.unix(unixPath)))?.hasPrefix("c gen=3") == true)
        // Once the generation that held it exited, nothing listens on the port.
        #expect(eventually(10) { if case .failure = httpGet(port: port, timeout: 1) { return true } else { return false } })
        // The re-exec that took the listener out was the last: the load ran past it.
        let unixStats = unixLoad.stop()
        #expect(unixStats.failed == 0, "\(unixStats.errors)")
        #expect(unixStats.ok > 0)
        let one = try #require(statusJSON(d))
        #expect((one["listeners"] as? [[String: Any]])?.compactMap { $0["address"] as? String } == [unixPath], "\(one)")
        #expect(one["reexecutions"] as? Int == 2)
        #expect(d.supervisorPid == supervisor)
        // One listener before, one now: the same number of sockets (the TCP one closed with its last generation).
        #expect(eventually(5) { socketCount(supervisor) == sockets }, "sockets: \(socketCount(supervisor)) against \(sockets)")
        #expect(zombies(of: supervisor).isEmpty)
        print(
            "listener change under load: added a unix socket (\(tcpStats.ok) requests over TCP, \(tcpStats.failed) failed), "
                + "removed the TCP one (\(unixStats.ok) over the unix socket, \(unixStats.failed) failed)")
        let watch = descendants(of: supervisor)
        #expect(d.run("stop").code == 0)
        #expect(eventually(5) { isGone(supervisor) && watch.allSatisfy(isGone) })
        #expect(!FileManager.default.fileExists(atPath: unixPath))
    }

    @Test func anAddressInUseFailsTheDeployAndChangesNothing() throws {
        let s = Scratch()
        let d = Daemon(s: s)
        let (port, supervisor) = try d.started(["--dir", s.path])
        // Someone else listens on the address the deploy adds.
        let other = try TestSockets.tcpListener()
        defer { close(other.fd) }
        let r = batonCommand(
            ["deploy"] + d.where_
                + [
                    "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:\(other.port)", "--settle", "0", "--probation", "0", "--dir", s.path,
                    "--",
                    Binaries.testapp,
                    "--notify", "--tag", "x",
                ], in: s)
        #expect(r.code != 0, "\(r.output)")
        #expect(r.output.contains("127.0.0.1:\(other.port)") && r.output.contains("nothing changed"), "\(r.output)")
        let status = try #require(statusJSON(d))
        #expect(status["reexecutions"] as? Int == 0)
        #expect((status["listeners"] as? [[String: Any]])?.count == 1)
        #expect(body(httpGet(port: port))?.contains("gen=1") == true)
        #expect(d.run("stop").code == 0)
        #expect(eventually(5) { isGone(supervisor) })
    }

    @Test func aReexecUnderSystemdSaysReloadingThenReady() throws {
        let s = Scratch()
        let systemd = try FakeSystemd(s)
        let receive = systemd.receive
        let pidFile = s.path + "/app.pid"
        let env = systemd.environment
        let b = Child(
            Binaries.baton,
            [
                "run", "--pid-file", pidFile, "--listen", "127.0.0.1:0", "--settle", "0", "--probation", "0", "--", Binaries.testapp,
                "--notify",
            ],
            log: s.path + "/b.log", env: env, cwd: s.path)
        #expect(receive().contains("READY=1"))
        let upgrade = batonCommand(["upgrade", "--pid-file", pidFile], in: s)
        #expect(upgrade.code == 0, "\(upgrade.output)")
        let reloading = receive()
        #expect(reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="), "\(reloading)")
        let ready = receive()
        #expect(ready.contains("READY=1") && ready.contains("serving generation 1"), "\(ready)")
        // MAINPID stays: the same process, still running, still in the pid file.
        #expect(!isGone(b.pid))
        #expect(Daemon(s: s).supervisorPid == b.pid)
        b.signal(SIGHUP)
        #expect(receive().contains("RELOADING=1"))
        #expect(receive().contains("READY=1"))
        b.signal(SIGTERM)
        #expect(receive().contains("STOPPING=1"))
        #expect(b.wait() == 0)
    }
}
