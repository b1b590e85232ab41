import Foundation
import Glibc
import Testing

/// A second, unprivileged user for the security cases, made with useradd
/// (the tests run as root in CI) and removed again.
final class OtherUser {
    static let name = "batonfault"
    let uid: uid_t
    let gid: gid_t
    private let created: Bool

    init?() {
        guard getuid() == 0 else { return nil }
        var made = false
        if getpwnam(Self.name) == nil {
            let c = Child(
                "/usr/sbin/useradd", ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", Self.name],
                log: NSTemporaryDirectory() + "useradd-\(getpid()).log")
            guard c.wait(20) == 0 else { return nil }
            unlink(c.logPath)
            made = true
        }
        guard let pw = getpwnam(Self.name) else { return nil }
        uid = pw.pointee.pw_uid
        gid = pw.pointee.pw_gid
        created = made
    }

    /// Runs `program args` as this user; exit code and output.
    func run(_ program: String, _ args: [String], in s: Scratch) -> (code: Int32?, output: String) {
        let c = Child(
            "/usr/bin/setpriv", ["--reuid=\(Self.name)", "--regid=\(Self.name)", "--init-groups", program] + args,
            log: s.path + "/as-other-\(UUID().uuidString.prefix(6)).log", cwd: "/")
        return (c.wait(20), c.log)
    }

    deinit {
        if created {
            let c = Child("/usr/sbin/userdel", [Self.name], log: NSTemporaryDirectory() + "userdel-\(getpid()).log")
            c.wait(20)
            unlink(c.logPath)
        }
    }
}

extension Reliability {
    /// Files, users and descriptors.
    @Suite(.serialized) struct Security {
        static let isRoot = getuid() == 0

        func mode(_ path: String) -> String {
            var st = stat()
            guard lstat(path, &st) == 0 else { return "missing" }
            return String(st.st_mode & 0o7777, radix: 8)
        }

        @Test func theModesOfWhatTheSupervisorCreates() throws {
            try faultCase("sec.file-modes") { c in
                let s = Scratch()
                let d = Daemon(s: s)
                let sock = s.path + "/app.sock"
                let status = s.path + "/status"
                let r = d.start(["--listen", "unix:" + sock, "--status-file", status])
                c.expect(r.code == 0, "start: \(r.output)")
                let expected = [
                    (s.path + "/app.control", "600"), (d.pidFile, "644"), (status, "644"), (sock, "660"), (s.path + "/app.log", "640"),
                ]
                for (path, want) in expected {
                    c.expect(mode(path) == want, "\((path as NSString).lastPathComponent): mode \(mode(path)), expected \(want)")
                }
                c.note(expected.map { "\(($0.0 as NSString).lastPathComponent) \(mode($0.0))" }.joined(separator: ", "))
                let watch = Watch(try c.require(d.supervisorPid, "no pid"))
                watch.sample()
                c.expect(d.run("stop").code == 0, "stop")
                watch.checkAllGone(c)
                c.expectNoFiles(in: s)
            }
        }

        @Test func symlinksAreNeverFollowed() throws {
            try faultCase("sec.no-symlinks") { c in
                let s = Scratch()
                let d = Daemon(s: s)
                var victims: [String: String] = [:]
                for name in ["pid", "status", "sock"] {
                    let v = s.path + "/victim-\(name).txt"
                    _ = FileManager.default.createFile(atPath: v, contents: Data("precious \(name)\n".utf8))
                    victims[name] = v
                }
                let status = s.path + "/status"
                symlink(victims["pid"]!, d.pidFile)
                symlink(victims["status"]!, status)
                symlink(victims["sock"]!, s.path + "/app.sock")
                // A unix listener path that is a symlink is refused.
                let refused = d.start(["--listen", "unix:" + s.path + "/app.sock"])
                c.expect(refused.code == 8, "unix socket symlink: \(refused.output)")
                c.expect(refused.output.contains("exists and is not a socket"), refused.output)
                c.note("unix listener path a symlink: exit 8, '\(line(refused.output, containing: "not a socket") ?? "")'")
                // Pid and status files are replaced, not followed.
                let r = d.start(["--status-file", status])
                c.expect(r.code == 0, "start: \(r.output)")
                var st = stat()
                lstat(d.pidFile, &st)
                c.expect((st.st_mode & S_IFMT) == S_IFREG, "the pid file is not a regular file")
                lstat(status, &st)
                c.expect((st.st_mode & S_IFMT) == S_IFREG, "the status file is not a regular file")
                let watch = Watch(try c.require(d.supervisorPid, "no pid"))
                watch.sample()
                c.expect(d.run("stop").code == 0, "stop")
                watch.checkAllGone(c)
                for (name, v) in victims {
                    c.expect((try? String(contentsOfFile: v, encoding: .utf8)) == "precious \(name)\n", "\(v) was written")
                }
                c.note("pid file and status file symlinks replaced by regular files, removed at stop; every target untouched")
                c.note(
                    "the control socket path: see 'a file that is not a socket stands at the control socket path' (a symlink is refused too)"
                )
                c.limit =
                    "the log file (--log-file, NAME.log) is opened through a symlink, as logs usually are; keep its directory private (--name uses /run/baton, mode 0700, as root)"
                unlink(s.path + "/app.sock")
                c.expectNoFiles(in: s)
            }
        }

