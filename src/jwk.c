/*-------------------------------------------------------------------------
 *
 * jwk.c
 *	  JSON Web Keys (RFC 7517, RFC 7518 section 6, RFC 8037): import of a
 *	  JWK into an OpenSSL key with every check that decides whether the key
 *	  may be trusted for signing, export back to JWK, RFC 7638 thumbprints,
 *	  and generation of new signing keys.  Pure functions: no table access,
 *	  no GUCs.  JWS signing and verification are jose.c; key storage,
 *	  encryption at rest and rotation are keys.c.
 *
 * IDENTIFICATION
 *	  src/jwk.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#include "agentidp.h"
#include "jose.h"
#include "jwk.h"

/* P-256 coordinates and scalars, Ed25519 keys: fixed widths */
#define P256_BYTES			32
#define ED25519_BYTES		32

/* HMAC-SHA-256 wants a key at least as long as its output (RFC 7518 3.2) */
#define OCT_MIN_BYTES		32
#define OCT_GENERATE_BYTES	32

#define RSA_MIN_BITS		2048
#define RSA_MAX_BITS		4096
#define RSA_GENERATE_BITS	2048

/*
 * OpenSSL refuses public exponents over 64 bits for moduli over 3072 bits
 * (OPENSSL_RSA_MAX_PUBEXP_BITS); refusing them here for every size keeps an
 * imported key from failing only later, at its first verification.
 */
#define RSA_MAX_E_BYTES		8

#define KID_MAX_BYTES		256

/*
 * Members are decoded into palloc'd memory; the cap keeps a huge member
 * from costing a large allocation before it is refused.  It is far above
 * the 512 bytes of an RSA-4096 modulus, so that an oversized modulus still
 * gets the clearer "key size" error, and leaves HMAC secrets room to spare.
 */
#define MEMBER_MAX_BYTES	8192
#define MEMBER_MAX_CHARS	AGENTIDP_B64URL_LEN(MEMBER_MAX_BYTES)

#define SHA256_BYTES		32

/*
 * An OpenSSL call failed for no fault of the input (out of memory, a broken
 * provider): an internal error, with OpenSSL's reason for the server log.
 */
#define openssl_failure(...) \
	ereport(ERROR, \
			errcode(ERRCODE_INTERNAL_ERROR), \
			errmsg(__VA_ARGS__), \
			errdetail_internal("%s", agentidp_openssl_error()))

/* members that only a private JWK carries (RFC 7518 6.2.2, 6.3.2) */
static const char *const private_members[] = {
	"d", "p", "q", "dp", "dq", "qi", "oth"
};

/* the RSA private members, and the OpenSSL parameters they become */
#define RSA_PRIVATE_COUNT	6
static const char *const rsa_private_members[RSA_PRIVATE_COUNT] = {
	"d", "p", "q", "dp", "dq", "qi"
};
static const char *const rsa_private_params[RSA_PRIVATE_COUNT] = {
	OSSL_PKEY_PARAM_RSA_D,
	OSSL_PKEY_PARAM_RSA_FACTOR1,
	OSSL_PKEY_PARAM_RSA_FACTOR2,
	OSSL_PKEY_PARAM_RSA_EXPONENT1,
	OSSL_PKEY_PARAM_RSA_EXPONENT2,
	OSSL_PKEY_PARAM_RSA_COEFFICIENT1
};

/* RFC 7638 section 3.2: the required members, in lexicographic order */
static const char *const ec_thumbprint_members[] = {
	"crv", "kty", "x", "y", NULL
};
static const char *const rsa_thumbprint_members[] = {"e", "kty", "n", NULL};
static const char *const okp_thumbprint_members[] = {"crv", "kty", "x", NULL};
static const char *const oct_thumbprint_members[] = {"k", "kty", NULL};


/*
 * Reading the JWK
 */

static void
check_object(Jsonb *jwk)
{
	if (jwk == NULL || !JB_ROOT_IS_OBJECT(jwk))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: not a JSON object"));
}

/*
 * Fetch member name into *val; false when it is absent.  Every member we
 * read is a string, so anything else in its place means a malformed JWK
 * rather than one to read some other way.
 */
static bool
get_member(Jsonb *jwk, const char *name, JsonbValue *val)
{
	if (getKeyJsonValueFromContainer(&jwk->root, name, strlen(name),
									 val) == NULL)
		return false;
	if (val->type != jbvString)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: member \"%s\" is not a string", name));
	return true;
}

static void
require_member(Jsonb *jwk, const char *name, JsonbValue *val)
{
	if (!get_member(jwk, name, val))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: member \"%s\" is missing", name));
}

/* present with any type at all */
static bool
has_member(Jsonb *jwk, const char *name)
{
	JsonbValue	val;

	return getKeyJsonValueFromContainer(&jwk->root, name, strlen(name),
										&val) != NULL;
}

static bool
member_equals(const JsonbValue *val, const char *s)
{
	size_t		len = strlen(s);

	return val->val.string.len == len &&
		memcmp(val->val.string.val, s, len) == 0;
}

