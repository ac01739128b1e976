--
-- Client secrets: create, check, revoke (src/credentials.c)
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT tenant_id AS ta FROM agentidp.tenants WHERE name = 'tenant-a' \gset
SELECT agentidp.register_agent(:'ta', 'secret-holder', '{read}') AS agent \gset
SELECT client_id AS client FROM agentidp.agents WHERE agent_id = :'agent' \gset

-- the secret is shown once: a fixed prefix and 256 random bits in base64url
SELECT client_id, client_secret AS secret FROM agentidp.create_client_secret(:'agent') \gset
SELECT :'client_id' = :'client' AS same_client_id,
	   :'secret' ~ '^aidp_sk_[A-Za-z0-9_-]{43}$' AS secret_format;
SELECT agentidp.check_client_secret(:'client', :'secret') = :'agent' AS authenticated;

-- administrators see the secret's hint and dates, never its hash
SELECT hint = right(:'secret', 4) AS hint_ok, expires_at, revoked_at
FROM agentidp.client_secrets WHERE agent_id = :'agent';
SELECT secret_hash FROM agentidp.client_secrets;
-- nor can they store a secret of their own choosing
INSERT INTO agentidp.client_secrets (tenant_id, agent_id, secret_hash, hint)
VALUES (:'ta', :'agent', sha256('weak'), 'weak');
RESET ROLE;

-- the hash at rest is SHA-256 of the secret's text, as documented
SELECT secret_hash = sha256(convert_to(:'secret', 'UTF8')) AS hash_ok
FROM agentidp.client_secrets WHERE agent_id = :'agent';

-- every failure raises the same error
SET ROLE regress_service;
SELECT agentidp.check_client_secret(:'client', :'secret') = :'agent' AS service_authenticates;
SELECT agentidp.check_client_secret(:'client', 'aidp_sk_' || repeat('A', 43));
SELECT agentidp.check_client_secret('no-such-client', :'secret');
SELECT agentidp.check_client_secret(:'client', left(:'secret', 20));
SELECT agentidp.check_client_secret(:'client', :'secret' || 'x');
SELECT agentidp.check_client_secret(repeat('c', 129), :'secret');
SELECT agentidp.check_client_secret(NULL, :'secret');
SELECT agentidp.check_client_secret(:'client', NULL);
SELECT agentidp.check_client_secret('', '');
-- the service sees no tables and creates no secrets
SELECT count(*) FROM agentidp.agents;
SELECT count(*) FROM agentidp.client_secrets;
SELECT * FROM agentidp.create_client_secret(:'agent');
RESET ROLE;

-- a second secret: both work until one is revoked
SET ROLE regress_admin_a;
SELECT client_secret AS secret2 FROM agentidp.create_client_secret(:'agent', '30 days') \gset
SELECT :'secret2' <> :'secret' AS distinct_secrets;
SELECT agentidp.check_client_secret(:'client', :'secret2') = :'agent' AS second_works;
SELECT expires_at BETWEEN now() + '29 days' AND now() + '31 days' AS expiry_set
FROM agentidp.client_secrets WHERE agent_id = :'agent' AND expires_at IS NOT NULL;
SELECT secret_id AS first_id FROM agentidp.client_secrets
WHERE agent_id = :'agent' AND hint = right(:'secret', 4) \gset
SELECT agentidp.revoke_client_secret(:'client', :'first_id');
SELECT agentidp.check_client_secret(:'client', :'secret');
SELECT agentidp.check_client_secret(:'client', :'secret2') = :'agent' AS second_still_works;
\set VERBOSITY terse
SELECT agentidp.revoke_client_secret(:'client', :'first_id');
SELECT agentidp.revoke_client_secret(:'client', '00000000-0000-0000-0000-000000000000');
\set VERBOSITY default
SELECT agentidp.revoke_client_secret(NULL);
SELECT agentidp.revoke_client_secret('no-such-client');
-- NULL secret_id revokes them all
SELECT agentidp.revoke_client_secret(:'client');
SELECT agentidp.check_client_secret(:'client', :'secret2');
SELECT agentidp.revoke_client_secret(:'client');
-- revocation is final, even for direct writes
UPDATE agentidp.client_secrets SET revoked_at = NULL WHERE agent_id = :'agent';
SELECT count(*) AS unrevoked FROM agentidp.client_secrets
WHERE agent_id = :'agent' AND revoked_at IS NULL;

-- expiry: bad intervals, then an expired secret
SELECT * FROM agentidp.create_client_secret(:'agent', '0 seconds');
SELECT * FROM agentidp.create_client_secret(:'agent', '-1 day');
SELECT * FROM agentidp.create_client_secret(NULL);
\set VERBOSITY terse
SELECT * FROM agentidp.create_client_secret('00000000-0000-0000-0000-000000000000');
\set VERBOSITY default
SELECT client_secret AS secret3 FROM agentidp.create_client_secret(:'agent', '1 hour') \gset
RESET ROLE;
UPDATE agentidp.client_secrets SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour'
WHERE agent_id = :'agent' AND revoked_at IS NULL;
SET ROLE regress_admin_a;
SELECT agentidp.check_client_secret(:'client', :'secret3');

-- a suspended agent authenticates no more, and gets no new secret
SELECT client_secret AS secret4 FROM agentidp.create_client_secret(:'agent') \gset
SELECT agentidp.suspend_agent(:'agent');
SELECT agentidp.check_client_secret(:'client', :'secret4');
\set VERBOSITY terse
SELECT * FROM agentidp.create_client_secret(:'agent');
\set VERBOSITY default
SELECT agentidp.reactivate_agent(:'agent');
SELECT agentidp.check_client_secret(:'client', :'secret4') = :'agent' AS works_again;

-- a suspended tenant's agents do not authenticate nor get new secrets
UPDATE agentidp.tenants SET status = 'suspended' WHERE tenant_id = :'ta';
SELECT agentidp.check_client_secret(:'client', :'secret4');
\set VERBOSITY terse
SELECT * FROM agentidp.create_client_secret(:'agent');
\set VERBOSITY default
UPDATE agentidp.tenants SET status = 'active' WHERE tenant_id = :'ta';
SELECT agentidp.check_client_secret(:'client', :'secret4') = :'agent' AS works_again;

-- at most ten active secrets an agent
SELECT count(*) FROM (SELECT agentidp.create_client_secret(:'agent') FROM generate_series(1, 9)) AS s;
SELECT count(*) FROM agentidp.client_secrets
WHERE agent_id = :'agent' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());
SELECT * FROM agentidp.create_client_secret(:'agent');

-- a revocation written directly is dated by the database
SELECT secret_id AS direct_id FROM agentidp.client_secrets
WHERE agent_id = :'agent' AND revoked_at IS NULL LIMIT 1 \gset
UPDATE agentidp.client_secrets SET revoked_at = '2000-01-01' WHERE secret_id = :'direct_id';
SELECT revoked_at > now() - interval '1 minute' AS dated_now FROM agentidp.client_secrets
WHERE secret_id = :'direct_id';

-- deleting the agent, even by a direct update, revokes every credential
UPDATE agentidp.agents SET status = 'deleted' WHERE agent_id = :'agent';
SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS unrevoked FROM agentidp.client_secrets
WHERE agent_id = :'agent';
SELECT agentidp.check_client_secret(:'client', :'secret4');
\set VERBOSITY terse
SELECT agentidp.revoke_client_secret(:'client');
\set VERBOSITY default
RESET ROLE;
