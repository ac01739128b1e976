# Scenario: the background worker as a DBA meets it.
#  1. It starts with the server: a launcher, and runs of agentidp.run_maintenance()
#     in each database with agentidp, none in a database without it; CREATE
#     EXTENSION is served at once.
#  2. Expiry removes what has expired, in batches of agentidp.expiry_batch_size.
#  3. SIGHUP changes the naptime.
#  4. A broken audit chain is reported once: a WARNING in the server log,
#     agentidp.audit_verified, agentidp.worker_status.
#  5. kill -9 of the launcher and of a regular backend: after crash recovery
#     the launcher is back and the runs go on.
#  6. SIGTERM: the launcher stops cleanly, and a fast shutdown is prompt.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use AgentidpNode;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'agentidp'");
$node->append_conf('postgresql.conf', 'agentidp.worker_naptime = 1');
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->append_conf('postgresql.conf', "log_line_prefix = '%m [%p] %b '");
AgentidpNode::start($node);

$node->safe_psql('postgres', 'CREATE EXTENSION agentidp');
$node->safe_psql('postgres', 'CREATE DATABASE plain');

# polls a query until it returns the expected value or 60 s pass
sub wait_for
{
	my ($db, $query, $expected, $what) = @_;
	my $deadline = time() + 60;
	my $got;
	while (time() < $deadline)
	{
		# during crash recovery connections are refused: try again
		my ($ret, $stdout) = $node->psql($db, $query);
		$got = $stdout;
		return pass($what) if $ret == 0 && $got eq $expected;
		usleep(100_000);
	}
	is($got, $expected, $what);
}

sub runs
{
	my ($db) = @_;
	return $node->safe_psql($db // 'postgres',
		"SELECT runs FROM agentidp.worker_status WHERE task = 'expiry'");
}

sub launcher_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'agentidp launcher'");
}

# 1. it starts with the server
wait_for('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'agentidp launcher'",
	'1', 'start: the launcher runs');
wait_for('postgres', "SELECT runs >= 2 FROM agentidp.worker_status WHERE task = 'expiry'",
	't', 'start: maintenance runs in the database with agentidp');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(task || ':' || (last_error IS NULL), ',' ORDER BY task)
		FROM agentidp.worker_status WHERE runs > 0}),
	'audit_verification:true,expiry:true,issuer_keys:true,quota_reset:true,refusals:true,webhooks:true',
	'start: each task ran without error');
# the database without agentidp was visited once, then left alone
my $log = slurp_file($node->logfile);
unlike($log, qr/ERROR|FATAL.*agentidp/, 'start: no error in the server log');
$node->safe_psql('plain', 'CREATE EXTENSION agentidp');
wait_for('plain', "SELECT runs >= 1 FROM agentidp.worker_status WHERE task = 'expiry'",
	't', 'start: CREATE EXTENSION is served without a restart');

# 2. expiry, in batches
$node->safe_psql('postgres', q{
	SET agentidp.expiry_batch_size = 1000;
	ALTER SYSTEM SET agentidp.expiry_batch_size = 1000;
	SELECT pg_reload_conf();
	INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at)
	SELECT gen_random_uuid(), 'old-' || i, now() - interval '1 hour' FROM generate_series(1, 5000) i;
	INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at)
	SELECT gen_random_uuid(), 'live-' || i, now() + interval '1 hour' FROM generate_series(1, 10) i;
	INSERT INTO agentidp.used_jtis (tenant_id, kind, jti, expires_at)
	SELECT gen_random_uuid(), 'dpop_proof', 'old-' || i, now() - interval '1 second' FROM generate_series(1, 3000) i;
});
wait_for('postgres', q{
	SELECT (SELECT count(*) FROM agentidp.revoked_tokens) || ' ' || (SELECT count(*) FROM agentidp.used_jtis)},
	'10 0', 'expiry: what expired is gone, what is live stays');
cmp_ok($node->safe_psql('postgres', "SELECT total_rows FROM agentidp.worker_status WHERE task = 'expiry'"),
	'>=', 8000, 'expiry: worker_status counts the rows');

