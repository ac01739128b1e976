/*-------------------------------------------------------------------------
 *
 * audit_verify.c
 *	  Checking the audit chain: verify_audit_chain recomputes every row's
 *	  hash and link and names the first row that does not match;
 *	  audit_checkpoint signs a tenant's chain head so that an outside
 *	  party can later hold the database to it.
 *
 * IDENTIFICATION
 *	  src/audit_verify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "agentidp.h"
#include "audit.h"
#include "keys.h"

PG_FUNCTION_INFO_V1(agentidp_verify_audit_chain);
PG_FUNCTION_INFO_V1(agentidp_audit_checkpoint);

/* one tenant's chain as the scan walks it */
typedef struct ChainCheck
{
	pg_uuid_t	tenant;
	int64		expect_seq;
	uint8		expect_prev[AUDIT_HASH_LEN];
	bool		has_anchor;
	int64		anchor_seq;
	uint8		anchor_hash[AUDIT_HASH_LEN];
	int64		rows;
	int64		bad_seq;		/* 0 while the chain holds */
	char	   *reason;
	/* the last prune event seen: what it says the anchor is */
	bool		saw_prune;
	int64		prune_seq;
	char		prune_hash[2 * AUDIT_HASH_LEN + 1];
} ChainCheck;

static SPIPlanPtr anchor_plan = NULL;

static void
start_tenant(ChainCheck *c, const pg_uuid_t *tenant)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1];

	memset(c, 0, sizeof(*c));
	memcpy(c->tenant.data, tenant->data, UUID_LEN);
	c->expect_seq = 1;

	args[0] = UUIDPGetDatum(tenant);
	(void) agentidp_run_plan(&anchor_plan,
							 "SELECT seq, prev_hash FROM agentidp.audit_anchors "
							 "WHERE tenant_id OPERATOR(pg_catalog.=) $1",
							 1, argtypes, args, NULL, true, 1);
	if (SPI_processed == 1)
	{
		bool		isnull;
		bytea	   *h;

		c->has_anchor = true;
		c->anchor_seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
		h = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 2, &isnull));
		if (VARSIZE_ANY_EXHDR(h) == AUDIT_HASH_LEN)
			memcpy(c->anchor_hash, VARDATA_ANY(h), AUDIT_HASH_LEN);
		c->expect_seq = c->anchor_seq;
		memcpy(c->expect_prev, c->anchor_hash, AUDIT_HASH_LEN);
	}
}

static void
fail(ChainCheck *c, int64 seq, char *reason)
{
	c->bad_seq = seq;
	c->reason = reason;
}

static bool
text_equals(Datum d, const char *s)
{
	text	   *t = DatumGetTextPP(d);
	size_t		len = strlen(s);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), s, len) == 0;
}

/* a prune event (already proven authentic by its hash): the anchor it names */
static void
note_prune(ChainCheck *c, Datum detail)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(TextDatumGetCString(detail))));
	JsonbValue	k;
	JsonbValue *v;

	c->saw_prune = true;
	c->prune_seq = 0;
	c->prune_hash[0] = '\0';
	k.type = jbvString;
	k.val.string.val = "first_kept_seq";
	k.val.string.len = strlen(k.val.string.val);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v != NULL && v->type == jbvNumeric)
	{
		/* a plain integer, as the writer makes it; 6.0 or 1e3 records nothing */
		char	   *n = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric)));
		size_t		len = strlen(n);

		if (len > 0 && len <= 18 && strspn(n, "0123456789") == len)
			c->prune_seq = strtoi64(n, NULL, 10);
	}
	k.val.string.val = "anchor_hash";
	k.val.string.len = strlen(k.val.string.val);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v != NULL && v->type == jbvString && v->val.string.len == 2 * AUDIT_HASH_LEN)
	{
		memcpy(c->prune_hash, v->val.string.val, 2 * AUDIT_HASH_LEN);
		c->prune_hash[2 * AUDIT_HASH_LEN] = '\0';
	}
}

