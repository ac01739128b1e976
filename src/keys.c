/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Each tenant's signing keys: generation, encryption at rest under a
 *	  key-encryption key (KEK) that is in no table, rotation, the JWKS, and
 *	  signing with the active key through a per-backend cache of decrypted
 *	  keys.  JWS itself is jose.c; JWK import and export are jwk.c.
 *
 *	  The KEK file (agentidp.kek_file) holds lines "<kek_id> <base64url of
 *	  32 bytes>"; the first line wraps new keys, every line can unwrap, so a
 *	  new KEK goes first and agentidp.rewrap_keys() moves old keys over.
 *	  A private JWK is sealed with AES-256-GCM, a fresh 96-bit IV each time,
 *	  and tenant_id || kid as associated data, so a wrapped key copied to
 *	  another row or tenant does not open.
 *
 *	  A key's state follows from its times, so nothing has to run for a
 *	  rotation to complete: a key is "next" until activates_at, "active"
 *	  while it is the newest activated key, then "retired", and it leaves the
 *	  JWKS once agentidp.max_token_lifetime has passed since a newer key
 *	  took over (no token it signed can still be valid).
 *
 * IDENTIFICATION
 *	  src/keys.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "agentidp.h"
#include "jose.h"
#include "jwk.h"
#include "keys.h"

PG_FUNCTION_INFO_V1(agentidp_rotate_signing_key);
PG_FUNCTION_INFO_V1(agentidp_rewrap_keys);
PG_FUNCTION_INFO_V1(agentidp_aes_gcm_open);

#define KEK_LEN		32
#define IV_LEN		12
#define TAG_LEN		16
#define MAX_KEKS	8

typedef struct Kek
{
	char		id[64];
	unsigned char key[KEK_LEN];
} Kek;

/*
 * Read the KEK file.  It must be a regular file that only its owner can
 * read or write, like the server's own key files.  Returns the number of
 * KEKs; keks[0] is the one that wraps.  Callers cleanse keks when done.
 */
static int
load_keks(Kek *keks)
{
	FILE	   *f;
	struct stat st;
	char		line[256];
	int			n = 0;

	if (agentidp_kek_file == NULL || agentidp_kek_file[0] == '\0')
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agentidp.kek_file is not set"),
				errhint("Set agentidp.kek_file to a file holding the key-encryption key; see docs/keys.md."));
	if (stat(agentidp_kek_file, &st) != 0 || !S_ISREG(st.st_mode))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("could not read the key-encryption key file"),
				errdetail("agentidp.kek_file does not name a regular file."));
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("the key-encryption key file is accessible to other users"),
				errhint("Run chmod 0600 on it."));

	f = AllocateFile(agentidp_kek_file, "r");
	if (f == NULL)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not open the key-encryption key file: %m"));
	while (n < MAX_KEKS && fgets(line, sizeof(line), f) != NULL)
	{
		char	   *id = strtok(line, " \t\r\n");
		char	   *b64 = id ? strtok(NULL, " \t\r\n") : NULL;
		unsigned char raw[KEK_LEN + 3];
		size_t		rawlen = 0;

		if (id == NULL || id[0] == '#')
			continue;
		if (b64 == NULL || strlen(id) >= sizeof(keks[n].id) ||
			strlen(b64) != AGENTIDP_B64URL_LEN(KEK_LEN) ||
			!agentidp_b64url_decode(b64, strlen(b64), raw, &rawlen) ||
			rawlen != KEK_LEN)
		{
			explicit_bzero(line, sizeof(line));
			explicit_bzero(raw, sizeof(raw));
			explicit_bzero(keks, sizeof(Kek) * n);
			FreeFile(f);
			ereport(ERROR,
					errcode(ERRCODE_CONFIG_FILE_ERROR),
					errmsg("malformed line in the key-encryption key file"),
					errdetail("Each line is a key id and 32 bytes in base64url, separated by a space."));
		}
		strlcpy(keks[n].id, id, sizeof(keks[n].id));
		memcpy(keks[n].key, raw, KEK_LEN);
		explicit_bzero(raw, sizeof(raw));
		n++;
	}
	explicit_bzero(line, sizeof(line));
	FreeFile(f);
	if (n == 0)
		ereport(ERROR,
				errcode(ERRCODE_CONFIG_FILE_ERROR),
				errmsg("the key-encryption key file holds no key"));
	return n;
}

/*
 * AES-256-GCM, one call each way.  seal writes iv || ciphertext || tag.
 * open returns false when the tag does not match (wrong key, wrong
 * associated data, or tampering).  Both free their context on every path.
 */
