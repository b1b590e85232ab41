import BatonListen
import Testing

/// `Listeners.declared(in:processID:)`: the pure parsing of the
/// socket-passing variables, every malformed and inconsistent case included.
@Suite struct EnvironmentParsingTests {
    let pid: Int32 = 4242

    func declared(_ environment: [String: String]) throws(ListenError) -> [DeclaredListener] {
        try Listeners.declared(in: environment, processID: self.pid)
    }

    func expectCode(_ code: ListenError.Code, _ environment: [String: String], sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let result = try self.declared(environment)
            Issue.record("expected \(code), got \(result) for \(environment)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, "\(environment): \(error)", sourceLocation: sourceLocation)
            #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        }
    }

    // MARK: Nothing inherited

    @Test func emptyEnvironmentDeclaresNothing() throws {
        #expect(try self.declared([:]).isEmpty)
        #expect(try self.declared(["PATH": "/bin", "SERVER_STARTER_GENERATION": "3"]).isEmpty)
    }

    @Test func zeroListenFDsDeclaresNothing() throws {
        #expect(try self.declared(["LISTEN_FDS": "0", "LISTEN_PID": "4242"]).isEmpty)
        #expect(try self.declared(["LISTEN_FDS": "0", "LISTEN_PID": "4242", "LISTEN_FDNAMES": ""]).isEmpty)
    }

    // MARK: LISTEN_FDS

    @Test func listenFDsCountsFromThree() throws {
        let result = try self.declared(["LISTEN_FDS": "3", "LISTEN_PID": "4242"])
        #expect(result.map(\.descriptor) == [3, 4, 5])
        #expect(result.allSatisfy { $0.name == nil && $0.address == nil })
    }

    @Test func listenFDNamesNameEachDescriptor() throws {
        let result = try self.declared(["LISTEN_FDS": "3", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "http::baton-health"])
        #expect(result.map(\.name) == ["http", nil, "baton-health"])
    }

    @Test func singleEmptyNameIsNoName() throws {
        let result = try self.declared(["LISTEN_FDS": "1", "LISTEN_PID": "4242", "LISTEN_FDNAMES": ""])
        #expect(result == [DeclaredListener(descriptor: 3)])
    }

    @Test(arguments: ["", "abc", "-1", "+2", " 2", "2 ", "0x2", "1e3", "2.0", "4097", "99999999999999999999999", "٣"])
    func malformedListenFDs(_ value: String) {
        self.expectCode(.malformedListenFDs, ["LISTEN_FDS": value, "LISTEN_PID": "4242"])
    }

    @Test func listenFDsWithoutListenPID() {
        self.expectCode(.missingListenPID, ["LISTEN_FDS": "1"])
    }

    @Test(arguments: ["", "abc", "0", "-4242", "4242 ", "+4242", "99999999999"])
    func malformedListenPID(_ value: String) {
        self.expectCode(.malformedListenPID, ["LISTEN_FDS": "1", "LISTEN_PID": value])
    }

    @Test func wrongListenPID() {
        self.expectCode(.listenPIDMismatch, ["LISTEN_FDS": "1", "LISTEN_PID": "4243"])
        self.expectCode(.listenPIDMismatch, ["LISTEN_FDS": "0", "LISTEN_PID": "1"])
        self.expectCode(
            .listenPIDMismatch,
            ["LISTEN_FDS": "1", "LISTEN_PID": "1", "SERVER_STARTER_PORT": "127.0.0.1:8080=3"]
        )
    }

    @Test(arguments: [("2", "http"), ("2", "a:b:c"), ("1", "a:b"), ("3", "a:b"), ("0", "a")])
    func namesCountMismatch(_ count: String, _ names: String) {
        self.expectCode(.fdNamesCountMismatch, ["LISTEN_FDS": count, "LISTEN_PID": "4242", "LISTEN_FDNAMES": names])
    }

    @Test func malformedNames() {
        self.expectCode(.malformedListenFDNames, ["LISTEN_FDS": "1", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "a\nb"])
        self.expectCode(.malformedListenFDNames, ["LISTEN_FDS": "1", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "a\u{7F}"])
        self.expectCode(
            .malformedListenFDNames,
            ["LISTEN_FDS": "1", "LISTEN_PID": "4242", "LISTEN_FDNAMES": String(repeating: "n", count: 256)]
        )
    }

    @Test func partnerVariablesWithoutListenFDs() {
        self.expectCode(.inconsistentEnvironment, ["LISTEN_PID": "4242"])
        self.expectCode(.inconsistentEnvironment, ["LISTEN_FDNAMES": "http"])
        self.expectCode(.inconsistentEnvironment, ["LISTEN_PID": "4242", "SERVER_STARTER_PORT": "8080=3"])
    }

    // MARK: SERVER_STARTER_PORT

    @Test func serverStarterPortEntries() throws {
        let result = try self.declared(["SERVER_STARTER_PORT": "127.0.0.1:8080=3;[::1]:8080=4;/path/app.sock=5"])
        #expect(
            result == [
                DeclaredListener(descriptor: 3, address: .host("127.0.0.1", port: 8080)),
                DeclaredListener(descriptor: 4, address: .host("::1", port: 8080)),
                DeclaredListener(descriptor: 5, address: .unix(path: "/path/app.sock")),
            ]
        )
    }

