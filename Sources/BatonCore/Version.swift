/// Baton's version: the one `baton --version` prints, `status` reports and
/// the Debian package is built with.
public let batonVersion = "0.3.0"
