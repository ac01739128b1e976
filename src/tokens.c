/*-------------------------------------------------------------------------
 *
 * tokens.c
 *	  The token service as SQL: the client-credentials grant, RFC 9068
 *	  access tokens, their verification (RFC 8725), revocation (RFC 7009),
 *	  introspection (RFC 7662) and refresh tokens rotated on every use.
 *
 *	  Everything runs in the caller's transaction: a token issued in a
 *	  transaction that rolls back leaves no trace (its audit row goes with
 *	  it), and a revocation is seen by the next statement.  Functions
 *	  callable by the service role read and write the extension's tables
 *	  as the extension owner (agentidp_become_owner), never as the caller.
 *
 * IDENTIFICATION
 *	  src/tokens.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "agentidp.h"
#include "audit.h"
#include "credentials.h"
#include "jose.h"
#include "jwk.h"
#include "keys.h"
#include "policy.h"
#include "ratelimit.h"
#include "refusals.h"
#include "token_state.h"
#include "tokens.h"
#include "webhooks.h"
#include "issuers.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(agentidp_issue_token);
PG_FUNCTION_INFO_V1(agentidp_refresh_token);
PG_FUNCTION_INFO_V1(agentidp_verify_token);
PG_FUNCTION_INFO_V1(agentidp_revoke_token);
PG_FUNCTION_INFO_V1(agentidp_introspect_token);
PG_FUNCTION_INFO_V1(agentidp_issue_token_jwt);
PG_FUNCTION_INFO_V1(agentidp_public_jwk_kid);
PG_FUNCTION_INFO_V1(agentidp_exchange_token);
PG_FUNCTION_INFO_V1(agentidp_verify_dpop);

/* a client assertion may be valid this long at most (RFC 7523 3: "short") */
#define ASSERTION_MAX_LIFETIME 300

/* refresh tokens: a prefix that says what they are, then 256 random bits */
#define REFRESH_PREFIX		"aidp_rt_"
#define REFRESH_PREFIX_LEN	8
#define REFRESH_RAW_LEN		32
#define REFRESH_LEN			(REFRESH_PREFIX_LEN + AGENTIDP_B64URL_LEN(REFRESH_RAW_LEN))

#define SCOPE_MAX_LEN		4096
#define AUDIENCE_MAX_LEN	255
#define MIN_TOKEN_LIFETIME	60

/*
 * An optional text argument: absent (an older SQL declaration with fewer
 * arguments, during an update) or NULL both mean not given.
 */
#define OPT_TEXT_ARG(n) (PG_NARGS() > (n) && !PG_ARGISNULL(n) ? PG_GETARG_TEXT_PP(n) : NULL)

/* OAuth2 errors as SQLSTATEs (docs/tokens.md has the table) */
#define ERRCODE_OAUTH_INVALID_GRANT		ERRCODE_INVALID_PASSWORD	/* 28P01 */
#define ERRCODE_OAUTH_INVALID_SCOPE		ERRCODE_INSUFFICIENT_PRIVILEGE	/* 42501 */

/* what issuing a token for an agent needs to know */
typedef struct Issuance
{
	pg_uuid_t	tenant_id;
	pg_uuid_t	agent_id;
	char	   *client_id;
	char	   *issuer;
	char	   *default_audience;
	int			lifetime;		/* seconds */
	bool		refresh_enabled;
	int			refresh_lifetime;	/* seconds, absolute */
	int			refresh_idle;	/* seconds */
	Datum	   *audiences;		/* allowed audiences, or NULL for any */
	int			naudiences;
	Datum	   *scopes;			/* effective scopes, sorted */
	int			nscopes;
	Datum	   *roles;			/* role names, sorted */
	int			nroles;
	char	   *cnf_jkt;		/* DPoP key thumbprint the token is bound to, or NULL */
	char	   *cred;			/* the credential: "s:<secret_id>" or "k:<key_id>", or NULL */
	char	   *client_rate_limit;	/* the agent's or its tenant's, or NULL */
	char	   *tenant_rate_limit;	/* the tenant's, or NULL */
	int64		monthly_quota;	/* the tenant's tokens a month, or -1: unlimited */
	bool		risky_scopes;	/* the tenant marks some scopes risky (step-up) */
} Issuance;

static SPIPlanPtr issuance_plan = NULL;
static SPIPlanPtr quota_count_plan = NULL;
static SPIPlanPtr step_up_plan = NULL;
static SPIPlanPtr policy_step_up_plan = NULL;
static SPIPlanPtr insert_refresh_plan = NULL;
static SPIPlanPtr find_refresh_plan = NULL;
static SPIPlanPtr use_refresh_plan = NULL;
static SPIPlanPtr revoke_family_plan = NULL;
static SPIPlanPtr find_key_plan = NULL;
static SPIPlanPtr revoke_jti_plan = NULL;
static SPIPlanPtr client_key_plan = NULL;
static SPIPlanPtr record_jti_plan = NULL;
static SPIPlanPtr may_act_plan = NULL;

static char *check_dpop(text *proof, text *htm, text *htu, text *access_token,
						const char *expected_jkt, const pg_uuid_t *tenant);

/* ---- small helpers ---- */

static char *
uuid_text(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
}

static void
append_json_string(StringInfo buf, const char *key, const char *value)
{
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	escape_json(buf, value);
}

static Jsonb *
jsonb_from(StringInfo buf)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf->data)));
}

static void
text_array(Datum d, Datum **elems, int *n)
{
	bool	   *nulls;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  elems, &nulls, n);
}

static bool
text_in(Datum *elems, int n, const char *s, size_t len)
{
	for (int i = 0; i < n; i++)
	{
		text	   *t = DatumGetTextPP(elems[i]);

		if (VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), s, len) == 0)
			return true;
	}
	return false;
}

static int64
unix_now(void)
{
	return (int64) (GetCurrentTimestamp() / USECS_PER_SEC) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

static TimestampTz
from_unix(int64 secs)
{
	return (TimestampTz) (secs - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY) *
		USECS_PER_SEC;
}

/* 128 random bits, base64url: a token's jti */
static char *
random_jti(void)
{
	unsigned char raw[16];
	char	   *out = palloc(AGENTIDP_B64URL_LEN(sizeof(raw)) + 1);

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate random bytes"));
	agentidp_b64url_encode(raw, sizeof(raw), out);
	out[AGENTIDP_B64URL_LEN(sizeof(raw))] = '\0';
	return out;
}

static void
token_hash(const char *token, size_t len, unsigned char *out)
{
	SHA256_CTX	ctx;

	if (SHA256_Init(&ctx) != 1 || SHA256_Update(&ctx, token, len) != 1 ||
		SHA256_Final(out, &ctx) != 1)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not compute SHA-256"));
}

static Datum
bytea_datum(const unsigned char *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return PointerGetDatum(b);
}

/* ---- issuance ---- */

/*
 * Everything about an agent and its tenant that shapes its tokens, as the
 * extension owner.  Settings come from the tenant's "settings" object
 * (docs/tokens.md); the lifetime is clamped to [60 s,
 * agentidp.max_token_lifetime].  The rate limits are the agent's own or
 * its tenant's (docs/limits.md).
 */
static bool
load_issuance(const pg_uuid_t *agent_id, Issuance *is)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int64		lifetime;
	char	   *sql = NULL;

	/*
	 * Until ALTER EXTENSION agentidp UPDATE reaches 0.9, agents have no
	 * limit of their own: tokens go on being issued, under the tenants'.
	 * Likewise until 0.10 (whose agents have daily_action_cap) there is no
	 * table to count a monthly quota in: none applies; and until 0.11 (its
	 * table approvals) no scope is risky.  The last column says whether
	 * the tenant marks any scope risky, so that the step-up check costs
	 * the others nothing.
	 */
	if (issuance_plan == NULL)
		sql = psprintf("SELECT a.tenant_id, a.client_id, t.issuer, "
					   "  COALESCE(t.settings ->> 'audience', t.issuer), "
					   "  COALESCE((t.settings ->> 'access_token_lifetime')::bigint, 600), "
					   "  COALESCE((t.settings ->> 'refresh_tokens')::boolean, false), "
					   "  COALESCE((t.settings ->> 'refresh_token_lifetime')::int, 2592000), "
					   "  COALESCE((t.settings ->> 'refresh_token_idle')::int, 86400), "
					   "  CASE WHEN pg_catalog.jsonb_typeof(t.settings -> 'audiences') = 'array' "
					   "    THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(t.settings -> 'audiences')) END, "
					   "  ARRAY(SELECT DISTINCT s FROM ("
					   "    SELECT pg_catalog.unnest(a.allowed_scopes) AS s "
					   "    UNION ALL SELECT pg_catalog.unnest(r.scopes) FROM agentidp.agent_roles ar "
					   "      JOIN agentidp.roles r ON r.tenant_id = ar.tenant_id AND r.role_id = ar.role_id "
					   "      WHERE ar.tenant_id = a.tenant_id AND ar.agent_id = a.agent_id) u "
					   "    ORDER BY s), "
					   "  ARRAY(SELECT r.name FROM agentidp.agent_roles ar "
					   "    JOIN agentidp.roles r ON r.tenant_id = ar.tenant_id AND r.role_id = ar.role_id "
					   "    WHERE ar.tenant_id = a.tenant_id AND ar.agent_id = a.agent_id ORDER BY r.name), "
					   "  COALESCE(%s, t.settings ->> 'token_rate_limit'), "
					   "  t.settings ->> 'tenant_token_rate_limit', "
					   "  %s, %s "
					   "FROM agentidp.agents a JOIN agentidp.tenants t ON t.tenant_id = a.tenant_id "
					   "WHERE a.agent_id = $1 AND a.status = 'active' AND t.status = 'active'",
					   get_attnum(agentidp_relation_oid("agents"), "token_rate_limit") != InvalidAttrNumber ?
					   "a.token_rate_limit" : "NULL::pg_catalog.text",
					   get_attnum(agentidp_relation_oid("agents"), "daily_action_cap") != InvalidAttrNumber ?
					   "CASE WHEN pg_catalog.jsonb_typeof(t.settings -> 'monthly_token_quota') = 'number' "
					   "  THEN (t.settings ->> 'monthly_token_quota')::bigint END" :
					   "NULL::pg_catalog.int8",
					   OidIsValid(get_relname_relid("approvals", get_namespace_oid("agentidp", false))) ?
					   "COALESCE(pg_catalog.jsonb_typeof(t.settings -> 'risky_scopes') = 'array' "
					   "  AND pg_catalog.jsonb_array_length(t.settings -> 'risky_scopes') > 0, false)" :
					   "false");
	args[0] = UUIDPGetDatum(agent_id);
	(void) agentidp_run_plan(&issuance_plan, sql, 1, argtypes, args, NULL, true, 1);
	if (SPI_processed != 1)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	memcpy(&is->tenant_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), sizeof(pg_uuid_t));
	memcpy(&is->agent_id, agent_id, sizeof(pg_uuid_t));
	is->client_id = SPI_getvalue(tup, desc, 2);
	is->issuer = SPI_getvalue(tup, desc, 3);
	is->default_audience = SPI_getvalue(tup, desc, 4);
	lifetime = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	is->lifetime = (int) Max(MIN_TOKEN_LIFETIME, Min(lifetime, agentidp_max_token_lifetime));
	is->refresh_enabled = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
	is->refresh_lifetime = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	is->refresh_idle = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	is->audiences = NULL;
	is->naudiences = 0;
	{
		Datum		d = SPI_getbinval(tup, desc, 9, &isnull);

		if (!isnull)
			text_array(d, &is->audiences, &is->naudiences);
	}
	text_array(SPI_getbinval(tup, desc, 10, &isnull), &is->scopes, &is->nscopes);
	text_array(SPI_getbinval(tup, desc, 11, &isnull), &is->roles, &is->nroles);
	is->client_rate_limit = SPI_getvalue(tup, desc, 12);
	is->tenant_rate_limit = SPI_getvalue(tup, desc, 13);
	{
		Datum		d = SPI_getbinval(tup, desc, 14, &isnull);

		is->monthly_quota = isnull ? -1 : DatumGetInt64(d);
	}
	is->risky_scopes = DatumGetBool(SPI_getbinval(tup, desc, 15, &isnull));
	is->cnf_jkt = NULL;
	is->cred = NULL;
	return true;
}

/*
 * The granted scope as a space-separated string: the requested scopes
 * (RFC 6749 section 3.3) if every one is among allowed, else invalid_scope;
 * all allowed scopes when none is requested.  Output in allowed's (sorted)
 * order, without duplicates.
 */
