/*-------------------------------------------------------------------------
 *
 * webhooks.c
 *	  Outbound webhooks: subscriptions and their secrets, the settings,
 *	  and delivery of the outbox (agentidp.webhook_deliveries) that
 *	  agentidp._enqueue_event fills in the transaction of each event.
 *	  The tables, the triggers that queue events and the event list are
 *	  in agentidp--0.5--0.6.sql; HTTP itself is http.c; a secret is sealed
 *	  under the key-encryption key by keys.c.
 *
 *	  Delivery is at least once.  A batch of due deliveries is claimed
 *	  (a lease: attempts + 1, due again when the lease ends) and committed;
 *	  the requests are then made with no lock and no snapshot held; the
 *	  outcomes are recorded and committed.  A worker that dies in between
 *	  leaves its deliveries to be claimed again when their lease ends.
 *	  The format is that of Standard Webhooks (docs/webhooks.md).
 *
 * IDENTIFICATION
 *	  src/webhooks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "agentidp.h"
#include "http.h"
#include "keys.h"
#include "webhooks.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(agentidp_create_webhook_subscription);
PG_FUNCTION_INFO_V1(agentidp_rotate_webhook_secret);
PG_FUNCTION_INFO_V1(agentidp_deliver_webhooks);
PG_FUNCTION_INFO_V1(agentidp_rewrap_webhook_secrets);

/*
 * A secret is 256 random bits, shown as "whsec_" and their base64, the
 * form Standard Webhooks gives secrets.  The sealed plaintext is the 32
 * bytes, the HMAC key.
 */
#define SECRET_PREFIX		"whsec_"
#define SECRET_PREFIX_LEN	(sizeof(SECRET_PREFIX) - 1)
#define SECRET_BYTES		32

/* each active subscription is one more delivery of every event */
#define MAX_ACTIVE_SUBSCRIPTIONS 25

/* of a receiver's answer, only the start is kept, for last_error */
#define MAX_RESPONSE		4096
#define ERROR_SNIPPET		200

/*
 * A claimed delivery is due again after twice the timeout and a margin:
 * long after its request has ended, unless the worker died.
 */
#define LEASE_MARGIN_MS		5000

static int	agentidp_webhook_timeout = 10000;	/* ms */
static int	agentidp_webhook_retry_base = 10;	/* s */
static int	agentidp_webhook_retry_cap = 3600;	/* s */
static int	agentidp_webhook_max_attempts = 8;
static int	agentidp_webhook_batch_size = 20;
static int	agentidp_webhook_retention = 7 * 86400; /* s */

static SPIPlanPtr enqueue_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr purge_plan = NULL;

/* a subscription's keys, opened once per batch */
typedef struct Secret
{
	pg_uuid_t	subscription;
	unsigned char *key;			/* SECRET_BYTES, or NULL */
	unsigned char *previous;	/* the one before a rotation, still signing */
	char	   *error;			/* why they could not be opened */
} Secret;

typedef struct Delivery
{
	pg_uuid_t	tenant;
	pg_uuid_t	delivery;
	char	   *event_id;		/* the webhook-id */
	char	   *url;
	char	   *body;
	Secret	   *secret;
	AgentidpHttpRequest *request;	/* NULL when it was not sent */
	/* the outcome */
	long		status;			/* HTTP status, 0 when none came */
	text	   *error;			/* last_error, NULL when delivered */
} Delivery;

typedef struct Batch
{
	Delivery   *deliveries;
	int			ndeliveries;
	Secret	   *secrets;
	int			nsecrets;
} Batch;