/*
 * Check one row against the chain so far.  The checks run in the order
 * docs/audit.md gives, so that every verifier names the same first bad
 * row and reason.
 */
static void
check_row(ChainCheck *c, Datum *values, bool *isnull)
{
	int64		seq = DatumGetInt64(values[AUDIT_ATT_SEQ - 1]);
	bytea	   *prev = DatumGetByteaPP(values[AUDIT_ATT_PREV_HASH - 1]);
	bytea	   *stored = DatumGetByteaPP(values[AUDIT_ATT_HASH - 1]);
	uint8		hash[AUDIT_HASH_LEN];

	c->rows++;
	if (seq < c->expect_seq)
	{
		fail(c, seq, pstrdup("row lies before the retained history"));
		return;
	}
	if (seq > c->expect_seq)
	{
		fail(c, c->expect_seq, psprintf("row " INT64_FORMAT " is missing", c->expect_seq));
		return;
	}
	if (DatumGetInt16(values[AUDIT_ATT_V - 1]) != AUDIT_ENCODING_VERSION)
	{
		fail(c, seq, pstrdup("unknown encoding version"));
		return;
	}
	if (VARSIZE_ANY_EXHDR(prev) != AUDIT_HASH_LEN ||
		memcmp(VARDATA_ANY(prev), c->expect_prev, AUDIT_HASH_LEN) != 0)
	{
		if (c->has_anchor && seq == c->anchor_seq)
			fail(c, seq, pstrdup("prev_hash does not match the anchor"));
		else
			fail(c, seq, psprintf("prev_hash does not match the hash of row " INT64_FORMAT,
								  seq - 1));
		return;
	}
	audit_row_hash(values, isnull, hash);
	if (VARSIZE_ANY_EXHDR(stored) != AUDIT_HASH_LEN ||
		memcmp(VARDATA_ANY(stored), hash, AUDIT_HASH_LEN) != 0)
	{
		fail(c, seq, pstrdup("hash does not match the row"));
		return;
	}
	if (text_equals(values[AUDIT_ATT_ACTION - 1], "audit.prune"))
		note_prune(c, values[AUDIT_ATT_DETAIL - 1]);
	c->expect_seq = seq + 1;
	memcpy(c->expect_prev, hash, AUDIT_HASH_LEN);
}

/* after a walk from the anchor: the kept history must start where the last prune says it does */
static void
check_prune_recorded(ChainCheck *c)
{
	char		hex[2 * AUDIT_HASH_LEN + 1];

	if (c->bad_seq != 0 || !c->has_anchor)
		return;
	audit_hash_hex(c->anchor_hash, hex);
	if (!c->saw_prune || c->prune_seq != c->anchor_seq ||
		strcmp(c->prune_hash, hex) != 0)
		fail(c, c->anchor_seq,
			 psprintf("history before row " INT64_FORMAT " was removed without a recorded prune",
					  c->anchor_seq));
}

