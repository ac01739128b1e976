--
-- Install the extension and create the database roles the other tests use.
-- Roles are cluster-wide; a previous run's are dropped first.
--
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_admin_a, regress_admin_a2, regress_admin_b,
	regress_team, regress_service, regress_outsider;
RESET client_min_messages;

CREATE EXTENSION agentidp;

-- the roles the extension creates
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles
WHERE rolname IN ('agentidp_admin', 'agentidp_service') ORDER BY rolname;

-- tenant administrators, a group role, the service, and a role without rights
CREATE ROLE regress_admin_a IN ROLE agentidp_admin;
CREATE ROLE regress_admin_a2 IN ROLE agentidp_admin;
CREATE ROLE regress_admin_b IN ROLE agentidp_admin;
CREATE ROLE regress_team;
GRANT regress_team TO regress_admin_a2;
CREATE ROLE regress_service IN ROLE agentidp_service;
CREATE ROLE regress_outsider;

-- every table has RLS enabled and forced, and tenant_id leading its key
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
	   (SELECT a.attname FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum = i.indkey[0]) AS first_key_column
FROM pg_class c
JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE c.relnamespace = 'agentidp'::regnamespace AND c.relkind = 'r'
ORDER BY c.relname;

-- no function is executable by PUBLIC
SELECT p.proname FROM pg_proc p
WHERE p.pronamespace = 'agentidp'::regnamespace
  AND has_function_privilege('regress_outsider', p.oid, 'EXECUTE')
ORDER BY 1;

-- SECURITY DEFINER functions are few, and each pins its search_path
SELECT p.proname, p.proconfig FROM pg_proc p
WHERE p.pronamespace = 'agentidp'::regnamespace AND p.prosecdef
ORDER BY 1;
