-- bench/rls.sh: a fresh access token of agent bench-rls, scope docs:read,
-- by the client-credentials grant.  Prints one line: the token and its
-- lifetime in seconds (expires_in), separated by a space.  The grant adds
-- its rows to agentidp.audit_events, which stay there.
--
--   psql -X -q -tA -F ' ' -v ON_ERROR_STOP=1 -v client_id=... \
--		-v client_secret=... -f bench/rls/token.sql
SELECT r ->> 'access_token', r ->> 'expires_in'
FROM agentidp.issue_token(:'client_id', :'client_secret', 'docs:read') AS r;
