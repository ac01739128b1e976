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

/*
 * OpenSSL's low-level SHA256_Init/Update/Final (OpenSSL 3 deprecates them;
 * PostgreSQL's pg_config.h asks for the 1.0.1 API, which keeps them): for
 * a million short rows a second they avoid what EVP (and the one-shot
 * SHA256(), which goes through EVP) does per digest, fetching the
 * algorithm under a lock and allocating a context, which cost more than
 * the hash itself.
 */
#include <openssl/sha.h>

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
const Oid	audit_column_types[AUDIT_NATTS] = {
	UUIDOID, INT8OID, INT2OID, TIMESTAMPTZOID, UUIDOID, TEXTOID, JSONOID,
	TEXTOID, TEXTOID, JSONOID, TEXTOID, INETOID, TEXTOID, JSONOID,
	BYTEAOID, BYTEAOID
};

Relation
audit_open_events(LOCKMODE lockmode)
{
	Oid			relid = agentidp_relation_oid("audit_events");
	Relation	rel;
	TupleDesc	desc;

	rel = table_open(relid, lockmode);
	desc = RelationGetDescr(rel);
	if (desc->natts != AUDIT_NATTS)
		elog(ERROR, "agentidp.audit_events has %d columns, expected %d",
			 desc->natts, AUDIT_NATTS);
	for (int i = 0; i < AUDIT_NATTS; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->atttypid != audit_column_types[i])
			elog(ERROR, "agentidp.audit_events column %d is not of the expected type",
				 i + 1);
	}
	return rel;
}

/* ---- encoding ---- */

/*
 * The encoding is built in one buffer per backend, written through a
 * cursor: a row is a few hundred bytes, and appendBinaryStringInfo's
 * checks per field showed in profiles of verification.
 */
typedef struct EncBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} EncBuf;

static inline void
enc_reserve(EncBuf *b, size_t more)
{
	if (b->len + more > b->cap)
	{
		size_t		cap = Max(b->cap * 2, b->len + more);

		b->data = b->data ? repalloc_huge(b->data, cap)
			: MemoryContextAllocHuge(TopMemoryContext, cap);
		b->cap = cap;
	}
}

static inline void
put_raw(EncBuf *b, const char *data, size_t len)
{
	enc_reserve(b, len);
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

static inline void
put_field(EncBuf *b, const char *data, uint32 len)
{
	unsigned char *p;

	enc_reserve(b, 5 + (size_t) len);
	p = (unsigned char *) b->data + b->len;
	p[0] = 0x01;
	p[1] = (unsigned char) (len >> 24);
	p[2] = (unsigned char) (len >> 16);
	p[3] = (unsigned char) (len >> 8);
	p[4] = (unsigned char) len;
	memcpy(p + 5, data, len);
	b->len += 5 + (size_t) len;
}

static inline void
put_null(EncBuf *b)
{
	enc_reserve(b, 1);
	b->data[b->len++] = '\0';
}

static void
put_uuid(EncBuf *b, Datum d)
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
	put_field(b, out, sizeof(out));
}

static void
put_int64(EncBuf *b, int64 v)
{
	char		out[MAXINT8LEN + 1];
	int			len = pg_lltoa(v, out);

	put_field(b, out, len);
}

/* a text, json or bytea value's bytes; raw leaves out the field header */
static void
put_varlena(EncBuf *b, Datum d, bool raw)
{
	struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));

	if (raw)
		put_raw(b, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	else
		put_field(b, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	if ((Pointer) v != DatumGetPointer(d))
		pfree(v);
}

static void
put_opt_varlena(EncBuf *b, Datum d, bool isnull)
{
	if (isnull)
		put_null(b);
	else
		put_varlena(b, d, false);
}

/* inet's text form; a chain's rows mostly repeat one address, so keep it */
static void
put_inet(EncBuf *b, Datum d)
{
	static char *last_bin = NULL;
	static size_t last_bin_len = 0;
	static char *last_text = NULL;
	struct varlena *v = (struct varlena *) DatumGetPointer(d);
	size_t		len = VARSIZE_ANY_EXHDR(v);

	if (last_bin == NULL || len != last_bin_len ||
		memcmp(last_bin, VARDATA_ANY(v), len) != 0)
	{
		char	   *s = DatumGetCString(DirectFunctionCall1(inet_out, d));

		if (last_bin != NULL)
		{
			pfree(last_bin);
			pfree(last_text);
		}
		last_bin = MemoryContextAlloc(TopMemoryContext, len);
		memcpy(last_bin, VARDATA_ANY(v), len);
		last_bin_len = len;
		last_text = MemoryContextStrdup(TopMemoryContext, s);
		pfree(s);
	}
	put_field(b, last_text, strlen(last_text));
}

void
audit_row_hash(const Datum *values, const bool *isnull,
			   uint8 out[AUDIT_HASH_LEN])
{
	static EncBuf buf = {NULL, 0, 0};
	SHA256_CTX	ctx;

#define V(att) values[(att) - 1]
#define N(att) isnull[(att) - 1]

	/* NOT NULL columns are never NULL in a row we hash (the table says so) */
	buf.len = 0;
	put_raw(&buf, AUDIT_DOMAIN, sizeof(AUDIT_DOMAIN) - 1);
	put_uuid(&buf, V(AUDIT_ATT_TENANT_ID));
	put_int64(&buf, DatumGetInt64(V(AUDIT_ATT_SEQ)));
	{
		TimestampTz at = DatumGetTimestampTz(V(AUDIT_ATT_AT));
		int64		unix_us;
		const int64 shift = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

		/* infinity cannot be chained; a row holding it fails to match */
		if (TIMESTAMP_NOT_FINITE(at) || pg_add_s64_overflow(at, shift, &unix_us))
			put_field(&buf, "infinite", 8);
		else
			put_int64(&buf, unix_us);
	}
	if (N(AUDIT_ATT_ACTOR_AGENT))
		put_null(&buf);
	else
		put_uuid(&buf, V(AUDIT_ATT_ACTOR_AGENT));
	put_varlena(&buf, V(AUDIT_ATT_ACTOR_ROLE), false);
	put_opt_varlena(&buf, V(AUDIT_ATT_ACTOR_ACT), N(AUDIT_ATT_ACTOR_ACT));
	put_varlena(&buf, V(AUDIT_ATT_ACTION), false);
	put_opt_varlena(&buf, V(AUDIT_ATT_RESOURCE), N(AUDIT_ATT_RESOURCE));
	put_opt_varlena(&buf, V(AUDIT_ATT_RESOURCE_KEY), N(AUDIT_ATT_RESOURCE_KEY));
	put_varlena(&buf, V(AUDIT_ATT_RESULT), false);
	if (N(AUDIT_ATT_CLIENT_ADDR))
		put_null(&buf);
	else
		put_inet(&buf, V(AUDIT_ATT_CLIENT_ADDR));
	put_opt_varlena(&buf, V(AUDIT_ATT_TRACE_ID), N(AUDIT_ATT_TRACE_ID));
	put_varlena(&buf, V(AUDIT_ATT_DETAIL), false);
	put_varlena(&buf, V(AUDIT_ATT_PREV_HASH), true);

#undef V
#undef N

	if (SHA256_Init(&ctx) != 1 ||
		SHA256_Update(&ctx, buf.data, buf.len) != 1 ||
		SHA256_Final(out, &ctx) != 1)
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
		Relation	anchors = table_open(agentidp_relation_oid("audit_anchors"),
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
