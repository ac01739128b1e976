/* agentidp--0.9--0.10.sql: issuance quotas and daily caps (docs/limits.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.10'" to load this file. \quit

/*
 * Monthly issuance quota of a tenant: settings."monthly_token_quota", a
 * whole number of tokens from 0, or "unlimited" (the default, also when
 * absent).  Months are calendar months in UTC.
 */
CREATE FUNCTION agentidp._valid_quota_settings(settings jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN NOT (settings ? 'monthly_token_quota')
	OR settings -> 'monthly_token_quota' OPERATOR(pg_catalog.=) '"unlimited"'::jsonb
	OR (pg_catalog.jsonb_typeof(settings -> 'monthly_token_quota') OPERATOR(pg_catalog.=) 'number'
		AND (settings ->> 'monthly_token_quota') OPERATOR(pg_catalog.~) '^[0-9]{1,15}$');
COMMENT ON FUNCTION agentidp._valid_quota_settings(jsonb) IS
'true when a tenant''s settings have no monthly_token_quota, or one that is "unlimited" or a whole number from 0 to 999999999999999';
ALTER TABLE agentidp.tenants ADD CONSTRAINT tenants_quota_settings_valid
	CHECK (agentidp._valid_quota_settings(settings));

/*
 * Tokens issued per tenant and month (the first day of the month, UTC),
 * counted by the grants in the transaction that issues the token, and
 * only while the tenant has a quota: an unlimited tenant costs nothing.
 * A new month is a new row, so the quota resets by itself at the
 * boundary; the maintenance task quota_reset deletes old months.
 *
 * Not audited: each issued token is an audit event already (token.issue),
 * and a trigger would add a second row per token to the chain.
 */
CREATE TABLE agentidp.token_usage (
	tenant_id	uuid NOT NULL REFERENCES agentidp.tenants ON DELETE CASCADE,
	month		date NOT NULL
				CONSTRAINT token_usage_month_valid
				CHECK (pg_catalog.date_part('day', month) OPERATOR(pg_catalog.=) 1),
	issued		bigint NOT NULL DEFAULT 0 CONSTRAINT token_usage_issued_valid CHECK (issued >= 0),
	CONSTRAINT token_usage_pkey PRIMARY KEY (tenant_id, month)
);
COMMENT ON TABLE agentidp.token_usage IS
'tokens issued per tenant and calendar month (UTC), counted while the tenant has a monthly_token_quota';

/*
 * Daily caps of an agent: how many actions it may record a day, and how
 * much it may spend a day in one currency.  NULL: no cap.  Columns of
 * agents, so that their changes are audited like every change of an agent.
 */
ALTER TABLE agentidp.agents
	ADD COLUMN daily_action_cap integer
		CONSTRAINT agents_daily_action_cap_valid CHECK (daily_action_cap >= 0),
	ADD COLUMN daily_spend_limit numeric
		CONSTRAINT agents_daily_spend_limit_valid CHECK (daily_spend_limit >= 0),
	-- without a default here: filling existing rows would have them checked,
	-- a scan that the admin API's functions on the row type forbid in an
	-- upgrade.  Their NULL reads as USD.
	ADD COLUMN spend_currency text
		CONSTRAINT agents_spend_currency_valid CHECK (spend_currency OPERATOR(pg_catalog.~) '^[A-Z]{3}$');
ALTER TABLE agentidp.agents ALTER COLUMN spend_currency SET DEFAULT 'USD';
COMMENT ON COLUMN agentidp.agents.daily_action_cap IS
'how many actions (agentidp.record_action) the agent may record a day (UTC); NULL: no cap';
COMMENT ON COLUMN agentidp.agents.daily_spend_limit IS
'how much the agent may spend a day (UTC) in spend_currency through agentidp.record_action; NULL: no limit';
COMMENT ON COLUMN agentidp.agents.spend_currency IS
'the ISO 4217 currency of daily_spend_limit (NULL: USD)';

/*
 * Actions and spending per agent, day (UTC) and currency.  Audited: the
 * row carries the last action recorded, so that each recorded action is
 * a change in the tenant's audit chain with what was done, for how much.
 */
CREATE TABLE agentidp.agent_daily_usage (
	tenant_id	uuid NOT NULL,
	agent_id	uuid NOT NULL,
	day			date NOT NULL,
	currency	text NOT NULL,
	actions		bigint NOT NULL DEFAULT 0,
	spent		numeric NOT NULL DEFAULT 0,
	last_action	text NOT NULL,
	last_amount	numeric NOT NULL,
	last_detail	jsonb NOT NULL DEFAULT '{}',
	CONSTRAINT agent_daily_usage_pkey PRIMARY KEY (tenant_id, agent_id, day, currency),
	CONSTRAINT agent_daily_usage_agent_fkey FOREIGN KEY (tenant_id, agent_id)
		REFERENCES agentidp.agents (tenant_id, agent_id) ON DELETE CASCADE
);
COMMENT ON TABLE agentidp.agent_daily_usage IS
'actions recorded and amounts spent per agent, day (UTC) and currency (agentidp.record_action), with the last action';

DO $rls$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['token_usage', 'agent_daily_usage']
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format('ALTER TABLE agentidp.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format(
			'CREATE POLICY tenant_admin ON agentidp.%I '
			'USING (tenant_id OPERATOR(pg_catalog.=) ANY ((SELECT agentidp.admin_tenants())::uuid[]))', t);
	END LOOP;
END
$rls$;
CREATE TRIGGER agentidp_audit AFTER INSERT OR UPDATE OR DELETE ON agentidp.agent_daily_usage
	FOR EACH ROW EXECUTE FUNCTION agentidp.audit_trigger();
CREATE TRIGGER agentidp_audit_truncate BEFORE TRUNCATE ON agentidp.agent_daily_usage
	FOR EACH STATEMENT EXECUTE FUNCTION agentidp._audited_truncate_refused();

SELECT pg_catalog.pg_extension_config_dump('agentidp.token_usage', '');
SELECT pg_catalog.pg_extension_config_dump('agentidp.agent_daily_usage', '');

/*
 * The current month (UTC) as the quota counts it.
 */
CREATE FUNCTION agentidp._quota_month(at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.date_trunc('month', at AT TIME ZONE 'UTC')::date;
COMMENT ON FUNCTION agentidp._quota_month(timestamptz) IS
'the first day of the calendar month (UTC) of a moment: the key of agentidp.token_usage';

CREATE FUNCTION agentidp.usage(tenant_id uuid, month date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
	m date;
	quota bigint;
	issued bigint;
BEGIN
	PERFORM agentidp._require(month IS NOT NULL, '22004', 'month must not be null');
	t := agentidp._visible_tenant(tenant_id);
	m := date_trunc('month', month)::date;
	IF jsonb_typeof(t.settings -> 'monthly_token_quota') = 'number' THEN
		quota := (t.settings ->> 'monthly_token_quota')::bigint;
	END IF;
	SELECT u.issued INTO issued FROM agentidp.token_usage AS u
		WHERE u.tenant_id = t.tenant_id AND u.month = m;
	-- an unlimited tenant is not counted: no number rather than a wrong one
	IF issued IS NULL AND quota IS NOT NULL THEN
		issued := 0;
	END IF;
	RETURN jsonb_build_object(
		'tenant_id', t.tenant_id,
		'month', to_char(m, 'YYYY-MM'),
		'tokens_issued', issued,
		'quota', COALESCE(to_jsonb(quota), '"unlimited"'::jsonb),
		'remaining', CASE WHEN quota IS NOT NULL THEN greatest(quota - issued, 0) END);
END
$$;
COMMENT ON FUNCTION agentidp.usage(uuid, date) IS
'a tenant''s token issuance in a month (UTC): tokens_issued (null when unlimited and not counted), quota, remaining';

CREATE FUNCTION agentidp.set_monthly_token_quota(tenant_id uuid, quota bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t agentidp.tenants;
BEGIN
	t := agentidp._visible_tenant(tenant_id);
	PERFORM agentidp._require(quota IS NULL OR quota BETWEEN 0 AND 999999999999999, '22023',
		format('invalid monthly token quota %s', quota),
		hint => 'A quota is a number of tokens from 0 to 999999999999999, or NULL for unlimited.');
	UPDATE agentidp.tenants AS x
		SET settings = x.settings || jsonb_build_object('monthly_token_quota',
			COALESCE(to_jsonb(quota), '"unlimited"'::jsonb))
		WHERE x.tenant_id = t.tenant_id;
END
$$;
COMMENT ON FUNCTION agentidp.set_monthly_token_quota(uuid, bigint) IS
'sets how many tokens a tenant may be issued a calendar month (UTC); NULL: unlimited';

CREATE FUNCTION agentidp.set_daily_caps(agent_id uuid, action_cap integer, spend_limit numeric,
										currency text DEFAULT 'USD')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a agentidp.agents;
BEGIN
	a := agentidp._visible_agent(agent_id);
	PERFORM agentidp._require(action_cap IS NULL OR action_cap >= 0, '22023',
		format('invalid daily action cap %s', action_cap),
		hint => 'A daily action cap is a number of actions from 0, or NULL for no cap.');
	PERFORM agentidp._require(spend_limit IS NULL OR spend_limit >= 0, '22023',
		format('invalid daily spend limit %s', spend_limit),
		hint => 'A daily spend limit is an amount from 0, or NULL for no limit.');
	PERFORM agentidp._require(currency IS NOT NULL AND currency ~ '^[A-Z]{3}$', '22023',
		format('invalid currency "%s"', left(currency, 16)),
		hint => 'A currency is an ISO 4217 code of three capital letters, such as "USD" or "EUR".');
	UPDATE agentidp.agents AS x
		SET daily_action_cap = action_cap, daily_spend_limit = spend_limit, spend_currency = currency
		WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id;
END
$$;
COMMENT ON FUNCTION agentidp.set_daily_caps(uuid, integer, numeric, text) IS
'sets how many actions an agent may record a day and how much it may spend a day in a currency; NULL: no cap';

/*
 * An action of the current agent (the identity authenticate() gave the
 * transaction), counted against its daily caps in this transaction.
 * SECURITY DEFINER: the agent's connection writes the counters, which no
 * agent may touch directly.
 *
 * Concurrency: with a cap set, the agent's row is locked first (FOR NO
 * KEY UPDATE, which leaves foreign keys and plain reads alone), so that
 * two actions of one agent are counted one after the other and cannot
 * both pass the last place under the cap.  Under READ COMMITTED the
 * count is read after the lock, in a new snapshot that sees the action
 * that held it.  Without caps nothing is locked beyond the counter row.
 */
CREATE FUNCTION agentidp.record_action(action text, amount numeric DEFAULT 0,
									   currency text DEFAULT 'USD', detail jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a record := agentidp._action_agent(action, amount, currency, detail);
	refusal record := agentidp._action_over_cap(a, amount, currency);
BEGIN
	IF refusal.msg IS NOT NULL THEN
		RAISE EXCEPTION '%', refusal.msg
			USING ERRCODE = 'configuration_limit_exceeded', DETAIL = refusal.detail, HINT = refusal.hint;
	END IF;
	RETURN agentidp._action_count(a, action, amount, currency, detail);
END
$$;
COMMENT ON FUNCTION agentidp.record_action(text, numeric, text, jsonb) IS
'records an action of the current agent and what it spent, refused with 53400 past the agent''s daily action cap or spend limit';

/*
 * The parts of record_action, which later versions arrange anew (0.11
 * approvals, 0.12 the policy hook).  They run as record_action's owner.
 */

-- the checks of the arguments, and the agent of the identity with its caps
CREATE FUNCTION agentidp._action_agent(action text, amount numeric, currency text, detail jsonb,
									   OUT tenant uuid, OUT agent uuid, OUT today date,
									   OUT daily_action_cap integer, OUT daily_spend_limit numeric,
									   OUT spend_currency text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	status text;
BEGIN
	tenant := agentidp.current_tenant();
	agent := agentidp.current_agent();
	today := (now() AT TIME ZONE 'UTC')::date;
	PERFORM agentidp._require(tenant IS NOT NULL AND agent IS NOT NULL, '28000',
		'no agent identity', 'Actions are recorded for the agent of the transaction''s access token.',
		'Call agentidp.authenticate() with the agent''s access token in the same transaction first.');
	PERFORM agentidp._require(action IS NOT NULL AND action ~ '^[[:print:]]{1,128}$', '22023',
		'invalid action name', hint => 'An action name is 1 to 128 printable characters, such as "payment.send".');
	PERFORM agentidp._require(amount IS NOT NULL AND amount >= 0, '22023',
		format('invalid amount %s', amount), hint => 'An amount is a number from 0.');
	PERFORM agentidp._require(currency IS NOT NULL AND currency ~ '^[A-Z]{3}$', '22023',
		format('invalid currency "%s"', left(currency, 16)),
		hint => 'A currency is an ISO 4217 code of three capital letters, such as "USD" or "EUR".');
	PERFORM agentidp._require(detail IS NOT NULL AND jsonb_typeof(detail) = 'object'
		AND octet_length(detail::text) <= 4096, '22023', 'detail must be a JSON object of at most 4096 bytes');

	SELECT x.status, x.daily_action_cap, x.daily_spend_limit, COALESCE(x.spend_currency, 'USD')
		INTO status, daily_action_cap, daily_spend_limit, spend_currency
		FROM agentidp.agents AS x WHERE x.tenant_id = tenant AND x.agent_id = agent;
	PERFORM agentidp._require(FOUND AND status = 'active', '28000', 'agent is not active',
		format('Agent "%s" is suspended, deleted or unknown.', agent));
END
$$;
COMMENT ON FUNCTION agentidp._action_agent(text, numeric, text, jsonb) IS
'record_action''s checks: its arguments, and the active agent of the identity with its daily caps';

/*
 * Whether the action would pass a daily cap of the agent a
 * (_action_agent): NULLs when it passes, else the refusal's message,
 * detail and hint.  With a cap that applies, the agent's row is locked
 * first (see record_action).
 */
CREATE FUNCTION agentidp._action_over_cap(a record, amount numeric, currency text,
										  OUT msg text, OUT detail text, OUT hint text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n_actions bigint;
	n_spent numeric;
BEGIN
	IF a.daily_action_cap IS NULL
		AND (a.daily_spend_limit IS NULL OR currency <> a.spend_currency) THEN
		RETURN;
	END IF;
	PERFORM FROM agentidp.agents AS x WHERE x.tenant_id = a.tenant AND x.agent_id = a.agent
		FOR NO KEY UPDATE;
	SELECT COALESCE(sum(u.actions), 0),
		   COALESCE(sum(u.spent) FILTER (WHERE u.currency = a.spend_currency), 0)
		INTO n_actions, n_spent
		FROM agentidp.agent_daily_usage AS u
		WHERE u.tenant_id = a.tenant AND u.agent_id = a.agent AND u.day = a.today;
	IF n_actions >= a.daily_action_cap THEN
		msg := 'daily action cap of agent exceeded';
		detail := format('The cap is %s actions a day; %s were recorded today (UTC).',
						 a.daily_action_cap, n_actions);
		hint := 'The cap resets at midnight UTC; an administrator of the tenant can raise it with agentidp.set_daily_caps().';
	ELSIF currency = a.spend_currency AND n_spent + amount > a.daily_spend_limit THEN
		msg := 'daily spend limit of agent exceeded';
		detail := format('The limit is %s %s a day; %s %s were spent today (UTC) and %s %s more were asked.',
						 a.daily_spend_limit, currency, n_spent, currency, amount, currency);
		hint := 'The limit resets at midnight UTC; an administrator of the tenant can raise it with agentidp.set_daily_caps().';
	END IF;
END
$$;
COMMENT ON FUNCTION agentidp._action_over_cap(record, numeric, text) IS
'record_action''s caps: the refusal (message, detail, hint) of an action past a daily cap of its agent, else NULLs';

-- the action counted in its day, and record_action's answer
CREATE FUNCTION agentidp._action_count(a record, action text, amount numeric, currency text, detail jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	n_actions bigint;
BEGIN
	INSERT INTO agentidp.agent_daily_usage AS u
		(tenant_id, agent_id, day, currency, actions, spent, last_action, last_amount, last_detail)
	VALUES (a.tenant, a.agent, a.today, currency, 1, amount, action, amount, detail)
	ON CONFLICT ON CONSTRAINT agent_daily_usage_pkey DO UPDATE
		SET actions = u.actions + 1, spent = u.spent + excluded.spent,
			last_action = excluded.last_action, last_amount = excluded.last_amount,
			last_detail = excluded.last_detail
	RETURNING u.actions, u.spent INTO r;

	-- what the caller sees counts every currency's actions, as the cap does
	SELECT COALESCE(sum(u.actions), 0) INTO n_actions FROM agentidp.agent_daily_usage AS u
		WHERE u.tenant_id = a.tenant AND u.agent_id = a.agent AND u.day = a.today;
	RETURN jsonb_build_object(
		'status', 'recorded',
		'action', action,
		'amount', amount,
		'currency', currency,
		'day', a.today,
		'actions_today', n_actions,
		'action_cap', a.daily_action_cap,
		'spent_today', r.spent,
		'spend_limit', CASE WHEN currency = a.spend_currency THEN a.daily_spend_limit END);
END
$$;
COMMENT ON FUNCTION agentidp._action_count(record, text, numeric, text, jsonb) IS
'record_action''s count: the action added to its agent''s day, and the answer {"status": "recorded", ...}';

/*
 * The monthly quota's maintenance: months are rows, so a new month needs
 * no reset; the task quota_reset deletes the months before the previous
 * one (usage() of the last month stays answerable), and daily counters
 * older than a week.  Returns how many rows it deleted.
 */
CREATE OR REPLACE FUNCTION agentidp.reset_quotas() RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
	m bigint;
BEGIN
	DELETE FROM agentidp.token_usage AS u
		WHERE u.month < agentidp._quota_month(now() - interval '1 month');
	GET DIAGNOSTICS n = ROW_COUNT;
	DELETE FROM agentidp.agent_daily_usage AS u
		WHERE u.day < (now() AT TIME ZONE 'UTC')::date - 7;
	GET DIAGNOSTICS m = ROW_COUNT;
	RETURN n + m;
END
$$;
COMMENT ON FUNCTION agentidp.reset_quotas() IS
'deletes the quota counters of past windows (token_usage before last month, agent_daily_usage older than 7 days); returns how many';

/* privileges: new functions start with PUBLIC EXECUTE, which we never grant */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA agentidp FROM PUBLIC;
REVOKE ALL ON agentidp.token_usage, agentidp.agent_daily_usage FROM PUBLIC;
GRANT SELECT ON agentidp.token_usage, agentidp.agent_daily_usage TO agentidp_admin;
-- the CHECK constraint runs as whoever writes a tenant
GRANT EXECUTE ON FUNCTION agentidp._valid_quota_settings(jsonb) TO agentidp_admin, agentidp_service;
GRANT EXECUTE ON FUNCTION
	agentidp.usage(uuid, date),
	agentidp.set_monthly_token_quota(uuid, bigint),
	agentidp.set_daily_caps(uuid, integer, numeric, text)
	TO agentidp_admin;
GRANT EXECUTE ON FUNCTION agentidp._quota_month(timestamptz) TO agentidp_admin;
GRANT EXECUTE ON FUNCTION agentidp.record_action(text, numeric, text, jsonb)
	TO agentidp_agent, agentidp_service;
GRANT UPDATE (daily_action_cap, daily_spend_limit, spend_currency) ON agentidp.agents TO agentidp_admin;