/* the verdict on a tenant, as a result row */
static void
finish_tenant(ChainCheck *c, ReturnSetInfo *rsinfo)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	check_prune_recorded(c);

	values[0] = UUIDPGetDatum(&c->tenant);
	values[1] = BoolGetDatum(c->bad_seq == 0);
	values[2] = Int64GetDatum(c->rows);
	if (c->bad_seq == 0)
	{
		nulls[3] = true;
		nulls[4] = true;
	}
	else
	{
		values[3] = Int64GetDatum(c->bad_seq);
		values[4] = CStringGetTextDatum(c->reason);
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* the tenants the caller may verify; NULL means every tenant */
static ArrayType *
verifiable_tenants(void)
{
	Oid			user = GetUserId();
	bool		isnull;
	Datum		d;

	if (superuser() || has_bypassrls_privilege(user))
		return NULL;
	if (SPI_execute("SELECT agentidp.admin_tenants()", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the tenants the caller administers");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? construct_empty_array(UUIDOID) : DatumGetArrayTypePCopy(d);
}

static bool
tenant_allowed(ArrayType *allowed, const pg_uuid_t *tenant)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (allowed == NULL)
		return true;
	deconstruct_array(allowed, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i] && memcmp(DatumGetUUIDP(elems[i])->data, tenant->data, UUID_LEN) == 0)
			return true;
	return false;
}

/*
 * A chain whose every row is gone leaves only its anchor behind; the walk
 * over rows never meets it, so look for such anchors separately.
 */
static void
report_emptied_chains(ArrayType *allowed, ReturnSetInfo *rsinfo)
{
	uint64		n;
	pg_uuid_t  *ids;
	ChainCheck	c;

	if (SPI_execute("SELECT a.tenant_id FROM agentidp.audit_anchors AS a "
					"WHERE NOT EXISTS (SELECT FROM agentidp.audit_events AS e "
					"WHERE e.tenant_id OPERATOR(pg_catalog.=) a.tenant_id) "
					"ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read agentidp.audit_anchors");

	/* start_tenant runs SPI too: copy the ids first */
	n = SPI_processed;
	ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		memcpy(ids[i].data,
			   DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc, 1, &isnull))->data,
			   UUID_LEN);
	}
	for (uint64 i = 0; i < n; i++)
	{
		if (!tenant_allowed(allowed, &ids[i]))
			continue;
		start_tenant(&c, &ids[i]);
		finish_tenant(&c, rsinfo);
	}
}

/*
 * agentidp.verify_audit_chain(tenant_id uuid DEFAULT NULL)
 *		RETURNS TABLE(tenant_id uuid, ok boolean, rows_checked bigint,
 *					  first_bad_seq bigint, reason text)
 *
 * Walks the primary key in (tenant_id, seq) order with the statement's
 * snapshot: chains commit in sequence order, so any snapshot sees a whole
 * prefix of each chain.  The caller needs SELECT on audit_events and sees
 * the tenants row-level security would show it.  A bad row ends the walk
 * of its tenant; rows_checked counts the rows read until the verdict.
 */
Datum
agentidp_verify_audit_chain(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pg_uuid_t  *only = PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0);
	Relation	rel;
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	ArrayType  *allowed;
	ChainCheck	c;
	bool		in_tenant = false;
	bool		skipping = false;
	MemoryContext rowcxt;
	AclResult	aclresult;

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();

	rel = audit_open_events(AccessShareLock);
	aclresult = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));
	allowed = verifiable_tenants();

	if (only != NULL && !tenant_allowed(allowed, only))
	{
		table_close(rel, AccessShareLock);
		SPI_finish();
		return (Datum) 0;
	}

	idx = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	slot = table_slot_create(rel, NULL);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "agentidp chain check",
								   ALLOCSET_DEFAULT_SIZES);
	scan = index_beginscan(rel, idx, GetActiveSnapshot(), only ? 1 : 0, 0);
	if (only != NULL)
	{
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(only));
		index_rescan(scan, &key, 1, NULL, 0);
		start_tenant(&c, only);
		in_tenant = true;
	}
	else
		index_rescan(scan, NULL, 0, NULL, 0);

	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old;
		const pg_uuid_t *tenant;

		slot_getallattrs(slot);
		tenant = DatumGetUUIDP(slot->tts_values[AUDIT_ATT_TENANT_ID - 1]);
		if (!in_tenant || memcmp(tenant->data, c.tenant.data, UUID_LEN) != 0)
		{
			if (in_tenant && !skipping)
				finish_tenant(&c, rsinfo);
			skipping = !tenant_allowed(allowed, tenant);
			start_tenant(&c, tenant);
			in_tenant = true;
		}
		if (skipping || c.bad_seq != 0)
			continue;

		old = MemoryContextSwitchTo(rowcxt);
		check_row(&c, slot->tts_values, slot->tts_isnull);
		MemoryContextSwitchTo(old);
		/* a reason lives in rowcxt too: keep the context until the verdict */
		if (c.bad_seq != 0)
			c.reason = pstrdup(c.reason);
		MemoryContextReset(rowcxt);
		CHECK_FOR_INTERRUPTS();
	}
	if (in_tenant && !skipping)
		finish_tenant(&c, rsinfo);

	if (only == NULL)
		report_emptied_chains(allowed, rsinfo);

	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(rowcxt);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	SPI_finish();
	return (Datum) 0;
}

