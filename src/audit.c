/*-------------------------------------------------------------------------
 *
 * audit.c
 *	  Writing the audit chain: the row trigger that records a change, the
 *	  queue that holds a transaction's events, and the chaining of them
 *	  just before commit; enable_audit's trigger and prune_audit.
 *
 *	  Why events are chained at commit and not when they happen: a link
 *	  needs the previous row's hash, so whoever links holds the tenant's
 *	  chain until it commits.  Linking at the row would hold the chain for
 *	  the whole transaction (and across client round trips); linking at
 *	  XACT_EVENT_PRE_COMMIT holds it only from the end of the transaction
 *	  through its commit record.  The lock is a transaction-scoped
 *	  advisory lock per tenant (audit_hash.c): other tenants never wait,
 *	  and the lock is released only after the commit is durable and
 *	  visible, so the next writer reads this one's head.  A rolled-back
 *	  transaction or savepoint drops its events: nothing was written.
 *
 *	  The queue is a tuplestore, so a transaction that changes millions
 *	  of rows spills its events to a temporary file, not to memory.
 *
 * IDENTIFICATION
 *	  src/audit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inet.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "agentidp.h"
#include "audit.h"
#include "authz.h"

PG_FUNCTION_INFO_V1(agentidp_audit_trigger);
PG_FUNCTION_INFO_V1(agentidp_prune_audit);

/* a tenant with queued events; seq and hash are its head while chaining */
typedef struct ChainTenant
{
	pg_uuid_t	id;
	int64		seq;
	uint8		hash[AUDIT_HASH_LEN];
} ChainTenant;

/* events [start, end) of the queue were made by a rolled-back savepoint */
typedef struct DeadRange
{
	int64		start;
	int64		end;
} DeadRange;

/* the queue length when a subtransaction began */
typedef struct SubxactMark
{
	SubTransactionId subid;
	int64		start;
} SubxactMark;

/*
 * The current transaction's events.  Everything lives in
 * TopTransactionContext and is forgotten when the transaction ends.
 */
static struct
{
	Tuplestorestate *events;
	int64		nevents;
	ChainTenant *tenants;
	int			ntenants;
	int			maxtenants;
	DeadRange  *dead;
	int			ndead;
	int			maxdead;
	SubxactMark *marks;
	int			nmarks;
	int			maxmarks;
} queue;

/* the queued events' layout: audit_events' own, seq to hash still empty */
static TupleDesc
pending_desc(void)
{
	static TupleDesc desc = NULL;

	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		TupleDesc	d = CreateTemplateTupleDesc(AUDIT_NATTS);

		for (int i = 0; i < AUDIT_NATTS; i++)
			TupleDescInitEntry(d, (AttrNumber) (i + 1), NULL,
							   audit_column_types[i], -1, 0);
		MemoryContextSwitchTo(old);
		desc = d;
	}
	return desc;
}

/* grow a TopTransactionContext array to hold one more element */
static void *
grow(void *array, int n, int *max, Size elem)
{
	if (n < *max)
		return array;
	*max = *max ? *max * 2 : 8;
	if (array == NULL)
		return MemoryContextAlloc(TopTransactionContext, *max * elem);
	return repalloc(array, *max * elem);
}

static ChainTenant *
find_tenant(const pg_uuid_t *id)
{
	static int	last = 0;

	if (last < queue.ntenants &&
		memcmp(queue.tenants[last].id.data, id->data, UUID_LEN) == 0)
		return &queue.tenants[last];
	for (int i = 0; i < queue.ntenants; i++)
	{
		if (memcmp(queue.tenants[i].id.data, id->data, UUID_LEN) == 0)
		{
			last = i;
			return &queue.tenants[i];
		}
	}
	return NULL;
}

/* a tuplestore's temporary files must outlive the savepoint that made them */
static ResourceOwner
enter_top_owner(void)
{
	ResourceOwner old = CurrentResourceOwner;

	CurrentResourceOwner = TopTransactionResourceOwner;
	return old;
}

/*
 * Queue one event: values[] in audit_events' order, the chain columns
 * (seq, at, prev_hash, hash) left NULL.
 */
