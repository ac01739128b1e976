/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Rate limits: agentidp.check_rate() and require_rate() for any action
 *	  a user guards, the per-client and per-tenant limits of token
 *	  issuance, their settings, and the decision.  Where the buckets are
 *	  kept is ratelimit_shmem.c's (shared memory, the default) and
 *	  redis_limit.c's (agentidp.redis_url); what the token endpoint
 *	  answers is tokens.c's and the SQL of token_endpoint.
 *
 *	  The algorithm is GCRA, the generic cell rate algorithm: a token
 *	  bucket of "limit" requests that refills continuously at limit/per,
 *	  kept as one timestamp per key, the theoretical arrival time (TAT) of
 *	  the next request.  A request at now passes when
 *	  max(TAT, now) + per/limit - per <= now, and moves TAT on by per/limit.
 *	  One number per key makes the shared-memory entries small and fixed,
 *	  a Redis check one atomic script, and the answer exact: no window
 *	  boundary where twice the limit passes, as with fixed windows, and no
 *	  approximation, as with sliding-window counters (which keep two
 *	  counters and a timestamp and assume requests were spread evenly).
 *	  A full bucket lets "limit" requests through at once, then one every
 *	  per/limit.  An entry whose TAT is past has fully recovered and can
 *	  be forgotten.
 *
 *	  Checks count attempts, not commits: a request that passed and whose
 *	  transaction then rolled back still used its place.
 *
 * IDENTIFICATION
 *	  src/ratelimit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "authz.h"
#include "ratelimit.h"
#include "ratelimit_backend.h"

PG_FUNCTION_INFO_V1(agentidp_check_rate);
PG_FUNCTION_INFO_V1(agentidp_require_rate);
PG_FUNCTION_INFO_V1(agentidp_rate_limit_status);
PG_FUNCTION_INFO_V1(agentidp_valid_rate_limit);
PG_FUNCTION_INFO_V1(agentidp_token_rate_headers);

#define KEY_MAX_LEN			256
#define LIMIT_MAX			1000000000
#define PERIOD_MIN			1000	/* 1 ms */
#define PERIOD_MAX			USECS_PER_DAY
#define WARN_INTERVAL_MS	10000

/* a rate limit setting: "unlimited" or "<count>/[<n>]<unit>" */
typedef struct RateLimitSpec
{
	bool		unlimited;
	int32		count;
	int64		period;			/* µs */
} RateLimitSpec;

static char *agentidp_token_rate_limit = NULL;
static char *agentidp_tenant_token_rate_limit = NULL;
static bool agentidp_rate_limit_fail_open = true;

/* the settings above, parsed by their check hooks */
static const RateLimitSpec *client_default = NULL;
static const RateLimitSpec *tenant_default = NULL;

/*
 * The issuance check of the grant in progress, from its begin to its end,
 * and then its answer, for token_endpoint's headers.  The strings point
 * into the grant's memory, which lasts until its end.
 */
typedef enum IssuanceState
{
	ISSUANCE_NONE,				/* no limit applied, or not checked */
	ISSUANCE_PENDING,			/* sent to Redis, not answered yet */
	ISSUANCE_DECIDED,
	ISSUANCE_UNAVAILABLE		/* refused: the limit could not be checked */
} IssuanceState;

static struct
{
	IssuanceState state;
	int			n;
	RateBucket	b[RATE_MAX_BUCKETS];
	RateLimitSpec spec[RATE_MAX_BUCKETS];
	bool		is_client[RATE_MAX_BUCKETS];
	const char *setting[RATE_MAX_BUCKETS];	/* the limit as set, for messages */
	const char *client_id;
	RateVerdict v;
} issuance;

/* ---- settings ---- */

static const struct
{
	const char *name;
	int64		usecs;
}			units[] =
{
	{"s", USECS_PER_SEC}, {"second", USECS_PER_SEC},
	{"min", USECS_PER_MINUTE}, {"minute", USECS_PER_MINUTE},
	{"h", USECS_PER_HOUR}, {"hour", USECS_PER_HOUR},
	{"d", USECS_PER_DAY}, {"day", USECS_PER_DAY},
};

/* digits without a leading zero, at most max; the end of them in *end */
static bool
parse_count(const char *s, int64 max, int64 *out, const char **end)
{
	int64		v = 0;
	const char *p = s;

	if (*p < '1' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++)
	{
		v = v * 10 + (*p - '0');
		if (v > max)
			return false;
	}
	*out = v;
	*end = p;
	return true;
}

/*
 * "unlimited", or "<count>/<period>": count 1 to 1000000000, period an
 * optional multiplier and a unit (s, min, h, d, or second, minute, hour,
 * day), from 1 second to 1 day, and at most one request per microsecond.
 */