/*
 * agentidp.audit_checkpoint(tenant_id uuid) RETURNS text
 *
 * A JWS, signed with the tenant's active key, over the tenant's chain
 * head: {iss, tenant_id, seq, hash (hex), time (the head row's), iat}.
 * The caller must administer the tenant; the lookups run as the caller,
 * so row-level security decides.
 */
Datum
agentidp_audit_checkpoint(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1];
	pg_uuid_t  *tenant;
	bool		isnull;
	Jsonb	   *payload;
	Jsonb	   *header;
	text	   *signed_jws;
	text	   *jws;
	int			level;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("tenant_id must not be null"));
	tenant = PG_GETARG_UUID_P(0);
	args[0] = UUIDPGetDatum(tenant);

	SPI_connect();
	level = agentidp_pin_search_path();
	(void) agentidp_run_plan(&plan,
							 "SELECT pg_catalog.jsonb_build_object("
							 " 'iss', t.issuer, 'tenant_id', t.tenant_id,"
							 " 'seq', COALESCE(h.seq, 0),"
							 " 'hash', pg_catalog.encode(COALESCE(h.hash,"
							 "   pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex')), 'hex'),"
							 " 'time', pg_catalog.to_char(COALESCE(h.at, pg_catalog.now())"
							 "   AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
							 " 'iat', pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.now()))::bigint) "
							 "FROM agentidp._visible_tenant($1) AS t "
							 "LEFT JOIN LATERAL (SELECT e.seq, e.hash, e.at FROM agentidp.audit_events AS e"
							 " WHERE e.tenant_id OPERATOR(pg_catalog.=) t.tenant_id"
							 " ORDER BY e.seq DESC LIMIT 1) AS h ON true",
							 1, argtypes, args, NULL, true, 1);
	payload = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	header = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												CStringGetDatum("{\"typ\":\"audit-checkpoint+jwt\"}")));
	AtEOXact_GUC(true, level);

	signed_jws = agentidp_signer_sign(agentidp_active_signer(tenant), payload, header);
	jws = (text *) SPI_palloc(VARSIZE(signed_jws));
	memcpy(jws, signed_jws, VARSIZE(signed_jws));
	SPI_finish();
	PG_RETURN_TEXT_P(jws);
}

/*
 * Incremental verification, for the maintenance task.
 *
 * agentidp.audit_verified keeps, per tenant, the last row verified (seq
 * and hash).  A run first checks that this row is still there with the
 * same hash (one index probe: a rewritten or truncated tail shows here),
 * then walks the rows after it, at most max_rows, so its cost follows
 * the rows written since the last run.  A tenant never verified, or
 * pruned past the verified row, is walked from its anchor to its head,
 * whatever max_rows says, so that the prune that made the anchor is
 * checked too.  Rows verified earlier are not read again: only
 * verify_audit_chain rereads everything.
 */
typedef struct TenantProgress
{
	pg_uuid_t	tenant;
	bool		verified;		/* a row in audit_verified */
	int64		seq;
	uint8		hash[AUDIT_HASH_LEN];
	bool		was_broken;
	int64		broken_seq;
	bool		has_anchor;
	int64		anchor_seq;
} TenantProgress;

