/*-------------------------------------------------------------------------
 *
 * jose.c
 *	  JWS compact serialization: base64url (strict on decode), sign and
 *	  verify for ES256, RS256, PS256, EdDSA and HS256, and the SQL functions
 *	  jws_sign, jws_verify, jwk_thumbprint and generate_jwk.  Pure
 *	  functions: no table access, no GUCs.  Strict JSON is jose_json.c;
 *	  JWK import and export are jwk.c; stored keys will be keys.c.
 *
 * IDENTIFICATION
 *	  src/jose.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "agentidp.h"
#include "jose.h"
#include "jwk.h"

static const char b64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * dst must have room for AGENTIDP_B64URL_LEN(len) + 1 bytes; the result is
 * NUL-terminated.
 */
void
agentidp_b64url_encode(const unsigned char *src, size_t len, char *dst)
{
	size_t		i = 0;
	char	   *p = dst;

	for (; i + 2 < len; i += 3)
	{
		uint32		v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];

		*p++ = b64url_alphabet[(v >> 18) & 0x3f];
		*p++ = b64url_alphabet[(v >> 12) & 0x3f];
		*p++ = b64url_alphabet[(v >> 6) & 0x3f];
		*p++ = b64url_alphabet[v & 0x3f];
	}
	if (len - i == 1)
	{
		uint32		v = src[i] << 16;

		*p++ = b64url_alphabet[(v >> 18) & 0x3f];
		*p++ = b64url_alphabet[(v >> 12) & 0x3f];
	}
	else if (len - i == 2)
	{
		uint32		v = (src[i] << 16) | (src[i + 1] << 8);

		*p++ = b64url_alphabet[(v >> 18) & 0x3f];
		*p++ = b64url_alphabet[(v >> 12) & 0x3f];
		*p++ = b64url_alphabet[(v >> 6) & 0x3f];
	}
	*p = '\0';
}

/* the value of each base64url character, -1 for every other byte */
static const int8 b64url_values[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/*
 * Decode unpadded base64url.  Rejects padding, characters outside the
 * alphabet, an impossible length (len % 4 == 1) and non-zero trailing bits,
 * so that each byte string has exactly one accepted encoding (RFC 7515
 * section 2 forbids padding; canonical input keeps signatures unambiguous).
 * dst needs room for len * 3 / 4 bytes.
 */
bool
agentidp_b64url_decode(const char *src, size_t len, unsigned char *dst,
					   size_t *dstlen)
{
	uint32		acc = 0;
	int			bits = 0;
	size_t		n = 0;

	if (len % 4 == 1)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		int			v = b64url_values[(unsigned char) src[i]];

		if (v < 0)
			return false;
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			dst[n++] = (acc >> bits) & 0xff;
		}
	}
	/* leftover bits (2 or 4) must be zero in a canonical encoding */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return false;
	*dstlen = n;
	return true;
}

/*-------------------------------------------------------------------------
 * JWS compact serialization (RFC 7515) for ES256, RS256, PS256, EdDSA and
 * HS256 (RFC 7518, RFC 8037), verified as RFC 8725 asks: the caller names
 * the algorithms it accepts and the keys it trusts; the header only picks
 * among them.
 *-------------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(agentidp_jws_sign);
PG_FUNCTION_INFO_V1(agentidp_jws_verify);
PG_FUNCTION_INFO_V1(agentidp_verify_signature);

typedef enum JwsAlg
{
	JWS_ES256,
	JWS_RS256,
	JWS_PS256,
	JWS_EDDSA,
	JWS_HS256,
	JWS_UNKNOWN
} JwsAlg;

static const struct
{
	const char *name;
	AgentidpKty kty;
} jws_algs[] = {
	[JWS_ES256] = {"ES256", AGENTIDP_KTY_EC},
	[JWS_RS256] = {"RS256", AGENTIDP_KTY_RSA},
	[JWS_PS256] = {"PS256", AGENTIDP_KTY_RSA},
	[JWS_EDDSA] = {"EdDSA", AGENTIDP_KTY_OKP},
	[JWS_HS256] = {"HS256", AGENTIDP_KTY_OCT},
};

/* the order n of P-256, big-endian: ECDSA needs 1 <= r, s <= n - 1 */
static const unsigned char p256_order[32] = {
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
	0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51
};

/* fetched once per backend: implicit fetches on every call cost time */
static EVP_MD *sha256_md = NULL;

static const EVP_MD *
sha256(void)
{
	if (sha256_md == NULL)
	{
		sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
		if (sha256_md == NULL)
			ereport(ERROR,
					errcode(ERRCODE_INTERNAL_ERROR),
					errmsg("could not fetch SHA-256"),
					errdetail_internal("%s", agentidp_openssl_error()));
	}
	return sha256_md;
}

static JwsAlg
jws_alg(const char *name)
{
	for (int i = 0; i < JWS_UNKNOWN; i++)
		if (strcmp(jws_algs[i].name, name) == 0)
			return (JwsAlg) i;
	return JWS_UNKNOWN;
}