static bool
parse_rate_limit(const char *s, RateLimitSpec *out)
{
	int64		count;
	int64		mult = 1;
	const char *p;

	memset(out, 0, sizeof(RateLimitSpec));
	if (strcmp(s, "unlimited") == 0)
	{
		out->unlimited = true;
		return true;
	}
	if (!parse_count(s, LIMIT_MAX, &count, &p) || *p++ != '/')
		return false;
	if (*p >= '0' && *p <= '9' && !parse_count(p, PERIOD_MAX / USECS_PER_SEC, &mult, &p))
		return false;
	for (int i = 0; i < lengthof(units); i++)
	{
		if (strcmp(p, units[i].name) == 0)
		{
			int64		period = mult * units[i].usecs;

			if (period > PERIOD_MAX || count > period)
				return false;
			out->count = (int32) count;
			out->period = period;
			return true;
		}
	}
	return false;
}

static bool
check_rate_limit_setting(char **newval, void **extra, GucSource source)
{
	RateLimitSpec spec;
	RateLimitSpec *copy;

	if (*newval == NULL || !parse_rate_limit(*newval, &spec))
	{
		GUC_check_errdetail("A rate limit is \"unlimited\" or \"<count>/<period>\" such as \"100/min\", \"10/s\", \"5000/h\", \"20/15min\", for a period of at most a day.");
		return false;
	}
	copy = malloc(sizeof(RateLimitSpec));
	if (copy == NULL)
		return false;
	*copy = spec;
	*extra = copy;
	return true;
}

static void
assign_client_default(const char *newval, void *extra)
{
	client_default = extra;
}

static void
assign_tenant_default(const char *newval, void *extra)
{
	tenant_default = extra;
}

void
agentidp_ratelimit_init(void)
{
	DefineCustomStringVariable("agentidp.token_rate_limit",
							   "Token issuance rate limit of each client, unless its tenant or the agent sets one.",
							   "\"unlimited\" or \"<count>/<period>\", such as \"100/min\".",
							   &agentidp_token_rate_limit,
							   "100/min",
							   PGC_SUSET,
							   0,
							   check_rate_limit_setting, assign_client_default, NULL);

	DefineCustomStringVariable("agentidp.tenant_token_rate_limit",
							   "Token issuance rate limit of all the clients of a tenant together, unless the tenant sets one.",
							   "\"unlimited\" or \"<count>/<period>\", such as \"5000/min\".",
							   &agentidp_tenant_token_rate_limit,
							   "unlimited",
							   PGC_SUSET,
							   0,
							   check_rate_limit_setting, assign_tenant_default, NULL);

	DefineCustomBoolVariable("agentidp.rate_limit_fail_open",
							 "Whether requests pass unchecked while Redis does not answer.",
							 "Off, they are refused (53400) until it answers again.",
							 &agentidp_rate_limit_fail_open,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	agentidp_shmem_limits_init();
	agentidp_redis_limits_init();
}

/* ---- the decision ---- */

/*
 * GCRA over n buckets whose stored TATs are tat[] (0: none), all or
 * nothing: the TATs a pass leaves in next[], and the verdict about the
 * binding bucket (the one refused that frees up last, or the one with
 * the fewest requests left).  The Lua script of redis_limit.c does the
 * same: keep them in step.
 */
void
agentidp_rate_decide(const RateBucket *b, int n, int64 now,
					 const int64 *tat, int64 *next, RateVerdict *v)
{
	memset(v, 0, sizeof(RateVerdict));
	v->allowed = true;
	for (int i = 0; i < n; i++)
	{
		int64		t = Max(tat[i], now);
		int64		wait;

		next[i] = t + b[i].emission;
		wait = next[i] - b[i].period - now;
		if (wait > 0)
		{
			if (v->allowed || wait > v->retry)
			{
				v->binding = i;
				v->retry = wait;
				v->reset = t - now;
			}
			v->allowed = false;
		}
	}
	if (!v->allowed)
		return;
	v->remaining = -1;
	for (int i = 0; i < n; i++)
	{
		int64		left = (b[i].period - (next[i] - now)) / b[i].emission;

		if (v->remaining < 0 || left < v->remaining)
		{
			v->binding = i;
			v->remaining = left;
			v->reset = next[i] - now;
		}
	}
}

/* whole seconds, rounded up, of a positive time in µs; at least 1 */
static int
seconds_up(int64 usecs)
{
	int64		s = (usecs + USECS_PER_SEC - 1) / USECS_PER_SEC;

	return (int) Max(s, 1);
}

static bool
store_available(void)
{
	return agentidp_redis_configured() || agentidp_shmem_limits_ready();
}

/* at most one WARNING every WARN_INTERVAL_MS per session: a Redis outage must not flood the log */
static void
warn_unchecked(const char *why)
{
	static TimestampTz last_warning = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (last_warning != 0 && !TimestampDifferenceExceeds(last_warning, now, WARN_INTERVAL_MS))
		return;
	last_warning = now;
	ereport(WARNING,
			errcode(ERRCODE_WARNING),
			errmsg("rate limit not checked: Redis did not answer"),
			errdetail("Redis at %s: %s.", agentidp_redis_target(), why),
			errhint("agentidp.rate_limit_fail_open is on: requests pass unchecked while Redis does not answer (this session warns at most every %d seconds).",
					WARN_INTERVAL_MS / 1000));
}

/*
 * Redis did not take or answer a check: the request passes unchecked
 * (fail open), or this raises (fail closed).
 */
static void
unchecked(const char *why)
{
	agentidp_limits_count(RC_REDIS_FAILURES);
	if (!agentidp_rate_limit_fail_open)
	{
		agentidp_limits_count(RC_UNCHECKED_REFUSED);
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("rate limit could not be checked"),
				errdetail("Redis at %s: %s.", agentidp_redis_target(), why),
				errhint("agentidp.rate_limit_fail_open is off: requests are refused while Redis does not answer."));
	}
	agentidp_limits_count(RC_UNCHECKED_PASSED);
	warn_unchecked(why);
}

