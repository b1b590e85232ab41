// swift-tools-version:6.0
import PackageDescription

// The supervisor (`baton`) links neither Foundation nor SwiftNIO and is linked
// statically against the Swift runtime, so that it idles in a few megabytes.
let staticStdlib: [LinkerSetting] = [.unsafeFlags(["-static-stdlib"])]
/// The supervisor's modules use neither regexes nor Swift concurrency: built
/// without their implicit imports, the binaries leave out `_StringProcessing`,
/// `_RegexParser` and `_Concurrency` (about 2 MB of code; packaging/results/rss.md).
let lean: [SwiftSetting] = [
    .unsafeFlags([
        "-Xfrontend", "-disable-implicit-string-processing-module-import", "-Xfrontend",
        "-disable-implicit-concurrency-module-import",
    ])
]
/// What both supervisor executables (`baton`, `start_server`) link.
let supervisor: [Target.Dependency] = ["BatonCore", "BatonControl", "BatonSystem", "CBatonShims"]
/// SwiftNIO's event loops and sockets, for the app-side library.
let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
]
/// Hummingbird and the HTTP/1 pieces BatonHummingbird builds its server from.
let http: [Target.Dependency] = [
    .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdCore", package: "hummingbird"),
    .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOExtras", package: "swift-nio-extras"),
]
/// Graceful shutdown on signals, and logging.
let lifecycle: [Target.Dependency] = [
    .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
    .product(name: "UnixSignals", package: "swift-service-lifecycle"), .product(name: "Logging", package: "swift-log"),
]

let package = Package(
    name: "baton",
    products: [
        .executable(name: "baton", targets: ["baton"]),
        .executable(name: "start_server", targets: ["start_server"]),
        .library(name: "BatonListen", targets: ["BatonListen"]),
        .library(name: "BatonNIO", targets: ["BatonNIO"]),
        .library(name: "BatonHummingbird", targets: ["BatonHummingbird"]),
        .executable(name: "baton-demo", targets: ["baton-demo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        // MARK: Shared by the supervisor and the apps
        // The conventions between a supervisor and its generations: variable
        // names, the SERVER_STARTER_PORT format, notify messages, unix addresses.
        .target(name: "BatonProtocol"),

        // MARK: The supervisor
        .target(name: "CBatonShims"),
        .target(name: "BatonCore", dependencies: ["BatonProtocol"], swiftSettings: lean),
        .target(name: "BatonControl", dependencies: ["BatonCore", "BatonProtocol"], swiftSettings: lean),
        .target(
            name: "BatonSystem", dependencies: ["BatonCore", "BatonControl", "BatonProtocol", "CBatonShims"], swiftSettings: lean),
        .executableTarget(name: "baton", dependencies: supervisor, swiftSettings: lean, linkerSettings: staticStdlib),
        .executableTarget(name: "start_server", dependencies: supervisor, swiftSettings: lean, linkerSettings: staticStdlib),
        .executableTarget(name: "baton-testapp", dependencies: ["BatonProtocol", "CBatonShims"]),

        // MARK: The app-side library
        .target(name: "BatonListen", dependencies: ["BatonProtocol"]),
        .target(name: "BatonNIO", dependencies: ["BatonListen"] + nio),
        .target(name: "BatonHummingbird", dependencies: ["BatonListen", "BatonNIO"] + nio + http + lifecycle),
        .executableTarget(
            name: "baton-demo",
            dependencies: [
                "BatonListen", "BatonHummingbird",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Tests
        // The helpers every test target shares: processes, scratch
        // directories, an HTTP client, load generators, peers.
        .target(name: "BatonTestSupport", dependencies: ["BatonProtocol", "CBatonShims"], path: "Tests/BatonTestSupport"),
        .testTarget(name: "BatonCoreTests", dependencies: ["BatonCore", "BatonProtocol"]),
        .testTarget(name: "BatonControlTests", dependencies: ["BatonControl", "BatonCore"]),
        .testTarget(name: "BatonListenTests", dependencies: ["BatonListen", "BatonTestSupport"]),
        .testTarget(name: "BatonDemoTests", dependencies: ["BatonListen", "BatonTestSupport"]),
        .testTarget(name: "BatonIntegrationTests", dependencies: ["BatonCore", "BatonProtocol", "CBatonShims", "BatonTestSupport"]),
        .testTarget(name: "ClassicStackTests", dependencies: ["CBatonShims", "BatonTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
