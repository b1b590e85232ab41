#!/usr/bin/perl
# The load of packaging/test-deb, in Perl with core modules only (the clean
# Debian root has no Python):
#
#   load.pl --port P [--workers 4] --stop-file F [--max-seconds 60] --dir D
#       Each worker sends GET / over a new connection, one after another, until
#       F exists (or --max-seconds passed), and logs each request it starts and
#       how it ended to D/worker-N. Then the totals, on one line:
#         load: requests=N ok=N failed=N pending=N generations=1,2 seconds=S
#       pending: requests started and not answered when the workers were
#       stopped (20 s after F appeared); failed: connection refused or reset,
#       a timeout (10 s), or any status but 200. generations: the gen=G the
#       answers carried, so the load provably spans the restarts.
#   load.pl --port P --probe
#       One request; prints the answer's body, exit 0 on a 200.
use strict;
use warnings;
use Getopt::Long qw(GetOptions);
use IO::Handle ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes qw(time sleep);

my %o = (workers => 4, 'max-seconds' => 60);
GetOptions(\%o, 'port=i', 'workers=i', 'stop-file=s', 'max-seconds=i', 'dir=s', 'probe') or exit 2;
die "load.pl: --port is needed\n" unless $o{port};

# One request: (1, body) on a 200, else (0, the reason).
sub request {
    my $answer = '';
    my $ok = eval {
        local $SIG{ALRM} = sub { die "timeout after 10 s\n" };
        alarm 10;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port}, Proto => 'tcp')
            or die "connect: $!\n";
        print {$s} "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" or die "send: $!\n";
        while (1) {
            my $n = sysread($s, my $chunk, 65536);
            die "read: $!\n" unless defined $n;
            last if $n == 0;
            $answer .= $chunk;
        }
        alarm 0;
        1;
    };
    alarm 0;
    unless ($ok) { chomp(my $e = $@); return (0, $e) }
    my ($status) = $answer =~ m{\AHTTP/1\.[01] (\d{3})};
    return (0, 'no HTTP status line in ' . length($answer) . ' bytes') unless defined $status;
    return (0, "status $status") unless $status == 200;
    my (undef, $body) = split /\r\n\r\n/, $answer, 2;
    return (1, $body // '');
}

if ($o{probe}) {
    my ($ok, $text) = request();
    print $text, ($text =~ /\n\z/ ? '' : "\n");
    exit($ok ? 0 : 1);
}

die "load.pl: --stop-file and --dir are needed\n" unless $o{'stop-file'} && $o{dir};
my $started = time;
my $deadline = $started + $o{'max-seconds'};
my @workers;
for my $n (1 .. $o{workers}) {
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open(my $log, '>', "$o{dir}/worker-$n") or die "$o{dir}/worker-$n: $!\n";
        $log->autoflush(1);
        while (!-e $o{'stop-file'} && time < $deadline) {
            print {$log} "S\n";
            my ($ok, $text) = request();
            if ($ok) {
                my ($generation) = $text =~ /gen=(\d+)/;
                print {$log} 'O ', $generation // '-', "\n";
            } else {
                $text =~ s/\s+/ /g;
                print {$log} "F $text\n";
            }
        }
        POSIX::_exit(0);
    }
    push @workers, $pid;
}

# Wait for the stop file (or the deadline), then give the workers 20 s to
# finish the request each has in flight.
sleep 0.05 while !-e $o{'stop-file'} && time < $deadline;
my $grace = time + 20;
my %left = map { $_ => 1 } @workers;
while (%left && time < $grace) {
    for my $pid (keys %left) { delete $left{$pid} if waitpid($pid, POSIX::WNOHANG()) == $pid }
    sleep 0.05 if %left;
}
for my $pid (keys %left) { kill 'KILL', $pid; waitpid($pid, 0) }

my ($starts, $ok, $failed, %generations, %reasons) = (0, 0, 0);
for my $n (1 .. $o{workers}) {
    open(my $log, '<', "$o{dir}/worker-$n") or next;
    while (<$log>) {
        if (/^S$/) { $starts++ }
        elsif (/^O (\S+)$/) { $ok++; $generations{$1}++ }
        elsif (/^F (.*)$/) { $failed++; $reasons{$1}++ }
    }
}
printf "load: requests=%d ok=%d failed=%d pending=%d generations=%s seconds=%.1f\n",
    $starts, $ok, $failed, $starts - $ok - $failed,
    join(',', sort { $a <=> $b } grep { /^\d+$/ } keys %generations), time - $started;
print "load: failed: $_ (x$reasons{$_})\n" for sort keys %reasons;
exit 0;
