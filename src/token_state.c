/*-------------------------------------------------------------------------
 *
 * token_state.c
 *	  What verifying an access token reads about its world, fresh for
 *	  every token: the tenant (issuer, status, default audience), the
 *	  agent's status, whether the jti is revoked, whether the signing key
 *	  still exists and whether the credential that obtained the token is
 *	  still unrevoked.
 *
 *	  Each is one primary-key probe straight through the index, with the
 *	  statement's snapshot, as the extension's own catalogue lookups do: a
 *	  query doing the same spent more of verify_token's time starting its
 *	  executor than the probes themselves take.
 *
 * IDENTIFICATION
 *	  src/token_state.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "agentidp.h"
#include "token_state.h"

/*
 * Look a row up by its two-column primary key (tenant_id, second) and
 * store it in slot; false when there is none.  second is compared with
 * eqproc under the index column's collation.
 */
static bool
pk_lookup(Relation rel, const pg_uuid_t *tenant, Datum second, RegProcedure eqproc,
		  TupleTableSlot *slot)
{
	Relation	idx = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	ScanKeyData keys[2];
	IndexScanDesc scan;
	bool		found;

	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   idx->rd_indcollation[0], F_UUID_EQ, UUIDPGetDatum(tenant));
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   idx->rd_indcollation[1], eqproc, second);
	scan = index_beginscan(rel, idx, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(idx, AccessShareLock);
	return found;
}

static Datum
column(TupleTableSlot *slot, Relation rel, const char *name, bool *isnull)
{
	AttrNumber	att = attnameAttNum(rel, name, false);

	if (att == InvalidAttrNumber)
		elog(ERROR, "agentidp.%s has no column %s", RelationGetRelationName(rel), name);
	return slot_getattr(slot, att, isnull);
}

static char *
text_column(TupleTableSlot *slot, Relation rel, const char *name)
{
	bool		isnull;
	Datum		d = column(slot, rel, name, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* a probe of one table: found, and the slot holds the row */
static bool
probe(const char *table, const pg_uuid_t *tenant, Datum second, RegProcedure eqproc,
	  Relation *rel, TupleTableSlot **slot)
{
	*rel = table_open(agentidp_relation_oid(table), AccessShareLock);
	*slot = table_slot_create(*rel, NULL);
	return pk_lookup(*rel, tenant, second, eqproc, *slot);
}

static void
done(Relation rel, TupleTableSlot *slot)
{
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, AccessShareLock);
}

void
agentidp_token_state(const pg_uuid_t *tenant, const pg_uuid_t *agent,
					 const char *jti, const char *kid, const char *cred,
					 TokenState *st)
{
	Relation	rel;
	TupleTableSlot *slot;
	bool		isnull;

	memset(st, 0, sizeof(*st));

	/* tenants: by tenant_id alone */
	rel = table_open(agentidp_relation_oid("tenants"), AccessShareLock);
	slot = table_slot_create(rel, NULL);
	{
		Relation	idx = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
		ScanKeyData key;
		IndexScanDesc scan;

		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(tenant));
		scan = index_beginscan(rel, idx, GetActiveSnapshot(), 1, 0);
		index_rescan(scan, &key, 1, NULL, 0);
		st->tenant_found = index_getnext_slot(scan, ForwardScanDirection, slot);
		index_endscan(scan);
		index_close(idx, AccessShareLock);
	}
	if (st->tenant_found)
	{
		Jsonb	   *settings;
		JsonbValue	k;
		JsonbValue *v;

		st->issuer = text_column(slot, rel, "issuer");
		st->tenant_status = text_column(slot, rel, "status");
		settings = DatumGetJsonbP(column(slot, rel, "settings", &isnull));
		k.type = jbvString;
		k.val.string.val = "audience";
		k.val.string.len = strlen("audience");
		v = isnull ? NULL : findJsonbValueFromContainer(&settings->root, JB_FOBJECT, &k);
		st->default_audience = (v != NULL && v->type == jbvString) ?
			pnstrdup(v->val.string.val, v->val.string.len) : st->issuer;
	}
	done(rel, slot);
	if (!st->tenant_found)
		return;

	if (probe("agents", tenant, UUIDPGetDatum(agent), F_UUID_EQ, &rel, &slot))
	{
		st->agent_found = true;
		st->agent_status = text_column(slot, rel, "status");
	}
	done(rel, slot);

	st->revoked = probe("revoked_tokens", tenant, CStringGetTextDatum(jti), F_TEXTEQ, &rel, &slot);
	done(rel, slot);

	/* no kid: the caller verified the signature elsewhere (PostgREST) */
	st->key_exists = true;
	if (kid != NULL)
	{
		st->key_exists = probe("signing_keys", tenant, CStringGetTextDatum(kid), F_TEXTEQ,
							   &rel, &slot);
		done(rel, slot);
	}

	/* cred is "s:<secret_id>" or "k:<key_id>", checked by the caller */
	st->cred_active = true;
	if (cred != NULL)
	{
		Datum		id = DirectFunctionCall1(uuid_in, CStringGetDatum(cred + 2));

		st->cred_active =
			probe(cred[0] == 's' ? "client_secrets" : "client_keys", tenant, id, F_UUID_EQ,
				  &rel, &slot) &&
			(column(slot, rel, "revoked_at", &isnull), isnull);
		done(rel, slot);
	}
}
