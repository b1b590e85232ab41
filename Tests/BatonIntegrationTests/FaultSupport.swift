import Foundation
import Glibc
import Synchronization
import Testing

/// The fault-injection suite of docs/reliability.md: every case runs real
/// processes under a bounded load on 127.0.0.1 and writes one row of the
/// table. The suites are nested here so that `--filter Reliability` runs them
/// all, one at a time.
@Suite(.serialized) struct Reliability {}

// MARK: - The catalogue

/// One case of the table, declared once, in the table's order.
struct FaultCase: Sendable {
    let id: String
    let section: Section
    let title: String
    /// What the suite requires of Baton in this case.
    let expected: String

    enum Section: String, CaseIterable, Sendable {
        case app = "The app misbehaves"
        case operatorFault = "The operator misbehaves"
        case input = "Bad input at every edge"
        case endurance = "Endurance"
        case security = "Security"
    }

    static let all: [FaultCase] = [
        // The app misbehaves.
        .init(
            "app.crash-at-boot", .app, "crashes at boot (exit 1)",
            "restart fails with the exit status; the old generation serves on; no request fails"),
        .init("app.exit-0-at-boot", .app, "exits 0 at boot", "a clean exit before READY=1 is a failed restart too, not a success"),
        .init(
            "app.crash-after-ready", .app, "crashes after READY=1, while the old generation still drains a slow request",
            "the slow request completes on the old generation; the crash is respawned with backoff; only requests the dead process had accepted can fail"
        ),
        .init(
            "app.hang-before-ready", .app, "hangs before ready", "stopped at --ready-timeout with its group; the old generation serves on"),
        .init(
            "app.worker-crash-loop", .app,
            "its master says READY=1 and lives while its workers die at boot (a prefork server whose app cannot load), with the defaults",
            "never taken for ready: the restart fails within seconds, not at --ready-timeout; the old generation serves on; no request fails"
        ),
        .init(
            "app.exits-on-probation", .app, "serves, then gives up and exits 2.5 s after it started, with the defaults",
            "on probation: new connections go back to the old generation at once, the restart fails, a generation of the old release answers what waited in its queue; no request fails"
        ),
        .init(
            "app.stops-accepting-on-probation", .app, "serves, then stops accepting and stays up 1 s after it started, with the defaults",
            "on probation: its queue grows and nothing is taken for 2 s, so new connections go back to the old generation, the restart fails, and a generation of the old release answers what waited; no request fails"
        ),
        .init(
            "app.crash-loop-rollback", .app,
            "a release that passes its probation (1 s here), then exits 2 s later, again and again",
            "respawned with backoff; after 3 deaths within a minute of getting ready, `status` says crash-looping and exits 13, and the last release that served stably is started again by its realpath; no request fails"
        ),
        .init(
            "app.never-ready", .app, "serves but never sends READY=1 under --ready notify",
            "not ready at --ready-timeout: stopped gracefully (it drains what it accepted); no request fails"),
        .init(
            "app.notify-errno", .app, "sends ERRNO= (and STATUS=) on the notify socket, never READY=1",
            "ERRNO and STATUS logged; the generation fails at --ready-timeout; the old one serves on"),
        .init(
            "app.notify-garbage", .app, "sends garbage on the notify socket, then READY=1",
            "not UTF-8, empty, 64 KiB, lines without '=', descriptors attached, 1,000 malformed datagrams: each ignored, passed descriptors closed, the real READY=1 accepted"
        ),
        .init(
            "app.ready-from-child", .app, "READY=1 sent by a child of the app (the supervisor's grandchild)",
            "rejected by pid; the generation is not ready and fails at --ready-timeout"),
        .init(
            "app.ready-from-stranger", .app, "READY=1 sent by an unrelated process",
            "rejected by pid; the starting generation stays starting"),
        .init(
            "app.ignore-term", .app, "ignores TERM (2 workers)",
            "SIGKILL to its whole process group at --drain-timeout; every member gone, no zombie"),
        .init(
            "app.orphan-workers", .app, "exits on TERM at once, leaving 2 workers serving",
            "the workers are killed with the group as soon as their parent exits, and reaped"),
        .init(
            "app.escape-group", .app, "workers leave the process group (setsid)",
            "once their generation's main process is gone, the supervisor (their subreaper) kills them, known by BATON_GENERATION, and reaps them"
        ),
        .init(
            "app.close-listener", .app, "closes its inherited listener at boot",
            "only its own descriptor closes: the serving generation keeps accepting"),
        .init(
            "app.shutdown-listener-boot", .app, "shutdown(SHUT_RDWR) of the shared listener (--listen-mode shared) while starting",
            "the kernel stops the one shared socket for every holder; the supervisor must put it back to listening within 500 ms"),
        .init(
            "app.shutdown-listener-term", .app,
            "shutdown(SHUT_RDWR) of the shared listener (--listen-mode shared) when retired (the wake-the-accept-thread idiom)",
            "the new generation must keep serving after the old one's shutdown(), back within 500 ms"),
        .init(
            "app.shutdown-listener-handover", .app,
            "both shutdowns with steered listeners, the default (private network namespace, tcp_migrate_req=1)",
            "each generation has its own socket: no request fails"),
        .init(
            "app.flood-output", .app, "floods stdout and stderr (200 MiB)",
            "the supervisor stays responsive (status, restart) and logs its own lines"),
        .init(
            "app.leak-fds", .app, "leaks 1,000 descriptors without FD_CLOEXEC",
            "the next generation gets only 0-2 and its listeners; the supervisor's count is unchanged"),
        .init(
            "app.bind-own", .app, "binds a socket of its own on the listener's port",
            "plain: the kernel refuses (EADDRINUSE), the restart fails clearly, the old generation serves on"),
        // The operator misbehaves.
        .init(
            "op.hup-storm", .operatorFault, "50 SIGHUPs in one second",
            "at most two restarts run (one, plus one coalesced); no descriptor, process or zombie left"),
        .init(
            "op.restart-during-stop", .operatorFault, "`restart` while a stop drains",
            "refused with exit 11 (busy) or 3 once gone; the stop finishes with exit 0 and removes every file"),
        .init(
            "op.stop-during-restart", .operatorFault, "`stop` while a restart brings up a slow generation",
            "the stop wins with exit 0; the waiting `restart` exits 11 saying the supervisor is stopping"),
        .init(
            "op.two-deploys", .operatorFault, "two `deploy` at once (different releases)",
            "the second waits for the first; both exit 0; the second release serves; no request fails"),
        .init(
            "op.deploy-missing", .operatorFault, "`deploy` of a release directory that does not exist",
            "exit 2, 'nothing was changed'; symlink untouched"),
        .init(
            "op.deploy-not-executable", .operatorFault, "`deploy` of a release whose command is not executable",
            "exit 6 naming the command and why; the symlink points back; the old generation serves on"),
        .init(
            "op.dir-dangling", .operatorFault, "`--dir` is a dangling symlink (at start, and during a restart)",
            "start: exit 2, nothing started; restart: exit 6 naming the link; the old generation serves on"),
        .init(
            "op.envdir-bad", .operatorFault, "an envdir file that is not UTF-8, or 10 MB (at start, and during a restart)",
            "start: exit 2 naming the file; restart: exit 6 naming the file; the old generation serves on"),
        .init(
            "op.sigkill-supervisor", .operatorFault, "SIGKILL of the supervisor",
            "the generation serves on (documented); a new `baton start` exits 8 naming the orphan's pid and how to stop it, leaving no file; after that stop, a start succeeds"
        ),
        .init(
            "op.pidfile-stale", .operatorFault, "a stale pid file (dead pid)",
            "replaced with a warning; status says 1 (dead, pid file left)"),
        .init("op.pidfile-garbage", .operatorFault, "a pid file holding garbage", "replaced with a warning; never read as a pid"),
        .init(
            "op.pidfile-symlink", .operatorFault, "the pid file is a symlink to another file",
            "the symlink is replaced, never followed: the other file is untouched"),
        .init(
            "op.control-occupied", .operatorFault, "a file that is not a socket stands at the control socket path",
            "exit 2 naming the path; the file is untouched; nothing started, nothing left"),
        // Bad input.
        .init(
            "input.baton-options", .input, "every `baton` option with a malformed value",
            "one line naming the option and what is expected, exit 2, nothing started"),
        .init(
            "input.start-server-options", .input, "every `start_server` option with a malformed value",
            "one line naming the option, exit 1 (Server::Starter's usage code), nothing started"),
        .init(
            "input.option-fuzz", .input, "random values for every option",
            "never a crash (no signal, no trap): exit 2, or 9 for the missing test command; nothing started"),
        .init(
            "input.environment-fuzz", .input,
            "random LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES / NOTIFY_SOCKET for baton, KILL_OLD_DELAY / AUTO_RESTART_INTERVAL / ENVDIR for start_server",
            "never a crash: a clear error or a normal start"),
        .init(
            "input.library-environment", .input, "the app-side library's SERVER_STARTER_PORT / LISTEN_FDS parsing",
            "fuzzed in Tests/BatonListenTests/FuzzTests.swift (the library's own target)"),
        // Endurance.
        .init(
            "endurance.restarts", .endurance, "consecutive restarts under load",
            "no failed request; the supervisor's RSS and descriptor count at the end as after the first 10 restarts; no zombie"),
        // Security.
        .init(
            "sec.file-modes", .security, "modes of the files the supervisor creates",
            "control socket 0600, pid file 0644, status file 0644, unix listener 0660 (--socket-mode), log 0640"),
        .init(
            "sec.no-symlinks", .security, "symlinks planted at the pid file, status file, control socket and unix socket paths",
            "never followed: replaced (pid and status files) or refused (sockets); the targets untouched"),
        .init(
            "sec.other-user", .security, "another user (created with useradd) tries status, restart, stop and SIGHUP",
            "refused by the socket's mode, then by the peer uid check, then by the kernel"),
        .init(
            "sec.user-group", .security, "`--user` / `--group` drop privileges for the app",
            "/proc/PID/status of the app and its workers: every uid and gid is the user's, groups are the user's, no capability"),
        .init(
            "sec.descriptors", .security, "the app never receives the supervisor's descriptors",
            "the app's /proc/PID/fd holds stdio and its listeners only: not the control socket, notify socket, pid file, signalfd, epoll or log"
        ),
    ]

