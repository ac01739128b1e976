-- bench/tokens.sh: verify_token of one of the -D ntokens=... distinct
-- tokens of bench_tokens.tokens, picked at random; lookup.sql is its floor.
\set n random(1, :ntokens)
SELECT agentidp.verify_token(token) FROM bench_tokens.tokens WHERE n = :n;
