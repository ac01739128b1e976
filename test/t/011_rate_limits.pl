# Scenario: rate limits on a node of their own (agentidp preloaded,
# agentidp.rate_limit_slots = 64), with a Redis server the test starts on a
# free loopback port, with a password (in agentidp.redis_password_file
# here, in the URL in 6).
#  1. Shared memory: two sessions take from one bucket; pgbench's 8
#     clients race 400 checks for a bucket of 100, and exactly 100 pass.
#  2. Eviction: keys whose buckets have recovered make room first, so a
#     live key survives 300 new ones; a table full of live keys drops the
#     least recently touched, and the live key is forgotten.  The counters
#     tell the two apart, and the table never holds more than 64.
#  3. Redis (agentidp.redis_url and agentidp.redis_password_file, set by
#     ALTER SYSTEM): first a wrong password, refused; then two sessions share
#     a bucket kept in Redis under its tenant's key, which expires; the
#     race again lets exactly 100 through.  Over Redis's Unix socket
#     (unix://), and over IPv6 ([::1], where the machine has it), a
#     session takes from the same buckets.
#  4. Redis stopped: fail-open lets checks through with one WARNING per
#     session and counts them; fail-closed refuses with 53400, and the
#     token endpoint answers 503 with Retry-After; a Unix socket that is
#     not there is named in the error.  The password is nowhere in the
#     server log.
#  5. Redis restarted: the sessions work again after at most the second of
#     their reconnect delay, each with one new connection (Redis's count).
#  6. Without shared_preload_libraries, check_rate says what it needs, and
#     works with agentidp.redis_url; tokens are issued, unlimited, with a
#     LOG line saying so.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use AgentidpNode;

my $password = 'rl-s3cret-pw';
my $redis_port = PostgreSQL::Test::Cluster::get_free_port();
my $redis_dir = PostgreSQL::Test::Utils::tempdir();
# a Unix socket's path must fit sockaddr_un
my $redis_socket = PostgreSQL::Test::Utils::tempdir_short() . '/redis.sock';
my $redis_url = "redis://:$password\@127.0.0.1:$redis_port/0";

sub redis_cli
{
	my @cmd = ('redis-cli', '-h', '127.0.0.1', '-p', $redis_port, '--no-auth-warning',
		'-a', $password, @_);
	my $out = `@cmd 2>/dev/null`;
	chomp $out;
	return $out;
}

sub redis_pid
{
	open my $fh, '<', "$redis_dir/redis.pid" or return undef;
	my $pid = <$fh>;
	close $fh;
	chomp $pid if defined $pid;
	return ($pid && kill 0, $pid) ? $pid : undef;
}

sub redis_start
{
	# "-::1": also on the IPv6 loopback where there is one
	system('redis-server', '--bind', '127.0.0.1', '-::1', '--port', $redis_port,
		'--requirepass', $password, '--save', '', '--appendonly', 'no',
		'--daemonize', 'yes', '--pidfile', "$redis_dir/redis.pid",
		'--dir', $redis_dir, '--logfile', "$redis_dir/redis.log",
		'--unixsocket', $redis_socket, '--unixsocketperm', '700') == 0
	  or die "redis-server did not start";
	my $deadline = time() + 10;
	until (redis_cli('PING') eq 'PONG')
	{
		die 'Redis did not answer within 10 s' if time() > $deadline;
		usleep(50_000);
	}
}

sub redis_stop
{
	my $pid = redis_pid() or return;
	kill 'TERM', $pid;
	my $deadline = time() + 10;
	while (kill 0, $pid)
	{
		die 'Redis did not stop within 10 s' if time() > $deadline;
		usleep(50_000);
	}
}

sub connections_received
{
	return (redis_cli('INFO', 'stats') =~ /total_connections_received:(\d+)/)[0];
}

END { redis_stop(); }

# ---------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('limits');
$node->init;
AgentidpNode::add_kek($node);
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'agentidp'
agentidp.rate_limit_slots = 64
log_line_prefix = '%m [%p] %b '
});
AgentidpNode::start($node);
my $tenant = $node->safe_psql('postgres', q{
	CREATE EXTENSION agentidp;
	CREATE TABLE race (store text);
	SELECT agentidp.create_tenant('limits');
});
my $identity = qq{SET agentidp.identity = '{"tenant_id": "$tenant"}';};
my ($cid, $secret) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT agentidp.rotate_signing_key('$tenant') IS NOT NULL AS keyed \\gset
	SELECT agentidp.register_agent('$tenant', 'worker', '{read}') AS a \\gset
	SELECT c.client_id || '|' || c.client_secret FROM agentidp.create_client_secret(:'a') c;
});

