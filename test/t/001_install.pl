# Scenario: agentidp on clusters as DBAs run it.
#  1. Without shared_preload_libraries, CREATE EXTENSION and the whole
#     identity API work (managed Postgres).
#  2. Preloaded, across a restart and a crash of a backend, tenants, agents
#     and secrets persist and still authenticate.
#  3. pg_dump keeps the extension's rows: a restored database
#     authenticates the same client with the same secret, and its audit
#     chains verify and go on.  The restore runs with
#     session_replication_role = replica, as docs/audit.md says, so that
#     restoring rows does not audit them a second time.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AgentidpNode;

# create a tenant, an agent and a secret; returns (client_id, secret)
sub make_client
{
	my ($node, $db, $tenant) = @_;
	my $out = $node->safe_psql(
		$db, qq{
		SELECT agentidp.create_tenant('$tenant') AS t \\gset
		SELECT agentidp.register_agent(:'t', 'agent-$tenant', '{read}') AS a \\gset
		SELECT client_id || ' ' || client_secret FROM agentidp.create_client_secret(:'a');
	});
	return split / /, $out;
}

sub authenticates
{
	my ($node, $db, $client, $secret) = @_;
	my ($rc, $stdout, $stderr) = $node->psql($db,
		"SELECT agentidp.check_client_secret('$client', '$secret') IS NOT NULL");
	return $rc == 0 && $stdout eq 't';
}

# 1. no preload
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
AgentidpNode::start($plain);
$plain->safe_psql('postgres', 'CREATE EXTENSION agentidp');
my ($c1, $s1) = make_client($plain, 'postgres', 'plain');
ok(authenticates($plain, 'postgres', $c1, $s1), 'no preload: a new client authenticates');
ok(!authenticates($plain, 'postgres', $c1, 'aidp_sk_' . ('A' x 43)),
	'no preload: a wrong secret is refused');
is( $plain->safe_psql(
		'postgres', "SELECT issuer FROM agentidp.tenants WHERE name = 'plain'"),
	'http://127.0.0.1:8499/t/plain',
	'no preload: the default issuer comes from the GUC default');
$plain->stop;

# 2. preloaded, restart and crash
my $node = PostgreSQL::Test::Cluster->new('preloaded');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'agentidp'");
$node->append_conf('postgresql.conf', "agentidp.issuer_base = 'https://idp.example.com'");
# the test framework turns this off; DBAs' clusters have it on
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
AgentidpNode::start($node);
$node->safe_psql('postgres', 'CREATE EXTENSION agentidp');
my ($c2, $s2) = make_client($node, 'postgres', 'durable');
is( $node->safe_psql(
		'postgres', "SELECT issuer FROM agentidp.tenants WHERE name = 'durable'"),
	'https://idp.example.com/t/durable',
	'preloaded: the configured issuer base is used');

AgentidpNode::restart($node);
ok(authenticates($node, 'postgres', $c2, $s2), 'restart: the client still authenticates');

# a backend killed mid-session makes the postmaster reinitialise
my $bg = $node->background_psql('postgres');
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $pid;
$bg->quit;
$node->poll_query_until('postgres', 'SELECT true')
  or die 'server did not recover from the crash';
ok(authenticates($node, 'postgres', $c2, $s2), 'crash: the client still authenticates');
ok(!authenticates($node, 'postgres', $c2, $s1), 'crash: another secret is still refused');

# 3. dump and restore
my $dump = $node->basedir . '/agentidp.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump of a database with agentidp');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
{
	local $ENV{PGOPTIONS} = '-c session_replication_role=replica';
	$node->command_ok(
		[ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
		'pg_restore into a new database');
}
is( $node->safe_psql(
		'restored', 'SELECT count(*) FROM agentidp.agents'),
	'1', 'restore: the agent is there');
ok(authenticates($node, 'restored', $c2, $s2), 'restore: the client authenticates with its secret');
$node->safe_psql('restored', q{
	SELECT agentidp.register_agent(tenant_id, 'after-restore') FROM agentidp.tenants WHERE name = 'durable'});
is( $node->safe_psql(
		'restored', q{
		SELECT string_agg(v.ok || ' ' || v.rows_checked, ',')
		FROM agentidp.verify_audit_chain() v JOIN agentidp.tenants t USING (tenant_id)
		WHERE t.name = 'durable'}),
	'true 5', 'restore: the audit chain verifies and goes on');

$node->stop;
done_testing();