static bool
gcm(bool encrypt, const unsigned char *key, const unsigned char *iv,
	const unsigned char *aad, int aadlen, const unsigned char *in, int inlen,
	unsigned char *out, unsigned char *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			len = 0;
	bool		ok;

	ok = ctx != NULL &&
		EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, IV_LEN, NULL) == 1 &&
		EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, encrypt) == 1 &&
		(aadlen == 0 || EVP_CipherUpdate(ctx, NULL, &len, aad, aadlen) == 1) &&
		(inlen == 0 || EVP_CipherUpdate(ctx, out, &len, in, inlen) == 1);
	if (ok && !encrypt)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1;
	if (ok)
		ok = EVP_CipherFinal_ex(ctx, out + len, &len) == 1;
	if (ok && encrypt)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
	EVP_CIPHER_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

/* tenant_id (16 bytes) || kid: binds a wrapped key to its row */
static int
make_aad(const pg_uuid_t *tenant_id, const char *kid, unsigned char *aad, int size)
{
	int			kidlen = strlen(kid);

	if (UUID_LEN + kidlen > size)
		elog(ERROR, "kid too long for associated data");
	memcpy(aad, tenant_id->data, UUID_LEN);
	memcpy(aad + UUID_LEN, kid, kidlen);
	return UUID_LEN + kidlen;
}

/*
 * Seal plaintext under kek; returns a palloc'd bytea.  what names the
 * kind of secret in errors ("signing key").
 */
static bytea *
wrap(const Kek *kek, const pg_uuid_t *tenant_id, const char *kid,
	 const unsigned char *plain, int plainlen, const char *what)
{
	bytea	   *out = palloc(VARHDRSZ + IV_LEN + plainlen + TAG_LEN);
	unsigned char *p = (unsigned char *) VARDATA(out);
	unsigned char aad[UUID_LEN + 256];
	int			aadlen = make_aad(tenant_id, kid, aad, sizeof(aad));

	SET_VARSIZE(out, VARHDRSZ + IV_LEN + plainlen + TAG_LEN);
	if (RAND_bytes(p, IV_LEN) != 1 ||
		!gcm(true, kek->key, p, aad, aadlen, plain, plainlen, p + IV_LEN,
			 p + IV_LEN + plainlen))
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not encrypt a %s", what),
				errdetail_internal("%s", agentidp_openssl_error()));
	return out;
}

/* open a wrapped key with the KEK named kek_id; the result is cleansed by the caller */
static char *
unwrap(const pg_uuid_t *tenant_id, const char *kid, const char *kek_id,
	   const bytea *wrapped, int *plainlen, const char *what)
{
	Kek			keks[MAX_KEKS];
	int			n = load_keks(keks);
	const Kek  *kek = NULL;
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(wrapped);
	int			len = VARSIZE_ANY_EXHDR(wrapped) - IV_LEN - TAG_LEN;
	unsigned char aad[UUID_LEN + 256];
	int			aadlen = make_aad(tenant_id, kid, aad, sizeof(aad));
	char	   *plain;
	bool		ok;

	for (int i = 0; i < n && kek == NULL; i++)
		if (strcmp(keks[i].id, kek_id) == 0)
			kek = &keks[i];
	if (kek == NULL || len <= 0)
	{
		explicit_bzero(keks, sizeof(keks));
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot decrypt %s \"%s\"", what, kid),
				errdetail(kek == NULL ?
						  "The key-encryption key \"%s\" is not in agentidp.kek_file." :
						  "The stored key is truncated.", kek_id));
	}
	plain = palloc(len + 1);
	ok = gcm(false, kek->key, p, aad, aadlen, p + IV_LEN, len,
			 (unsigned char *) plain, (unsigned char *) p + IV_LEN + len);
	explicit_bzero(keks, sizeof(keks));
	if (!ok)
	{
		explicit_bzero(plain, len);
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("%s \"%s\" does not decrypt", what, kid),
				errdetail("The stored key was altered or moved from another row, or the key-encryption key is wrong."));
	}
	plain[len] = '\0';
	*plainlen = len;
	return plain;
}

/*
 * Seal a secret of another part (a webhook secret) as signing keys are
 * sealed: under the first KEK, bound to the tenant and to a label naming
 * its row.  *kek_id gets the KEK's id (palloc'd), to store beside the
 * sealed bytes.
 */