/*
 * Check the buckets where they are kept.  False when Redis did not answer
 * and the request passes unchecked.
 */
static bool
run_check(const RateBucket *b, int n, RateVerdict *v)
{
	const char *why;

	if (!agentidp_redis_configured())
	{
		agentidp_shmem_limits_check(b, n, v);
		return true;
	}
	if (agentidp_redis_limits_send(b, n, &why) && agentidp_redis_limits_receive(v, &why))
		return true;
	unchecked(why);
	return false;
}

/* the bucket of a limit under a key */
static void
make_bucket(RateBucket *b, char *key, const RateLimitSpec *spec)
{
	b->key = key;
	b->period = spec->period;
	b->emission = spec->period / spec->count;
}

static char *
tenant_key(const pg_uuid_t *tenant, const char *rest)
{
	char	   *t = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(tenant)));

	/* {tenant}: a Redis Cluster hash tag, so a tenant's keys share a slot */
	return psprintf("agentidp:rl:{%s}:%s", t, rest);
}

/* ---- check_rate and require_rate ---- */

static char *
period_text(int64 usecs)
{
	if (usecs % USECS_PER_SEC == 0)
		return psprintf(INT64_FORMAT " s", usecs / USECS_PER_SEC);
	return psprintf(INT64_FORMAT " ms", usecs / 1000);
}

/*
 * The arguments of check_rate and require_rate, checked, as a bucket of
 * the current identity's tenant; the check's verdict in *v, false when it
 * passed unchecked.
 */
static bool
user_check(FunctionCallInfo fcinfo, RateLimitSpec *spec, char **key, RateVerdict *v)
{
	static const char *const names[3] = {"key", "limit", "per"};
	text	   *k;
	Interval   *per;
	int64		usecs;
	pg_uuid_t	tenant;
	pg_uuid_t	agent;
	bool		has_tenant;
	bool		has_agent;
	char	   *act;
	RateBucket	b;

	for (int i = 0; i < 3; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("%s must not be null", names[i]));
	k = PG_GETARG_TEXT_PP(0);
	*key = text_to_cstring(k);
	if (VARSIZE_ANY_EXHDR(k) == 0 || VARSIZE_ANY_EXHDR(k) > KEY_MAX_LEN ||
		strlen(*key) != VARSIZE_ANY_EXHDR(k))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("key must be 1 to %d bytes", KEY_MAX_LEN));
	for (const char *p = *key; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("key must not contain control characters"));
	if (PG_GETARG_INT32(1) < 1 || PG_GETARG_INT32(1) > LIMIT_MAX)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("limit must be from 1 to %d", LIMIT_MAX));
	per = PG_GETARG_INTERVAL_P(2);
	usecs = per->time + (int64) per->day * USECS_PER_DAY;
	if (per->month != 0 || usecs < PERIOD_MIN || usecs > PERIOD_MAX)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("per must be from 1 millisecond to 1 day"),
				per->month != 0 ? errdetail("Months and years are not a fixed length.") : 0);
	if (PG_GETARG_INT32(1) > usecs)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("limit must be at most one request per microsecond of per"));
	spec->unlimited = false;
	spec->count = PG_GETARG_INT32(1);
	spec->period = usecs;

	if (!agentidp_identity_actor(&tenant, &has_tenant, &agent, &has_agent, &act) || !has_tenant)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("a rate limit key needs an identity"),
				errdetail("Keys are counted per tenant, the tenant of the transaction's identity."),
				errhint("Call agentidp.authenticate(token) first in this transaction."));
	if (!store_available())
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("rate limits need agentidp in shared_preload_libraries or a Redis server"),
				errhint("Add agentidp to shared_preload_libraries and restart, or set agentidp.redis_url."));

	make_bucket(&b, tenant_key(&tenant, psprintf("u:%s", *key)), spec);
	return run_check(&b, 1, v);
}