/* a member's text for an error message; never used for key material */
static char *
member_text(const JsonbValue *val)
{
	return pnstrdup(val->val.string.val, val->val.string.len);
}

static AgentidpKty
parse_kty(const JsonbValue *kty)
{
	if (member_equals(kty, "EC"))
		return AGENTIDP_KTY_EC;
	if (member_equals(kty, "RSA"))
		return AGENTIDP_KTY_RSA;
	if (member_equals(kty, "OKP"))
		return AGENTIDP_KTY_OKP;
	if (member_equals(kty, "oct"))
		return AGENTIDP_KTY_OCT;
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("unsupported JWK key type \"%s\"", member_text(kty)),
			errdetail("Supported key types are EC, RSA, OKP and oct."));
	pg_unreachable();
}

static void
pg_attribute_noreturn()
unsupported_curve(const JsonbValue *crv, const char *kty,
				  const char *supported)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("unsupported JWK curve \"%s\"", member_text(crv)),
			errdetail("The only supported curve for key type \"%s\" is %s.",
					  kty, supported));
}

static void
pg_attribute_noreturn()
wrong_length(const char *name, const char *what, size_t want, size_t got)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("invalid JWK: member \"%s\" has the wrong length", name),
			errdetail("Member \"%s\" of %s must decode to %zu bytes, not %zu.",
					  name, what, want, got));
}

/*
 * Decode base64url member name into new palloc'd memory; *len gets the
 * decoded length.  Only the first *len bytes are ever written, so that is
 * all a caller has to cleanse when the member is secret; a failed decode
 * cleanses its own partial output.
 */
static unsigned char *
decode_member(const char *name, const JsonbValue *val, size_t *len)
{
	size_t		textlen = val->val.string.len;
	size_t		cap = textlen * 3 / 4 + 1;
	unsigned char *buf;

	if (textlen > MEMBER_MAX_CHARS)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: member \"%s\" is too long", name),
				errdetail("A member may encode at most %d bytes.",
						  MEMBER_MAX_BYTES));
	buf = palloc(cap);
	if (!agentidp_b64url_decode(val->val.string.val, textlen, buf, len))
	{
		explicit_bzero(buf, cap);
		pfree(buf);
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: member \"%s\" is not valid base64url",
					   name));
	}
	return buf;
}

/*
 * Decode secret member name straight into a BIGNUM; want_len > 0 demands
 * that many bytes.  The BIGNUM lives in OpenSSL's secure heap when one is
 * set up, and either way is flagged secure, which makes OSSL_PARAM_BLD put
 * its copy in a block that OSSL_PARAM_free() cleanses.  The decoded bytes
 * are cleansed before anything can raise an error.
 */
static BIGNUM *
decode_secret_bn(Jsonb *jwk, const char *name, size_t want_len,
				 const char *what)
{
	JsonbValue	val;
	unsigned char *raw;
	size_t		len;
	BIGNUM	   *bn;

	require_member(jwk, name, &val);
	raw = decode_member(name, &val, &len);
	if (want_len > 0 && len != want_len)
	{
		explicit_bzero(raw, len);
		pfree(raw);
		wrong_length(name, what, want_len, len);
	}
	bn = BN_secure_new();
	if (bn != NULL && BN_bin2bn(raw, len, bn) == NULL)
	{
		BN_clear_free(bn);
		bn = NULL;
	}
	explicit_bzero(raw, len);
	pfree(raw);
	if (bn == NULL)
		openssl_failure("could not read JWK member \"%s\"", name);
	return bn;
}

static void
pg_attribute_noreturn()
key_mismatch(void)
{
	ERR_clear_error();
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("invalid JWK: private key does not match the public key"));
}


/*
 * Import, one function per key type.  Each frees its own OpenSSL objects on
 * every path and returns a key that its caller owns.
 */

