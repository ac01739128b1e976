-- bench/tokens.sh: the floor of verify_token.sql, the same lookup of one of
-- the -D ntokens=... tokens of bench_tokens.tokens, without verification.
\set n random(1, :ntokens)
SELECT length(token) FROM bench_tokens.tokens WHERE n = :n;
