import BatonCore
import BatonSystem
import Glibc

// Placeholder until the Server::Starter-compatible front end lands.
var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "__exec" { execHelper(Array(arguments.dropFirst())) }
Sys.writeAll(2, "start_server: not built yet\n".utf8)
exit(1)