    init(_ id: String, _ section: Section, _ title: String, _ expected: String) {
        self.id = id
        self.section = section
        self.title = title
        self.expected = expected
    }

    static func named(_ id: String) -> FaultCase {
        guard let c = all.first(where: { $0.id == id }) else { preconditionFailure("no case \(id) in the catalogue") }
        return c
    }
}

// MARK: - Recording a case

/// Why a case stopped early.
struct CaseAborted: Error, CustomStringConvertible {
    let description: String
}

/// One case under way: its checks and measurements, written as a row of
/// docs/reliability.md when it ends.
final class CaseRecord {
    let info: FaultCase
    let started = Date()
    private(set) var failures: [String] = []
    /// Requests made under load, and how many failed.
    var requests = 0
    var failed = 0
    /// What the case observed, shown in the table (exit codes, messages, figures).
    var observed: [String] = []
    /// What the kernel or the design allows, when it limits the outcome.
    var limit: String?

    init(_ id: String) {
        info = FaultCase.named(id)
    }

    /// Records a failed check (as a test issue too) when `condition` is false.
    func expect(
        _ condition: Bool, _ message: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard !condition else { return }
        let text = message()
        failures.append(text)
        Issue.record(Comment(rawValue: text), sourceLocation: sourceLocation)
    }

