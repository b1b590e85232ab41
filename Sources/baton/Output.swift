import BatonControl
import BatonCore
import BatonSystem
import Glibc

/// Terminal-aware output: colour per stream, only on a terminal, never with NO_COLOR.
enum Out {
    static let colourOut = wantsColour(1)
    static let colourErr = wantsColour(2)

    static func wantsColour(_ fd: Int32) -> Bool {
        isatty(fd) == 1 && (Sys.getenv("NO_COLOR") ?? "").isEmpty && Sys.getenv("TERM") != "dumb"
    }

    static func line(_ text: String) { Sys.writeAll(1, (text + "\n").utf8) }
    static func error(_ text: String) { Sys.writeAll(2, (text + "\n").utf8) }

    static func paint(_ s: String, _ code: String, _ on: Bool) -> String { on ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
    static func green(_ s: String) -> String { paint(s, "32", colourOut) }
    static func red(_ s: String) -> String { paint(s, "31", colourErr) }
    static func redOut(_ s: String) -> String { paint(s, "31", colourOut) }
    static func dim(_ s: String) -> String { paint(s, "2", colourOut) }
}

/// What a client command prints, with `--json` or for people.
struct Printer {
    let json: Bool
    let program: String

    /// A step of an operation, or a progress line of the supervisor.
    func step(_ s: Operations.Step) {
        switch s {
        case .note(let text):
            if !json { Out.line("\(program): \(text)") }
        case .progress(let p):
            if json {
                Out.line(p.json.text)
            } else {
                var head = ""
                if let g = p.generation { head += "gen \(g) " }
                if let pid = p.pid { head += "pid \(pid) " }
                Out.line("  " + Out.dim(head) + p.message)
            }
        }
    }

    /// The final result; returns its exit code.
    func result(_ r: ControlResult, took: Duration? = nil, what: String = "") -> Int32 {
        if json {
            Out.line(r.json.text)
            return r.exitCode
        }
        for line in r.steps ?? [] { Out.error("\(program): \(line)") }
        if r.ok {
            var message = r.message
            if let took { message += " (\(what.isEmpty ? "" : what + " ")took \(took.preciseDescription))" }
            Out.line("\(program): " + Out.green(message))
        } else {
            if let output = r.output, !output.isEmpty {
                let whose = r.generation.map { "generation \($0)'s last lines of output" } ?? "the last lines"
                Out.error("\(program): \(whose) (\(r.logFile ?? "its output")):")
                for l in output { Out.error("  " + l) }
            }
            Out.error("\(program): " + Out.red(r.message))
        }
        return r.exitCode
    }
}

extension Duration {
    /// To the millisecond, thousands grouped: `1,027 ms`.
    var preciseDescription: String {
        let ms = milliseconds
        var digits = String(ms)
        var groups: [String] = []
        while digits.count > 3 {
            groups.insert(String(digits.suffix(3)), at: 0)
            digits = String(digits.dropLast(3))
        }
        groups.insert(digits, at: 0)
        return groups.joined(separator: ",") + " ms"
    }
}
