# Scenario: managed Postgres, where agentidp cannot be preloaded: no
# background worker, and pg_cron runs CALL agentidp.run_maintenance()
# instead.  The test schedules it as docs/worker.md shows and sees expiry
# and incremental chain verification happen.  pg_cron's schedule has
# minutes, so this waits for a minute boundary.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use AgentidpNode;

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_cron'");
$node->append_conf('postgresql.conf', "cron.database_name = 'postgres'");
$node->append_conf('postgresql.conf', 'cron.use_background_workers = on');
$node->append_conf('postgresql.conf', 'max_worker_processes = 16');
AgentidpNode::start($node);

$node->safe_psql('postgres', 'CREATE EXTENSION agentidp; CREATE EXTENSION pg_cron;');
is($node->safe_psql('postgres', 'SELECT agentidp._preloaded()'), 'f', 'not preloaded');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'agentidp%'"),
	'0', 'no background worker');

$node->safe_psql('postgres', q{
	SELECT agentidp.create_tenant('cron');
	SELECT agentidp.register_agent(tenant_id, 'a' || i) FROM agentidp.tenants, generate_series(1, 3) i
	WHERE name = 'cron';
	INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at)
	SELECT gen_random_uuid(), 'old-' || i, now() - interval '1 hour' FROM generate_series(1, 2000) i;
	SELECT cron.schedule('agentidp-maintenance', '* * * * *', 'CALL agentidp.run_maintenance()');
});

my $tenant = q{(SELECT tenant_id FROM agentidp.tenants WHERE name = 'cron')};
my $query = qq{
	SELECT (SELECT count(*) FROM agentidp.revoked_tokens) = 0
	   AND (SELECT seq FROM agentidp.audit_verified WHERE tenant_id = $tenant)
		 = (SELECT max(seq) FROM agentidp.audit_events WHERE tenant_id = $tenant)};
my $deadline = time() + 150;
my $done = '';
while (time() < $deadline)
{
	$done = $node->safe_psql('postgres', $query);
	last if $done eq 't';
	usleep(500_000);
}
is($done, 't', 'pg_cron: expired rows are gone and the chain is verified to its head');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(task || ':' || last_ok, ',' ORDER BY task) FROM agentidp.worker_status WHERE runs > 0}),
	'audit_verification:true,expiry:true,issuer_keys:true,quota_reset:true,webhooks:true', 'pg_cron: worker_status shows the runs, without error');
is( $node->safe_psql('postgres', q{
		SELECT count(*) > 0 AND bool_and(status = 'succeeded') FROM cron.job_run_details}),
	't', 'pg_cron: the job succeeded');

$node->stop;
done_testing();
