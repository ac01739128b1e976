/* agentidp--0.14--0.15.sql: the admin API audits the requests it refuses with 403 (docs/http.md) */

\echo Use "ALTER EXTENSION agentidp UPDATE TO '0.15'" to load this file. \quit

CREATE FUNCTION agentidp._audit_admin_refusal(status integer, description text)
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'agentidp_audit_admin_refusal';
COMMENT ON FUNCTION agentidp._audit_admin_refusal(integer, text) IS
'audits an admin API request refused with 403 in the tenant of the transaction''s identity (_admin_problem calls it)';

/*
 * An RFC 9457 problem as in 0.8, and now every 403 the admin API answers
 * is audited: a valid token without the scope agentidp:admin, or a route
 * refusing what the token's agent may not do (42501).  Both come after
 * authentication, whose identity names the agent that asked, in its
 * tenant's chain, with the request's client address and id (the front's
 * access log has its method and path under that id).  A route's refusal
 * is answered after its subtransaction rolled back, so the audit row
 * stays; the front's statement commits it with the answer.  A 401 has no
 * identity to name, nor a chain to write to: it is not audited.
 */
CREATE OR REPLACE FUNCTION agentidp._admin_problem(status integer, detail text, headers jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF status = 403 THEN
		PERFORM agentidp._audit_admin_refusal(status, detail);
	END IF;
	RETURN jsonb_build_object('status', status,
		'headers', jsonb_build_object('Content-Type', 'application/problem+json') || headers,
		'body', jsonb_build_object('type', 'about:blank', 'title', agentidp._admin_reason(status),
								   'status', status)
				|| CASE WHEN detail IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('detail', detail) END);
END
$$;
COMMENT ON FUNCTION agentidp._admin_problem(integer, text, jsonb) IS
'an admin API error answer: an RFC 9457 problem document as application/problem+json; a 403 is audited';

REVOKE ALL ON FUNCTION agentidp._audit_admin_refusal(integer, text) FROM PUBLIC;
