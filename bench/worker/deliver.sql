-- bench/worker.sh: every pending delivery, in one call, timed: "<delivered> <ms>"
SET client_min_messages = warning;
SET agentidp.allow_private_addresses = on;
SET agentidp.webhook_batch_size = :batch;
SELECT clock_timestamp() AS t0 \gset
CALL agentidp.deliver_webhooks(0, '600 seconds') \gset
SELECT :delivered || ' ' || round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, 1);
