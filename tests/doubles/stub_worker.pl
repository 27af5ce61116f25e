# TEST DOUBLE (run by stub_worker.sh): answers every HTTP request on HOST:PORT with REPLY,
# GET /v1/models with MODELS.
# One process serves every connection (no fork per request): select() over the listening
# socket and the open connections. Each request is read whole (headers, then the body by its
# Content-Length) before the reply is written and the connection closed: a reply sent before
# the request arrived is an "UnexpectedMessage" to hyper (sglang-router's client), which then
# retries its registration step 1-4 s later, and unread request bytes at close turn the FIN
# into a reset. SIGTERM exits 0 (a clean stop).
use strict;
use warnings;
use Socket;

my ($host, $port, $reply, $models) = @ARGV;
$SIG{TERM} = sub { exit 0 };
socket(my $srv, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
setsockopt($srv, SOL_SOCKET, SO_REUSEADDR, 1) or die "setsockopt: $!";
bind($srv, sockaddr_in($port, inet_aton($host))) or die "bind $host:$port: $!";
listen($srv, 128) or die "listen: $!";
$| = 1;
print "stub worker listening on $host:$port\n";

my %conns;    # fileno -> [handle, bytes of its request so far]
while (1) {
    my $rin = '';
    vec($rin, fileno($srv), 1) = 1;
    vec($rin, $_, 1) = 1 for keys %conns;
    next unless select(my $rout = $rin, undef, undef, undef) > 0;
    if (vec($rout, fileno($srv), 1)) {
        my $c;
        $conns{fileno($c)} = [$c, ''] if accept($c, $srv);
    }
    for my $fd (grep { vec($rout, $_, 1) } keys %conns) {
        my $conn = $conns{$fd};
        my $n = sysread($conn->[0], my $chunk, 65536);
        $conn->[1] .= $chunk if $n;
        my $end = index($conn->[1], "\r\n\r\n");
        my $length = $conn->[1] =~ /^content-length:\s*(\d+)/im ? $1 : 0;
        next if $n && ($end < 0 || length($conn->[1]) < $end + 4 + $length);
        if ($n) {    # the request is complete: its one answer
            syswrite($conn->[0], $conn->[1] =~ m{^GET /v1/models[ ?]} ? $models : $reply);
        }
        close($conn->[0]);
        delete $conns{$fd};
    }
}
