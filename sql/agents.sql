--
-- Agents: register, suspend, reactivate, delete (agentidp--0.1.sql)
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT tenant_id AS ta FROM agentidp.tenants WHERE name = 'tenant-a' \gset
SELECT tenant_id AS ta_eu FROM agentidp.tenants WHERE name = 'tenant-a.eu' \gset

-- register: scopes become a sorted set, metadata is kept
SELECT agentidp.register_agent(:'ta', 'billing-bot', '{invoices:write,invoices:read,invoices:read}',
							   '{"team": "finance"}') AS billing \gset
SELECT name, status, allowed_scopes, metadata, client_id ~ '^[0-9a-f]{32}$' AS client_id_ok,
	   suspended_at IS NULL AS not_suspended
FROM agentidp.agents WHERE agent_id = :'billing';

-- defaults: no scopes, empty metadata
SELECT agentidp.register_agent(:'ta', 'Research Agent #2') AS research \gset
SELECT name, allowed_scopes, metadata FROM agentidp.agents WHERE agent_id = :'research';

-- bad arguments
SELECT agentidp.register_agent(NULL, 'x');
\set VERBOSITY terse
SELECT agentidp.register_agent('00000000-0000-0000-0000-000000000000', 'x');
\set VERBOSITY default
SELECT agentidp.register_agent(:'ta', NULL);
SELECT agentidp.register_agent(:'ta', '');
SELECT agentidp.register_agent(:'ta', ' padded');
SELECT agentidp.register_agent(:'ta', E'line\nbreak');
SELECT agentidp.register_agent(:'ta', repeat('x', 129));
SELECT agentidp.register_agent(:'ta', 'x', NULL);
SELECT agentidp.register_agent(:'ta', 'x', '{"two words"}');
SELECT agentidp.register_agent(:'ta', 'x', '{"quo\"te"}');
SELECT agentidp.register_agent(:'ta', 'x', ARRAY[''::text]);
SELECT agentidp.register_agent(:'ta', 'x', ARRAY[NULL::text]);
SELECT agentidp.register_agent(:'ta', 'x', ARRAY[repeat('s', 129)]);
SELECT agentidp.register_agent(:'ta', 'x', '{{a,b},{c,d}}');
SELECT agentidp.register_agent(:'ta', 'x', (SELECT array_agg('s' || i) FROM generate_series(1, 101) i));
SELECT agentidp.register_agent(:'ta', 'x', '{}', NULL);
SELECT agentidp.register_agent(:'ta', 'x', '{}', '[1, 2]');
SELECT agentidp.register_agent(:'ta', 'x', '{}', jsonb_build_object('blob', repeat('b', 17000)));
SELECT agentidp.register_agent(:'ta', 'billing-bot');
-- a suspended tenant takes no new agents
SELECT agentidp.register_agent(:'ta_eu', 'x');

-- the limits themselves are accepted
SELECT agentidp.register_agent(:'ta', repeat('x', 128),
	(SELECT array_agg('s' || i) FROM generate_series(1, 100) i)) IS NOT NULL AS created;

-- nothing of the failed calls remains
SELECT count(*) FROM agentidp.agents WHERE tenant_id = :'ta';

-- suspend and reactivate, each idempotent
SELECT agentidp.suspend_agent(:'billing');
SELECT status, suspended_at IS NOT NULL AS has_suspended_at FROM agentidp.agents WHERE agent_id = :'billing';
SELECT agentidp.suspend_agent(:'billing');
SELECT agentidp.reactivate_agent(:'billing');
SELECT status, suspended_at IS NULL AS suspended_at_cleared FROM agentidp.agents WHERE agent_id = :'billing';
SELECT agentidp.reactivate_agent(:'billing');
SELECT agentidp.suspend_agent(NULL);
\set VERBOSITY terse
SELECT agentidp.suspend_agent('00000000-0000-0000-0000-000000000000');
SELECT agentidp.reactivate_agent('00000000-0000-0000-0000-000000000000');
SELECT agentidp.delete_agent('00000000-0000-0000-0000-000000000000');
\set VERBOSITY default

-- allowed scopes can be replaced
SELECT agentidp.set_allowed_scopes(:'research', '{web:search,docs:read,web:search}');
SELECT agentidp.set_allowed_scopes(:'research', '{"bad scope"}');
SELECT allowed_scopes FROM agentidp.agents WHERE agent_id = :'research';

-- delete: the row stays for the record, the name is free again, and a
-- deleted agent no longer exists for the API
SELECT agentidp.delete_agent(:'research');
SELECT name, status, deleted_at IS NOT NULL AS has_deleted_at FROM agentidp.agents WHERE agent_id = :'research';
\set VERBOSITY terse
SELECT agentidp.delete_agent(:'research');
SELECT agentidp.suspend_agent(:'research');
SELECT agentidp.reactivate_agent(:'research');
SELECT agentidp.set_allowed_scopes(:'research', '{}');
\set VERBOSITY default
SELECT agentidp.register_agent(:'ta', 'Research Agent #2') <> :'research' AS new_agent;
-- names may not start or end with any white space
SELECT agentidp.register_agent(:'ta', E'tab\t');
SELECT agentidp.register_agent(:'ta', 'trailing ');

-- table privileges: identifiers and timestamps are the database's to set
UPDATE agentidp.agents SET client_id = 'mine' WHERE agent_id = :'billing';
UPDATE agentidp.agents SET tenant_id = :'ta_eu' WHERE agent_id = :'billing';
INSERT INTO agentidp.agents (tenant_id, agent_id, name) VALUES (:'ta', gen_random_uuid(), 'x');
DELETE FROM agentidp.agents WHERE agent_id = :'billing';
UPDATE agentidp.agents SET updated_at = now() WHERE agent_id = :'billing';
UPDATE agentidp.agents SET suspended_at = NULL WHERE agent_id = :'billing';
-- constraints hold for direct writes too
UPDATE agentidp.agents SET name = '' WHERE agent_id = :'billing';
UPDATE agentidp.agents SET status = 'unknown' WHERE agent_id = :'billing';
-- and so do the rules of the API: status changes keep their timestamps,
-- and a deleted agent is final
UPDATE agentidp.agents SET status = 'suspended' WHERE agent_id = :'billing';
SELECT status, suspended_at IS NOT NULL AS has_suspended_at, updated_at > created_at AS updated
FROM agentidp.agents WHERE agent_id = :'billing';
UPDATE agentidp.agents SET status = 'active' WHERE agent_id = :'billing';
SELECT status, suspended_at IS NULL AS suspended_at_cleared FROM agentidp.agents WHERE agent_id = :'billing';
\set VERBOSITY terse
UPDATE agentidp.agents SET status = 'active' WHERE agent_id = :'research';
UPDATE agentidp.agents SET metadata = '{"revived": true}' WHERE agent_id = :'research';
\set VERBOSITY default
SELECT status FROM agentidp.agents WHERE agent_id = :'research';
RESET ROLE;