/* a key serves one algorithm family, and its own "alg" when it names one */
static bool
alg_fits_key(JwsAlg alg, const AgentidpJwk *key)
{
	return jws_algs[alg].kty == key->kty &&
		(key->alg == NULL || strcmp(key->alg, jws_algs[alg].name) == 0);
}

static size_t
signature_length(JwsAlg alg, const AgentidpJwk *key)
{
	switch (alg)
	{
		case JWS_ES256:
		case JWS_EDDSA:
			return 64;
		case JWS_HS256:
			return 32;
		default:
			return key->rsa_bytes;
	}
}

/*
 * kid and alg come from the token: echo them in a message only when short
 * and printable, so that no control character or long blob reaches a log.
 */
static const char *
printable_or_null(const char *s)
{
	size_t		len = strlen(s);

	if (len > 64)
		return NULL;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return NULL;
	return s;
}

static bool
all_zero(const unsigned char *p, size_t n)
{
	unsigned char acc = 0;

	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/* DER INTEGER of a 32-byte big-endian unsigned value; returns its length */
static int
der_integer(const unsigned char *v, unsigned char *out)
{
	int			skip = 0;
	int			n;

	while (skip < 31 && v[skip] == 0)
		skip++;
	n = 32 - skip;
	out[0] = 0x02;
	if (v[skip] & 0x80)
	{
		out[1] = n + 1;
		out[2] = 0x00;
		memcpy(out + 3, v + skip, n);
		return n + 3;
	}
	out[1] = n;
	memcpy(out + 2, v + skip, n);
	return n + 2;
}

/*
 * The JWS form of an ES256 signature is r || s, 32 bytes each (RFC 7518
 * section 3.4); OpenSSL wants DER.  Range-check r and s first, so that
 * r = s = 0 (CVE-2022-21449) never reaches a verifier.  out holds 72 bytes.
 */
static int
es256_to_der(const unsigned char *rs, unsigned char *out)
{
	unsigned char body[70];
	int			len;

	for (int i = 0; i < 2; i++)
	{
		const unsigned char *v = rs + 32 * i;

		if (all_zero(v, 32) || memcmp(v, p256_order, 32) >= 0)
			return -1;
	}
	len = der_integer(rs, body);
	len += der_integer(rs + 32, body + len);
	out[0] = 0x30;
	out[1] = len;
	memcpy(out + 2, body, len);
	return len + 2;
}

/*
 * An imported key with the OpenSSL contexts it has needed so far.  ES256,
 * RS256 and PS256 hash with SHA-256 first and then run EVP_PKEY_verify or
 * EVP_PKEY_sign on a context initialised once per key and algorithm:
 * EVP_DigestVerifyInit on every call fetches the algorithm again and costs
 * a fifth of an RSA verification.
 */
typedef struct JoseKey
{
	AgentidpJwk *jwk;
	EVP_PKEY_CTX *ctx[2];		/* [0] verify, [1] sign */
	JwsAlg		ctx_alg[2];
} JoseKey;

static void
josekey_free(JoseKey *k)
{
	for (int i = 0; i < 2; i++)
	{
		EVP_PKEY_CTX_free(k->ctx[i]);
		k->ctx[i] = NULL;
	}
	agentidp_jwk_free(k->jwk);
}

/* the context for alg, made and initialised on first use */
static EVP_PKEY_CTX *
prehash_ctx(JoseKey *k, JwsAlg alg, bool sign)
{
	EVP_PKEY_CTX *ctx = k->ctx[sign];
	bool		ok;

	if (ctx != NULL && k->ctx_alg[sign] == alg)
		return ctx;
	EVP_PKEY_CTX_free(ctx);
	k->ctx[sign] = NULL;

	ctx = EVP_PKEY_CTX_new(k->jwk->pkey, NULL);
	ok = ctx != NULL &&
		(sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) == 1 &&
		EVP_PKEY_CTX_set_signature_md(ctx, sha256()) == 1;
	if (ok && alg == JWS_PS256)
		ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
			EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, sha256()) == 1 &&
			EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) == 1;
	else if (ok && alg == JWS_RS256)
		ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1;
	if (!ok)
	{
		EVP_PKEY_CTX_free(ctx);
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not initialize a signature operation"),
				errdetail_internal("%s", agentidp_openssl_error()));
	}
	k->ctx[sign] = ctx;
	k->ctx_alg[sign] = alg;
	return ctx;
}

/* HMAC-SHA-256 of msg under an oct key, into 32 bytes at out */
static void
hmac_sha256(const AgentidpJwk *key, const unsigned char *msg, size_t msglen,
			unsigned char *out)
{
	unsigned int len = 0;

	if (HMAC(sha256(), key->secret, key->secret_len, msg, msglen, out, &len) == NULL ||
		len != 32)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not compute HMAC-SHA-256"),
				errdetail_internal("%s", agentidp_openssl_error()));
}

static void
sha256_digest(const unsigned char *msg, size_t msglen, unsigned char *out)
{
	if (EVP_Digest(msg, msglen, out, NULL, sha256(), NULL) != 1)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not compute SHA-256"),
				errdetail_internal("%s", agentidp_openssl_error()));
}

