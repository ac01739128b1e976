/*-------------------------------------------------------------------------
 *
 * issuers.c
 *	  Trusted external issuers.  A tenant's administrator trusts a
 *	  person's identity provider (agentidp.trust_issuer); the maintenance
 *	  task fetches its key set into agentidp.issuer_keys; token exchange
 *	  then accepts that provider's tokens as the subject an agent acts
 *	  for.  Verification follows RFC 8725 as for agentidp's own tokens:
 *	  the key comes from the kid among the trusted issuer's keys, the
 *	  algorithm must be an asymmetric one the key serves, and the issuer,
 *	  the audience (the tenant's own issuer) and the times are checked.
 *
 * IDENTIFICATION
 *	  src/issuers.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "agentidp.h"
#include "http.h"
#include "issuers.h"
#include "jose.h"
#include "jwk.h"
#include "tokens.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(agentidp_public_key_set);

/* the algorithms accepted from outside issuers: asymmetric only (jwt-attacks.md) */
static const char *const external_algs[] = {"ES256", "RS256", "PS256", "EdDSA"};

static JsonbValue *
member(JsonbContainer *c, const char *name)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) name;
	k.val.string.len = strlen(name);
	return findJsonbValueFromContainer(c, JB_FOBJECT, &k);
}

static char *
string_member(JsonbContainer *c, const char *name)
{
	JsonbValue *v = member(c, name);

	return (v != NULL && v->type == jbvString) ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
}

static bool
external_alg(const char *alg)
{
	for (int i = 0; i < lengthof(external_algs); i++)
		if (strcmp(alg, external_algs[i]) == 0)
			return true;
	return false;
}

static pg_attribute_noreturn() void
refuse(const char *reason)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg("invalid subject token: %s", reason));
}

/*
 * agentidp._public_key_set(jwks jsonb) RETURNS jsonb
 *
 * What is kept of a fetched JWK Set: the keys meant for signatures (no
 * "use", or "sig") of a kind agentidp verifies (EC P-256, RSA, Ed25519),
 * with a kid and no "alg" outside the accepted ones; other keys are left
 * out, as RFC 7517 section 5 lets a reader do.  A kept key that does not
 * import as a valid public key (private members included) spoils the
 * set: it raises, and the cache keeps its previous set.
 */
Datum
agentidp_public_key_set(PG_FUNCTION_ARGS)
{
	Jsonb	   *jwks = PG_GETARG_JSONB_P(0);
	JsonbValue *keys;
	JsonbParseState *state = NULL;
	JsonbValue *res;
	int			kept = 0;

	if (!JB_ROOT_IS_OBJECT(jwks) ||
		(keys = member(&jwks->root, "keys")) == NULL ||
		keys->type != jbvBinary || !JsonContainerIsArray(keys->val.binary.data))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a JWK Set is an object with a \"keys\" array"));

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	{
		JsonbValue	k;

		k.type = jbvString;
		k.val.string.val = "keys";
		k.val.string.len = 4;
		pushJsonbValue(&state, WJB_KEY, &k);
	}
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < JsonContainerSize(keys->val.binary.data); i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(keys->val.binary.data, i);
		char	   *use;
		char	   *kty;
		char	   *alg;
		Jsonb	   *jwk;
		AgentidpJwk *key;

		if (e->type != jbvBinary || !JsonContainerIsObject(e->val.binary.data))
			continue;
		use = string_member(e->val.binary.data, "use");
		kty = string_member(e->val.binary.data, "kty");
		alg = string_member(e->val.binary.data, "alg");
		if ((use != NULL && strcmp(use, "sig") != 0) || kty == NULL ||
			(strcmp(kty, "EC") != 0 && strcmp(kty, "RSA") != 0 && strcmp(kty, "OKP") != 0) ||
			(alg != NULL && !external_alg(alg)) ||
			string_member(e->val.binary.data, "kid") == NULL)
			continue;
		jwk = JsonbValueToJsonb(e);
		/* raises for a malformed key, a weak one, or one with private members */
		key = agentidp_jwk_import(jwk, false);
		agentidp_jwk_free(key);
		pushJsonbValue(&state, WJB_ELEM, e);
		kept++;
	}
	pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	if (kept == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("the JWK Set holds no public signing key agentidp can use"),
				errhint("Keys need a kid and must be EC P-256, RSA or Ed25519 keys for signatures."));
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}

