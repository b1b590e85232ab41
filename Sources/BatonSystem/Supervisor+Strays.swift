import BatonCore
import CBatonShims
import Glibc

/// A process of a generation that left the generation's process group
/// (`setsid`, `setpgid`: a worker that daemonizes) escapes the SIGKILL sent
/// to the group. When its parent dies it becomes a child of the supervisor
/// (a subreaper), and it would serve the old release on the inherited
/// sockets for ever, and outlive the supervisor. Once its generation is
/// gone, the supervisor kills it: it knows it by `BATON_GENERATION` in its
/// environment.
extension Supervisor {
    /// Kills the children of this process that belong to a generation that
    /// is gone (not the generations' main processes). While exiting, also
    /// reaps them, since no SIGCHLD will be read any more.
    func killStrays() {
        let children = Self.children(of: getpid())
        for pid in children {
            // Killed already, and dying (a process with threads takes a while).
            guard !killedStrays.contains(pid), !machine.generations.contains(where: { $0.pid == pid }),
                let generation = Self.generationTag(of: pid),
                !machine.generations.contains(where: { $0.number == generation })
            else { continue }
            let command = Sys.commandLine(of: pid) ?? "?"
            guard kill(pid, SIGKILL) == 0 else { continue }
            killedStrays.insert(pid)
            Log.line("gen \(generation) pid \(pid) '\(command)' outlived its generation outside its process group: sent SIGKILL")
        }
        // Those reaped since are forgotten (their pids may be reused).
        killedStrays.formIntersection(children)
        guard exitCode != nil else { return }
        for pid in killedStrays {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
    }

    /// The children of `pid` (a single-threaded process: the supervisor), from
    /// /proc/PID/task/PID/children in one read; where the kernel lacks that
    /// file (CONFIG_PROC_CHILDREN), by reading the parent of every process.
    static func children(of pid: Int32) -> Set<Int32> {
        if let list = Sys.readFile("/proc/\(pid)/task/\(pid)/children", limit: 1 << 20) {
            return Set(list.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") }).compactMap { Int32(String(decoding: $0, as: UTF8.self)) })
        }
        guard let proc = opendir("/proc") else { return [] }
        defer { closedir(proc) }
        var children: Set<Int32> = []
        while let entry = readdir(proc) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let child = Int32(name), child != pid, Self.parent(of: child) == pid {
                children.insert(child)
            }
        }
        return children
    }

    /// The parent pid of `pid`, from /proc.
    static func parent(of pid: Int32) -> Int32? {
        guard let stat = Sys.readFile("/proc/\(pid)/stat", limit: 4096), let close = stat.lastIndex(of: UInt8(ascii: ")")) else {
            return nil
        }
        let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 1 else { return nil }
        return Int32(String(decoding: fields[1], as: UTF8.self))
    }

    /// The generation number in the environment of `pid` (`BATON_GENERATION`).
    static func generationTag(of pid: Int32) -> Int? {
        guard let env = Sys.readFile("/proc/\(pid)/environ", limit: 1 << 20) else { return nil }
        let key = Array("BATON_GENERATION=".utf8)
        for entry in env.split(separator: 0) where entry.starts(with: key) {
            return Int(String(decoding: entry.dropFirst(key.count), as: UTF8.self))
        }
        return nil
    }
}
