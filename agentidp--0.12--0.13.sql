/* agentidp--0.12--0.13.sql: approvals expire by themselves (docs/limits.md, docs/worker.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.13'" to load this file. \quit

/*
 * Until 0.13 a pending or approved request past its expiry stayed so
 * until an administrator called expire_approvals(); consume_approval and
 * step-up refused it all the same (they read expires_at), but lists of
 * pending requests showed it.  Now the worker's expiry task marks them.
 */

-- what the worker's expiry task looks for: the open requests, by expiry
CREATE INDEX approvals_open_expiry_idx ON agentidp.approvals (expires_at)
	WHERE status OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'approved']);

/*
 * At most max_rows open requests past their expiry marked expired, the
 * oldest first; rows another transaction holds (a decision or a
 * consumption under way) are skipped, so expiry never waits for them.
 * Each change is audited (approvals is an audited table), by the role
 * that runs it.  NULL: all of them.  Runs as its caller: an
 * administrator marks the requests of the tenants it administers, a
 * superuser (the worker) all.
 */
CREATE FUNCTION agentidp._expire_approvals(max_rows integer) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	UPDATE agentidp.approvals AS a SET status = 'expired'
	FROM (SELECT x.tenant_id, x.approval_id FROM agentidp.approvals AS x
		  WHERE x.status = ANY (ARRAY['pending', 'approved']) AND x.expires_at <= now()
		  ORDER BY x.expires_at LIMIT max_rows
		  FOR UPDATE SKIP LOCKED) AS d
	WHERE a.tenant_id = d.tenant_id AND a.approval_id = d.approval_id;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
COMMENT ON FUNCTION agentidp._expire_approvals(integer) IS
'marks at most max_rows (NULL: all) pending and approved approvals past their expiry expired, the oldest first, skipping rows being decided or consumed; returns how many';

CREATE OR REPLACE FUNCTION agentidp.expire_approvals() RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
RETURN agentidp._expire_approvals(NULL);

/*
 * The expiry task's batch: the deletions of 0.5 (now
 * _expire_deleted_rows), then approvals past their expiry, which are
 * marked, not deleted: a decision stays on record.
 */
ALTER FUNCTION agentidp.expire_batch(integer) RENAME TO _expire_deleted_rows;
COMMENT ON FUNCTION agentidp._expire_deleted_rows(integer) IS
'the deletions of one expiry batch (agentidp.expire_batch): at most batch_size rows of each kind; returns how many of each';

CREATE FUNCTION agentidp.expire_batch(batch_size integer DEFAULT NULL)
RETURNS TABLE(kind text, deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- first, as it calls into the library, which defines the setting read next
	RETURN QUERY SELECT * FROM agentidp._expire_deleted_rows(batch_size);
	kind := 'approvals';
	deleted := agentidp._expire_approvals(COALESCE(batch_size,
												   current_setting('agentidp.expiry_batch_size')::integer));
	RETURN NEXT;
END
$$;
COMMENT ON FUNCTION agentidp.expire_batch(integer) IS
'one batch (agentidp.expiry_batch_size by default) of each kind of expired row, deleted, and of approvals past their expiry, marked expired; returns how many of each';

REVOKE ALL ON FUNCTION agentidp._expire_approvals(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentidp._expire_deleted_rows(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentidp.expire_batch(integer) FROM PUBLIC;
-- expire_approvals() runs as its administrator caller
GRANT EXECUTE ON FUNCTION agentidp._expire_approvals(integer) TO agentidp_admin;
