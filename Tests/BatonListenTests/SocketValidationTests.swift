import BatonListen
import Glibc
import Testing

/// `Listeners.validate` and `Listeners.inherited(environment:)` on real
/// descriptors: listening sockets of each family, and every kind of wrong one.
@Suite struct SocketValidationTests {
    func expectCode(
        _ code: ListenError.Code,
        _ declared: [DeclaredListener],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        do {
            let listeners = try Listeners.validate(declared)
            Issue.record("expected \(code), got \(listeners)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func inheritedIPv4ListenerThroughServerStarterPort() throws {
        let (fd, port) = try TestSockets.tcpListener(backlog: 77)
        defer { close(fd) }
        #expect(!TestSockets.isCloseOnExec(fd))
        let listeners = try Listeners.inherited(environment: ["SERVER_STARTER_PORT": "127.0.0.1:\(port)=\(fd)"])
        #expect(listeners.count == 1)
        let listener = try #require(listeners.first)
        #expect(listener.descriptor == fd)
        #expect(listener.family == .ipv4)
        #expect(listener.origin == .inherited)
        #expect(listener.port == port)
        #expect(listener.localAddress == "127.0.0.1:\(port)")
        #expect(listener.declaredAddress == .host("127.0.0.1", port: port))
        #expect(listener.backlog == 77)
        #expect(TestSockets.isCloseOnExec(fd))
        #expect(listener.description.contains("inherited fd \(fd)"))
    }

    @Test func inheritedIPv6AndUnixListeners() throws {
        let directory = try TestSockets.temporaryDirectory()
        defer { TestSockets.removeDirectory(directory) }
        let path = directory + "/app.sock"
        let (v6, port) = try TestSockets.tcpListener(ipv6: true)
        defer { close(v6) }
        let unix = try TestSockets.unixListener(path: path)
        defer { close(unix) }
        let listeners = try Listeners.inherited(environment: [
            "SERVER_STARTER_PORT": "[::1]:\(port)=\(v6);\(path)=\(unix)"
        ])
        #expect(listeners.map(\.family) == [.ipv6, .unix])
        #expect(listeners[0].localAddress == "[::1]:\(port)")
        #expect(listeners[1].localAddress == path)
        #expect(listeners[1].port == nil)
        #expect(listeners[1].backlog == nil)
        #expect(TestSockets.isCloseOnExec(v6) && TestSockets.isCloseOnExec(unix))
    }

    @Test func barePortMatchesAnyIPFamily() throws {
        let (fd, port) = try TestSockets.tcpListener()
        defer { close(fd) }
        let listeners = try Listeners.inherited(environment: ["SERVER_STARTER_PORT": "\(port)=\(fd)"])
        #expect(listeners.first?.declaredAddress == .port(port))
    }

    @Test func validateKeepsNamesAndOrder() throws {
        let (a, _) = try TestSockets.tcpListener()
        let (b, _) = try TestSockets.tcpListener()
        defer {
            close(a)
            close(b)
        }
        let listeners = try Listeners.validate([
            DeclaredListener(descriptor: b, name: "baton-health"), DeclaredListener(descriptor: a, name: "http"),
        ])
        #expect(listeners.map(\.descriptor) == [b, a])
        #expect(listeners.map(\.name) == ["baton-health", "http"])
    }

    @Test func descriptorNotOpen() throws {
        // A number no test opens (closing one of ours could race with another test reusing it).
        let fd: Int32 = 60_000
        self.expectCode(.descriptorNotOpen, [DeclaredListener(descriptor: fd)])
        do {
            _ = try Listeners.inherited(environment: ["SERVER_STARTER_PORT": "127.0.0.1:1=\(fd)"])
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .descriptorNotOpen)
            #expect(error.message.contains("fd \(fd)"))
        }
    }

    @Test func pipeIsNotASocket() throws {
        var ends: [Int32] = [0, 0]
        _ = try TestSockets.check(pipe(&ends), "pipe")
        let read = try TestSockets.park(ends[0])
        defer {
            close(read)
            close(ends[1])
        }
        self.expectCode(.notASocket, [DeclaredListener(descriptor: read)])
    }

    @Test func datagramSocketIsNotAStreamListener() throws {
        let fd = try TestSockets.park(try TestSockets.check(socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0), "socket"))
        defer { close(fd) }
        self.expectCode(.notAStreamSocket, [DeclaredListener(descriptor: fd)])
    }