static EVP_PKEY *
import_ec(Jsonb *jwk, bool want_private)
{
	JsonbValue	crv;
	JsonbValue	val;
	unsigned char *coord;
	size_t		len;
	unsigned char pub[1 + 2 * P256_BYTES];
	OSSL_PARAM_BLD *volatile bld = NULL;
	OSSL_PARAM *volatile params = NULL;
	BIGNUM	   *volatile priv = NULL;
	EVP_PKEY_CTX *volatile ctx = NULL;
	EVP_PKEY_CTX *volatile check_ctx = NULL;
	EVP_PKEY   *volatile pkey = NULL;
	volatile bool done = false;

	require_member(jwk, "crv", &crv);
	if (!member_equals(&crv, "P-256"))
		unsupported_curve(&crv, "EC", "P-256");

	/* SEC 1 uncompressed point: 0x04 || x || y */
	pub[0] = POINT_CONVERSION_UNCOMPRESSED;
	require_member(jwk, "x", &val);
	coord = decode_member("x", &val, &len);
	if (len != P256_BYTES)
		wrong_length("x", "a P-256 key", P256_BYTES, len);
	memcpy(pub + 1, coord, P256_BYTES);
	pfree(coord);
	require_member(jwk, "y", &val);
	coord = decode_member("y", &val, &len);
	if (len != P256_BYTES)
		wrong_length("y", "a P-256 key", P256_BYTES, len);
	memcpy(pub + 1 + P256_BYTES, coord, P256_BYTES);
	pfree(coord);

	PG_TRY();
	{
		EVP_PKEY   *out = NULL;

		if (want_private)
			priv = decode_secret_bn(jwk, "d", P256_BYTES, "a P-256 key");

		bld = OSSL_PARAM_BLD_new();
		if (bld == NULL ||
			!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
											 "prime256v1", 0) ||
			!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
											  pub, sizeof(pub)) ||
			(priv != NULL &&
			 !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv)) ||
			(params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
			openssl_failure("could not build EC key parameters");

		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
		if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1)
			openssl_failure("could not initialize EC key import");
		if (EVP_PKEY_fromdata(ctx, &out,
							  want_private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
							  params) != 1)
		{
			unsigned long err = ERR_peek_last_error();

			/*
			 * OpenSSL already refuses a point off the curve, or with a
			 * coordinate outside the field, when it decodes it; say so in
			 * our words rather than as an internal failure.
			 */
			if (ERR_GET_LIB(err) == ERR_LIB_EC &&
				(ERR_GET_REASON(err) == EC_R_POINT_IS_NOT_ON_CURVE ||
				 ERR_GET_REASON(err) == EC_R_INVALID_ENCODING))
			{
				ERR_clear_error();
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("EC point is not on the curve P-256"));
			}
			openssl_failure("could not import EC key");
		}
		pkey = out;

		/*
		 * An invalid point is the basis of invalid-curve attacks; check it
		 * here too rather than trust that every OpenSSL version checks it
		 * on import.
		 */
		check_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
		if (check_ctx == NULL)
			openssl_failure("could not check EC key");
		if (EVP_PKEY_public_check_quick(check_ctx) != 1)
		{
			ERR_clear_error();
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("EC point is not on the curve P-256"));
		}

		/*
		 * d must be in range and yield x and y: a signing key whose JWK
		 * publishes some other point makes tokens nobody can verify.  One
		 * scalar multiplication, cheap enough for every import.
		 */
		if (want_private && EVP_PKEY_pairwise_check(check_ctx) != 1)
			key_mismatch();

		done = true;
	}
	PG_FINALLY();
	{
		EVP_PKEY_CTX_free(check_ctx);
		EVP_PKEY_CTX_free(ctx);
		OSSL_PARAM_free(params);
		OSSL_PARAM_BLD_free(bld);
		BN_clear_free(priv);
		if (!done)
			EVP_PKEY_free(pkey);
	}
	PG_END_TRY();

	return pkey;
}

/* the bit length of a big-endian number without leading zero octets */
static int
octets_bits(const unsigned char *buf, size_t len)
{
	int			bits;

	if (len == 0)
		return 0;
	bits = (int) (len - 1) * 8;
	for (unsigned char b = buf[0]; b != 0; b >>= 1)
		bits++;
	return bits;
}

/*
 * ROCA (CVE-2017-15361): Infineon's library made RSA moduli of the form
 * k * M + (65537^a mod M), whose factors can be found.  Such a modulus
 * lies, for every small prime p below, in the subgroup that 65537
 * generates modulo p; a random modulus fails that for some p with
 * overwhelming probability.  This is the published fingerprint test.
 */
static bool
roca_fingerprint(const unsigned char *n, size_t len)
{
	static const int primes[] = {
		3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
		71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139,
		149, 151, 157, 163, 167
	};

	for (int i = 0; i < lengthof(primes); i++)
	{
		int			p = primes[i];
		int			r = 0;
		int			g = 1;
		bool		in_subgroup = false;

		for (size_t j = 0; j < len; j++)
			r = (r * 256 + n[j]) % p;
		do
		{
			if (g == r)
				in_subgroup = true;
			g = (int) ((g * (long) (65537 % p)) % p);
		} while (g != 1 && !in_subgroup);
		if (!in_subgroup)
			return false;
	}
	return true;
}

