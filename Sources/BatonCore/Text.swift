// Text helpers that the standard library's core has not: the supervisor is
// built without `_StringProcessing` (0.9 MB less code in every binary), which
// is where `contains(_:)` and `split(separator:)` with a string come from.

extension String {
    /// The parts between occurrences of "\n\n", empty ones left out: what
    /// `split(separator: "\n\n")` returns.
    func paragraphs() -> [Substring] {
        var parts: [Substring] = []
        var start = startIndex
        var i = startIndex
        while i < endIndex {
            let next = index(after: i)
            if self[i] == "\n", next < endIndex, self[next] == "\n" {
                if start < i { parts.append(self[start..<i]) }
                i = index(after: next)
                start = i
            } else {
                i = next
            }
        }
        if start < endIndex { parts.append(self[start...]) }
        return parts
    }
}

extension StringProtocol {
    /// Whether `other` occurs in this text, compared byte for byte in UTF-8
    /// (what `contains(_:)` with a string answers for the ASCII it is used on).
    public func includes(_ other: some StringProtocol) -> Bool {
        let text = Array(utf8)
        let needle = Array(other.utf8)
        guard let first = needle.first else { return true }
        guard text.count >= needle.count else { return false }
        for i in 0...(text.count - needle.count) where text[i] == first && text[i..<i + needle.count].elementsEqual(needle) {
            return true
        }
        return false
    }
}
