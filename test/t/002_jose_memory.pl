# Scenario: one backend signs and verifies 100,000 tokens, then fails
# 20,000 times on error paths that hold OpenSSL objects (a key imported,
# then a refused header; a bad signature), then signs 50,000 tokens with a
# tenant's stored key, then runs the token service: access tokens verified
# without the signature cache, client assertions and DPoP proofs (each
# imports a key of its own).  Its private resident memory must not grow:
# every OpenSSL object is freed on every path.  A leak of even 50 bytes a
# call would show as 5 MB.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AgentidpNode;

# the sanitizers keep freed memory in quarantine: RSS means nothing there
plan skip_all => 'resident memory is not meaningful under the sanitizers'
  if ($ENV{AGENTIDP_SERVER_ENV} // '') ne '';

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
AgentidpNode::add_kek($node);
AgentidpNode::start($node);
$node->safe_psql('postgres', 'CREATE EXTENSION agentidp');

my $bg = $node->background_psql('postgres');
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe(
	"CREATE TEMP TABLE k AS SELECT agentidp.generate_jwk(a) AS jwk, a AS alg
	 FROM unnest('{ES256,RS256,EdDSA}'::text[]) a");

# private resident memory: VmRSS also counts the shared buffers a backend
# happens to touch, which is no leak
sub rss_kb
{
	open my $fh, '<', "/proc/$pid/status" or die "no /proc/$pid/status: $!";
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)\s+kB/;
	}
	die 'no RssAnon';
}

sub sign_verify
{
	my ($n) = @_;
	# the key is imported for every sign, and once a query for verify
	return $bg->query_safe(
		"SELECT count(agentidp.jws_verify(agentidp.jws_sign(jsonb_build_object('i', i), k.jwk),
										  k.jwk, ARRAY[k.alg]))
		 FROM generate_series(1, $n) i, k WHERE k.alg = 'ES256'");
}

sub failures
{
	my ($n) = @_;
	return $bg->query_safe(
		"DO \$\$
		 DECLARE
			key jsonb := (SELECT jwk FROM k WHERE alg = 'ES256');
			bad text := agentidp.jws_sign('{}', key) || 'A';
		 BEGIN
			FOR i IN 1..$n LOOP
				BEGIN
					PERFORM agentidp.jws_sign('{}', key, '{\"jku\": \"x\"}');
				EXCEPTION WHEN invalid_parameter_value THEN NULL;
				END;
				BEGIN
					PERFORM agentidp.jws_verify(bad, key, '{ES256}');
				EXCEPTION WHEN invalid_authorization_specification THEN NULL;
				END;
			END LOOP;
		 END \$\$");
}

# warm up caches and allocator arenas first
sign_verify(10000);
failures(2000);
my $before = rss_kb();

is(sign_verify(100000), '100000', '100,000 tokens signed and verified');
my $after = rss_kb();
cmp_ok($after - $before, '<', 2048,
	"sign+verify: RSS grew by less than 2 MB ($before kB -> $after kB)");

failures(20000);
my $after_errors = rss_kb();
cmp_ok($after_errors - $after, '<', 2048,
	"error paths: RSS grew by less than 2 MB ($after kB -> $after_errors kB)");

# RS256 and EdDSA take the same paths with other key types
foreach my $alg ('RS256', 'EdDSA')
{
	my $start = rss_kb();
	is( $bg->query_safe(
			"SELECT count(agentidp.jws_verify(agentidp.jws_sign('{}', k.jwk), k.jwk, ARRAY[k.alg]))
			 FROM generate_series(1, 20000), k WHERE k.alg = '$alg'"),
		'20000', "$alg: 20,000 tokens signed and verified");
	cmp_ok(rss_kb() - $start, '<', 2048, "$alg: RSS grew by less than 2 MB");
}

# a tenant's stored key: decrypted once into the backend's cache
$bg->query_safe("SELECT agentidp.create_tenant('memory') AS t \\gset");
$bg->query_safe("SELECT agentidp.rotate_signing_key(tenant_id) FROM agentidp.tenants");
# the first run of a query shape raises the allocator's high-water mark
# once (about 10 MB here), then stays flat: warm up with the same shape
$bg->query_safe(
	"SELECT count(agentidp._sign_with_tenant_key(tenant_id, jsonb_build_object('i', i)))
	 FROM agentidp.tenants, generate_series(1, 20000) i");
my $start = rss_kb();
is( $bg->query_safe(
		"SELECT count(agentidp._sign_with_tenant_key(tenant_id, jsonb_build_object('i', i)))
		 FROM agentidp.tenants, generate_series(1, 50000) i"),
	'50000', 'tenant key: 50,000 tokens signed');
my $end = rss_kb();
cmp_ok($end - $start, '<', 2048, "tenant key: RSS grew by less than 2 MB ($start kB -> $end kB)");

# the token service; each batch runs twice, the first to warm up
$bg->query_safe(
	"SELECT agentidp.register_agent(tenant_id, 'mem', '{read}') AS a FROM agentidp.tenants \\gset");
$bg->query_safe(
	"SELECT client_id AS cid, client_secret AS secret FROM agentidp.create_client_secret(:'a') \\gset");
$bg->query_safe(
	"CREATE TEMP TABLE t AS SELECT agentidp.issue_token(:'cid', :'secret') ->> 'access_token' AS token
	 FROM generate_series(1, 5000)");
$bg->query_safe('SET agentidp.verified_token_cache = 0');
$bg->query_safe(
	"SELECT agentidp.jwk_thumbprint(jwk - 'd') AS ckid, jwk AS cjwk FROM k WHERE alg = 'ES256' \\gset");
$bg->query_safe("SELECT agentidp.add_client_key(:'a', :'cjwk'::jsonb - 'd')");
$bg->query_safe("SELECT issuer || '/oauth/token' AS endpoint FROM agentidp.tenants \\gset");

my %batch = (
	'verify_token, uncached' =>
	  "SELECT count(agentidp.verify_token(token)) FROM t",
	'private_key_jwt' =>
	  "SELECT count(agentidp.issue_token_jwt(agentidp.jws_sign(jsonb_build_object(
			'iss', :'cid', 'sub', :'cid', 'aud', :'endpoint', 'jti', gen_random_uuid(),
			'exp', extract(epoch FROM now())::bigint + 60), :'cjwk'::jsonb || jsonb_build_object('kid', :'ckid'))))
	   FROM generate_series(1, 2000)",
	'DPoP' =>
	  "SELECT count(agentidp.issue_token(:'cid', :'secret', NULL, NULL,
			agentidp.jws_sign(jsonb_build_object('jti', gen_random_uuid(), 'htm', 'POST',
				'htu', 'https://idp.example/oauth/token', 'iat', extract(epoch FROM now())::bigint),
				k.jwk - 'kid', jsonb_build_object('typ', 'dpop+jwt', 'jwk', k.jwk - 'd' - 'kid')),
			'POST', 'https://idp.example/oauth/token'))
	   FROM generate_series(1, 2000), k WHERE k.alg = 'ES256'");
foreach my $name (sort keys %batch)
{
	$bg->query_safe($batch{$name});
	my $from = rss_kb();
	$bg->query_safe($batch{$name});
	my $to = rss_kb();
	cmp_ok($to - $from, '<', 2048, "$name: RSS grew by less than 2 MB ($from kB -> $to kB)");
}

$bg->quit;
$node->stop;
done_testing();