/*
 * Verify sig over msg with key under alg.  der: sig is an ASN.1 ECDSA
 * signature rather than the JWS form (only for the test vectors of that
 * encoding).  Returns false for any mismatch; OpenSSL objects are freed
 * before any error is raised.
 */
static bool
verify_raw(JwsAlg alg, JoseKey *k, const unsigned char *msg,
		   size_t msglen, const unsigned char *sig, size_t siglen, bool der)
{
	const AgentidpJwk *key = k->jwk;
	unsigned char der_sig[72];
	unsigned char digest[32];
	bool		ok;

	if (!der && siglen != signature_length(alg, key))
		return false;

	if (alg == JWS_HS256)
	{
		unsigned char mac[32];

		hmac_sha256(key, msg, msglen, mac);
		/* the full tag, never a prefix the token chose the length of */
		ok = (siglen == sizeof(mac) && CRYPTO_memcmp(mac, sig, sizeof(mac)) == 0);
		OPENSSL_cleanse(mac, sizeof(mac));
		return ok;
	}

	if (alg == JWS_EDDSA)
	{
		/* Ed25519 signs the message itself, so no context is kept */
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();

		if (ctx == NULL ||
			EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key->pkey) != 1)
		{
			EVP_MD_CTX_free(ctx);
			ereport(ERROR,
					errcode(ERRCODE_INTERNAL_ERROR),
					errmsg("could not initialize signature verification"),
					errdetail_internal("%s", agentidp_openssl_error()));
		}
		ok = EVP_DigestVerify(ctx, sig, siglen, msg, msglen) == 1;
		EVP_MD_CTX_free(ctx);
		ERR_clear_error();
		return ok;
	}

	if (alg == JWS_ES256 && !der)
	{
		int			n = es256_to_der(sig, der_sig);

		if (n < 0)
			return false;
		sig = der_sig;
		siglen = n;
	}
	sha256_digest(msg, msglen, digest);
	ok = EVP_PKEY_verify(prehash_ctx(k, alg, false), sig, siglen,
						 digest, sizeof(digest)) == 1;
	/* a failed verification leaves errors on OpenSSL's queue */
	ERR_clear_error();
	return ok;
}

/*
 * Sign msg; returns the JWS form of the signature (palloc'd) and its
 * length in *siglen.
 */
static unsigned char *
sign_raw(JwsAlg alg, JoseKey *k, const unsigned char *msg,
		 size_t msglen, size_t *siglen)
{
	const AgentidpJwk *key = k->jwk;
	unsigned char *out;
	size_t		len = 0;
	bool		ok;

	if (alg == JWS_HS256)
	{
		out = palloc(32);
		hmac_sha256(key, msg, msglen, out);
		*siglen = 32;
		return out;
	}

	if (alg == JWS_EDDSA)
	{
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();

		len = 64;
		out = palloc(len);
		ok = ctx != NULL &&
			EVP_DigestSignInit(ctx, NULL, NULL, NULL, key->pkey) == 1 &&
			EVP_DigestSign(ctx, out, &len, msg, msglen) == 1;
		EVP_MD_CTX_free(ctx);
	}
	else
	{
		unsigned char digest[32];
		EVP_PKEY_CTX *ctx = prehash_ctx(k, alg, true);

		sha256_digest(msg, msglen, digest);
		ok = EVP_PKEY_sign(ctx, NULL, &len, digest, sizeof(digest)) == 1;
		out = ok ? palloc(len) : NULL;
		if (ok)
			ok = EVP_PKEY_sign(ctx, out, &len, digest, sizeof(digest)) == 1;
	}
	if (!ok)
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not sign"),
				errdetail_internal("%s", agentidp_openssl_error()));

	if (alg == JWS_ES256)
	{
		const unsigned char *p = out;
		ECDSA_SIG  *es = d2i_ECDSA_SIG(NULL, &p, len);
		unsigned char *rs = palloc(64);

		ok = es != NULL &&
			BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
			BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32;
		ECDSA_SIG_free(es);
		if (!ok)
			ereport(ERROR,
					errcode(ERRCODE_INTERNAL_ERROR),
					errmsg("could not convert an ECDSA signature"),
					errdetail_internal("%s", agentidp_openssl_error()));
		pfree(out);
		out = rs;
		len = 64;
	}
	*siglen = len;
	return out;
}

/* base64url of raw into buf */
static void
append_b64url(StringInfo buf, const unsigned char *raw, size_t len)
{
	enlargeStringInfo(buf, AGENTIDP_B64URL_LEN(len) + 1);
	agentidp_b64url_encode(raw, len, buf->data + buf->len);
	buf->len += AGENTIDP_B64URL_LEN(len);
}

static JsonbValue *
member(Jsonb *jb, const char *name)
{
	return getKeyJsonValueFromContainer(&jb->root, name, strlen(name), NULL);
}