static void
queue_event(Datum *values, bool *isnull)
{
	ResourceOwner owner = enter_top_owner();
	const pg_uuid_t *tenant = DatumGetUUIDP(values[AUDIT_ATT_TENANT_ID - 1]);

	if (queue.events == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		queue.events = tuplestore_begin_heap(false, false, work_mem);
		MemoryContextSwitchTo(old);
	}
	tuplestore_putvalues(queue.events, pending_desc(), values, isnull);
	queue.nevents++;
	CurrentResourceOwner = owner;

	if (find_tenant(tenant) == NULL)
	{
		queue.tenants = grow(queue.tenants, queue.ntenants, &queue.maxtenants,
							 sizeof(ChainTenant));
		memcpy(queue.tenants[queue.ntenants].id.data, tenant->data, UUID_LEN);
		queue.ntenants++;
	}
}

static void
forget_queue(void)
{
	memset(&queue, 0, sizeof(queue));
}

/* ---- who and where: the fields every event shares ---- */

/*
 * The peer's address, once per connection; NULL over a Unix socket.
 * inet_client_addr() knows it without our including libpq-be.h (which
 * needs the GSSAPI headers).
 */
/*
 * The HTTP front's request, for the audit rows of this transaction: the
 * client's address (the connection's peer is the front itself) and the
 * request id, used as trace id when agentidp.trace_id is not set.
 * agentidp._set_request_context() sets them; the end of the transaction
 * clears them.
 */
static inet *request_addr = NULL;
static char *request_id = NULL;

/*
 * The tenant the front routed the request to (by path or host), set by
 * agentidp._set_request_tenant(): the grants refuse a client of another
 * tenant (agentidp_request_tenant_check).
 */
static bool request_tenant_set = false;
static pg_uuid_t request_tenant;

static void
forget_request_context(void)
{
	request_tenant_set = false;
	if (request_addr != NULL)
		pfree(request_addr);
	if (request_id != NULL)
		pfree(request_id);
	request_addr = NULL;
	request_id = NULL;
}

/*
 * agentidp._set_request_context(client_addr inet, request_id text) RETURNS void
 *
 * For the HTTP front's role only (the endpoints call it): a caller who could
 * set it could put any address in the audit log.
 */
PG_FUNCTION_INFO_V1(agentidp_set_request_context);
Datum
agentidp_set_request_context(PG_FUNCTION_ARGS)
{
	forget_request_context();
	if (!PG_ARGISNULL(0))
	{
		inet	   *a = PG_GETARG_INET_PP(0);

		request_addr = MemoryContextAlloc(TopMemoryContext, VARSIZE_ANY(a));
		memcpy(request_addr, a, VARSIZE_ANY(a));
	}
	if (!PG_ARGISNULL(1))
	{
		text	   *t = PG_GETARG_TEXT_PP(1);

		if (VARSIZE_ANY_EXHDR(t) > 128)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("request_id must be at most 128 bytes"));
		request_id = MemoryContextStrdup(TopMemoryContext, text_to_cstring(t));
	}
	PG_RETURN_VOID();
}

/*
 * agentidp._set_request_tenant(tenant_id uuid) RETURNS void
 *
 * After _set_request_context(), which forgets it: the tenant of the
 * request's route.  For the HTTP front's role only, like that one.
 */
