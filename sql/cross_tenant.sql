--
-- Tenant isolation: tenant B's administrator can neither see nor change
-- tenant A's rows, even knowing their ids.  Every attempt fails or touches
-- nothing, and tenant A is unchanged afterwards.
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT tenant_id AS ta FROM agentidp.tenants WHERE name = 'tenant-a' \gset
SELECT agentidp.register_agent(:'ta', 'victim', '{secret:read}') AS victim \gset
SELECT client_id AS victim_client, client_secret AS victim_secret
FROM agentidp.create_client_secret(:'victim') \gset
SELECT agentidp.create_role(:'ta', 'a-role', '{a:scope}') IS NOT NULL AS created;
-- a fingerprint of everything tenant A holds
CREATE TEMP VIEW a_state AS
SELECT md5(string_agg(x, ',' ORDER BY x)) AS fingerprint FROM (
	SELECT concat_ws('|', agent_id, name, status, allowed_scopes, metadata, updated_at) AS x FROM agentidp.agents
	UNION ALL SELECT concat_ws('|', secret_id, revoked_at, expires_at) FROM agentidp.client_secrets
	UNION ALL SELECT concat_ws('|', role_id, name, scopes) FROM agentidp.roles
	UNION ALL SELECT concat_ws('|', tenant_id, member) FROM agentidp.tenant_admins
	UNION ALL SELECT concat_ws('|', tenant_id, name, status, settings) FROM agentidp.tenants
) s;
GRANT SELECT ON a_state TO regress_admin_a;
SELECT fingerprint AS before FROM a_state \gset
RESET ROLE;

SET ROLE regress_admin_b;
SELECT agentidp.create_tenant('tenant-b') AS tb \gset
SELECT agentidp.register_agent(:'tb', 'b-agent') AS b_agent \gset

-- B sees only its own rows
SELECT name FROM agentidp.tenants;
SELECT name FROM agentidp.agents;
SELECT count(*) FROM agentidp.client_secrets;
SELECT count(*) FROM agentidp.roles;
SELECT count(*) FROM agentidp.tenant_admins WHERE tenant_id = :'ta';
SELECT agentidp.admin_tenants() = ARRAY[:'tb']::uuid[] AS only_b;

-- B cannot act on A's ids through the API (ids in details vary: terse)
\set VERBOSITY terse
SELECT agentidp.register_agent(:'ta', 'intruder');
SELECT agentidp.suspend_agent(:'victim');
SELECT agentidp.reactivate_agent(:'victim');
SELECT agentidp.delete_agent(:'victim');
SELECT agentidp.set_allowed_scopes(:'victim', '{everything}');
SELECT * FROM agentidp.create_client_secret(:'victim');
SELECT agentidp.revoke_client_secret(:'victim_client');
SELECT agentidp.effective_scopes(:'victim');
SELECT agentidp.grant_role(:'victim', 'a-role');
SELECT agentidp.create_role(:'ta', 'b-role');
SELECT agentidp.drop_role(:'ta', 'a-role');
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_b');
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a');
-- nor with A's role on B's agent
SELECT agentidp.grant_role(:'b_agent', 'a-role');
\set VERBOSITY default

-- nor with direct DML: updates and deletes find no rows, inserts are refused
WITH u AS (UPDATE agentidp.agents SET status = 'suspended' WHERE agent_id = :'victim' RETURNING 1)
SELECT count(*) AS agents_updated FROM u;
WITH u AS (UPDATE agentidp.client_secrets SET revoked_at = now() WHERE agent_id = :'victim' RETURNING 1)
SELECT count(*) AS secrets_revoked FROM u;
WITH u AS (UPDATE agentidp.tenants SET status = 'suspended' WHERE tenant_id = :'ta' RETURNING 1)
SELECT count(*) AS tenants_updated FROM u;
WITH d AS (DELETE FROM agentidp.roles WHERE tenant_id = :'ta' RETURNING 1)
SELECT count(*) AS roles_deleted FROM d;
WITH d AS (DELETE FROM agentidp.tenant_admins WHERE tenant_id = :'ta' RETURNING 1)
SELECT count(*) AS admins_deleted FROM d;
INSERT INTO agentidp.agents (tenant_id, name) VALUES (:'ta', 'intruder');
INSERT INTO agentidp.tenant_admins (tenant_id, member) VALUES (:'ta', 'regress_admin_b');
INSERT INTO agentidp.roles (tenant_id, name) VALUES (:'ta', 'b-role');
-- moving B's own agent into A is refused as well
UPDATE agentidp.agents SET tenant_id = :'ta' WHERE agent_id = :'b_agent';

-- A's client still authenticates: B suspended nothing
SELECT agentidp.check_client_secret(:'victim_client', :'victim_secret') = :'victim' AS victim_ok;
RESET ROLE;

-- and A's state is exactly what it was
SET ROLE regress_admin_a;
SELECT fingerprint = :'before' AS a_unchanged FROM a_state;
SELECT name FROM agentidp.tenants ORDER BY name;
RESET ROLE;
