/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  Client secrets: their format, generation from OpenSSL's RNG, the hash
 *	  stored at rest, and the constant-time check.  This file alone knows
 *	  how a secret maps to its stored hash.  Revocation is plain SQL in
 *	  agentidp--*.sql; public-key credentials belong to the token service.
 *
 * IDENTIFICATION
 *	  src/credentials.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/tuplestore.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "agentidp.h"
#include "credentials.h"
#include "jose.h"

PG_FUNCTION_INFO_V1(agentidp_create_client_secret);
PG_FUNCTION_INFO_V1(agentidp_check_client_secret);

/*
 * A secret is a fixed prefix, which lets secret scanners recognise a leaked
 * one, followed by 256 random bits in base64url.  Random secrets of that
 * strength need no slow password hash: SHA-256 of the whole secret is what
 * we store, and nothing shorter than a preimage attack recovers it.
 */
#define SECRET_PREFIX		"aidp_sk_"
#define SECRET_PREFIX_LEN	(sizeof(SECRET_PREFIX) - 1)
#define SECRET_RANDOM_BYTES 32
#define SECRET_LEN			(SECRET_PREFIX_LEN + AGENTIDP_B64URL_LEN(SECRET_RANDOM_BYTES))
#define SECRET_HASH_LEN		32
#define SECRET_HINT_LEN		4
#define CLIENT_ID_MAX_LEN	128

/*
 * Each active secret is one more hash to compare on every authentication;
 * two give rotation with overlap, ten leave room for several deployments.
 */
#define MAX_ACTIVE_SECRETS	10

static SPIPlanPtr check_plan = NULL;
static SPIPlanPtr lock_agent_plan = NULL;
static SPIPlanPtr count_active_plan = NULL;
static SPIPlanPtr insert_secret_plan = NULL;

/* the same error whether the agent is unknown, deleted or another tenant's */
static void
pg_attribute_noreturn()
agent_not_found(Datum agent_id)
{
	ereport(ERROR,
			errcode(ERRCODE_UNDEFINED_OBJECT),
			errmsg("agent does not exist"),
			errdetail("No agent with id \"%s\" is visible to role \"%s\".",
					  DatumGetCString(DirectFunctionCall1(uuid_out, agent_id)),
					  GetUserNameFromId(GetUserId(), false)));
}

static void
secret_hash(const char *secret, size_t len, unsigned char *out)
{
	unsigned int outlen = 0;

	if (EVP_Digest(secret, len, out, &outlen, EVP_sha256(), NULL) != 1 ||
		outlen != SECRET_HASH_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not compute SHA-256"),
				errdetail_internal("%s", agentidp_openssl_error()));
}

/*
 * Fill secret (SECRET_LEN + 1 bytes) with a fresh secret and hash with its
 * SHA-256.
 */
static void
generate_secret(char *secret, unsigned char *hash)
{
	unsigned char raw[SECRET_RANDOM_BYTES];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate random bytes for a client secret"),
				errdetail_internal("%s", agentidp_openssl_error()));
	memcpy(secret, SECRET_PREFIX, SECRET_PREFIX_LEN);
	agentidp_b64url_encode(raw, sizeof(raw), secret + SECRET_PREFIX_LEN);
	explicit_bzero(raw, sizeof(raw));
	secret_hash(secret, SECRET_LEN, hash);
}

/*
 * agentidp.create_client_secret(agent_id uuid, expires_in interval)
 *		RETURNS TABLE(client_id text, client_secret text)
 *
 * SECURITY INVOKER, so that row-level security decides which agents the
 * caller may touch: the agent is looked up and locked as the caller.  The
 * row is then written as the extension owner, because no role may insert
 * secret hashes of its own choosing: every secret comes from RAND_bytes().
 * The agent row lock serialises this with delete_agent() and with other
 * secrets of the same agent, so the active-secret limit holds.
 */
