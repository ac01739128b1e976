--
-- Roles: named sets of scopes granted to agents (agentidp--0.1.sql)
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT tenant_id AS ta FROM agentidp.tenants WHERE name = 'tenant-a' \gset
SELECT agentidp.register_agent(:'ta', 'role-holder', '{own:scope}') AS agent \gset

SELECT agentidp.create_role(:'ta', 'reader', '{docs:read,invoices:read}', 'reads things') IS NOT NULL AS created;
SELECT agentidp.create_role(:'ta', 'writer', '{docs:write,docs:read}') IS NOT NULL AS created;
SELECT name, scopes, description FROM agentidp.roles WHERE tenant_id = :'ta' ORDER BY name;

-- bad arguments
SELECT agentidp.create_role(:'ta', 'reader');
SELECT agentidp.create_role(:'ta', NULL);
SELECT agentidp.create_role(:'ta', 'Bad Name');
SELECT agentidp.create_role(:'ta', 'x', '{"a b"}');
SELECT agentidp.create_role(:'ta', 'x', '{}', repeat('d', 1001));
\set VERBOSITY terse
SELECT agentidp.create_role('00000000-0000-0000-0000-000000000000', 'x');
\set VERBOSITY default

-- grant: idempotent; effective scopes are the union, sorted
SELECT agentidp.grant_role(:'agent', 'reader');
SELECT agentidp.grant_role(:'agent', 'reader');
SELECT agentidp.grant_role(:'agent', 'writer');
SELECT agentidp.effective_scopes(:'agent');
SELECT agentidp.grant_role(:'agent', 'no-such-role');
SELECT agentidp.grant_role(:'agent', NULL);

-- revoke and drop
SELECT agentidp.revoke_role(:'agent', 'writer');
SELECT agentidp.effective_scopes(:'agent');
SELECT agentidp.drop_role(:'ta', 'reader');
SELECT agentidp.effective_scopes(:'agent');
SELECT agentidp.drop_role(:'ta', 'reader');
SELECT agentidp.revoke_role(:'agent', 'reader');
SELECT agentidp.effective_scopes(NULL);
\set VERBOSITY terse
SELECT agentidp.effective_scopes('00000000-0000-0000-0000-000000000000');
\set VERBOSITY default

-- deleting an agent takes its roles away
SELECT agentidp.grant_role(:'agent', 'writer');
SELECT agentidp.delete_agent(:'agent');
SELECT count(*) FROM agentidp.agent_roles WHERE agent_id = :'agent';
RESET ROLE;
