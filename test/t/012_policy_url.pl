# Scenario: the policy hook's URL path (agentidp.policy_url) against a
# small OPA-shaped policy engine this test runs on a free loopback port
# (a forked Perl child, core modules only, gone within 120 s whatever
# happens).  It answers POST <path> {"input": ...} with {"result": ...}:
#  1. issuance: allowed; scope "admin" denied (400 unauthorized_client,
#     audited); scope "payments:write" requires an approval, which lets one
#     token through; the engine saw the input document.
#  2. record_action: allowed (recorded), denied (42501), over 100 pending
#     an approval.
#  3. a slow engine (past agentidp.policy_timeout): denied, fail-closed;
#     allowed with agentidp.policy_fail_open.
#  4. garbage, an empty result ({}, OPA's undefined rule), HTTP 500: denied.
#  5. both settings: the function first, then the URL.
use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AgentidpNode;

# ---------------------------------------------------------------------
# the policy engine; its children leave by POSIX::_exit, running no END
# block of the test's modules
my $listen = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto => 'tcp',
	Listen => 16,
	ReuseAddr => 1) or die "cannot listen: $!";
my $engine_port = $listen->sockport;
my $seen_file = PostgreSQL::Test::Utils::tempdir() . '/inputs';

sub decide
{
	my ($input) = @_;
	my $scope = $input->{scope} // '';
	my %scopes = map { $_ => 1 } split / /, $scope;
	if (($input->{kind} // '') eq 'token.issue')
	{
		return (200, '{"result": {"decision": "deny", "reason": "admin is for people"}}')
		  if $scopes{admin};
		return (200, '{"result": {"decision": "require_approval", "reason": "payments need a person"}}')
		  if $scopes{'payments:write'};
		if ($scopes{slow}) { sleep 2; return (200, '{"result": {"allow": true}}'); }
		return (200, 'this is not { json') if $scopes{garbage};
		return (200, '{}') if $scopes{undefined};
		return (500, '{"code": "internal_error"}') if $scopes{broken};
		return (200, '{"result": {"decision": "allow"}}');
	}
	if (($input->{kind} // '') eq 'action')
	{
		return (200, '{"result": {"allow": false}}') if $input->{action} eq 'delete.all';
		if ($input->{detail}{slow}) { sleep 2; return (200, '{"result": {"allow": true}}'); }
		return (200, '{"result": {"decision": "require_approval", "reason": "over 100"}}')
		  if $input->{amount} > 100;
		return (200, '{"result": {"decision": "allow"}}');
	}
	return (200, '{"result": {"decision": "deny", "reason": "unknown kind"}}');
}

sub serve_one
{
	my ($c) = @_;
	local $/ = "\r\n";
	my $line = <$c> // return;
	my $len = 0;
	while (my $h = <$c>)
	{
		last if $h eq "\r\n";
		$len = $1 if $h =~ /^Content-Length:\s*(\d+)/i;
	}
	my $body = '';
	read($c, $body, $len) if $len > 0;
	my $req = eval { decode_json($body) } // {};
	open my $fh, '>>', $seen_file or die;
	print $fh encode_json($req->{input} // {}), "\n";
	close $fh;
	my ($status, $out) = decide($req->{input} // {});
	print $c "HTTP/1.1 $status X\r\nContent-Type: application/json\r\n"
	  . 'Content-Length: ' . length($out) . "\r\nConnection: close\r\n\r\n$out";
	close $c;
}

my $engine_pid = fork() // die "fork: $!";
if ($engine_pid == 0)
{
	$SIG{CHLD} = 'IGNORE';
	alarm 120;
	while (my $c = $listen->accept)
	{
		my $pid = fork();
		if (defined $pid && $pid == 0) { alarm 10; serve_one($c); POSIX::_exit(0); }
		close $c;
	}
	POSIX::_exit(0);
}
close $listen;
END { kill 'TERM', $engine_pid if $engine_pid; }

# ---------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('policy');
$node->init;
AgentidpNode::add_kek($node);
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'agentidp'
agentidp.allow_private_addresses = on
agentidp.policy_url = 'http://127.0.0.1:$engine_port/v1/data/agentidp/decision'
agentidp.policy_timeout = 500
});
AgentidpNode::start($node);
$node->safe_psql('postgres', 'CREATE EXTENSION agentidp');
my $tenant = $node->safe_psql('postgres', q{SELECT agentidp.create_tenant('policy')});
my ($agent, $id, $secret) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT agentidp.rotate_signing_key('$tenant') IS NOT NULL AS keyed \\gset
	SELECT agentidp.register_agent('$tenant', 'p', '{read,admin,payments:write,slow,garbage,undefined,broken}') AS a \\gset
	SELECT :'a' || '|' || c.client_id || '|' || c.client_secret FROM agentidp.create_client_secret(:'a') c;
});

# the token endpoint's status, error and scope for a scope
sub token
{
	my ($scope, $approval, $settings) = @_;
	my $req = { grant_type => 'client_credentials', client_id => $id, client_secret => $secret,
		scope => $scope };
	$req->{approval_id} = $approval if defined $approval;
	my $json = encode_json($req);
	return $node->safe_psql('postgres', ($settings // '') . qq{
		SELECT concat_ws(' ', r ->> 'status', r -> 'body' ->> 'error', r -> 'body' ->> 'scope')
		FROM agentidp.token_endpoint('$json') AS r});
}

# a statement as the agent: its result, or the error's SQLSTATE and message
sub as_agent
{
	my ($sql, $settings) = @_;
	my $tok = $node->safe_psql('postgres', qq{
		SELECT agentidp.issue_token('$id', '$secret', 'read') ->> 'access_token'});
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		\\set VERBOSITY verbose
		BEGIN;
		SELECT agentidp.authenticate('$tok') IS NOT NULL AS ok \\gset
		} . ($settings // '') . qq{
		$sql;
		COMMIT;});
	return $ret == 0 ? $out : ($err =~ /ERROR:\s+(\w+: .*)/ ? $1 : $err);
}

