/*-------------------------------------------------------------------------
 *
 * audit_hash.c
 *	  What the audit chain's writer and verifier share: the table, the
 *	  row encoding (version 1) and its SHA-256, the per-tenant chain lock
 *	  and the chain head.
 *
 *	  Encoding version 1 (docs/audit.md is the reference for verifiers
 *	  in other languages): SHA-256 over the domain string, then each
 *	  field in table order from tenant_id to detail as 0x00 when NULL or
 *	  0x01, a 4-byte big-endian length and the value's text, then the 32
 *	  raw bytes of prev_hash.  Texts are what COPY prints, except "at",
 *	  which is whole microseconds since the Unix epoch so that no time
 *	  zone or DateStyle enters the hash.
 *
 * IDENTIFICATION
 *	  src/audit_hash.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inet.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "agentidp.h"
#include "audit.h"

#define AUDIT_DOMAIN "agentidp-audit-v1\n"

/*
 * The advisory lock tag's fourth field; user advisory locks use 1 and 2,
 * so pg_locks shows chain locks as advisory locks with objsubid 0xA1D0.
 */
#define AUDIT_LOCK_FIELD4 0xA1D0

/* the types the encoding expects, in table order */
static const Oid audit_types[AUDIT_NATTS] = {
	UUIDOID, INT8OID, INT2OID, TIMESTAMPTZOID, UUIDOID, TEXTOID, JSONOID,
	TEXTOID, TEXTOID, JSONOID, TEXTOID, INETOID, TEXTOID, JSONOID,
	BYTEAOID, BYTEAOID
};

Relation
audit_open_events(LOCKMODE lockmode)
{
	Oid			nsp = get_namespace_oid("agentidp", false);
	Oid			relid = get_relname_relid("audit_events", nsp);
	Relation	rel;
	TupleDesc	desc;

	if (!OidIsValid(relid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agentidp.audit_events does not exist"),
				errhint("Update the extension: ALTER EXTENSION agentidp UPDATE."));
	rel = table_open(relid, lockmode);
	desc = RelationGetDescr(rel);
	if (desc->natts != AUDIT_NATTS)
		elog(ERROR, "agentidp.audit_events has %d columns, expected %d",
			 desc->natts, AUDIT_NATTS);
	for (int i = 0; i < AUDIT_NATTS; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->atttypid != audit_types[i])
			elog(ERROR, "agentidp.audit_events column %d is not of the expected type",
				 i + 1);
	}
	return rel;
}

/* ---- encoding ---- */

static void
put_field(StringInfo buf, const char *data, uint32 len)
{
	unsigned char hdr[5];

	hdr[0] = 0x01;
	hdr[1] = (unsigned char) (len >> 24);
	hdr[2] = (unsigned char) (len >> 16);
	hdr[3] = (unsigned char) (len >> 8);
	hdr[4] = (unsigned char) len;
	appendBinaryStringInfo(buf, (const char *) hdr, 5);
	appendBinaryStringInfo(buf, data, len);
}

static void
put_null(StringInfo buf)
{
	appendStringInfoCharMacro(buf, '\0');
}

static void
put_uuid(StringInfo buf, Datum d)
{
	static const char hex[] = "0123456789abcdef";
	const pg_uuid_t *u = DatumGetUUIDP(d);
	char		out[36];
	int			o = 0;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u->data[i] >> 4];
		out[o++] = hex[u->data[i] & 0x0f];
	}
	put_field(buf, out, sizeof(out));
}

static void
put_int64(StringInfo buf, int64 v)
{
	char		out[MAXINT8LEN + 1];
	int			len = pg_lltoa(v, out);

	put_field(buf, out, len);
}