static TenantProgress *
read_progress(uint64 *ntenants)
{
	TenantProgress *p;

	if (SPI_execute("SELECT t.tenant_id, v.seq, v.hash, v.broken_seq, a.seq "
					"FROM agentidp.tenants AS t "
					"LEFT JOIN agentidp.audit_verified AS v ON v.tenant_id OPERATOR(pg_catalog.=) t.tenant_id "
					"LEFT JOIN agentidp.audit_anchors AS a ON a.tenant_id OPERATOR(pg_catalog.=) t.tenant_id "
					"ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the audit verification progress");
	*ntenants = SPI_processed;
	p = palloc0(sizeof(TenantProgress) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		memcpy(p[i].tenant.data, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull))->data, UUID_LEN);
		d = SPI_getbinval(tup, desc, 2, &isnull);
		p[i].verified = !isnull;
		if (p[i].verified)
		{
			bytea	   *h = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));

			p[i].seq = DatumGetInt64(d);
			memcpy(p[i].hash, VARDATA_ANY(h), AUDIT_HASH_LEN);	/* the table checks its length */
		}
		d = SPI_getbinval(tup, desc, 4, &isnull);
		p[i].was_broken = !isnull;
		p[i].broken_seq = isnull ? 0 : DatumGetInt64(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		p[i].has_anchor = !isnull;
		p[i].anchor_seq = isnull ? 0 : DatumGetInt64(d);
	}
	return p;
}

/*
 * The row verified last time must still be there as it was: its hash,
 * recomputed from its fields, is the one remembered.  This catches a
 * rewritten or truncated tail at the cost of one index probe.
 */
static bool
verified_row_intact(Relation rel, Relation idx, const TenantProgress *p, MemoryContext rowcxt)
{
	ScanKeyData keys[2];
	IndexScanDesc scan;
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	bool		intact = false;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&p->tenant));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(p->seq));
	scan = index_beginscan(rel, idx, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old = MemoryContextSwitchTo(rowcxt);
		uint8		hash[AUDIT_HASH_LEN];
		bytea	   *stored;

		slot_getallattrs(slot);
		stored = DatumGetByteaPP(slot->tts_values[AUDIT_ATT_HASH - 1]);
		audit_row_hash(slot->tts_values, slot->tts_isnull, hash);
		intact = memcmp(hash, p->hash, AUDIT_HASH_LEN) == 0 &&
			VARSIZE_ANY_EXHDR(stored) == AUDIT_HASH_LEN &&
			memcmp(VARDATA_ANY(stored), p->hash, AUDIT_HASH_LEN) == 0;
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return intact;
}

/* walk the tenant's rows from c->expect_seq on; at most max_rows when max_rows > 0 */
static void
walk_rows(Relation rel, Relation idx, ChainCheck *c, int64 max_rows, MemoryContext rowcxt)
{
	ScanKeyData keys[2];
	IndexScanDesc scan;
	TupleTableSlot *slot = table_slot_create(rel, NULL);

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&c->tenant));
	ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(c->expect_seq));
	scan = index_beginscan(rel, idx, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	while ((max_rows <= 0 || c->rows < max_rows) &&
		   index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old;

		slot_getallattrs(slot);
		old = MemoryContextSwitchTo(rowcxt);
		check_row(c, slot->tts_values, slot->tts_isnull);
		MemoryContextSwitchTo(old);
		if (c->bad_seq != 0)
			c->reason = pstrdup(c->reason);
		MemoryContextReset(rowcxt);
		if (c->bad_seq != 0)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
}

/* remember how far the chain is verified, and a break where it is */
static void
save_progress(const ChainCheck *c, bool report)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[6] = {UUIDOID, INT8OID, BYTEAOID, INT8OID, TEXTOID, BOOLOID};
	Datum		args[6];
	char		nulls[6] = "      ";
	bytea	   *hash = palloc(VARHDRSZ + AUDIT_HASH_LEN);

	SET_VARSIZE(hash, VARHDRSZ + AUDIT_HASH_LEN);
	memcpy(VARDATA(hash), c->expect_prev, AUDIT_HASH_LEN);
	args[0] = UUIDPGetDatum(&c->tenant);
	args[1] = Int64GetDatum(c->expect_seq - 1);
	args[2] = PointerGetDatum(hash);
	args[3] = Int64GetDatum(c->bad_seq);
	args[4] = c->reason ? CStringGetTextDatum(c->reason) : (Datum) 0;
	args[5] = BoolGetDatum(report);
	if (c->bad_seq == 0)
		nulls[3] = nulls[4] = 'n';
	(void) agentidp_run_plan(&plan,
							 "INSERT INTO agentidp.audit_verified AS v"
							 " (tenant_id, seq, hash, broken_seq, broken_reason, reported_at) "
							 "VALUES ($1, $2, $3, $4, $5,"
							 " CASE WHEN $6 THEN pg_catalog.now() END) "
							 "ON CONFLICT (tenant_id) DO UPDATE SET seq = $2, hash = $3,"
							 " verified_at = pg_catalog.now(), broken_seq = $4, broken_reason = $5,"
							 " reported_at = CASE WHEN $6 THEN pg_catalog.now()"
							 "  WHEN $4 IS NULL THEN NULL ELSE v.reported_at END",
							 6, argtypes, args, nulls, false, 0);
}

