-- bench/tokens.sh: :n distinct access tokens of the client-credentials
-- grant (scope read), made by one statement into bench_tokens.tokens
-- (replaced if there), with the exp claim of each, read from the JWT's
-- payload.  Then one verify_token() of one of them, so that a token the
-- function refuses stops the script here rather than in pgbench.  Prints one
-- line: how long the issuance took and how long the tokens stay valid.
-- Each token adds its rows to agentidp.audit_events, which stay there.
--
--   psql -X -q -tA -v ON_ERROR_STOP=1 -v n=20000 -v client_id=... \
--		-v client_secret=... -f bench/tokens/tokens.sql
SET client_min_messages = warning;

DROP TABLE IF EXISTS bench_tokens.tokens;

SELECT clock_timestamp() AS t0 \gset
-- MATERIALIZED: issue_token runs once per row, whatever uses its result
CREATE TABLE bench_tokens.tokens AS
WITH issued AS MATERIALIZED (
	SELECT i AS n, agentidp.issue_token(:'client_id', :'client_secret', 'read') ->> 'access_token' AS token
	FROM generate_series(1, :n) i
)
SELECT n, token,
	   (convert_from(decode(rpad(translate(split_part(token, '.', 2), '-_', '+/'),
								 (length(split_part(token, '.', 2)) + 3) / 4 * 4, '='),
							'base64'), 'UTF8')::jsonb ->> 'exp')::bigint AS exp
FROM issued;
SELECT clock_timestamp() AS t1 \gset

ALTER TABLE bench_tokens.tokens ADD PRIMARY KEY (n);
ANALYZE bench_tokens.tokens;

SELECT agentidp._require(count(DISTINCT token) = :n AND count(exp) = :n, 'XX000',
						 format('issue_token returned %s distinct access tokens with an exp claim out of %s',
								count(DISTINCT token) FILTER (WHERE exp IS NOT NULL), :n))
FROM bench_tokens.tokens \g /dev/null
-- verify_token raises on a token it refuses; a NULL or false result counts
-- as a refusal too
SELECT agentidp._require(COALESCE(v::text, 'false') <> 'false', 'XX000',
						 'verify_token refused a token that issue_token has just issued')
FROM (SELECT agentidp.verify_token(token) AS v FROM bench_tokens.tokens WHERE n = 1) s \g /dev/null

SELECT format('%s tokens issued in %s s (%s tokens/s in one backend), valid for %s s more',
			  :n, round(extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz), 1),
			  round(:n / extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz)),
			  min(exp) - extract(epoch FROM now())::bigint)
FROM bench_tokens.tokens;
