import BatonListen
import Testing

/// Random variable values never crash the parser: it returns declarations
/// that make sense or throws a `ListenError`.
@Suite struct FuzzTests {
    /// A small deterministic generator (SplitMix64), so that a failure can be replayed.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let alphabet: [String] =
        Array("0123456789012345:;=[]/@.-+ abx\u{0}\n\t\u{FF}é٣").map(String.init) + ["99999999999999999999"]

    static func randomText(_ generator: inout SplitMix64, maxLength: Int = 24) -> String {
        let length = Int.random(in: 0...maxLength, using: &generator)
        return (0..<length).map { _ in alphabet.randomElement(using: &generator)! }.joined()
    }

    /// Plausible-looking SERVER_STARTER_PORT values, so that deep paths are reached too.
    static func randomServerStarterPort(_ generator: inout SplitMix64) -> String {
        let count = Int.random(in: 0...4, using: &generator)
        return (0..<count).map { _ in
            let key = [
                "127.0.0.1:\(Int.random(in: 0...70000, using: &generator))", "[::1]:8080", "8080", "/tmp/a.sock",
                randomText(&generator, maxLength: 8),
            ].randomElement(using: &generator)!
            let fd = ["\(Int.random(in: -1...8, using: &generator))", randomText(&generator, maxLength: 3)]
                .randomElement(using: &generator)!
            return "\(key)=\(fd)"
        }.joined(separator: Bool.random(using: &generator) ? ";" : randomText(&generator, maxLength: 2))
    }

    @Test func randomEnvironmentsNeverCrash() {
        var generator = SplitMix64(state: 0xBA70_2026)
        var accepted = 0
        for _ in 0..<20_000 {
            var environment: [String: String] = [:]
            if Bool.random(using: &generator) {
                environment["LISTEN_FDS"] =
                    Bool.random(using: &generator) ? String(Int.random(in: -2...6, using: &generator)) : Self.randomText(&generator)
            }
            if Bool.random(using: &generator) {
                environment["LISTEN_PID"] = Bool.random(using: &generator) ? "4242" : Self.randomText(&generator)
            }
            if Bool.random(using: &generator) {
                environment["LISTEN_FDNAMES"] = Self.randomText(&generator)
            }
            if Bool.random(using: &generator) {
                environment["SERVER_STARTER_PORT"] =
                    Bool.random(using: &generator) ? Self.randomServerStarterPort(&generator) : Self.randomText(&generator, maxLength: 40)
            }
            do {
                let declared = try Listeners.declared(in: environment, processID: 4242)
                accepted += 1
                let descriptors = declared.map(\.descriptor)
                #expect(Set(descriptors).count == descriptors.count, "\(environment)")
                #expect(descriptors.allSatisfy { $0 >= 3 }, "\(environment)")
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
        // The generator must reach the accepting paths too, not only errors.
        #expect(accepted > 1_000)
    }

    @Test func randomAddressesNeverCrash() {
        var generator = SplitMix64(state: 0x5EED)
        for _ in 0..<20_000 {
            let text = Self.randomText(&generator, maxLength: 30)
            if let address = try? ListenAddress(parsing: text) {
                #expect(address.port.map { (0...65535).contains($0) } ?? true)
            }
            _ = try? ListenAddress(serverStarterKey: text)
        }
    }
}