/*
 * agentidp.check_rate(key text, "limit" integer, per interval)
 *		RETURNS boolean
 *
 * Whether one more request under key passes "limit" per "per" for the
 * current identity's tenant; true takes its place.
 */
Datum
agentidp_check_rate(PG_FUNCTION_ARGS)
{
	RateLimitSpec spec;
	char	   *key;
	RateVerdict v;

	if (!user_check(fcinfo, &spec, &key, &v))
		PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(v.allowed);
}

/*
 * agentidp.require_rate(key text, "limit" integer, per interval)
 *		RETURNS void
 *
 * check_rate that raises 53400 instead of returning false.
 */
Datum
agentidp_require_rate(PG_FUNCTION_ARGS)
{
	RateLimitSpec spec;
	char	   *key;
	RateVerdict v;

	if (user_check(fcinfo, &spec, &key, &v) && !v.allowed)
	{
		int			secs = seconds_up(v.retry);

		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("rate limit exceeded for key \"%s\"", key),
				errdetail_plural("The limit is %d per %s; retry after %d second.",
								 "The limit is %d per %s; retry after %d seconds.",
								 secs, spec.count, period_text(spec.period), secs));
	}
	PG_RETURN_VOID();
}

/* ---- token issuance ---- */

/* a stored setting, or the default when there is none */
static RateLimitSpec
setting_spec(const char *setting, const RateLimitSpec *fallback)
{
	RateLimitSpec spec;

	if (setting == NULL)
		return *fallback;
	/* the CHECK constraints keep bad values out of the tables */
	if (!parse_rate_limit(setting, &spec))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid token rate limit setting \"%s\"", setting));
	return spec;
}

void
agentidp_forget_issuance_limit(void)
{
	issuance.state = ISSUANCE_NONE;
}

/* the verdict: kept for the headers, and a refusal raised */
static void
issuance_decided(const RateVerdict *v)
{
	int			k = v->binding;
	int			secs = seconds_up(v->retry);

	issuance.state = ISSUANCE_DECIDED;
	issuance.v = *v;
	if (v->allowed)
		return;
	if (issuance.is_client[k])
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("token rate limit of client \"%s\" exceeded", issuance.client_id),
				errdetail_plural("The limit is %s; retry after %d second.",
								 "The limit is %s; retry after %d seconds.",
								 secs, issuance.setting[k], secs));
	ereport(ERROR,
			errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			errmsg("token rate limit of the tenant exceeded"),
			errdetail_plural("The limit is %s for all its clients; retry after %d second.",
							 "The limit is %s for all its clients; retry after %d seconds.",
							 secs, issuance.setting[k], secs));
}

/* one bucket of the issuance check, unless its limit is "unlimited" */
static void
issuance_bucket(const pg_uuid_t *tenant, const char *setting, const char *fallback_text,
				const RateLimitSpec *fallback, bool is_client)
{
	int			n = issuance.n;

	issuance.spec[n] = setting_spec(setting, fallback);
	if (issuance.spec[n].unlimited)
		return;
	make_bucket(&issuance.b[n],
				tenant_key(tenant, is_client ? psprintf("token:client:%s", issuance.client_id) :
						   "token:tenant"),
				&issuance.spec[n]);
	issuance.is_client[n] = is_client;
	issuance.setting[n] = setting ? setting : fallback_text;
	issuance.n++;
}

/*
 * Shared memory decides at once.  Redis gets the check now and answers
 * while the grant signs its token and writes its audit row; the grant
 * reads the answer at its end (agentidp_issuance_limit_end), so that the
 * round trip costs little of the grant's time.  A refusal then still
 * rolls back all the grant did.
 */
