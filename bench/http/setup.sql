-- bench/http.sh, set-up: the client that agentidp-httpd's token endpoint
-- runs for, and the tables of the two Express baselines.
--
-- agentidp: tenant bench-http with an ES256 signing key, agent bench with
-- allowed scopes {read,write} and a fresh client secret (the agent's
-- earlier secrets are revoked, so the grant checks one hash).  The tenant,
-- its key and the agent are created by the first run and reused by later
-- ones.  The client and the tenant have no token rate limit ("unlimited",
-- docs/limits.md), so that the benchmark measures issuance, not refusals.
--
-- Baselines: a fresh schema bench_baselines with
--   clients       (app, client_id, secret_hash, scope): one row per
--                 baseline, the hash given by the caller (bcrypt for
--                 'naive', the SHA-256 in hex for 'good')
--   audit_events  one row per token, written by the baselines
--
-- Prints one line: agentidp's client_id and client_secret, separated by a
-- space.
--
--   psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -v client_id=... \
--        -v naive_hash=... -v good_hash=... -f bench/http/setup.sql
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS bench_baselines CASCADE;
CREATE SCHEMA bench_baselines;

CREATE TABLE bench_baselines.clients (
	app			text NOT NULL,
	client_id	text NOT NULL,
	secret_hash	text NOT NULL,
	scope		text NOT NULL,
	PRIMARY KEY (app, client_id)
);

CREATE TABLE bench_baselines.audit_events (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	app			text NOT NULL,
	client_id	text NOT NULL,
	action		text NOT NULL,
	jti			uuid,
	client_addr	inet,
	created_at	timestamptz NOT NULL DEFAULT now()
);

INSERT INTO bench_baselines.clients VALUES
	('naive', :'client_id', :'naive_hash', 'read write'),
	('good', :'client_id', :'good_hash', 'read write');

SELECT COALESCE((SELECT tenant_id FROM agentidp.tenants WHERE name = 'bench-http'),
				agentidp.create_tenant('bench-http')) AS t \gset
-- the first key of a tenant is active at once (ES256 by default)
SELECT CASE WHEN NOT EXISTS (SELECT FROM agentidp.signing_keys WHERE tenant_id = :'t')
			THEN agentidp.rotate_signing_key(:'t') END \g /dev/null
SELECT agentidp._require(EXISTS (SELECT FROM agentidp.signing_key_states
								 WHERE tenant_id = :'t' AND state = 'active' AND alg = 'ES256'),
						 '55000', 'tenant "bench-http" has no active ES256 signing key',
						 'bench/http.sh measures the grant with an ES256 tenant key.') \g /dev/null

SELECT COALESCE((SELECT agent_id FROM agentidp.agents
				 WHERE tenant_id = :'t' AND name = 'bench' AND status = 'active'),
				agentidp.register_agent(:'t', 'bench', '{read,write}')) AS a \gset

SELECT agentidp.set_token_rate_limit(:'a', 'unlimited') \g /dev/null
UPDATE agentidp.tenants SET settings = settings || '{"tenant_token_rate_limit": "unlimited"}'
WHERE tenant_id = :'t' AND settings ->> 'tenant_token_rate_limit' IS DISTINCT FROM 'unlimited';

SELECT agentidp.revoke_client_secret(client_id) FROM agentidp.agents WHERE agent_id = :'a' \g /dev/null
SELECT client_id, client_secret FROM agentidp.create_client_secret(:'a');