static char *
grant_scope(text *requested, Datum *allowed, int nallowed)
{
	StringInfoData out;
	char	   *req = NULL;
	size_t		reqlen = 0;

	if (requested != NULL)
	{
		req = VARDATA_ANY(requested);
		reqlen = VARSIZE_ANY_EXHDR(requested);
		if (reqlen == 0 || reqlen > SCOPE_MAX_LEN)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid scope: it must be 1 to %d characters", SCOPE_MAX_LEN));
		/* every token must be allowed, and well formed */
		for (size_t i = 0; i < reqlen;)
		{
			size_t		j = i;

			while (j < reqlen && req[j] != ' ')
			{
				unsigned char c = (unsigned char) req[j];

				if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
					ereport(ERROR,
							errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("invalid scope: scopes are printable ASCII without '\"' or '\\', separated by single spaces"));
				j++;
			}
			if (j == i)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid scope: scopes are separated by single spaces"));
			if (!text_in(allowed, nallowed, req + i, j - i))
				ereport(ERROR,
						errcode(ERRCODE_OAUTH_INVALID_SCOPE),
						errmsg("invalid_scope: scope \"%.*s\" is not allowed for this client",
							   (int) Min(j - i, 128), req + i),
						errhint("The client may ask for its allowed scopes and its roles' scopes (agentidp.effective_scopes)."));
			i = j + 1;
			if (j + 1 == reqlen)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid scope: scopes are separated by single spaces"));
		}
	}

	initStringInfo(&out);
	for (int k = 0; k < nallowed; k++)
	{
		text	   *t = DatumGetTextPP(allowed[k]);
		const char *s = VARDATA_ANY(t);
		size_t		len = VARSIZE_ANY_EXHDR(t);
		bool		wanted = (req == NULL);

		for (size_t i = 0; !wanted && i < reqlen;)
		{
			size_t		j = i;

			while (j < reqlen && req[j] != ' ')
				j++;
			wanted = (j - i == len && memcmp(req + i, s, len) == 0);
			i = j + 1;
		}
		if (!wanted)
			continue;
		if (out.len > 0)
			appendStringInfoChar(&out, ' ');
		appendBinaryStringInfo(&out, s, len);
	}
	return out.data;
}

static char *
grant_audience(text *requested, const Issuance *is)
{
	char	   *aud;

	if (requested == NULL)
		return is->default_audience;
	aud = text_to_cstring(requested);
	if (strlen(aud) == 0 || strlen(aud) > AUDIENCE_MAX_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid audience: it must be 1 to %d characters", AUDIENCE_MAX_LEN));
	for (const char *p = aud; *p; p++)
		if ((unsigned char) *p < 0x21 || *p == 0x7f)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid audience: no white space or control characters"));
	if (is->audiences != NULL &&
		!text_in(is->audiences, is->naudiences, aud, strlen(aud)) &&
		strcmp(aud, is->default_audience) != 0)
		ereport(ERROR,
				errcode(ERRCODE_OAUTH_INVALID_SCOPE),
				errmsg("invalid_target: audience \"%s\" is not one of the tenant's audiences", aud),
				errhint("The tenant's settings list them under \"audiences\"."));
	return aud;
}

/* an RFC 9068 access token, signed with the tenant's active key */
static char *
sign_access_token(const Issuance *is, const char *scope, const char *aud,
				  const char *jti, int64 iat, int64 exp, const char *act,
				  const char *subject, const char *subject_issuer)
{
	StringInfoData c;
	Jsonb	   *header;
	text	   *jws;

	initStringInfo(&c);
	appendStringInfoChar(&c, '{');
	append_json_string(&c, "iss", is->issuer);
	appendStringInfoChar(&c, ',');
	append_json_string(&c, "sub", subject ? subject : uuid_text(&is->agent_id));
	appendStringInfoChar(&c, ',');
	if (subject_issuer != NULL)
	{
		/* sub is a person of that issuer, not an agent of this one */
		append_json_string(&c, "subject_issuer", subject_issuer);
		appendStringInfoChar(&c, ',');
	}
	append_json_string(&c, "aud", aud);
	appendStringInfo(&c, ",\"exp\":" INT64_FORMAT ",\"iat\":" INT64_FORMAT
					 ",\"nbf\":" INT64_FORMAT ",",
					 exp, iat, iat);
	append_json_string(&c, "jti", jti);
	appendStringInfoChar(&c, ',');
	append_json_string(&c, "client_id", is->client_id);
	if (scope[0] != '\0')
	{
		appendStringInfoChar(&c, ',');
		append_json_string(&c, "scope", scope);
	}
	appendStringInfoChar(&c, ',');
	append_json_string(&c, "tenant_id", uuid_text(&is->tenant_id));
	appendStringInfoString(&c, ",\"roles\":[");
	for (int i = 0; i < is->nroles; i++)
	{
		if (i > 0)
			appendStringInfoChar(&c, ',');
		escape_json(&c, TextDatumGetCString(is->roles[i]));
	}
	appendStringInfoChar(&c, ']');
	if (act != NULL)
		appendStringInfo(&c, ",\"act\":%s", act);
	/* which credential obtained it: revoking that one ends the token */
	if (is->cred != NULL)
	{
		appendStringInfoChar(&c, ',');
		append_json_string(&c, "cred", is->cred);
	}
	if (is->cnf_jkt != NULL)
	{
		appendStringInfoString(&c, ",\"cnf\":{");
		append_json_string(&c, "jkt", is->cnf_jkt);
		appendStringInfoChar(&c, '}');
	}
	appendStringInfoChar(&c, '}');

	header = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												CStringGetDatum("{\"typ\":\"at+jwt\"}")));
	jws = agentidp_signer_sign(agentidp_active_signer(&is->tenant_id), jsonb_from(&c), header);
	return text_to_cstring(jws);
}

/*
 * A new refresh token of a family (a new family when family is NULL),
 * stored hashed; returns the token, shown once.
 */
static char *
issue_refresh(const Issuance *is, const char *scope, const char *aud,
			  const pg_uuid_t *family, TimestampTz family_expires)
{
	unsigned char raw[REFRESH_RAW_LEN];
	unsigned char hash[SHA256_DIGEST_LENGTH];
	char	   *token = palloc(REFRESH_LEN + 1);
	Oid			argtypes[10] = {UUIDOID, UUIDOID, UUIDOID, BYTEAOID, TEXTOID, TEXTOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Datum		args[10];
	char		nulls[10] = "          ";
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz expires = family != NULL ? family_expires :
		now + (int64) is->refresh_lifetime * USECS_PER_SEC;
	TimestampTz idle = now + (int64) is->refresh_idle * USECS_PER_SEC;

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate random bytes"));
	memcpy(token, REFRESH_PREFIX, REFRESH_PREFIX_LEN);
	agentidp_b64url_encode(raw, sizeof(raw), token + REFRESH_PREFIX_LEN);
	token[REFRESH_LEN] = '\0';
	explicit_bzero(raw, sizeof(raw));
	token_hash(token, REFRESH_LEN, hash);

	args[0] = UUIDPGetDatum(&is->tenant_id);
	args[1] = UUIDPGetDatum(&is->agent_id);
	if (family != NULL)
		args[2] = UUIDPGetDatum(family);
	else
		nulls[2] = 'n';
	args[3] = bytea_datum(hash, sizeof(hash));
	args[4] = CStringGetTextDatum(scope);
	args[5] = CStringGetTextDatum(aud);
	args[6] = TimestampTzGetDatum(expires);
	args[7] = TimestampTzGetDatum(Min(idle, expires));
	/* a family issued with a DPoP proof is refreshed only with one of that key */
	if (is->cnf_jkt != NULL)
		args[8] = CStringGetTextDatum(is->cnf_jkt);
	else
		nulls[8] = 'n';
	if (is->cred != NULL)
		args[9] = CStringGetTextDatum(is->cred);
	else
		nulls[9] = 'n';
	(void) agentidp_run_plan(&insert_refresh_plan,
							 "INSERT INTO agentidp.refresh_tokens "
							 "(tenant_id, agent_id, family_id, token_hash, scope, audience, "
							 " expires_at, idle_expires_at, dpop_jkt, cred) "
							 "VALUES ($1, $2, COALESCE($3, pg_catalog.gen_random_uuid()), $4, $5, $6, $7, $8, $9, $10)",
							 10, argtypes, args, nulls, false, 0);
	return token;
}

/* ---- the request being served, for the refusal queue (refusals.c) ---- */

typedef struct Request
{
	const char *grant;
	char		client_id[128];
	bool		known;			/* tenant and agent are the client's */
	pg_uuid_t	tenant;
	pg_uuid_t	agent;
} Request;

static Request request;

/*
 * The client is known.  A request the HTTP front routed to another tenant
 * (by path or host) does not know it: the same refusal as a wrong secret.
 */
static void
request_client(const pg_uuid_t *tenant, const pg_uuid_t *agent, const char *client_id)
{
	memcpy(&request.tenant, tenant, sizeof(pg_uuid_t));
	memcpy(&request.agent, agent, sizeof(pg_uuid_t));
	if (client_id != NULL)
		strlcpy(request.client_id, client_id, sizeof(request.client_id));
	request.known = true;
	if (!agentidp_request_tenant_matches(tenant))
		agentidp_client_authentication_failed();
}

/* the client a client_id names, whatever its secret said */
static void
request_identify(text *client_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;

	if (client_id == NULL || VARSIZE_ANY_EXHDR(client_id) > 128)
		return;
	args[0] = PointerGetDatum(client_id);
	(void) agentidp_run_plan(&plan,
							 "SELECT tenant_id, agent_id FROM agentidp.agents WHERE client_id = $1",
							 1, argtypes, args, NULL, true, 1);
	if (SPI_processed == 1)
		request_client(DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
					   DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)),
					   NULL);
}

/*
 * The OAuth error (RFC 6749 section 5.2) of a grant's refusal, by its
 * SQLSTATE and message: for the refusals run_grant notes, and for
 * token_endpoint's answers (agentidp._oauth_error).
 */