/* the key with this kid in a cached set, or NULL */
static Jsonb *
key_by_kid(Jsonb *jwks, const char *kid)
{
	JsonbValue *keys = member(&jwks->root, "keys");

	if (keys == NULL || keys->type != jbvBinary || !JsonContainerIsArray(keys->val.binary.data))
		return NULL;
	for (int i = 0; i < JsonContainerSize(keys->val.binary.data); i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(keys->val.binary.data, i);
		char	   *k;

		if (e->type != jbvBinary || !JsonContainerIsObject(e->val.binary.data))
			continue;
		k = string_member(e->val.binary.data, "kid");
		if (k != NULL && strcmp(k, kid) == 0)
			return JsonbValueToJsonb(e);
	}
	return NULL;
}

static int64
time_claim(Jsonb *payload, const char *name)
{
	JsonbValue *v = member(&payload->root, name);

	/* jws_verify checked that registered times are integers */
	if (v == NULL || v->type != jbvNumeric)
		return -1;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}

static bool
audience_has(Jsonb *payload, const char *aud)
{
	JsonbValue *v = member(&payload->root, "aud");

	if (v == NULL)
		return false;
	if (v->type == jbvString)
		return v->val.string.len == strlen(aud) && memcmp(v->val.string.val, aud, v->val.string.len) == 0;
	if (v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data))
	{
		for (int i = 0; i < JsonContainerSize(v->val.binary.data); i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(v->val.binary.data, i);

			if (e->type == jbvString && e->val.string.len == strlen(aud) &&
				memcmp(e->val.string.val, aud, e->val.string.len) == 0)
				return true;
		}
	}
	return false;
}

bool
agentidp_external_subject(const pg_uuid_t *tenant, const char *tenant_issuer,
						  text *token, int64 now, ExternalSubject *out)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1];
	AgentidpJws jws;
	Jsonb	   *jwk = NULL;
	Jsonb	   *payload;
	char	   *iss;
	char	   *sub;
	int64		exp;
	int64		nbf;
	int64		iat;

	agentidp_jws_parse(token, &jws, false);
	if (jws.kid == NULL)
		return false;

	args[0] = UUIDPGetDatum(tenant);
	(void) agentidp_run_plan(&plan,
							 "SELECT k.issuer, k.jwks, t.scopes FROM agentidp.issuer_keys AS k "
							 "JOIN agentidp.trusted_issuers AS t USING (tenant_id, issuer) "
							 "WHERE k.tenant_id = $1 AND k.jwks IS NOT NULL ORDER BY k.issuer",
							 1, argtypes, args, NULL, true, 0);
	memset(out, 0, sizeof(*out));
	for (uint64 i = 0; i < SPI_processed && jwk == NULL; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		scopes;

		jwk = key_by_kid(DatumGetJsonbP(SPI_getbinval(tup, desc, 2, &isnull)), jws.kid);
		if (jwk == NULL)
			continue;
		out->issuer = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		scopes = SPI_getbinval(tup, desc, 3, &isnull);
		out->scoped = !isnull;
		if (!isnull)
		{
			bool	   *nulls;

			deconstruct_array(DatumGetArrayTypeP(scopes), TEXTOID, -1, false, TYPALIGN_INT,
							  &out->policy, &nulls, &out->npolicy);
		}
	}
	if (jwk == NULL)
		return false;

	if (!external_alg(jws.alg))
		refuse("the algorithm is not one accepted from outside issuers");
	/* checks the algorithm against the key's type and its own "alg" */
	payload = agentidp_verify_with_public_jwk(&jws, jwk);

	iss = string_member(&payload->root, "iss");
	if (iss == NULL || strcmp(iss, out->issuer) != 0)
		refuse("wrong issuer");
	if (!audience_has(payload, tenant_issuer))
		refuse("wrong audience: the token must be meant for the tenant's issuer");
	sub = string_member(&payload->root, "sub");
	if (sub == NULL || sub[0] == '\0' || strlen(sub) > 255)
		refuse("no sub");
	exp = time_claim(payload, "exp");
	nbf = time_claim(payload, "nbf");
	iat = time_claim(payload, "iat");
	if (exp < 0)
		refuse("no exp");
	if (now >= exp + agentidp_clock_skew)
		refuse("expired");
	if ((nbf >= 0 && nbf > now + agentidp_clock_skew) || (iat >= 0 && iat > now + agentidp_clock_skew))
		refuse("not yet valid");
	out->sub = sub;
	out->exp = exp;
	out->scope = string_member(&payload->root, "scope");
	return true;
}