    /// The value, or a recorded failure that ends the case.
    func require<T>(_ value: T?, _ message: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
        guard let value else {
            expect(false, message(), sourceLocation: sourceLocation)
            throw CaseAborted(description: message())
        }
        return value
    }

    func note(_ text: String) { observed.append(text) }
    /// Notes the first line of `log` that contains `needle`, or that none does.
    func note(_ log: String, lineWith needle: String) { note(line(log, containing: needle) ?? "no line with \"\(needle)\"") }

    /// Adds a load's totals; `allowed` failures are tolerated (a stated limit).
    func load(_ stats: Load.Stats, allowed: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) {
        requests += stats.ok + stats.failed
        failed += stats.failed
        expect(stats.ok > 0, "no request succeeded under load", sourceLocation: sourceLocation)
        expect(
            stats.failed <= allowed, "\(stats.failed) failed requests (at most \(allowed) allowed): \(stats.errors)",
            sourceLocation: sourceLocation)
    }

    /// `text` without what changes from run to run: scratch and build
    /// directories, pids, ports.
    static func stable(_ text: String) -> String {
        var t = text.replacingOccurrences(of: Binaries.directory, with: ".build")
        for (pattern, replacement) in [
            (#"/tmp/baton-test-[0-9A-F]{8}"#, "DIR"), (#"(?<![.\w])(pid[ =]|-TERM -|pids )\d+"#, "$1N"),
            (#"127\.0\.0\.1:\d+"#, "127.0.0.1:PORT"),
            (#"\[(\d+, )*\d+\]"#, "[N]"), (#"\(pid \d+\)"#, "(pid N)"),
        ] {
            t = t.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        return t
    }

    /// Writes the row; called at the end of every case (also when it threw).
    func finish() {
        var row: [String: Any] = [
            "id": info.id, "passed": failures.isEmpty, "requests": requests, "failed": failed, "observed": observed.map(Self.stable),
            "seconds": (Date().timeIntervalSince(started) * 10).rounded() / 10, "configuration": Binaries.configuration,
        ]
        if let limit { row["limit"] = Self.stable(limit) }
        if let first = failures.first { row["failure"] = Self.stable(first) }
        ReliabilityReport.write(row, id: info.id)
    }
}

/// Runs `body` as the case `id`, writing its row whatever happens: an error
/// it throws is a failure of the case (in its row too), never a pass.
func faultCase(_ id: String, _ body: (CaseRecord) throws -> Void) rethrows {
    let record = CaseRecord(id)
    defer { record.finish() }
    do {
        try body(record)
    } catch let e as CaseAborted {
        _ = e
    } catch {
        record.expect(false, "threw: \(error)")
        throw error
    }
}

extension Binaries {
    /// debug or release, from the build directory's name.
    static var configuration: String {
        directory.hasSuffix("/release") ? "release" : directory.hasSuffix("/debug") ? "debug" : (directory as NSString).lastPathComponent
    }
}

// MARK: - The report

/// The rows of the cases (one JSON file each, in the build directory) and
/// the page they make, docs/reliability.md. The page is written when
/// BATON_WRITE_RELIABILITY=1; it lists every case of the catalogue, run or not.
enum ReliabilityReport {
    static var rowsDirectory: String { Binaries.directory + "/reliability-rows" }
    /// This test process's run: the page shows only rows written by it, so a
    /// case that did not run this time shows "not run", not an old "pass".
    static let runID = "\(getpid())-\(Int(Date().timeIntervalSince1970))"

    /// The repository's docs/reliability.md (through the real path of this file).
    static var page: String {
        if let path = ProcessInfo.processInfo.environment["BATON_RELIABILITY_PAGE"] { return path }
        let here = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/reliability.md").path
    }

    static func write(_ row: [String: Any], id: String) {
        var row = row
        row["run"] = runID
        try? FileManager.default.createDirectory(atPath: rowsDirectory, withIntermediateDirectories: true)
        if let data = try? JSONSerialization.data(withJSONObject: row, options: [.sortedKeys]) {
            _ = FileManager.default.createFile(atPath: rowsDirectory + "/" + id + ".json", contents: data)
        }
        if ProcessInfo.processInfo.environment["BATON_WRITE_RELIABILITY"] == "1" {
            try? render().write(toFile: page, atomically: true, encoding: .utf8)
        }
    }

    static func rows() -> [String: [String: Any]] {
        var out: [String: [String: Any]] = [:]
        for c in FaultCase.all {
            guard let data = FileManager.default.contents(atPath: rowsDirectory + "/" + c.id + ".json"),
                let row = try? JSONSerialization.jsonObject(with: data) as? [String: Any], row["run"] as? String == runID
            else { continue }
            out[c.id] = row
        }
        return out
    }

    static func cell(_ text: String) -> String {
        text.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ")
    }

    static func render() -> String {
        let rows = rows()
        let configurations = Set(rows.values.compactMap { $0["configuration"] as? String }).sorted()
        let passed = rows.values.filter { $0["passed"] as? Bool == true }.count
        let seconds = Int(rows.values.compactMap { $0["seconds"] as? Double }.reduce(0, +))
        // The commit the binaries were built from (a change not yet committed is marked).
        let revParse = run("/usr/bin/git", ["-C", Paths.repository, "rev-parse", "--short=12", "HEAD"]).output
        let head = revParse.range(of: "^[0-9a-f]{12}", options: [.regularExpression, .anchored]).map { String(revParse[$0]) } ?? ""
        let dirty = run("/usr/bin/git", ["-C", Paths.repository, "status", "--porcelain", "--", "Sources"]).output
            .split(separator: "\n").contains { $0.dropFirst(3).hasPrefix("Sources/") }
        let commit = head.isEmpty ? "an unknown commit" : "commit \(head)" + (dirty ? " with uncommitted changes under Sources" : "")
        var md = """
            # Reliability under faults and bad input

            This page is written by the fault-injection suite itself
            (`Tests/BatonIntegrationTests/Fault*.swift`, `OperatorFaultTests.swift`,
            `BadInputTests.swift`, `EnduranceTests.swift`, `SecurityTests.swift`): each
            case writes its row when it ends, and with `BATON_WRITE_RELIABILITY=1` the
            suite renders this page from the rows. Regenerate it with

                BATON_WRITE_RELIABILITY=1 swift test -c release --no-parallel --filter Reliability

            Every case runs the real `baton` (or `start_server`) and the test app
            (`Sources/baton-testapp`, whose switches inject the faults). Where a
            generation serves, it does so under a bounded HTTP load on 127.0.0.1 (8
            clients, a new connection per request) and the failed requests are counted
            (none may fail, unless the row states the kernel's limit); a case with "-"
            under Requests has nothing serving to load (an option refused before
            anything starts). Every case checks the exit code and message, and that no
            process, zombie, descriptor or file is left behind. Only the rows of this
            run are shown: a case that did not run says "not run".

            Last run: \(rows.count) of \(FaultCase.all.count) cases, \(passed) passed, \(seconds) s in all (\(configurations.joined(separator: ", ")) build), made from \(commit).


            """
        for section in FaultCase.Section.allCases {
            md += "## \(section.rawValue)\n\n"
            md += "| Case | Baton must | Outcome | Requests (failed) | Observed |\n| --- | --- | --- | --- | --- |\n"
            for c in FaultCase.all where c.section == section {
                guard let row = rows[c.id] else {
                    md += "| \(cell(c.title)) | \(cell(c.expected)) | not run | | |\n"
                    continue
                }
                var outcome = row["passed"] as? Bool == true ? "pass" : "FAIL: \(row["failure"] as? String ?? "")"
                if row["limit"] != nil { outcome += " (limit, below)" }
                let requests = row["requests"] as? Int ?? 0
                let load = requests > 0 ? "\(requests) (\(row["failed"] as? Int ?? 0))" : "-"
                let observed = (row["observed"] as? [String] ?? []).joined(separator: "; ")
                md += "| \(cell(c.title)) | \(cell(c.expected)) | \(cell(outcome)) | \(load) | \(cell(observed)) |\n"
            }
            md += "\n"
        }
        md += """
            ## What the suite found, and what was fixed

            - A retiring generation that calls `shutdown()` on its inherited listener
              (the usual way to wake threads blocked in `accept`) stopped the one shared
              socket for the new generation too: every connection refused from then on.
              The supervisor now watches its copies of the shared listeners for hang-ups
              and listens again at once.
            - Workers that leave their generation's process group escaped the group's
              SIGKILL, served the old release for ever and outlived `baton stop`. The
              supervisor (their subreaper) now kills and reaps them once their
              generation is gone.
            - A `restart` cut short by a `stop` exited 6 ("the new generation failed;
              the old one still serves"), which was false; it now exits 11 (busy) and
              says the supervisor is stopping.
            - A release whose `./app` is not executable failed with a bare "exit code
              126"; the reason is now in the message.
            - `--envdir` naming no directory exited 1 instead of 2; a bad `--control`
              path was found only after `baton start` had spawned its daemon;
              `start_server --port=[::1` failed late with exit 255, and a malformed
              `--restart-timeout` was silently replaced by 5 minutes.
            - The test app's own SIGTERM handler, a closure in `main.swift`'s top-level
              code, was main-actor isolated and trapped when the signal landed on
              another thread: once in about 4,000 restarts the retiring generation died
              with the requests it held (found by the endurance case).


            """
        let limits = FaultCase.all.compactMap { c in (rows[c.id]?["limit"] as? String).map { (c, $0) } }
        if !limits.isEmpty {
            md += "## Limits: what the kernel allows\n\n"
            for (c, text) in limits { md += "- **\(c.title)**: \(text)\n" }
            md += "\n"
        }
        return md
    }
}

// MARK: - Processes, descriptors, files

/// Every live process whose parent chain leads to `root` (not `root` itself).
func descendants(of root: pid_t) -> Set<pid_t> {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var parent: [pid_t: pid_t] = [:]
    for name in entries {
        guard let pid = pid_t(name), let f = procStat(pid), f.count > 1, let ppid = pid_t(f[1]) else { continue }
        parent[pid] = ppid
    }
    var out: Set<pid_t> = []
    for pid in parent.keys {
        var p = parent[pid]
        var hops = 0
        while let q = p, q > 1, hops < 64 {
            if q == root {
                out.insert(pid)
                break
            }
            p = parent[q]
            hops += 1
        }
    }
    return out
}

/// Children of `pid` that are zombies (exited, not reaped).
func zombies(of pid: pid_t) -> [pid_t] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { name -> pid_t? in
        guard let child = pid_t(name), let f = procStat(child), f.count > 1, f[0] == "Z", pid_t(f[1]) == pid else { return nil }
        return child
    }
}

/// What each open descriptor of `pid` points at, by number.
func openDescriptors(_ pid: pid_t) -> [Int: String] {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return [:] }
    var out: [Int: String] = [:]
    for name in names {
        guard let n = Int(name) else { continue }
        out[n] = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)")) ?? "?"
    }
    return out
}

/// What a process holds, by kind: how many sockets, and each file by its
/// path. A steered listener is a new socket for every generation, at a new
/// number: the count of sockets is what must not grow.
func descriptorKinds(_ fds: [Int: String], listeners: Set<String> = []) -> [String: Int] {
    var kinds: [String: Int] = [:]
    for target in fds.values {
        let kind =
            !target.hasPrefix("socket:") ? target : listeners.contains(String(target.dropFirst(8).dropLast())) ? "tcp listener" : "socket"
        kinds[kind, default: 0] += 1
    }
    return kinds
}

/// The inodes of the TCP sockets in LISTEN state in this network namespace.
func tcpListenerInodes() -> Set<String> {
    var out = Set<String>()
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            if f.count > 9, f[3] == "0A" { out.insert(String(f[9])) }
        }
    }
    return out
}

