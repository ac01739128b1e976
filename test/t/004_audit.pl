# Scenario: the audit chain as a DBA and an outside auditor meet it.
#  1. An existing 0.1 installation updates to the current version; the chain starts with
#     the first change after the update.
#  2. A backend killed with SIGKILL in the middle of a large audited
#     transaction (while inserting, then while chaining at COMMIT): after
#     crash recovery the chain verifies, holds either all of the
#     transaction or none of it, and goes on.
#  3. An independent verifier (test/audit/verify_chain.py, written from
#     docs/audit.md alone) reads a COPY of the table and agrees with
#     verify_audit_chain() on good, tampered and pruned chains.
use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AgentidpNode;

my $verifier = "$FindBin::Bin/../audit/verify_chain.py";
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';

my $node = PostgreSQL::Test::Cluster->new('audit');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'agentidp'");
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
AgentidpNode::start($node);

# 1. update from 0.1
$node->safe_psql('postgres', q{
	CREATE EXTENSION agentidp VERSION '0.1';
	SELECT agentidp.create_tenant('old');
});
$node->safe_psql('postgres', 'ALTER EXTENSION agentidp UPDATE');
is( $node->safe_psql(
		'postgres', q{
		SELECT e.extversion = a.default_version FROM pg_extension e
		JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'agentidp'}),
	't', 'update: the extension is at the default version');
$node->safe_psql('postgres', q{
	SELECT agentidp.register_agent(tenant_id, 'after-update') FROM agentidp.tenants WHERE name = 'old';
});
is( $node->safe_psql(
		'postgres', q{
		SELECT string_agg(v.ok || ' ' || v.rows_checked, ',')
		FROM agentidp.verify_audit_chain() v JOIN agentidp.tenants t USING (tenant_id)
		WHERE t.name = 'old'}),
	'true 1', 'update: the chain starts at the first change after the update');

# 2. SIGKILL in the middle of a large audited transaction
$node->safe_psql('postgres', q{
	CREATE TABLE public.big (tenant_id uuid NOT NULL, id int PRIMARY KEY, payload text);
	SELECT agentidp.enable_audit('public.big');
});
my $tenant = $node->safe_psql('postgres', "SELECT agentidp.create_tenant('crash')");
my $rows = 300000;

# consistent: the chain verifies, and big's rows and their audit rows are
# both there or both gone
sub check_after_crash
{
	my ($what) = @_;
	$node->poll_query_until('postgres', 'SELECT true')
	  or die 'server did not recover from the crash';
	is( $node->safe_psql(
			'postgres', qq{
			SELECT ok || ' ' || ((SELECT count(*) FROM public.big) =
				(SELECT count(*) FROM agentidp.audit_events
				 WHERE tenant_id = '$tenant' AND resource = 'public.big'))
			FROM agentidp.verify_audit_chain('$tenant')}),
		'true true', "$what: the chain verifies and holds all of the transaction or none");
}

# a session that inserts $rows audited rows in one transaction, then runs $last
sub start_big_transaction
{
	my ($last) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr/started/, qq{\\echo started
BEGIN;
INSERT INTO public.big SELECT '$tenant', g, repeat('x', 200) FROM generate_series(1, $rows) g;
$last
});
	return ($bg, $pid);
}

sub wait_for
{
	my ($sql, $what) = @_;
	$node->poll_query_until('postgres', $sql) or die "timed out waiting for $what";
}

# killed mid-transaction: its events are queued (spilled to a temporary
# file), nothing is chained yet
my ($bg, $pid) = start_big_transaction('SELECT pg_sleep(600);');
wait_for(qq{SELECT query LIKE 'SELECT pg_sleep%' FROM pg_stat_activity WHERE pid = $pid},
	'the transaction to insert its rows');
kill 'KILL', $pid;
eval { $bg->quit };
check_after_crash('killed while inserting');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.big'), '0',
	'killed while inserting: nothing of the transaction remains');

# killed while chaining at COMMIT: the chain lock is held elsewhere so that
# COMMIT waits, then released; the kill lands once audit rows are being
# written
my $hold = $node->background_psql('postgres');
$hold->query_safe("BEGIN; SELECT agentidp.prune_audit('$tenant', '-infinity')");
($bg, $pid) = start_big_transaction('COMMIT;');
wait_for(qq{SELECT query = 'COMMIT;' AND wait_event_type = 'Lock'
	FROM pg_stat_activity WHERE pid = $pid}, 'COMMIT to wait for the chain lock');
my $size = $node->safe_psql('postgres', "SELECT pg_relation_size('agentidp.audit_events')");
$hold->query_safe('COMMIT');
$hold->quit;
$node->poll_query_until('postgres', qq{
	SELECT pg_relation_size('agentidp.audit_events') > $size + 4 * 1024 * 1024}, 't')
  or die 'audit rows were never written';