static EVP_PKEY *
import_rsa(Jsonb *jwk, bool want_private, int *rsa_bytes)
{
	JsonbValue	val;
	unsigned char *n;
	unsigned char *e;
	size_t		nlen;
	size_t		elen;
	int			bits;
	BIGNUM	   *volatile n_bn = NULL;
	BIGNUM	   *volatile e_bn = NULL;
	BIGNUM	   *volatile priv[RSA_PRIVATE_COUNT] = {NULL};
	BIGNUM	   *volatile product = NULL;
	BN_CTX	   *volatile bnctx = NULL;
	OSSL_PARAM_BLD *volatile bld = NULL;
	OSSL_PARAM *volatile params = NULL;
	EVP_PKEY_CTX *volatile ctx = NULL;
	EVP_PKEY   *volatile pkey = NULL;
	volatile bool done = false;

	require_member(jwk, "n", &val);
	n = decode_member("n", &val, &nlen);

	/*
	 * RFC 7518 6.3.1.1: n has no leading zero octets.  Refusing them keeps
	 * one key from having several JWKs, and so several thumbprints.
	 */
	if (nlen > 0 && n[0] == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: member \"n\" has a leading zero octet"),
				errdetail("RFC 7518 section 6.3.1.1 requires the shortest encoding of the modulus."));
	bits = octets_bits(n, nlen);
	if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("RSA key size %d is not supported", bits),
				errdetail("Keys of %d to %d bits are supported.",
						  RSA_MIN_BITS, RSA_MAX_BITS));
	if (roca_fingerprint(n, nlen))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("RSA key has the ROCA weakness (CVE-2017-15361)"),
				errhint("Generate a new key with a sound library; this one can be factored."));
	if ((n[nlen - 1] & 1) == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: RSA modulus is even"));

	require_member(jwk, "e", &val);
	e = decode_member("e", &val, &elen);
	/* e is in the thumbprint too (RFC 7518 6.3.1.2, section 2) */
	if (elen > 0 && e[0] == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: member \"e\" has a leading zero octet"),
				errdetail("RFC 7518 section 6.3.1.2 requires the shortest encoding of the exponent."));
	if (elen == 0 || (e[elen - 1] & 1) == 0 || (elen == 1 && e[0] < 3))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: RSA public exponent must be odd and at least 3"));
	if (elen > RSA_MAX_E_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid JWK: RSA public exponent is too large"),
				errdetail("Exponents of at most %d bits are supported.",
						  RSA_MAX_E_BYTES * 8));

	if (want_private)
	{
		/* OpenSSL could take more primes, but nothing we sign with needs them */
		if (has_member(jwk, "oth"))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("multi-prime RSA keys are not supported"));
		/* name a missing member before decoding any secret */
		for (int i = 0; i < RSA_PRIVATE_COUNT; i++)
			require_member(jwk, rsa_private_members[i], &val);
	}

	PG_TRY();
	{
		EVP_PKEY   *out = NULL;

		n_bn = BN_bin2bn(n, nlen, NULL);
		e_bn = BN_bin2bn(e, elen, NULL);
		if (n_bn == NULL || e_bn == NULL)
			openssl_failure("could not read RSA public key");

		bld = OSSL_PARAM_BLD_new();
		if (bld == NULL ||
			!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n_bn) ||
			!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e_bn))
			openssl_failure("could not build RSA key parameters");
		if (want_private)
		{
			for (int i = 0; i < RSA_PRIVATE_COUNT; i++)
			{
				priv[i] = decode_secret_bn(jwk, rsa_private_members[i], 0,
										   "an RSA key");
				if (!OSSL_PARAM_BLD_push_BN(bld, rsa_private_params[i],
											priv[i]))
					openssl_failure("could not build RSA key parameters");
			}

			/*
			 * The factors must be those of n.  A full key check tests p and
			 * q for primality, which costs far more than an import should;
			 * this catches keys pieced together from two JWKs.
			 */
			bnctx = BN_CTX_new();
			product = BN_new();
			if (bnctx == NULL || product == NULL ||
				!BN_mul(product, priv[1], priv[2], bnctx))
				openssl_failure("could not check RSA key");
			if (BN_cmp(product, n_bn) != 0 ||
				BN_is_zero(priv[1]) || BN_is_one(priv[1]) ||
				BN_is_zero(priv[2]) || BN_is_one(priv[2]))
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid JWK: RSA factors do not match the modulus"));
		}
		params = OSSL_PARAM_BLD_to_param(bld);
		if (params == NULL)
			openssl_failure("could not build RSA key parameters");

		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
		if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1)
			openssl_failure("could not initialize RSA key import");
		if (EVP_PKEY_fromdata(ctx, &out,
							  want_private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
							  params) != 1)
			openssl_failure("could not import RSA key");
		pkey = out;
		done = true;
	}
	PG_FINALLY();
	{
		EVP_PKEY_CTX_free(ctx);
		OSSL_PARAM_free(params);
		OSSL_PARAM_BLD_free(bld);
		BN_CTX_free(bnctx);
		BN_clear_free(product);
		for (int i = 0; i < RSA_PRIVATE_COUNT; i++)
			BN_clear_free(priv[i]);
		BN_free(e_bn);
		BN_free(n_bn);
		if (!done)
			EVP_PKEY_free(pkey);
	}
	PG_END_TRY();

	*rsa_bytes = (int) nlen;
	pfree(n);
	pfree(e);
	return pkey;
}