/// The resident set of `pid` in KiB.
func rssKiB(_ pid: pid_t) -> Int? {
    procStatus(pid, "VmRSS").flatMap { Int($0.split(separator: " ").first ?? "") }
}

/// Watches one supervisor over a case: every process it started, its
/// descriptors, the files it may leave.
final class Watch: @unchecked Sendable {
    let supervisor: pid_t
    private let seenPids = Mutex<Set<pid_t>>([])
    private(set) var baselineFDs: [Int: String] = [:]

    init(_ supervisor: pid_t) {
        self.supervisor = supervisor
        sample()
        baselineFDs = openDescriptors(supervisor)
    }

    var seen: Set<pid_t> { seenPids.withLock { $0 } }

    /// Notes the supervisor's descendants now.
    func sample() {
        let now = descendants(of: supervisor)
        seenPids.withLock { $0.formUnion(now) }
    }

    /// Samples every 20 ms while `body` runs on this thread.
    func sampling<T>(_ body: () throws -> T) rethrows -> T {
        let stop = Atomic(false)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread { [self] in
            while !stop.load(ordering: .relaxed) {
                self.sample()
                usleep(20_000)
            }
            done.signal()
        }
        defer {
            stop.store(true, ordering: .relaxed)
            done.wait()
        }
        return try body()
    }