static char *
string_member(Jsonb *jb, const char *name, const char *what)
{
	JsonbValue *v = member(jb, name);

	if (v == NULL)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: %s member \"%s\" must be a string", what, name));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * A key set, imported once per distinct jwks (or private_jwk) argument and
 * kept in fn_extra for the rest of the query: SELECT jws_verify(t, $1, ...)
 * FROM tokens imports the keys once, not once a row, and keeps their
 * OpenSSL contexts.  Everything is freed when the function's memory context
 * goes away.
 */
typedef struct KeySet
{
	Jsonb	   *jwks;			/* a copy, to recognise the same argument */
	int			nkeys;
	JoseKey    *keys;
} KeySet;

static void
keyset_free(void *arg)
{
	KeySet	   *ks = arg;

	for (int i = 0; i < ks->nkeys; i++)
		josekey_free(&ks->keys[i]);
	ks->nkeys = 0;
}

static bool
has_member(JsonbContainer *c, const char *name)
{
	return getKeyJsonValueFromContainer(c, name, strlen(name), NULL) != NULL;
}

static KeySet *
keyset_get(FunctionCallInfo fcinfo, Jsonb *jwks)
{
	KeySet	   *ks = fcinfo->flinfo->fn_extra;
	MemoryContext old;
	MemoryContext cxt;
	MemoryContextCallback *cb;
	JsonbValue *keys;
	JsonbValue	elem;
	int			n;

	if (ks != NULL && VARSIZE(ks->jwks) == VARSIZE(jwks) &&
		memcmp(ks->jwks, jwks, VARSIZE(jwks)) == 0)
		return ks;

	/* a new key set: a context of its own, so the old one goes whole */
	if (ks != NULL)
		MemoryContextDelete(GetMemoryChunkContext(ks));
	fcinfo->flinfo->fn_extra = NULL;

	if (!JB_ROOT_IS_OBJECT(jwks))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("jwks must be a JSON object"),
				errhint("Pass a JWK Set {\"keys\": [...]} or a single JWK."));

	cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "agentidp key set",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	ks = palloc0(sizeof(KeySet));
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = keyset_free;
	cb->arg = ks;
	MemoryContextRegisterResetCallback(cxt, cb);
	ks->jwks = palloc(VARSIZE(jwks));
	memcpy(ks->jwks, jwks, VARSIZE(jwks));

	PG_TRY();
	{
		keys = getKeyJsonValueFromContainer(&jwks->root, "keys", 4, NULL);
		if (keys == NULL)
		{
			/* a single JWK */
			ks->keys = palloc0(sizeof(JoseKey));
			ks->keys[0].jwk = agentidp_jwk_import(jwks, has_member(&jwks->root, "d") ||
											  has_member(&jwks->root, "k"));
			ks->nkeys = 1;
		}
		else
		{
			if (keys->type != jbvBinary || !JsonContainerIsArray(keys->val.binary.data))
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("jwks member \"keys\" must be an array"));
			n = JsonContainerSize(keys->val.binary.data);
			if (n == 0 || n > 100)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a key set must hold 1 to 100 keys"));
			ks->keys = palloc0(n * sizeof(JoseKey));
			for (int i = 0; i < n; i++)
			{
				JsonbValue *e = getIthJsonbValueFromContainer(keys->val.binary.data, i);
				Jsonb	   *one;

				if (e == NULL || e->type != jbvBinary ||
					!JsonContainerIsObject(e->val.binary.data))
					ereport(ERROR,
							errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("every member of a key set must be a JWK object"));
				elem = *e;
				one = JsonbValueToJsonb(&elem);
				/* a private JWK verifies with its public half */
				ks->keys[i].jwk = agentidp_jwk_import(one, has_member(&one->root, "d") ||
												  has_member(&one->root, "k"));
				ks->nkeys = i + 1;
				/*
				 * A set that mixes HMAC secrets with public keys invites a
				 * token to pick the wrong kind (RFC 8725 section 3.1).
				 */
				if ((ks->keys[i].jwk->kty == AGENTIDP_KTY_OCT) !=
					(ks->keys[0].jwk->kty == AGENTIDP_KTY_OCT))
					ereport(ERROR,
							errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("a key set must not mix symmetric and asymmetric keys"));
				/* kid picks one key: two keys under one kid would be a guess */
				for (int d = 0; d < i; d++)
					if (strcmp(ks->keys[d].jwk->kid, ks->keys[i].jwk->kid) == 0)
						ereport(ERROR,
								errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								errmsg("a key set holds two keys with the same kid"));
			}
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = ks;
	return ks;
}

/*
 * The compact JWS of payload under key, with the header rules of
 * jws_sign() below.
 */