    @Test func serverStarterPortForms() throws {
        #expect(try self.declared(["SERVER_STARTER_PORT": "8080=3"]) == [DeclaredListener(descriptor: 3, address: .port(8080))])
        #expect(
            try self.declared(["SERVER_STARTER_PORT": "localhost:80=7"])
                == [DeclaredListener(descriptor: 7, address: .host("localhost", port: 80))]
        )
        // Perl's start_server writes the key as given; an unbracketed IPv6 host parses greedily.
        #expect(
            try self.declared(["SERVER_STARTER_PORT": "::1:8080=3"])
                == [DeclaredListener(descriptor: 3, address: .host("::1", port: 8080))]
        )
        // Anything that is neither PORT nor HOST:PORT is a path; the last "=" separates the descriptor.
        #expect(
            try self.declared(["SERVER_STARTER_PORT": "app.sock=3;/tmp/a=b.sock=4"])
                == [
                    DeclaredListener(descriptor: 3, address: .unix(path: "app.sock")),
                    DeclaredListener(descriptor: 4, address: .unix(path: "/tmp/a=b.sock")),
                ]
        )
        // Descriptors need not start at 3 nor be in order.
        #expect(try self.declared(["SERVER_STARTER_PORT": "81=9;80=5"]).map(\.descriptor) == [9, 5])
    }

    @Test(arguments: [
        "", ";", "127.0.0.1:8080", "127.0.0.1:8080=", "=3", "127.0.0.1:8080=x", "127.0.0.1:8080=3;",
        ";127.0.0.1:8080=3", "127.0.0.1:8080=3;;8081=4", "127.0.0.1:99999=3", "[::1=3", "[::1]8080=3", "[]:80=3",
        "[::1]:=3", ":8080=3", "8080=-3", "8080=3 ", "8080= 3", "8080=+3", "99999=3", "8080=99999999999",
    ])
    func malformedServerStarterPort(_ value: String) {
        self.expectCode(.malformedServerStarterPort, ["SERVER_STARTER_PORT": value])
    }

    @Test(arguments: ["8080=0", "8080=1", "8080=2", "127.0.0.1:80=3;[::1]:80=2"])
    func standardStreamsAreRefused(_ value: String) {
        self.expectCode(.standardStreamDescriptor, ["SERVER_STARTER_PORT": value])
    }

    @Test func duplicateDescriptor() {
        self.expectCode(.duplicateDescriptor, ["SERVER_STARTER_PORT": "127.0.0.1:80=3;[::1]:80=3"])
    }

    // MARK: Both protocols

    @Test func bothAgreeAndMerge() throws {
        let result = try self.declared([
            "LISTEN_FDS": "3", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "v4:v6:sock",
            "SERVER_STARTER_PORT": "127.0.0.1:8080=3;[::1]:8080=4;/run/app.sock=5",
        ])
        #expect(
            result == [
                DeclaredListener(descriptor: 3, name: "v4", address: .host("127.0.0.1", port: 8080)),
                DeclaredListener(descriptor: 4, name: "v6", address: .host("::1", port: 8080)),
                DeclaredListener(descriptor: 5, name: "sock", address: .unix(path: "/run/app.sock")),
            ]
        )
    }

    @Test func bothAgreeInAnyEntryOrder() throws {
        let result = try self.declared([
            "LISTEN_FDS": "2", "LISTEN_PID": "4242", "SERVER_STARTER_PORT": "[::1]:8080=4;127.0.0.1:8080=3",
        ])
        #expect(result.map(\.descriptor) == [3, 4])
        #expect(result.map(\.address) == [.host("127.0.0.1", port: 8080), .host("::1", port: 8080)])
    }

    @Test func namedPrivateListenerMayBeMissingFromServerStarterPort() throws {
        let result = try self.declared([
            "LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "http:baton-health",
            "SERVER_STARTER_PORT": "127.0.0.1:8080=3",
        ])
        #expect(result[1] == DeclaredListener(descriptor: 4, name: "baton-health"))
    }

    @Test(arguments: [
        // More in SERVER_STARTER_PORT than in LISTEN_FDS.
        ["LISTEN_FDS": "1", "LISTEN_PID": "4242", "SERVER_STARTER_PORT": "127.0.0.1:8080=3;[::1]:8080=4"],
        // Fewer, and the extra descriptor is not named.
        ["LISTEN_FDS": "2", "LISTEN_PID": "4242", "SERVER_STARTER_PORT": "127.0.0.1:8080=3"],
        ["LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "http:", "SERVER_STARTER_PORT": "127.0.0.1:8080=3"],
        // A descriptor outside LISTEN_FDS's range.
        ["LISTEN_FDS": "1", "LISTEN_PID": "4242", "SERVER_STARTER_PORT": "127.0.0.1:8080=7"],
        ["LISTEN_FDS": "0", "LISTEN_PID": "4242", "SERVER_STARTER_PORT": "127.0.0.1:8080=3"],
    ])
    func countMismatchBetweenProtocols(_ environment: [String: String]) {
        self.expectCode(.inconsistentEnvironment, environment)
    }

    @Test func errorsDescribeThemselves() {
        do {
            _ = try self.declared(["LISTEN_FDS": "1", "LISTEN_PID": "1"])
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("LISTEN_PID=1"))
            #expect(error.description.contains("4242"))
            #expect(error.code.description == "listenPIDMismatch")
        }
    }
}