bytea *
agentidp_seal_secret(const pg_uuid_t *tenant_id, const char *label, const char *what,
					 const unsigned char *plain, int plainlen, char **kek_id)
{
	Kek			keks[MAX_KEKS];
	bytea	   *volatile sealed = NULL;

	(void) load_keks(keks);
	PG_TRY();
	{
		sealed = wrap(&keks[0], tenant_id, label, plain, plainlen, what);
		*kek_id = pstrdup(keks[0].id);
	}
	PG_FINALLY();
	{
		explicit_bzero(keks, sizeof(keks));
	}
	PG_END_TRY();
	return sealed;
}

/* the plaintext of a sealed secret (palloc'd, cleansed by the caller) */
char *
agentidp_open_secret(const pg_uuid_t *tenant_id, const char *label, const char *what,
					 const char *kek_id, const bytea *sealed, int *plainlen)
{
	return unwrap(tenant_id, label, kek_id, sealed, plainlen, what);
}

/*----------
 * agentidp.rotate_signing_key(tenant_id uuid, alg text) RETURNS text
 *
 * Generates a key for a tenant the caller administers and returns its kid
 * (the RFC 7638 thumbprint).  The tenant's first key is active at once;
 * later ones are published first and take over after
 * agentidp.key_prepublish.  The tenant is looked up and locked as the
 * caller (row-level security decides); the row is written as the owner,
 * since no role may write key material.
 *----------
 */