Datum
agentidp_create_client_secret(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[5];
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum		tenant_id;
	Datum		agent_id;
	char	   *client_id;
	char	   *status;
	int64		active;
	bool		isnull;
	int			level;
	AgentidpOwnerContext oc;
	char		secret[SECRET_LEN + 1];
	unsigned char hash[SECRET_HASH_LEN];
	bytea	   *hash_datum;
	Datum		values[2];
	bool		out_nulls[2] = {false, false};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("agent_id must not be null"));
	agent_id = PG_GETARG_DATUM(0);
	if (!PG_ARGISNULL(1))
	{
		Interval   *zero = palloc0(sizeof(Interval));

		if (DatumGetBool(DirectFunctionCall2(interval_le, PG_GETARG_DATUM(1),
											 IntervalPGetDatum(zero))))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("expires_in must be a positive interval"),
					errhint("Pass NULL for a secret that does not expire."));
	}

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	level = agentidp_pin_search_path();

	argtypes[0] = UUIDOID;
	args[0] = agent_id;
	(void) agentidp_run_plan(&lock_agent_plan,
							 "SELECT a.tenant_id, a.client_id, a.status, t.status "
							 "FROM agentidp.agents a "
							 "JOIN agentidp.tenants t ON t.tenant_id = a.tenant_id "
							 "WHERE a.agent_id = $1 AND a.status <> 'deleted' "
							 "FOR NO KEY UPDATE OF a",
							 1, argtypes, args, NULL, false, 1);
	if (SPI_processed == 0)
		agent_not_found(agent_id);
	tenant_id = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull),
								  false, sizeof(pg_uuid_t));
	client_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	if (strcmp(status, "active") != 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("tenant is suspended"),
				errdetail("The tenant of agent \"%s\" is suspended.",
						  DatumGetCString(DirectFunctionCall1(uuid_out, agent_id))));
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (strcmp(status, "active") != 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agent is suspended"),
				errdetail("Agent \"%s\" is suspended.",
						  DatumGetCString(DirectFunctionCall1(uuid_out, agent_id))),
				errhint("Reactivate it with agentidp.reactivate_agent() first."));

	/*
	 * Not read-only: the count must see secrets this transaction, or this
	 * very statement, has just created.
	 */
	argtypes[1] = UUIDOID;
	args[1] = agent_id;
	args[0] = tenant_id;
	(void) agentidp_run_plan(&count_active_plan,
							 "SELECT count(*) FROM agentidp.client_secrets "
							 "WHERE tenant_id = $1 AND agent_id = $2 "
							 "AND revoked_at IS NULL "
							 "AND (expires_at IS NULL OR expires_at > now())",
							 2, argtypes, args, NULL, false, 1);
	active = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	if (active >= MAX_ACTIVE_SECRETS)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("agent has too many active client secrets"),
				errdetail("An agent may have at most %d active client secrets.",
						  MAX_ACTIVE_SECRETS),
				errhint("Revoke one with agentidp.revoke_client_secret(client_id, secret_id) first."));
	AtEOXact_GUC(true, level);

	generate_secret(secret, hash);
	hash_datum = (bytea *) palloc(VARHDRSZ + SECRET_HASH_LEN);
	SET_VARSIZE(hash_datum, VARHDRSZ + SECRET_HASH_LEN);
	memcpy(VARDATA(hash_datum), hash, SECRET_HASH_LEN);
	explicit_bzero(hash, sizeof(hash));

	argtypes[2] = BYTEAOID;
	argtypes[3] = INTERVALOID;
	args[2] = PointerGetDatum(hash_datum);
	args[3] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[3] = PG_ARGISNULL(1) ? 'n' : ' ';

	argtypes[4] = TEXTOID;
	args[4] = CStringGetTextDatum(secret + SECRET_LEN - SECRET_HINT_LEN);

	agentidp_become_owner(&oc);
	(void) agentidp_run_plan(&insert_secret_plan,
							 "INSERT INTO agentidp.client_secrets "
							 "(tenant_id, agent_id, secret_hash, expires_at, hint) "
							 "VALUES ($1, $2, $3, now() + $4, $5)",
							 5, argtypes, args, nulls, false, 0);
	agentidp_restore_user(&oc);

	values[0] = CStringGetTextDatum(client_id);
	values[1] = PointerGetDatum(cstring_to_text_with_len(secret, SECRET_LEN));
	explicit_bzero(secret, sizeof(secret));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, out_nulls);
	explicit_bzero(VARDATA(DatumGetPointer(values[1])), SECRET_LEN);

	SPI_finish();
	return (Datum) 0;
}

