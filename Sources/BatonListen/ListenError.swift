import Glibc

/// An error found while reading the inherited listening sockets, binding a
/// fallback socket or notifying the supervisor.
///
/// Every error carries a ``Code`` to match on, a message for people that says
/// what was found and what to do about it, and the `errno` of the system call
/// that failed, when one did.
///
/// It mirrors BatonCore's `BatonError` in shape (a code, a message, an errno)
/// on purpose: the app-side library depends on nothing of the supervisor's.
public struct ListenError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of problem was found.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case malformedListenFDs
            case missingListenPID
            case malformedListenPID
            case listenPIDMismatch
            case malformedListenFDNames
            case fdNamesCountMismatch
            case malformedServerStarterPort
            case duplicateDescriptor
            case standardStreamDescriptor
            case inconsistentEnvironment
            case descriptorNotOpen
            case notASocket
            case notAStreamSocket
            case notListening
            case unsupportedFamily
            case addressMismatch
            case invalidAddress
            case bindFailed
            case notifyFailed
            case systemCallFailed
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// `LISTEN_FDS` is not a plain decimal count.
        public static let malformedListenFDs = Code(.malformedListenFDs)
        /// `LISTEN_FDS` is set but `LISTEN_PID` is not.
        public static let missingListenPID = Code(.missingListenPID)
        /// `LISTEN_PID` is not a plain positive decimal number.
        public static let malformedListenPID = Code(.malformedListenPID)
        /// `LISTEN_PID` names another process: the sockets were not meant for this one.
        public static let listenPIDMismatch = Code(.listenPIDMismatch)
        /// A name in `LISTEN_FDNAMES` is too long or holds control characters.
        public static let malformedListenFDNames = Code(.malformedListenFDNames)
        /// `LISTEN_FDNAMES` does not hold one name per descriptor of `LISTEN_FDS`.
        public static let fdNamesCountMismatch = Code(.fdNamesCountMismatch)
        /// `SERVER_STARTER_PORT` does not parse as `address=fd` entries joined by `;`.
        public static let malformedServerStarterPort = Code(.malformedServerStarterPort)
        /// The same descriptor is listed twice.
        public static let duplicateDescriptor = Code(.duplicateDescriptor)
        /// A listed descriptor is 0, 1 or 2 (standard input, output or error).
        public static let standardStreamDescriptor = Code(.standardStreamDescriptor)
        /// The variables contradict each other (counts or descriptors differ, a variable is missing its partner).
        public static let inconsistentEnvironment = Code(.inconsistentEnvironment)
        /// A listed descriptor is not open in this process.
        public static let descriptorNotOpen = Code(.descriptorNotOpen)
        /// A listed descriptor is open but is not a socket.
        public static let notASocket = Code(.notASocket)
        /// A listed descriptor is a socket but not a stream socket.
        public static let notAStreamSocket = Code(.notAStreamSocket)
        /// A listed descriptor is a stream socket that is not listening.
        public static let notListening = Code(.notListening)
        /// A listed descriptor is a socket of a family other than IPv4, IPv6 or unix.
        public static let unsupportedFamily = Code(.unsupportedFamily)
        /// A socket is not of the kind or port that `SERVER_STARTER_PORT` states.
        public static let addressMismatch = Code(.addressMismatch)
        /// An address to bind does not parse or does not resolve.
        public static let invalidAddress = Code(.invalidAddress)
        /// Binding or listening on a fallback address failed.
        public static let bindFailed = Code(.bindFailed)
        /// Sending a message to `NOTIFY_SOCKET` failed.
        public static let notifyFailed = Code(.notifyFailed)
        /// Another system call failed unexpectedly.
        public static let systemCallFailed = Code(.systemCallFailed)

        /// The code's name, e.g. `listenPIDMismatch`.
        public var description: String { self.base.rawValue }
    }

    /// What kind of problem was found.
    public let code: Code
    /// What was found and what to do about it, in plain words.
    public let message: String
    /// The `errno` of the system call that failed, if one did.
    public let systemError: Int32?

    /// Creates an error.
    /// - Parameters:
    ///   - code: What kind of problem was found.
    ///   - message: What was found and what to do about it.
    ///   - systemError: The `errno` of the failed system call, if any.
    public init(_ code: Code, _ message: String, systemError: Int32? = nil) {
        self.code = code
        self.message = message
        self.systemError = systemError
    }

    /// The message, followed by the system error's text when there is one.
    public var description: String {
        guard let systemError else { return self.message }
        return "\(self.message) (\(String(cString: strerror(systemError))))"
    }
}
