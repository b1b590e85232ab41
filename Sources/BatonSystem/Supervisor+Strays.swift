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
        let children = Sys.children(of: getpid())
        for pid in children {
            // Killed already, and dying (a process with threads takes a while).
            guard !killedStrays.contains(pid), !machine.generations.contains(where: { $0.pid == pid }),
                let generation = Sys.environmentValue("BATON_GENERATION", of: pid).flatMap({ Int($0) }),
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
}
