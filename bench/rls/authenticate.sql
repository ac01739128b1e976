-- bench/rls.sh: the floor of the other six scripts, their transaction
-- without a query of the tables: authenticate() of the same token (its
-- signature verified once per session, then found in the session's cache,
-- agentidp.verified_token_cache) and SELECT 1.  -D token=... is a fresh
-- access token of agent bench-rls.
BEGIN;
SELECT agentidp.authenticate(:token) IS NOT NULL;
SELECT 1;
END;