    @Test func boundButNotListening() throws {
        let (bound, _) = try TestSockets.tcpListener(listening: false)
        defer { close(bound) }
        self.expectCode(.notListening, [DeclaredListener(descriptor: bound)])
        let unbound = try TestSockets.park(try TestSockets.check(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0), "socket"))
        defer { close(unbound) }
        self.expectCode(.notListening, [DeclaredListener(descriptor: unbound)])
    }

    @Test func netlinkSocketIsRefused() throws {
        let fd = try TestSockets.park(
            try TestSockets.check(socket(AF_NETLINK, Int32(SOCK_RAW.rawValue), 0), "socket(AF_NETLINK)")
        )
        defer { close(fd) }
        // A netlink socket is not a stream socket: refused before its family is looked at.
        self.expectCode(.notAStreamSocket, [DeclaredListener(descriptor: fd)])
    }

    @Test func declaredAddressMustMatch() throws {
        let (v4, port) = try TestSockets.tcpListener()
        defer { close(v4) }
        self.expectCode(.addressMismatch, [DeclaredListener(descriptor: v4, address: .host("::1", port: port))])
        self.expectCode(.addressMismatch, [DeclaredListener(descriptor: v4, address: .host("127.0.0.1", port: port + 1))])
        self.expectCode(.addressMismatch, [DeclaredListener(descriptor: v4, address: .port(port + 1))])
        self.expectCode(.addressMismatch, [DeclaredListener(descriptor: v4, address: .unix(path: "/tmp/x.sock"))])
        // A host name is not resolved: only the port is compared.
        #expect(try Listeners.validate([DeclaredListener(descriptor: v4, address: .host("localhost", port: port))]).count == 1)
    }

    @Test func firstBadDescriptorStopsValidation() throws {
        let (good, _) = try TestSockets.tcpListener()
        defer { close(good) }
        let (bad, _) = try TestSockets.tcpListener(listening: false)
        defer { close(bad) }
        self.expectCode(.notListening, [DeclaredListener(descriptor: good), DeclaredListener(descriptor: bad)])
    }

    @Test func restoreBacklogPutsTheQueueLimitBack() throws {
        let (fd, port) = try TestSockets.tcpListener(backlog: 33)
        defer { close(fd) }
        let listener = try #require(try Listeners.inherited(environment: ["SERVER_STARTER_PORT": "\(port)=\(fd)"]).first)
        #expect(listener.backlog == 33)
        // A server adopting the socket calls listen() again, as SwiftNIO does with 128.
        _ = listen(fd, 128)
        #expect(TestSockets.backlog(fd) == 128)
        try listener.restoreBacklog()
        #expect(TestSockets.backlog(fd) == 33)
    }

    // MARK: Binding

    @Test func bindsAFallbackSocket() throws {
        let listener = try Listeners.bind(.host("127.0.0.1", port: 0), backlog: 50)
        defer { close(listener.descriptor) }
        #expect(listener.origin == .bound)
        #expect(listener.family == .ipv4)
        #expect((listener.port ?? 0) > 0)
        #expect(listener.backlog == 50)
        #expect(TestSockets.isCloseOnExec(listener.descriptor))
        #expect(listener.description.contains("bound fd"))
        // The port is taken now.
        do {
            let second = try Listeners.bind(.host("127.0.0.1", port: listener.port!))
            close(second.descriptor)
            Issue.record("binding a taken port succeeded")
        } catch {
            #expect(error.code == .bindFailed)
            #expect(error.systemError == EADDRINUSE)
        }
    }

    @Test func bindsIPv6AndUnixSockets() throws {
        let v6 = try Listeners.bind(.host("::1", port: 0))
        defer { close(v6.descriptor) }
        #expect(v6.family == .ipv6)
        #expect(v6.localAddress.hasPrefix("[::1]:"))

        let directory = try TestSockets.temporaryDirectory()
        defer { TestSockets.removeDirectory(directory) }
        let path = directory + "/dev.sock"
        let first = try Listeners.bind(.unix(path: path))
        #expect(first.family == .unix)
        #expect(first.localAddress == path)
        close(first.descriptor)
        // A stale socket file from an earlier run is replaced.
        let second = try Listeners.bind(.unix(path: path))
        close(second.descriptor)
        // A regular file is not.
        unlink(path)
        let file = open(path, O_CREAT | O_WRONLY, 0o600)
        close(file)
        #expect(throws: ListenError.self) { try Listeners.bind(.unix(path: path)) }
    }

    @Test func refusesAnOverlongUnixPath() {
        do {
            _ = try Listeners.bind(.unix(path: "/tmp/" + String(repeating: "x", count: 200)))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidAddress)
        }
    }
}
