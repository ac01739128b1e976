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
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "agentidp.h"
#include "issuers.h"
#include "jose.h"
#include "jwk.h"
#include "tokens.h"

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

/*
 * agentidp.refresh_issuer_keys() RETURNS bigint
 *
 * Fetches the key sets that are due.  (Filled in with the HTTP client.)
 */
PG_FUNCTION_INFO_V1(agentidp_refresh_issuer_keys);
Datum
agentidp_refresh_issuer_keys(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(0);
}