# 1. issuance
is(token('read'), '200 read', 'allowed by the engine');
my $seen = decode_json((split /\n/, slurp_file($seen_file))[-1]);
is_deeply([ @$seen{qw(kind tenant_id agent_id client_id grant_type scope)} ],
	[ 'token.issue', $tenant, $agent, $id, 'client_credentials', 'read' ], 'the input document');
is_deeply($seen->{request}, { client_addr => undef, request_id => undef },
	'the input document: where the request came from (a Unix socket, no HTTP front)');
is(token('read admin'), '400 unauthorized_client', 'denied by the engine');
is(token('payments:write'), '400 invalid_scope', 'approval required by the engine');
$node->safe_psql('postgres', 'SELECT agentidp.drain_refusals()');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(detail::jsonb ->> 'error', ' ' ORDER BY seq) FROM agentidp.audit_events
		WHERE tenant_id = '$tenant' AND action = 'token.refused'}),
	'unauthorized_client invalid_scope', 'the refusals are audited');
my $tok = $node->safe_psql('postgres', qq{
	SELECT agentidp.issue_token('$id', '$secret', 'read') ->> 'access_token'});
my $approval = $node->safe_psql('postgres', qq{
	BEGIN;
	SELECT agentidp.authenticate('$tok') IS NOT NULL AS ok \\gset
	SELECT agentidp.request_approval('token', 'payments:write');
	COMMIT;});
$node->safe_psql('postgres', qq{
	UPDATE agentidp.approvals SET status = 'approved', decided_by = 'tap', decided_at = now()
	WHERE approval_id = '$approval'});
is(token('payments:write', $approval), '200 payments:write', 'the approval lets one token through');
is(token('payments:write', $approval), '400 invalid_scope', 'and one only');

# 2. record_action
like(as_agent(q{SELECT agentidp.record_action('search', 5) ->> 'status'}), qr/^recorded$/m,
	'action allowed');
like(as_agent(q{SELECT agentidp.record_action('delete.all')}), qr/^42501: action denied by policy/,
	'action denied');
like(as_agent(q{SELECT agentidp.record_action('payment.send', 500) ->> 'status'}), qr/^pending$/m,
	'action pending an approval');
$seen = decode_json((split /\n/, slurp_file($seen_file))[-1]);
is_deeply([ @$seen{qw(kind action amount currency)} ], [ 'action', 'payment.send', 500, 'USD' ],
	'the input document of an action');

# 3. a slow engine
my $t0 = time;
is(token('slow'), '400 unauthorized_client', 'slow engine: fail-closed');
cmp_ok(time - $t0, '<', 2, 'within the timeout');
like(as_agent(q{SELECT agentidp.record_action('search', 1, 'USD', '{"slow": true}') ->> 'status'}),
	qr/^42501: action denied by policy/, 'slow engine: an action denied');
like(as_agent(q{SELECT agentidp.record_action('search', 1, 'USD', '{"slow": true}') ->> 'status'},
		'SET LOCAL agentidp.policy_timeout = 3000;'), qr/^recorded$/m,
	'a longer agentidp.policy_timeout waits for it');
is(token('slow', undef, 'SET agentidp.policy_fail_open = on;'), '200 slow', 'slow engine: fail-open');
my ($ret, $out, $err) = $node->psql('postgres', qq{
	SELECT agentidp.issue_token('$id', '$secret', 'slow')});
like($err, qr/policy engine unreachable: .*agentidp.policy_fail_open is off/, 'the reason says why');
unlike($err, qr/$engine_port/, 'without the URL');

# 4. answers that are no decision
is(token('garbage'), '400 unauthorized_client', 'garbage: denied');
is(token('undefined'), '400 unauthorized_client', 'no result: denied');
is(token('broken'), '400 unauthorized_client', 'HTTP 500: denied');
($ret, $out, $err) = $node->psql('postgres', qq{
	SELECT agentidp.issue_token('$id', '$secret', 'broken')});
like($err, qr/HTTP status 500/, 'the reason names the status');

# 5. the function first, then the URL
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.no_slow(input jsonb) RETURNS jsonb LANGUAGE sql AS $$
		SELECT CASE WHEN input ->> 'scope' = 'broken' THEN '{"decision": "deny", "reason": "function"}'
			ELSE '{"allow": true}' END::jsonb $$});
is(token('broken', undef, q{SET agentidp.policy_function = 'public.no_slow';}),
	'400 unauthorized_client', 'the function denies first');
($ret, $out, $err) = $node->psql('postgres', qq{
	SET agentidp.policy_function = 'public.no_slow';
	SELECT agentidp.issue_token('$id', '$secret', 'broken')});
like($err, qr/The policy says: function\./, 'the function decided');
is(token('read admin', undef, q{SET agentidp.policy_function = 'public.no_slow';}),
	'400 unauthorized_client', 'then the engine');

$node->stop;
done_testing();