/* one error for every failure, so that no failure tells more than another */
static void
pg_attribute_noreturn()
authentication_failed(void)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg("client authentication failed"),
			errhint("Check the client_id and client_secret; the secret may have been revoked or may have expired."));
}

/*
 * agentidp.check_client_secret(client_id text, client_secret text)
 *		RETURNS uuid
 *
 * The agent id when the secret is one of the client's current secrets and
 * both the agent and its tenant are active.  SECURITY DEFINER: callers may
 * not read secret hashes.  Every candidate hash is compared in full with
 * CRYPTO_memcmp, so timing says nothing about how much of a secret was
 * right.  The presented secret is hashed and compared once even when the
 * client is unknown; the index lookup itself still differs a little in time
 * between a known and an unknown client_id, which is public information
 * anyway (it appears in every access token).
 */
bool
agentidp_client_secret_matches(text *client_id, text *secret, pg_uuid_t *agent_id,
							   pg_uuid_t *secret_id)
{
	static const unsigned char dummy_hash[SECRET_HASH_LEN] = {0};
	unsigned char presented[SECRET_HASH_LEN];
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int			matched = 0;

	/* malformed input cannot match: no lookup, no hint about the client */
	if (client_id == NULL || secret == NULL ||
		VARSIZE_ANY_EXHDR(client_id) > CLIENT_ID_MAX_LEN ||
		VARSIZE_ANY_EXHDR(secret) != SECRET_LEN)
		return false;

	secret_hash(VARDATA_ANY(secret), SECRET_LEN, presented);

	args[0] = PointerGetDatum(client_id);
	(void) agentidp_run_plan(&check_plan,
							 "SELECT s.agent_id, s.secret_hash, s.secret_id "
							 "FROM agentidp.agents a "
							 "JOIN agentidp.tenants t ON t.tenant_id = a.tenant_id "
							 "JOIN agentidp.client_secrets s "
							 "  ON s.tenant_id = a.tenant_id AND s.agent_id = a.agent_id "
							 "WHERE a.client_id = $1 "
							 "  AND a.status = 'active' AND t.status = 'active' "
							 "  AND s.revoked_at IS NULL "
							 "  AND (s.expires_at IS NULL OR s.expires_at > now())",
							 1, argtypes, args, NULL, true, 0);

	/* an unknown client still costs one comparison, like a known one */
	if (SPI_processed == 0)
		(void) CRYPTO_memcmp(presented, dummy_hash, SECRET_HASH_LEN);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bytea	   *stored;

		stored = DatumGetByteaPP(SPI_getbinval(tup, desc, 2, &isnull));
		if (isnull || VARSIZE_ANY_EXHDR(stored) != SECRET_HASH_LEN)
			continue;
		if (CRYPTO_memcmp(presented, VARDATA_ANY(stored), SECRET_HASH_LEN) == 0)
		{
			if (!matched)
			{
				memcpy(agent_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)),
					   sizeof(pg_uuid_t));
				if (secret_id != NULL)
					memcpy(secret_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)),
						   sizeof(pg_uuid_t));
			}
			matched = 1;
		}
	}
	explicit_bzero(presented, sizeof(presented));
	return matched;
}

void
agentidp_client_authentication_failed(void)
{
	authentication_failed();
}

Datum
agentidp_check_client_secret(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *agent_id = palloc(sizeof(pg_uuid_t));
	bool		ok;

	SPI_connect();
	ok = agentidp_client_secret_matches(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
										PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
										agent_id, NULL);
	SPI_finish();
	if (!ok)
		authentication_failed();
	PG_RETURN_UUID_P(agent_id);
}