static const char *
oauth_error_of(int sqlerrcode, const char *message, const char *grant)
{
	if (strcmp(message, "client authentication failed") == 0)
		return "invalid_client";
	if (sqlerrcode == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED)
		return "temporarily_unavailable";
	if (strncmp(message, "invalid DPoP proof", 18) == 0)
		return "invalid_dpop_proof";
	/* not allowed ("invalid_scope: ...") or malformed ("invalid scope: ...") */
	if (strncmp(message, "invalid_scope", 13) == 0 || strncmp(message, "invalid scope", 13) == 0)
		return "invalid_scope";
	if (strncmp(message, "invalid_target", 14) == 0)
		return "invalid_target";
	if (strncmp(message, "unauthorized_client", 19) == 0)
		return "unauthorized_client";
	/* RFC 8693 section 2.2.2: an invalid subject or actor token is invalid_request */
	if (strcmp(grant, "urn:ietf:params:oauth:grant-type:token-exchange") == 0)
		return "invalid_request";
	if (ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
		return "invalid_grant";
	return "invalid_request";
}

/*
 * agentidp._oauth_error(sqlstate text, message text, grant_type text)
 *		RETURNS text
 */
PG_FUNCTION_INFO_V1(agentidp_oauth_error);
Datum
agentidp_oauth_error(PG_FUNCTION_ARGS)
{
	char	   *state = PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *message = PG_ARGISNULL(1) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	const char *grant = PG_ARGISNULL(2) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			code = 0;

	if (strlen(state) == 5)
		code = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	PG_RETURN_TEXT_P(cstring_to_text(oauth_error_of(code, message, grant)));
}

/*
 * Run a grant; when it refuses a client it has identified, note the
 * refusal (error and message, never a secret) so that it reaches the
 * audit log although the error rolls the transaction back.
 */
static Datum
run_grant(FunctionCallInfo fcinfo, Jsonb *(*body) (FunctionCallInfo), const char *grant,
		  int client_id_arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile result = NULL;

	memset(&request, 0, sizeof(request));
	request.grant = grant;
	agentidp_forget_issuance_limit();
	if (client_id_arg >= 0 && !PG_ARGISNULL(client_id_arg))
		text_to_cstring_buffer(PG_GETARG_TEXT_PP(client_id_arg), request.client_id,
							   sizeof(request.client_id));
	PG_TRY();
	{
		result = body(fcinfo);
	}
	PG_CATCH();
	{
		if (request.known)
		{
			ErrorData  *e;
			int			category;

			MemoryContextSwitchTo(cxt);
			e = CopyErrorData();
			category = ERRCODE_TO_CATEGORY(e->sqlerrcode);
			if (category == ERRCODE_DATA_EXCEPTION ||
				category == ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION ||
				category == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION ||
				e->sqlerrcode == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED)
				agentidp_note_refusal(&request.tenant, &request.agent, grant, request.client_id,
									  oauth_error_of(e->sqlerrcode, e->message, grant), e->message);
			FreeErrorData(e);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	PG_RETURN_JSONB_P(result);
}

/*
 * Issue an access token (and a refresh token where the tenant enables
 * them) for an authenticated agent, audit it, and return the RFC 6749
 * section 5.1 response.  family is the refresh family being rotated, or
 * NULL.
 */
typedef struct Delegation
{
	const pg_uuid_t *actor;		/* the acting agent, audited as the actor */
	const char *act;			/* the token's "act" claim, JSON */
	int64		exp_cap;		/* the subject token's exp: never beyond */
	/* a person of a trusted issuer as the subject: sub and its issuer */
	const char *subject;
	const char *subject_issuer;
} Delegation;

/*
 * Count the token about to be issued against its tenant's monthly quota,
 * in the grant's transaction: one UPSERT of the month's row, which adds
 * one only while the count is under the quota.  No row back means the
 * quota is used up.  The row lock it takes serialises the issuance of a
 * tenant with a quota until the transaction ends; tenants without one
 * (the default) skip all of it.
 */
static void
count_monthly_quota(const Issuance *is)
{
	Oid			argtypes[2] = {UUIDOID, INT8OID};
	Datum		args[2];

	if (is->monthly_quota < 0)
		return;
	args[0] = UUIDPGetDatum(&is->tenant_id);
	args[1] = Int64GetDatum(is->monthly_quota);
	if (is->monthly_quota > 0)
		(void) agentidp_run_plan(&quota_count_plan,
								 "INSERT INTO agentidp.token_usage AS u (tenant_id, month, issued) "
								 "VALUES ($1, agentidp._quota_month(pg_catalog.now()), 1) "
								 "ON CONFLICT ON CONSTRAINT token_usage_pkey DO UPDATE "
								 "SET issued = u.issued OPERATOR(pg_catalog.+) 1 "
								 "WHERE u.issued OPERATOR(pg_catalog.<) $2 "
								 "RETURNING u.issued",
								 2, argtypes, args, NULL, false, 0);
	if (is->monthly_quota == 0 || SPI_processed != 1)
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("monthly token quota of the tenant exceeded"),
				errdetail("The quota is " INT64_FORMAT " tokens a calendar month (UTC), all of them issued.",
						  is->monthly_quota),
				errhint("The quota starts again on the first day of the next month; an administrator of the tenant can raise it with agentidp.set_monthly_token_quota()."));
}

/*
 * Step-up: a token that carries a scope the tenant marks risky is issued
 * only against an approval for it (agentidp._step_up(), which binds the
 * approval to this token's jti so that it serves once).  The approval
 * comes from the setting agentidp.approval_id, which token_endpoint sets
 * from the request for the grant: the grant functions keep their
 * signatures.
 */
static void
check_step_up(const Issuance *is, const char *scope, const char *jti)
{
	Oid			argtypes[5] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = UUIDPGetDatum(&is->tenant_id);
	args[1] = UUIDPGetDatum(&is->agent_id);
	if (scope != NULL)
		args[2] = CStringGetTextDatum(scope);
	else
		nulls[2] = 'n';
	args[3] = CStringGetTextDatum(jti);
	if (agentidp_approval_id != NULL && agentidp_approval_id[0] != '\0')
		args[4] = CStringGetTextDatum(agentidp_approval_id);
	else
		nulls[4] = 'n';
	(void) agentidp_run_plan(&step_up_plan,
							 "SELECT agentidp._step_up($1, $2, $3, $4, $5)",
							 5, argtypes, args, nulls, false, 0);
}

/*
 * The policy hook (policy.c) on an issuance, last of the checks before
 * signing: deny refuses as unauthorized_client (42501, audited as a
 * refusal by run_grant); require_approval asks, like a risky scope, for an
 * approval of the agent covering the whole requested scope
 * (agentidp._policy_step_up, which binds it to this token).
 */
static void
check_policy(const Issuance *is, const char *grant_type, const char *scope,
			 const char *aud, const char *jti)
{
	StringInfoData in;
	char	   *reason;
	AgentidpPolicyDecision d;

	initStringInfo(&in);
	appendStringInfoString(&in, "{\"kind\":\"token.issue\",");
	append_json_string(&in, "tenant_id",
					   DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&is->tenant_id))));
	appendStringInfoChar(&in, ',');
	append_json_string(&in, "agent_id",
					   DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&is->agent_id))));
	appendStringInfoChar(&in, ',');
	append_json_string(&in, "client_id", is->client_id);
	appendStringInfoChar(&in, ',');
	append_json_string(&in, "grant_type", grant_type);
	appendStringInfoChar(&in, ',');
	/* the grants pass no scope or audience as NULL: null in the input */
	appendStringInfoString(&in, "\"scope\":");
	if (scope != NULL)
		escape_json(&in, scope);
	else
		appendStringInfoString(&in, "null");
	appendStringInfoString(&in, ",\"audience\":");
	if (aud != NULL)
		escape_json(&in, aud);
	else
		appendStringInfoString(&in, "null");
	appendStringInfoChar(&in, '}');

	d = agentidp_policy_decide(in.data, &reason);
	if (d == AGENTIDP_POLICY_DENY)
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("unauthorized_client: the token request is denied by policy"),
				reason ? errdetail("The policy says: %s.", reason) : 0);
	if (d == AGENTIDP_POLICY_REQUIRE_APPROVAL)
	{
		Oid			argtypes[6] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		args[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		args[0] = UUIDPGetDatum(&is->tenant_id);
		args[1] = UUIDPGetDatum(&is->agent_id);
		if (scope != NULL)
			args[2] = CStringGetTextDatum(scope);
		else
			nulls[2] = 'n';
		args[3] = CStringGetTextDatum(jti);
		if (agentidp_approval_id != NULL && agentidp_approval_id[0] != '\0')
			args[4] = CStringGetTextDatum(agentidp_approval_id);
		else
			nulls[4] = 'n';
		if (reason != NULL)
			args[5] = CStringGetTextDatum(reason);
		else
			nulls[5] = 'n';
		(void) agentidp_run_plan(&policy_step_up_plan,
								 "SELECT agentidp._policy_step_up($1, $2, $3, $4, $5, $6)",
								 6, argtypes, args, nulls, false, 0);
	}
}

static Jsonb *
issue(const Issuance *is, const char *grant_type, const char *client_auth,
	  const char *scope, const char *aud, const pg_uuid_t *family,
	  TimestampTz family_expires, const Delegation *dg)
{
	int64		iat = unix_now();
	int64		exp = iat + is->lifetime;
	char	   *jti = random_jti();
	char	   *access;
	char	   *refresh = NULL;
	StringInfoData r;
	StringInfoData key;
	StringInfoData detail;

	/*
	 * Last of the checks, so that only a request that would get its token
	 * counts.  Its answer is read at the end (Redis answers meanwhile); a
	 * refusal rolls back what the grant did (the audit row, a refresh
	 * token marked used).
	 */
	agentidp_issuance_limit_begin(&is->tenant_id, is->client_id, is->client_rate_limit,
								  is->tenant_rate_limit);

	/*
	 * After the rate limits, which refuse before any work: a refused
	 * request does not count against the quota.  Its count rolls back
	 * with the grant when a later step (Redis's answer) refuses.
	 */
	count_monthly_quota(is);
	if (is->risky_scopes)
		check_step_up(is, scope, jti);
	if (agentidp_policy_active())
		check_policy(is, grant_type, scope, aud, jti);

	if (dg != NULL && dg->exp_cap < exp)
		exp = dg->exp_cap;
	access = sign_access_token(is, scope, aud, jti, iat, exp, dg ? dg->act : NULL,
							   dg ? dg->subject : NULL, dg ? dg->subject_issuer : NULL);

	/*
	 * A delegated token is not refreshed: the subject's token bounds it.
	 * Nor one of private_key_jwt, whose client refresh_token cannot
	 * authenticate: it asks for a new token with a new assertion.
	 */
	if (dg == NULL && strcmp(client_auth, "private_key_jwt") != 0 &&
		(is->refresh_enabled || family != NULL))
		refresh = issue_refresh(is, scope, aud, family, family_expires);

	initStringInfo(&key);
	appendStringInfoChar(&key, '{');
	append_json_string(&key, "jti", jti);
	appendStringInfoChar(&key, '}');
	initStringInfo(&detail);
	appendStringInfoChar(&detail, '{');
	append_json_string(&detail, "grant_type", grant_type);
	appendStringInfoChar(&detail, ',');
	append_json_string(&detail, "client_auth", client_auth);
	appendStringInfoChar(&detail, ',');
	append_json_string(&detail, "client_id", is->client_id);
	appendStringInfoChar(&detail, ',');
	append_json_string(&detail, "scope", scope);
	appendStringInfoChar(&detail, ',');
	append_json_string(&detail, "aud", aud);
	appendStringInfo(&detail, ",\"exp\":" INT64_FORMAT ",\"refresh_token\":%s",
					 exp, refresh ? "true" : "false");
	if (is->cnf_jkt != NULL)
	{
		appendStringInfoChar(&detail, ',');
		append_json_string(&detail, "dpop_jkt", is->cnf_jkt);
	}
	if (dg != NULL)
	{
		appendStringInfoChar(&detail, ',');
		append_json_string(&detail, "subject", dg->subject ? dg->subject : uuid_text(&is->agent_id));
		if (dg->subject_issuer != NULL)
		{
			appendStringInfoChar(&detail, ',');
			append_json_string(&detail, "subject_issuer", dg->subject_issuer);
		}
		appendStringInfo(&detail, ",\"act\":%s", dg->act);
	}
	appendStringInfoChar(&detail, '}');
	agentidp_audit_event(&is->tenant_id, dg ? dg->actor : &is->agent_id,
						 dg ? "token.exchange" : "token.issue", "success",
						 "token", key.data, detail.data);

	initStringInfo(&r);
	appendStringInfoChar(&r, '{');
	append_json_string(&r, "access_token", access);
	appendStringInfo(&r, ",\"token_type\":\"%s\"", is->cnf_jkt ? "DPoP" : "Bearer");
	appendStringInfo(&r, ",\"expires_in\":%d,", (int) (exp - iat));
	if (dg != NULL)
		appendStringInfoString(&r, "\"issued_token_type\":\"urn:ietf:params:oauth:token-type:access_token\",");
	append_json_string(&r, "scope", scope);
	if (refresh != NULL)
	{
		appendStringInfoChar(&r, ',');
		append_json_string(&r, "refresh_token", refresh);
	}
	appendStringInfoChar(&r, '}');
	agentidp_issuance_limit_end();
	return jsonb_from(&r);
}

static Jsonb *
copy_out(Jsonb *jb)
{
	Jsonb	   *copy = (Jsonb *) SPI_palloc(VARSIZE(jb));

	memcpy(copy, jb, VARSIZE(jb));
	return copy;
}

/*
 * agentidp.issue_token(client_id text, client_secret text,
 *						scope text DEFAULT NULL, audience text DEFAULT NULL)
 *		RETURNS jsonb
 *
 * The client-credentials grant (RFC 6749 section 4.4).  Every client
 * authentication failure raises the same 28000 error.
 */
static Jsonb *
issue_token_body(FunctionCallInfo fcinfo)
{
	AgentidpOwnerContext oc;
	pg_uuid_t	agent_id;
	pg_uuid_t	secret_id;
	Issuance	is;
	Jsonb	   *result;
	char	   *scope;
	char	   *aud;

	SPI_connect();
	agentidp_become_owner(&oc);
	if (!agentidp_client_secret_matches(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
										PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
										&agent_id, &secret_id) ||
		!load_issuance(&agent_id, &is))
	{
		request_identify(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
		agentidp_client_authentication_failed();
	}
	request_client(&is.tenant_id, &agent_id, NULL);
	is.cred = psprintf("s:%s", uuid_text(&secret_id));
	scope = grant_scope(PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2), is.scopes, is.nscopes);
	aud = grant_audience(PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3), &is);
	if (OPT_TEXT_ARG(4) != NULL)
		is.cnf_jkt = check_dpop(OPT_TEXT_ARG(4), OPT_TEXT_ARG(5), OPT_TEXT_ARG(6),
								NULL, NULL, &is.tenant_id);
	result = copy_out(issue(&is, "client_credentials", "client_secret", scope, aud, NULL, 0, NULL));
	agentidp_restore_user(&oc);
	SPI_finish();
	return result;
}

Datum
agentidp_issue_token(PG_FUNCTION_ARGS)
{
	return run_grant(fcinfo, issue_token_body, "client_credentials", 0);
}

/* ---- refresh ---- */

static Jsonb *
oauth_error(const char *error, const char *description)
{
	StringInfoData r;

	initStringInfo(&r);
	appendStringInfoChar(&r, '{');
	append_json_string(&r, "error", error);
	appendStringInfoChar(&r, ',');
	append_json_string(&r, "error_description", description);
	appendStringInfoChar(&r, '}');
	return jsonb_from(&r);
}

/* an audited refusal of a refresh; the family id names what was refused */
static void
audit_refresh_refusal(const pg_uuid_t *tenant, const pg_uuid_t *agent,
					  const pg_uuid_t *family, const char *result, const char *reason)
{
	StringInfoData key;
	StringInfoData detail;

	initStringInfo(&key);
	appendStringInfoChar(&key, '{');
	append_json_string(&key, "refresh_family", uuid_text(family));
	appendStringInfoChar(&key, '}');
	initStringInfo(&detail);
	appendStringInfoChar(&detail, '{');
	append_json_string(&detail, "grant_type", "refresh_token");
	appendStringInfoChar(&detail, ',');
	append_json_string(&detail, "reason", reason);
	appendStringInfoChar(&detail, '}');
	agentidp_audit_event(tenant, agent, "token.refresh", result, "token", key.data, detail.data);
}

static void
revoke_family(const pg_uuid_t *tenant, const pg_uuid_t *family)
{
	Oid			argtypes[2] = {UUIDOID, UUIDOID};
	Datum		args[2];

	args[0] = UUIDPGetDatum(tenant);
	args[1] = UUIDPGetDatum(family);
	(void) agentidp_run_plan(&revoke_family_plan,
							 "UPDATE agentidp.refresh_tokens SET revoked_at = pg_catalog.now() "
							 "WHERE tenant_id = $1 AND family_id = $2 AND revoked_at IS NULL",
							 2, argtypes, args, NULL, false, 0);
}

