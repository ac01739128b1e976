--
-- Maintenance (agentidp--0.4--0.5.sql, src/audit_verify.c): expiry in
-- batches, incremental verification of the audit chains, the status of
-- the tasks.  The background worker and pg_cron are tested by the TAP
-- tests 005_worker and 006_pg_cron; here the functions they call.
--
SELECT agentidp.create_tenant('maint') AS t \gset
SELECT agentidp.register_agent(:'t', 'keeper') AS keeper \gset
SELECT agentidp.register_agent(:'t', 'leaver') AS leaver \gset
SELECT agentidp.register_agent(:'t', 'recent') AS recent \gset
SELECT count(*) AS first_secret FROM agentidp.create_client_secret(:'keeper');
SELECT count(*) AS second_secret FROM agentidp.create_client_secret(:'keeper');
SELECT count(*) AS third_secret FROM agentidp.create_client_secret(:'keeper');
SELECT (array_agg(secret_id ORDER BY created_at, secret_id))[1] AS old_secret,
	   (array_agg(secret_id ORDER BY created_at, secret_id))[2] AS live_secret,
	   (array_agg(secret_id ORDER BY created_at, secret_id))[3] AS family_secret
FROM agentidp.client_secrets WHERE agent_id = :'keeper' \gset
SELECT agentidp.delete_agent(:'leaver');
SELECT agentidp.delete_agent(:'recent');

-- what has ended, by how long; the settings say when each may go
INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at) VALUES
	(:'t', 'past-leeway', now() - interval '2 minutes'),
	(:'t', 'within-leeway', now() - interval '30 seconds'),
	(:'t', 'live', now() + interval '5 minutes');
INSERT INTO agentidp.used_jtis (tenant_id, kind, jti, expires_at) VALUES
	(:'t', 'client_assertion', 'ended', now() - interval '1 second'),
	(:'t', 'dpop_proof', 'live', now() + interval '1 minute');
INSERT INTO agentidp.refresh_tokens (tenant_id, family_id, agent_id, token_hash, scope, audience,
									 expires_at, idle_expires_at) VALUES
	(:'t', gen_random_uuid(), :'keeper', '\x01', '', 'a', now() - interval '2 minutes', now() + interval '1 day'),
	(:'t', gen_random_uuid(), :'keeper', '\x02', '', 'a', now() + interval '1 day', now() - interval '2 minutes'),
	(:'t', gen_random_uuid(), :'keeper', '\x03', '', 'a', now() + interval '1 day', now() + interval '1 hour');
-- a live refresh family that began with a secret which has expired since
INSERT INTO agentidp.refresh_tokens (tenant_id, family_id, agent_id, token_hash, scope, audience,
									 expires_at, idle_expires_at, cred)
VALUES (:'t', gen_random_uuid(), :'keeper', '\x04', '', 'a', now() + interval '1 day', now() + interval '1 hour',
		's:' || :'family_secret');
-- a secret revoked an hour ago (longer than a token lives), an agent deleted a month ago
SET session_replication_role = replica;
UPDATE agentidp.client_secrets SET revoked_at = now() - interval '1 hour' WHERE secret_id = :'old_secret';
UPDATE agentidp.client_secrets SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour'
WHERE secret_id = :'family_secret';
UPDATE agentidp.agents SET deleted_at = now() - interval '31 days' WHERE agent_id = :'leaver';
RESET session_replication_role;

SELECT * FROM agentidp.expire_batch() ORDER BY kind;
SELECT jti FROM agentidp.revoked_tokens WHERE tenant_id = :'t' ORDER BY jti;
SELECT kind, jti FROM agentidp.used_jtis WHERE tenant_id = :'t';
SELECT token_hash FROM agentidp.refresh_tokens WHERE tenant_id = :'t' ORDER BY token_hash;
-- the live secret, and the expired one a live refresh family began with, stay
SELECT secret_id = :'live_secret' AS live_secret, secret_id = :'family_secret' AS family_secret
FROM agentidp.client_secrets WHERE tenant_id = :'t' ORDER BY created_at, secret_id;
-- once the family ends, the expired secret goes too
UPDATE agentidp.refresh_tokens SET revoked_at = now() WHERE cred = 's:' || :'family_secret';
SELECT deleted AS family_secret_deleted FROM agentidp.expire_batch() WHERE kind = 'client_secrets';
SELECT name, status FROM agentidp.agents WHERE tenant_id = :'t' ORDER BY name;
-- deleting the agent was audited, as every change to agents is
SELECT action, resource FROM agentidp.audit_events WHERE tenant_id = :'t' AND resource = 'agentidp.agents'
ORDER BY seq DESC LIMIT 1;
SELECT sum(deleted) AS nothing_left FROM agentidp.expire_batch();