static EVP_PKEY *
import_okp(Jsonb *jwk, bool want_private)
{
	JsonbValue	crv;
	JsonbValue	val;
	unsigned char *x;
	size_t		xlen;
	unsigned char *volatile d = NULL;
	volatile size_t dlen = 0;
	EVP_PKEY   *volatile pkey = NULL;
	volatile bool done = false;

	require_member(jwk, "crv", &crv);
	if (!member_equals(&crv, "Ed25519"))
		unsupported_curve(&crv, "OKP", "Ed25519");
	require_member(jwk, "x", &val);
	x = decode_member("x", &val, &xlen);
	if (xlen != ED25519_BYTES)
		wrong_length("x", "an Ed25519 key", ED25519_BYTES, xlen);
	if (want_private)
		require_member(jwk, "d", &val);

	PG_TRY();
	{
		if (want_private)
		{
			unsigned char derived[ED25519_BYTES];
			size_t		derived_len = sizeof(derived);
			size_t		len;

			d = decode_member("d", &val, &len);
			dlen = len;
			if (len != ED25519_BYTES)
				wrong_length("d", "an Ed25519 key", ED25519_BYTES, len);
			pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL,
												d, ED25519_BYTES);
			if (pkey == NULL)
				openssl_failure("could not import Ed25519 key");

			/*
			 * An Ed25519 public key is derived from the private one, so a
			 * different x can only be a mistake, and would publish a key
			 * that verifies none of our signatures.
			 */
			if (EVP_PKEY_get_raw_public_key(pkey, derived, &derived_len) != 1 ||
				derived_len != ED25519_BYTES)
				openssl_failure("could not derive Ed25519 public key");
			if (CRYPTO_memcmp(derived, x, ED25519_BYTES) != 0)
				key_mismatch();
		}
		else
		{
			pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
											   x, ED25519_BYTES);
			if (pkey == NULL)
				openssl_failure("could not import Ed25519 key");
		}
		done = true;
	}
	PG_FINALLY();
	{
		if (d != NULL)
		{
			explicit_bzero(d, dlen);
			pfree(d);
		}
		if (!done)
			EVP_PKEY_free(pkey);
	}
	PG_END_TRY();

	pfree(x);
	return pkey;
}

/* the secret of an oct key, in palloc'd memory that the caller cleanses */
static unsigned char *
import_oct(Jsonb *jwk, int *secret_len)
{
	JsonbValue	val;
	unsigned char *k;
	size_t		len;

	require_member(jwk, "k", &val);
	k = decode_member("k", &val, &len);
	if (len < OCT_MIN_BYTES)
	{
		explicit_bzero(k, len);
		pfree(k);
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("symmetric key is too short"),
				errdetail("Member \"k\" must decode to at least %d bytes, not %zu.",
						  OCT_MIN_BYTES, len));
	}
	*secret_len = (int) len;
	return k;
}

/* "use" and "key_ops" (RFC 7517 4.2, 4.3): this key is for signatures */
static void
check_usage(Jsonb *jwk)
{
	JsonbValue	val;

	if (get_member(jwk, "use", &val) && !member_equals(&val, "sig"))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unsupported JWK use \"%s\"", member_text(&val)),
				errdetail("Only signing keys, with \"use\" \"sig\", are accepted."));

	if (getKeyJsonValueFromContainer(&jwk->root, "key_ops", strlen("key_ops"),
									 &val) != NULL)
	{
		JsonbContainer *ops;
		uint32		count;

		if (val.type != jbvBinary ||
			!JsonContainerIsArray(val.val.binary.data) ||
			JsonContainerIsScalar(val.val.binary.data))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid JWK: member \"key_ops\" is not an array of strings"));
		ops = val.val.binary.data;
		count = JsonContainerSize(ops);
		for (uint32 i = 0; i < count; i++)
		{
			JsonbValue *op = getIthJsonbValueFromContainer(ops, i);

			if (op == NULL || op->type != jbvString)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid JWK: member \"key_ops\" is not an array of strings"));
			pfree(op);
		}
	}
}

/*
 * agentidp_jwk_import
 *
 * Everything that can be refused is checked before an OpenSSL key exists,
 * and nothing can fail once it does, so the key never leaks.
 */
AgentidpJwk *
agentidp_jwk_import(Jsonb *jwk, bool want_private)
{
	AgentidpJwk *key;
	JsonbValue	val;
	AgentidpKty kty;
	char	   *kid = NULL;
	char	   *alg = NULL;

	check_object(jwk);
	require_member(jwk, "kty", &val);
	kty = parse_kty(&val);

	if (!want_private)
	{
		/* the secret k is the whole of an oct key: there is no public part */
		if (kty == AGENTIDP_KTY_OCT)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("symmetric key is not allowed here"),
					errdetail("A JWK of type \"oct\" is a shared secret; only public keys are accepted here."));
		for (int i = 0; i < lengthof(private_members); i++)
			if (has_member(jwk, private_members[i]))
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid JWK: private member \"%s\" is not allowed here",
							   private_members[i]),
						errdetail("Only public keys are accepted here."));
	}

	check_usage(jwk);
	if (get_member(jwk, "alg", &val))
		alg = member_text(&val);
	if (get_member(jwk, "kid", &val))
	{
		if (val.val.string.len == 0)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid JWK: member \"kid\" is empty"));
		if (val.val.string.len > KID_MAX_BYTES)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid JWK: member \"kid\" is too long"),
					errdetail("A key ID may have at most %d bytes.",
							  KID_MAX_BYTES));
		kid = member_text(&val);
	}
	else
		kid = agentidp_jwk_thumbprint(jwk);

	key = palloc0(sizeof(AgentidpJwk));
	key->kty = kty;
	key->has_private = want_private;
	key->kid = kid;
	key->alg = alg;
	ERR_clear_error();
	switch (kty)
	{
		case AGENTIDP_KTY_EC:
			key->pkey = import_ec(jwk, want_private);
			break;
		case AGENTIDP_KTY_RSA:
			key->pkey = import_rsa(jwk, want_private, &key->rsa_bytes);
			break;
		case AGENTIDP_KTY_OKP:
			key->pkey = import_okp(jwk, want_private);
			break;
		case AGENTIDP_KTY_OCT:
			key->secret = import_oct(jwk, &key->secret_len);
			break;
	}
	return key;
}