        /// A second user (made with useradd) and a scratch directory it can enter.
        func otherUserAndScratch(_ c: CaseRecord) throws -> (OtherUser, Scratch) {
            let other = try c.require(OtherUser(), "useradd failed")
            let s = Scratch()
            chmod(s.path, 0o755)
            return (other, s)
        }

        @Test(.enabled(if: Peers.available(isRoot), "needs root to add a user"))
        func anotherUserCannotControlTheSupervisor() throws {
            try faultCase("sec.other-user") { c in
                let (other, s) = try otherUserAndScratch(c)
                let d = Daemon(s: s)
                c.expect(d.start().code == 0, "start")
                let supervisor = try c.require(d.supervisorPid, "no pid")
                let port = try c.require(d.port, "no port")
                let watch = Watch(supervisor)
                let load = Load(port: port, clients: 8)
                var results: [String] = []
                for command in ["status", "restart", "stop"] {
                    let r = other.run(Binaries.baton, [command, "--pid-file", d.pidFile], in: s)
                    c.expect(r.code != 0, "\(command) as \(OtherUser.name) succeeded: \(r.output)")
                    c.expect(r.output.contains("permission denied"), "\(command): \(r.output)")
                    results.append("\(command): exit \(r.code.map(String.init) ?? "?")")
                }
                c.note("socket mode 0600: " + results.joined(separator: ", ") + " ('permission denied on control socket')")
                // Even with the socket opened up, the supervisor checks the peer's uid.
                chmod(s.path + "/app.control", 0o666)
                results = []
                for command in ["restart", "stop"] {
                    let r = other.run(Binaries.baton, [command, "--pid-file", d.pidFile], in: s)
                    c.expect(r.code == 1, "\(command) through a 0666 socket: \(r.output)")
                    c.expect(r.output.contains("only uid 0 may control this supervisor"), "\(command): \(r.output)")
                    results.append("\(command): exit \(r.code.map(String.init) ?? "?")")
                }
                c.note("socket made 0666: " + results.joined(separator: ", ") + " ('only uid 0 may control this supervisor')")
                let hup = other.run("/bin/kill", ["-HUP", String(supervisor)], in: s)
                c.expect(hup.code != 0, "SIGHUP from another user was delivered")
                c.note("kill -HUP as \(OtherUser.name): exit \(hup.code.map(String.init) ?? "?") (EPERM)")
                let write = other.run("/bin/sh", ["-c", "echo 1 > '\(d.pidFile)'"], in: s)
                c.expect(write.code != 0, "another user wrote the pid file")
                c.load(load.stop())
                c.expect(
                    !(((try? String(contentsOfFile: s.path + "/app.log", encoding: .utf8)) ?? "").contains("restarting")),
                    "a restart happened")
                c.expect(body(httpGet(port: port))?.contains("gen=1") == true, "generation 1 does not serve")
                watch.checkRunning(c)
                watch.sample()
                c.expect(d.run("stop").code == 0, "stop")
                watch.checkAllGone(c)
                c.expectNoFiles(in: s)
            }
        }