@Suite struct ListenAddressTests {
    @Test func parsesEveryForm() throws {
        #expect(try ListenAddress(parsing: "8080") == .port(8080))
        #expect(try ListenAddress(parsing: "127.0.0.1:8080") == .host("127.0.0.1", port: 8080))
        #expect(try ListenAddress(parsing: "localhost:0") == .host("localhost", port: 0))
        #expect(try ListenAddress(parsing: "[::1]:8080") == .host("::1", port: 8080))
        #expect(try ListenAddress(parsing: "/run/app.sock") == .unix(path: "/run/app.sock"))
        #expect(try ListenAddress(parsing: "unix:app.sock") == .unix(path: "app.sock"))
        #expect(try ListenAddress(parsing: "./app.sock") == .unix(path: "./app.sock"))
    }

    @Test(arguments: ["", "host", "::1:8080", "127.0.0.1:", ":8080", "127.0.0.1:65536", "[::1]", "[::1]:x", "unix:", "a:b:c"])
    func refusesMalformed(_ text: String) {
        #expect(throws: ListenError.self) { try ListenAddress(parsing: text) }
        do {
            _ = try ListenAddress(parsing: text)
        } catch {
            #expect(error.code == .invalidAddress)
        }
    }

    @Test func descriptionRoundTrips() throws {
        for text in ["8080", "127.0.0.1:8080", "[::1]:8080", "/run/app.sock", "localhost:1"] {
            let address = try ListenAddress(parsing: text)
            #expect(address.description == text)
            #expect(try ListenAddress(parsing: address.description) == address)
        }
        #expect(ListenAddress.port(80).port == 80)
        #expect(ListenAddress.unix(path: "/x").port == nil)
    }
}

@Suite struct BatonEnvironmentTests {
    @Test func readsGenerationAndRelease() {
        let environment = BatonEnvironment([
            "BATON_GENERATION": "7", "SERVER_STARTER_GENERATION": "6", "BATON_RELEASE_DIR": "/srv/app/releases/v2",
            "NOTIFY_SOCKET": "@baton", "SERVER_STARTER_PORT": "8080=3",
        ])
        #expect(environment.generation == 7)
        #expect(environment.releaseDirectory == "/srv/app/releases/v2")
        #expect(environment.releaseName == "v2")
        #expect(environment.notifySocket == "@baton")
        #expect(environment.passesSockets)
    }

    @Test func fallsBackToServerStarterGeneration() {
        #expect(BatonEnvironment(["SERVER_STARTER_GENERATION": "3"]).generation == 3)
        #expect(BatonEnvironment(["BATON_GENERATION": "x", "SERVER_STARTER_GENERATION": "3"]).generation == 3)
    }

    @Test func emptyOrMalformedValuesAreAbsent() {
        let environment = BatonEnvironment(["BATON_GENERATION": "-1", "BATON_RELEASE_DIR": "", "NOTIFY_SOCKET": ""])
        #expect(environment.generation == nil)
        #expect(environment.releaseDirectory == nil)
        #expect(environment.releaseName == nil)
        #expect(environment.notifySocket == nil)
        #expect(!environment.passesSockets)
        #expect(BatonEnvironment(["BATON_RELEASE_DIR": "/srv/v1/"]).releaseName == "v1")
    }
}
