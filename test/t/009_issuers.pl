# Scenario: a tenant trusts a person's identity provider, whose key set is
# served over HTTP on 127.0.0.1 (test/issuers/jwks_server.py).
#  1. The worker fetches the key set; an agent exchanges the person's token
#     for one in which it acts for the person.
#  2. The provider rotates its key: a token with the new kid is refused at
#     first, asks for a refresh, and is accepted once the worker fetched
#     the new set; another unknown kid within the minute fetches nothing.
#  3. The set is kept as long as the response's max-age says.
use strict;
use warnings;

use FindBin;
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use AgentidpNode;

my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $server_script = "$FindBin::Bin/../issuers/jwks_server.py";

my $node = PostgreSQL::Test::Cluster->new('issuers');
$node->init;
AgentidpNode::add_kek($node);
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'agentidp'");
$node->append_conf('postgresql.conf', 'agentidp.worker_naptime = 1');
# the key set is on 127.0.0.1
$node->append_conf('postgresql.conf', 'agentidp.allow_private_addresses = on');
AgentidpNode::start($node);

# the provider's keys: one now, another after rotation
$node->safe_psql('postgres', q{
	CREATE EXTENSION agentidp;
	CREATE TABLE person_keys AS
	SELECT n, agentidp.generate_jwk('ES256') AS jwk FROM generate_series(1, 3) n;
});
my $jwks_file = $node->basedir . '/jwks.json';
sub publish
{
	my ($n) = @_;
	my $jwks = $node->safe_psql('postgres',
		"SELECT jsonb_build_object('keys', jsonb_build_array(jwk - 'd')) FROM person_keys WHERE n = $n");
	PostgreSQL::Test::Utils::append_to_file("$jwks_file.new", $jwks);
	rename("$jwks_file.new", $jwks_file) or die "rename: $!";
}
publish(1);

my ($out, $err) = ('', '');
my $server = IPC::Run::start([ $python, $server_script, $jwks_file ], '>', \$out, '2>', \$err);
my $deadline = time() + 30;
while ($out !~ /listening (\d+)/ && time() < $deadline)
{
	IPC::Run::pump_nb($server);
	usleep(50_000);
}
my ($port) = $out =~ /listening (\d+)/ or die "the key set server did not start: $err";
sub fetches
{
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$port/count");
	return $r->{success} ? $r->{content} + 0 : -1;
}

my ($tenant, $tiss, $actor_tok) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT agentidp.create_tenant('people') AS t \\gset
	SELECT agentidp.rotate_signing_key(:'t') IS NOT NULL AS keyed \\gset
	SELECT agentidp.register_agent(:'t', 'assistant', '{mail:read}') AS a \\gset
	SELECT c.client_id AS cid, c.client_secret AS secret FROM agentidp.create_client_secret(:'a') c \\gset
	SELECT :'t' || '|' || (SELECT issuer FROM agentidp.tenants WHERE tenant_id = :'t') || '|'
		   || (agentidp.issue_token(:'cid', :'secret') ->> 'access_token');
});

# a person's token signed with key n
sub person_token
{
	my ($n) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT agentidp.jws_sign(
			jsonb_build_object('iss', 'http://127.0.0.1:$port', 'sub', 'alice', 'aud', '$tiss',
				'iat', floor(extract(epoch FROM now()))::bigint,
				'exp', floor(extract(epoch FROM now()))::bigint + 300),
			jwk, jsonb_build_object('typ', 'JWT', 'kid', jwk ->> 'kid'))
		FROM person_keys WHERE n = $n});
}
sub exchange
{
	my ($token) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT agentidp.exchange_token('$token', '$actor_tok') ->> 'scope'");
	return $ret == 0 ? "ok $stdout" : ($stderr =~ /ERROR:\s+(.*)/)[0];
}
sub wait_for
{
	my ($query, $expected, $what) = @_;
	my $deadline = time() + 30;
	my $got;
	while (time() < $deadline)
	{
		$got = $node->safe_psql('postgres', $query);
		return pass($what) if $got eq $expected;
		usleep(100_000);
	}
	is($got, $expected, $what);
}

# 1. trusted, fetched, exchanged
$node->safe_psql('postgres', qq{
	SELECT agentidp.trust_issuer('$tenant', 'http://127.0.0.1:$port', 'http://127.0.0.1:$port/jwks.json')});
wait_for("SELECT jwks IS NOT NULL FROM agentidp.issuer_keys", 't', 'the worker fetched the key set');
is(fetches(), 1, 'fetched once');
is(exchange(person_token(1)), 'ok mail:read', "the person's token is exchanged");

# 3. kept as long as max-age says (600 s)
is( $node->safe_psql('postgres',
		"SELECT round(extract(epoch FROM next_fetch_at - fetched_at)) FROM agentidp.issuer_keys"),
	'600', 'next fetch after the max-age of the response');

# 2. rotation: the new kid is unknown, asks for a refresh, then works
publish(2);
like(exchange(person_token(2)), qr/unknown key/, 'a new kid is refused before the refresh');
wait_for("SELECT jwks::text LIKE '%' || (SELECT jwk ->> 'kid' FROM person_keys WHERE n = 2) || '%'
		  FROM agentidp.issuer_keys", 't', 'the unknown kid made the worker fetch the set again');
is(fetches(), 2, 'fetched a second time');
is(exchange(person_token(2)), 'ok mail:read', 'the new key is accepted');
like(exchange(person_token(3)), qr/unknown key/, 'a key never published is refused');
sleep(3);
is(fetches(), 2, 'another unknown kid within the minute fetches nothing');

# a failed fetch keeps the keys
$server->kill_kill;
$node->safe_psql('postgres', 'UPDATE agentidp.issuer_keys SET next_fetch_at = now()');
wait_for("SELECT last_error IS NOT NULL AND jwks IS NOT NULL FROM agentidp.issuer_keys", 't',
	'a failed fetch is recorded and the keys stay');
is(exchange(person_token(2)), 'ok mail:read', 'and still verify');

$node->stop;
done_testing();