PG_FUNCTION_INFO_V1(agentidp_set_request_tenant);
Datum
agentidp_set_request_tenant(PG_FUNCTION_ARGS)
{
	request_tenant_set = !PG_ARGISNULL(0);
	if (request_tenant_set)
		memcpy(&request_tenant, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	PG_RETURN_VOID();
}

bool
agentidp_request_tenant_matches(const pg_uuid_t *tenant)
{
	return !request_tenant_set ||
		memcmp(&request_tenant, tenant, sizeof(pg_uuid_t)) == 0;
}

static bool
client_address(Datum *addr)
{
	static bool known = false;
	static inet *cached = NULL;

	if (request_addr != NULL)
	{
		*addr = InetPGetDatum(request_addr);
		return true;
	}

	if (!known)
	{
		LOCAL_FCINFO(fcinfo, 0);
		Datum		d;

		InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		d = inet_client_addr(fcinfo);
		if (!fcinfo->isnull)
		{
			inet	   *a = DatumGetInetPP(d);

			cached = MemoryContextAlloc(TopMemoryContext, VARSIZE_ANY(a));
			memcpy(cached, a, VARSIZE_ANY(a));
		}
		known = true;
	}
	if (cached == NULL)
		return false;
	*addr = InetPGetDatum(cached);
	return true;
}

/*
 * The client's address (the HTTP front's client, else the connection's
 * peer; null over a Unix socket) and the front's request id (null
 * without one): what the audit rows of this request record.
 */
void
agentidp_request_context_json(StringInfo out)
{
	Datum		addr;

	appendStringInfoString(out, "{\"client_addr\":");
	if (client_address(&addr))
		escape_json(out, DatumGetCString(DirectFunctionCall1(inet_out, addr)));
	else
		appendStringInfoString(out, "null");
	appendStringInfoString(out, ",\"request_id\":");
	if (request_id != NULL)
		escape_json(out, request_id);
	else
		appendStringInfoString(out, "null");
	appendStringInfoChar(out, '}');
}

/*
 * The fields of an event that say who acted and where: the database role
 * as the session sees it (SET ROLE counts; SECURITY DEFINER functions,
 * ours included, do not hide the caller), the client's address and the
 * caller's trace id.  An agent and its act chain come from a verified
 * token's identity; without one they are NULL.
 */
static void
fill_actor(Datum *values, bool *isnull)
{
	char	   *role = GetUserNameFromId(GetOuterUserId(), false);

	pg_uuid_t	tenant;
	pg_uuid_t  *agent = palloc(sizeof(pg_uuid_t));
	bool		has_tenant;
	bool		has_agent;
	char	   *act = NULL;

	isnull[AUDIT_ATT_ACTOR_AGENT - 1] = true;
	isnull[AUDIT_ATT_ACTOR_ACT - 1] = true;
	/* the agent the transaction's identity names, and its delegation chain */
	if (agentidp_identity_actor(&tenant, &has_tenant, agent, &has_agent, &act))
	{
		if (has_agent)
		{
			values[AUDIT_ATT_ACTOR_AGENT - 1] = UUIDPGetDatum(agent);
			isnull[AUDIT_ATT_ACTOR_AGENT - 1] = false;
		}
		if (act != NULL)
		{
			values[AUDIT_ATT_ACTOR_ACT - 1] = CStringGetTextDatum(act);
			isnull[AUDIT_ATT_ACTOR_ACT - 1] = false;
		}
	}
	values[AUDIT_ATT_ACTOR_ROLE - 1] = CStringGetTextDatum(role);
	isnull[AUDIT_ATT_ACTOR_ROLE - 1] = false;
	isnull[AUDIT_ATT_CLIENT_ADDR - 1] = !client_address(&values[AUDIT_ATT_CLIENT_ADDR - 1]);
	if (agentidp_trace_id != NULL && agentidp_trace_id[0] != '\0')
	{
		values[AUDIT_ATT_TRACE_ID - 1] = CStringGetTextDatum(agentidp_trace_id);
		isnull[AUDIT_ATT_TRACE_ID - 1] = false;
	}
	else if (request_id != NULL)
	{
		values[AUDIT_ATT_TRACE_ID - 1] = CStringGetTextDatum(request_id);
		isnull[AUDIT_ATT_TRACE_ID - 1] = false;
	}
	else
		isnull[AUDIT_ATT_TRACE_ID - 1] = true;
}

/* an event with everything but the change itself filled in */
static void
init_event(Datum *values, bool *isnull, const pg_uuid_t *tenant,
		   const char *action, const char *resource)
{
	for (int i = 0; i < AUDIT_NATTS; i++)
	{
		values[i] = (Datum) 0;
		isnull[i] = true;
	}
	values[AUDIT_ATT_TENANT_ID - 1] = UUIDPGetDatum(tenant);
	isnull[AUDIT_ATT_TENANT_ID - 1] = false;
	values[AUDIT_ATT_V - 1] = Int16GetDatum(AUDIT_ENCODING_VERSION);
	isnull[AUDIT_ATT_V - 1] = false;
	values[AUDIT_ATT_ACTION - 1] = CStringGetTextDatum(action);
	isnull[AUDIT_ATT_ACTION - 1] = false;
	if (resource != NULL)
	{
		values[AUDIT_ATT_RESOURCE - 1] = CStringGetTextDatum(resource);
		isnull[AUDIT_ATT_RESOURCE - 1] = false;
	}
	values[AUDIT_ATT_RESULT - 1] = CStringGetTextDatum("success");
	isnull[AUDIT_ATT_RESULT - 1] = false;
	fill_actor(values, isnull);
}

static Datum
json_datum(StringInfo buf)
{
	return PointerGetDatum(cstring_to_text_with_len(buf->data, buf->len));
}

/*
 * An event of another part (tokens): chained with the transaction like a
 * row change.  resource_key and detail are JSON texts the caller built
 * (never with a secret in them); actor_agent may be NULL.
 */
void
agentidp_audit_event(const pg_uuid_t *tenant, const pg_uuid_t *actor_agent,
					 const char *action, const char *result,
					 const char *resource, const char *resource_key,
					 const char *detail)
{
	Datum		values[AUDIT_NATTS];
	bool		isnull[AUDIT_NATTS];

	init_event(values, isnull, tenant, action, resource);
	if (actor_agent != NULL)
	{
		/* the caller knows the actor better than the session's identity */
		values[AUDIT_ATT_ACTOR_AGENT - 1] = UUIDPGetDatum(actor_agent);
		isnull[AUDIT_ATT_ACTOR_AGENT - 1] = false;
		isnull[AUDIT_ATT_ACTOR_ACT - 1] = true;
	}
	values[AUDIT_ATT_RESULT - 1] = CStringGetTextDatum(result);
	if (resource_key != NULL)
	{
		values[AUDIT_ATT_RESOURCE_KEY - 1] = CStringGetTextDatum(resource_key);
		isnull[AUDIT_ATT_RESOURCE_KEY - 1] = false;
	}
	values[AUDIT_ATT_DETAIL - 1] = CStringGetTextDatum(detail);
	isnull[AUDIT_ATT_DETAIL - 1] = false;
	queue_event(values, isnull);
}

/*
 * agentidp._audit_admin_refusal(status integer, description text) RETURNS void
 *
 * An admin API request refused with 403 (_admin_problem): its token was
 * valid, so the transaction's identity names the tenant and the agent
 * that asked; the request's client address and id are the event's, as
 * for every event.  Without an identity there is no chain to write to,
 * and nothing is written.
 */
PG_FUNCTION_INFO_V1(agentidp_audit_admin_refusal);
Datum
agentidp_audit_admin_refusal(PG_FUNCTION_ARGS)
{
	pg_uuid_t	tenant;
	pg_uuid_t	agent;
	bool		has_tenant;
	bool		has_agent;
	char	   *act;
	StringInfoData detail;

	if (!agentidp_identity_actor(&tenant, &has_tenant, &agent, &has_agent, &act) || !has_tenant)
		PG_RETURN_VOID();
	initStringInfo(&detail);
	appendStringInfo(&detail, "{\"status\":%d,\"error_description\":", PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0));
	escape_json(&detail, PG_ARGISNULL(1) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	appendStringInfoChar(&detail, '}');
	agentidp_audit_event(&tenant, NULL, "admin.refused", "denied", "admin_api", NULL, detail.data);
	PG_RETURN_VOID();
}

/* ---- a row as JSON ---- */

/*
 * A column value as JSON: booleans, integers and finite numerics as JSON
 * literals, json and jsonb as themselves, everything else as the JSON
 * string of its text form.  Deterministic, so the detail's bytes are the
 * same whoever renders them.
 */
static void
append_json_value(StringInfo buf, Datum v, bool isnull, Oid typid)
{
	Oid			outfunc;
	bool		isvarlena;
	char	   *s;

	if (isnull)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	switch (typid)
	{
		case BOOLOID:
			appendStringInfoString(buf, DatumGetBool(v) ? "true" : "false");
			return;
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case JSONOID:
			getTypeOutputInfo(typid, &outfunc, &isvarlena);
			appendStringInfoString(buf, OidOutputFunctionCall(outfunc, v));
			return;
		case NUMERICOID:
			{
				Numeric		n = DatumGetNumeric(v);

				if (!numeric_is_nan(n) && !numeric_is_inf(n))
				{
					appendStringInfoString(buf, DatumGetCString(DirectFunctionCall1(numeric_out,
																					NumericGetDatum(n))));
					return;
				}
			}
			break;
		case JSONBOID:
			{
				/* detoasted: a short or compressed header has no VARSIZE */
				Jsonb	   *jb = DatumGetJsonbP(v);

				appendStringInfoString(buf, JsonbToCString(NULL, &jb->root, VARSIZE(jb)));
			}
			return;
		default:
			break;
	}
	getTypeOutputInfo(typid, &outfunc, &isvarlena);
	s = OidOutputFunctionCall(outfunc, v);
	escape_json(buf, s);
	pfree(s);
}

static bool
column_excluded(TriggerData *td, const char *name)
{
	for (int i = 0; i < td->tg_trigger->tgnargs; i++)
		if (strcmp(td->tg_trigger->tgargs[i], name) == 0)
			return true;
	return false;
}

/*
 * {"col": value, ...} for the columns in cols (attribute numbers offset by
 * FirstLowInvalidHeapAttributeNumber, as relcache bitmaps are), or for every
 * column when cols is NULL; columns the trigger excludes are left out.
 */
static void
append_row_json(StringInfo buf, TriggerData *td, HeapTuple tup,
				Bitmapset *cols, bool honour_exclusions)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	bool		first = true;

	appendStringInfoChar(buf, '{');
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		isnull;
		Datum		v;

		if (att->attisdropped)
			continue;
		if (cols != NULL &&
			!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, cols))
			continue;
		if (honour_exclusions && column_excluded(td, NameStr(att->attname)))
			continue;
		v = heap_getattr(tup, att->attnum, desc, &isnull);
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		escape_json(buf, NameStr(att->attname));
		appendStringInfoChar(buf, ':');
		append_json_value(buf, v, isnull, att->atttypid);
	}
	appendStringInfoChar(buf, '}');
}

