-- bench/limits.sh, before each run: the token rate limits of agent bench
-- (:'lim') and of tenant bench-tokens (:'tenant_lim'), both made by
-- bench/tokens/setup.sql: "unlimited", or a limit no run can reach, so that
-- every grant is checked and none refused.
--
--   psql -X -q -v ON_ERROR_STOP=1 -v lim=... -v tenant_lim=... -v t=<tenant_id> \
--        -f bench/limits/limit.sql
SELECT agentidp.set_token_rate_limit(agent_id, :'lim') FROM agentidp.agents
WHERE tenant_id = :'t' AND name = 'bench' AND status = 'active' \g /dev/null
UPDATE agentidp.tenants SET settings = settings || jsonb_build_object('tenant_token_rate_limit', :'tenant_lim')
WHERE tenant_id = :'t';
