import Foundation
import Glibc

/// A scratch directory for one test, removed at the end unless BATON_TEST_KEEP is set.
public final class Scratch: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "test") {
        path = NSTemporaryDirectory() + "baton-\(label)-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        // nginx's and Varnish's workers, and apps run as other users, must get in.
        chmod(path, 0o755)
    }

    deinit {
        if ProcessInfo.processInfo.environment["BATON_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: path)
        } else {
            print("kept \(path)")
        }
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func write(_ name: String, _ text: String) {
        _ = FileManager.default.createFile(atPath: file(name), contents: Data(text.utf8))
    }

    public func read(_ name: String) -> String { (try? String(contentsOfFile: file(name), encoding: .utf8)) ?? "" }

    /// A testapp release directory with its switches in `testapp.args`.
    @discardableResult
    public func release(_ name: String, args: String = "") -> String {
        let dir = path + "/releases/" + name
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        write("releases/\(name)/testapp.args", args)
        return dir
    }

    /// Points the symlink `link` at `target` (a path, or the name of a release), atomically.
    public func point(_ link: String = "current", to target: String) {
        let tmp = file("." + link + ".tmp")
        unlink(tmp)
        symlink(target.hasPrefix("/") ? target : path + "/releases/" + target, tmp)
        rename(tmp, file(link))
    }

    /// The name of the release the symlink `link` points at, if it points
    /// into releases/ (else its target as it is).
    public func pointed(_ link: String = "current") -> String? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: file(link)) else { return nil }
        let prefix = path + "/releases/"
        return target.hasPrefix(prefix) ? String(target.dropFirst(prefix.count)) : target
    }
}