/* the columns an UPDATE changed, as a relcache-style bitmap */
static Bitmapset *
changed_columns(Relation rel, HeapTuple oldtup, HeapTuple newtup)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Bitmapset  *changed = NULL;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		oldnull;
		bool		newnull;
		Datum		o;
		Datum		n;

		if (att->attisdropped)
			continue;
		o = heap_getattr(oldtup, att->attnum, desc, &oldnull);
		n = heap_getattr(newtup, att->attnum, desc, &newnull);
		if (oldnull != newnull ||
			(!oldnull && !datumIsEqual(o, n, att->attbyval, att->attlen)))
			changed = bms_add_member(changed,
									 att->attnum - FirstLowInvalidHeapAttributeNumber);
	}
	return changed;
}

/*
 * The row's tenant: its tenant_id column; for a table without one, the
 * tenant of the transaction's identity; else an error.
 */
static const pg_uuid_t *
row_tenant(Relation rel, HeapTuple tup)
{
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), "tenant_id");
	bool		isnull = true;
	Datum		v = (Datum) 0;

	if (attnum > 0 && TupleDescAttr(desc, attnum - 1)->atttypid == UUIDOID)
		v = heap_getattr(tup, attnum, desc, &isnull);
	else if (attnum <= 0)
	{
		pg_uuid_t  *tenant = palloc(sizeof(pg_uuid_t));
		pg_uuid_t	agent;
		bool		has_tenant;
		bool		has_agent;
		char	   *act;

		if (agentidp_identity_actor(tenant, &has_tenant, &agent, &has_agent, &act) && has_tenant)
			return tenant;
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("cannot audit a row of \"%s\" without a tenant",
					   RelationGetRelationName(rel)),
				errdetail("The table has no tenant_id column, and the transaction has no identity to take the tenant from."),
				errhint("Call agentidp.authenticate() in the transaction first."));
	}
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("cannot audit a row of \"%s\" without a tenant",
					   RelationGetRelationName(rel)),
				errdetail("Audited rows are chained per tenant, and the row's tenant_id is NULL or not a uuid."),
				errhint("Give the row a tenant_id."));
	return DatumGetUUIDP(v);
}