/*
 * Find and lock the refresh token row of a presented token: -1 when the
 * token is malformed, 0 when unknown, 1 when SPI_tuptable holds its row
 * (tenant_id, agent_id, token_id, family_id, scope, audience, expires_at,
 * idle_expires_at, used, revoked, dpop_jkt, cred).  The row lock makes
 * concurrent uses of one token take turns.
 */
static int
lock_refresh(text *token)
{
	unsigned char hash[SHA256_DIGEST_LENGTH];
	Oid			argtypes[1] = {BYTEAOID};
	Datum		args[1];

	if (token == NULL || VARSIZE_ANY_EXHDR(token) != REFRESH_LEN ||
		memcmp(VARDATA_ANY(token), REFRESH_PREFIX, REFRESH_PREFIX_LEN) != 0)
		return -1;
	token_hash(VARDATA_ANY(token), REFRESH_LEN, hash);
	args[0] = bytea_datum(hash, sizeof(hash));
	(void) agentidp_run_plan(&find_refresh_plan,
							 "SELECT tenant_id, agent_id, token_id, family_id, scope, audience, "
							 "  expires_at, idle_expires_at, used_at IS NOT NULL, revoked_at IS NOT NULL, "
							 "  dpop_jkt, cred "
							 "FROM agentidp.refresh_tokens WHERE token_hash = $1 FOR UPDATE",
							 1, argtypes, args, NULL, false, 1);
	return SPI_processed == 1 ? 1 : 0;
}

/* the locked row's tenant, agent and family; false if there is none */
static bool
find_refresh(text *token, pg_uuid_t *tenant, pg_uuid_t *agent, pg_uuid_t *family)
{
	bool		isnull;

	if (lock_refresh(token) != 1)
		return false;
	memcpy(tenant, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(pg_uuid_t));
	memcpy(agent, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)),
		   sizeof(pg_uuid_t));
	memcpy(family, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)),
		   sizeof(pg_uuid_t));
	return true;
}

/*
 * agentidp.refresh_token(refresh_token text, client_id text,
 *						  client_secret text DEFAULT NULL) RETURNS jsonb
 *
 * The refresh-token grant with rotation: the presented token is used up
 * and a new one of the same family returned with a new access token.
 * Presenting a used token again revokes the whole family (RFC 9700
 * section 4.14.2).  Grant errors are returned as the RFC 6749 section 5.2
 * object ({"error": "invalid_grant", ...}) rather than raised, so that the
 * family's revocation and the audit row of the refusal commit; client
 * authentication failures raise 28000 as everywhere.
 */
static Jsonb *
refresh_token_body(FunctionCallInfo fcinfo)
{
	AgentidpOwnerContext oc;
	pg_uuid_t	agent_id;
	text	   *presented;
	int			found;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	pg_uuid_t	tenant;
	pg_uuid_t	owner_agent;
	pg_uuid_t	token_id;
	pg_uuid_t	family;
	char	   *scope;
	char	   *aud;
	TimestampTz expires;
	TimestampTz idle_expires;
	bool		used;
	bool		revoked;
	char	   *bound_jkt;
	char	   *family_cred;
	pg_uuid_t	secret_id;
	Issuance	is;
	Jsonb	   *result;

	SPI_connect();
	agentidp_become_owner(&oc);
	if (!agentidp_client_secret_matches(PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
										PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
										&agent_id, &secret_id))
	{
		request_identify(PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1));
		agentidp_client_authentication_failed();
	}

	presented = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	found = lock_refresh(presented);
	if (found < 0)
	{
		result = oauth_error("invalid_grant", "the refresh token is malformed");
		goto done;
	}
	if (found == 0)
	{
		result = oauth_error("invalid_grant", "the refresh token is unknown");
		goto done;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memcpy(&tenant, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), sizeof(pg_uuid_t));
	memcpy(&owner_agent, DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull)), sizeof(pg_uuid_t));
	memcpy(&token_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)), sizeof(pg_uuid_t));
	memcpy(&family, DatumGetUUIDP(SPI_getbinval(tup, desc, 4, &isnull)), sizeof(pg_uuid_t));
	scope = SPI_getvalue(tup, desc, 5);
	aud = SPI_getvalue(tup, desc, 6);
	expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));
	idle_expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
	used = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
	revoked = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	bound_jkt = SPI_getvalue(tup, desc, 11);
	family_cred = SPI_getvalue(tup, desc, 12);
	request_client(&tenant, &agent_id, NULL);

	if (memcmp(&owner_agent, &agent_id, sizeof(pg_uuid_t)) != 0)
	{
		audit_refresh_refusal(&tenant, &agent_id, &family, "denied", "issued to another client");
		result = oauth_error("invalid_grant", "the refresh token was issued to another client");
	}
	else if (used)
	{
		revoke_family(&tenant, &family);
		audit_refresh_refusal(&tenant, &agent_id, &family, "denied",
							  "reuse of a used refresh token: family revoked");
		/* subscribers hear of it by ids, never by the token */
		agentidp_enqueue_event(&tenant, "token.reuse_detected",
							   psprintf("{\"agent_id\": \"%s\", \"refresh_family\": \"%s\"}",
										uuid_text(&agent_id), uuid_text(&family)));
		result = oauth_error("invalid_grant",
							 "the refresh token was already used; every token of its family is revoked");
	}
	else if (revoked)
	{
		audit_refresh_refusal(&tenant, &agent_id, &family, "denied", "revoked");
		result = oauth_error("invalid_grant", "the refresh token is revoked");
	}
	else if (GetCurrentTimestamp() >= expires || GetCurrentTimestamp() >= idle_expires)
	{
		audit_refresh_refusal(&tenant, &agent_id, &family, "denied", "expired");
		result = oauth_error("invalid_grant", "the refresh token has expired");
	}
	else if (!load_issuance(&agent_id, &is))
		agentidp_client_authentication_failed();
	else
	{
		Oid			uargtypes[2] = {UUIDOID, UUIDOID};
		Datum		uargs[2];
		Datum	   *granted;
		int			ngranted = 0;
		char	   *narrowed;

		uargs[0] = UUIDPGetDatum(&tenant);
		uargs[1] = UUIDPGetDatum(&token_id);
		(void) agentidp_run_plan(&use_refresh_plan,
								 "UPDATE agentidp.refresh_tokens SET used_at = pg_catalog.now() "
								 "WHERE tenant_id = $1 AND token_id = $2",
								 2, uargtypes, uargs, NULL, false, 0);

		/* scopes the agent has lost since are not refreshed */
		granted = palloc(sizeof(Datum) * Max(is.nscopes, 1));
		for (int i = 0; i < is.nscopes; i++)
		{
			text	   *t = DatumGetTextPP(is.scopes[i]);
			char	   *s = text_to_cstring(t);
			size_t		len = strlen(s);

			for (char *p = scope; *p;)
			{
				char	   *e = strchr(p, ' ');
				size_t		plen = e ? (size_t) (e - p) : strlen(p);

				if (plen == len && memcmp(p, s, len) == 0)
				{
					granted[ngranted++] = is.scopes[i];
					break;
				}
				p += plen + (e ? 1 : 0);
			}
		}
		narrowed = grant_scope(NULL, granted, ngranted);
		/* the family stays under the credential that began it */
		is.cred = family_cred != NULL ? family_cred : psprintf("s:%s", uuid_text(&secret_id));
		/* a bound family needs a proof of its key (RFC 9449 section 5) */
		if (OPT_TEXT_ARG(3) != NULL || bound_jkt != NULL)
			is.cnf_jkt = check_dpop(OPT_TEXT_ARG(3), OPT_TEXT_ARG(4), OPT_TEXT_ARG(5),
									NULL, bound_jkt, &is.tenant_id);
		result = issue(&is, "refresh_token", "client_secret", narrowed, aud, &family, expires, NULL);
	}
done:
	result = copy_out(result);
	agentidp_restore_user(&oc);
	SPI_finish();
	return result;
}

Datum
agentidp_refresh_token(PG_FUNCTION_ARGS)
{
	return run_grant(fcinfo, refresh_token_body, "refresh_token", 1);
}

/* ---- verification ---- */

/*
 * Public keys by kid, per backend.  A kid is the RFC 7638 thumbprint of
 * the key, so an entry never goes stale: a kid names the same key forever.
 * Whether its tenant still exists, and everything else that can change,
 * is read fresh for every token (verify_probe_plan).
 */
#define VERIFY_CACHE_SIZE 64

typedef struct VerifyKey
{
	char		kid[64];
	pg_uuid_t	tenant;
	char		alg[8];
	AgentidpJwk *jwk;
	AgentidpSigner *verifier;
	MemoryContext cxt;
	uint64		used;
} VerifyKey;

static VerifyKey verify_cache[VERIFY_CACHE_SIZE];
static uint64 verify_clock = 0;

static void pg_attribute_noreturn()
invalid_token(const char *reason)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg("invalid token: %s", reason));
}

static VerifyKey *
verify_key(const char *kid)
{
	VerifyKey  *slot = NULL;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;
	Jsonb	   *jwk;
	MemoryContext old;

	if (strlen(kid) >= sizeof(slot->kid))
		invalid_token("unknown key");
	for (int i = 0; i < VERIFY_CACHE_SIZE; i++)
		if (verify_cache[i].verifier != NULL && strcmp(verify_cache[i].kid, kid) == 0)
		{
			verify_cache[i].used = ++verify_clock;
			return &verify_cache[i];
		}

	args[0] = CStringGetTextDatum(kid);
	(void) agentidp_run_plan(&find_key_plan,
							 "SELECT tenant_id, alg, public_jwk FROM agentidp.signing_keys "
							 "WHERE kid = $1",
							 1, argtypes, args, NULL, true, 2);
	if (SPI_processed != 1)
		invalid_token("unknown key");

	for (int i = 0; i < VERIFY_CACHE_SIZE; i++)
		if (slot == NULL || verify_cache[i].used < slot->used)
			slot = &verify_cache[i];
	if (slot->jwk != NULL)
		agentidp_jwk_free(slot->jwk);
	slot->jwk = NULL;
	slot->verifier = NULL;
	if (slot->cxt != NULL)
		MemoryContextDelete(slot->cxt);
	slot->cxt = AllocSetContextCreate(TopMemoryContext, "agentidp verification key",
									  ALLOCSET_SMALL_SIZES);
	jwk = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	old = MemoryContextSwitchTo(slot->cxt);
	PG_TRY();
	{
		slot->jwk = agentidp_jwk_import(jwk, false);
		slot->verifier = agentidp_signer_create(slot->jwk, slot->cxt);
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(old);
	}
	PG_END_TRY();
	memcpy(&slot->tenant, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(pg_uuid_t));
	strlcpy(slot->alg, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
			sizeof(slot->alg));
	strlcpy(slot->kid, kid, sizeof(slot->kid));
	slot->used = ++verify_clock;
	return slot;
}

static JsonbValue *
claim(Jsonb *payload, const char *name)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) name;
	k.val.string.len = strlen(name);
	return findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &k);
}

static char *
string_claim(Jsonb *payload, const char *name)
{
	JsonbValue *v = claim(payload, name);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* a NumericDate claim (jose.c checked its range), or -1 when absent */
static int64
date_claim(Jsonb *payload, const char *name)
{
	JsonbValue *v = claim(payload, name);

	if (v == NULL || v->type != jbvNumeric)
		return -1;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}

/* 8-4-4-4-12 lower-case hex, as uuid_out writes it */
static bool
canonical_uuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

static bool
audience_matches(Jsonb *payload, const char *aud)
{
	JsonbValue *v = claim(payload, "aud");
	size_t		len = strlen(aud);

	if (v == NULL)
		return false;
	if (v->type == jbvString)
		return v->val.string.len == len && memcmp(v->val.string.val, aud, len) == 0;
	if (v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data))
	{
		for (int i = 0; i < JsonContainerSize(v->val.binary.data); i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(v->val.binary.data, i);

			if (e->type == jbvString && e->val.string.len == len &&
				memcmp(e->val.string.val, aud, len) == 0)
				return true;
		}
	}
	return false;
}

/* what verify_access_token checks beyond signature, claims and times */
#define VERIFY_AUDIENCE	0x01	/* aud holds the audience asked for */
#define VERIFY_BOUND_OK	0x02	/* DPoP-bound tokens pass: the caller checks the proof */
#define VERIFY_LIVE		0x04	/* not revoked; agent, actor and tenant active */

/*
 * Tokens whose signature this backend verified, by SHA-256 of the token:
 * the verdict on a signature over given bytes with a given key never
 * changes, so a hit skips the signature (the bulk of the cost) and
 * nothing else: times, revocation, agent and tenant are checked again for
 * every use.  agentidp.verified_token_cache entries at most (0: none);
 * when full, the cache starts over.
 */
typedef struct VerifiedToken
{
	uint8		hash[SHA256_DIGEST_LENGTH];	/* the key */
	pg_uuid_t	tenant;			/* the tenant whose key signed it */
	char		kid[64];		/* that key */
	Jsonb	   *payload;
} VerifiedToken;