void
agentidp_webhooks_init(void)
{
	DefineCustomIntVariable("agentidp.webhook_timeout",
							"How long one webhook delivery may take, connecting included.",
							NULL,
							&agentidp_webhook_timeout,
							10000, 100, 60000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.webhook_retry_base",
							"The wait before the first retry of a failed webhook delivery.",
							"Each further retry waits twice as long, up to agentidp.webhook_retry_cap, less up to half at random.",
							&agentidp_webhook_retry_base,
							10, 1, 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.webhook_retry_cap",
							"The longest wait between two attempts of a webhook delivery.",
							NULL,
							&agentidp_webhook_retry_cap,
							3600, 1, 7 * 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.webhook_max_attempts",
							"How many times a webhook delivery is attempted before it is dead.",
							NULL,
							&agentidp_webhook_max_attempts,
							8, 1, 100,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.webhook_batch_size",
							"How many webhook deliveries are claimed and sent at once, concurrently.",
							"It is also how many connections a deliverer may open to one receiver.",
							&agentidp_webhook_batch_size,
							20, 1, 1000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.webhook_retention",
							"How long webhook events are kept once each of their deliveries is delivered or dead.",
							NULL,
							&agentidp_webhook_retention,
							7 * 86400, 60, 365 * 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
}

void
agentidp_enqueue_event(const pg_uuid_t *tenant_id, const char *type, const char *data)
{
	Oid			argtypes[3] = {UUIDOID, TEXTOID, TEXTOID};
	Datum		args[3];

	args[0] = UUIDPGetDatum(tenant_id);
	args[1] = CStringGetTextDatum(type);
	args[2] = CStringGetTextDatum(data);
	(void) agentidp_run_plan(&enqueue_plan,
							 "SELECT agentidp._enqueue_event($1, $2, $3::pg_catalog.jsonb)",
							 3, argtypes, args, NULL, false, 0);
}

/* ---- subscriptions ---- */

static char *
uuid_text(Datum u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, u));
}

/* a secret is bound to its subscription: sealed with this label */
static char *
secret_label(Datum subscription_id)
{
	return psprintf("webhook:%s", uuid_text(subscription_id));
}

/* a version 4 UUID, as gen_random_uuid() makes them */
static Datum
random_uuid(void)
{
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(u->data, UUID_LEN))
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate random values"));
	u->data[6] = (u->data[6] & 0x0f) | 0x40;
	u->data[8] = (u->data[8] & 0x3f) | 0x80;
	return UUIDPGetDatum(u);
}

/*
 * A new secret for a subscription: returned as "whsec_..." (palloc'd; the
 * caller cleanses it) and sealed in *sealed under the KEK *kek_id.
 */
static char *
new_secret(Datum tenant_id, Datum subscription_id, bytea **sealed, char **kek_id)
{
	unsigned char raw[SECRET_BYTES];
	int			enclen = pg_b64_enc_len(SECRET_BYTES);
	char	   *secret = palloc0(SECRET_PREFIX_LEN + enclen + 1);
	int			len;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate random bytes for a webhook secret"),
				errdetail_internal("%s", agentidp_openssl_error()));
	memcpy(secret, SECRET_PREFIX, SECRET_PREFIX_LEN);
	len = pg_b64_encode((char *) raw, sizeof(raw), secret + SECRET_PREFIX_LEN, enclen);
	PG_TRY();
	{
		if (len < 0)
			elog(ERROR, "could not encode a webhook secret");
		*sealed = agentidp_seal_secret(DatumGetUUIDP(tenant_id), secret_label(subscription_id),
									   "webhook secret", raw, sizeof(raw), kek_id);
	}
	PG_CATCH();
	{
		explicit_bzero(raw, sizeof(raw));
		explicit_bzero(secret, SECRET_PREFIX_LEN + enclen);
		PG_RE_THROW();
	}
	PG_END_TRY();
	explicit_bzero(raw, sizeof(raw));
	return secret;
}

/* the same error whether the subscription is unknown, disabled or another tenant's */
static void
pg_attribute_noreturn()
subscription_not_found(Datum subscription_id)
{
	ereport(ERROR,
			errcode(ERRCODE_UNDEFINED_OBJECT),
			errmsg("webhook subscription does not exist"),
			errdetail("No active webhook subscription with id \"%s\" is visible to role \"%s\".",
					  uuid_text(subscription_id), GetUserNameFromId(GetUserId(), false)));
}

static void
check_url(const char *url)
{
	bool		not_public;
	char	   *problem = agentidp_http_url_problem(url, agentidp_allow_private_addresses,
												   &not_public);

	/* the URL itself is not repeated: its query may hold a credential */
	if (problem != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid webhook URL"),
				errdetail("%s", problem),
				not_public ?
				errhint("Webhooks go to public addresses only, unless a superuser turns on agentidp.allow_private_addresses.") : 0);
}

/*----------
 * agentidp.create_webhook_subscription(tenant_id uuid, url text,
 *		events text[]) RETURNS TABLE(subscription_id uuid, secret text)
 *
 * SECURITY INVOKER: the tenant is looked up as the caller, so row-level
 * security decides whether they administer it.  The row is written as
 * the extension owner, since no role may choose a secret: each comes from
 * RAND_bytes().  The secret is returned this once; only its sealed form
 * is stored.
 *----------
 */
