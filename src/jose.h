/*-------------------------------------------------------------------------
 *
 * jose.h
 *	  What other parts use of jose.c and jose_json.c: base64url (RFC 4648
 *	  section 5), strict JSON, JWS compact serialization.
 *
 * IDENTIFICATION
 *	  src/jose.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_JOSE_H
#define AGENTIDP_JOSE_H

/* length of the unpadded base64url text for len bytes, without NUL */
#define AGENTIDP_B64URL_LEN(len) (((len) * 4 + 2) / 3)

extern void agentidp_b64url_encode(const unsigned char *src, size_t len,
								   char *dst);
extern bool agentidp_b64url_decode(const char *src, size_t len,
								   unsigned char *dst, size_t *dstlen);

/*
 * Strict JSON (jose_json.c).  Limits: a token is at most
 * AGENTIDP_JWS_MAX_LEN bytes before decoding; its JSON nests at most
 * AGENTIDP_JSON_MAX_DEPTH deep, holds at most AGENTIDP_JSON_MAX_VALUES
 * values and AGENTIDP_JSON_MAX_MEMBERS members per object.
 */
#define AGENTIDP_JWS_MAX_LEN		16384
#define AGENTIDP_JSON_MAX_DEPTH		32
#define AGENTIDP_JSON_MAX_VALUES	4096
#define AGENTIDP_JSON_MAX_MEMBERS	256

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

extern Jsonb *agentidp_json_parse_strict(const char *json, int len,
										 const char *what);
extern void agentidp_json_compact(StringInfo out, Jsonb *jb);

/*
 * jws_sign with a key already imported (keys.c's tenant keys).  The signer
 * keeps OpenSSL contexts in cxt; deleting cxt frees them.
 */
struct AgentidpJwk;
typedef struct AgentidpSigner AgentidpSigner;
extern AgentidpSigner *agentidp_signer_create(struct AgentidpJwk *key,
											  MemoryContext cxt);
extern text *agentidp_signer_sign(AgentidpSigner *signer, Jsonb *payload,
								  Jsonb *header);

/*
 * A compact JWS split and its header checked (agentidp_jws_parse), then
 * verified with one key (agentidp_jws_verify_key; any AgentidpSigner
 * verifies, a public key's too).  Until verified, header members only
 * choose the key.
 */
typedef struct AgentidpJws
{
	Jsonb	   *header;
	char	   *alg;
	char	   *kid;			/* NULL when absent */
	char	   *typ;			/* NULL when absent */
	/* the segments, for verification */
	char	   *tok;
	int			len;
	char	   *dot1;
	char	   *dot2;
	unsigned char *buf;
} AgentidpJws;

extern void agentidp_jws_parse(text *token, AgentidpJws *jws, bool allow_jwk);
extern Jsonb *agentidp_jws_verify_key(AgentidpJws *jws, AgentidpSigner *key);

#endif							/* AGENTIDP_JOSE_H */