kill 'KILL', $pid;
eval { $bg->quit };
check_after_crash('killed while chaining at COMMIT');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.big'), '0',
	'killed while chaining at COMMIT: nothing of the transaction remains');

$node->safe_psql('postgres', qq{INSERT INTO public.big VALUES ('$tenant', -1, 'after the crashes')});
check_after_crash('after the crashes');
is( $node->safe_psql(
		'postgres', qq{
		SELECT count(*) = max(seq) FROM agentidp.audit_events WHERE tenant_id = '$tenant'}),
	't', 'after the crashes: the chain goes on without a gap');

# 3. an independent verifier agrees, on good, tampered and pruned chains
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.chain(name text) RETURNS uuid LANGUAGE plpgsql AS $$
	DECLARE
		t uuid := agentidp.create_tenant(name);
	BEGIN
		FOR i IN 1..5 LOOP
			PERFORM agentidp.register_agent(t, 'agent "' || i || E'" \\\\', '{}',
				jsonb_build_object('note', E'tab\there, newline\nhere'));
		END LOOP;
		RETURN t;
	END $$;
	SELECT chain('good');
	SELECT chain('edited'), chain('deleted'), chain('reordered'), chain('pruned'), chain('anchored'),
		   chain('emptied');
	SELECT agentidp.prune_audit(tenant_id, now()) FROM agentidp.tenants WHERE name IN ('pruned', 'emptied');
	SELECT agentidp.register_agent(tenant_id, 'after prune') FROM agentidp.tenants WHERE name = 'pruned';
	SET agentidp.trace_id = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
	SELECT chain('traced');
	RESET agentidp.trace_id;
	-- a role name with a tab and a newline reaches COPY escaped
	CREATE ROLE "odd	role
name" IN ROLE agentidp_admin;
	SET ROLE "odd	role
name";
	SELECT chain('odd');
	RESET ROLE;
	SET session_replication_role = replica;
	UPDATE agentidp.audit_events SET detail = '{"forged":true}'
	WHERE seq = 4 AND tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'edited');
	DELETE FROM agentidp.audit_events
	WHERE seq = 5 AND tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'deleted');
	UPDATE agentidp.audit_events SET seq = 1007 - seq
	WHERE seq IN (3, 4) AND tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'reordered');
	UPDATE agentidp.audit_events SET seq = seq - 1000
	WHERE seq > 1000 AND tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'reordered');
	INSERT INTO agentidp.audit_anchors (tenant_id, seq, prev_hash)
	SELECT tenant_id, 3, hash FROM agentidp.audit_events
	WHERE seq = 2 AND tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'anchored');
	DELETE FROM agentidp.audit_events
	WHERE seq < 3 AND tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'anchored');
	DELETE FROM agentidp.audit_events
	WHERE tenant_id = (SELECT tenant_id FROM agentidp.tenants WHERE name = 'emptied');
});

my $dir = $node->basedir;
# a time zone with a half-hour offset: the verifier must parse what COPY prints
foreach my $table ('audit_events', 'audit_anchors')
{
	my $copy = $node->safe_psql('postgres',
		"SET timezone = 'America/St_Johns'; COPY agentidp.$table TO STDOUT");
	open my $fh, '>', "$dir/$table.copy" or die $!;
	print $fh $copy, ($copy eq '' ? '' : "\n");
	close $fh;
}
my ($stdout, $stderr);
IPC::Run::run([ $python, $verifier, "$dir/audit_events.copy", "$dir/audit_anchors.copy" ],
	'>', \$stdout, '2>', \$stderr);
chomp $stdout;
is($stderr, '', 'the independent verifier reads the COPY without complaint');

my $sql = $node->safe_psql(
	'postgres', q{
	SELECT string_agg(concat_ws(E'\t', tenant_id, CASE WHEN ok THEN 't' ELSE 'f' END,
		rows_checked, coalesce(first_bad_seq::text, ''), coalesce(reason, '')), E'\n'
		ORDER BY tenant_id::text)
	FROM agentidp.verify_audit_chain()});
is($stdout, $sql, 'the independent verifier agrees with verify_audit_chain()');

my %verdict = map { (split /\t/)[0] => $_ } split /\n/, $sql;
my %expect = (
	good => "t\t7\t\t",
	traced => "t\t7\t\t",
	odd => "t\t7\t\t",
	edited => "f\t4\t4\thash does not match the row",
	deleted => "f\t5\t5\trow 5 is missing",
	reordered => "f\t3\t3\tprev_hash does not match the hash of row 2",
	pruned => "t\t2\t\t",
	emptied => "f\t0\t8\thistory before row 8 was removed without a recorded prune",
	anchored => "f\t5\t3\thistory before row 3 was removed without a recorded prune");
foreach my $name (sort keys %expect)
{
	my $id = $node->safe_psql('postgres',
		"SELECT tenant_id FROM agentidp.tenants WHERE name = '$name'");
	is($verdict{$id}, "$id\t$expect{$name}", "verdict on the $name chain");
}

$node->stop;
done_testing();
