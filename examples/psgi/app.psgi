# A small PSGI app for Baton's examples and tests (Starman, plackup, any PSGI server).
#
#   GET /             "RELEASE gen=G pid=P"
#   GET /slow?ms=N    the same, after N milliseconds (at most 60000)
#   GET /health       "ok"
#
# RELEASE is $ENV{APP_RELEASE} if set, else the name of the directory the server
# loaded this file from, symlinks resolved: `current/app.psgi` answers with the
# release `current` points at (releases/v1 and v2 link to this one file). G is the generation the supervisor gave us
# (SERVER_STARTER_GENERATION, set by baton and by start_server).
use strict;
use warnings;
use Cwd ();
use File::Basename ();
use Time::HiRes ();

my $release = $ENV{APP_RELEASE}
    || File::Basename::basename(Cwd::abs_path(File::Basename::dirname(__FILE__)));

sub answer {
    my ($status, $body) = @_;
    return [$status, ['Content-Type' => 'text/plain', 'Content-Length' => length $body], [$body]];
}

my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO} || '/';
    my $generation = $ENV{SERVER_STARTER_GENERATION} // '-';
    my $line = "$release gen=$generation pid=$$\n";
    if ($path eq '/') {
        return answer(200, $line);
    }
    if ($path eq '/slow') {
        my ($ms) = ($env->{QUERY_STRING} || '') =~ /(?:^|&)ms=(\d+)/;
        $ms = 1000 unless defined $ms;
        $ms = 60000 if $ms > 60000;
        # A signal (Starman's workers get HUP to finish up) cuts a sleep short: sleep to the deadline.
        my $deadline = Time::HiRes::time() + $ms / 1000;
        while ((my $left = $deadline - Time::HiRes::time()) > 0) {
            Time::HiRes::sleep($left);
        }
        return answer(200, $line);
    }
    if ($path eq '/health') {
        return answer(200, "ok\n");
    }
    return answer(404, "not found\n");
};

$app;