Datum
agentidp_rotate_signing_key(PG_FUNCTION_ARGS)
{
	Datum		tenant_id;
	char	   *alg;
	Jsonb	   *priv;
	AgentidpJwk *volatile key = NULL;
	Jsonb	   *pub = NULL;
	StringInfoData plain;
	bytea	   *volatile wrapped = NULL;
	Kek			keks[MAX_KEKS];
	char	   *kid = NULL;
	int			level;
	AgentidpOwnerContext oc;
	Oid			argtypes[7] = {UUIDOID, TEXTOID, TEXTOID, JSONBOID, BYTEAOID, TEXTOID, INT4OID};
	Datum		args[7];
	MemoryContext caller_cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("tenant_id and alg must not be null"));
	tenant_id = PG_GETARG_DATUM(0);
	alg = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strcmp(alg, "HS256") == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a tenant's signing key must be asymmetric"),
				errhint("Use ES256, RS256, PS256 or EdDSA; HS256 keys cannot be published in a JWKS."));

	SPI_connect();
	level = agentidp_pin_search_path();
	args[0] = tenant_id;
	if (SPI_execute_with_args("SELECT 1 FROM agentidp.tenants "
							  "WHERE tenant_id = $1 AND status = 'active' FOR NO KEY UPDATE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("tenant does not exist"),
				errdetail("No active tenant with id \"%s\" is visible to role \"%s\".",
						  DatumGetCString(DirectFunctionCall1(uuid_out, tenant_id)),
						  GetUserNameFromId(GetUserId(), false)));
	AtEOXact_GUC(true, level);

	priv = agentidp_jwk_generate(alg);
	initStringInfo(&plain);
	PG_TRY();
	{
		(void) load_keks(keks);
		key = agentidp_jwk_import(priv, true);
		/* the result outlives SPI_finish(), which frees SPI's memory */
		kid = MemoryContextStrdup(caller_cxt, key->kid);
		pub = agentidp_jwk_export(key, false);
		agentidp_json_compact(&plain, priv);
		wrapped = wrap(&keks[0], DatumGetUUIDP(tenant_id), kid,
					   (unsigned char *) plain.data, plain.len, "signing key");
	}
	PG_FINALLY();
	{
		agentidp_jwk_free(key);
		explicit_bzero(plain.data, plain.len);
		explicit_bzero(VARDATA(priv), VARSIZE(priv) - VARHDRSZ);
		/* on error only: on success keks[0].id is still needed below */
		if (wrapped == NULL)
			explicit_bzero(keks, sizeof(keks));
	}
	PG_END_TRY();

	args[1] = CStringGetTextDatum(kid);
	args[2] = CStringGetTextDatum(alg);
	args[3] = JsonbPGetDatum(pub);
	args[4] = PointerGetDatum(wrapped);
	args[5] = CStringGetTextDatum(keks[0].id);
	explicit_bzero(keks, sizeof(keks));
	args[6] = Int32GetDatum(agentidp_key_prepublish);

	agentidp_become_owner(&oc);
	/* the first key is active at once; later ones wait to be published */
	if (SPI_execute_with_args("INSERT INTO agentidp.signing_keys "
							  "(tenant_id, kid, alg, public_jwk, wrapped_key, kek_id, activates_at) "
							  "SELECT $1, $2, $3, $4, $5, $6, "
							  "  CASE WHEN EXISTS (SELECT FROM agentidp.signing_keys "
							  "                    WHERE tenant_id = $1) "
							  "       THEN now() + make_interval(secs => $7) ELSE now() END",
							  7, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store signing key");
	agentidp_restore_user(&oc);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(kid));
}

/* rewrap every key not under kek; returns how many moved */
static int
rewrap_all(const Kek *kek)
{
	Oid			argtypes[4] = {BYTEAOID, TEXTOID, UUIDOID, TEXTOID};
	Datum		current = CStringGetTextDatum(kek->id);
	SPITupleTable *tt;
	uint64		n;

	if (SPI_execute_with_args("SELECT tenant_id, kid, kek_id, wrapped_key FROM agentidp.signing_keys "
							  "WHERE kek_id <> $1 FOR UPDATE",
							  1, &argtypes[1], &current, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed");
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		pg_uuid_t  *tenant = DatumGetUUIDP(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *kid = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		char	   *kek_id = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
		bytea	   *old = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull));
		int			len;
		char	   *plain = unwrap(tenant, kid, kek_id, old, &len, "signing key");
		bytea	   *volatile fresh = NULL;
		Datum		args[4];

		PG_TRY();
		{
			fresh = wrap(kek, tenant, kid, (unsigned char *) plain, len, "signing key");
		}
		PG_FINALLY();
		{
			explicit_bzero(plain, len);
		}
		PG_END_TRY();
		args[0] = PointerGetDatum(fresh);
		args[1] = current;
		args[2] = UUIDPGetDatum(tenant);
		args[3] = CStringGetTextDatum(kid);
		if (SPI_execute_with_args("UPDATE agentidp.signing_keys SET wrapped_key = $1, kek_id = $2 "
								  "WHERE tenant_id = $3 AND kid = $4",
								  4, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not rewrap signing key");
	}
	return (int) n;
}

/*----------
 * agentidp.rewrap_keys() RETURNS integer
 *
 * Re-encrypts every signing key under the first KEK of agentidp.kek_file;
 * returns how many keys moved.  Superusers only.
 *----------
 */
Datum
agentidp_rewrap_keys(PG_FUNCTION_ARGS)
{
	Kek			keks[MAX_KEKS];
	int			moved = 0;

	(void) load_keks(keks);
	SPI_connect();
	PG_TRY();
	{
		moved = rewrap_all(&keks[0]);
	}
	PG_FINALLY();
	{
		/* the KEKs leave this stack frame cleansed, on error too */
		explicit_bzero(keks, sizeof(keks));
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT32(moved);
}

/*
 * agentidp._aes_gcm_open(key bytea, iv bytea, aad bytea, ct bytea,
 *						  tag bytea) RETURNS bytea
 *
 * The AES-256-GCM open of the key wrap, for the Wycheproof vectors: the
 * plaintext, or NULL when the tag does not match.  Superusers only.
 */
Datum
agentidp_aes_gcm_open(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	bytea	   *iv = PG_GETARG_BYTEA_PP(1);
	bytea	   *aad = PG_GETARG_BYTEA_PP(2);
	bytea	   *ct = PG_GETARG_BYTEA_PP(3);
	bytea	   *tag = PG_GETARG_BYTEA_PP(4);
	int			len = VARSIZE_ANY_EXHDR(ct);
	bytea	   *out;

	if (VARSIZE_ANY_EXHDR(key) != KEK_LEN || VARSIZE_ANY_EXHDR(iv) != IV_LEN ||
		VARSIZE_ANY_EXHDR(tag) != TAG_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("the key wrap uses 32-byte keys, 12-byte IVs and 16-byte tags"));
	out = palloc(VARHDRSZ + len + 16);
	SET_VARSIZE(out, VARHDRSZ + len);
	if (!gcm(false, (unsigned char *) VARDATA_ANY(key), (unsigned char *) VARDATA_ANY(iv),
			 (unsigned char *) VARDATA_ANY(aad), VARSIZE_ANY_EXHDR(aad),
			 (unsigned char *) VARDATA_ANY(ct), len, (unsigned char *) VARDATA(out),
			 (unsigned char *) VARDATA_ANY(tag)))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(out);
}

/*
 * Decrypted keys, cached per backend by (tenant, kid): a kid names
 * immutable key material, so an entry never goes stale; it only stops
 * being used when its key stops being active.  A small table; the least
 * recently used entry goes first, its key freed and cleansed.
 */
#define KEY_CACHE_SIZE 32

typedef struct CachedKey
{
	pg_uuid_t	tenant;
	char		kid[64];
	MemoryContext cxt;			/* holds jwk and signer; deleted on eviction */
	AgentidpJwk *jwk;
	AgentidpSigner *signer;
	uint64		used;
} CachedKey;

static CachedKey key_cache[KEY_CACHE_SIZE];
static uint64 key_cache_clock = 0;
static SPIPlanPtr active_key_plan = NULL;

/*
 * A signer for the active key of a tenant, decrypted: the cached one when
 * there is one.  It belongs to the cache; the caller must not free it.
 */
AgentidpSigner *
agentidp_active_signer(const pg_uuid_t *tenant_id)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1];
	char	   *kid;
	char	   *kek_id;
	bytea	   *wrapped;
	bool		isnull;
	CachedKey  *slot = NULL;
	char	   *plain;
	int			len;
	Jsonb	   *jwk;
	MemoryContext old;
	AgentidpOwnerContext oc;

	args[0] = UUIDPGetDatum(tenant_id);
	SPI_connect();
	agentidp_become_owner(&oc);
	(void) agentidp_run_plan(&active_key_plan,
							 "SELECT kid, kek_id, wrapped_key FROM agentidp.signing_keys "
							 "WHERE tenant_id = $1 AND activates_at <= now() "
							 "ORDER BY activates_at DESC, kid DESC LIMIT 1",
							 1, argtypes, args, NULL, true, 1);
	agentidp_restore_user(&oc);
	if (SPI_processed == 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("tenant has no active signing key"),
				errhint("Create one with agentidp.rotate_signing_key()."));
	kid = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	for (int i = 0; i < KEY_CACHE_SIZE; i++)
		if (key_cache[i].jwk != NULL &&
			memcmp(&key_cache[i].tenant, tenant_id, sizeof(pg_uuid_t)) == 0 &&
			strcmp(key_cache[i].kid, kid) == 0)
		{
			key_cache[i].used = ++key_cache_clock;
			SPI_finish();
			return key_cache[i].signer;
		}

	/* a miss: decrypt and import into the oldest slot */
	kek_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	wrapped = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	plain = unwrap(tenant_id, kid, kek_id, wrapped, &len, "signing key");
	PG_TRY();
	{
		jwk = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(plain)));
	}
	PG_FINALLY();
	{
		explicit_bzero(plain, len);
	}
	PG_END_TRY();

	for (int i = 0; i < KEY_CACHE_SIZE; i++)
		if (slot == NULL || key_cache[i].used < slot->used)
			slot = &key_cache[i];
	if (slot->jwk != NULL)
		agentidp_jwk_free(slot->jwk);
	slot->jwk = NULL;
	slot->signer = NULL;
	if (slot->cxt != NULL)
		MemoryContextDelete(slot->cxt);
	slot->cxt = AllocSetContextCreate(TopMemoryContext, "agentidp signing key",
									  ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(slot->cxt);
	PG_TRY();
	{
		slot->jwk = agentidp_jwk_import(jwk, true);
		slot->signer = agentidp_signer_create(slot->jwk, slot->cxt);
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(old);
		explicit_bzero(VARDATA(jwk), VARSIZE(jwk) - VARHDRSZ);
	}
	PG_END_TRY();
	memcpy(&slot->tenant, tenant_id, sizeof(pg_uuid_t));
	strlcpy(slot->kid, kid, sizeof(slot->kid));
	slot->used = ++key_cache_clock;
	SPI_finish();
	return slot->signer;
}

/*
 * agentidp._sign_with_tenant_key(tenant_id uuid, payload jsonb,
 *								  header jsonb) RETURNS text
 *
 * A JWS signed with the tenant's active key, for the token service.  Not
 * granted to anyone: signing arbitrary payloads is minting tokens.
 */
PG_FUNCTION_INFO_V1(agentidp_sign_with_tenant_key);
Datum
agentidp_sign_with_tenant_key(PG_FUNCTION_ARGS)
{
	AgentidpSigner *signer;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("tenant_id and payload must not be null"));
	if (!JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(1)) ||
		(!PG_ARGISNULL(2) && !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(2))))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("JWS payload and header must be JSON objects"));
	signer = agentidp_active_signer(PG_GETARG_UUID_P(0));
	PG_RETURN_TEXT_P(agentidp_signer_sign(signer, PG_GETARG_JSONB_P(1),
										  PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2)));
}

/*
 * agentidp._max_token_lifetime() RETURNS interval
 *
 * The setting, read from the loaded library: without preloading, a session
 * could otherwise give current_setting() a placeholder value of its own.
 */
PG_FUNCTION_INFO_V1(agentidp_max_token_lifetime_sql);
Datum
agentidp_max_token_lifetime_sql(PG_FUNCTION_ARGS)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = (int64) agentidp_max_token_lifetime * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(iv);
}