    /// The supervisor's descriptors that were not there at the start (waits
    /// up to 3 s for transient ones, such as a control connection, to go).
    ///
    /// Up to `spareListeners` more TCP listeners are allowed: a retired
    /// generation's steered socket that cannot leave its SO_REUSEPORT group
    /// without moving the serving socket's slot stays open as a spare until it
    /// can, or the next generation takes it (SupervisorStateMachine+Sockets);
    /// two restarts in a row leave at most two. More would be a leak.
    func newDescriptors(spareListeners: Int = 2) -> [String] {
        var extra: [String] = []
        eventually(3) {
            let listeners = tcpListenerInodes()
            let now = descriptorKinds(openDescriptors(supervisor), listeners: listeners)
            let before = descriptorKinds(baselineFDs, listeners: listeners)
            let allowed = { (kind: String) in before[kind, default: 0] + (kind == "tcp listener" ? spareListeners : 0) }
            extra = now.filter { allowed($0.key) < $0.value }.map { "\($0.value - before[$0.key, default: 0]) more \($0.key)" }.sorted()
            return extra.isEmpty && now.filter { $0.key != "tcp listener" } == before.filter { $0.key != "tcp listener" }
        }
        return extra
    }

    /// Checks the supervisor holds no new descriptor and no zombie child.
    func checkRunning(_ c: CaseRecord, sourceLocation: SourceLocation = #_sourceLocation) {
        sample()
        let extra = newDescriptors()
        c.expect(
            extra.isEmpty,
            "the supervisor holds new descriptors: \(extra); now \(openDescriptors(supervisor).sorted { $0.key < $1.key }); "
                + "sockets: \(run("/usr/bin/ss", ["-xtuanp"]).output.split(separator: "\n").filter { $0.contains("pid=\(supervisor),") })",
            sourceLocation: sourceLocation)
        var z: [pid_t] = []
        eventually(3) {
            z = zombies(of: supervisor)
            return z.isEmpty
        }
        c.expect(z.isEmpty, "zombie children of the supervisor: \(z)", sourceLocation: sourceLocation)
    }

