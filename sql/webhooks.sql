--
-- Webhooks (src/webhooks.c, src/http.c, agentidp--0.5--0.6.sql): the
-- subscription functions and their checks, events queued in the
-- transaction of what made them, and delivery refusing an address that
-- is not public.  Delivery to a receiver, retries, a restart during a
-- delivery and dead letters are the TAP test 007_webhooks.
--
\set SHOW_CONTEXT never
SET ROLE regress_admin_a;
SELECT agentidp.create_tenant('hooks') AS t \gset

-- a subscription: its secret is shown once, 256 random bits in base64
SELECT subscription_id AS sub, secret FROM agentidp.create_webhook_subscription(:'t',
	'https://hooks.example.com/agentidp?team=1', '{credential.revoked,agent.created,agent.created}') \gset
SELECT :'secret' ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS secret_format;
SELECT url, events, kek_id, previous_until, rotated_at, disabled_at FROM agentidp.webhook_subscriptions;
-- '*' is every event
SELECT subscription_id AS sub_all FROM agentidp.create_webhook_subscription(:'t',
	'http://all.example.com:8080/', '{agent.created,*}') \gset
SELECT events FROM agentidp.webhook_subscriptions WHERE subscription_id = :'sub_all';
-- the sealed secret is not readable, not even by the tenant's administrators
SELECT wrapped_secret FROM agentidp.webhook_subscriptions;
SELECT previous_wrapped_secret FROM agentidp.webhook_subscriptions;
-- nor do they write subscriptions, events or deliveries but through the functions
INSERT INTO agentidp.webhook_subscriptions (tenant_id, subscription_id, url, events, wrapped_secret, kek_id)
VALUES (:'t', gen_random_uuid(), 'https://x.example.com/', '{*}', '\x00', 'kek1');
INSERT INTO agentidp.webhook_events (tenant_id, type, data) VALUES (:'t', 'agent.created', '{}');
UPDATE agentidp.webhook_deliveries SET status = 'delivered';
RESET ROLE;
-- creating a subscription is audited, the sealed secret left out
SELECT action, resource, (detail::jsonb -> 'new') ? 'wrapped_secret' AS secret_logged,
	   detail::jsonb -> 'new' ->> 'url' AS url
FROM agentidp.audit_events WHERE tenant_id = :'t' ORDER BY seq DESC LIMIT 1;