static text *
sign_compact(JoseKey *jk, Jsonb *payload, Jsonb *header)
{
	AgentidpJwk *key = jk->jwk;
	StringInfoData out;
	text	   *result;
	JsonbParseState *ps = NULL;
	JsonbValue	k,
				v;
	JsonbValue *res;
	const char *alg_name = NULL;
	const char *kid;
	JwsAlg		alg;
	unsigned char *sig;
	size_t		siglen;
	int			input_len;

	initStringInfo(&out);

	/* every header member must be one we know how to write */
	if (header != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(&header->root);
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *name;

			if (tok != WJB_KEY)
				continue;
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (strcmp(name, "alg") != 0 && strcmp(name, "kid") != 0 &&
				strcmp(name, "typ") != 0 && strcmp(name, "cty") != 0 &&
				strcmp(name, "jwk") != 0)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("JWS header member \"%s\" is not supported", name),
						errhint("Supported members are alg, kid, typ, cty and jwk."));
		}
		alg_name = string_member(header, "alg", "header");
	}
	if (alg_name == NULL)
		alg_name = key->alg;
	if (alg_name == NULL)
		alg_name = key->kty == AGENTIDP_KTY_EC ? "ES256" :
			key->kty == AGENTIDP_KTY_OKP ? "EdDSA" :
			key->kty == AGENTIDP_KTY_OCT ? "HS256" : "RS256";
	alg = jws_alg(alg_name);
	if (alg == JWS_UNKNOWN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unsupported algorithm \"%s\"", alg_name),
				errhint("Supported algorithms are ES256, RS256, PS256, EdDSA and HS256."));
	if (!alg_fits_key(alg, key))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("key \"%s\" cannot sign with algorithm \"%s\"", key->kid, alg_name));
	if (header != NULL)
	{
		JsonbValue *pub = member(header, "jwk");

		if (pub != NULL && (pub->type != jbvBinary ||
							!JsonContainerIsObject(pub->val.binary.data) ||
							getKeyJsonValueFromContainer(pub->val.binary.data, "d", 1, NULL) != NULL ||
							getKeyJsonValueFromContainer(pub->val.binary.data, "k", 1, NULL) != NULL))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("JWS header member \"jwk\" must be a public JWK"));
		kid = string_member(header, "kid", "header");
		(void) string_member(header, "typ", "header");
		(void) string_member(header, "cty", "header");
	}
	else
		kid = NULL;
	if (kid == NULL)
		kid = key->kid;

	/* the header: the caller's members, then alg and kid over them */
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	if (header != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(&header->root);
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_KEY || tok == WJB_VALUE)
				pushJsonbValue(&ps, tok, &v);
	}
	k.type = jbvString;
	k.val.string.val = "alg";
	k.val.string.len = 3;
	pushJsonbValue(&ps, WJB_KEY, &k);
	v.type = jbvString;
	v.val.string.val = (char *) jws_algs[alg].name;
	v.val.string.len = strlen(jws_algs[alg].name);
	pushJsonbValue(&ps, WJB_VALUE, &v);
	k.val.string.val = "kid";
	pushJsonbValue(&ps, WJB_KEY, &k);
	v.val.string.val = (char *) kid;
	v.val.string.len = strlen(kid);
	pushJsonbValue(&ps, WJB_VALUE, &v);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	{
		StringInfoData json;

		initStringInfo(&json);
		agentidp_json_compact(&json, JsonbValueToJsonb(res));
		append_b64url(&out, (unsigned char *) json.data, json.len);
		appendStringInfoChar(&out, '.');
		resetStringInfo(&json);
		agentidp_json_compact(&json, payload);
		append_b64url(&out, (unsigned char *) json.data, json.len);
		pfree(json.data);
	}
	input_len = out.len;
	sig = sign_raw(alg, jk, (unsigned char *) out.data, input_len, &siglen);
	appendStringInfoChar(&out, '.');
	append_b64url(&out, sig, siglen);
	result = cstring_to_text_with_len(out.data, out.len);
	pfree(out.data);
	return result;
}

/*
 * A signer for other parts (keys.c's cache): a key they hold, with its
 * OpenSSL contexts kept in cxt and freed when cxt is deleted or reset.
 */
static void
signer_free(void *arg)
{
	JoseKey    *jk = arg;

	for (int i = 0; i < 2; i++)
	{
		EVP_PKEY_CTX_free(jk->ctx[i]);
		jk->ctx[i] = NULL;
	}
}

AgentidpSigner *
agentidp_signer_create(AgentidpJwk *key, MemoryContext cxt)
{
	JoseKey    *jk = MemoryContextAllocZero(cxt, sizeof(JoseKey));
	MemoryContextCallback *cb = MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));

	jk->jwk = key;
	cb->func = signer_free;
	cb->arg = jk;
	MemoryContextRegisterResetCallback(cxt, cb);
	return (AgentidpSigner *) jk;
}

text *
agentidp_signer_sign(AgentidpSigner *signer, Jsonb *payload, Jsonb *header)
{
	return sign_compact((JoseKey *) signer, payload, header);
}

/*----------
 * agentidp.jws_sign(payload jsonb, private_jwk jsonb, header jsonb)
 *		RETURNS text
 *
 * The header gets "alg" (from the header, else the key's "alg", else the
 * key type's one algorithm, RS256 for RSA) and "kid" (the key's unless the
 * header names one); "typ", "cty" and "jwk" (a public key: DPoP proofs
 * carry one, RFC 9449) may be given, and nothing else.
 *----------
 */
