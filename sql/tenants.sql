--
-- Tenants and their administrators (src/tenants.c, agentidp--0.1.sql)
--
\set SHOW_CONTEXT never
SET agentidp.issuer_base = 'https://idp.example.com';

-- the issuer base is validated
SET agentidp.issuer_base = 'ftp://idp.example.com';
SET agentidp.issuer_base = 'https://idp.example.com/';
SET agentidp.issuer_base = 'https://idp.example.com?x=1';
SET agentidp.issuer_base = 'https:///path';
SET agentidp.issuer_base = 'https://idp example.com';
SELECT set_config('agentidp.issuer_base', 'https://' || repeat('a', 182), false);
SHOW agentidp.issuer_base;
-- the longest base and the longest name still make a valid issuer
SELECT set_config('agentidp.issuer_base', 'https://' || repeat('a', 181), false) IS NOT NULL AS set;
SELECT agentidp.create_tenant(repeat('b', 63)) IS NOT NULL AS created;
SELECT char_length(issuer) FROM agentidp.tenants WHERE name = repeat('b', 63);
DELETE FROM agentidp.tenants WHERE name = repeat('b', 63);
SET agentidp.issuer_base = 'https://idp.example.com';

-- only superusers may change it
SET ROLE regress_admin_a;
SET agentidp.issuer_base = 'https://evil.example.com';

-- create a tenant: the issuer defaults to <issuer_base>/t/<name>
SELECT agentidp.create_tenant('tenant-a') AS ta \gset
SELECT name, issuer, status, settings FROM agentidp.tenants;
SELECT agentidp.admin_tenants() = ARRAY[:'ta']::uuid[] AS administers_a;

-- an explicit issuer
SELECT agentidp.create_tenant('tenant-a.eu', 'https://eu.example.com/tenants/a') AS ta_eu \gset
SELECT name, issuer FROM agentidp.tenants ORDER BY name;

-- bad names, issuers and duplicates
SELECT agentidp.create_tenant(NULL);
SELECT agentidp.create_tenant('');
SELECT agentidp.create_tenant('Acme Corp');
SELECT agentidp.create_tenant('-leading-dash');
SELECT agentidp.create_tenant(repeat('a', 64));
SELECT agentidp.create_tenant('tenant-x', 'ftp://example.com');
SELECT agentidp.create_tenant('tenant-x', 'https://example.com/');
SELECT agentidp.create_tenant('tenant-x', 'https://example.com/a?b=c');
SELECT agentidp.create_tenant('tenant-x', 'https://example.com/#frag');
SELECT agentidp.create_tenant('tenant-x', 'https://' || repeat('a', 250));
SELECT agentidp.create_tenant('tenant-a');
SELECT agentidp.create_tenant('tenant-x', 'https://eu.example.com/tenants/a');

-- 63 characters is the longest name
SELECT agentidp.create_tenant(repeat('a', 63)) IS NOT NULL AS created;

-- nothing of the failed calls remains
SELECT count(*) FROM agentidp.tenants;

-- a second administrator, then a group role whose members administer
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_a2');
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_a2');
SELECT member FROM agentidp.tenant_admins WHERE tenant_id = :'ta' ORDER BY member::text;
SET ROLE regress_admin_a2;
SELECT name FROM agentidp.tenants;
-- an administrator may step down while another remains
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a2');
SELECT name FROM agentidp.tenants;
SET ROLE regress_admin_a;
SELECT agentidp.add_tenant_admin(:'ta', 'regress_team');
SET ROLE regress_admin_a2;
SELECT name FROM agentidp.tenants;
SET ROLE regress_admin_a;
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_team');
SET ROLE regress_admin_a2;
SELECT name FROM agentidp.tenants;

SET ROLE regress_admin_a;
SELECT agentidp.add_tenant_admin(:'ta', NULL);
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_b');
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a');
SELECT agentidp.add_tenant_admin('00000000-0000-0000-0000-000000000000', 'no_such_role');
\set VERBOSITY terse
SELECT agentidp.add_tenant_admin('00000000-0000-0000-0000-000000000000', 'regress_admin_b');
\set VERBOSITY default

