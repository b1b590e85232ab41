import Testing

/// The classic stack for real: Starman under baton, our start_server and Perl's,
/// nginx and Varnish in front, the deploy hook. Every suite of this target is
/// nested here and runs one test at a time: they start servers under load and
/// measure failed requests, so they must not compete with each other for the
/// CPU. Each suite skips itself when its servers are not installed.
@Suite(.serialized) enum ClassicStack {}