Datum
agentidp_jws_sign(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;
	Jsonb	   *jwk;
	Jsonb	   *header = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	KeySet	   *ks;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("payload and private_jwk must not be null"));
	payload = PG_GETARG_JSONB_P(0);
	jwk = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("JWS payload must be a JSON object"));
	if (header != NULL && !JB_ROOT_IS_OBJECT(header))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("JWS header must be a JSON object"));

	/* the signing key, imported once per query like a verification set */
	ks = keyset_get(fcinfo, jwk);
	if (ks->nkeys != 1 || !ks->keys[0].jwk->has_private)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("private_jwk must be one private JWK"));
	PG_RETURN_TEXT_P(sign_compact(&ks->keys[0], payload, header));
}

static void pg_attribute_noreturn()
refuse(const char *message, const char *detail)
{
	if (detail)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				errmsg_internal("%s", message),
				errdetail_internal("%s", detail));
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg_internal("%s", message));
}

/* the allowlist as a bit set of JwsAlg */
static int
allowed_algs(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			mask = 0;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("algorithms must be a one-dimensional array"));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *name;
		JwsAlg		alg;

		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("algorithms must not contain NULL"));
		name = TextDatumGetCString(elems[i]);
		alg = jws_alg(name);
		if (alg == JWS_UNKNOWN)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("unsupported algorithm \"%s\"", name),
					errhint("Supported algorithms are ES256, RS256, PS256, EdDSA and HS256; \"none\" is never accepted."));
		mask |= 1 << alg;
	}
	if (mask == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("algorithms must name at least one algorithm"));
	return mask;
}

/* header members that would move trust or meaning out of our hands */
static void
check_header(Jsonb *header, bool allow_jwk)
{
	static const char *const refused[] = {"jku", "x5u", "x5c", "jwk"};
	char	   *cty;

	for (int i = 0; i < lengthof(refused); i++)
		if (member(header, refused[i]) != NULL &&
			!(allow_jwk && strcmp(refused[i], "jwk") == 0))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					errmsg("JWS header parameter \"%s\" is not accepted", refused[i]),
					errdetail("Keys come from the key set the caller passes, never from the token."));
	if (member(header, "crit") != NULL)
		refuse("JWS header parameter \"crit\" is not accepted",
			   "This verifier understands no JWS extensions (RFC 7515, section 4.1.11).");
	if (member(header, "b64") != NULL)
		refuse("unencoded JWS payloads (\"b64\") are not accepted", NULL);
	if (member(header, "enc") != NULL || member(header, "zip") != NULL)
		refuse("JWE is not supported", NULL);
	cty = string_member(header, "cty", "header");
	if (cty != NULL && pg_strcasecmp(cty, "JWT") == 0)
		refuse("nested JWTs are not accepted", NULL);
	(void) string_member(header, "typ", "header");
}

/* RFC 7519 NumericDate as JSON: a number between 0 and year 9999 */
static void
check_numeric_date(Jsonb *payload, const char *name)
{
	JsonbValue *v = member(payload, name);

	if (v == NULL)
		return;
	if (v->type == jbvNumeric)
	{
		/* the bounds, made once per backend: this runs on every verify */
		static Numeric lo = NULL;
		static Numeric hi = NULL;

		if (hi == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			lo = int64_to_numeric(0);
			hi = int64_to_numeric(INT64CONST(253402300799));
			MemoryContextSwitchTo(old);
		}
		if (DatumGetBool(DirectFunctionCall2(numeric_ge, NumericGetDatum(v->val.numeric),
											 NumericGetDatum(lo))) &&
			DatumGetBool(DirectFunctionCall2(numeric_le, NumericGetDatum(v->val.numeric),
											 NumericGetDatum(hi))))
			return;
	}
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("malformed JWS: claim \"%s\" must be a number from 0 to 253402300799", name));
}

/* the registered claims, when present, have their registered types */
static void
check_claims(Jsonb *payload)
{
	static const char *const strings[] = {"iss", "sub", "jti", "client_id", "scope"};
	JsonbValue *aud;

	for (int i = 0; i < lengthof(strings); i++)
		(void) string_member(payload, strings[i], "payload");
	check_numeric_date(payload, "exp");
	check_numeric_date(payload, "nbf");
	check_numeric_date(payload, "iat");

	aud = member(payload, "aud");
	if (aud != NULL && aud->type != jbvString)
	{
		bool		ok = aud->type == jbvBinary &&
			JsonContainerIsArray(aud->val.binary.data) &&
			JsonContainerSize(aud->val.binary.data) > 0;

		for (int i = 0; ok && i < JsonContainerSize(aud->val.binary.data); i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(aud->val.binary.data, i);

			ok = e != NULL && e->type == jbvString;
		}
		if (!ok)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("malformed JWS: claim \"aud\" must be a string or a non-empty array of strings"));
	}
}

/*
 * Split a compact JWS into its three segments and parse its protected
 * header strictly.  Nothing in the header is trusted yet: the caller must
 * verify the signature before acting on anything but the key choice.
 * *buf is big enough for any decoded segment.
 */
