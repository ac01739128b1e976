-- bench/tokens.sh: the floor of a write, one row in one transaction
-- (synchronous_commit on: one WAL flush per transaction).
INSERT INTO bench_tokens.ins (payload) VALUES (md5(random()::text));