/*
 * agentidp_jwk_free
 *
 * Frees the OpenSSL key and cleanses the secret; kid, alg and the struct
 * itself are plain palloc'd memory and go with their memory context.  Safe
 * to call twice, and with NULL.
 */
void
agentidp_jwk_free(AgentidpJwk *key)
{
	if (key == NULL)
		return;
	EVP_PKEY_free(key->pkey);
	key->pkey = NULL;
	if (key->secret != NULL)
	{
		explicit_bzero(key->secret, key->secret_len);
		pfree(key->secret);
		key->secret = NULL;
		key->secret_len = 0;
	}
	key->has_private = false;
}


/*
 * Export
 */

static void
push_member(JsonbParseState **state, const char *name, const char *value)
{
	JsonbValue	k;
	JsonbValue	v;

	k.type = jbvString;
	k.val.string.val = (char *) name;
	k.val.string.len = strlen(name);
	pushJsonbValue(state, WJB_KEY, &k);
	v.type = jbvString;
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * Base64url of the BIGNUM parameter name of pkey, in new palloc'd memory:
 * left-padded to pad bytes when pad > 0, as EC coordinates and scalars are
 * (RFC 7518 6.2.1.2, 6.2.2.1), else the shortest encoding that RFC 7518
 * section 2 asks of RSA's values.  The BIGNUM is freed, and the raw bytes
 * cleansed, before anything can raise an error.
 */
static char *
bn_param_b64(EVP_PKEY *pkey, const char *name, int pad)
{
	unsigned char buf[RSA_MAX_BITS / 8];
	char	   *out = palloc(AGENTIDP_B64URL_LEN(sizeof(buf)) + 1);
	BIGNUM	   *bn = NULL;
	int			len;

	if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1)
	{
		BN_clear_free(bn);
		openssl_failure("could not read key parameter \"%s\"", name);
	}
	len = pad > 0 ? pad : BN_num_bytes(bn);
	/* zero is one zero octet, not the empty string */
	if (len == 0)
		len = 1;
	if (len > (int) sizeof(buf) || BN_bn2binpad(bn, buf, len) != len)
	{
		BN_clear_free(bn);
		explicit_bzero(buf, sizeof(buf));
		openssl_failure("could not encode key parameter \"%s\"", name);
	}
	BN_clear_free(bn);
	agentidp_b64url_encode(buf, len, out);
	explicit_bzero(buf, len);
	return out;
}

static char *
raw_key_b64(EVP_PKEY *pkey, bool private)
{
	unsigned char buf[ED25519_BYTES];
	size_t		len = sizeof(buf);
	char	   *out = palloc(AGENTIDP_B64URL_LEN(sizeof(buf)) + 1);
	int			ok;

	if (private)
		ok = EVP_PKEY_get_raw_private_key(pkey, buf, &len);
	else
		ok = EVP_PKEY_get_raw_public_key(pkey, buf, &len);
	if (ok != 1 || len != sizeof(buf))
	{
		explicit_bzero(buf, sizeof(buf));
		openssl_failure("could not read Ed25519 key");
	}
	agentidp_b64url_encode(buf, len, out);
	explicit_bzero(buf, len);
	return out;
}

#define EXPORT_MAX_SECRETS	RSA_PRIVATE_COUNT

/*
 * agentidp_jwk_export
 *
 * The public members (RFC 7518 6.2.1, 6.3.1, RFC 8037 2), with
 * include_private the private ones too, plus "kid", "alg" and "use".  The
 * result of a private export holds the secrets: the caller cleanses it.
 * Our own copies of them are cleansed on every path.
 */