static Jsonb *
split_compact(text *token, char **tok, int *len, char **dot1, char **dot2,
			  unsigned char **buf)
{
	size_t		buflen;

	*len = VARSIZE_ANY_EXHDR(token);
	*tok = VARDATA_ANY(token);
	if (*len > AGENTIDP_JWS_MAX_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: token is longer than %d bytes", AGENTIDP_JWS_MAX_LEN));
	*dot1 = memchr(*tok, '.', *len);
	*dot2 = *dot1 ? memchr(*dot1 + 1, '.', *len - (*dot1 + 1 - *tok)) : NULL;
	if (*dot1 == NULL || *dot2 == NULL ||
		memchr(*dot2 + 1, '.', *len - (*dot2 + 1 - *tok)) != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: a compact JWS has exactly three segments"));

	*buf = palloc(*len * 3 / 4 + 1);
	if (!agentidp_b64url_decode(*tok, *dot1 - *tok, *buf, &buflen))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: header is not canonical base64url"));
	return agentidp_json_parse_strict((char *) *buf, buflen, "header");
}

/*
 * Split a compact JWS and check its protected header: "alg" present and
 * not "none", no refused parameters.  Nothing is verified yet.  A "jwk"
 * header (a key chosen by the signer) is refused unless allow_jwk: only
 * DPoP proofs carry one, and are checked against that very key.
 */
void
agentidp_jws_parse(text *token, AgentidpJws *jws, bool allow_jwk)
{
	jws->header = split_compact(token, &jws->tok, &jws->len, &jws->dot1,
								&jws->dot2, &jws->buf);
	jws->alg = string_member(jws->header, "alg", "header");
	if (jws->alg == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: header has no \"alg\""));
	if (pg_strcasecmp(jws->alg, "none") == 0)
		refuse("unsecured JWS (alg \"none\") is not accepted", NULL);
	check_header(jws->header, allow_jwk);
	jws->kid = string_member(jws->header, "kid", "header");
	jws->typ = string_member(jws->header, "typ", "header");
}

/*
 * The payload of a parsed JWS if key signed it with the header's
 * algorithm, which must fit the key (and be the key's own "alg" when the
 * key names one); registered claims are type-checked.  The caller decides
 * which algorithms it accepts before calling.
 */
Jsonb *
agentidp_jws_verify_key(AgentidpJws *jws, AgentidpSigner *signer)
{
	JoseKey    *key = (JoseKey *) signer;
	JwsAlg		alg = jws_alg(jws->alg);
	size_t		buflen;
	Jsonb	   *payload;

	if (alg == JWS_UNKNOWN || !alg_fits_key(alg, key->jwk))
	{
		const char *shown = printable_or_null(jws->alg);

		refuse(psprintf("key \"%s\" cannot be used with algorithm \"%s\"",
						key->jwk->kid, shown ? shown : "?"), NULL);
	}

	if (!agentidp_b64url_decode(jws->dot2 + 1, jws->len - (jws->dot2 + 1 - jws->tok),
								jws->buf, &buflen))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: signature is not canonical base64url"));
	/* the signing input is the literal text of the first two segments */
	if (!verify_raw(alg, key, (unsigned char *) jws->tok, jws->dot2 - jws->tok,
					jws->buf, buflen, false))
		refuse("invalid JWS signature", NULL);

	if (!agentidp_b64url_decode(jws->dot1 + 1, jws->dot2 - jws->dot1 - 1, jws->buf, &buflen))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("malformed JWS: payload is not canonical base64url"));
	payload = agentidp_json_parse_strict((char *) jws->buf, buflen, "payload");
	check_claims(payload);
	return payload;
}

/*----------
 * agentidp.jws_verify(token text, jwks jsonb, algorithms text[])
 *		RETURNS jsonb
 *
 * The payload of a JWS that one of the given keys signed with one of the
 * given algorithms.  Malformed input raises 22023; a token that is well
 * formed but not trusted (algorithm not allowed or not the key's, unknown
 * kid, refused header parameter, bad signature) raises 28000.  The payload
 * is parsed only after its signature verified.
 *----------
 */
Datum
agentidp_jws_verify(PG_FUNCTION_ARGS)
{
	text	   *token;
	KeySet	   *ks;
	int			allowed;
	AgentidpJws jws;
	Jsonb	   *payload;
	JwsAlg		alg;
	JoseKey    *key = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("token, jwks and algorithms must not be null"));
	token = PG_GETARG_TEXT_PP(0);
	allowed = allowed_algs(PG_GETARG_ARRAYTYPE_P(2));
	ks = keyset_get(fcinfo, PG_GETARG_JSONB_P(1));

	agentidp_jws_parse(token, &jws, false);
	alg = jws_alg(jws.alg);
	if (alg == JWS_UNKNOWN || !(allowed & (1 << alg)))
	{
		const char *shown = printable_or_null(jws.alg);

		refuse(shown ? psprintf("algorithm \"%s\" is not allowed", shown) :
			   "algorithm is not allowed", NULL);
	}

	/* the header's kid picks a key; it never authenticates anything */
	if (jws.kid != NULL)
	{
		for (int i = 0; i < ks->nkeys && key == NULL; i++)
			if (strcmp(ks->keys[i].jwk->kid, jws.kid) == 0)
				key = &ks->keys[i];
		if (key == NULL)
		{
			const char *shown = printable_or_null(jws.kid);

			refuse(shown ? psprintf("no key with kid \"%s\"", shown) :
				   "no key with this kid", NULL);
		}
	}
	else if (ks->nkeys == 1)
		key = &ks->keys[0];
	else
		refuse("token has no \"kid\" and the key set holds more than one key", NULL);

	payload = agentidp_jws_verify_key(&jws, (AgentidpSigner *) key);
	PG_RETURN_JSONB_P(payload);
}