    /// After the supervisor exited: every process it ever started is gone.
    func checkAllGone(_ c: CaseRecord, sourceLocation: SourceLocation = #_sourceLocation) {
        var left: [pid_t] = []
        eventually(5) {
            left = seen.filter { !isGone($0) }.sorted()
            return left.isEmpty
        }
        c.expect(left.isEmpty, "processes left running: \(left.map { "\($0) \(commandLineOf($0))" })", sourceLocation: sourceLocation)
    }
}

/// Stops a `baton run` with SIGTERM and checks it exits 0, leaving no process and no file.
func stopAndCheck(_ b: Baton, _ watch: Watch, _ c: CaseRecord, _ s: Scratch, sourceLocation: SourceLocation = #_sourceLocation) {
    watch.sample()
    b.child.signal(SIGTERM)
    let code = b.child.wait(30)
    c.expect(code == 0, "baton run exited with \(code.map(String.init) ?? "nothing (still running)")", sourceLocation: sourceLocation)
    watch.checkAllGone(c, sourceLocation: sourceLocation)
    c.expectNoFiles(in: s, sourceLocation: sourceLocation)
}

/// The pid of generation `n` from a supervisor's log.
func generationPid(_ log: String, _ n: Int) -> pid_t? {
    guard let l = log.split(separator: "\n").first(where: { $0.contains("gen \(n) pid ") && $0.contains(" spawned") }),
        let r = l.range(of: "gen \(n) pid ")
    else { return nil }
    return pid_t(l[r.upperBound...].prefix { $0.isNumber })
}

