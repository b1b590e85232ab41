import BatonListen
import Glibc
import Testing

/// `Notify` against real datagram sockets, path and abstract.
@Suite struct NotifyTests {
    @Test func unsetSocketSendsNothing() throws {
        #expect(try Notify.ready(to: nil) == false)
        #expect(try Notify.send("READY=1", to: "") == false)
    }

    @Test func readyReachesAPathSocketWithOurPid() throws {
        let directory = try TestSockets.temporaryDirectory()
        defer { TestSockets.removeDirectory(directory) }
        let path = directory + "/notify"
        let receiver = try TestSockets.notifyReceiver(name: path)
        defer { close(receiver) }
        #expect(try Notify.ready(to: path))
        let message = try #require(try TestSockets.receive(receiver, timeoutMilliseconds: 2000))
        #expect(message.text == "READY=1")
        #expect(message.pid == getpid())
    }

    @Test func abstractNamesWork() throws {
        let name = "@baton-notify-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let receiver = try TestSockets.notifyReceiver(name: name)
        defer { close(receiver) }
        #expect(try Notify.ready(status: "serving\n2 sockets", to: name))
        #expect(try TestSockets.receive(receiver, timeoutMilliseconds: 2000)?.text == "READY=1\nSTATUS=serving 2 sockets")
        #expect(try Notify.status("draining", to: name))
        #expect(try TestSockets.receive(receiver, timeoutMilliseconds: 2000)?.text == "STATUS=draining")
        #expect(try Notify.stopping(to: name))
        #expect(try TestSockets.receive(receiver, timeoutMilliseconds: 2000)?.text == "STOPPING=1")
    }

    @Test(arguments: ["relative/notify", "notify", "@", "/" + String(repeating: "n", count: 120)])
    func malformedSocketNames(_ name: String) {
        do {
            _ = try Notify.ready(to: name)
            Issue.record("expected an error for \(name)")
        } catch {
            #expect(error.code == .notifyFailed)
        }
    }

    @Test func missingSocketIsAnError() throws {
        let directory = try TestSockets.temporaryDirectory()
        defer { TestSockets.removeDirectory(directory) }
        do {
            _ = try Notify.ready(to: directory + "/nobody-here")
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .notifyFailed)
            #expect(error.systemError == ENOENT)
        }
    }
}
