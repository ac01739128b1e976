/*-------------------------------------------------------------------------
 *
 * jose.c
 *	  JOSE building blocks.  For now: base64url without padding, strict on
 *	  decode.  Pure functions: no table access, no GUCs, no palloc.
 *
 * IDENTIFICATION
 *	  src/jose.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "jose.h"

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

static int
b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

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
		int			v = b64url_value(src[i]);

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