/// Files a supervisor may create, left in `dir` (recursively, releases excepted).
func leftoverFiles(in dir: String) -> [String] {
    guard let names = try? FileManager.default.subpathsOfDirectory(atPath: dir) else { return [] }
    return names.filter { name in
        if name.hasPrefix("releases/") { return false }
        let base = (name as NSString).lastPathComponent
        return base.hasSuffix(".pid") || base.hasSuffix(".control") || base.hasSuffix(".sock") || base == "status"
            || base.contains(".tmp.")
    }.sorted()
}

extension CaseRecord {
    /// Checks no supervisor file is left in the scratch directory.
    func expectNoFiles(in s: Scratch, sourceLocation: SourceLocation = #_sourceLocation) {
        let left = leftoverFiles(in: s.path)
        expect(left.isEmpty, "files left behind: \(left)", sourceLocation: sourceLocation)
    }
}

// MARK: - Talking to a supervisor

/// One request on a control socket; every answer line, up to the result.
func controlExchange(_ path: String, _ request: String, timeout: Double = 30) -> [String] {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else { return ["connect: \(String(cString: strerror(errno)))"] }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = (request + "\n").withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { break }
        data += buf[0..<n]
        let text = String(decoding: data, as: UTF8.self)
        if text.contains("\"type\":\"result\"") || text.contains("\"type\":\"status\"") { break }
    }
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
}