/*
 * agentidp.verify_audit_increment(max_rows integer DEFAULT 100000)
 *		RETURNS TABLE(tenant_id uuid, ok boolean, rows_checked bigint,
 *					  first_bad_seq bigint, reason text, newly_broken boolean)
 *
 * One row per tenant with new rows or a break; newly_broken is true the
 * first time a break at that row is found, so that it is announced once.
 * For the maintenance task, as a superuser: no grant to anyone else.
 */
PG_FUNCTION_INFO_V1(agentidp_verify_audit_increment);
Datum
agentidp_verify_audit_increment(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		max_rows = PG_ARGISNULL(0) ? 100000 : PG_GETARG_INT32(0);
	TenantProgress *progress;
	uint64		ntenants;
	Relation	rel;
	Relation	idx;
	MemoryContext rowcxt;
	int			level;

	if (max_rows < 1)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("max_rows must be at least 1"));
	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	level = agentidp_pin_search_path();
	progress = read_progress(&ntenants);

	rel = audit_open_events(AccessShareLock);
	idx = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "agentidp chain increment",
								   ALLOCSET_DEFAULT_SIZES);
	for (uint64 i = 0; i < ntenants; i++)
	{
		TenantProgress *p = &progress[i];
		ChainCheck	c;
		bool		from_anchor = !p->verified || (p->has_anchor && p->anchor_seq > p->seq);
		bool		newly;
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (from_anchor)
			start_tenant(&c, &p->tenant);
		else
		{
			memset(&c, 0, sizeof(c));
			memcpy(c.tenant.data, p->tenant.data, UUID_LEN);
			c.expect_seq = p->seq + 1;
			memcpy(c.expect_prev, p->hash, AUDIT_HASH_LEN);
			if (p->seq > 0 && !verified_row_intact(rel, idx, p, rowcxt))
			{
				fail(&c, p->seq, psprintf("row " INT64_FORMAT ", verified before, was changed or removed",
										  p->seq));
			}
		}
		if (c.bad_seq == 0)
		{
			walk_rows(rel, idx, &c, from_anchor ? 0 : max_rows, rowcxt);
			if (from_anchor)
				check_prune_recorded(&c);
		}
		if (c.rows == 0 && c.bad_seq == 0 && !p->was_broken)
			continue;

		newly = c.bad_seq != 0 && !(p->was_broken && p->broken_seq == c.bad_seq);
		if (c.bad_seq != 0 && c.bad_seq == p->seq && !from_anchor)
		{
			/* the verified row itself changed: keep the old verified point */
			c.expect_seq = p->seq + 1;
			memcpy(c.expect_prev, p->hash, AUDIT_HASH_LEN);
		}
		save_progress(&c, newly);

		values[0] = UUIDPGetDatum(&p->tenant);
		values[1] = BoolGetDatum(c.bad_seq == 0);
		values[2] = Int64GetDatum(c.rows);
		if (c.bad_seq == 0)
			nulls[3] = nulls[4] = true;
		else
		{
			values[3] = Int64GetDatum(c.bad_seq);
			values[4] = CStringGetTextDatum(c.reason);
		}
		values[5] = BoolGetDatum(newly);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextDelete(rowcxt);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	AtEOXact_GUC(true, level);
	SPI_finish();
	return (Datum) 0;
}