/*
 * agentidp.audit_trigger(): AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW.
 * Trigger arguments name columns whose values stay out of the detail
 * (secrets, personal data); the primary key is always recorded.
 */
Datum
agentidp_audit_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	HeapTuple	keytup;
	const char *action;
	Datum		values[AUDIT_NATTS];
	bool		isnull[AUDIT_NATTS];
	StringInfoData buf;
	Bitmapset  *pkey;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				errmsg("agentidp.audit_trigger() must run as an AFTER ... FOR EACH ROW trigger"),
				errhint("Use agentidp.enable_audit(table) to install it."));
	rel = td->tg_relation;

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		action = "insert";
		keytup = td->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		action = "update";
		keytup = td->tg_newtuple;
	}
	else
	{
		action = "delete";
		keytup = td->tg_trigtuple;
	}

	init_event(values, isnull, row_tenant(rel, keytup), action,
			   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel)));

	pkey = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	if (pkey != NULL)
	{
		initStringInfo(&buf);
		append_row_json(&buf, td, keytup, pkey, false);
		values[AUDIT_ATT_RESOURCE_KEY - 1] = json_datum(&buf);
		isnull[AUDIT_ATT_RESOURCE_KEY - 1] = false;
	}

	initStringInfo(&buf);
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		appendStringInfoString(&buf, "{\"new\":");
		append_row_json(&buf, td, td->tg_trigtuple, NULL, true);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		Bitmapset  *changed = changed_columns(rel, td->tg_trigtuple, td->tg_newtuple);

		/* an empty set would mean every column to append_row_json */
		if (changed == NULL)
			appendStringInfoString(&buf, "{\"old\":{},\"new\":{}");
		else
		{
			appendStringInfoString(&buf, "{\"old\":");
			append_row_json(&buf, td, td->tg_trigtuple, changed, true);
			appendStringInfoString(&buf, ",\"new\":");
			append_row_json(&buf, td, td->tg_newtuple, changed, true);
		}
	}
	else
	{
		appendStringInfoString(&buf, "{\"old\":");
		append_row_json(&buf, td, td->tg_trigtuple, NULL, true);
	}
	appendStringInfoChar(&buf, '}');
	values[AUDIT_ATT_DETAIL - 1] = json_datum(&buf);
	isnull[AUDIT_ATT_DETAIL - 1] = false;

	queue_event(values, isnull);
	return PointerGetDatum(NULL);
}

