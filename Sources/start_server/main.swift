// start_server: a drop-in for Perl Server::Starter's start_server (0.35),
// on Baton's engine. Same options, environment, status file, signals.
// Differences are listed in docs/start_server.md.
import BatonControl
import BatonCore
import BatonSystem
import CBatonShims
import Glibc

let compatibleVersion = StartServerTable.compatibleVersion
let perlOptions = StartServerTable.perl
let batonOptions = StartServerTable.baton
let integerOptions = StartServerTable.integerOptions

let usage = """
    Usage: start_server [options] -- server-prog server-arg1 server-arg2 ...

    A superdaemon for hot-deploying server programs (Server::Starter \(compatibleVersion)
    compatible, on Baton's engine).

    Options (as Server::Starter's):
      --port=(port|host:port|[v6]:port)[=fd]  TCP port to listen to, repeatable; a bare port
                                 binds 0.0.0.0; =fd puts the socket at that descriptor;
                                 u before the port (u8125, 127.0.0.1:u8125) for UDP
      --path=path                unix socket to listen on, repeatable
      --dir=path                 working directory of the server program
      --interval=seconds         a new server takes over no sooner than this after its start (default 1)
      --signal-on-hup=SIGNAL     signal for the old server on SIGHUP (default TERM)
      --signal-on-term=SIGNAL    signal for the servers on SIGTERM (default TERM)
      --pid-file=filename        write start_server's pid here
      --status-file=filename     write generation:pid lines here
      --envdir=ENVDIR            read environment variables from ENVDIR at each start
      --log-file=file | "| cmd"  send STDOUT and STDERR to a file or a command
      --daemonize                run in the background (needs --log-file)
      --enable-auto-restart      restart by time (--auto-restart-interval, default 360)
      --kill-old-delay=seconds   wait before signalling old servers (default 0; 5 with auto-restart)
      --backlog=size             listen backlog (default: the kernel's maximum)
      --restart                  restart the running start_server (--pid-file, --status-file)
      --stop                     stop the running start_server (--pid-file)
      --help, --version

    Baton's additions:
      --drain-timeout=D          SIGKILL old servers still running D after their signal (default: never)
      --max-attempts=N           give up on a new server after N failed starts (default 10)
      --listen-mode=MODE         steered (default): each server gets its own socket, new
                                 connections go to the new one and the old one drains before its
                                 signal; shared: one socket for all, as Server::Starter
      --handshake-window=D       steered: wait for handshakes begun on the old socket (default 200ms)
      --restart-timeout=D        how long --restart and --stop wait (default 5m)
      --ready=notify|auto|D      auto (default): a new server takes over once it took a probe connection
                                 from its own socket (and sent READY=1 where it sends it); notify:
                                 READY=1 required too; D: alive that long, a guess that proves nothing
      --probation=D              keep the old server, unsignalled, D after the new one took over; if the
                                 new one exits or stops accepting meanwhile, connections go back to the
                                 old one (default 5s; 0: none)
      --control=PATH             control socket (default: next to --pid-file); 'baton status' talks to it
      --upgrade                  re-execute the running start_server in place (--pid-file) with the
                                 start_server now on disk: same pid, sockets and servers
    """

func die(_ message: String, code: Int32 = 255) -> Never {
    Sys.writeAll(2, "start_server: \(message)\n".utf8)
    exit(code)
}

// MARK: - The command line

let arguments = Array(CommandLine.arguments.dropFirst())
Daemon.enterHiddenMode(arguments, program: "start_server")
Log.setProgram("start_server")
signal(SIGPIPE, SIG_IGN)

let options: ParsedOptions
do throws(BatonError) {
    options = try ParsedOptions(
        arguments, specs: perlOptions + batonOptions, command: "start_server", style: .getoptLong(preferred: Set(perlOptions.map(\.name))))
    for name in integerOptions {
        if let v = options.last(name), Int(v) == nil {
            throw BatonError(.usage, "Value \"\(v)\" invalid for option \(name) (number expected)")
        }
    }
} catch {
    Sys.writeAll(2, "\(error.message)\n".utf8)
    exit(1)
}

func last(_ name: String) -> String? { options.last(name) }
func has(_ name: String) -> Bool { options.has(name) }

/// A duration option, or its variable in the environment (Server::Starter reads some from there).
func seconds(_ name: String, _ envName: String? = nil) throws(BatonError) -> Duration? {
    guard let text = last(name) ?? envName.flatMap(Sys.getenv).flatMap({ $0.isEmpty ? nil : $0 }) else { return nil }
    return try OptionParsing.duration(text, option: "--\(name)")
}

/// --restart-timeout, default 5 minutes; a malformed value is a usage error.
func restartTimeout() -> Duration {
    do { return try seconds("restart-timeout") ?? .seconds(300) } catch { die(error.message, code: 1) }
}

func controlPath(pidFile: String) -> String {
    last("control").map(Sys.absolute) ?? Locations.controlPath(forPidFile: Sys.absolute(pidFile))
}

if has("help") {
    print(usage)
    exit(0)
}
if has("version") {
    print(compatibleVersion)
    exit(0)
}
if has("restart") { restartServer() }
if has("stop") { stopServer() }
if has("upgrade") { upgradeServer() }
if has("daemonize"), last("log-file") == nil {
    die("Usage: --log-file option must be specified together with --deamonize")
}
guard !options.rest.isEmpty else { die("server program not specified") }

do throws(BatonError) {
    let c = try configuration()
    if has("daemonize") {
        // Returns once the first server is ready (Server::Starter returns at once, ready or not).
        _ = try Supervisor(configuration: c)
        if let pidFile = c.pidFile, case .live(let pid) = PidFile.inspect(pidFile) {
            throw BatonError(.alreadyRunning, "already running (pid \(pid.map(String.init) ?? "?")) with pid file \(pidFile)")
        }
        let p = c.policy
        let timeout = p.readyTimeout * Double(p.attemptRetries + 2) + .seconds(15)
        let (result, _) = try Daemon.start(c, umask: 0o022, timeout: timeout, spawned: { _ in })
        if result.ok { exit(0) }
        die(result.message, code: result.exitCode)
    }
    var foreground = c
    if let log = last("log-file") { try LogFile.redirect(to: log) }
    if last("log-file")?.hasPrefix("|") == true { foreground.logFile = nil }
    let supervisor = try Supervisor(configuration: foreground)
    exit(try supervisor.run())
} catch {
    // Server::Starter dies with errno as its exit code where there is one.
    die(error.message, code: error.code == .usage ? 1 : error.errno ?? 255)
}