Datum
agentidp_create_webhook_subscription(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[6] = {UUIDOID, UUIDOID, TEXTOID, TEXTARRAYOID, BYTEAOID, TEXTOID};
	Oid			check_types[2] = {UUIDOID, TEXTARRAYOID};
	Datum		args[6];
	char	   *url;
	int			level;
	bool		isnull;
	int64		active;
	Datum		subscription_id;
	bytea	   *sealed;
	char	   *kek_id;
	char	   *volatile secret = NULL;
	AgentidpOwnerContext oc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("tenant_id, url and events must not be null"));
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	check_url(url);

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	level = agentidp_pin_search_path();
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_GETARG_DATUM(2);
	/* events checked and put in order (no duplicates, sorted) by SQL */
	if (SPI_execute_with_args("SELECT (agentidp._visible_tenant($1)).tenant_id, "
							  "  agentidp._check_webhook_events($2)",
							  2, check_types, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not check the subscription");
	args[3] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	AtEOXact_GUC(true, level);

	/* the tenant's row lock makes concurrent creations take turns */
	agentidp_become_owner(&oc);
	if (SPI_execute_with_args("SELECT (SELECT count(*) FROM agentidp.webhook_subscriptions AS s "
							  "        WHERE s.tenant_id = t.tenant_id AND s.disabled_at IS NULL) "
							  "FROM agentidp.tenants AS t WHERE t.tenant_id = $1 FOR NO KEY UPDATE OF t",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not count webhook subscriptions");
	active = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (active >= MAX_ACTIVE_SUBSCRIPTIONS)
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("too many webhook subscriptions"),
				errdetail("Tenant \"%s\" has %d active webhook subscriptions, the most allowed.",
						  uuid_text(args[0]), MAX_ACTIVE_SUBSCRIPTIONS),
				errhint("Disable one with agentidp.disable_webhook_subscription() first."));

	subscription_id = random_uuid();
	secret = new_secret(args[0], subscription_id, &sealed, &kek_id);
	PG_TRY();
	{
		args[1] = subscription_id;
		args[2] = CStringGetTextDatum(url);
		args[4] = PointerGetDatum(sealed);
		args[5] = CStringGetTextDatum(kek_id);
		if (SPI_execute_with_args("INSERT INTO agentidp.webhook_subscriptions "
								  "(tenant_id, subscription_id, url, events, wrapped_secret, kek_id) "
								  "VALUES ($1, $2, $3, $4, $5, $6)",
								  6, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not store webhook subscription");
		agentidp_restore_user(&oc);

		values[0] = subscription_id;
		values[1] = CStringGetTextDatum(secret);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		explicit_bzero(VARDATA(DatumGetPointer(values[1])), strlen(secret));
	}
	PG_FINALLY();
	{
		explicit_bzero(secret, strlen(secret));
	}
	PG_END_TRY();
	SPI_finish();
	return (Datum) 0;
}

/* an interval as microseconds, a month counted as 30 days */
static int64
interval_usecs(Datum iv)
{
	Interval   *i = DatumGetIntervalP(iv);

	return i->time + (i->day + (int64) i->month * DAYS_PER_MONTH) * USECS_PER_DAY;
}

/*----------
 * agentidp.rotate_webhook_secret(subscription_id uuid,
 *		overlap interval DEFAULT '1 day') RETURNS text
 *
 * A new secret for an active subscription, returned this once.  During
 * the overlap deliveries are signed with the old secret too (a second
 * signature), so that receivers can switch without losing one.
 *----------
 */
Datum
agentidp_rotate_webhook_secret(PG_FUNCTION_ARGS)
{
	Oid			argtypes[5] = {UUIDOID, UUIDOID, BYTEAOID, TEXTOID, FLOAT8OID};
	Datum		args[5];
	int64		overlap;
	int			level;
	bool		isnull;
	bytea	   *sealed;
	char	   *kek_id;
	char	   *volatile secret = NULL;
	text	   *volatile result = NULL;
	AgentidpOwnerContext oc;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("subscription_id and overlap must not be null"));
	overlap = interval_usecs(PG_GETARG_DATUM(1));
	if (overlap < 0 || overlap > 30 * USECS_PER_DAY)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("overlap must be between 0 and 30 days"));

	SPI_connect();
	level = agentidp_pin_search_path();
	args[1] = PG_GETARG_DATUM(0);
	if (SPI_execute_with_args("SELECT tenant_id FROM agentidp.webhook_subscriptions "
							  "WHERE subscription_id = $1 AND disabled_at IS NULL FOR NO KEY UPDATE",
							  1, &argtypes[1], &args[1], NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed");
	if (SPI_processed == 0)
		subscription_not_found(args[1]);
	args[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	AtEOXact_GUC(true, level);

	secret = new_secret(args[0], args[1], &sealed, &kek_id);
	PG_TRY();
	{
		args[2] = PointerGetDatum(sealed);
		args[3] = CStringGetTextDatum(kek_id);
		args[4] = Float8GetDatum((double) overlap / USECS_PER_SEC);
		agentidp_become_owner(&oc);
		/* the right-hand sides read the row as it was: the old secret */
		if (SPI_execute_with_args("UPDATE agentidp.webhook_subscriptions SET "
								  "  previous_wrapped_secret = CASE WHEN $5 > 0 THEN wrapped_secret END, "
								  "  previous_kek_id = CASE WHEN $5 > 0 THEN kek_id END, "
								  "  previous_until = CASE WHEN $5 > 0 "
								  "    THEN pg_catalog.now() + pg_catalog.make_interval(secs => $5) END, "
								  "  wrapped_secret = $3, kek_id = $4, rotated_at = pg_catalog.now() "
								  "WHERE tenant_id = $1 AND subscription_id = $2",
								  5, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE ||
			SPI_processed != 1)
			elog(ERROR, "could not store webhook secret");
		agentidp_restore_user(&oc);
		/* in the caller's memory: SPI's goes at SPI_finish() */
		result = (text *) SPI_palloc(VARHDRSZ + strlen(secret));
		SET_VARSIZE(result, VARHDRSZ + strlen(secret));
		memcpy(VARDATA(result), secret, strlen(secret));
	}
	PG_FINALLY();
	{
		explicit_bzero(secret, strlen(secret));
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

/*
 * Run a saved statement of the delivery with search_path pinned (a
 * procedure that commits can have no SET clause); returns the rows
 * processed.  The caller's rights: a superuser's in the worker.
 */
static uint64
run_pinned(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes, Datum *args,
		   const char *nulls)
{
	int			level = agentidp_pin_search_path();

	(void) agentidp_run_plan(slot, sql, nargs, argtypes, args, nulls, false, 0);
	AtEOXact_GUC(true, level);
	return SPI_processed;
}

/*
 * One of a row's secrets, opened: the KEK id in column kek_col, the
 * sealed bytes in the next one; NULL when the row has none there.
 */
static unsigned char *
open_key(Datum tenant_id, Datum subscription_id, HeapTuple tup, TupleDesc desc, int kek_col)
{
	bool		isnull;
	char	   *kek_id = SPI_getvalue(tup, desc, kek_col);
	Datum		wrapped = SPI_getbinval(tup, desc, kek_col + 1, &isnull);
	char	   *plain;
	int			len;

	if (kek_id == NULL || isnull)
		return NULL;
	plain = agentidp_open_secret(DatumGetUUIDP(tenant_id), secret_label(subscription_id),
								 "webhook secret", kek_id, DatumGetByteaPP(wrapped), &len);
	if (len != SECRET_BYTES)
	{
		explicit_bzero(plain, len);
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("webhook secret of subscription \"%s\" has the wrong length",
					   uuid_text(subscription_id)));
	}
	return (unsigned char *) plain;
}

/* reseal one of a row's secrets if it is not under the first KEK; true if it moved */
static bool
rewrap_secret(HeapTuple tup, TupleDesc desc, int kek_col, const char *update)
{
	Oid			argtypes[4] = {BYTEAOID, TEXTOID, UUIDOID, UUIDOID};
	Datum		args[4];
	bool		isnull;
	char	   *old_kek = SPI_getvalue(tup, desc, kek_col);
	unsigned char *key;
	bytea	   *volatile fresh = NULL;
	char	   *new_kek = NULL;

	args[2] = SPI_getbinval(tup, desc, 1, &isnull);
	args[3] = SPI_getbinval(tup, desc, 2, &isnull);
	key = open_key(args[2], args[3], tup, desc, kek_col);
	if (key == NULL)
		return false;
	PG_TRY();
	{
		fresh = agentidp_seal_secret(DatumGetUUIDP(args[2]), secret_label(args[3]),
									 "webhook secret", key, SECRET_BYTES, &new_kek);
	}
	PG_FINALLY();
	{
		explicit_bzero(key, SECRET_BYTES);
	}
	PG_END_TRY();
	if (strcmp(new_kek, old_kek) == 0)
		return false;
	args[0] = PointerGetDatum(fresh);
	args[1] = CStringGetTextDatum(new_kek);
	if (SPI_execute_with_args(update, 4, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not rewrap webhook secret");
	return true;
}

/*----------
 * agentidp._rewrap_webhook_secrets() RETURNS integer
 *
 * Re-seals every webhook secret (and every previous one still in its
 * overlap) under the first KEK of agentidp.kek_file; returns how many
 * moved.  agentidp.rewrap_keys() calls it.  Superusers only.
 *----------
 */
Datum
agentidp_rewrap_webhook_secrets(PG_FUNCTION_ARGS)
{
	int			moved = 0;
	int			level;
	SPITupleTable *tt;

	SPI_connect();
	level = agentidp_pin_search_path();
	if (SPI_execute("SELECT tenant_id, subscription_id, kek_id, wrapped_secret, "
					"  previous_kek_id, previous_wrapped_secret "
					"FROM agentidp.webhook_subscriptions FOR UPDATE", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed");
	tt = SPI_tuptable;
	for (uint64 i = 0; i < tt->numvals; i++)
	{
		moved += rewrap_secret(tt->vals[i], tt->tupdesc, 3,
							   "UPDATE agentidp.webhook_subscriptions "
							   "SET wrapped_secret = $1, kek_id = $2 "
							   "WHERE tenant_id = $3 AND subscription_id = $4");
		moved += rewrap_secret(tt->vals[i], tt->tupdesc, 5,
							   "UPDATE agentidp.webhook_subscriptions "
							   "SET previous_wrapped_secret = $1, previous_kek_id = $2 "
							   "WHERE tenant_id = $3 AND subscription_id = $4");
	}
	AtEOXact_GUC(true, level);
	SPI_finish();
	PG_RETURN_INT32(moved);
}

/* ---- delivery ---- */

/*
 * Open a subscription's secrets for signing.  A failure (its KEK gone
 * from agentidp.kek_file, a damaged row) fails that subscription's
 * deliveries, not the batch, so it is caught in a subtransaction.
 */
static void
open_secrets(Secret *s, Datum tenant_id, Datum subscription_id, HeapTuple tup, TupleDesc desc)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		s->key = open_key(tenant_id, subscription_id, tup, desc, 6);
		s->previous = open_key(tenant_id, subscription_id, tup, desc, 8);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		s->error = edata->detail != NULL ?
			psprintf("%s: %s", edata->message, edata->detail) : edata->message;
		/* the current secret may have opened before the previous one failed */
		if (s->key != NULL)
			explicit_bzero(s->key, SECRET_BYTES);
		s->key = NULL;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

static void
wipe_secrets(Batch *b)
{
	for (int i = 0; i < b->nsecrets; i++)
	{
		if (b->secrets[i].key != NULL)
			explicit_bzero(b->secrets[i].key, SECRET_BYTES);
		if (b->secrets[i].previous != NULL)
			explicit_bzero(b->secrets[i].previous, SECRET_BYTES);
	}
	b->nsecrets = 0;
}

/*
 * Claim a batch of due deliveries: each gets attempts + 1 and is due
 * again when the lease ends, should this process not record its outcome.
 * SKIP LOCKED: concurrent deliverers take different rows.  The rows and
 * the subscriptions' opened secrets go to b, in cxt.
 */
static void
claim_batch(Batch *b, TimestampTz lease, MemoryContext cxt)
{
	Oid			argtypes[2] = {INT4OID, TIMESTAMPTZOID};
	Datum		args[2];
	SPITupleTable *tt;
	MemoryContext old;

	args[0] = Int32GetDatum(agentidp_webhook_batch_size);
	args[1] = TimestampTzGetDatum(lease);
	(void) run_pinned(&claim_plan,
					  "WITH due AS ("
					  "  SELECT d.tenant_id, d.delivery_id FROM agentidp.webhook_deliveries AS d "
					  "  WHERE d.status = 'pending' AND d.next_attempt_at <= now() "
					  "  ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
					  "UPDATE agentidp.webhook_deliveries AS d "
					  "SET attempts = d.attempts + 1, lease_until = $2, next_attempt_at = $2 "
					  "FROM due, agentidp.webhook_events AS e, agentidp.webhook_subscriptions AS s "
					  "WHERE d.tenant_id = due.tenant_id AND d.delivery_id = due.delivery_id "
					  "  AND e.tenant_id = d.tenant_id AND e.event_id = d.event_id "
					  "  AND s.tenant_id = d.tenant_id AND s.subscription_id = d.subscription_id "
					  "RETURNING d.tenant_id, d.delivery_id, d.subscription_id, e.event_id, s.url, "
					  "  s.kek_id, s.wrapped_secret, "
					  "  CASE WHEN s.previous_until > now() THEN s.previous_kek_id END, "
					  "  CASE WHEN s.previous_until > now() THEN s.previous_wrapped_secret END, "
					  "  jsonb_build_object('id', e.event_id, 'type', e.type, 'tenant_id', e.tenant_id, "
					  "    'created_at', to_char(e.created_at AT TIME ZONE 'UTC', "
					  "                          'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
					  "    'data', e.data)::text",
					  2, argtypes, args, NULL);
	tt = SPI_tuptable;

	old = MemoryContextSwitchTo(cxt);
	b->deliveries = palloc0(sizeof(Delivery) * Max(tt->numvals, 1));
	b->secrets = palloc0(sizeof(Secret) * Max(tt->numvals, 1));
	b->ndeliveries = tt->numvals;
	for (int i = 0; i < b->ndeliveries; i++)
	{
		HeapTuple	tup = tt->vals[i];
		Delivery   *d = &b->deliveries[i];
		bool		isnull;
		Datum		tenant_id = SPI_getbinval(tup, tt->tupdesc, 1, &isnull);
		Datum		subscription_id = SPI_getbinval(tup, tt->tupdesc, 3, &isnull);

		memcpy(&d->tenant, DatumGetUUIDP(tenant_id), sizeof(pg_uuid_t));
		memcpy(&d->delivery, DatumGetUUIDP(SPI_getbinval(tup, tt->tupdesc, 2, &isnull)),
			   sizeof(pg_uuid_t));
		d->event_id = SPI_getvalue(tup, tt->tupdesc, 4);
		d->url = SPI_getvalue(tup, tt->tupdesc, 5);
		d->body = SPI_getvalue(tup, tt->tupdesc, 10);
		for (int j = 0; j < b->nsecrets && d->secret == NULL; j++)
			if (memcmp(&b->secrets[j].subscription, DatumGetUUIDP(subscription_id),
					   sizeof(pg_uuid_t)) == 0)
				d->secret = &b->secrets[j];
		if (d->secret == NULL)
		{
			d->secret = &b->secrets[b->nsecrets++];
			memcpy(&d->secret->subscription, DatumGetUUIDP(subscription_id), sizeof(pg_uuid_t));
			open_secrets(d->secret, tenant_id, subscription_id, tup, tt->tupdesc);
		}
	}
	MemoryContextSwitchTo(old);
	/* SPI keeps result tables until SPI_finish(): a long run would pile them up */
	SPI_freetuptable(tt);
}

/* " v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>" */
static void
append_signature(StringInfo sig, const unsigned char *key, const StringInfo signed_content)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char		b64[64];
	int			len;

	if (HMAC(EVP_sha256(), key, SECRET_BYTES, (unsigned char *) signed_content->data,
			 signed_content->len, mac, &maclen) == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not compute HMAC-SHA256"),
				errdetail_internal("%s", agentidp_openssl_error()));
	len = pg_b64_encode((char *) mac, maclen, b64, sizeof(b64));
	if (len < 0)
		elog(ERROR, "could not encode a webhook signature");
	appendStringInfo(sig, "%sv1,%.*s", sig->len > 0 ? " " : "", len, b64);
}

/* printable ASCII of s, at most max characters: a receiver's text is untrusted */
static void
append_clean(StringInfo buf, const char *s, int max)
{
	for (int i = 0; s[i] != '\0' && i < max; i++)
		appendStringInfoChar(buf, (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?');
}

/* last_error of a delivery that failed */
static char *
failure(const Delivery *d)
{
	const AgentidpHttpRequest *r = d->request;
	StringInfoData e;

	initStringInfo(&e);
	if (r == NULL)
		append_clean(&e, d->secret->error ? d->secret->error : "the secret could not be opened",
					 ERROR_SNIPPET);
	else if (r->status != 0)
	{
		appendStringInfo(&e, "HTTP %ld", r->status);
		if (r->response_len > 0)
		{
			appendStringInfoString(&e, ": ");
			append_clean(&e, r->response, ERROR_SNIPPET);
		}
	}
	else
	{
		append_clean(&e, r->error ? r->error : "no response", ERROR_SNIPPET);
		if (r->refused)
			appendStringInfoString(&e, " (agentidp.allow_private_addresses is off)");
	}
	return e.data;
}

/*
 * POST each delivery whose secrets opened, all at once, and note the
 * outcomes.  The transaction open now has no snapshot, no lock and no
 * transaction id (SPI_commit() began it and nothing has run in it), so
 * waiting on receivers holds back neither vacuum nor anyone's lock.  Each
 * request is signed just before it goes, so that its timestamp is the
 * time of sending.  No SPI here: what is allocated goes to the batch's
 * memory.
 */
static void
send_batch(Batch *b)
{
	AgentidpHttpRequest *requests = palloc0(sizeof(AgentidpHttpRequest) * Max(b->ndeliveries, 1));
	AgentidpHttpOptions options;
	int			n = 0;

	for (int i = 0; i < b->ndeliveries; i++)
	{
		Delivery   *d = &b->deliveries[i];
		AgentidpHttpRequest *r;
		StringInfoData content;
		StringInfoData sig;
		int64		now = (int64) time(NULL);

		if (d->secret->key == NULL)
			continue;
		r = d->request = &requests[n++];
		initStringInfo(&content);
		appendStringInfo(&content, "%s." INT64_FORMAT ".%s", d->event_id, now, d->body);
		initStringInfo(&sig);
		append_signature(&sig, d->secret->key, &content);
		if (d->secret->previous != NULL)
			append_signature(&sig, d->secret->previous, &content);
		pfree(content.data);

		r->url = d->url;
		r->body = d->body;
		r->body_len = strlen(d->body);
		r->headers = list_make4(pstrdup("Content-Type: application/json"),
								psprintf("webhook-id: %s", d->event_id),
								psprintf("webhook-timestamp: " INT64_FORMAT, now),
								psprintf("webhook-signature: %s", sig.data));
	}
	options.timeout_ms = agentidp_webhook_timeout;
	options.max_response = MAX_RESPONSE;
	options.allow_private = agentidp_allow_private_addresses;
	agentidp_http_perform(requests, n, &options);

	for (int i = 0; i < b->ndeliveries; i++)
	{
		Delivery   *d = &b->deliveries[i];

		d->status = d->request != NULL ? d->request->status : 0;
		if (d->status < 200 || d->status > 299)
			d->error = cstring_to_text(failure(d));
	}
}

/*
 * Record each outcome, if the lease is still this process's: a 2xx is
 * delivered; anything else is retried after the backoff, or dead after
 * agentidp.webhook_max_attempts.  Returns how many were delivered.
 */
static int64
record_batch(Batch *b, TimestampTz lease)
{
	Oid			argtypes[9] = {UUIDOID, UUIDOID, TIMESTAMPTZOID, BOOLOID, INT4OID, TEXTOID,
	INT4OID, FLOAT8OID, FLOAT8OID};
	Datum		args[9];
	char		nulls[9];
	int64		delivered = 0;

	memset(nulls, ' ', sizeof(nulls));

	args[2] = TimestampTzGetDatum(lease);
	args[6] = Int32GetDatum(agentidp_webhook_max_attempts);
	args[7] = Float8GetDatum(agentidp_webhook_retry_base);
	args[8] = Float8GetDatum(Max(agentidp_webhook_retry_base, agentidp_webhook_retry_cap));
	for (int i = 0; i < b->ndeliveries; i++)
	{
		Delivery   *d = &b->deliveries[i];
		bool		ok = d->error == NULL;

		args[0] = UUIDPGetDatum(&d->tenant);
		args[1] = UUIDPGetDatum(&d->delivery);
		args[3] = BoolGetDatum(ok);
		args[4] = Int32GetDatum((int32) d->status);
		nulls[4] = d->status != 0 ? ' ' : 'n';
		args[5] = PointerGetDatum(d->error);
		nulls[5] = ok ? 'n' : ' ';
		if (run_pinned(&record_plan,
					   "UPDATE agentidp.webhook_deliveries AS d SET "
					   "  status = CASE WHEN $4 THEN 'delivered' "
					   "    WHEN d.attempts >= $7 THEN 'dead' ELSE 'pending' END, "
					   "  lease_until = NULL, last_status = $5, last_error = $6, "
					   "  last_attempt_at = clock_timestamp(), "
					   "  delivered_at = CASE WHEN $4 THEN clock_timestamp() END, "
					   "  next_attempt_at = CASE WHEN $4 OR d.attempts >= $7 THEN d.next_attempt_at "
					   "    ELSE clock_timestamp() + make_interval(secs => "
					   "      least($9, $8 * power(2::float8, d.attempts - 1)) * (0.5 + random() / 2)) END "
					   "WHERE d.tenant_id = $1 AND d.delivery_id = $2 "
					   "  AND d.lease_until = $3 AND d.status = 'pending'",
					   9, argtypes, args, nulls) == 1 && ok)
			delivered++;
	}
	return delivered;
}

/*
 * Events whose deliveries are all over (delivered or dead), older than
 * agentidp.webhook_retention, go with their deliveries; at most one
 * batch (agentidp.expiry_batch_size).  Returns how many went.
 */
static uint64
purge_events(void)
{
	Oid			argtypes[2] = {FLOAT8OID, INT4OID};
	Datum		args[2];

	args[0] = Float8GetDatum(agentidp_webhook_retention);
	args[1] = Int32GetDatum(agentidp_expiry_batch_size);
	return run_pinned(&purge_plan,
					  "DELETE FROM agentidp.webhook_events AS e "
					  "USING (SELECT x.tenant_id, x.event_id FROM agentidp.webhook_events AS x "
					  "       WHERE x.created_at < now() - make_interval(secs => $1) "
					  "         AND NOT EXISTS (SELECT FROM agentidp.webhook_deliveries AS d "
					  "                         WHERE d.tenant_id = x.tenant_id "
					  "                           AND d.event_id = x.event_id "
					  "                           AND d.status = 'pending') "
					  "       ORDER BY x.created_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS old "
					  "WHERE e.tenant_id = old.tenant_id AND e.event_id = old.event_id",
					  2, argtypes, args, NULL);
}

/*----------
 * agentidp.deliver_webhooks(INOUT delivered bigint DEFAULT 0,
 *		time_budget interval DEFAULT '30 seconds')
 *
 * Delivers what is due, batch after batch, until nothing is or the time
 * budget is spent (a batch under way finishes: at most
 * agentidp.webhook_timeout more), then purges old events.  A failed
 * delivery is recorded on its row, never raised.
 *
 * It commits between its steps, so it runs only where a procedure may:
 * CALLed on its own or from a procedure, not inside a transaction block
 * or a function.  Delivering there instead would wait on the network
 * holding the claimed rows' locks and a snapshot.
 *----------
 */
Datum
agentidp_deliver_webhooks(PG_FUNCTION_ARGS)
{
	CallContext *call = (fcinfo->context != NULL && IsA(fcinfo->context, CallContext)) ?
		(CallContext *) fcinfo->context : NULL;
	int64		budget;
	TimestampTz deadline;
	int64		delivered = 0;
	MemoryContext cxt;
	Batch	   *b;
	TupleDesc	tupdesc;
	Datum		values[1];
	bool		nulls[1] = {false};

	if (call == NULL || call->atomic)
		ereport(ERROR,
				errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				errmsg("webhooks cannot be delivered inside a transaction block"),
				errdetail("Delivery commits between its steps so that it holds no lock and no snapshot while it waits on the network."),
				errhint("CALL agentidp.deliver_webhooks() on its own, or from a procedure outside any exception block, as agentidp.run_maintenance() does."));
	budget = PG_ARGISNULL(1) ? 0 : interval_usecs(PG_GETARG_DATUM(1));
	if (budget <= 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("time_budget must be a positive interval"));
	deadline = GetCurrentTimestamp() + budget;

	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect_ext failed");
	/* SPI's procedure memory survives its commits; so does this */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "agentidp webhook batch",
								ALLOCSET_DEFAULT_SIZES);
	b = MemoryContextAllocZero(CurrentMemoryContext, sizeof(Batch));
	while (GetCurrentTimestamp() < deadline)
	{
		TimestampTz lease = GetCurrentTimestamp() +
			((int64) 2 * agentidp_webhook_timeout + LEASE_MARGIN_MS) * 1000;
		int			claimed;

		PG_TRY();
		{
			claim_batch(b, lease, cxt);
			SPI_commit();
			if (b->ndeliveries > 0)
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);

				send_batch(b);
				MemoryContextSwitchTo(old);
				delivered += record_batch(b, lease);
				SPI_commit();
			}
		}
		PG_FINALLY();
		{
			wipe_secrets(b);
		}
		PG_END_TRY();
		claimed = b->ndeliveries;
		MemoryContextReset(cxt);
		memset(b, 0, sizeof(Batch));
		/* a short batch took all that was due */
		if (claimed < agentidp_webhook_batch_size)
			break;
	}
	while (purge_events() == (uint64) agentidp_expiry_batch_size &&
		   GetCurrentTimestamp() < deadline)
		SPI_commit();
	SPI_commit();
	SPI_finish();

	tupdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(tupdesc, (AttrNumber) 1, "delivered", INT8OID, -1, 0);
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = Int64GetDatum(delivered);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
