-- bench/worker.sh: a tenant subscribed to agent.created at :url, and :n agents (so :n events)
SET client_min_messages = warning;
SET agentidp.allow_private_addresses = on;
SELECT agentidp.create_tenant(:'name') AS tenant \gset
SELECT count(*) AS subscribed FROM agentidp.create_webhook_subscription(:'tenant', :'url', '{agent.created}') \gset
SELECT count(agentidp.register_agent(:'tenant', 'hook-' || i)) AS registered FROM generate_series(1, :n) i \gset
SELECT count(*) FROM agentidp.webhook_deliveries WHERE tenant_id = :'tenant' AND status = 'pending';
