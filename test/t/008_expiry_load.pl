# Scenario: a million expired revocation entries, and agents getting tokens
# meanwhile.  Expiry (CALL agentidp.run_maintenance(), as the worker and
# pg_cron run it) deletes them in batches of agentidp.expiry_batch_size,
# each its own transaction: no transaction of the maintenance backend
# lives long, and issue_token, run in a loop at the same time, is never
# held up.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use AgentidpNode;

my $rows = 1_000_000;
my $batch = 10_000;

my $node = PostgreSQL::Test::Cluster->new('expiry');
$node->init;
AgentidpNode::add_kek($node);
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'agentidp'");
# the worker stays out of the way: the test runs the maintenance itself
$node->append_conf('postgresql.conf', "agentidp.worker_naptime = '1h'");
$node->append_conf('postgresql.conf', "agentidp.expiry_batch_size = $batch");
AgentidpNode::start($node);

$node->safe_psql('postgres', qq{
	CREATE EXTENSION agentidp;
	SELECT agentidp.create_tenant('load');
	SELECT agentidp.rotate_signing_key(tenant_id) FROM agentidp.tenants;
	INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at)
	SELECT tenant_id, 'expired-' || i, now() - interval '1 day' + i * interval '1 ms'
	FROM agentidp.tenants, generate_series(1, $rows) i;
	VACUUM ANALYZE agentidp.revoked_tokens;
});
my ($cid, $secret) = split /\|/, $node->safe_psql('postgres', q{
	SELECT c.client_id || '|' || c.client_secret
	FROM agentidp.tenants t, agentidp.register_agent(t.tenant_id, 'loader', '{read}') a,
		 agentidp.create_client_secret(a) c});
# the loop issues tokens as fast as it can: what it measures is expiry, not
# the rate limit (docs/limits.md)
$node->safe_psql('postgres',
	"SELECT agentidp.set_token_rate_limit(agent_id, 'unlimited') FROM agentidp.agents WHERE name = 'loader'");

# the maintenance in a session of its own
my $maint = $node->background_psql('postgres');
my $maint_pid = $maint->query_safe('SELECT pg_backend_pid()');
$maint->query_until(qr/started/, "\\echo started\nCALL agentidp.run_maintenance('10 minutes');\n");

# meanwhile: tokens, and the age of the maintenance backend's transaction
my $issuer = $node->background_psql('postgres');
my ($issued, $slowest_issue, $oldest_xact, $seen_active) = (0, 0, 0, 0);
my %transactions;    # the maintenance backend's transactions seen, by start time
my $deadline = time() + 300;
while (time() < $deadline)
{
	my $t0 = time();
	$issuer->query_safe("SELECT agentidp.issue_token('$cid', '$secret') IS NOT NULL");
	my $took = time() - $t0;
	$slowest_issue = $took if $took > $slowest_issue;
	$issued++;
	my ($age, $state, $start) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT COALESCE(extract(epoch FROM clock_timestamp() - xact_start), 0) || '|' || state
			   || '|' || COALESCE(xact_start::text, '')
		FROM pg_stat_activity WHERE pid = $maint_pid});
	$oldest_xact = $age if $age > $oldest_xact;
	$transactions{$start} = 1 if $state eq 'active';
	$seen_active = 1 if $state eq 'active';
	last if $seen_active && $state eq 'idle';
	usleep(20_000);
}
$issuer->quit;
$maint->quit;

is($node->safe_psql('postgres', 'SELECT count(*) FROM agentidp.revoked_tokens'),
	'0', "expiry: all $rows expired entries are gone");
# sampled every few tens of milliseconds, a single long transaction would
# show one start time; batches show many
my $seen = scalar keys %transactions;
cmp_ok($seen, '>=', 10, "expiry: in batches, each its own transaction ($seen seen)");
cmp_ok($oldest_xact, '<', 5,
	sprintf('expiry: the longest transaction seen lasted %.2f s', $oldest_xact));
cmp_ok($issued, '>', 10, "issue_token ran meanwhile ($issued tokens)");
cmp_ok($slowest_issue, '<', 2,
	sprintf('issue_token was not held up: slowest %.3f s', $slowest_issue));
is( $node->safe_psql('postgres',
		"SELECT last_ok || ' ' || last_rows FROM agentidp.worker_status WHERE task = 'expiry'"),
	"true $rows", 'worker_status: the run and its rows');
note(sprintf('expiry of %d rows: %d transactions seen, longest %.2f s, %d tokens issued meanwhile, slowest %.3f s',
	$rows, $seen, $oldest_xact, $issued, $slowest_issue));

$node->stop;
done_testing();
