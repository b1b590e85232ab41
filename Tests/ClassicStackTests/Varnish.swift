import Foundation
import Glibc
import Testing

/// varnishd in the foreground with examples/varnish/default.vcl, only its
/// marked backend port rewritten; its working directory in the scratch directory.
final class Varnish: @unchecked Sendable {
    let child: Child
    let port: UInt16
    let workdir: String

    /// `backendPort` replaces the example's 8080; `options` are more varnishd flags (`-t 1`).
    init(_ scratch: Scratch, backendPort: UInt16, port: UInt16 = freePort(), options: [String] = []) throws {
        self.port = port
        let varnishd = try #require(Tools.varnishd, "varnishd is missing: apt-get install varnish")
        let vcl = try Varnish.rewritten(backendPort: backendPort)
        scratch.write("default.vcl", vcl)
        workdir = scratch.file("varnish")
        child = Child(
            varnishd,
            ["-F", "-n", workdir, "-a", "127.0.0.1:\(port)", "-f", scratch.file("default.vcl"), "-s", "malloc,256m"] + options,
            log: scratch.file("varnishd.log"))
        try #require(
            eventually(20) {
                if case .success(let fd) = connectTo(.tcp(port)) {
                    close(fd)
                    return true
                }
                return false
            },
            "varnishd did not start: \(child.log)")
    }

    /// The example VCL with the backend port rewritten.
    static func rewritten(backendPort: UInt16) throws -> String {
        let example = try String(contentsOfFile: Paths.examples + "/varnish/default.vcl", encoding: .utf8)
        try #require(example.contains(".port = \"8080\";"), "examples/varnish/default.vcl lost its marked line")
        return example.replacingOccurrences(of: ".port = \"8080\";", with: ".port = \"\(backendPort)\";")
    }

    /// What `varnishadm backend.list` says (" healthy" / " sick" in its Health column).
    var backends: String {
        guard let adm = Paths.tool("varnishadm") else { return "" }
        return run(adm, ["-n", workdir, "backend.list"], timeout: 10).output
    }

    func stop() { child.stop(SIGTERM, grace: 10) }
}