-- batches: at most batch_size rows of each kind
INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at)
SELECT :'t', 'old-' || i, now() - interval '1 hour' FROM generate_series(1, 5) i;
SELECT deleted FROM agentidp.expire_batch(2) WHERE kind = 'revoked_tokens';
SELECT deleted FROM agentidp.expire_batch(2) WHERE kind = 'revoked_tokens';
SELECT deleted FROM agentidp.expire_batch(2) WHERE kind = 'revoked_tokens';
SELECT * FROM agentidp.expire_batch(0);
SET agentidp.expiry_batch_size = 0;

-- incremental verification: new rows only, and a break announced once
SELECT ok, rows_checked > 0 AS checked, newly_broken FROM agentidp.verify_audit_increment()
WHERE tenant_id = :'t';
SELECT seq = (SELECT max(seq) FROM agentidp.audit_events WHERE tenant_id = :'t') AS at_head
FROM agentidp.audit_verified WHERE tenant_id = :'t';
SELECT count(*) AS nothing_new FROM agentidp.verify_audit_increment() WHERE tenant_id = :'t';
SELECT agentidp.register_agent(:'t', 'later') IS NOT NULL AS registered;
SELECT ok, rows_checked, newly_broken FROM agentidp.verify_audit_increment() WHERE tenant_id = :'t';
SELECT agentidp.register_agent(:'t', 'tampered') IS NOT NULL AS registered;
SELECT max(seq) AS bad FROM agentidp.audit_events WHERE tenant_id = :'t' \gset
SET session_replication_role = replica;
UPDATE agentidp.audit_events SET detail = '{"forged": true}' WHERE tenant_id = :'t' AND seq = :bad;
RESET session_replication_role;
SELECT ok, first_bad_seq = :bad AS at_tampered_row, reason, newly_broken
FROM agentidp.verify_audit_increment() WHERE tenant_id = :'t';
SELECT ok, first_bad_seq = :bad AS at_tampered_row, newly_broken
FROM agentidp.verify_audit_increment() WHERE tenant_id = :'t';
SELECT broken_seq = :bad AS recorded, broken_reason, reported_at IS NOT NULL AS reported
FROM agentidp.audit_verified WHERE tenant_id = :'t';
-- a row verified before that changes afterwards shows at the next run
SET session_replication_role = replica;
UPDATE agentidp.audit_events SET detail = '{"forged": false}' WHERE tenant_id = :'t' AND seq = :bad - 1;
RESET session_replication_role;
SELECT ok, first_bad_seq = :bad - 1 AS at_changed_row, reason, newly_broken
FROM agentidp.verify_audit_increment() WHERE tenant_id = :'t';
SELECT * FROM agentidp.verify_audit_increment(0);

-- everything in one call, as the worker and pg_cron run it; the status view
CALL agentidp.run_maintenance();
SELECT task, runs > 0 AS ran, last_ok, problems IS NOT NULL AS problems FROM agentidp.worker_status ORDER BY task;
-- the broken chain found above, as a problem of the task
SELECT p LIKE 'tenant ' || :'t' || ': broken at row % verified before, was changed or removed' AS broken_chain_shown
FROM agentidp.worker_status, unnest(problems) AS p WHERE task = 'audit_verification' AND p LIKE '%' || :'t' || '%';

-- administrators read the status; the tasks are the superuser's
SET ROLE regress_admin_a;
SELECT count(*) AS tasks FROM agentidp.worker_status;
-- the broken chain of a tenant they do not administer is not theirs to see
SELECT count(*) AS shown FROM agentidp.worker_status, unnest(problems) AS p WHERE p LIKE '%' || :'t' || '%';
\set VERBOSITY terse
SELECT * FROM agentidp.expire_batch();
SELECT * FROM agentidp.verify_audit_increment();
CALL agentidp.run_maintenance();
SELECT * FROM agentidp.maintenance_tasks;
\set VERBOSITY default
RESET ROLE;
