/*-------------------------------------------------------------------------
 *
 * jwk.h
 *	  JSON Web Keys (RFC 7517, 7518 section 6, RFC 8037): what jose.c and
 *	  keys.c use of jwk.c.
 *
 * IDENTIFICATION
 *	  src/jwk.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_JWK_H
#define AGENTIDP_JWK_H

#include <openssl/evp.h>

#include "utils/jsonb.h"

typedef enum AgentidpKty
{
	AGENTIDP_KTY_EC,			/* P-256 only */
	AGENTIDP_KTY_RSA,			/* 2048 to 4096 bits */
	AGENTIDP_KTY_OKP,			/* Ed25519 only */
	AGENTIDP_KTY_OCT			/* HMAC secret, at least 32 bytes */
} AgentidpKty;

/*
 * An imported key.  pkey is an OpenSSL object (NULL for oct) that the
 * holder frees with agentidp_jwk_free(); everything else is palloc'd in
 * the memory context that was current at import.
 */
typedef struct AgentidpJwk
{
	AgentidpKty kty;
	EVP_PKEY   *pkey;
	unsigned char *secret;		/* oct only; cleansed by agentidp_jwk_free */
	int			secret_len;
	bool		has_private;
	char	   *kid;			/* "kid", or the RFC 7638 thumbprint if absent */
	char	   *alg;			/* "alg" member, or NULL */
	int			rsa_bytes;		/* RSA modulus length in bytes, else 0 */
} AgentidpJwk;

/*
 * Import a JWK.  Raises 22023 with a message saying what is wrong for a
 * malformed or unsupported key (unknown kty or crv, RSA under 2048 or over
 * 4096 bits, even modulus, e < 3 or even, EC point not on the curve, oct
 * under 32 bytes, "use" other than "sig", bad base64url).  With
 * want_private, private members are required (and kept); without, they are
 * refused (a public key set must not carry private keys).
 */
extern AgentidpJwk *agentidp_jwk_import(Jsonb *jwk, bool want_private);
extern void agentidp_jwk_free(AgentidpJwk *key);

/* the public JWK, or with include_private the private one too */
extern Jsonb *agentidp_jwk_export(const AgentidpJwk *key, bool include_private);

/* RFC 7638 thumbprint, base64url of SHA-256 over the required members */
extern char *agentidp_jwk_thumbprint(Jsonb *jwk);

/* a new private JWK for "ES256", "RS256", "PS256", "EdDSA" or "HS256" */
extern Jsonb *agentidp_jwk_generate(const char *alg);

#endif							/* AGENTIDP_JWK_H */