static HTAB *verified = NULL;
static MemoryContext verified_cxt = NULL;

static void
verified_reset(void)
{
	HASHCTL		ctl;

	if (verified_cxt == NULL)
		verified_cxt = AllocSetContextCreate(TopMemoryContext, "agentidp verified tokens",
											 ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(verified_cxt);
	ctl.keysize = SHA256_DIGEST_LENGTH;
	ctl.entrysize = sizeof(VerifiedToken);
	ctl.hcxt = verified_cxt;
	verified = hash_create("agentidp verified tokens", 256, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static VerifiedToken *
verified_lookup(const uint8 *hash)
{
	if (agentidp_verified_token_cache <= 0 || verified == NULL)
		return NULL;
	return hash_search(verified, hash, HASH_FIND, NULL);
}

static void
verified_store(const uint8 *hash, const pg_uuid_t *tenant, const char *kid, Jsonb *payload)
{
	VerifiedToken *e;
	bool		found;

	if (agentidp_verified_token_cache <= 0)
		return;
	if (verified == NULL || hash_get_num_entries(verified) >= agentidp_verified_token_cache)
		verified_reset();
	e = hash_search(verified, hash, HASH_ENTER, &found);
	memcpy(&e->tenant, tenant, sizeof(pg_uuid_t));
	strlcpy(e->kid, kid, sizeof(e->kid));
	e->payload = MemoryContextAlloc(verified_cxt, VARSIZE(payload));
	memcpy(e->payload, payload, VARSIZE(payload));
}

/* the current actor of a delegated token must still be an active agent */
/*
 * The agent a token stands for: its sub, or for a person's token (one with
 * subject_issuer) the acting agent of its "act"; NULL when that is missing.
 */
static char *
token_agent(Jsonb *payload)
{
	JsonbValue *act;
	JsonbValue	k;
	JsonbValue *actor;

	if (claim(payload, "subject_issuer") == NULL)
		return string_claim(payload, "sub");
	act = claim(payload, "act");
	if (act == NULL || act->type != jbvBinary)
		return NULL;
	k.type = jbvString;
	k.val.string.val = "sub";
	k.val.string.len = 3;
	actor = findJsonbValueFromContainer(act->val.binary.data, JB_FOBJECT, &k);
	return (actor != NULL && actor->type == jbvString) ?
		pnstrdup(actor->val.string.val, actor->val.string.len) : NULL;
}

static void
check_actor(const pg_uuid_t *tenant, JsonbValue *act)
{
	static SPIPlanPtr plan = NULL;
	JsonbValue	k;
	JsonbValue *sub;
	char	   *id;
	Oid			argtypes[2] = {UUIDOID, UUIDOID};
	Datum		args[2];

	k.type = jbvString;
	k.val.string.val = "sub";
	k.val.string.len = 3;
	sub = findJsonbValueFromContainer(act->val.binary.data, JB_FOBJECT, &k);
	if (sub == NULL || sub->type != jbvString)
		invalid_token("the act claim names no actor");
	id = pnstrdup(sub->val.string.val, sub->val.string.len);
	if (!canonical_uuid(id))
		invalid_token("the act claim names no agent");
	args[0] = UUIDPGetDatum(tenant);
	args[1] = DirectFunctionCall1(uuid_in, CStringGetDatum(id));
	(void) agentidp_run_plan(&plan,
							 "SELECT 1 FROM agentidp.agents "
							 "WHERE tenant_id = $1 AND agent_id = $2 AND status = 'active'",
							 2, argtypes, args, NULL, true, 1);
	if (SPI_processed != 1)
		invalid_token("the actor is not an active agent");
}

/*
 * The claims of a valid access token of this database's tenants, else
 * 28000 naming the reason.  RFC 8725: the key comes from the kid among
 * the tenants' keys, the algorithm must be that key's own, "typ" must say
 * access token (RFC 9068 section 4), issuer and audience are checked, and
 * times with agentidp.clock_skew of leeway.  Revocation, agent and tenant
 * status are read in one probe for every token, so a revoked token or a
 * suspended agent fails on the next statement.  Runs in the caller's SPI
 * connection as the extension owner.
 */
static Jsonb *
verify_access_token(text *token, text *audience, int flags, int64 now)
{
	AgentidpJws jws;
	VerifyKey  *key;
	Jsonb	   *payload;
	char	   *tenant_claim;
	char	   *sub;
	char	   *subject_issuer;
	char	   *agent;
	char	   *jti;
	char	   *iss;
	int64		exp;
	int64		nbf;
	int64		iat;
	TokenState	st;
	char	   *cred;
	char	   *aud;
	uint8		hash[SHA256_DIGEST_LENGTH];
	VerifiedToken *hit;
	pg_uuid_t	key_tenant;
	char	   *kid;

	if (token == NULL)
		invalid_token("the token is NULL");
	token_hash(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), hash);
	hit = verified_lookup(hash);
	if (hit != NULL)
	{
		/* a copy: a later store may start the cache over */
		payload = palloc(VARSIZE(hit->payload));
		memcpy(payload, hit->payload, VARSIZE(hit->payload));
		memcpy(&key_tenant, &hit->tenant, sizeof(pg_uuid_t));
		kid = pstrdup(hit->kid);
	}
	else
	{
		agentidp_jws_parse(token, &jws, false);
		if (jws.typ == NULL ||
			(pg_strcasecmp(jws.typ, "at+jwt") != 0 &&
			 pg_strcasecmp(jws.typ, "application/at+jwt") != 0))
			invalid_token("wrong typ: not an access token");
		if (jws.kid == NULL)
			invalid_token("unknown key");
		key = verify_key(jws.kid);
		if (strcmp(jws.alg, key->alg) != 0)
			invalid_token("algorithm is not the key's");
		payload = agentidp_jws_verify_key(&jws, key->verifier);
		memcpy(&key_tenant, &key->tenant, sizeof(pg_uuid_t));
		kid = key->kid;
		verified_store(hash, &key_tenant, kid, payload);
	}

	tenant_claim = string_claim(payload, "tenant_id");
	if (tenant_claim == NULL || strcmp(tenant_claim, uuid_text(&key_tenant)) != 0)
		invalid_token("token of another tenant than its key");
	sub = string_claim(payload, "sub");
	jti = string_claim(payload, "jti");
	if (sub == NULL || jti == NULL || string_claim(payload, "client_id") == NULL)
		invalid_token("no sub, jti or client_id");

	exp = date_claim(payload, "exp");
	nbf = date_claim(payload, "nbf");
	iat = date_claim(payload, "iat");
	if (exp < 0)
		invalid_token("no exp");
	if (iat < 0)
		invalid_token("no iat");
	/* valid while now < exp + leeway (jwt-attacks.md #26) */
	if (now >= exp + agentidp_clock_skew)
		invalid_token("expired");
	if ((nbf >= 0 && nbf > now + agentidp_clock_skew) || iat > now + agentidp_clock_skew)
		invalid_token("not yet valid");

	/*
	 * sub is an agent id, a uuid in its canonical text form; or, with
	 * subject_issuer, a person of a trusted issuer, and the agent whose
	 * status and credential count is the actor.
	 */
	subject_issuer = string_claim(payload, "subject_issuer");
	agent = token_agent(payload);
	if (agent == NULL)
		invalid_token("a person's token names no acting agent");
	if (!canonical_uuid(agent))
		invalid_token("unknown agent");
	cred = string_claim(payload, "cred");
	if (cred == NULL && claim(payload, "cred") != NULL)
		invalid_token("malformed cred claim");
	if (cred != NULL && (strlen(cred) != 38 || (cred[0] != 's' && cred[0] != 'k') ||
						 cred[1] != ':' || !canonical_uuid(cred + 2)))
		invalid_token("malformed cred claim");
	agentidp_token_state(&key_tenant,
						 DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(agent))),
						 jti, kid, cred, &st);
	if (!st.tenant_found)
		invalid_token("unknown tenant");
	/* the key too: deleting a key ends its tokens at once */
	if (!st.key_exists)
		invalid_token("unknown key");
	iss = string_claim(payload, "iss");
	if (iss == NULL || strcmp(iss, st.issuer) != 0)
		invalid_token("wrong issuer");
	aud = audience != NULL ? text_to_cstring(audience) : st.default_audience;
	if ((flags & VERIFY_AUDIENCE) && !audience_matches(payload, aud))
		invalid_token("wrong audience");
	if (!st.agent_found)
		invalid_token("unknown agent");
	if (flags & VERIFY_LIVE)
	{
		JsonbValue *act = claim(payload, "act");

		if (st.revoked)
			invalid_token("revoked");
		if (strcmp(st.tenant_status, "active") != 0)
			invalid_token("the tenant is suspended");
		if (strcmp(st.agent_status, "active") != 0)
			invalid_token(psprintf("the agent is %s", st.agent_status));
		if (!st.cred_active)
			invalid_token("the credential it was obtained with is revoked");
		/* a delegated token ends with its actor too */
		if (act != NULL && act->type == jbvBinary)
			check_actor(&key_tenant, act);
		/* and a person's with the trust in the person's issuer */
		if (subject_issuer != NULL && !agentidp_issuer_trusted(&key_tenant, subject_issuer))
			invalid_token("the subject's issuer is no longer trusted");
	}
	/* a sender-constrained token is valid only with its proof (RFC 9449 7.1) */
	if (!(flags & VERIFY_BOUND_OK) && claim(payload, "cnf") != NULL)
		invalid_token("the token is DPoP-bound: present it with its proof (agentidp.verify_dpop)");
	return payload;
}

/*
 * agentidp.verify_token(token text, audience text DEFAULT NULL)
 *		RETURNS jsonb
 *
 * The claims of a valid access token; without an audience the tenant's
 * default audience (its "audience" setting, else its issuer) must be in
 * "aud".
 */
Jsonb *
agentidp_token_claims(text *token, text *audience)
{
	AgentidpOwnerContext oc;
	Jsonb	   *claims;

	SPI_connect();
	agentidp_become_owner(&oc);
	claims = copy_out(verify_access_token(token, audience, VERIFY_AUDIENCE | VERIFY_LIVE,
										  unix_now()));
	agentidp_restore_user(&oc);
	SPI_finish();
	return claims;
}

Datum
agentidp_verify_token(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(agentidp_token_claims(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
											PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1)));
}

/*
 * agentidp._verify_token_at(token text, audience text, now bigint)
 *		RETURNS jsonb
 *
 * verify_token as if the time were now (seconds since the Unix epoch), for
 * claim vectors written for a fixed time.  Granted to nobody.
 */
PG_FUNCTION_INFO_V1(agentidp_verify_token_at);
Datum
agentidp_verify_token_at(PG_FUNCTION_ARGS)
{
	AgentidpOwnerContext oc;
	Jsonb	   *claims;

	SPI_connect();
	agentidp_become_owner(&oc);
	claims = copy_out(verify_access_token(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
										  PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
										  VERIFY_AUDIENCE | VERIFY_LIVE, PG_GETARG_INT64(2)));
	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_JSONB_P(claims);
}

/*
 * Run fn(arg) in a subtransaction.  NULL when it succeeded; the error when
 * it raised a token error (SQLSTATE classes 22 and 28), its work rolled
 * back; any other error (a cancel, a broken table) goes on up.
 */
static ErrorData *
catch_token_error(void (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		int			category;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		if (category != ERRCODE_DATA_EXCEPTION &&
			category != ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
			ReThrowError(edata);
	}
	PG_END_TRY();
	return edata;
}

typedef struct TryVerify
{
	text	   *token;
	int			flags;
	Jsonb	   *claims;
} TryVerify;

static void
try_verify_call(void *arg)
{
	TryVerify  *tv = arg;

	tv->claims = verify_access_token(tv->token, NULL, tv->flags, unix_now());
}

/*
 * The claims of a valid access token, whatever its audience (the issuer
 * itself asks), or NULL for anything invalid: the error is caught in a
 * subtransaction (revocation and introspection answer
 * "inactive" rather than fail, RFC 7009 section 2.2, RFC 7662 section 2.2).
 */
static Jsonb *
try_verify(text *token, int flags)
{
	TryVerify	tv = {token, flags, NULL};
	ErrorData  *edata = catch_token_error(try_verify_call, &tv);

	if (edata != NULL)
	{
		FreeErrorData(edata);
		return NULL;
	}
	return tv.claims;
}


/* an agent's client_id, whatever its status */
static char *
agent_client_id(const pg_uuid_t *tenant, const pg_uuid_t *agent)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {UUIDOID, UUIDOID};
	Datum		args[2];

	args[0] = UUIDPGetDatum(tenant);
	args[1] = UUIDPGetDatum(agent);
	(void) agentidp_run_plan(&plan,
							 "SELECT client_id FROM agentidp.agents WHERE tenant_id = $1 AND agent_id = $2",
							 2, argtypes, args, NULL, true, 1);
	return SPI_processed == 1 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : "";
}

static bool
client_matches(text *client_id, const char *token_client)
{
	return client_id == NULL ||
		(VARSIZE_ANY_EXHDR(client_id) == strlen(token_client) &&
		 memcmp(VARDATA_ANY(client_id), token_client, strlen(token_client)) == 0);
}