/* ---- chaining, just before commit ---- */

static int
tenant_cmp(const void *a, const void *b)
{
	return memcmp(((const ChainTenant *) a)->id.data,
				  ((const ChainTenant *) b)->id.data, UUID_LEN);
}

static Datum
hash_datum(const uint8 *hash)
{
	bytea	   *b = palloc(VARHDRSZ + AUDIT_HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + AUDIT_HASH_LEN);
	memcpy(VARDATA(b), hash, AUDIT_HASH_LEN);
	return PointerGetDatum(b);
}

/*
 * Link every surviving queued event into its tenant's chain and insert it.
 * Tenants are locked in uuid order, so two transactions that touch the
 * same tenants cannot deadlock on chain locks.  Rows go into the heap and
 * the primary key directly: no role, not even the owner, has INSERT on
 * audit_events, and no trigger of its own must run.
 */
static void
chain_queued_events(void)
{
	ResourceOwner owner;
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *in;
	TupleTableSlot *out;
	MemoryContext rowcxt;
	MemoryContext old;
	TimestampTz now;
	int			d = 0;

	/* the heads below must see everything this transaction did (a prune) */
	CommandCounterIncrement();

	qsort(queue.tenants, queue.ntenants, sizeof(ChainTenant), tenant_cmp);
	for (int i = 0; i < queue.ntenants; i++)
		audit_lock_tenant(&queue.tenants[i].id);

	rel = audit_open_events(RowExclusiveLock);
	for (int i = 0; i < queue.ntenants; i++)
		audit_chain_head(rel, &queue.tenants[i].id,
						 &queue.tenants[i].seq, queue.tenants[i].hash);
	now = GetCurrentTimestamp();

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	in = MakeSingleTupleTableSlot(pending_desc(), &TTSOpsMinimalTuple);
	out = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "agentidp audit row",
								   ALLOCSET_DEFAULT_SIZES);

	owner = enter_top_owner();
	tuplestore_rescan(queue.events);
	for (int64 i = 0; tuplestore_gettupleslot(queue.events, true, false, in); i++)
	{
		ChainTenant *t;
		uint8		hash[AUDIT_HASH_LEN];

		/* skip what rolled-back savepoints queued (ranges sorted by start) */
		while (d < queue.ndead && queue.dead[d].end <= i)
			d++;
		if (d < queue.ndead && queue.dead[d].start <= i)
			continue;

		old = MemoryContextSwitchTo(rowcxt);
		slot_getallattrs(in);
		ExecClearTuple(out);
		memcpy(out->tts_values, in->tts_values, sizeof(Datum) * AUDIT_NATTS);
		memcpy(out->tts_isnull, in->tts_isnull, sizeof(bool) * AUDIT_NATTS);

		t = find_tenant(DatumGetUUIDP(out->tts_values[AUDIT_ATT_TENANT_ID - 1]));
		Assert(t != NULL);
		t->seq++;
		out->tts_values[AUDIT_ATT_SEQ - 1] = Int64GetDatum(t->seq);
		out->tts_isnull[AUDIT_ATT_SEQ - 1] = false;
		out->tts_values[AUDIT_ATT_AT - 1] = TimestampTzGetDatum(now);
		out->tts_isnull[AUDIT_ATT_AT - 1] = false;
		out->tts_values[AUDIT_ATT_PREV_HASH - 1] = hash_datum(t->hash);
		out->tts_isnull[AUDIT_ATT_PREV_HASH - 1] = false;
		audit_row_hash(out->tts_values, out->tts_isnull, hash);
		out->tts_values[AUDIT_ATT_HASH - 1] = hash_datum(hash);
		out->tts_isnull[AUDIT_ATT_HASH - 1] = false;
		memcpy(t->hash, hash, AUDIT_HASH_LEN);
		ExecStoreVirtualTuple(out);

		simple_table_tuple_insert(rel, out);
		(void) ExecInsertIndexTuples(rri, out, estate, false, false, NULL, NIL);
		ResetPerTupleExprContext(estate);

		ExecClearTuple(out);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
	}
	tuplestore_end(queue.events);
	queue.events = NULL;
	CurrentResourceOwner = owner;

	MemoryContextDelete(rowcxt);
	ExecDropSingleTupleTableSlot(in);
	ExecDropSingleTupleTableSlot(out);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
}

