/// The format of `SERVER_STARTER_PORT`: `ADDRESS=FD` entries joined by `;`,
/// such as `127.0.0.1:8080=3;/run/app.sock=4`. The address part is the text
/// the operator gave (`8080`, `127.0.0.1:8080`, `u8125` for UDP, a path).
public enum ServerStarterPort {
    /// One entry: the address as written and the descriptor number.
    public struct Entry: Sendable, Hashable {
        /// The address part, before the last `=`.
        public var key: String
        /// The descriptor part, after the last `=`, as written.
        public var descriptor: String
    }

    /// Why a value could not be split.
    public enum Problem: Error, Sendable, Hashable {
        /// The value is empty.
        case empty
        /// An entry between two `;` is empty.
        case emptyEntry
        /// An entry has no `=FD`.
        case missingDescriptor(String)
    }

    /// The value for `entries`: `key=fd` joined by `;`.
    public static func format(_ entries: [(key: String, fd: Int32)]) -> String {
        entries.map { "\($0.key)=\($0.fd)" }.joined(separator: ";")
    }

    /// Splits a value into its entries (the descriptor is split at the last `=`).
    public static func split(_ text: String) -> Result<[Entry], Problem> {
        guard !text.isEmpty else { return .failure(.empty) }
        var entries: [Entry] = []
        for part in text.split(separator: ";", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { return .failure(.emptyEntry) }
            guard let equals = part.lastIndex(of: "=") else { return .failure(.missingDescriptor(String(part))) }
            entries.append(Entry(key: String(part[..<equals]), descriptor: String(part[part.index(after: equals)...])))
        }
        return .success(entries)
    }
}