bool
agentidp_issuer_trusted(const pg_uuid_t *tenant, const char *issuer)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {UUIDOID, TEXTOID};
	Datum		args[2];

	args[0] = UUIDPGetDatum(tenant);
	args[1] = CStringGetTextDatum(issuer);
	(void) agentidp_run_plan(&plan,
							 "SELECT 1 FROM agentidp.trusted_issuers WHERE tenant_id = $1 AND issuer = $2",
							 2, argtypes, args, NULL, true, 1);
	return SPI_processed == 1;
}

/* bounds on how long a fetched key set is kept before the next fetch */
#define KEYS_MIN_AGE	300
#define KEYS_MAX_AGE	86400
#define KEYS_DEFAULT_AGE 3600
/* a token asking for an unknown kid refreshes a set at most this often */
#define KEYS_MIN_REFRESH 60
/* a failed fetch is tried again after this long (the old keys stay) */
#define KEYS_RETRY		300

/* the requests of tokens with unknown kids: due now, unless one made it due less than a minute ago */
static void
apply_refresh_requests(void)
{
	static SPIPlanPtr plan = NULL;
	pg_uuid_t	tenants[64];
	int			n = agentidp_worker_take_key_refreshes(tenants, lengthof(tenants));
	Datum	   *elems;
	Oid			argtypes[2] = {UUIDARRAYOID, INT4OID};
	Datum		args[2];

	if (n == 0)
		return;
	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = UUIDPGetDatum(&tenants[i]);
	args[0] = PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = Int32GetDatum(KEYS_MIN_REFRESH);
	(void) agentidp_run_plan(&plan,
							 "UPDATE agentidp.issuer_keys SET next_fetch_at = now(), refresh_requested_at = now() "
							 "WHERE tenant_id = ANY ($1) AND (refresh_requested_at IS NULL OR "
							 "refresh_requested_at < now() - make_interval(secs => $2))",
							 2, argtypes, args, NULL, false, 0);
}

/* the checked public keys of a fetched body, or NULL with *error set */
static Jsonb *
checked_key_set(const char *body, size_t len, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Jsonb	   *volatile keys = NULL;

	/* a subtransaction: a bad body is an error of this set, not of the run */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Jsonb	   *parsed = agentidp_json_parse_strict(body, (int) len, "JWK Set");

		keys = DatumGetJsonbP(DirectFunctionCall1(agentidp_public_key_set, JsonbPGetDatum(parsed)));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*error = pstrdup(e->message);
		keys = NULL;
	}
	PG_END_TRY();
	return keys;
}

static void
record_fetch(Datum tenant, Datum issuer, Jsonb *keys, int max_age, const char *error)
{
	static SPIPlanPtr ok_plan = NULL;
	static SPIPlanPtr failed_plan = NULL;
	Oid			argtypes[4] = {UUIDOID, TEXTOID, JSONBOID, INT4OID};
	Datum		args[4];

	args[0] = tenant;
	args[1] = issuer;
	if (keys != NULL)
	{
		args[2] = JsonbPGetDatum(keys);
		args[3] = Int32GetDatum(max_age < 0 ? KEYS_DEFAULT_AGE :
								Min(Max(max_age, KEYS_MIN_AGE), KEYS_MAX_AGE));
		(void) agentidp_run_plan(&ok_plan,
								 "UPDATE agentidp.issuer_keys SET jwks = $3, fetched_at = now(),"
								 " next_fetch_at = now() + make_interval(secs => $4),"
								 " last_error = NULL, last_error_at = NULL "
								 "WHERE tenant_id = $1 AND issuer = $2",
								 4, argtypes, args, NULL, false, 0);
	}
	else
	{
		args[2] = CStringGetTextDatum(error);
		argtypes[2] = TEXTOID;
		args[3] = Int32GetDatum(KEYS_RETRY);
		(void) agentidp_run_plan(&failed_plan,
								 "UPDATE agentidp.issuer_keys SET last_error = $3, last_error_at = now(),"
								 " next_fetch_at = now() + make_interval(secs => $4) "
								 "WHERE tenant_id = $1 AND issuer = $2",
								 4, argtypes, args, NULL, false, 0);
	}
}

/* a key set is a small document; fetching one takes seconds at most */
#define KEYS_MAX_BYTES	(1024 * 1024)
#define KEYS_TIMEOUT_MS 10000

