/*-------------------------------------------------------------------------
 *
 * jose.h
 *	  What other parts use of jose.c: base64url (RFC 4648 section 5).
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

#endif							/* AGENTIDP_JOSE_H */