/*
 * agentidp.revoke_token(token text, client_id text DEFAULT NULL)
 *		RETURNS void
 *
 * RFC 7009: an access token is revoked by its jti until it expires; a
 * refresh token revokes its whole family.  A token that is not valid
 * (unknown, expired, already revoked) is no error, as the RFC says; one
 * issued to another client than client_id (when given) is refused.
 */
Datum
agentidp_revoke_token(PG_FUNCTION_ARGS)
{
	AgentidpOwnerContext oc;
	text	   *token = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	text	   *client_id = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	pg_uuid_t	tenant;
	pg_uuid_t	agent;
	pg_uuid_t	family;
	Jsonb	   *claims;

	if (token == NULL)
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("token must not be null"));
	SPI_connect();
	agentidp_become_owner(&oc);
	if (VARSIZE_ANY_EXHDR(token) >= REFRESH_PREFIX_LEN &&
		memcmp(VARDATA_ANY(token), REFRESH_PREFIX, REFRESH_PREFIX_LEN) == 0)
	{
		if (find_refresh(token, &tenant, &agent, &family))
		{
			StringInfoData key;

			if (client_id != NULL && !client_matches(client_id, agent_client_id(&tenant, &agent)))
				ereport(ERROR,
						errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
						errmsg("unauthorized_client: the token was not issued to this client"));
			revoke_family(&tenant, &family);
			initStringInfo(&key);
			appendStringInfoChar(&key, '{');
			append_json_string(&key, "refresh_family", uuid_text(&family));
			appendStringInfoChar(&key, '}');
			agentidp_audit_event(&tenant, &agent, "token.revoke", "success", "token", key.data,
								 "{\"token_type\":\"refresh_token\"}");
		}
	}
	/* a revoked token stays revoked when its agent comes back: no LIVE */
	else if ((claims = try_verify(token, VERIFY_BOUND_OK)) != NULL)
	{
		char	   *jti = string_claim(claims, "jti");
		char	   *cid = string_claim(claims, "client_id");
		/* verified: the agent is there and a canonical uuid */
		char	   *sub = token_agent(claims);
		char	   *tid = string_claim(claims, "tenant_id");
		Oid			argtypes[3] = {UUIDOID, TEXTOID, TIMESTAMPTZOID};
		Datum		args[3];
		StringInfoData key;

		if (cid == NULL || !client_matches(client_id, cid))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					errmsg("unauthorized_client: the token was not issued to this client"));
		args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(tid));
		args[1] = CStringGetTextDatum(jti);
		args[2] = TimestampTzGetDatum(from_unix(date_claim(claims, "exp")));
		(void) agentidp_run_plan(&revoke_jti_plan,
								 "INSERT INTO agentidp.revoked_tokens (tenant_id, jti, expires_at) "
								 "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
								 3, argtypes, args, NULL, false, 0);
		initStringInfo(&key);
		appendStringInfoChar(&key, '{');
		append_json_string(&key, "jti", jti);
		appendStringInfoChar(&key, '}');
		agentidp_audit_event(DatumGetUUIDP(args[0]),
							 DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(sub))),
							 "token.revoke", "success", "token", key.data, "{\"token_type\":\"access_token\"}");
	}
	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * agentidp.introspect_token(token text) RETURNS jsonb
 *
 * RFC 7662: {"active": false} for anything not valid now, else the token's
 * claims with "active": true and "token_type".  Refresh tokens are active
 * while unused, unrevoked and unexpired.
 */
Datum
agentidp_introspect_token(PG_FUNCTION_ARGS)
{
	AgentidpOwnerContext oc;
	text	   *token = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	Jsonb	   *result = NULL;
	StringInfoData r;

	SPI_connect();
	agentidp_become_owner(&oc);
	initStringInfo(&r);
	if (token != NULL && VARSIZE_ANY_EXHDR(token) >= REFRESH_PREFIX_LEN &&
		memcmp(VARDATA_ANY(token), REFRESH_PREFIX, REFRESH_PREFIX_LEN) == 0)
	{
		pg_uuid_t	tenant;
		pg_uuid_t	agent;
		pg_uuid_t	family;
		Issuance	is;

		if (find_refresh(token, &tenant, &agent, &family))
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			TimestampTz expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));
			TimestampTz idle = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
			bool		used = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
			bool		revoked = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
			char	   *scope = SPI_getvalue(tup, desc, 5);
			char	   *aud = SPI_getvalue(tup, desc, 6);
			TimestampTz now = GetCurrentTimestamp();

			if (!used && !revoked && now < expires && now < idle &&
				load_issuance(&agent, &is))
			{
				appendStringInfoString(&r, "{\"active\":true,\"token_type\":\"refresh_token\",");
				append_json_string(&r, "scope", scope);
				appendStringInfoChar(&r, ',');
				append_json_string(&r, "client_id", is.client_id);
				appendStringInfoChar(&r, ',');
				append_json_string(&r, "sub", uuid_text(&agent));
				appendStringInfoChar(&r, ',');
				append_json_string(&r, "aud", aud);
				appendStringInfoChar(&r, ',');
				append_json_string(&r, "iss", is.issuer);
				appendStringInfo(&r, ",\"exp\":" INT64_FORMAT "}",
								 (int64) (Min(expires, idle) / USECS_PER_SEC) +
								 (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);
				result = jsonb_from(&r);
			}
		}
	}
	else if (token != NULL)
	{
		Jsonb	   *claims = try_verify(token, VERIFY_BOUND_OK | VERIFY_LIVE);

		if (claims != NULL)
		{
			/* the claims, then what RFC 7662 adds */
			char	   *text = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

			appendStringInfo(&r, "{\"active\":true,\"token_type\":\"%s\",",
							 claim(claims, "cnf") != NULL ? "DPoP" : "Bearer");
			appendStringInfoString(&r, text + 1);
			result = jsonb_from(&r);
		}
	}
	if (result == NULL)
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"active\":false}")));
	result = copy_out(result);
	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* ---- keys that come with a request ---- */

/* the first private member of a JWK, or NULL for a public key */
static const char *
private_member(Jsonb *jwk)
{
	static const char *const members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

	for (int i = 0; i < lengthof(members); i++)
		if (claim(jwk, members[i]) != NULL)
			return members[i];
	return NULL;
}

/* the payload of a parsed JWS signed by a public JWK, imported for this call */
Jsonb *
agentidp_verify_with_public_jwk(AgentidpJws *jws, Jsonb *jwk)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "agentidp request key",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	AgentidpJwk *key = agentidp_jwk_import(jwk, false);
	AgentidpSigner *verifier = agentidp_signer_create(key, cxt);
	Jsonb	   *payload;

	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		payload = agentidp_jws_verify_key(jws, verifier);
	}
	PG_FINALLY();
	{
		agentidp_jwk_free(key);
		MemoryContextDelete(cxt);
	}
	PG_END_TRY();
	return payload;
}

/* ---- DPoP (RFC 9449) ---- */

/* a proof is accepted this long after its iat (plus the clock skew) */
#define DPOP_MAX_AGE 60

static void pg_attribute_noreturn()
invalid_dpop(const char *reason)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg("invalid DPoP proof: %s", reason));
}

/*
 * What the JWS layer refuses in a proof (not three segments, a bad header,
 * a bad signature) is an invalid proof too: RFC 9449 section 5 answers it
 * with invalid_dpop_proof, which token_endpoint gives to the messages that
 * begin "invalid DPoP proof".  The error is raised again at once, so the
 * aborting transaction cleans up as for the original one.
 */
static void pg_attribute_noreturn()
rethrow_as_invalid_dpop(MemoryContext cxt)
{
	ErrorData  *e;
	int			category;

	MemoryContextSwitchTo(cxt);
	e = CopyErrorData();
	category = ERRCODE_TO_CATEGORY(e->sqlerrcode);
	/* a cancel or an out-of-memory error stays what it is */
	if (category != ERRCODE_DATA_EXCEPTION &&
		category != ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
	{
		FreeErrorData(e);
		PG_RE_THROW();
	}
	FlushErrorState();
	invalid_dpop(e->message);
}

static void
parse_dpop(text *proof, AgentidpJws *jws)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		agentidp_jws_parse(proof, jws, true);
	}
	PG_CATCH();
	{
		rethrow_as_invalid_dpop(cxt);
	}
	PG_END_TRY();
}

static Jsonb *
verify_dpop_signature(AgentidpJws *jws, Jsonb *jwk)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile claims = NULL;

	PG_TRY();
	{
		claims = agentidp_verify_with_public_jwk(jws, jwk);
	}
	PG_CATCH();
	{
		rethrow_as_invalid_dpop(cxt);
	}
	PG_END_TRY();
	return claims;
}

/* the length of a URI without its query and fragment (RFC 9449 4.3) */
static size_t
htu_length(const char *u, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (u[i] == '?' || u[i] == '#')
			return i;
	return len;
}

/*
 * Check a DPoP proof (RFC 9449 section 4.3) for the request (htm, htu)
 * and, with an access token, its "ath"; record its jti among the tenant's
 * used ones until it can no longer be accepted.  Returns the RFC 7638
 * thumbprint of the proof's key: the token's cnf.jkt.
 */
static bool record_jti(const pg_uuid_t *tenant, const char *kind, const char *jti,
					   TimestampTz expires);

static char *
check_dpop(text *proof, text *htm, text *htu, text *access_token,
		   const char *expected_jkt, const pg_uuid_t *tenant)
{
	AgentidpJws jws;
	JsonbValue *jv;
	Jsonb	   *jwk;
	Jsonb	   *claims;
	char	   *jti;
	char	   *c_htm;
	char	   *c_htu;
	char	   *htu_arg;
	char	   *jkt;
	int64		iat;
	int64		now = unix_now();

	if (proof == NULL)
		invalid_dpop("no proof");
	if (htm == NULL || htu == NULL)
		invalid_dpop("a proof needs the request's method (htm) and URI (htu)");
	parse_dpop(proof, &jws);
	if (jws.typ == NULL || pg_strcasecmp(jws.typ, "dpop+jwt") != 0)
		invalid_dpop("typ is not dpop+jwt");
	if (strcmp(jws.alg, "HS256") == 0)
		invalid_dpop("a symmetric algorithm");
	jv = claim(jws.header, "jwk");
	if (jv == NULL || jv->type != jbvBinary || !JsonContainerIsObject(jv->val.binary.data))
		invalid_dpop("no public key (jwk) in the header");
	jwk = JsonbValueToJsonb(jv);
	if (private_member(jwk) != NULL)
		invalid_dpop("the header's jwk is not a public key");

	claims = verify_dpop_signature(&jws, jwk);

	jti = string_claim(claims, "jti");
	c_htm = string_claim(claims, "htm");
	c_htu = string_claim(claims, "htu");
	iat = date_claim(claims, "iat");
	if (jti == NULL || strlen(jti) == 0 || strlen(jti) > 255)
		invalid_dpop("no jti");
	if (c_htm == NULL || strlen(c_htm) != VARSIZE_ANY_EXHDR(htm) ||
		memcmp(c_htm, VARDATA_ANY(htm), strlen(c_htm)) != 0)
		invalid_dpop("htm is not the request's method");
	htu_arg = text_to_cstring(htu);
	if (c_htu == NULL ||
		htu_length(c_htu, strlen(c_htu)) != htu_length(htu_arg, strlen(htu_arg)) ||
		memcmp(c_htu, htu_arg, htu_length(htu_arg, strlen(htu_arg))) != 0)
		invalid_dpop("htu is not the request's URI");
	if (iat < 0 || iat > now + agentidp_clock_skew ||
		iat < now - DPOP_MAX_AGE - agentidp_clock_skew)
		invalid_dpop("iat is not recent");
	if (access_token != NULL)
	{
		unsigned char h[SHA256_DIGEST_LENGTH];
		char		ath[AGENTIDP_B64URL_LEN(SHA256_DIGEST_LENGTH) + 1];
		char	   *c_ath = string_claim(claims, "ath");

		token_hash(VARDATA_ANY(access_token), VARSIZE_ANY_EXHDR(access_token), h);
		agentidp_b64url_encode(h, sizeof(h), ath);
		ath[AGENTIDP_B64URL_LEN(SHA256_DIGEST_LENGTH)] = '\0';
		if (c_ath == NULL || strcmp(c_ath, ath) != 0)
			invalid_dpop("ath is not the access token's hash");
	}
	jkt = agentidp_jwk_thumbprint(jwk);
	/* the key is checked before the jti is used up */
	if (expected_jkt != NULL && strcmp(jkt, expected_jkt) != 0)
		invalid_dpop("the proof's key is not the one the token is bound to");
	if (!record_jti(tenant, "dpop_proof", jti, from_unix(iat + DPOP_MAX_AGE + agentidp_clock_skew)))
		invalid_dpop("replayed jti");
	return jkt;
}

/*
 * agentidp.verify_dpop(access_token text, proof text, htm text, htu text,
 *					  audience text DEFAULT NULL) RETURNS jsonb
 *
 * The claims of a DPoP-bound access token presented with a valid proof of
 * its key for this request (RFC 9449 section 7.1); otherwise 28000.
 */