# 3. SIGHUP changes the naptime
$node->safe_psql('postgres', q{ALTER SYSTEM SET agentidp.worker_naptime = '1h'; SELECT pg_reload_conf();});
sleep(3);	# a run planned under the old naptime may still come
my $before = runs();
sleep(4);
is(runs(), $before, 'sighup: a naptime of an hour stops the runs');
$node->safe_psql('postgres', q{ALTER SYSTEM SET agentidp.worker_naptime = 1; SELECT pg_reload_conf();});
wait_for('postgres', "SELECT runs > $before FROM agentidp.worker_status WHERE task = 'expiry'",
	't', 'sighup: back to one second, the runs resume');

# 4. a broken chain is reported, once
$node->safe_psql('postgres', q{
	SELECT agentidp.create_tenant('chained');
	SELECT agentidp.register_agent(tenant_id, 'a' || i) FROM agentidp.tenants, generate_series(1, 5) i
	WHERE name = 'chained';
});
my $chained = q{(SELECT tenant_id FROM agentidp.tenants WHERE name = 'chained')};
wait_for('postgres', qq{
	SELECT v.seq = (SELECT max(seq) FROM agentidp.audit_events WHERE tenant_id = $chained)
	FROM agentidp.audit_verified v WHERE v.tenant_id = $chained}, 't', 'chain: verified up to the head');
my $head = $node->safe_psql('postgres', "SELECT seq FROM agentidp.audit_verified WHERE tenant_id = $chained");
my $bad = $head + 1;
my $offset = -s $node->logfile;
# the worker pauses, so that it cannot verify the new rows before the tampering
$node->safe_psql('postgres', q{ALTER SYSTEM SET agentidp.worker_naptime = '1h'; SELECT pg_reload_conf();});
sleep(2);
$node->safe_psql('postgres', qq{
	SELECT agentidp.register_agent(tenant_id, 'a' || i) FROM agentidp.tenants, generate_series(6, 7) i
	WHERE name = 'chained';
	SET session_replication_role = replica;
	UPDATE agentidp.audit_events SET detail = '{"forged": true}' WHERE seq = $bad AND tenant_id = $chained;
});
$node->safe_psql('postgres', q{ALTER SYSTEM SET agentidp.worker_naptime = 1; SELECT pg_reload_conf();});
wait_for('postgres', qq{
	SELECT broken_seq || ' ' || broken_reason FROM agentidp.audit_verified WHERE tenant_id = $chained},
	"$bad hash does not match the row", 'chain: the break is recorded');
$before = runs();
wait_for('postgres', "SELECT runs >= $before + 3 FROM agentidp.worker_status WHERE task = 'expiry'",
	't', 'chain: the runs go on');
my @warnings = (slurp_file($node->logfile, $offset) =~ /WARNING:  agentidp: the audit chain of tenant \S+ is broken at row $bad:/g);
is(scalar @warnings, 1, 'chain: one WARNING in the server log, not one per run');

# 5. kill -9 of the launcher, then of a regular backend
my $pid = launcher_pid();
kill 'KILL', $pid;
wait_for('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'agentidp launcher' AND pid <> $pid",
	'1', 'kill -9 of the launcher: a new launcher after crash recovery');
$before = runs();
wait_for('postgres', "SELECT runs > $before FROM agentidp.worker_status WHERE task = 'expiry'",
	't', 'kill -9 of the launcher: the runs go on');

my $psql = $node->background_psql('postgres');
my $backend = $psql->query_safe('SELECT pg_backend_pid()');
$pid = launcher_pid();
kill 'KILL', $backend;
$psql->quit;
wait_for('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'agentidp launcher' AND pid <> $pid",
	'1', 'kill -9 of a backend: the launcher is back after crash recovery');
$before = runs();
wait_for('postgres', "SELECT runs > $before FROM agentidp.worker_status WHERE task = 'expiry'",
	't', 'kill -9 of a backend: the runs go on');

# 6. SIGTERM
$offset = -s $node->logfile;
$pid = launcher_pid();
kill 'TERM', $pid;
wait_for('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0',
	'sigterm: the launcher exits');
$log = slurp_file($node->logfile, $offset);
like($log, qr/agentidp launcher shutting down/, 'sigterm: it says so');
unlike($log, qr/terminated by signal|crash/i, 'sigterm: no crash');

my $t0 = time();
$node->stop('fast');
cmp_ok(time() - $t0, '<', 10, 'sigterm: a fast shutdown is prompt');

done_testing();