-- the last administrator stays, even against direct deletes, and even
-- when one statement removes the deleter's own binding first
DELETE FROM agentidp.tenant_admins WHERE tenant_id = :'ta';
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_b');
DELETE FROM agentidp.tenant_admins WHERE tenant_id = :'ta';
SELECT member FROM agentidp.tenant_admins WHERE tenant_id = :'ta' ORDER BY member::text;
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_b');

-- a binding follows the role's name: renamed, the role loses the tenant
-- until it is bound again (a dropped role's reused oid inherits nothing)
RESET ROLE;
ALTER ROLE regress_admin_a2 RENAME TO regress_admin_a2_renamed;
SET ROLE regress_admin_a;
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_a2_renamed');
RESET ROLE;
ALTER ROLE regress_admin_a2_renamed RENAME TO regress_admin_a2;
SET ROLE regress_admin_a2;
SELECT name FROM agentidp.tenants;
RESET ROLE;
ALTER ROLE regress_admin_a2 RENAME TO regress_admin_a2_renamed;
SET ROLE regress_admin_a2_renamed;
SELECT name FROM agentidp.tenants;
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a2_renamed');
-- renamed while bound: inert until bound again under the new name
RESET ROLE;
ALTER ROLE regress_admin_a2_renamed RENAME TO regress_admin_a2;
SET ROLE regress_admin_a;
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_a2');
RESET ROLE;
ALTER ROLE regress_admin_a2 RENAME TO regress_admin_a2_renamed;
SET ROLE regress_admin_a2_renamed;
SELECT name FROM agentidp.tenants;
SET ROLE regress_admin_a;
-- an inert binding does not count as an administrator either
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a');
-- and only the role's true name can be recorded
UPDATE agentidp.tenant_admins SET member_name = 'regress_admin_a' WHERE tenant_id = :'ta';
SELECT member, member_name FROM agentidp.tenant_admins WHERE tenant_id = :'ta' ORDER BY member::text;
SET ROLE regress_admin_a2_renamed;
SELECT name FROM agentidp.tenants;
SET ROLE regress_admin_a;
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a2_renamed');
RESET ROLE;
ALTER ROLE regress_admin_a2_renamed RENAME TO regress_admin_a2;
SET ROLE regress_admin_a;
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_a2');
RESET ROLE;
ALTER ROLE regress_admin_a2 RENAME TO regress_admin_a2_renamed;
SET ROLE regress_admin_a;
SELECT agentidp.add_tenant_admin(:'ta', 'regress_admin_a2_renamed');
SET ROLE regress_admin_a2_renamed;
SELECT name FROM agentidp.tenants;
SET ROLE regress_admin_a;
SELECT agentidp.remove_tenant_admin(:'ta', 'regress_admin_a2_renamed');
RESET ROLE;
ALTER ROLE regress_admin_a2_renamed RENAME TO regress_admin_a2;
SET ROLE regress_admin_a;

-- administrators may suspend their tenant by updating it; the database
-- keeps updated_at
SELECT updated_at AS before_update FROM agentidp.tenants WHERE tenant_id = :'ta_eu' \gset
UPDATE agentidp.tenants SET status = 'suspended' WHERE tenant_id = :'ta_eu';
SELECT updated_at > :'before_update' AS updated_at_moved FROM agentidp.tenants WHERE tenant_id = :'ta_eu';
UPDATE agentidp.tenants SET updated_at = now() WHERE tenant_id = :'ta_eu';
UPDATE agentidp.tenants SET status = 'gone' WHERE tenant_id = :'ta_eu';
UPDATE agentidp.tenants SET name = 'renamed' WHERE tenant_id = :'ta_eu';
SELECT name, status FROM agentidp.tenants WHERE tenant_id = :'ta_eu';

-- roles outside agentidp_admin cannot create tenants or see any
SET ROLE regress_outsider;
SELECT agentidp.create_tenant('tenant-o');
SELECT count(*) FROM agentidp.tenants;
SET ROLE regress_service;
SELECT agentidp.create_tenant('tenant-s');
SELECT count(*) FROM agentidp.tenants;
RESET ROLE;

-- a superuser sees every tenant
SELECT count(*) FROM agentidp.tenants;