Jsonb *
agentidp_dpop_token_claims(text *token, text *proof, text *htm, text *htu, text *audience)
{
	AgentidpOwnerContext oc;
	Jsonb	   *claims;
	JsonbValue *cnf;
	char	   *bound = NULL;
	pg_uuid_t	tenant;

	SPI_connect();
	agentidp_become_owner(&oc);
	claims = verify_access_token(token, audience,
								 VERIFY_AUDIENCE | VERIFY_BOUND_OK | VERIFY_LIVE, unix_now());
	cnf = claim(claims, "cnf");
	if (cnf != NULL && cnf->type == jbvBinary)
	{
		JsonbValue	k;
		JsonbValue *v;

		k.type = jbvString;
		k.val.string.val = "jkt";
		k.val.string.len = 3;
		v = findJsonbValueFromContainer(cnf->val.binary.data, JB_FOBJECT, &k);
		if (v != NULL && v->type == jbvString)
			bound = pnstrdup(v->val.string.val, v->val.string.len);
	}
	if (bound == NULL)
		invalid_token("the token is not DPoP-bound");
	memcpy(&tenant, DatumGetUUIDP(DirectFunctionCall1(uuid_in,
													  CStringGetDatum(string_claim(claims, "tenant_id")))),
		   sizeof(pg_uuid_t));
	(void) check_dpop(proof, htm, htu, token, bound, &tenant);
	claims = copy_out(claims);
	agentidp_restore_user(&oc);
	SPI_finish();
	return claims;
}

Datum
agentidp_verify_dpop(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(agentidp_dpop_token_claims(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
												 PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
												 PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
												 PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3),
												 OPT_TEXT_ARG(4)));
}

/* ---- private_key_jwt ---- */

/*
 * Every refusal of a client assertion is the one client-authentication
 * failure callers see; the reason goes to the server log alone.
 */
static void pg_attribute_noreturn()
assertion_refused(const char *reason)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg("client authentication failed"),
			errdetail_log("client assertion refused: %s", reason),
			errhint("Check the assertion: signed with a registered, unrevoked key, iss and sub the client_id, aud the token endpoint, a fresh jti, exp within 5 minutes."));
}

/*
 * Record a jti until expires; false if it was recorded already (a replay).
 * The primary key decides between concurrent uses.
 */
static bool
record_jti(const pg_uuid_t *tenant, const char *kind, const char *jti, TimestampTz expires)
{
	Oid			argtypes[4] = {UUIDOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[4];

	args[0] = UUIDPGetDatum(tenant);
	args[1] = CStringGetTextDatum(kind);
	args[2] = CStringGetTextDatum(jti);
	args[3] = TimestampTzGetDatum(expires);
	(void) agentidp_run_plan(&record_jti_plan,
							 "INSERT INTO agentidp.used_jtis (tenant_id, kind, jti, expires_at) "
							 "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
							 4, argtypes, args, NULL, false, 0);
	return SPI_processed == 1;
}

typedef struct AssertionCall
{
	text	   *assertion;
	pg_uuid_t  *agent_id;
	pg_uuid_t  *key_id;
} AssertionCall;

static void assertion_check(text *assertion, pg_uuid_t *agent_id, pg_uuid_t *key_id);

static void
assertion_call(void *arg)
{
	AssertionCall *ac = arg;

	assertion_check(ac->assertion, ac->agent_id, ac->key_id);
}

/* the checks of authenticate_assertion, raising whatever fails */
static void
assertion_check(text *assertion, pg_uuid_t *agent_id, pg_uuid_t *key_id)
{
	AgentidpJws jws;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;
	Jsonb	   *claims;
	Jsonb	   *jwk;
	int			nrows;
	pg_uuid_t  *tenants;
	pg_uuid_t  *agents;
	pg_uuid_t  *key_ids;
	char	  **client_ids;
	char	  **issuers;
	int			row = -1;
	char	   *endpoint;
	char	   *iss;
	char	   *sub;
	char	   *jti;
	int64		now = unix_now();
	int64		exp;
	int64		nbf;
	int64		iat;

	if (assertion == NULL)
		assertion_refused("no assertion");
	agentidp_jws_parse(assertion, &jws, false);
	if (jws.kid == NULL)
		assertion_refused("no kid");
	/* an access token or a DPoP proof is not a client assertion */
	if (jws.typ != NULL &&
		(pg_strcasecmp(jws.typ, "at+jwt") == 0 ||
		 pg_strcasecmp(jws.typ, "application/at+jwt") == 0 ||
		 pg_strcasecmp(jws.typ, "dpop+jwt") == 0))
		assertion_refused("typ says this is not a client assertion");

	/*
	 * A kid is the key's thumbprint: several clients may have registered
	 * the same public key, and all rows hold the same key material.  The
	 * signature is checked with it, then iss picks the client.
	 */
	args[0] = CStringGetTextDatum(jws.kid);
	(void) agentidp_run_plan(&client_key_plan,
							 "SELECT k.tenant_id, k.agent_id, k.public_jwk, a.client_id, t.issuer, k.key_id "
							 "FROM agentidp.client_keys k "
							 "JOIN agentidp.agents a ON a.tenant_id = k.tenant_id AND a.agent_id = k.agent_id "
							 "JOIN agentidp.tenants t ON t.tenant_id = k.tenant_id "
							 "WHERE k.kid = $1 AND k.revoked_at IS NULL "
							 "  AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now()) "
							 "  AND a.status = 'active' AND t.status = 'active'",
							 1, argtypes, args, NULL, true, 16);
	nrows = (int) SPI_processed;
	if (nrows == 0)
		assertion_refused("no active client key with this kid");
	tenants = palloc(sizeof(pg_uuid_t) * nrows);
	agents = palloc(sizeof(pg_uuid_t) * nrows);
	key_ids = palloc(sizeof(pg_uuid_t) * nrows);
	client_ids = palloc(sizeof(char *) * nrows);
	issuers = palloc(sizeof(char *) * nrows);
	for (int i = 0; i < nrows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		memcpy(&tenants[i], DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), sizeof(pg_uuid_t));
		memcpy(&agents[i], DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull)), sizeof(pg_uuid_t));
		memcpy(&key_ids[i], DatumGetUUIDP(SPI_getbinval(tup, desc, 6, &isnull)), sizeof(pg_uuid_t));
		client_ids[i] = SPI_getvalue(tup, desc, 4);
		issuers[i] = SPI_getvalue(tup, desc, 5);
	}
	jwk = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

	claims = verify_dpop_signature(&jws, jwk);

	iss = string_claim(claims, "iss");
	sub = string_claim(claims, "sub");
	jti = string_claim(claims, "jti");
	for (int i = 0; iss != NULL && i < nrows && row < 0; i++)
		if (strcmp(iss, client_ids[i]) == 0)
			row = i;
	if (row < 0 || sub == NULL || strcmp(sub, iss) != 0)
		assertion_refused("iss and sub must be the client_id of a client with this key");
	memcpy(agent_id, &agents[row], sizeof(pg_uuid_t));
	memcpy(key_id, &key_ids[row], sizeof(pg_uuid_t));
	endpoint = psprintf("%s/oauth/token", issuers[row]);
	if (!audience_matches(claims, issuers[row]) && !audience_matches(claims, endpoint))
		assertion_refused("aud is neither the issuer nor the token endpoint");
	exp = date_claim(claims, "exp");
	nbf = date_claim(claims, "nbf");
	iat = date_claim(claims, "iat");
	if (exp < 0 || now >= exp + agentidp_clock_skew)
		assertion_refused("expired or no exp");
	if (exp > now + ASSERTION_MAX_LIFETIME + agentidp_clock_skew)
		assertion_refused("exp is too far ahead");
	if ((nbf >= 0 && nbf > now + agentidp_clock_skew) ||
		(iat >= 0 && iat > now + agentidp_clock_skew))
		assertion_refused("not yet valid");
	if (jti == NULL || strlen(jti) == 0 || strlen(jti) > 255)
		assertion_refused("no jti");
	if (!record_jti(&tenants[row], "client_assertion", jti, from_unix(exp + agentidp_clock_skew)))
		assertion_refused("replayed jti");
}

/*
 * The agent a client assertion (RFC 7523 section 3, OpenID Connect Core
 * section 9 private_key_jwt) authenticates, else the uniform 28000 of every
 * client authentication failure: a malformed or badly signed assertion
 * too, so that nothing tells a caller whether a kid is registered.  The
 * header's kid picks a registered client key (the RFC 7638 thumbprint
 * add_client_key returned); iss and sub must be that client's client_id,
 * aud the tenant's issuer or token endpoint (<issuer>/oauth/token), exp
 * near, and the jti unused: it is recorded until exp.
 */
static void
authenticate_assertion(text *assertion, pg_uuid_t *agent_id, pg_uuid_t *key_id)
{
	AssertionCall ac = {assertion, agent_id, key_id};
	ErrorData  *edata = catch_token_error(assertion_call, &ac);

	if (edata == NULL)
		return;
	/* our own refusal keeps its logged reason; JOSE's becomes one */
	if (edata->detail_log != NULL)
		ReThrowError(edata);
	assertion_refused(edata->message);
}

/*
 * agentidp._authenticate_client_assertion(client_assertion text) RETURNS text
 *
 * private_key_jwt client authentication alone, for the revocation and
 * introspection endpoints: the client_id of the agent the assertion
 * authenticates (its jti is used up), else the one 28000 refusal.
 */
PG_FUNCTION_INFO_V1(agentidp_authenticate_client_assertion);
Datum
agentidp_authenticate_client_assertion(PG_FUNCTION_ARGS)
{
	AgentidpOwnerContext oc;
	pg_uuid_t	agent_id;
	pg_uuid_t	key_id;
	Issuance	is;
	text	   *client_id;

	SPI_connect();
	agentidp_become_owner(&oc);
	authenticate_assertion(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &agent_id, &key_id);
	if (!load_issuance(&agent_id, &is))
		assertion_refused("agent or tenant not active");
	client_id = (text *) SPI_palloc(VARHDRSZ + strlen(is.client_id));
	SET_VARSIZE(client_id, VARHDRSZ + strlen(is.client_id));
	memcpy(VARDATA(client_id), is.client_id, strlen(is.client_id));
	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_TEXT_P(client_id);
}

/*
 * agentidp.issue_token_jwt(client_assertion text, scope text DEFAULT NULL,
 *							audience text DEFAULT NULL) RETURNS jsonb
 *
 * The client-credentials grant with private_key_jwt client authentication.
 */
static Jsonb *
issue_token_jwt_body(FunctionCallInfo fcinfo)
{
	AgentidpOwnerContext oc;
	pg_uuid_t	agent_id;
	pg_uuid_t	key_id;
	Issuance	is;
	Jsonb	   *result;
	char	   *scope;
	char	   *aud;

	SPI_connect();
	agentidp_become_owner(&oc);
	authenticate_assertion(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &agent_id, &key_id);
	if (!load_issuance(&agent_id, &is))
		assertion_refused("agent or tenant not active");
	request_client(&is.tenant_id, &agent_id, is.client_id);
	is.cred = psprintf("k:%s", uuid_text(&key_id));
	scope = grant_scope(PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1), is.scopes, is.nscopes);
	aud = grant_audience(PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2), &is);
	result = copy_out(issue(&is, "client_credentials", "private_key_jwt", scope, aud, NULL, 0, NULL));
	agentidp_restore_user(&oc);
	SPI_finish();
	return result;
}

Datum
agentidp_issue_token_jwt(PG_FUNCTION_ARGS)
{
	return run_grant(fcinfo, issue_token_jwt_body, "client_credentials", -1);
}

/*
 * agentidp._public_jwk_kid(jwk jsonb) RETURNS text
 *
 * The RFC 7638 thumbprint of a public JWK after checking it as a key
 * (jwk.c: curve points, RSA sizes, ...); a private key is refused, so that
 * add_client_key never stores one.
 */
Datum
agentidp_public_jwk_kid(PG_FUNCTION_ARGS)
{
	Jsonb	   *jwk = PG_GETARG_JSONB_P(0);
	const char *private = private_member(jwk);
	AgentidpJwk *key;

	if (private != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("public_jwk must be a public key: it has the private member \"%s\"", private),
				errhint("Register the public half only; the private key stays with the client."));
	key = agentidp_jwk_import(jwk, false);
	agentidp_jwk_free(key);
	PG_RETURN_TEXT_P(cstring_to_text(agentidp_jwk_thumbprint(jwk)));
}

/* ---- token exchange (delegation) ---- */

static bool
in_scope_list(const char *list, const char *s, size_t len)
{
	for (const char *p = list; *p;)
	{
		const char *e = strchr(p, ' ');
		size_t		plen = e ? (size_t) (e - p) : strlen(p);

		if (plen == len && memcmp(p, s, len) == 0)
			return true;
		p += plen + (e ? 1 : 0);
	}
	return false;
}

/* the "act" claim of a delegated token: the actor now, prior actors inside */
static char *
act_claim(const pg_uuid_t *actor, const char *client_id, JsonbValue *prior)
{
	StringInfoData act;

	initStringInfo(&act);
	appendStringInfoChar(&act, '{');
	append_json_string(&act, "sub", uuid_text(actor));
	appendStringInfoChar(&act, ',');
	append_json_string(&act, "client_id", client_id);
	if (prior != NULL && prior->type == jbvBinary)
		appendStringInfo(&act, ",\"act\":%s",
						 JsonbToCString(NULL, prior->val.binary.data, prior->val.binary.len));
	appendStringInfoChar(&act, '}');
	return act.data;
}