/* a text, json or bytea value's bytes */
static void
put_varlena(StringInfo buf, Datum d, bool raw)
{
	struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));

	if (raw)
		appendBinaryStringInfo(buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	else
		put_field(buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	if ((Pointer) v != DatumGetPointer(d))
		pfree(v);
}

static void
put_opt_varlena(StringInfo buf, Datum d, bool isnull)
{
	if (isnull)
		put_null(buf);
	else
		put_varlena(buf, d, false);
}

void
audit_row_hash(const Datum *values, const bool *isnull,
			   uint8 out[AUDIT_HASH_LEN])
{
	static EVP_MD_CTX *mdctx = NULL;
	static EVP_MD *sha256 = NULL;
	static StringInfo buf = NULL;
	unsigned int outlen;

#define V(att) values[(att) - 1]
#define N(att) isnull[(att) - 1]

	/* one context, digest and buffer per backend: hashing is the hot path */
	if (buf == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		buf = makeStringInfo();
		MemoryContextSwitchTo(old);
	}
	if (mdctx == NULL)
	{
		mdctx = EVP_MD_CTX_new();
		if (mdctx == NULL)
			ereport(ERROR,
					errcode(ERRCODE_OUT_OF_MEMORY),
					errmsg("out of memory"));
	}
	if (sha256 == NULL)
	{
		sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
		if (sha256 == NULL)
			ereport(ERROR,
					errcode(ERRCODE_INTERNAL_ERROR),
					errmsg("SHA-256 is not available"),
					errdetail_internal("%s", agentidp_openssl_error()));
	}

	/* NOT NULL columns are never NULL in a row we hash (the table says so) */
	resetStringInfo(buf);
	appendBinaryStringInfo(buf, AUDIT_DOMAIN, sizeof(AUDIT_DOMAIN) - 1);
	put_uuid(buf, V(AUDIT_ATT_TENANT_ID));
	put_int64(buf, DatumGetInt64(V(AUDIT_ATT_SEQ)));
	{
		TimestampTz at = DatumGetTimestampTz(V(AUDIT_ATT_AT));
		int64		unix_us;
		const int64 shift = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

		/* infinity cannot be chained; a row holding it fails to match */
		if (TIMESTAMP_NOT_FINITE(at) || pg_add_s64_overflow(at, shift, &unix_us))
			put_field(buf, "infinite", 8);
		else
			put_int64(buf, unix_us);
	}
	if (N(AUDIT_ATT_ACTOR_AGENT))
		put_null(buf);
	else
		put_uuid(buf, V(AUDIT_ATT_ACTOR_AGENT));
	put_varlena(buf, V(AUDIT_ATT_ACTOR_ROLE), false);
	put_opt_varlena(buf, V(AUDIT_ATT_ACTOR_ACT), N(AUDIT_ATT_ACTOR_ACT));
	put_varlena(buf, V(AUDIT_ATT_ACTION), false);
	put_opt_varlena(buf, V(AUDIT_ATT_RESOURCE), N(AUDIT_ATT_RESOURCE));
	put_opt_varlena(buf, V(AUDIT_ATT_RESOURCE_KEY), N(AUDIT_ATT_RESOURCE_KEY));
	put_varlena(buf, V(AUDIT_ATT_RESULT), false);
	if (N(AUDIT_ATT_CLIENT_ADDR))
		put_null(buf);
	else
	{
		char	   *s = DatumGetCString(DirectFunctionCall1(inet_out,
															V(AUDIT_ATT_CLIENT_ADDR)));

		put_field(buf, s, strlen(s));
		pfree(s);
	}
	put_opt_varlena(buf, V(AUDIT_ATT_TRACE_ID), N(AUDIT_ATT_TRACE_ID));
	put_varlena(buf, V(AUDIT_ATT_DETAIL), false);
	put_varlena(buf, V(AUDIT_ATT_PREV_HASH), true);

#undef V
#undef N

	if (EVP_DigestInit_ex(mdctx, sha256, NULL) != 1 ||
		EVP_DigestUpdate(mdctx, buf->data, buf->len) != 1 ||
		EVP_DigestFinal_ex(mdctx, out, &outlen) != 1 ||
		outlen != AUDIT_HASH_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not compute SHA-256"),
				errdetail_internal("%s", agentidp_openssl_error()));
}

void
audit_hash_hex(const uint8 hash[AUDIT_HASH_LEN], char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < AUDIT_HASH_LEN; i++)
	{
		out[2 * i] = hex[hash[i] >> 4];
		out[2 * i + 1] = hex[hash[i] & 0x0f];
	}
	out[2 * AUDIT_HASH_LEN] = '\0';
}

/* ---- chain lock and head ---- */

/*
 * A transaction-scoped advisory lock per (database, tenant), taken when a
 * transaction chains its rows just before commit and released after the
 * commit is durable and visible, so the next writer sees this one's rows.
 * 64 bits of the tenant id make a clash of two tenants' locks (which would
 * only make them wait for each other) practically impossible.
 */
void
audit_lock_tenant(const pg_uuid_t *tenant_id)
{
	LOCKTAG		tag;
	uint32		k1;
	uint32		k2;

	memcpy(&k1, tenant_id->data, 4);
	memcpy(&k2, tenant_id->data + 4, 4);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, k1, k2, AUDIT_LOCK_FIELD4);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * The chain's head: its last row, else (every row pruned, which only this
 * transaction's own prune can make us see) the anchor the next row must
 * link to, else the start of a chain.  Read with the latest snapshot, not
 * the transaction's: under REPEATABLE READ the transaction's snapshot may
 * predate the previous link.
 */
static bool
last_row(Relation rel, Oid index, ScanKey key, Snapshot snap, int hash_att,
		 int64 *seq, uint8 hash[AUDIT_HASH_LEN])
{
	Relation	idx = index_open(index, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	IndexScanDesc scan = index_beginscan(rel, idx, snap, 1, 0);
	bool		found;

	index_rescan(scan, key, 1, NULL, 0);
	found = index_getnext_slot(scan, BackwardScanDirection, slot);
	if (found)
	{
		bool		isnull;
		bytea	   *h;

		*seq = DatumGetInt64(slot_getattr(slot, AUDIT_ATT_SEQ, &isnull));
		h = DatumGetByteaPP(slot_getattr(slot, hash_att, &isnull));
		if (VARSIZE_ANY_EXHDR(h) != AUDIT_HASH_LEN)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("the audit chain head of %s holds a malformed hash",
						   RelationGetRelationName(rel)),
					errhint("Run agentidp.verify_audit_chain() to find where the chain breaks."));
		memcpy(hash, VARDATA_ANY(h), AUDIT_HASH_LEN);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	return found;
}

void
audit_chain_head(Relation rel, const pg_uuid_t *tenant_id,
				 int64 *seq, uint8 hash[AUDIT_HASH_LEN])
{
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData key;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ,
				UUIDPGetDatum(tenant_id));
	if (!last_row(rel, RelationGetPrimaryKeyIndex(rel), &key, snap,
				  AUDIT_ATT_HASH, seq, hash))
	{
		Relation	anchors = table_open(get_relname_relid("audit_anchors",
														   RelationGetNamespace(rel)),
										 AccessShareLock);

		/* audit_anchors: tenant_id, seq, prev_hash, pruned_at */
		if (last_row(anchors, RelationGetPrimaryKeyIndex(anchors), &key, snap,
					 3, seq, hash))
			(*seq)--;
		else
		{
			*seq = 0;
			memset(hash, 0, AUDIT_HASH_LEN);
		}
		table_close(anchors, AccessShareLock);
	}
	UnregisterSnapshot(snap);
}