sub status
{
	my ($what) = @_;
	return $node->safe_psql('postgres', "SELECT $what FROM agentidp.rate_limit_status()");
}

# pgbench: 8 clients, 50 checks each, of one bucket of 100 an hour
my $race_script = $node->basedir . '/race.sql';
sub race
{
	my ($store) = @_;
	open my $fh, '>', $race_script or die $!;
	print $fh "$identity\n";
	print $fh "INSERT INTO race SELECT '$store' WHERE agentidp.check_rate('race-$store', 100, '1 hour');\n";
	close $fh;
	$node->command_ok(
		[ 'pgbench', '-n', '-c', '8', '-j', '8', '-t', '50', '-f', $race_script,
			$node->connstr('postgres') ],
		"$store: pgbench races 400 checks");
	return $node->safe_psql('postgres', "SELECT count(*) FROM race WHERE store = '$store'");
}

# two sessions taking turns from one bucket of 3
sub shared_bucket
{
	my ($store, $key) = @_;
	my $s1 = $node->background_psql('postgres', on_error_stop => 0);
	my $s2 = $node->background_psql('postgres', on_error_stop => 0);
	$s1->query_safe($identity);
	$s2->query_safe($identity);
	my $check = "SELECT agentidp.check_rate('$key', 3, '1 hour')";
	my @seen = ($s1->query_safe($check), $s1->query_safe($check), $s2->query_safe($check),
		$s2->query_safe($check), $s1->query_safe($check));
	is(join(',', @seen), 't,t,t,f,f', "$store: two sessions share one bucket of 3");
	$s1->quit;
	$s2->quit;
}

# ---------------------------------------------------------------------
# 1. shared memory
is(status('backend'), 'shared memory', 'shared memory is the default store');
shared_bucket('shared memory', 'shm-shared');
is(race('shm'), '100', 'shared memory: exactly 100 of 400 racing checks pass');

# ---------------------------------------------------------------------
# 2. eviction, with 64 slots in 16 partitions of 4
$node->safe_psql('postgres', qq{$identity SELECT agentidp.check_rate('live', 1, '1 hour')});
is( $node->safe_psql('postgres', qq{$identity
		SELECT count(*) FILTER (WHERE agentidp.check_rate('idle-' || i, 1000, '1 ms'))
		FROM generate_series(1, 300) i}),
	'300', 'eviction: 300 keys that recover at once, all passed');
is( $node->safe_psql('postgres', qq{$identity SELECT agentidp.check_rate('live', 1, '1 hour')}),
	'f', 'eviction: the live key was kept: its bucket is still empty');
is(status('used <= 64 AND evicted_recovered >= 230 AND evicted_active = 0'), 't',
	'eviction: recovered entries made room, no live one was dropped');
is( $node->safe_psql('postgres', qq{$identity
		SELECT count(*) FILTER (WHERE agentidp.check_rate('busy-' || i, 1, '1 hour'))
		FROM generate_series(1, 300) i}),
	'300', 'eviction: 300 live keys');
is(status('used = 64 AND evicted_active > 0'), 't',
	'eviction: a table full of live keys drops the least recently touched');
is( $node->safe_psql('postgres', qq{$identity SELECT agentidp.check_rate('live', 1, '1 hour')}),
	't', 'eviction: the live key was forgotten, its bucket full again');

# ---------------------------------------------------------------------
# 3. Redis
redis_start();
my $pwfile = $node->basedir . '/redis-password';
PostgreSQL::Test::Utils::append_to_file($pwfile, "wrong-$password\n");
chmod 0600, $pwfile;
$node->safe_psql('postgres', qq{
	ALTER SYSTEM SET agentidp.redis_url = 'redis://127.0.0.1:$redis_port/0';
	ALTER SYSTEM SET agentidp.redis_password_file = '$pwfile';
	SELECT pg_reload_conf();});
$node->poll_query_until('postgres', "SELECT backend = 'redis' FROM agentidp.rate_limit_status()")
  or die 'agentidp.redis_url was not reloaded';
my ($ret, $out, $err) = $node->psql('postgres', qq{$identity
	SET agentidp.rate_limit_fail_open = off;
	SELECT agentidp.check_rate('k', 1, '1 min');});
like($err, qr/DETAIL:  Redis at redis:\/\/127\.0\.0\.1:$redis_port\/0: authentication failed: WRONGPASS/,
	'redis: a wrong password is refused, and not shown');
