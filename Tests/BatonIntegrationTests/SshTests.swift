import Foundation
import Glibc
import Testing

/// An sshd on a loopback port with a throwaway host key and a key made for the test.
final class SshServer {
    let s: Scratch
    let port: UInt16
    let child: Child
    var key: String { s.path + "/id" }

    init?(_ s: Scratch) {
        self.s = s
        let p = s.path
        for (file, args) in [
            ("host", ["-q", "-t", "ed25519", "-N", "", "-f", p + "/host"]), ("id", ["-q", "-t", "ed25519", "-N", "", "-f", p + "/id"]),
        ] {
            let c = Child("/usr/bin/ssh-keygen", args, log: p + "/keygen-\(file).log")
            guard c.wait() == 0 else { return nil }
        }
        try? FileManager.default.copyItem(atPath: p + "/id.pub", toPath: p + "/authorized_keys")
        mkdir("/run/sshd", 0o755)
        // sshd cannot be told port 0: a free port outside the ephemeral range.
        port = freePort()
        let config = """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(p)/host
            AuthorizedKeysFile \(p)/authorized_keys
            PidFile \(p)/sshd.pid
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            """
        try? config.write(toFile: p + "/sshd_config", atomically: true, encoding: .utf8)
        child = Child("/usr/sbin/sshd", ["-D", "-e", "-f", p + "/sshd_config"], log: p + "/sshd.log")
        let port = self.port
        guard
            eventually(
                10,
                {
                    if case .failure(let e) = httpGet(port: port, timeout: 1), e.text.hasPrefix("connect") {
                        return false
                    } else {
                        return true
                    }
                })
        else {
            return nil
        }
    }

    /// Runs `command` on 127.0.0.1 over ssh, as deploy tools do.
    func run(_ command: String, tty: Bool) -> (code: Int32?, output: String, seconds: Double) {
        let started = Date()
        var args = [
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-i", key, "-p", String(port),
        ]
        if tty { args.append("-tt") }
        args += ["root@127.0.0.1", command]
        let c = Child("/usr/bin/ssh", args, log: s.path + "/ssh-\(UUID().uuidString.prefix(6)).log")
        let code = c.wait(60)
        return (code, c.log, Date().timeIntervalSince(started))
    }

    // Waits for sshd to exit: it removes its pid file as it goes, and the
    // scratch directory's removal must not race with that.
    deinit { _ = child.stop() }
}

@Suite(.serialized) struct SshTests {
    static let available =
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh")

    @Test(.enabled(if: Peers.available(available), "needs root and openssh-server (installed by .ci/run)"), arguments: [false, true])
    func deployOverSshReturnsAtReadinessAndTheDaemonSurvives(tty: Bool) throws {
        let s = Scratch()
        chmod(s.path, 0o755)
        let ssh = try #require(
            SshServer(s), "sshd did not start: \((try? String(contentsOfFile: s.path + "/sshd.log", encoding: .utf8)) ?? "")")
        s.release("v1")
        s.release("v2")
        let pid = s.path + "/app.pid"
        func deploy(_ release: String) -> String {
            "cd \(s.path) && \(Binaries.baton) deploy --pid-file \(pid) --release \(s.path)/releases/\(release) --current \(s.path)/current "
                + "--listen 127.0.0.1:0 --settle 0 --probation 0 --ready notify -- \(Binaries.testapp) --notify --ready-delay 300"
        }
        let first = ssh.run(deploy("v1"), tty: tty)
        #expect(first.code == 0, "\(first.output)")
        #expect(first.seconds < 5, "ssh returned after \(first.seconds) s")
        let port = try #require(Daemon(s: s).port)
        // The ssh session is gone; the daemon and its app serve on.
        usleep(300_000)
        #expect(body(httpGet(port: port))?.hasPrefix("v1 gen=1") == true)
        let second = ssh.run(deploy("v2"), tty: tty)
        #expect(second.code == 0, "\(second.output)")
        #expect(second.seconds < 5)
        print("ssh\(tty ? " -tt" : "") deploy: start returned after \(first.seconds) s, restart after \(second.seconds) s")
        usleep(300_000)
        #expect(body(httpGet(port: port))?.hasPrefix("v2 gen=2") == true)
        #expect(batonCommand(["stop", "--pid-file", pid], in: s).code == 0)
    }
}