Jsonb *
agentidp_jwk_export(const AgentidpJwk *key, bool include_private)
{
	char	   *volatile secrets[EXPORT_MAX_SECRETS] = {NULL};
	volatile int nsecrets = 0;
	Jsonb	   *result = NULL;

	if (key->kty == AGENTIDP_KTY_OCT && !include_private)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a symmetric key has no public JWK"),
				errdetail("The secret \"k\" is the whole of a key of type \"oct\"."));
	if (include_private && !key->has_private)
		elog(ERROR, "JWK export: key \"%s\" has no private part",
			 key->kid ? key->kid : "");
	if (key->kty != AGENTIDP_KTY_OCT && key->pkey == NULL)
		elog(ERROR, "JWK export: key \"%s\" has no OpenSSL key",
			 key->kid ? key->kid : "");
	if (key->kty == AGENTIDP_KTY_OCT && key->secret == NULL)
		elog(ERROR, "JWK export: key \"%s\" has no secret",
			 key->kid ? key->kid : "");

	ERR_clear_error();
	PG_TRY();
	{
		JsonbParseState *state = NULL;
		JsonbValue *object;
		char	   *s;

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		switch (key->kty)
		{
			case AGENTIDP_KTY_EC:
				push_member(&state, "kty", "EC");
				push_member(&state, "crv", "P-256");
				push_member(&state, "x",
							bn_param_b64(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X,
										 P256_BYTES));
				push_member(&state, "y",
							bn_param_b64(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y,
										 P256_BYTES));
				if (include_private)
				{
					s = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_PRIV_KEY,
									 P256_BYTES);
					secrets[nsecrets++] = s;
					push_member(&state, "d", s);
				}
				break;
			case AGENTIDP_KTY_RSA:
				push_member(&state, "kty", "RSA");
				push_member(&state, "n",
							bn_param_b64(key->pkey, OSSL_PKEY_PARAM_RSA_N, 0));
				push_member(&state, "e",
							bn_param_b64(key->pkey, OSSL_PKEY_PARAM_RSA_E, 0));
				if (include_private)
				{
					for (int i = 0; i < RSA_PRIVATE_COUNT; i++)
					{
						s = bn_param_b64(key->pkey, rsa_private_params[i], 0);
						secrets[nsecrets++] = s;
						push_member(&state, rsa_private_members[i], s);
					}
				}
				break;
			case AGENTIDP_KTY_OKP:
				push_member(&state, "kty", "OKP");
				push_member(&state, "crv", "Ed25519");
				push_member(&state, "x", raw_key_b64(key->pkey, false));
				if (include_private)
				{
					s = raw_key_b64(key->pkey, true);
					secrets[nsecrets++] = s;
					push_member(&state, "d", s);
				}
				break;
			case AGENTIDP_KTY_OCT:
				push_member(&state, "kty", "oct");
				s = palloc(AGENTIDP_B64URL_LEN(key->secret_len) + 1);
				secrets[nsecrets++] = s;
				agentidp_b64url_encode(key->secret, key->secret_len, s);
				push_member(&state, "k", s);
				break;
		}
		if (key->kid != NULL)
			push_member(&state, "kid", key->kid);
		if (key->alg != NULL)
			push_member(&state, "alg", key->alg);
		push_member(&state, "use", "sig");
		object = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		result = JsonbValueToJsonb(object);
	}
	PG_FINALLY();
	{
		for (int i = 0; i < nsecrets; i++)
		{
			explicit_bzero(secrets[i], strlen(secrets[i]));
			pfree(secrets[i]);
		}
	}
	PG_END_TRY();

	return result;
}


/*
 * Thumbprints
 */

/*
 * Append val as a JSON string.  RFC 7638 hashes the members as given, but
 * they must still make valid JSON: escape what JSON requires, and only
 * that, as ECMAScript's JSON.stringify does, so that a thumbprint matches
 * other implementations' even for a value no valid key has.
 */
static void
append_json_string(StringInfo buf, const char *val, int len)
{
	appendStringInfoCharMacro(buf, '"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) val[i];

		switch (c)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			default:
				if (c < 0x20)
					appendStringInfo(buf, "\\u%04x", c);
				else
					appendStringInfoCharMacro(buf, c);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}

/* the length append_json_string() will add, quotes included */
static int
json_string_len(const char *val, int len)
{
	int			total = 2;

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) val[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' ||
			c == '\n' || c == '\r' || c == '\t')
			total += 2;
		else if (c < 0x20)
			total += 6;
		else
			total += 1;
	}
	return total;
}

/*
 * agentidp_jwk_thumbprint
 *
 * RFC 7638: SHA-256 over the required members in lexicographic order, no
 * white space, values exactly as the JWK gives them.  The JWK is not
 * validated beyond that: the thumbprint of a key we could not import is
 * still well defined.  For an oct key the input holds the secret, so it is
 * sized once up front (no stale copies from growing it) and cleansed.
 */