static void
audit_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (queue.events != NULL)
				chain_queued_events();
			forget_queue();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (queue.events != NULL)
				ereport(ERROR,
						errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						errmsg("cannot PREPARE a transaction that wrote agentidp audit events"),
						errdetail("A prepared transaction would hold its tenants' audit chains until COMMIT PREPARED."));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* memory and temporary files go with the transaction */
			forget_queue();
			forget_request_context();
			break;
		default:
			break;
	}
}

/*
 * A savepoint rolled back drops the events queued since it began.  Marks
 * are kept only for subtransactions that began with a non-empty queue: one
 * that began with none owns every event queued since.
 */
static void
audit_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int64		start = 0;

	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			if (queue.nevents > 0)
			{
				queue.marks = grow(queue.marks, queue.nmarks, &queue.maxmarks,
								   sizeof(SubxactMark));
				queue.marks[queue.nmarks].subid = mySubid;
				queue.marks[queue.nmarks].start = queue.nevents;
				queue.nmarks++;
			}
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			while (queue.nmarks > 0 && queue.marks[queue.nmarks - 1].subid >= mySubid)
				queue.nmarks--;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			while (queue.nmarks > 0 && queue.marks[queue.nmarks - 1].subid >= mySubid)
			{
				if (queue.marks[queue.nmarks - 1].subid == mySubid)
					start = queue.marks[queue.nmarks - 1].start;
				queue.nmarks--;
			}
			if (start < queue.nevents)
			{
				/* the new range covers every later one */
				while (queue.ndead > 0 && queue.dead[queue.ndead - 1].start >= start)
					queue.ndead--;
				queue.dead = grow(queue.dead, queue.ndead, &queue.maxdead,
								  sizeof(DeadRange));
				queue.dead[queue.ndead].start = start;
				queue.dead[queue.ndead].end = queue.nevents;
				queue.ndead++;
			}
			break;
		default:
			break;
	}
}

void
agentidp_audit_init(void)
{
	RegisterXactCallback(audit_xact_callback, NULL);
	RegisterSubXactCallback(audit_subxact_callback, NULL);
}

/* ---- retention ---- */

/*
 * agentidp.prune_audit(tenant_id uuid, before timestamptz) RETURNS bigint
 *
 * Deletes the tenant's oldest rows, those before the first row chained at
 * or after "before", records where the kept chain starts in audit_anchors
 * and chains an 'audit.prune' event that names the same anchor, so that a
 * verifier can tell a prune from rows removed behind the log's back.  The
 * chain lock keeps writers out while the anchor is chosen.
 */
