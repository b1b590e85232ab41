@_exported import BatonTestSupport

/// The demo tests' name for the shared socket helpers.
typealias Sockets = TestSockets
