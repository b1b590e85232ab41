import BatonProtocol
import Glibc

/// Messages to a supervisor over `NOTIFY_SOCKET`, in the systemd
/// `sd_notify` format.
///
/// `NOTIFY_SOCKET` names a unix datagram socket: an absolute path, or an
/// abstract name written with a leading `@`. Each function sends one
/// datagram and returns whether it sent one: nothing is sent, and `false`
/// returned, when `NOTIFY_SOCKET` is unset or empty, so an app may call them
/// unconditionally.
///
/// ```swift
/// try Notify.ready()                    // once the server accepts
/// try Notify.status("draining 3 connections")
/// try Notify.stopping()                 // when a graceful stop begins
/// ```
public enum Notify {
    /// Sends `READY=1`: the app accepts connections. Send it only once every
    /// listener is being served; a supervisor may then retire the previous
    /// generation.
    /// - Parameters:
    ///   - status: A `STATUS=` line to send along, if any.
    ///   - socket: The socket's name; by default `NOTIFY_SOCKET`.
    /// - Returns: Whether a message was sent.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/notifyFailed``.
    @discardableResult
    public static func ready(status: String? = nil, to socket: String? = Notify.socketName) throws(ListenError)
        -> Bool
    {
        var message = "READY=1"
        if let status { message += "\nSTATUS=\(self.oneLine(status))" }
        return try self.send(message, to: socket)
    }

    /// Sends `STATUS=...`, a one-line description of the app's state.
    /// - Parameters:
    ///   - text: The status; line breaks are replaced by spaces.
    ///   - socket: The socket's name; by default `NOTIFY_SOCKET`.
    /// - Returns: Whether a message was sent.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/notifyFailed``.
    @discardableResult
    public static func status(_ text: String, to socket: String? = Notify.socketName) throws(ListenError) -> Bool {
        try self.send("STATUS=\(self.oneLine(text))", to: socket)
    }

    /// Sends `STOPPING=1`: the app has begun a graceful stop.
    /// - Parameter socket: The socket's name; by default `NOTIFY_SOCKET`.
    /// - Returns: Whether a message was sent.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/notifyFailed``.
    @discardableResult
    public static func stopping(to socket: String? = Notify.socketName) throws(ListenError) -> Bool {
        try self.send("STOPPING=1", to: socket)
    }

    /// Sends `message` (newline-separated `KEY=VALUE` lines) as one datagram.
    /// - Parameters:
    ///   - message: The datagram's text.
    ///   - socket: The socket's name: an absolute path or `@abstract-name`.
    ///     By default `NOTIFY_SOCKET`; nil or empty sends nothing.
    /// - Returns: Whether a message was sent.
    /// - Throws: ``ListenError`` with code ``ListenError/Code/notifyFailed``
    ///   when the name is not a path or `@name`, or sending fails.
    @discardableResult
    public static func send(_ message: String, to socket: String? = Notify.socketName) throws(ListenError) -> Bool {
        guard let socket, !socket.isEmpty else { return false }
        switch Notifier.send(message, to: socket) {
        case .success:
            return true
        case .failure(.badName):
            throw ListenError(
                .notifyFailed,
                "NOTIFY_SOCKET=\"\(socket)\" is neither an absolute path nor an abstract name starting with @"
            )
        case .failure(.badAddress):
            throw ListenError(.notifyFailed, "NOTIFY_SOCKET is empty, holds a NUL byte or is longer than \(UnixAddress.maxBytes) bytes")
        case .failure(.system("socket", let code)):
            throw ListenError(.notifyFailed, "cannot create a socket to notify \(socket)", systemError: code)
        case .failure(.system(_, let code)):
            throw ListenError(.notifyFailed, "sending \"\(message)\" to \(socket) failed", systemError: code)
        }
    }

    /// `NOTIFY_SOCKET` as it is now in this process's environment.
    public static var socketName: String? {
        getenv(EnvironmentKey.notifySocket).map { String(cString: $0) }
    }

    private static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