/* max-age of a Cache-Control header value, or -1 (no-store and no-cache count as 0) */
static int
cache_max_age(const char *cache_control)
{
	const char *p;

	if (cache_control == NULL)
		return -1;
	if (strstr(cache_control, "no-store") != NULL || strstr(cache_control, "no-cache") != NULL)
		return 0;
	p = strstr(cache_control, "max-age=");
	if (p == NULL)
		return -1;
	p += strlen("max-age=");
	if (*p < '0' || *p > '9')
		return -1;
	return (int) Min(strtol(p, NULL, 10), (long) INT_MAX);
}

/* GET the key set: its body, or NULL with *error set */
static char *
fetch_key_set(const char *url, size_t *len, int *max_age, char **error)
{
	AgentidpHttpRequest req;
	AgentidpHttpOptions opts;
	char	   *problem;
	bool		not_public;

	problem = agentidp_http_url_problem(url, agentidp_allow_private_addresses, &not_public);
	if (problem != NULL)
	{
		*error = psprintf("jwks_uri refused: %s", problem);
		return NULL;
	}
	memset(&req, 0, sizeof(req));
	req.url = url;
	req.headers = list_make1("Accept: application/jwk-set+json, application/json");
	opts.timeout_ms = KEYS_TIMEOUT_MS;
	opts.max_response = KEYS_MAX_BYTES;
	opts.allow_private = agentidp_allow_private_addresses;
	agentidp_http_perform(&req, 1, &opts);
	if (req.error != NULL)
	{
		*error = psprintf("fetching the key set failed: %s", req.error);
		return NULL;
	}
	if (req.status != 200)
	{
		*error = psprintf("fetching the key set failed: HTTP status %ld", req.status);
		return NULL;
	}
	*max_age = cache_max_age(agentidp_http_header(&req, "Cache-Control"));
	*len = req.response_len;
	return req.response;
}

/*
 * agentidp.refresh_issuer_keys() RETURNS bigint
 *
 * Fetches the key sets that are due (at most 20 a run), and returns how
 * many it stored.  A set is due when trusted or moved, when its time is
 * up (the response's Cache-Control max-age, kept between 5 minutes and a
 * day, an hour without one), when a token named a kid it lacks (once a
 * minute at most, however recent the last fetch), and 5 minutes after a failed fetch, which keeps the
 * previous keys.  No row lock is held while fetching.
 */
PG_FUNCTION_INFO_V1(agentidp_refresh_issuer_keys);
Datum
agentidp_refresh_issuer_keys(PG_FUNCTION_ARGS)
{
	int64		stored = 0;
	uint64		n;
	SPITupleTable *due;
	Datum	   *tenants;
	Datum	   *issuers;
	char	  **urls;
	int			level;

	SPI_connect();
	level = agentidp_pin_search_path();
	apply_refresh_requests();
	if (SPI_execute("SELECT k.tenant_id, k.issuer, t.jwks_uri FROM agentidp.issuer_keys AS k "
					"JOIN agentidp.trusted_issuers AS t USING (tenant_id, issuer) "
					"WHERE k.next_fetch_at <= now() ORDER BY k.next_fetch_at LIMIT 20",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the due key sets");
	/* copied out: the fetches run SPI commands and subtransactions */
	due = SPI_tuptable;
	n = SPI_processed;
	tenants = palloc(sizeof(Datum) * Max(n, 1));
	issuers = palloc(sizeof(Datum) * Max(n, 1));
	urls = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		tenants[i] = datumCopy(SPI_getbinval(due->vals[i], due->tupdesc, 1, &isnull), false, UUID_LEN);
		issuers[i] = PointerGetDatum(DatumGetTextPCopy(SPI_getbinval(due->vals[i], due->tupdesc, 2, &isnull)));
		urls[i] = TextDatumGetCString(SPI_getbinval(due->vals[i], due->tupdesc, 3, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
	{
		Datum		tenant = tenants[i];
		Datum		issuer = issuers[i];
		char	   *url = urls[i];
		char	   *error = NULL;
		int			max_age = -1;
		size_t		len = 0;
		char	   *body = fetch_key_set(url, &len, &max_age, &error);
		Jsonb	   *keys = body != NULL ? checked_key_set(body, len, &error) : NULL;

		record_fetch(tenant, issuer, keys, max_age, error);
		if (keys != NULL)
			stored++;
		CHECK_FOR_INTERRUPTS();
	}
	AtEOXact_GUC(true, level);
	SPI_finish();
	PG_RETURN_INT64(stored);
}
