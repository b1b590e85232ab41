import BatonHummingbird
import BatonListen
import Glibc
import Hummingbird
import Logging
import Mustache

/// `baton-demo`: a small Hummingbird app that shows which release,
/// generation and process answered, for trying zero-downtime restarts.
///
/// Routes: `/` renders the `page` template; `/slow?ms=N` renders it after N
/// milliseconds (default 1000); `/health` answers `ok`.
///
/// Templates are read once, at start, from `$BATON_RELEASE_DIR/templates`
/// (or `./templates` when it is unset) and kept in memory: editing them on
/// disk changes nothing until the next generation starts.
@main
struct Demo {
    static let usage = """
        usage: baton-demo [--bind HOST:PORT]

        Serves the sockets passed by a supervisor (LISTEN_FDS or SERVER_STARTER_PORT);
        with none, binds --bind itself (default 127.0.0.1:8080).
        Templates come from $BATON_RELEASE_DIR/templates, else ./templates.
        Routes: /  /slow?ms=N  /health
        """

    static func main() async {
        var logger = Logger(label: "baton-demo")
        if let level = getenv("LOG_LEVEL").flatMap({ Logger.Level(rawValue: String(cString: $0)) }) {
            logger.logLevel = level
        }
        let options: Options
        do {
            options = try Options(arguments: Array(CommandLine.arguments.dropFirst()))
        } catch {
            fail(error.message + "\n" + usage, exitCode: 64)
        }
        if options.help {
            print(usage)
            return
        }
        do {
            try await run(options: options, logger: logger)
        } catch let error as ListenError {
            fail(error.description, exitCode: 1)
        } catch let error as StartupError {
            fail(error.message, exitCode: 1)
        } catch {
            fail("\(error)", exitCode: 1)
        }
    }

    static func run(options: Options, logger: Logger) async throws {
        // Check the inherited descriptors first, before anything else opens
        // one: a descriptor the supervisor did not pass would be taken by the
        // next open() and could pass for it.
        let listeners = try Listeners.inheritedOrBind(options.bind)
        let environment = BatonEnvironment.current
        let releaseDirectory = environment.releaseDirectory ?? currentDirectory()
        let templates = try await Templates.load(from: releaseDirectory + "/templates")
        let info = PageInfo(
            release: environment.releaseName ?? lastComponent(of: releaseDirectory),
            generation: environment.generation.map(String.init) ?? "standalone",
            pid: String(getpid())
        )
        logger.info(
            "baton-demo starting",
            metadata: [
                "release": .string(info.release), "generation": .string(info.generation), "pid": .string(info.pid),
                "listeners": .string(listeners.map(\.description).joined(separator: ", ")),
            ]
        )
        let router = Router()
        router.get("/") { _, _ in
            templates.page(info, slowMilliseconds: nil)
        }
        router.get("/slow") { request, _ in
            let text = request.uri.queryParameters["ms"].map(String.init) ?? "1000"
            guard let milliseconds = Int(text), (0...600_000).contains(milliseconds) else {
                throw HTTPError(.badRequest, message: "ms must be a whole number of milliseconds from 0 to 600000")
            }
            try await Task.sleep(for: .milliseconds(milliseconds))
            return templates.page(info, slowMilliseconds: milliseconds)
        }
        // A release can declare itself broken for the health probe: a file
        // `health-status` in the release directory holding an HTTP status
        // (read once at start, like the templates).
        let healthStatus = readHealthStatus(releaseDirectory + "/health-status")
        router.get("/health") { _, _ -> Response in
            let ok = healthStatus == 200
            let body = ok ? "ok\n" : "unhealthy: this release's health-status file says \(healthStatus)\n"
            return Response(
                status: HTTPResponse.Status(code: healthStatus), headers: [.contentType: "text/plain"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
        }
        let app = BatonApplication(router: router, listeners: listeners, logger: logger)
        try await app.runService()
    }

    /// The status in a release's `health-status` file, or 200.
    static func readHealthStatus(_ path: String) -> Int {
        guard let file = fopen(path, "r") else { return 200 }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 16)
        guard fgets(&line, Int32(line.count), file) != nil else { return 200 }
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let code = Int(text.filter { !$0.isWhitespace }), (100...599).contains(code) else { return 200 }
        return code
    }

    static func fail(_ message: String, exitCode: Int32) -> Never {
        var bytes = Array("baton-demo: \(message)\n".utf8)
        _ = write(2, &bytes, bytes.count)
        exit(exitCode)
    }
}

/// The command line.
struct Options {
    var bind: ListenAddress = .host("127.0.0.1", port: 8080)
    var help = false

    init(arguments: [String]) throws(ListenError) {
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            switch argument {
            case "-h", "--help":
                self.help = true
            case "--bind":
                guard let value = remaining.popFirst() else {
                    throw ListenError(.invalidAddress, "--bind needs an address, e.g. 127.0.0.1:8080")
                }
                self.bind = try ListenAddress(parsing: value)
            default:
                if argument.hasPrefix("--bind=") {
                    self.bind = try ListenAddress(parsing: String(argument.dropFirst("--bind=".count)))
                } else {
                    throw ListenError(.invalidAddress, "unknown argument \"\(argument)\"")
                }
            }
        }
    }
}

/// What a page shows.
struct PageInfo: Sendable {
    var release: String
    var generation: String
    var pid: String
}

/// The values a template renders.
struct PageContext {
    var release: String
    var generation: String
    var pid: String
    var slow: Bool
    var slowMilliseconds: Int
}

/// A problem found before serving.
struct StartupError: Error {
    var message: String
}

/// The templates, parsed once at start.
struct Templates: Sendable {
    let library: MustacheLibrary

    static func load(from directory: String) async throws -> Templates {
        var status = stat()
        guard stat(directory, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else {
            throw StartupError(message: "no templates directory at \(directory)")
        }
        let library: MustacheLibrary
        do {
            library = try await MustacheLibrary(directory: directory)
        } catch let error as MustacheLibrary.ParserError {
            throw StartupError(
                message: "template \(directory)/\(error.filename) line \(error.context.lineNumber): \(error.error)"
            )
        }
        guard library.getTemplate(named: "page") != nil else {
            throw StartupError(message: "no page.mustache in \(directory)")
        }
        return Templates(library: library)
    }

    func page(_ info: PageInfo, slowMilliseconds: Int?) -> Response {
        let context = PageContext(
            release: info.release,
            generation: info.generation,
            pid: info.pid,
            slow: slowMilliseconds != nil,
            slowMilliseconds: slowMilliseconds ?? 0
        )
        let html = self.library.render(context, withTemplate: "page") ?? ""
        return Response(
            status: .ok,
            headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: html))
        )
    }
}

/// The working directory, or "." when it cannot be read.
func currentDirectory() -> String {
    guard let path = getcwd(nil, 0) else { return "." }
    defer { free(path) }
    return String(cString: path)
}

/// The last path component, e.g. `v1` for `/srv/releases/v1`.
func lastComponent(of path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}