Datum
agentidp_prune_audit(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant;
	TimestampTz before;
	Relation	rel;
	Relation	idx;
	Snapshot	snap;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	int64		first_seq = 0;
	int64		keep_seq = 0;
	int64		last_seq = 0;
	int64		deleted = 0;
	uint8		prev[AUDIT_HASH_LEN];
	uint8		anchor[AUDIT_HASH_LEN];
	bool		found_keep = false;
	char		hex[2 * AUDIT_HASH_LEN + 1];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("tenant_id and before must not be null"));
	tenant = PG_GETARG_UUID_P(0);
	before = PG_GETARG_TIMESTAMPTZ(1);

	/*
	 * Rows are deleted below row-level security; a role granted this
	 * function must still administer the tenant.
	 */
	if (!superuser())
	{
		Oid			argtypes[1] = {UUIDOID};
		Datum		args[1] = {UUIDPGetDatum(tenant)};

		SPI_connect();
		if (SPI_execute_with_args("SELECT agentidp._visible_tenant($1)", 1, argtypes,
								  args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check the tenant");
		SPI_finish();
	}

	audit_lock_tenant(tenant);
	rel = audit_open_events(RowExclusiveLock);
	idx = index_open(RelationGetPrimaryKeyIndex(rel), RowExclusiveLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(rel, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(tenant));

	/* find the first row to keep and the hash it links to */
	scan = index_beginscan(rel, idx, snap, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	memset(prev, 0, sizeof(prev));
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		n;
		int64		seq = DatumGetInt64(slot_getattr(slot, AUDIT_ATT_SEQ, &n));
		TimestampTz at = DatumGetTimestampTz(slot_getattr(slot, AUDIT_ATT_AT, &n));
		bytea	   *h;

		if (first_seq == 0)
			first_seq = seq;
		if (at >= before)
		{
			keep_seq = seq;
			memcpy(anchor, prev, AUDIT_HASH_LEN);
			found_keep = true;
			break;
		}
		h = DatumGetByteaPP(slot_getattr(slot, AUDIT_ATT_HASH, &n));
		if (VARSIZE_ANY_EXHDR(h) != AUDIT_HASH_LEN)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("audit row %lld holds a malformed hash", (long long) seq),
					errhint("Run agentidp.verify_audit_chain() before pruning."));
		memcpy(prev, VARDATA_ANY(h), AUDIT_HASH_LEN);
		last_seq = seq;
	}
	if (!found_keep && first_seq != 0)
	{
		/* every row is older: the prune event itself starts the kept chain */
		keep_seq = last_seq + 1;
		memcpy(anchor, prev, AUDIT_HASH_LEN);
	}

	if (first_seq != 0 && keep_seq > first_seq)
	{
		index_rescan(scan, &key, 1, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			bool		n;

			if (DatumGetInt64(slot_getattr(slot, AUDIT_ATT_SEQ, &n)) >= keep_seq)
				break;
			simple_heap_delete(rel, &slot->tts_tid);
			deleted++;
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	index_close(idx, RowExclusiveLock);
	table_close(rel, NoLock);

	if (deleted > 0)
	{
		static SPIPlanPtr anchor_plan = NULL;
		Oid			argtypes[3] = {UUIDOID, INT8OID, BYTEAOID};
		Datum		args[3];
		AgentidpOwnerContext oc;
		Datum		values[AUDIT_NATTS];
		bool		isnull[AUDIT_NATTS];
		StringInfoData buf;

		args[0] = UUIDPGetDatum(tenant);
		args[1] = Int64GetDatum(keep_seq);
		args[2] = hash_datum(anchor);
		SPI_connect();
		agentidp_become_owner(&oc);
		(void) agentidp_run_plan(&anchor_plan,
								 "INSERT INTO agentidp.audit_anchors AS a (tenant_id, seq, prev_hash) "
								 "VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE "
								 "SET seq = excluded.seq, prev_hash = excluded.prev_hash, "
								 "pruned_at = pg_catalog.now()",
								 3, argtypes, args, NULL, false, 0);
		agentidp_restore_user(&oc);
		SPI_finish();

		audit_hash_hex(anchor, hex);
		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"before\":");
		escape_json(&buf, timestamptz_to_str(before));
		appendStringInfo(&buf, ",\"first_kept_seq\":" INT64_FORMAT
						 ",\"anchor_hash\":\"%s\",\"rows_deleted\":" INT64_FORMAT "}",
						 keep_seq, hex, deleted);
		init_event(values, isnull, tenant, "audit.prune", "agentidp.audit_events");
		values[AUDIT_ATT_DETAIL - 1] = json_datum(&buf);
		isnull[AUDIT_ATT_DETAIL - 1] = false;
		queue_event(values, isnull);
	}
	PG_RETURN_INT64(deleted);
}