/* whether a token's kid is one of this database's signing keys */
static bool
own_key_token(text *token)
{
	static SPIPlanPtr plan = NULL;
	AgentidpJws jws;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	agentidp_jws_parse(token, &jws, false);
	if (jws.kid == NULL)
		return true;			/* verification says what is wrong */
	args[0] = CStringGetTextDatum(jws.kid);
	(void) agentidp_run_plan(&plan, "SELECT 1 FROM agentidp.signing_keys WHERE kid = $1",
							 1, argtypes, args, NULL, true, 1);
	return SPI_processed > 0;
}

/*
 * Token exchange for a person: the subject token is a token of an issuer
 * the actor's tenant trusts (agentidp.trust_issuer), the actor an agent of
 * that tenant.  The new token's sub is the person's, with the issuer in
 * "subject_issuer"; "act" names the agent.  Its scope only narrows: what
 * the actor may be granted, what the trust allows, and what the person's
 * token holds when it carries a scope.  No roles, no refresh token, and
 * never beyond the person's token's exp.  NULL when the subject token is
 * no trusted issuer's: the caller verifies it as one of its own.
 */
static Jsonb *
exchange_for_person(FunctionCallInfo fcinfo)
{
	Jsonb	   *actor = verify_access_token(PG_GETARG_TEXT_PP(1), NULL, VERIFY_LIVE, unix_now());
	pg_uuid_t	tenant;
	pg_uuid_t	actor_agent;
	ExternalSubject ext;
	Issuance	is;
	Datum	   *allowed;
	int			nallowed = 0;
	char	   *scope;
	char	   *aud;
	char	   *act;
	Delegation	dg;

	if (claim(actor, "subject_issuer") != NULL || claim(actor, "act") != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: the actor token must be the actor's own, not a delegated one"));
	memcpy(&tenant, DatumGetUUIDP(DirectFunctionCall1(uuid_in,
													  CStringGetDatum(string_claim(actor, "tenant_id")))),
		   sizeof(pg_uuid_t));
	if (!agentidp_external_subject(&tenant, string_claim(actor, "iss"), PG_GETARG_TEXT_PP(0),
								   unix_now(), &ext))
	{
		/* perhaps an issuer's new key: fetch the key sets soon (rate-limited) */
		agentidp_worker_request_key_refresh(&tenant);
		return NULL;
	}
	memcpy(&actor_agent, DatumGetUUIDP(DirectFunctionCall1(uuid_in,
														   CStringGetDatum(string_claim(actor, "sub")))),
		   sizeof(pg_uuid_t));
	request_client(&tenant, &actor_agent, string_claim(actor, "client_id"));
	if (!load_issuance(&actor_agent, &is))
		ereport(ERROR,
				errcode(ERRCODE_OAUTH_INVALID_GRANT),
				errmsg("invalid_grant: the actor is not active"));

	allowed = palloc(sizeof(Datum) * Max(is.nscopes, 1));
	for (int i = 0; i < is.nscopes; i++)
	{
		text	   *t = DatumGetTextPP(is.scopes[i]);

		if ((ext.scope == NULL || in_scope_list(ext.scope, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t))) &&
			(!ext.scoped || text_in(ext.policy, ext.npolicy, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t))))
			allowed[nallowed++] = is.scopes[i];
	}
	scope = grant_scope(PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2), allowed, nallowed);
	aud = grant_audience(PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3), &is);

	act = act_claim(&actor_agent, is.client_id, NULL);

	/* the actor's credential: revoking it ends the delegated token too */
	is.cred = string_claim(actor, "cred");
	is.nroles = 0;
	dg.actor = &actor_agent;
	dg.act = act;
	dg.exp_cap = ext.exp;
	dg.subject = ext.sub;
	dg.subject_issuer = ext.issuer;
	if (dg.exp_cap <= unix_now())
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: the subject token expires too soon to be exchanged"));
	return copy_out(issue(&is, "urn:ietf:params:oauth:grant-type:token-exchange",
						  "actor_token", scope, aud, NULL, 0, &dg));
}

/*
 * agentidp.exchange_token(subject_token text, actor_token text DEFAULT NULL,
 *						   scope text DEFAULT NULL, audience text DEFAULT NULL)
 *		RETURNS jsonb
 *
 * RFC 8693 delegation: a token whose sub is the subject token's and whose
 * "act" names the actor (the actor token's agent), nesting the subject
 * token's own "act" when it was delegated already.  The actor must be
 * allowed to act for the subject (agentidp.may_act), both of one tenant.
 * The scope only narrows: what the subject token holds, what the actor may
 * be granted, what the policy allows, and what was asked.  The new token
 * never outlives the subject token and gets no refresh token.
 */
static Jsonb *
exchange_token_body(FunctionCallInfo fcinfo)
{
	AgentidpOwnerContext oc;
	Jsonb	   *subject;
	Jsonb	   *actor;
	pg_uuid_t	subject_agent;
	pg_uuid_t	actor_agent;
	Issuance	is;
	Issuance	actor_is;
	Oid			argtypes[3] = {UUIDOID, UUIDOID, UUIDOID};
	Datum		args[3];
	bool		isnull;
	bool		policy_scoped = false;
	Datum	   *policy = NULL;
	int			npolicy = 0;
	Datum	   *allowed;
	int			nallowed = 0;
	char	   *subject_scope;
	char	   *scope;
	char	   *aud;
	char	   *act;
	Delegation	dg;
	Jsonb	   *result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("subject_token must not be null"));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: an actor_token is required"),
				errdetail("agentidp exchanges tokens for delegation (the actor acts for the subject), not for impersonation."));

	SPI_connect();
	agentidp_become_owner(&oc);
	if (!own_key_token(PG_GETARG_TEXT_PP(0)))
	{
		/* perhaps a person's token, of an issuer the actor's tenant trusts */
		result = exchange_for_person(fcinfo);
		if (result == NULL)
			invalid_token("unknown key: not the tenant's, nor one of a trusted issuer's key sets");
		agentidp_restore_user(&oc);
		SPI_finish();
		return result;
	}
	/* bound tokens come with proofs; exchange takes none, so not them */
	subject = verify_access_token(PG_GETARG_TEXT_PP(0), NULL, VERIFY_LIVE, unix_now());
	actor = verify_access_token(PG_GETARG_TEXT_PP(1), NULL, VERIFY_LIVE, unix_now());
	if (claim(subject, "subject_issuer") != NULL || claim(actor, "subject_issuer") != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: a token issued for a person is not exchanged again"));
	if (strcmp(string_claim(subject, "tenant_id"), string_claim(actor, "tenant_id")) != 0)
		ereport(ERROR,
				errcode(ERRCODE_OAUTH_INVALID_GRANT),
				errmsg("invalid_grant: the subject and the actor belong to different tenants"));
	memcpy(&subject_agent, DatumGetUUIDP(DirectFunctionCall1(uuid_in,
															 CStringGetDatum(string_claim(subject, "sub")))),
		   sizeof(pg_uuid_t));
	memcpy(&actor_agent, DatumGetUUIDP(DirectFunctionCall1(uuid_in,
														   CStringGetDatum(string_claim(actor, "sub")))),
		   sizeof(pg_uuid_t));
	/* the actor is the client making this request */
	request_client(DatumGetUUIDP(DirectFunctionCall1(uuid_in,
													 CStringGetDatum(string_claim(actor, "tenant_id")))),
				   &actor_agent, string_claim(actor, "client_id"));
	if (memcmp(&subject_agent, &actor_agent, sizeof(pg_uuid_t)) == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: an agent does not act for itself"));

	args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(string_claim(subject, "tenant_id")));
	args[1] = UUIDPGetDatum(&subject_agent);
	args[2] = UUIDPGetDatum(&actor_agent);
	(void) agentidp_run_plan(&may_act_plan,
							 "SELECT scopes FROM agentidp.may_act "
							 "WHERE tenant_id = $1 AND subject_agent_id = $2 AND actor_agent_id = $3",
							 3, argtypes, args, NULL, true, 1);
	/* RFC 8693 section 2.2.2: a token unacceptable by policy is invalid_request */
	if (SPI_processed != 1)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: the actor may not act for the subject"),
				errhint("An administrator allows it with agentidp.allow_delegation(subject, actor)."));
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			policy_scoped = true;
			text_array(d, &policy, &npolicy);
		}
	}

	if (!load_issuance(&actor_agent, &actor_is) || !load_issuance(&subject_agent, &is))
		ereport(ERROR,
				errcode(ERRCODE_OAUTH_INVALID_GRANT),
				errmsg("invalid_grant: the subject or the actor is not active"));

	/* scope only narrows */
	subject_scope = string_claim(subject, "scope");
	allowed = palloc(sizeof(Datum) * Max(actor_is.nscopes, 1));
	for (int i = 0; i < actor_is.nscopes; i++)
	{
		text	   *t = DatumGetTextPP(actor_is.scopes[i]);

		if (subject_scope != NULL &&
			in_scope_list(subject_scope, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)) &&
			(!policy_scoped || text_in(policy, npolicy, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t))))
			allowed[nallowed++] = actor_is.scopes[i];
	}
	scope = grant_scope(PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2), allowed, nallowed);
	aud = grant_audience(PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3), &is);

	act = act_claim(&actor_agent, actor_is.client_id, claim(subject, "act"));

	/* the actor asks: its rate limit counts the token */
	is.client_id = actor_is.client_id;
	is.client_rate_limit = actor_is.client_rate_limit;
	/* the actor's credential: revoking it ends the delegated token too */
	is.cred = string_claim(actor, "cred");
	/* roles too: those both the subject and the actor hold */
	{
		Datum	   *both = palloc(sizeof(Datum) * Max(is.nroles, 1));
		int			nboth = 0;

		for (int i = 0; i < is.nroles; i++)
		{
			text	   *t = DatumGetTextPP(is.roles[i]);

			if (text_in(actor_is.roles, actor_is.nroles, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)))
				both[nboth++] = is.roles[i];
		}
		is.roles = both;
		is.nroles = nboth;
	}
	dg.actor = &actor_agent;
	dg.act = act;
	dg.exp_cap = date_claim(subject, "exp");
	dg.subject = NULL;
	dg.subject_issuer = NULL;
	if (dg.exp_cap <= unix_now())
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid_request: the subject token expires too soon to be exchanged"));
	result = copy_out(issue(&is, "urn:ietf:params:oauth:grant-type:token-exchange",
							"actor_token", scope, aud, NULL, 0, &dg));
	agentidp_restore_user(&oc);
	SPI_finish();
	return result;
}

Datum
agentidp_exchange_token(PG_FUNCTION_ARGS)
{
	return run_grant(fcinfo, exchange_token_body, "urn:ietf:params:oauth:grant-type:token-exchange", -1);
}

/* ---- refusals ---- */

/*
 * agentidp._audit_refusal(client_id text, grant_type text, error text,
 *						   description text) RETURNS void
 *
 * The audit row of a refused token request, for token_endpoint, which
 * calls it after the refused grant's subtransaction rolled back, so that
 * the row commits with the caller's transaction.  The client's tenant
 * gets it (action token.refused, result denied); an unknown client_id has
 * no tenant, and only reaches the server log.  Never given a secret.
 */
PG_FUNCTION_INFO_V1(agentidp_audit_refusal);
Datum
agentidp_audit_refusal(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	AgentidpOwnerContext oc;
	text	   *client_id = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	char	   *grant = PG_ARGISNULL(1) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *error = PG_ARGISNULL(2) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *description = PG_ARGISNULL(3) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		known = false;

	SPI_connect();
	agentidp_become_owner(&oc);
	if (client_id != NULL && VARSIZE_ANY_EXHDR(client_id) <= 128)
	{
		args[0] = PointerGetDatum(client_id);
		(void) agentidp_run_plan(&plan,
								 "SELECT tenant_id, agent_id FROM agentidp.agents WHERE client_id = $1",
								 1, argtypes, args, NULL, true, 1);
		known = SPI_processed == 1;
	}
	if (known)
	{
		bool		isnull;
		pg_uuid_t	tenant;
		pg_uuid_t	agent;
		StringInfoData detail;

		memcpy(&tenant, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
			   sizeof(pg_uuid_t));
		memcpy(&agent, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)),
			   sizeof(pg_uuid_t));
		initStringInfo(&detail);
		appendStringInfoChar(&detail, '{');
		append_json_string(&detail, "grant_type", grant);
		appendStringInfoChar(&detail, ',');
		append_json_string(&detail, "client_id", text_to_cstring(client_id));
		appendStringInfoChar(&detail, ',');
		append_json_string(&detail, "error", error);
		appendStringInfoChar(&detail, ',');
		append_json_string(&detail, "error_description", description);
		appendStringInfoChar(&detail, '}');
		agentidp_audit_event(&tenant, &agent, "token.refused", "denied", "token", NULL, detail.data);
	}
	else
		ereport(LOG,
				errmsg("agentidp: token request of an unknown client refused (%s: %s)", error, description));
	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_VOID();
}
