-- bench/tokens.sh, set-up: a fresh schema bench_tokens with the scratch
-- table of the one-row INSERT floor, and the client that the grant runs
-- for: tenant bench-tokens with an ES256 signing key and the longest token
-- lifetime, agent bench with allowed scopes {read,write} and no token rate
-- limit (the client and the tenant "unlimited", docs/limits.md: the runs
-- measure issuance, not refusals), and a fresh client secret.  The tenant, its key and the agent are created by the
-- first run and reused by later ones; the agent's earlier secrets are
-- revoked before the new one is made.
-- Prints one line: client_id and client_secret, separated by a space.
--
--   psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -f bench/tokens/setup.sql
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS bench_tokens CASCADE;
CREATE SCHEMA bench_tokens;

-- the floor of a write: one row, one commit
CREATE TABLE bench_tokens.ins (
	id			bigint GENERATED ALWAYS AS IDENTITY,
	payload		text
);

SELECT COALESCE((SELECT tenant_id FROM agentidp.tenants WHERE name = 'bench-tokens'),
				agentidp.create_tenant('bench-tokens')) AS t \gset
-- tokens live as long as they may (agentidp.max_token_lifetime, 900 s by
-- default; the tenant's own default is shorter), so that the tokens that
-- verify_token.sql verifies outlast more runs before tokens.sh re-issues them
UPDATE agentidp.tenants
SET settings = settings || jsonb_build_object('access_token_lifetime',
											  extract(epoch FROM agentidp._max_token_lifetime())::int)
WHERE tenant_id = :'t'
  AND settings -> 'access_token_lifetime' IS DISTINCT FROM
	  to_jsonb(extract(epoch FROM agentidp._max_token_lifetime())::int);
-- the first key of a tenant is active at once (ES256 by default)
SELECT CASE WHEN NOT EXISTS (SELECT FROM agentidp.signing_keys WHERE tenant_id = :'t')
			THEN agentidp.rotate_signing_key(:'t') END \g /dev/null
SELECT agentidp._require(EXISTS (SELECT FROM agentidp.signing_key_states
								 WHERE tenant_id = :'t' AND state = 'active' AND alg = 'ES256'),
						 '55000', 'tenant "bench-tokens" has no active ES256 signing key',
						 'bench/tokens.sh measures the grant with an ES256 tenant key.') \g /dev/null

SELECT COALESCE((SELECT agent_id FROM agentidp.agents
				 WHERE tenant_id = :'t' AND name = 'bench' AND status = 'active'),
				agentidp.register_agent(:'t', 'bench', '{read,write}')) AS a \gset

SELECT agentidp.set_token_rate_limit(:'a', 'unlimited') \g /dev/null
UPDATE agentidp.tenants SET settings = settings || '{"tenant_token_rate_limit": "unlimited"}'
WHERE tenant_id = :'t' AND settings ->> 'tenant_token_rate_limit' IS DISTINCT FROM 'unlimited';

-- one current secret, so the grant checks the same number of hashes on
-- every run
SELECT agentidp.revoke_client_secret(client_id) FROM agentidp.agents WHERE agent_id = :'a' \g /dev/null
SELECT client_id, client_secret FROM agentidp.create_client_secret(:'a');