void
agentidp_issuance_limit_begin(const pg_uuid_t *tenant, const char *client_id,
							  const char *client_limit, const char *tenant_limit)
{
	static bool told = false;
	const char *why;
	RateVerdict v;

	issuance.state = ISSUANCE_NONE;
	issuance.n = 0;
	issuance.client_id = client_id;
	issuance_bucket(tenant, client_limit, agentidp_token_rate_limit, client_default, true);
	issuance_bucket(tenant, tenant_limit, agentidp_tenant_token_rate_limit, tenant_default, false);
	if (issuance.n == 0)
		return;
	if (!store_available())
	{
		/* tokens are issued as before; the server log says what is missing, once */
		if (!told)
			ereport(LOG,
					errmsg("agentidp: token rate limits are not enforced"),
					errdetail("Neither is agentidp in shared_preload_libraries nor is agentidp.redis_url set."));
		told = true;
		return;
	}
	if (!agentidp_redis_configured())
	{
		agentidp_shmem_limits_check(issuance.b, issuance.n, &v);
		issuance_decided(&v);
		return;
	}
	/* a fail-closed refusal answers Retry-After: 1 */
	issuance.state = ISSUANCE_UNAVAILABLE;
	if (agentidp_redis_limits_send(issuance.b, issuance.n, &why))
	{
		issuance.state = ISSUANCE_PENDING;
		return;
	}
	unchecked(why);
	issuance.state = ISSUANCE_NONE;
}

void
agentidp_issuance_limit_end(void)
{
	const char *why;
	RateVerdict v;

	if (issuance.state != ISSUANCE_PENDING)
		return;
	issuance.state = ISSUANCE_UNAVAILABLE;
	if (agentidp_redis_limits_receive(&v, &why))
	{
		issuance_decided(&v);
		return;
	}
	unchecked(why);
	issuance.state = ISSUANCE_NONE;
}

/*
 * agentidp._token_rate_headers() RETURNS jsonb
 *
 * The HTTP headers of the last issuance check of this session, once:
 * RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset and
 * RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers-07), and
 * Retry-After when refused; NULL when no limit applied.
 */
Datum
agentidp_token_rate_headers(PG_FUNCTION_ARGS)
{
	StringInfoData h;
	const RateVerdict *v = &issuance.v;
	const RateLimitSpec *spec = &issuance.spec[issuance.v.binding];
	IssuanceState state = issuance.state;

	issuance.state = ISSUANCE_NONE;
	if (state != ISSUANCE_DECIDED && state != ISSUANCE_UNAVAILABLE)
		PG_RETURN_NULL();
	initStringInfo(&h);
	if (state == ISSUANCE_UNAVAILABLE)
		appendStringInfoString(&h, "{\"Retry-After\": \"1\"}");
	else
	{
		appendStringInfo(&h, "{\"RateLimit-Limit\": \"%d\", \"RateLimit-Remaining\": \"" INT64_FORMAT "\", "
						 "\"RateLimit-Reset\": \"%d\", \"RateLimit-Policy\": \"%d;w=%d\"",
						 spec->count, v->remaining, seconds_up(v->reset),
						 spec->count, seconds_up(spec->period));
		if (!v->allowed)
			appendStringInfo(&h, ", \"Retry-After\": \"%d\"", seconds_up(v->retry));
		appendStringInfoChar(&h, '}');
	}
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(h.data)));
}

/* ---- settings in tables, and the counters ---- */

/*
 * agentidp._valid_rate_limit(rate_limit text) RETURNS boolean
 *
 * For the CHECK constraints of agents.token_rate_limit and of the
 * tenants' settings.
 */
Datum
agentidp_valid_rate_limit(PG_FUNCTION_ARGS)
{
	RateLimitSpec spec;

	PG_RETURN_BOOL(parse_rate_limit(text_to_cstring(PG_GETARG_TEXT_PP(0)), &spec));
}

/*
 * agentidp.rate_limit_status() RETURNS record
 *
 * Where the buckets are kept, the shared-memory table's size and use, and
 * the counters since the server started (per session without preload).
 */
Datum
agentidp_rate_limit_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[8];
	bool		nulls[8] = {false};
	uint64		counters[RC_COUNT];
	int64		used;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	agentidp_limits_counters(counters, &used);
	values[0] = CStringGetTextDatum(agentidp_redis_configured() ? "redis" :
									agentidp_shmem_limits_ready() ? "shared memory" : "none");
	values[1] = Int32GetDatum(agentidp_rate_limit_slots);
	nulls[1] = !agentidp_shmem_limits_ready();
	values[2] = Int64GetDatum(used);
	nulls[2] = used < 0;
	for (int c = 0; c < RC_COUNT; c++)
		values[3 + c] = Int64GetDatum((int64) counters[c]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
