import BatonCore
import Glibc
import Testing

@Suite struct ParsingTests {
    @Test(arguments: [
        ("127.0.0.1:8080", ListenAddress.tcp(host: "127.0.0.1", port: 8080)),
        ("[::1]:8080", .tcp(host: "::1", port: 8080)),
        ("0.0.0.0:80", .tcp(host: "0.0.0.0", port: 80)),
        ("8080", .tcp(host: "127.0.0.1", port: 8080)),
        ("localhost:0", .tcp(host: "localhost", port: 0)),
        ("unix:/run/app.sock", .unix(path: "/run/app.sock")),
        ("udp:127.0.0.1:8125", .udp(host: "127.0.0.1", port: 8125)),
        ("udp:[::1]:8125", .udp(host: "::1", port: 8125)),
        ("udp:8125", .udp(host: "127.0.0.1", port: 8125)),
    ])
    func listenAddresses(text: String, expected: ListenAddress) throws {
        #expect(try ListenAddress(parsing: text) == expected)
    }

    @Test(arguments: [
        "", "65536", "127.0.0.1:", "127.0.0.1:http", ":8080", "::1:8080", "[::1]8080", "[127.0.0.1]:80",
        "unix:", "/tmp/app.sock", "-1", "8080x", "unix:/" + String(repeating: "a", count: 107),
        "udp:", "udp:unix:/a.sock", "udp:/a.sock", "udp:127.0.0.1:", "udp:99999",
    ])
    func badListenAddresses(text: String) {
        #expect(throws: BatonError.self) { try ListenAddress(parsing: text) }
        do {
            _ = try ListenAddress(parsing: text)
        } catch {
            #expect(error.code == .usage)
            #expect(error.message.contains("--listen"))
        }
    }

    @Test func serverStarterForms() throws {
        #expect(try ListenAddress(parsing: "[::1]:8080").description == "[::1]:8080")
        #expect(try ListenAddress(parsing: "8080").description == "127.0.0.1:8080")
        #expect(try ListenAddress(parsing: "unix:/a.sock").description == "/a.sock")
        // UDP: named so in messages; Server::Starter's key has no "u".
        let udp = try ListenAddress(parsing: "udp:[::1]:8125")
        #expect(udp.description == "udp:[::1]:8125")
        #expect(udp.notation == "udp:[::1]:8125")
        #expect(try ListenAddress(parsing: udp.notation) == udp)
        #expect(udp.serverStarterKey == "[::1]:8125")
        #expect(try ListenAddress(parsing: "127.0.0.1:8080").serverStarterKey == "127.0.0.1:8080")
    }

    @Test func durations() throws {
        #expect(try OptionParsing.duration("500ms", option: "--x") == .milliseconds(500))
        #expect(try OptionParsing.duration("2s", option: "--x") == .seconds(2))
        #expect(try OptionParsing.duration("1.5s", option: "--x") == .milliseconds(1500))
        #expect(try OptionParsing.duration("3", option: "--x") == .seconds(3))
        #expect(try OptionParsing.duration("2m", option: "--x") == .seconds(120))
        #expect(try OptionParsing.duration("0", option: "--x") == .zero)
        for bad in ["", "s", "-1", "1x", "1e9", "abc", "1.2.3s", "99999999999"] {
            #expect(throws: BatonError.self) { try OptionParsing.duration(bad, option: "--settle") }
        }
    }

    @Test func signals() throws {
        #expect(try OptionParsing.signal("QUIT", option: "--s") == SIGQUIT)
        #expect(try OptionParsing.signal("sigterm", option: "--s") == SIGTERM)
        #expect(try OptionParsing.signal("15", option: "--s") == SIGTERM)
        for bad in ["", "FOO", "0", "99", "SIG"] {
            #expect(throws: BatonError.self) { try OptionParsing.signal(bad, option: "--signal-on-hup") }
        }
    }

    @Test func commandLine() throws {
        let specs = [OptionSpec("listen", value: "A", ""), OptionSpec("help", "")]
        let p = try ParsedOptions(["--listen", "1", "--listen=2", "--", "app", "--listen", "x"], specs: specs, command: "t")
        #expect(p.all("listen") == ["1", "2"])
        #expect(p.rest == ["app", "--listen", "x"])
        let q = try ParsedOptions(["--help", "app", "-v"], specs: specs, command: "t")
        #expect(q.has("help") && q.rest == ["app", "-v"])
        #expect(throws: BatonError.self) { try ParsedOptions(["--nope"], specs: specs, command: "t") }
        #expect(throws: BatonError.self) { try ParsedOptions(["--listen"], specs: specs, command: "t") }
        #expect(throws: BatonError.self) { try ParsedOptions(["--help=1"], specs: specs, command: "t") }
    }
}