char *
agentidp_jwk_thumbprint(Jsonb *jwk)
{
	JsonbValue	kty;
	JsonbValue	vals[4];
	const char *const *members = NULL;
	int			count;
	int			total = 2;
	StringInfoData buf;
	unsigned char digest[SHA256_BYTES];
	unsigned int digest_len = 0;
	int			ok;
	char	   *out;

	check_object(jwk);
	require_member(jwk, "kty", &kty);
	switch (parse_kty(&kty))
	{
		case AGENTIDP_KTY_EC:
			members = ec_thumbprint_members;
			break;
		case AGENTIDP_KTY_RSA:
			members = rsa_thumbprint_members;
			break;
		case AGENTIDP_KTY_OKP:
			members = okp_thumbprint_members;
			break;
		case AGENTIDP_KTY_OCT:
			members = oct_thumbprint_members;
			break;
	}

	for (count = 0; members[count] != NULL; count++)
	{
		Assert(count < lengthof(vals));
		require_member(jwk, members[count], &vals[count]);
		/* no valid member is longer; bounds the buffer below */
		if (vals[count].val.string.len > MEMBER_MAX_CHARS)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid JWK: member \"%s\" is too long",
						   members[count]),
					errdetail("A member may encode at most %d bytes.",
							  MEMBER_MAX_BYTES));
		total += json_string_len(members[count], strlen(members[count])) + 1 +
			json_string_len(vals[count].val.string.val,
							vals[count].val.string.len) + 1;
	}

	initStringInfo(&buf);
	enlargeStringInfo(&buf, total);
	appendStringInfoCharMacro(&buf, '{');
	for (int i = 0; i < count; i++)
	{
		if (i > 0)
			appendStringInfoCharMacro(&buf, ',');
		append_json_string(&buf, members[i], strlen(members[i]));
		appendStringInfoCharMacro(&buf, ':');
		append_json_string(&buf, vals[i].val.string.val,
						   vals[i].val.string.len);
	}
	appendStringInfoCharMacro(&buf, '}');

	ok = EVP_Digest(buf.data, buf.len, digest, &digest_len, EVP_sha256(),
					NULL);
	explicit_bzero(buf.data, buf.maxlen);
	pfree(buf.data);
	if (ok != 1 || digest_len != SHA256_BYTES)
		openssl_failure("could not compute JWK thumbprint");

	out = palloc(AGENTIDP_B64URL_LEN(SHA256_BYTES) + 1);
	agentidp_b64url_encode(digest, SHA256_BYTES, out);
	return out;
}


/*
 * Generation
 */

/*
 * agentidp_jwk_generate
 *
 * A new private JWK whose kid is its thumbprint.  RS256 and PS256 take the
 * same key: 2048 bits, e = 65537.  The result holds the private key: the
 * caller encrypts it for storage and cleanses it.
 */
Jsonb *
agentidp_jwk_generate(const char *alg)
{
	AgentidpKty kty;
	EVP_PKEY   *volatile pkey = NULL;
	unsigned char *volatile secret = NULL;
	Jsonb	   *volatile draft = NULL;
	Jsonb	   *result = NULL;

	if (alg == NULL)
		elog(ERROR, "JWK generation: algorithm is null");
	if (strcmp(alg, "ES256") == 0)
		kty = AGENTIDP_KTY_EC;
	else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "PS256") == 0)
		kty = AGENTIDP_KTY_RSA;
	else if (strcmp(alg, "EdDSA") == 0)
		kty = AGENTIDP_KTY_OKP;
	else if (strcmp(alg, "HS256") == 0)
		kty = AGENTIDP_KTY_OCT;
	else
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unsupported algorithm \"%s\"", alg),
				errhint("Supported algorithms are ES256, RS256, PS256, EdDSA and HS256."));

	ERR_clear_error();
	PG_TRY();
	{
		AgentidpJwk key;

		memset(&key, 0, sizeof(key));
		key.kty = kty;
		key.has_private = true;
		key.alg = pstrdup(alg);
		switch (kty)
		{
			case AGENTIDP_KTY_EC:
				pkey = EVP_EC_gen("P-256");
				break;
			case AGENTIDP_KTY_RSA:
				pkey = EVP_RSA_gen(RSA_GENERATE_BITS);
				key.rsa_bytes = RSA_GENERATE_BITS / 8;
				break;
			case AGENTIDP_KTY_OKP:
				pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
				break;
			case AGENTIDP_KTY_OCT:
				secret = palloc(OCT_GENERATE_BYTES);
				if (RAND_bytes(secret, OCT_GENERATE_BYTES) != 1)
					openssl_failure("could not generate random bytes for a key");
				key.secret = secret;
				key.secret_len = OCT_GENERATE_BYTES;
				break;
		}
		if (kty != AGENTIDP_KTY_OCT && pkey == NULL)
			openssl_failure("could not generate a key");
		key.pkey = pkey;

		/* the thumbprint needs the JWK's members, so export twice */
		draft = agentidp_jwk_export(&key, true);
		key.kid = agentidp_jwk_thumbprint(draft);
		explicit_bzero(VARDATA(draft), VARSIZE(draft) - VARHDRSZ);
		pfree(draft);
		draft = NULL;

		result = agentidp_jwk_export(&key, true);
	}
	PG_FINALLY();
	{
		if (draft != NULL)
		{
			explicit_bzero(VARDATA(draft), VARSIZE(draft) - VARHDRSZ);
			pfree(draft);
		}
		if (secret != NULL)
		{
			explicit_bzero(secret, OCT_GENERATE_BYTES);
			pfree(secret);
		}
		EVP_PKEY_free(pkey);
	}
	PG_END_TRY();

	return result;
}