/*
 * For the raw test functions below: the algorithm named and the key,
 * imported (a private JWK when it has "d" or "k") and checked to fit it.
 * The caller frees the key with josekey_free().
 */
static JoseKey *
raw_test_key(text *alg_text, Jsonb *jwk, JwsAlg *alg)
{
	char	   *alg_name = text_to_cstring(alg_text);
	JoseKey    *key = palloc0(sizeof(JoseKey));

	*alg = jws_alg(alg_name);
	if (*alg == JWS_UNKNOWN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unsupported algorithm \"%s\"", alg_name));
	key->jwk = agentidp_jwk_import(jwk, has_member(&jwk->root, "d") ||
								   has_member(&jwk->root, "k"));
	if (!alg_fits_key(*alg, key->jwk))
	{
		josekey_free(key);
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("key cannot be used with algorithm \"%s\"", alg_name));
	}
	return key;
}

/*
 * agentidp._verify_signature(alg text, jwk jsonb, message bytea,
 *							  signature bytea, der boolean) RETURNS boolean
 *
 * The signature check of jws_verify on raw bytes, for the Wycheproof
 * vectors (test/vectors).  der: an ASN.1 ECDSA signature.
 */
Datum
agentidp_verify_signature(PG_FUNCTION_ARGS)
{
	bytea	   *msg = PG_GETARG_BYTEA_PP(2);
	bytea	   *sig = PG_GETARG_BYTEA_PP(3);
	bool		der = PG_GETARG_BOOL(4);
	JwsAlg		alg;
	JoseKey    *volatile key = raw_test_key(PG_GETARG_TEXT_PP(0), PG_GETARG_JSONB_P(1), &alg);
	bool		ok = false;

	PG_TRY();
	{
		ok = verify_raw(alg, key,
						(unsigned char *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg),
						(unsigned char *) VARDATA_ANY(sig), VARSIZE_ANY_EXHDR(sig), der);
	}
	PG_FINALLY();
	{
		josekey_free(key);
	}
	PG_END_TRY();
	PG_RETURN_BOOL(ok);
}

/* agentidp.jwk_thumbprint(jwk jsonb) RETURNS text */
PG_FUNCTION_INFO_V1(agentidp_jwk_thumbprint_sql);
Datum
agentidp_jwk_thumbprint_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(agentidp_jwk_thumbprint(PG_GETARG_JSONB_P(0))));
}

/* agentidp.generate_jwk(alg text) RETURNS jsonb: superusers only */
PG_FUNCTION_INFO_V1(agentidp_generate_jwk);
Datum
agentidp_generate_jwk(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(agentidp_jwk_generate(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/*
 * agentidp._sign_signature(alg text, jwk jsonb, message bytea) RETURNS bytea
 *
 * The signature step of jws_sign on raw bytes, for the deterministic RFC
 * examples (test/vectors).  Superusers only.
 */
PG_FUNCTION_INFO_V1(agentidp_sign_signature);
Datum
agentidp_sign_signature(PG_FUNCTION_ARGS)
{
	bytea	   *msg = PG_GETARG_BYTEA_PP(2);
	JwsAlg		alg;
	JoseKey    *volatile key = raw_test_key(PG_GETARG_TEXT_PP(0), PG_GETARG_JSONB_P(1), &alg);
	unsigned char *sig = NULL;
	size_t		siglen = 0;
	bytea	   *out;

	PG_TRY();
	{
		sig = sign_raw(alg, key, (unsigned char *) VARDATA_ANY(msg),
					   VARSIZE_ANY_EXHDR(msg), &siglen);
	}
	PG_FINALLY();
	{
		josekey_free(key);
	}
	PG_END_TRY();
	out = palloc(VARHDRSZ + siglen);
	SET_VARSIZE(out, VARHDRSZ + siglen);
	memcpy(VARDATA(out), sig, siglen);
	PG_RETURN_BYTEA_P(out);
}

/*
 * agentidp._jws_header(token text) RETURNS jsonb
 *
 * The protected header of a compact JWS, parsed as strictly as jws_verify
 * does, and not verified: for choosing the key to verify with (kid, typ),
 * never for deciding anything else.
 */
PG_FUNCTION_INFO_V1(agentidp_jws_header);
Datum
agentidp_jws_header(PG_FUNCTION_ARGS)
{
	char	   *tok;
	int			len;
	char	   *dot1;
	char	   *dot2;
	unsigned char *buf;

	PG_RETURN_JSONB_P(split_compact(PG_GETARG_TEXT_PP(0), &tok, &len,
									&dot1, &dot2, &buf));
}
