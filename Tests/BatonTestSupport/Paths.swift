import Foundation
import Glibc

/// Where things are: the package's executables next to the test bundle, the
/// source tree, the servers installed on the machine.
public enum Paths {
    /// The directory holding `baton`, `start_server`, `baton-testapp` and `baton-demo`.
    public static let binaries: String = {
        var dir = realPath("/proc/self/exe")
        while !dir.isEmpty, dir != "/", !FileManager.default.fileExists(atPath: dir + "/baton") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()
    public static var baton: String { binaries + "/baton" }
    public static var startServer: String { binaries + "/start_server" }
    public static var testapp: String { binaries + "/baton-testapp" }
    public static var demo: String { binaries + "/baton-demo" }

    /// The root of the source tree (this file is Tests/BatonTestSupport/Paths.swift).
    public static let repository: String = {
        var path = realPath(#filePath)
        for _ in 0..<3 { path = (path as NSString).deletingLastPathComponent }
        return path
    }()
    public static var examples: String { repository + "/examples" }

    /// An executable on the machine (PATH, then the sbin directories), or nil.
    public static func tool(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/local/sbin"]
        return dirs.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    public static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// The older name of `Paths` in the integration tests.
public typealias Binaries = Paths

extension Paths {
    /// The directory of the binaries.
    public static var directory: String { binaries }
}

/// The peers the tests run against, when installed (.ci/run installs them all).
public enum Tools {
    public static let starman = Paths.tool("starman")
    /// Debian's Perl `start_server` (libserver-starter-perl), never ours: a Perl
    /// script at /usr/bin/start_server, or where dpkg-divert moved it.
    public static let perlStartServer: String? = ["/usr/bin/start_server", "/usr/bin/start_server.perl"].first { path in
        guard FileManager.default.isExecutableFile(atPath: path), let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let head = String(decoding: (try? handle.read(upToCount: 64)) ?? Data(), as: UTF8.self)
        return head.hasPrefix("#!") && head.split(separator: "\n").first?.contains("perl") == true
    }
    public static let nginx = Paths.tool("nginx")
    public static let varnishd = Paths.tool("varnishd")
    public static let wrk = Paths.tool("wrk")
    public static let gunicorn = Paths.tool("gunicorn")
    public static let unshare = Paths.tool("unshare")
    public static let nsenter = Paths.tool("nsenter")
    public static let ip = Paths.tool("ip")
    public static let sysctl = Paths.tool("sysctl")
    public static let sshd = Paths.tool("sshd")
    public static let setpriv = Paths.tool("setpriv")

    /// Starman can load the example app (Plack is there).
    public static let hasStarman: Bool = starman != nil && run("/usr/bin/perl", ["-MPlack", "-MStarman", "-e", "1"]).status == 0

    /// Root, with unshare/nsenter/ip/sysctl: a private network namespace can be made.
    public static let privateNetwork: Bool = {
        guard getuid() == 0, let unshare, nsenter != nil, ip != nil, sysctl != nil else { return false }
        return run(unshare, ["-n", "--", "/bin/true"]).status == 0
    }()
}

/// What a test needs from the machine. Where something is missing, a test is
/// skipped, except under `CI=true`: there it runs and fails with the name of
/// what is missing (CI installs everything, so a missing peer is a fault).
public enum Peers {
    /// True under `CI=true`.
    public static let inCI = ProcessInfo.processInfo.environment["CI"] == "true"

    /// For `.enabled(if:)`: whether the test should run. Under CI it always runs.
    public static func available(_ present: Bool) -> Bool { present || inCI }
}