-- URLs: http or https, a host, no user information or fragment, no white space
SET ROLE regress_admin_a;
SELECT agentidp.create_webhook_subscription(:'t', 'ftp://hooks.example.com/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'hooks.example.com/path', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'https:///path', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://user:pw@hooks.example.com/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/#part', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/a b', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/' || repeat('a', 2030), '{*}');
-- and a public address: not one of the server's own network
SELECT agentidp.create_webhook_subscription(:'t', 'http://127.0.0.1:8080/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://127.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://0x7f.0.0.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://%31%32%37.0.0.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://localhost:8080/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://api.localhost./', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://10.1.2.3/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://172.31.0.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://192.168.1.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://100.64.0.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://169.254.169.254/latest/meta-data/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://0.0.0.0/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://224.0.0.1/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[::1]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[::]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[::ffff:192.168.0.1]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[64:ff9b::a00:1]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[2002:7f00:1::]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[fd00::1]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[fe80::1]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[ff02::1]/', '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'http://[2001:db8::1]/', '{*}');
-- public ones are fine (nothing is requested now)
SELECT count(*) AS created FROM agentidp.create_webhook_subscription(:'t', 'https://8.8.8.8/hook', '{audit.chain_broken}');
SELECT count(*) AS created FROM agentidp.create_webhook_subscription(:'t', 'https://[2606:4700::1111]/hook', '{audit.chain_broken}');
-- the event types
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', '{}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', '{agent.exploded}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', '{agent.created,NULL}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', '{{agent.created}}');
SELECT agentidp.create_webhook_subscription(:'t', NULL, '{*}');
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', NULL);
-- nothing of the failed calls remains
SELECT count(*) FROM agentidp.webhook_subscriptions;
UPDATE agentidp.webhook_subscriptions SET disabled_at = now()
WHERE events = '{audit.chain_broken}';

-- other tenants' administrators see nothing and can do nothing (ids vary: terse)
SET ROLE regress_admin_b;
\set VERBOSITY terse
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', '{*}');
SELECT agentidp.rotate_webhook_secret(:'sub');
SELECT agentidp.disable_webhook_subscription(:'sub');
\set VERBOSITY default
SELECT (SELECT count(*) FROM agentidp.webhook_subscriptions) AS subscriptions,
	   (SELECT count(*) FROM agentidp.webhook_events) AS events,
	   (SELECT count(*) FROM agentidp.webhook_deliveries) AS deliveries;
-- a role that administers nothing may not call the functions
SET ROLE regress_outsider;
\set VERBOSITY terse
SELECT agentidp.create_webhook_subscription(:'t', 'https://hooks.example.com/', '{*}');
SELECT agentidp.rotate_webhook_secret(:'sub');
SELECT agentidp.disable_webhook_subscription(:'sub');
SELECT count(*) FROM agentidp.webhook_subscriptions;
\set VERBOSITY default
RESET ROLE;

-- rotation: a new secret, the old one still signing for the overlap
SET ROLE regress_admin_a;
SELECT agentidp.rotate_webhook_secret(:'sub') AS secret2 \gset
SELECT :'secret2' ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS secret_format, :'secret2' <> :'secret' AS new_secret;
SELECT previous_until BETWEEN now() + interval '23 hours' AND now() + interval '25 hours' AS overlap_of_a_day,
	   rotated_at IS NOT NULL AS rotated
FROM agentidp.webhook_subscriptions WHERE subscription_id = :'sub';
SELECT length(agentidp.rotate_webhook_secret(:'sub', '0')) AS secret_length;
SELECT previous_until FROM agentidp.webhook_subscriptions WHERE subscription_id = :'sub';
SELECT agentidp.rotate_webhook_secret(:'sub', '-1 hour');
SELECT agentidp.rotate_webhook_secret(:'sub', '31 days');
SELECT agentidp.rotate_webhook_secret(NULL);
RESET ROLE;
SELECT (detail::jsonb -> 'new') ?| '{wrapped_secret,previous_wrapped_secret}' AS secret_logged,
	   (detail::jsonb -> 'new') ? 'rotated_at' AS rotation_logged
FROM agentidp.audit_events WHERE tenant_id = :'t' ORDER BY seq DESC LIMIT 1;

-- an event is queued in the transaction of what made it: rolled back, nothing
SET ROLE regress_admin_a;
BEGIN;
SELECT agentidp.register_agent(:'t', 'ghost') IS NOT NULL AS registered;
SELECT type FROM agentidp.webhook_events;
ROLLBACK;
SELECT count(*) AS events_after_rollback FROM agentidp.webhook_events;

-- agents and credentials: what each change queues, and for whom
SELECT agentidp.register_agent(:'t', 'keeper') AS keeper \gset
SELECT client_id AS keeper_client FROM agentidp.agents WHERE agent_id = :'keeper' \gset
SELECT client_secret AS keeper_secret FROM agentidp.create_client_secret(:'keeper') \gset
SELECT secret_id AS keeper_secret_id FROM agentidp.client_secrets WHERE agent_id = :'keeper' \gset
SELECT agentidp.revoke_client_secret(:'keeper_client');
RESET ROLE;
SELECT agentidp.generate_jwk('ES256') AS jwk \gset
SET ROLE regress_admin_a;
SELECT agentidp.add_client_key(:'keeper', :'jwk'::jsonb - 'd') AS kid \gset
UPDATE agentidp.client_keys SET revoked_at = now() WHERE agent_id = :'keeper';
SELECT agentidp.suspend_agent(:'keeper');
SELECT agentidp.reactivate_agent(:'keeper');
SELECT agentidp.delete_agent(:'keeper');
-- in order: type, what the payload names, and the subscriptions it goes to
SELECT e.type,
	   ARRAY(SELECT jsonb_object_keys(e.data) ORDER BY 1) AS payload,
	   e.data ->> 'agent_id' = :'keeper' AS keeper,
	   e.data ->> 'credential_id' = :'keeper_secret_id' AS keeper_secret,
	   e.data ->> 'kid' = :'kid' AS keeper_kid,
	   e.data ->> 'status' AS status,
	   (SELECT array_agg(s.url ORDER BY s.url) FROM agentidp.webhook_deliveries AS d
		JOIN agentidp.webhook_subscriptions AS s USING (tenant_id, subscription_id)
		WHERE d.tenant_id = e.tenant_id AND d.event_id = e.event_id) AS subscriptions
FROM agentidp.webhook_events AS e
ORDER BY e.created_at, e.type;
-- no payload holds the secret
SELECT count(*) AS secrets_in_payloads FROM agentidp.webhook_events
WHERE data::text LIKE '%' || :'keeper_secret' || '%';
SELECT DISTINCT status, attempts, lease_until, last_error FROM agentidp.webhook_deliveries;
RESET ROLE;

-- a refresh token used twice: token.reuse_detected, by ids
SET ROLE regress_admin_a;
SELECT agentidp.rotate_signing_key(:'t') IS NOT NULL AS keyed;
UPDATE agentidp.tenants SET settings = '{"refresh_tokens": true}' WHERE tenant_id = :'t';
SELECT agentidp.register_agent(:'t', 'refresher') AS refresher \gset
SELECT client_id AS rcid, client_secret AS rsecret FROM agentidp.create_client_secret(:'refresher') \gset
RESET ROLE;
SELECT agentidp.issue_token(:'rcid', :'rsecret') ->> 'refresh_token' AS rt \gset
SELECT agentidp.refresh_token(:'rt', :'rcid', :'rsecret') ? 'access_token' AS refreshed;
SELECT agentidp.refresh_token(:'rt', :'rcid', :'rsecret') ->> 'error' AS reused;
SELECT ARRAY(SELECT jsonb_object_keys(data) ORDER BY 1) AS payload,
	   data ->> 'agent_id' = :'refresher' AS refresher,
	   data ->> 'refresh_family' = (SELECT DISTINCT family_id::text FROM agentidp.refresh_tokens
									WHERE agent_id = :'refresher') AS family
FROM agentidp.webhook_events WHERE type = 'token.reuse_detected';

-- the maintenance queues audit.chain_broken; nothing else may queue events
SELECT agentidp._enqueue_event(:'t', 'audit.chain_broken', '{"first_bad_seq": 7}');
SELECT agentidp._enqueue_event(:'t', 'agent.exploded', '{}');
SELECT count(*) AS chain_broken FROM agentidp.webhook_events WHERE type = 'audit.chain_broken';
SET ROLE regress_admin_a;
SELECT agentidp._enqueue_event(:'t', 'audit.chain_broken', '{}');
RESET ROLE;

-- disabling: final, and what was pending for it is not delivered
SET ROLE regress_admin_a;
SELECT agentidp.disable_webhook_subscription(:'sub');
SELECT status, last_error, count(*) FROM agentidp.webhook_deliveries
WHERE subscription_id = :'sub' GROUP BY 1, 2;
\set VERBOSITY terse
SELECT agentidp.disable_webhook_subscription(:'sub');
SELECT agentidp.rotate_webhook_secret(:'sub');
UPDATE agentidp.webhook_subscriptions SET disabled_at = NULL WHERE subscription_id = :'sub';
\set VERBOSITY default
SELECT agentidp.disable_webhook_subscription(NULL);
SELECT agentidp.register_agent(:'t', 'after-disable') IS NOT NULL AS registered;
SELECT count(*) AS to_disabled FROM agentidp.webhook_deliveries AS d
JOIN agentidp.webhook_events AS e USING (tenant_id, event_id)
WHERE d.subscription_id = :'sub' AND e.data ->> 'name' = 'after-disable';
SELECT agentidp.disable_webhook_subscription(:'sub_all');
RESET ROLE;

-- delivery runs outside transaction blocks only, and for superusers
BEGIN;
CALL agentidp.deliver_webhooks();
ROLLBACK;
CALL agentidp.deliver_webhooks(0, '0');
SET ROLE regress_admin_a;
CALL agentidp.deliver_webhooks();
RESET ROLE;

-- an address that is not public is refused where curl connects, whatever
-- the URL said when the subscription was made
SET agentidp.allow_private_addresses = on;
SET ROLE regress_admin_a;
SELECT subscription_id AS sub_local FROM agentidp.create_webhook_subscription(:'t',
	'http://127.0.0.1:1/hook', '{agent.created}') \gset
RESET ROLE;
RESET agentidp.allow_private_addresses;
SELECT agentidp.register_agent(:'t', 'local-1') IS NOT NULL AS registered;
CALL agentidp.deliver_webhooks();
SELECT status, attempts, last_status, last_error, next_attempt_at > now() AS retried_later,
	   lease_until, delivered_at
FROM agentidp.webhook_deliveries WHERE subscription_id = :'sub_local';
-- the last attempt makes it dead
SET agentidp.webhook_max_attempts = 2;
UPDATE agentidp.webhook_deliveries SET next_attempt_at = now() WHERE subscription_id = :'sub_local';
CALL agentidp.deliver_webhooks();
SELECT status, attempts, last_error FROM agentidp.webhook_deliveries WHERE subscription_id = :'sub_local';
-- allowed, the request is made: nobody listens on port 1; and a secret
-- that cannot be decrypted fails its own deliveries only
SET agentidp.allow_private_addresses = on;
SET agentidp.webhook_max_attempts = 1;
SET ROLE regress_admin_a;
SELECT subscription_id AS sub_broken FROM agentidp.create_webhook_subscription(:'t',
	'http://127.0.0.1:1/broken', '{agent.created}') \gset
RESET ROLE;
UPDATE agentidp.webhook_subscriptions SET kek_id = 'gone' WHERE subscription_id = :'sub_broken';
SELECT agentidp.register_agent(:'t', 'local-2') IS NOT NULL AS registered;
CALL agentidp.deliver_webhooks();
SELECT d.subscription_id = :'sub_broken' AS broken, d.status, d.attempts, d.last_status,
	   d.last_error ~ '^Failed to connect to 127\.0\.0\.1 port 1\M' AS connect_failed,
	   CASE WHEN d.subscription_id = :'sub_broken'
			THEN replace(d.last_error, :'sub_broken', '<subscription>') END AS broken_error
FROM agentidp.webhook_deliveries AS d JOIN agentidp.webhook_events AS e USING (tenant_id, event_id)
WHERE e.data ->> 'name' = 'local-2'
ORDER BY 1;
RESET agentidp.allow_private_addresses;
RESET agentidp.webhook_max_attempts;
SELECT count(*) AS pending FROM agentidp.webhook_deliveries WHERE status = 'pending';

-- events whose deliveries are all over go after agentidp.webhook_retention
SET agentidp.webhook_retention = '1min';
UPDATE agentidp.webhook_events SET created_at = created_at - interval '2 minutes';
CALL agentidp.deliver_webhooks();
SELECT (SELECT count(*) FROM agentidp.webhook_events) AS events,
	   (SELECT count(*) FROM agentidp.webhook_deliveries) AS deliveries;
SET agentidp.webhook_retention = '59s';
RESET agentidp.webhook_retention;

-- a new key-encryption key would move the secrets; the same one moves none
UPDATE agentidp.webhook_subscriptions SET kek_id = 'kek1' WHERE subscription_id = :'sub_broken';
SELECT agentidp._rewrap_webhook_secrets() AS moved;
