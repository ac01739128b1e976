/*-------------------------------------------------------------------------
 *
 * audit.h
 *	  The audit chain's row layout and hash, shared by the writer
 *	  (audit.c) and the verifier (audit_verify.c).  docs/audit.md
 *	  documents the same encoding for verifiers outside the database.
 *
 * IDENTIFICATION
 *	  src/audit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_AUDIT_H
#define AGENTIDP_AUDIT_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "storage/lock.h"
#include "utils/relcache.h"
#include "utils/uuid.h"

/* agentidp.audit_events, attribute numbers (1-based) in table order */
#define AUDIT_ATT_TENANT_ID		1
#define AUDIT_ATT_SEQ			2
#define AUDIT_ATT_V				3
#define AUDIT_ATT_AT			4
#define AUDIT_ATT_ACTOR_AGENT	5
#define AUDIT_ATT_ACTOR_ROLE	6
#define AUDIT_ATT_ACTOR_ACT		7
#define AUDIT_ATT_ACTION		8
#define AUDIT_ATT_RESOURCE		9
#define AUDIT_ATT_RESOURCE_KEY	10
#define AUDIT_ATT_RESULT		11
#define AUDIT_ATT_CLIENT_ADDR	12
#define AUDIT_ATT_TRACE_ID		13
#define AUDIT_ATT_DETAIL		14
#define AUDIT_ATT_PREV_HASH		15
#define AUDIT_ATT_HASH			16
#define AUDIT_NATTS				16

/* the column types, in table order */
extern const Oid audit_column_types[AUDIT_NATTS];

#define AUDIT_HASH_LEN			32
#define AUDIT_ENCODING_VERSION	1

/* the audit table, checked against the layout above; lock as for a scan */
extern Relation audit_open_events(LOCKMODE lockmode);

/*
 * SHA-256 over encoding version 1 of a row given in table order; values[]
 * and isnull[] must hold every attribute but hash.
 */
extern void audit_row_hash(const Datum *values, const bool *isnull,
						   uint8 out[AUDIT_HASH_LEN]);

/* the per-tenant chain lock, held from chaining until the commit ends */
extern void audit_lock_tenant(const pg_uuid_t *tenant_id);

/* the chain's last row as a new snapshot sees it: seq 0 when empty */
extern void audit_chain_head(Relation rel, const pg_uuid_t *tenant_id,
							 int64 *seq, uint8 hash[AUDIT_HASH_LEN]);

/* an event of another part, chained at commit with the transaction */
extern void agentidp_audit_event(const pg_uuid_t *tenant,
								 const pg_uuid_t *actor_agent,
								 const char *action, const char *result,
								 const char *resource,
								 const char *resource_key,
								 const char *detail);

/*
 * False when the HTTP front routed this request to another tenant than
 * the given one (agentidp._set_request_tenant).
 */
extern bool agentidp_request_tenant_matches(const pg_uuid_t *tenant);

/*
 * {"client_addr": ..., "request_id": ...} of this request, as its audit
 * rows record them, appended to out (for a policy engine's input)
 */
extern void agentidp_request_context_json(StringInfo out);

/* lowercase hex of a hash, NUL-terminated (2 * AUDIT_HASH_LEN + 1 bytes) */
extern void audit_hash_hex(const uint8 hash[AUDIT_HASH_LEN], char *out);

#endif							/* AGENTIDP_AUDIT_H */
