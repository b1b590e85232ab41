import Foundation
import Glibc
import Testing

/// nginx in the foreground with a configuration of its own under a scratch
/// directory (pid file, logs, temporary files), serving the site file
/// examples/nginx/myapp.conf with only its two marked addresses rewritten.
final class Nginx: @unchecked Sendable {
    let child: Child
    let port: UInt16
    let errorLog: String

    /// `upstream` replaces the example's `127.0.0.1:8080` (`127.0.0.1:PORT` or `unix:/path`);
    /// `name` is its directory under the scratch directory; `network` runs it there.
    init(_ scratch: Scratch, upstream: String, port: UInt16 = freePort(), name: String = "nginx", network: PrivateNetwork? = nil) throws {
        self.port = port
        let nginx = try #require(Tools.nginx, "nginx is missing: apt-get install nginx")
        let example = try String(contentsOfFile: Paths.examples + "/nginx/myapp.conf", encoding: .utf8)
        for marked in ["server 127.0.0.1:8080;", "listen 80;"] {
            try #require(example.contains(marked), "examples/nginx/myapp.conf lost its marked line '\(marked)'")
        }
        let site =
            example
            .replacingOccurrences(of: "server 127.0.0.1:8080;", with: "server \(upstream);")
            .replacingOccurrences(of: "listen 80;", with: "listen 127.0.0.1:\(port);")
        let dir = scratch.file(name)
        try FileManager.default.createDirectory(atPath: dir + "/tmp", withIntermediateDirectories: true)
        scratch.write("\(name)/myapp.conf", site)
        errorLog = dir + "/error.log"
        // The harness: everything nginx writes stays in the scratch directory.
        scratch.write(
            "\(name)/nginx.conf",
            """
            worker_processes 2;
            pid \(dir)/nginx.pid;
            error_log \(errorLog) warn;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path \(dir)/tmp/body;
                proxy_temp_path \(dir)/tmp/proxy;
                fastcgi_temp_path \(dir)/tmp/fastcgi;
                uwsgi_temp_path \(dir)/tmp/uwsgi;
                scgi_temp_path \(dir)/tmp/scgi;
                include \(dir)/myapp.conf;
            }

            """)
        let command = (network?.prefix ?? []) + [nginx, "-p", dir, "-e", errorLog, "-c", dir + "/nginx.conf", "-g", "daemon off;"]
        child = Child(command[0], Array(command.dropFirst()), log: dir + "/stderr.log")
        let listening: @Sendable () -> Bool = {
            eventually(10) {
                if case .success(let fd) = connectTo(.tcp(port)) {
                    close(fd)
                    return true
                }
                return false
            }
        }
        try #require(network?.perform(listening) ?? listening(), "nginx did not start: \(child.log)")
    }

    /// Lines of nginx's error log containing `text`.
    func errors(_ text: String) -> [String] {
        ((try? String(contentsOfFile: errorLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init).filter {
            $0.contains(text)
        }
    }

    /// Graceful stop (QUIT), then whatever it takes.
    func stop() { child.stop(SIGQUIT, grace: 10) }
}