open my $pw, '>', $pwfile or die $!;
print $pw "$password\n";
close $pw;
shared_bucket('redis', 'redis-shared');
my $key = "agentidp:rl:{$tenant}:u:redis-shared";
is(redis_cli('EXISTS', $key), '1', 'redis: the key is namespaced by the tenant');
my $ttl = redis_cli('PTTL', $key);
ok($ttl > 3_500_000 && $ttl <= 3_600_000 + 1_200_000,
	"redis: the key expires when its bucket is full again ($ttl ms)");
is(race('redis'), '100', 'redis: exactly 100 of 400 racing checks pass');
is( $node->safe_psql('postgres', qq{$identity
		SELECT agentidp.check_rate('both', 2, '1 hour');
		SET agentidp.redis_url = 'unix://$redis_socket?db=0';
		SET agentidp.rate_limit_fail_open = off;
		SELECT agentidp.check_rate('both', 2, '1 hour'), agentidp.check_rate('both', 2, '1 hour');}),
	"t\nt|f", 'redis: over the Unix socket, the same buckets as over TCP');
SKIP:
{
	my $v6 = `redis-cli -h ::1 -p $redis_port --no-auth-warning -a $password PING 2>/dev/null`;
	skip 'no IPv6 loopback here', 1 unless ($v6 // '') =~ /PONG/;
	is( $node->safe_psql('postgres', qq{$identity
			SELECT agentidp.check_rate('six', 1, '1 hour');
			SET agentidp.redis_url = 'redis://[::1]:$redis_port/0';
			SET agentidp.rate_limit_fail_open = off;
			SELECT agentidp.check_rate('six', 1, '1 hour');}),
		"t\nf", 'redis: over IPv6 ([::1]), the same buckets as over IPv4');
}

# a session that stays, to see its connection fail and come back
my $stay = $node->background_psql('postgres', on_error_stop => 0);
$stay->query_safe($identity);
is($stay->query_safe("SELECT agentidp.check_rate('stay', 1000, '1 min')"), 't',
	'redis: a long session checks');

# ---------------------------------------------------------------------
# 4. Redis stopped
redis_stop();
($ret, $out, $err) = $node->psql('postgres', qq{$identity
	SELECT agentidp.check_rate('down', 1, '1 hour'), agentidp.check_rate('down', 1, '1 hour');});
is($out, "t|t", 'redis down, fail open: checks pass unchecked');
my @warnings = $err =~ /WARNING:  rate limit not checked: Redis did not answer/g;
is(scalar @warnings, 1, 'redis down, fail open: one WARNING for the session');
like($err, qr{DETAIL:  Redis at redis://127\.0\.0\.1:$redis_port/0: could not connect: Connection refused\.},
	'redis down: the detail names the server, without credentials');
is(status('redis_failures >= 3 AND unchecked_passed = 2 AND unchecked_refused = 1'), 't',
	'redis down, fail open: counted');

($ret, $out, $err) = $node->psql('postgres', qq{$identity
	SET agentidp.rate_limit_fail_open = off;
	SELECT agentidp.check_rate('down', 1, '1 hour');});
like($err, qr/ERROR:  rate limit could not be checked/, 'redis down, fail closed: refused');
($ret, $out, $err) = $node->psql('postgres', qq{$identity
	SET agentidp.rate_limit_fail_open = off;
	\\set VERBOSITY verbose
	SELECT agentidp.require_rate('down', 1, '1 hour');});
like($err, qr/ERROR:  53400: rate limit could not be checked/, 'redis down, fail closed: SQLSTATE 53400');
is( $node->safe_psql('postgres', qq{
		SET agentidp.rate_limit_fail_open = off;
		SELECT r ->> 'status', r #>> '{body,error}', r #>> '{headers,Retry-After}'
		FROM agentidp.token_endpoint(jsonb_build_object('grant_type', 'client_credentials',
			'client_id', '$cid', 'client_secret', '$secret')) AS r}),
	'503|temporarily_unavailable|1',
	'redis down, fail closed: the token endpoint answers 503 with Retry-After');
is( $node->safe_psql('postgres', qq{
		SELECT detail::jsonb ->> 'error_description' FROM agentidp.audit_events
		WHERE action = 'token.refused' ORDER BY seq DESC LIMIT 1}),
	'rate limit could not be checked', 'redis down, fail closed: the refusal is audited');
is(status('unchecked_refused = 4'), 't', 'redis down, fail closed: counted');
# (no password in this URL: the server log shows the statement that failed)
($ret, $out, $err) = $node->psql('postgres', qq{$identity
	SET agentidp.redis_url = 'unix://$redis_socket.missing?db=1';
	SET agentidp.rate_limit_fail_open = off;
	SELECT agentidp.check_rate('k', 1, '1 min');});
like($err, qr{DETAIL:  Redis at unix://\Q$redis_socket\E\.missing\?db=1: could not connect: No such file or directory\.},
	'redis: a Unix socket that is not there is named in the error');

# the long session: its connection broke; fail closed, it is refused
$stay->query_safe('SET agentidp.rate_limit_fail_open = off');
$stay->{stderr} = '';
$stay->query("SELECT agentidp.check_rate('stay', 1000, '1 min')");
like($stay->{stderr}, qr/rate limit could not be checked/, 'redis down: the long session is refused');

# ---------------------------------------------------------------------
# 5. Redis restarted: every backend reconnects once, after its delay
redis_start();
my $before = connections_received();
my $other = $node->background_psql('postgres', on_error_stop => 0);
$other->query_safe("$identity SET agentidp.rate_limit_fail_open = off");
my ($tries, $back) = (0, 0);
my $deadline = time() + 10;
while (time() < $deadline)
{
	$tries++;
	$stay->{stderr} = '';
	my $r = $stay->query("SELECT agentidp.check_rate('stay', 1000, '1 min')");
	if ($stay->{stderr} eq '' && $r eq 't')
	{
		$back = 1;
		last;
	}
	usleep(100_000);
}
ok($back, "redis restarted: the long session checks again (after $tries tries)");
cmp_ok($tries, '<=', 15, 'redis restarted: within its reconnect delay of a second');
for my $i (1 .. 50)
{
	$stay->query_safe("SELECT agentidp.check_rate('stay', 1000, '1 min')");
	$other->query_safe("SELECT agentidp.check_rate('stay', 1000, '1 min')");
}
# the second redis-cli of connections_received() is one more
my $new = connections_received() - $before - 1;
is($new, 2, 'redis restarted: one new connection per session, for 100 checks and more');
$stay->quit;
$other->quit;

# the password is nowhere in the log, which has every statement too
my $log = slurp_file($node->logfile);
like($log, qr/rate limit not checked: Redis did not answer/, 'the server log has the WARNING');
unlike($log, qr/\Q$password\E/, 'the server log never shows the Redis password');

# ---------------------------------------------------------------------
# 6. without shared_preload_libraries
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
AgentidpNode::add_kek($plain);
$plain->append_conf('postgresql.conf', "log_line_prefix = '%m [%p] %b '");
AgentidpNode::start($plain);
my $pt = $plain->safe_psql('postgres', q{
	CREATE EXTENSION agentidp;
	SELECT agentidp.create_tenant('plain');
});
my $pidentity = qq{SET agentidp.identity = '{"tenant_id": "$pt"}';};
($ret, $out, $err) = $plain->psql('postgres', "$pidentity SELECT agentidp.check_rate('k', 1, '1 min')");
like($err, qr/ERROR:  rate limits need agentidp in shared_preload_libraries or a Redis server/,
	'no preload: check_rate says what it needs');
is( $plain->safe_psql('postgres', qq{$pidentity SET agentidp.redis_url = '$redis_url';
		SELECT agentidp.check_rate('k', 1, '1 min'), agentidp.check_rate('k', 1, '1 min'),
			   (agentidp.rate_limit_status()).backend}),
	't|f|redis', 'no preload: with agentidp.redis_url, Redis keeps the limits');
is( $plain->safe_psql('postgres', qq{
		SELECT agentidp.rotate_signing_key('$pt') IS NOT NULL AS keyed \\gset
		SELECT agentidp.register_agent('$pt', 'p', '{read}') AS a \\gset
		SELECT agentidp.set_token_rate_limit(:'a', '1/h') \\g /dev/null
		SELECT c.client_id AS c, c.client_secret AS s FROM agentidp.create_client_secret(:'a') c \\gset
		SELECT count(agentidp.issue_token(:'c', :'s')) FROM generate_series(1, 3);}),
	'3', 'no preload, no Redis: tokens are issued without their limit');
like(slurp_file($plain->logfile), qr/LOG:  agentidp: token rate limits are not enforced/,
	'no preload, no Redis: the server log says the limits are not enforced');
$plain->stop;

$node->stop;
done_testing();