        @Test(.enabled(if: Peers.available(isRoot), "needs root to add a user and to drop privileges"))
        func userAndGroupDropPrivileges() throws {
            try faultCase("sec.user-group") { c in
                let (other, s) = try otherUserAndScratch(c)
                let b = servingBaton(
                    s, options: ["--settle", "0", "--probation", "0", "--user", OtherUser.name], args: "--notify --workers 2")
                c.expect(b.waitServing(1), "generation 1 did not serve: \(b.log)")
                let port = try c.require(b.port, "no port")
                let watch = Watch(b.child.pid)
                let app = try c.require(pgidIn(body(httpGet(port: port, path: "/env"))), "no app")
                c.expect(eventually(5) { processGroupMembers(app).count == 3 }, "no workers")
                let ids = "\(other.uid)\t\(other.uid)\t\(other.uid)\t\(other.uid)"
                let gids = "\(other.gid)\t\(other.gid)\t\(other.gid)\t\(other.gid)"
                for pid in processGroupMembers(app) {
                    c.expect(procStatus(pid, "Uid") == ids, "pid \(pid) Uid: \(procStatus(pid, "Uid") ?? "?")")
                    c.expect(procStatus(pid, "Gid") == gids, "pid \(pid) Gid: \(procStatus(pid, "Gid") ?? "?")")
                    c.expect(procStatus(pid, "Groups") == "\(other.gid)", "pid \(pid) Groups: \(procStatus(pid, "Groups") ?? "?")")
                    c.expect(procStatus(pid, "CapEff") == "0000000000000000", "pid \(pid) CapEff: \(procStatus(pid, "CapEff") ?? "?")")
                }
                c.note(
                    "--user \(OtherUser.name): app and 2 workers Uid \(procStatus(app, "Uid") ?? "?"), Gid \(procStatus(app, "Gid") ?? "?"), Groups \(procStatus(app, "Groups") ?? "?"), CapEff \(procStatus(app, "CapEff") ?? "?")"
                        .replacingOccurrences(of: "\t", with: " "))
                stopAndCheck(b, watch, c, s)
                // --group alone: the group changes, supplementary groups are dropped.
                let s2 = Scratch()
                let g = servingBaton(s2, options: ["--settle", "0", "--probation", "0", "--group", "nogroup"])
                c.expect(g.waitServing(1), "--group: generation 1 did not serve: \(g.log)")
                let gapp = try c.require(g.port.flatMap { pidIn(body(httpGet(port: $0))) }, "no app")
                c.expect(procStatus(gapp, "Gid") == "65534\t65534\t65534\t65534", "--group Gid: \(procStatus(gapp, "Gid") ?? "?")")
                c.expect(procStatus(gapp, "Groups") == "", "--group Groups: '\(procStatus(gapp, "Groups") ?? "?")'")
                c.note(
                    "--group nogroup: Gid \(procStatus(gapp, "Gid")?.replacingOccurrences(of: "\t", with: " ") ?? "?"), no supplementary group"
                )
                let gwatch = Watch(g.child.pid)
                stopAndCheck(g, gwatch, c, s2)
            }
        }

        @Test func theAppGetsNoneOfTheSupervisorsDescriptors() throws {
            try faultCase("sec.descriptors") { c in
                let s = Scratch()
                s.release("good", args: "--notify --workers 2")
                s.point(to: "good")
                let d = Daemon(s: s)
                let sock = s.path + "/app.sock"
                let r = d.start(["--dir", s.path + "/current", "--listen", "unix:" + sock, "--health", "/health"], app: [])
                c.expect(r.code == 0, "start: \(r.output)")
                let supervisor = try c.require(d.supervisorPid, "no pid")
                let port = try c.require(d.port, "no port")
                let env = try c.require(body(httpGet(port: port, path: "/env")), "no /env")
                let app = try c.require(pgidIn(env), "no app pid")
                c.expect(env.contains("fds=0,1,2,3,4,5\n"), "the app started with more than stdio and its 3 listeners: \(env)")
                let own = openDescriptors(supervisor)
                let listeners = Set(own.filter { $0.key >= 100 }.values)
                // Anonymous inodes (epoll, signalfd) all read alike: those are
                // covered by the list of descriptors the app started with.
                let private_ = Set(own.filter { $0.key > 2 && $0.key < 100 && !$0.value.hasPrefix("anon_inode:") }.values)
                for pid in processGroupMembers(app) {
                    let theirs = openDescriptors(pid)
                    let shared = Set(theirs.values).intersection(private_)
                    c.expect(shared.isEmpty, "pid \(pid) holds the supervisor's \(shared.sorted())")
                    for n in 3...5 {
                        c.expect(theirs[n].map { listeners.contains($0) } ?? false, "pid \(pid) fd \(n) is \(theirs[n] ?? "closed")")
                    }
                    c.expect(theirs[0] == "/dev/null", "pid \(pid) stdin is \(theirs[0] ?? "closed")")
                }
                c.note("app and workers started with fds 0,1,2 (stdin /dev/null, the log) and 3,4,5 (TCP, unix and health listeners)")
                let named = own.filter { $0.key > 2 && $0.key < 100 }.values.map {
                    $0.hasPrefix("/")
                        ? ($0 as NSString).lastPathComponent
                        : $0.replacingOccurrences(of: #":?\[\d+\]|:$"#, with: "", options: .regularExpression)
                }
                c.note("the supervisor's own descriptors (\(named.sorted().joined(separator: ", "))) appear in none of them")
                let watch = Watch(supervisor)
                watch.sample()
                c.expect(d.run("stop").code == 0, "stop")
                watch.checkAllGone(c)
                c.expectNoFiles(in: s)
            }
        }
    }
}
