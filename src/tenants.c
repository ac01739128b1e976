/*-------------------------------------------------------------------------
 *
 * tenants.c
 *	  Which tenants the calling database role administers, and the creation
 *	  of a tenant with its first administrator.  Both must read or write
 *	  rows the caller cannot yet see under row-level security, while knowing
 *	  who the caller is; a SECURITY DEFINER function cannot do both (inside
 *	  it, current_user is the definer), so these switch to the extension
 *	  owner in C after capturing the caller.  Everything else about tenants
 *	  and agents is plain SQL in agentidp--*.sql.
 *
 * IDENTIFICATION
 *	  src/tenants.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "agentidp.h"

PG_FUNCTION_INFO_V1(agentidp_admin_tenants);
PG_FUNCTION_INFO_V1(agentidp_insert_tenant);

/* prepared once per backend; the plan cache replans after DDL */
static SPIPlanPtr admin_tenants_plan = NULL;

/*
 * agentidp.admin_tenants() RETURNS uuid[]
 *
 * The tenants bound (agentidp.tenant_admins) to a role whose privileges the
 * caller has, directly or through role membership.  Every row-level
 * security policy of the extension is keyed on this set.  A binding counts
 * only while the role's oid still carries the name it had when bound: role
 * oids are not pinned by any dependency, and one may be reused after DROP
 * ROLE.
 */
Datum
agentidp_admin_tenants(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	AgentidpOwnerContext oc;
	MemoryContext outer = CurrentMemoryContext;
	ArrayBuildState *astate = NULL;
	Datum		result;

	args[0] = ObjectIdGetDatum(caller);

	SPI_connect();
	agentidp_become_owner(&oc);
	(void) agentidp_run_plan(&admin_tenants_plan,
							 "SELECT DISTINCT a.tenant_id "
							 "FROM agentidp.tenant_admins a "
							 "JOIN pg_catalog.pg_roles r "
							 "  ON r.oid OPERATOR(pg_catalog.=) a.member::pg_catalog.oid "
							 " AND r.rolname OPERATOR(pg_catalog.=) a.member_name "
							 "WHERE pg_catalog.pg_has_role($1, r.oid, 'USAGE')",
							 1, argtypes, args, NULL, true, 0);

	astate = initArrayResult(UUIDOID, outer, false);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i],
									  SPI_tuptable->tupdesc, 1, &isnull);

		accumArrayResult(astate, d, isnull, UUIDOID, outer);
	}
	agentidp_restore_user(&oc);

	result = makeArrayResult(astate, outer);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * agentidp._insert_tenant(name text, issuer text) RETURNS uuid
 *
 * Inserts the tenant and binds the calling role as its administrator, both
 * as the extension owner.  agentidp.create_tenant() validates the arguments
 * first for friendly errors; the table's constraints hold regardless.
 */
Datum
agentidp_insert_tenant(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	text	   *name;
	text	   *issuer;
	AgentidpOwnerContext oc;
	Oid			argtypes[2];
	Datum		args[2];
	pg_uuid_t  *tenant_id;
	bool		isnull;
	int			rc;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("tenant name must not be null"));
	name = PG_GETARG_TEXT_PP(0);
	if (PG_ARGISNULL(1))
		issuer = cstring_to_text(psprintf("%s/t/%s", agentidp_issuer_base,
										  text_to_cstring(name)));
	else
		issuer = PG_GETARG_TEXT_PP(1);

	SPI_connect();
	agentidp_become_owner(&oc);

	/*
	 * Names and issuers are unique across tenants.  Say which one clashes
	 * rather than naming a constraint; the unique indexes still decide
	 * under concurrency.
	 */
	argtypes[0] = TEXTOID;
	argtypes[1] = TEXTOID;
	args[0] = PointerGetDatum(name);
	args[1] = PointerGetDatum(issuer);
	rc = SPI_execute_with_args("SELECT name OPERATOR(pg_catalog.=) $1 "
							   "FROM agentidp.tenants "
							   "WHERE name OPERATOR(pg_catalog.=) $1 "
							   "OR issuer OPERATOR(pg_catalog.=) $2 LIMIT 1",
							   2, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		bool		same_name = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc,
														   1, &isnull));

		ereport(ERROR,
				errcode(ERRCODE_UNIQUE_VIOLATION),
				same_name ?
				errmsg("a tenant named \"%s\" already exists",
					   text_to_cstring(name)) :
				errmsg("a tenant with issuer \"%s\" already exists",
					   text_to_cstring(issuer)),
				errhint("Tenant names and issuers are unique across the database."));
	}

	rc = SPI_execute_with_args("INSERT INTO agentidp.tenants (name, issuer) "
							   "VALUES ($1, $2) RETURNING tenant_id",
							   2, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not insert tenant: %s", SPI_result_code_string(rc));
	tenant_id = (pg_uuid_t *) SPI_palloc(sizeof(pg_uuid_t));
	memcpy(tenant_id,
		   DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(pg_uuid_t));

	argtypes[0] = UUIDOID;
	argtypes[1] = OIDOID;
	args[0] = UUIDPGetDatum(tenant_id);
	args[1] = ObjectIdGetDatum(caller);
	rc = SPI_execute_with_args("INSERT INTO agentidp.tenant_admins (tenant_id, member) "
							   "VALUES ($1, $2::pg_catalog.regrole)",
							   2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not bind tenant administrator: %s",
			 SPI_result_code_string(rc));

	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_UUID_P(tenant_id);
}
