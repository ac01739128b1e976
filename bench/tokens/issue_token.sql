-- bench/tokens.sh: one client-credentials grant per transaction, scope
-- read, signed with the tenant's ES256 key.  -D client_id=... and
-- -D client_secret=... come from setup.sql; the -D switch replaces pgbench's
-- own :client_id (the client's number), which no script here uses.  Each
-- token adds its rows to agentidp.audit_events, which stay there.
SELECT agentidp.issue_token(:client_id, :client_secret, 'read');