/// The `exit` of a result line.
func exitOf(_ lines: [String]) -> Int? {
    guard let last = lines.last, let r = last.range(of: #""exit":(\d+)"#, options: .regularExpression) else { return nil }
    return Int(last[r].split(separator: ":").last ?? "")
}

/// A `baton run --dir current` with `current` pointing at `release`, whose
/// testapp.args are `args` (the good release sends READY=1).
func servingBaton(
    _ s: Scratch, options: [String] = [], listen: [String] = ["127.0.0.1:0"], release: String = "good", args: String = "--notify"
) -> Baton {
    s.release(release, args: args)
    s.point(to: release)
    return Baton(s, listen: listen, options: ["--dir", s.path + "/current"] + options)
}

/// A fault case's usual shape: a `baton run` whose generation 1 serves
/// release "good", a watch on its processes and descriptors, restarts into
/// other releases under load, and a stop that checks nothing is left.
struct Serving {
    let s: Scratch
    let b: Baton
    let port: UInt16
    let watch: Watch

    /// Starts `baton run` (see ``servingBaton(_:options:listen:release:args:)``)
    /// and waits for generation 1 to serve.
    init(_ c: CaseRecord, options: [String], args: String = "--notify") throws {
        s = Scratch()
        b = servingBaton(s, options: options, args: args)
        c.expect(b.waitServing(1), "generation 1 did not serve: \(b.log)")
        port = try c.require(b.port, "no port: \(b.log)")
        watch = Watch(b.child.pid)
    }

    /// Points `current` at a new release with testapp.args `args`, starts a
    /// load of `clients`, runs `before`, sends SIGHUP and runs `during` while
    /// the watch samples, then stops the load and returns what it counted.
    func restart(
        into release: String, args: String, clients: Int = 8, before: () -> Void = {}, _ during: () throws -> Void
    ) rethrows -> Load.Stats {
        s.release(release, args: args)
        s.point(to: release)
        let load = Load(port: port, clients: clients)
        before()
        try watch.sampling {
            b.hup()
            try during()
        }
        return load.stop()
    }

    /// Checks the running supervisor, then stops it and checks it left
    /// nothing; `limit` (if given) is the case's stated bound and why.
    func finish(_ c: CaseRecord, limit: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        if let limit { c.limit = limit }
        watch.checkRunning(c, sourceLocation: sourceLocation)
        stopAndCheck(b, watch, c, s, sourceLocation: sourceLocation)
    }
}

/// The first line of `text` containing `needle`, for the table.
func line(_ text: String, containing needle: String) -> String? {
    text.split(separator: "\n").first { $0.contains(needle) }.map {
        // Drop the timestamp and program of log lines.
        let s = String($0).trimmingCharacters(in: .whitespaces)
        if let r = s.range(of: #"^\S+Z baton\[\d+\]: "#, options: .regularExpression) { return String(s[r.upperBound...]) }
        return s
    }
}
