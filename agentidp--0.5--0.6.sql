/* agentidp--0.5--0.6.sql: outbound webhooks (docs/webhooks.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.6'" to load this file. \quit

/*
 * The events a tenant can subscribe to.  approval.requested has no
 * producer yet; it is accepted so that subscriptions need no change when
 * it comes.
 */
CREATE FUNCTION agentidp._webhook_event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY['agent.created', 'agent.suspended', 'agent.deleted', 'credential.created',
			 'credential.revoked', 'token.reuse_detected', 'approval.requested',
			 'audit.chain_broken']::text[];
COMMENT ON FUNCTION agentidp._webhook_event_types() IS
'the webhook event types a subscription can name';

CREATE FUNCTION agentidp._valid_webhook_events(events text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.array_ndims(events) OPERATOR(pg_catalog.=) 1
	AND pg_catalog.cardinality(events) OPERATOR(pg_catalog.<=) 20
	AND NOT EXISTS (SELECT FROM pg_catalog.unnest(events) AS e
					WHERE e IS NULL
					   OR NOT (e OPERATOR(pg_catalog.=) ANY (agentidp._webhook_event_types())
							   OR e OPERATOR(pg_catalog.=) '*'));
COMMENT ON FUNCTION agentidp._valid_webhook_events(text[]) IS
'true when the array lists 1 to 20 webhook event types, or ''*'' for all';

/* the events of a new subscription, checked, without duplicates, sorted */
CREATE FUNCTION agentidp._check_webhook_events(events text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	bad text;
BEGIN
	PERFORM agentidp._require(cardinality(events) > 0, '22023', 'events must name at least one event',
		NULL, 'Name ''*'' for every event.');
	PERFORM agentidp._require(array_ndims(events) = 1, '22023', 'events must be a one-dimensional array');
	PERFORM agentidp._require(array_position(events, NULL) IS NULL, '22004',
		'events must not contain NULL');
	SELECT e INTO bad FROM unnest(events) AS e
	WHERE NOT (e = ANY (agentidp._webhook_event_types()) OR e = '*') LIMIT 1;
	PERFORM agentidp._require(NOT FOUND, '22023', format('unknown webhook event "%s"', left(bad, 64)),
		format('Webhook events are %s, or * for all.',
			   array_to_string(agentidp._webhook_event_types(), ', ')));
	IF '*' = ANY (events) THEN
		RETURN ARRAY['*'];
	END IF;
	events := ARRAY(SELECT DISTINCT e FROM unnest(events) AS e ORDER BY e);
	PERFORM agentidp._require(cardinality(events) <= 20, '22023', 'events must name at most 20 events');
	RETURN events;
END
$$;
COMMENT ON FUNCTION agentidp._check_webhook_events(text[]) IS
'the webhook event types of a subscription, without duplicates and sorted, or an error naming the first unknown one';

/*
 * Where each tenant's events go.  The secret signs each delivery
 * (HMAC-SHA256), so it is stored sealed under the key-encryption key as
 * signing keys are (src/keys.c), not hashed; only its owner can read even
 * the sealed bytes.  A rotation keeps the previous secret signing until
 * previous_until, so that receivers can switch without losing a delivery.
 * A disabled subscription stays disabled.  Audited, the sealed secrets
 * left out.
 */
CREATE TABLE agentidp.webhook_subscriptions (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants ON DELETE CASCADE,
	subscription_id uuid NOT NULL,
	url			text NOT NULL CONSTRAINT webhook_subscriptions_url_valid
				CHECK (pg_catalog.char_length(url) OPERATOR(pg_catalog.<=) 2048),
	events		text[] NOT NULL CONSTRAINT webhook_subscriptions_events_valid
				CHECK (agentidp._valid_webhook_events(events)),
	wrapped_secret bytea NOT NULL,
	kek_id		text NOT NULL,
	previous_wrapped_secret bytea,
	previous_kek_id text,
	previous_until timestamptz,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	rotated_at	timestamptz,
	disabled_at timestamptz,
	CONSTRAINT webhook_subscriptions_pkey PRIMARY KEY (tenant_id, subscription_id),
	CONSTRAINT webhook_subscriptions_subscription_id_key UNIQUE (subscription_id)
);
COMMENT ON TABLE agentidp.webhook_subscriptions IS
'webhook endpoints of tenants: URL, event types, and the secret that signs deliveries (sealed)';

/*
 * The outbox.  An event and one delivery per matching subscription are
 * written in the transaction of what happened, so an event is queued
 * exactly when that commits.  Delivery state is operational, like
 * refresh tokens: not audited (what made the event is), and purged
 * agentidp.webhook_retention after each delivery is over.  No foreign key
 * to tenants, which would lock the tenant's row for every event.
 */
CREATE TABLE agentidp.webhook_events (
	tenant_id	uuid NOT NULL,
	event_id	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	type		text NOT NULL CONSTRAINT webhook_events_type_valid
				CHECK (type OPERATOR(pg_catalog.=) ANY (agentidp._webhook_event_types())),
	data		jsonb NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT webhook_events_pkey PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX webhook_events_created_idx ON agentidp.webhook_events (created_at);
COMMENT ON TABLE agentidp.webhook_events IS
'webhook events queued for delivery, the payload''s id, type and data';

/*
 * A delivery is claimed with a lease: attempts goes up and next_attempt_at
 * becomes lease_until, so a delivery whose deliverer died is due again
 * when the lease ends (at least once).  After a failure next_attempt_at is
 * the backoff's; after agentidp.webhook_max_attempts the delivery is dead.
 */
CREATE TABLE agentidp.webhook_deliveries (
	tenant_id	uuid NOT NULL,
	delivery_id uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	event_id	uuid NOT NULL,
	subscription_id uuid NOT NULL,
	status		text NOT NULL DEFAULT 'pending'
				CONSTRAINT webhook_deliveries_status_valid CHECK (status IN ('pending', 'delivered', 'dead')),
	attempts	integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	lease_until timestamptz,
	last_attempt_at timestamptz,
	last_status integer,			-- the HTTP status of the last attempt; NULL when none came
	last_error	text,
	delivered_at timestamptz,
	CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (tenant_id, delivery_id),
	CONSTRAINT webhook_deliveries_event_key UNIQUE (tenant_id, event_id, subscription_id),
	CONSTRAINT webhook_deliveries_event_fkey FOREIGN KEY (tenant_id, event_id)
		REFERENCES agentidp.webhook_events (tenant_id, event_id) ON DELETE CASCADE,
	CONSTRAINT webhook_deliveries_subscription_fkey FOREIGN KEY (tenant_id, subscription_id)
		REFERENCES agentidp.webhook_subscriptions (tenant_id, subscription_id) ON DELETE CASCADE
);
-- the due scan: pending deliveries by when they are due
CREATE INDEX webhook_deliveries_due_idx ON agentidp.webhook_deliveries (next_attempt_at)
	WHERE status OPERATOR(pg_catalog.=) 'pending';
CREATE INDEX webhook_deliveries_subscription_idx ON agentidp.webhook_deliveries (tenant_id, subscription_id);
COMMENT ON TABLE agentidp.webhook_deliveries IS
'each queued event''s delivery to each subscription: pending, delivered or dead, with its attempts';

SELECT pg_catalog.pg_extension_config_dump('agentidp.webhook_subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.webhook_events', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.webhook_deliveries', '');

DO $rls$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['webhook_subscriptions', 'webhook_events', 'webhook_deliveries']
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format(
			'CREATE POLICY tenant_admin ON agentidp.%I '
			'USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[])) '
			'WITH CHECK (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))', t);
	END LOOP;
END
$rls$;

CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON agentidp.webhook_subscriptions
	FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger('wrapped_secret', 'previous_wrapped_secret');
CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON agentidp.webhook_subscriptions
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused();

/* disabling is final: a new subscription gets a new secret */
CREATE FUNCTION agentidp._webhook_subscription_stays_disabled() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'a disabled webhook subscription stays disabled'
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  DETAIL = format('Subscription "%s" was disabled at %s.', OLD.subscription_id, OLD.disabled_at),
			  HINT = 'Create a new subscription with agentidp.create_webhook_subscription().';
END
$$;
CREATE TRIGGER stays_disabled BEFORE UPDATE OF disabled_at ON agentidp.webhook_subscriptions
	FOR EACH ROW WHEN (OLD.disabled_at IS NOT NULL)
	EXECUTE FUNCTION agentidp._webhook_subscription_stays_disabled();

/* what a disabled subscription had pending is not delivered (administrators cannot write deliveries) */
CREATE FUNCTION agentidp._webhook_subscription_disabled() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE agentidp.webhook_deliveries AS d
	SET status = 'dead', lease_until = NULL, last_error = 'the subscription was disabled'
	WHERE d.tenant_id = NEW.tenant_id AND d.subscription_id = NEW.subscription_id AND d.status = 'pending';
	RETURN NULL;
END
$$;
CREATE TRIGGER cancel_pending AFTER UPDATE OF disabled_at ON agentidp.webhook_subscriptions
	FOR EACH ROW WHEN (OLD.disabled_at IS NULL AND NEW.disabled_at IS NOT NULL)
	EXECUTE FUNCTION agentidp._webhook_subscription_disabled();

/*
 * Queueing.  The event is written only when a subscription wants it.
 * Called by the extension's own code (triggers, the token service, the
 * maintenance), as the extension owner: nobody else may queue events.
 */
CREATE OR REPLACE FUNCTION agentidp._enqueue_event(tenant_id uuid, event text, data jsonb) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(event = ANY (agentidp._webhook_event_types()), '22023',
		format('unknown webhook event "%s"', event));
	WITH subs AS (
		SELECT s.subscription_id FROM agentidp.webhook_subscriptions AS s
		WHERE s.tenant_id = _enqueue_event.tenant_id AND s.disabled_at IS NULL
		  AND (_enqueue_event.event = ANY (s.events) OR '*' = ANY (s.events))),
	ev AS (
		INSERT INTO agentidp.webhook_events AS e (tenant_id, type, data)
		SELECT _enqueue_event.tenant_id, _enqueue_event.event, _enqueue_event.data
		WHERE EXISTS (SELECT FROM subs)
		RETURNING e.event_id)
	INSERT INTO agentidp.webhook_deliveries (tenant_id, event_id, subscription_id)
	SELECT _enqueue_event.tenant_id, ev.event_id, subs.subscription_id FROM ev, subs;
END
$$;
COMMENT ON FUNCTION agentidp._enqueue_event(uuid, text, jsonb) IS
'queues an event for the tenant''s webhook subscribers, in the calling transaction';

/*
 * The events of agents and credentials.  Payloads carry ids, never a
 * secret, a secret's hash or hint, or a key.
 */
CREATE FUNCTION agentidp._webhook_event_trigger() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r jsonb := to_jsonb(NEW);
	event text;
	data jsonb;
BEGIN
	-- each table's own columns are read from r: NEW has only its table's
	IF TG_TABLE_NAME = 'agents' THEN
		event := CASE WHEN TG_OP = 'INSERT' THEN 'agent.created' ELSE 'agent.' || (r ->> 'status') END;
		data := jsonb_build_object('agent_id', r -> 'agent_id', 'client_id', r -> 'client_id',
								   'name', r -> 'name', 'status', r -> 'status');
	ELSE
		event := CASE WHEN TG_OP = 'INSERT' THEN 'credential.created' ELSE 'credential.revoked' END;
		data := jsonb_build_object('agent_id', r -> 'agent_id',
			'credential_id', COALESCE(r -> 'secret_id', r -> 'key_id'),
			'kind', CASE WHEN TG_TABLE_NAME = 'client_secrets' THEN 'client_secret' ELSE 'client_key' END);
		IF TG_TABLE_NAME = 'client_keys' THEN
			data := data || jsonb_build_object('kid', r -> 'kid');
		END IF;
	END IF;
	PERFORM agentidp._enqueue_event(NEW.tenant_id, event, data);
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION agentidp._webhook_event_trigger() IS
'queues agent.* and credential.* webhook events for changes of agents, client secrets and client keys';

CREATE TRIGGER webhook_event_insert AFTER INSERT ON agentidp.agents
	FOR EACH ROW EXECUTE FUNCTION agentidp._webhook_event_trigger();
CREATE TRIGGER webhook_event_update AFTER UPDATE OF status ON agentidp.agents
	FOR EACH ROW WHEN (NEW.status IN ('suspended', 'deleted') AND OLD.status IS DISTINCT FROM NEW.status)
	EXECUTE FUNCTION agentidp._webhook_event_trigger();
CREATE TRIGGER webhook_event_insert AFTER INSERT ON agentidp.client_secrets
	FOR EACH ROW EXECUTE FUNCTION agentidp._webhook_event_trigger();
CREATE TRIGGER webhook_event_update AFTER UPDATE OF revoked_at ON agentidp.client_secrets
	FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
	EXECUTE FUNCTION agentidp._webhook_event_trigger();
CREATE TRIGGER webhook_event_insert AFTER INSERT ON agentidp.client_keys
	FOR EACH ROW EXECUTE FUNCTION agentidp._webhook_event_trigger();
CREATE TRIGGER webhook_event_update AFTER UPDATE OF revoked_at ON agentidp.client_keys
	FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
	EXECUTE FUNCTION agentidp._webhook_event_trigger();

/* subscriptions (src/webhooks.c) */
CREATE FUNCTION agentidp.create_webhook_subscription(tenant_id uuid, url text, events text[])
RETURNS TABLE(subscription_id uuid, secret text)
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_create_webhook_subscription';
COMMENT ON FUNCTION agentidp.create_webhook_subscription(uuid, text, text[]) IS
'subscribes an http(s) URL to a tenant''s webhook events (''*'' for all); the signing secret is returned this once';

CREATE FUNCTION agentidp.rotate_webhook_secret(subscription_id uuid, overlap interval DEFAULT '1 day')
RETURNS text
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_rotate_webhook_secret';
COMMENT ON FUNCTION agentidp.rotate_webhook_secret(uuid, interval) IS
'gives a subscription a new signing secret, returned this once; deliveries carry a signature with the old one too during the overlap';

CREATE FUNCTION agentidp.disable_webhook_subscription(subscription_id uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM agentidp._require(subscription_id IS NOT NULL, '22004', 'subscription_id must not be null');
	UPDATE agentidp.webhook_subscriptions AS s SET disabled_at = now()
	WHERE s.subscription_id = disable_webhook_subscription.subscription_id AND s.disabled_at IS NULL;
	PERFORM agentidp._require(FOUND, '42704', 'webhook subscription does not exist',
		format('No active webhook subscription with id "%s" is visible to role "%s".',
			   subscription_id, current_user));
END
$$;
COMMENT ON FUNCTION agentidp.disable_webhook_subscription(uuid) IS
'stops a webhook subscription for good; its pending deliveries become dead';

/*
 * Delivery (src/webhooks.c), which agentidp.run_maintenance() calls
 * last.  It commits between its steps, so it is a procedure.
 */
CREATE OR REPLACE PROCEDURE agentidp.deliver_webhooks(INOUT delivered bigint DEFAULT 0,
													  time_budget interval DEFAULT '30 seconds')
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_deliver_webhooks';
COMMENT ON PROCEDURE agentidp.deliver_webhooks(bigint, interval) IS
'delivers the due webhook deliveries, without a lock or snapshot held while waiting on receivers; returns how many were delivered';

/*
 * A new KEK moves webhook secrets too: rewrap_keys() reseals both kinds
 * of secret.
 */
CREATE FUNCTION agentidp._rewrap_signing_keys() RETURNS integer
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_rewrap_keys';
COMMENT ON FUNCTION agentidp._rewrap_signing_keys() IS
're-encrypts every signing key under the first KEK of agentidp.kek_file; returns how many moved';

CREATE FUNCTION agentidp._rewrap_webhook_secrets() RETURNS integer
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_rewrap_webhook_secrets';
COMMENT ON FUNCTION agentidp._rewrap_webhook_secrets() IS
're-encrypts every webhook secret under the first KEK of agentidp.kek_file; returns how many moved';

CREATE OR REPLACE FUNCTION agentidp.rewrap_keys() RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
RETURN agentidp._rewrap_signing_keys() OPERATOR(pg_catalog.+) agentidp._rewrap_webhook_secrets();
COMMENT ON FUNCTION agentidp.rewrap_keys() IS
're-encrypts every signing key and webhook secret under the first KEK of agentidp.kek_file; returns how many moved';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
GRANT SELECT (tenant_id, subscription_id, url, events, kek_id, previous_until, created_at,
			  rotated_at, disabled_at),
	UPDATE (disabled_at)
	ON agentidp.webhook_subscriptions TO agentidp_admin;
GRANT SELECT ON agentidp.webhook_events, agentidp.webhook_deliveries TO agentidp_admin;
GRANT EXECUTE ON FUNCTION
	agentidp._webhook_event_types(),
	agentidp._valid_webhook_events(text[]),
	agentidp._check_webhook_events(text[]),
	agentidp.create_webhook_subscription(uuid, text, text[]),
	agentidp.rotate_webhook_secret(uuid, interval),
	agentidp.disable_webhook_subscription(uuid)
	TO agentidp_admin;
-- _enqueue_event, deliver_webhooks and the rewraps stay with superusers
