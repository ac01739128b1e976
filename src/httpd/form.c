/*-------------------------------------------------------------------------
 *
 * form.c
 *	  Strict application/x-www-form-urlencoded parsing, Base64 for HTTP
 *	  Basic authentication, and a growable string buffer with a JSON string
 *	  escaper: the daemon builds JSON only for the request object it passes
 *	  to the database and for its own error bodies.  Pure functions, no
 *	  locks, no logging.
 *
 * IDENTIFICATION
 *	  src/httpd/form.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"

/* a form of the OAuth endpoints has a dozen fields; more is abuse */
#define FORM_MAX_FIELDS 64

void
httpd_buf_append(StrBuf *buf, const char *s, size_t len)
{
	if (buf->failed)
		return;
	if (buf->len + len + 1 > buf->cap)
	{
		size_t		cap = buf->cap ? buf->cap : 256;
		char	   *p;

		while (buf->len + len + 1 > cap)
			cap *= 2;
		p = realloc(buf->data, cap);
		if (p == NULL)
		{
			buf->failed = true;
			return;
		}
		buf->data = p;
		buf->cap = cap;
	}
	memcpy(buf->data + buf->len, s, len);
	buf->len += len;
	buf->data[buf->len] = '\0';
}

void
httpd_buf_appends(StrBuf *buf, const char *s)
{
	httpd_buf_append(buf, s, strlen(s));
}

void
httpd_buf_printf(StrBuf *buf, const char *fmt,...)
{
	char		tmp[512];
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
	{
		buf->failed = true;
		return;
	}
	if ((size_t) n < sizeof(tmp))
	{
		httpd_buf_append(buf, tmp, n);
		return;
	}
	/* longer than the stack buffer: format again into the buffer itself */
	httpd_buf_append(buf, "", 0);
	if (buf->failed)
		return;
	if (buf->len + n + 1 > buf->cap)
	{
		size_t		cap = buf->cap;
		char	   *p;

		while (buf->len + n + 1 > cap)
			cap *= 2;
		p = realloc(buf->data, cap);
		if (p == NULL)
		{
			buf->failed = true;
			return;
		}
		buf->data = p;
		buf->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(buf->data + buf->len, n + 1, fmt, ap);
	va_end(ap);
	buf->len += n;
}

/*
 * A JSON string literal (RFC 8259 section 7).  The input is valid UTF-8
 * without NUL (the form parser checks), so only quotes, backslashes and
 * control characters need escaping.
 */
void
httpd_buf_json_string(StrBuf *buf, const char *s)
{
	const char *run = s;

	httpd_buf_append(buf, "\"", 1);
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;
		char		esc[8];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		httpd_buf_append(buf, run, s - run);
		switch (c)
		{
			case '"':
				httpd_buf_append(buf, "\\\"", 2);
				break;
			case '\\':
				httpd_buf_append(buf, "\\\\", 2);
				break;
			case '\n':
				httpd_buf_append(buf, "\\n", 2);
				break;
			case '\r':
				httpd_buf_append(buf, "\\r", 2);
				break;
			case '\t':
				httpd_buf_append(buf, "\\t", 2);
				break;
			default:
				snprintf(esc, sizeof(esc), "\\u%04x", c);
				httpd_buf_append(buf, esc, 6);
				break;
		}
		run = s + 1;
	}
	httpd_buf_append(buf, run, s - run);
	httpd_buf_append(buf, "\"", 1);
}

void
httpd_buf_free(StrBuf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = buf->cap = 0;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decoding (and '+' as a space in forms).  NULL for an invalid
 * escape, an encoded NUL (PostgreSQL text cannot hold it) or bytes that
 * are not UTF-8, so that every decoded value can go into a JSON string.
 */
char *
httpd_url_decode(const char *s, size_t len, bool plus_is_space)
{
	char	   *out = malloc(len + 1);
	size_t		i;
	size_t		n = 0;

	if (out == NULL)
		return NULL;
	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '%')
		{
			int			hi,
						lo;

			if (i + 2 >= len)
				goto bad;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				goto bad;
			out[n++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else if (c == '+' && plus_is_space)
			out[n++] = ' ';
		else if (c == '\0')
			goto bad;
		else
			out[n++] = c;
	}
	out[n] = '\0';
	if (!httpd_utf8_valid(out, n))
		goto bad;
	return out;

bad:
	free(out);
	return NULL;
}

/* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF */
bool
httpd_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *) str;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = s[i];
		int			n;
		unsigned int cp;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		else if (c >= 0xc2 && c <= 0xdf)
		{
			n = 1;
			cp = c & 0x1f;
		}
		else if (c >= 0xe0 && c <= 0xef)
		{
			n = 2;
			cp = c & 0x0f;
		}
		else if (c >= 0xf0 && c <= 0xf4)
		{
			n = 3;
			cp = c & 0x07;
		}
		else
			return false;
		if (i + n >= len)
			return false;
		for (int k = 1; k <= n; k++)
		{
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
			cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/*
 * Parse a form body.  RFC 6749 section 3.1: parameters must not repeat,
 * and one sent without a value counts as omitted (httpd_form_get returns
 * NULL for it).  The error text names no value, since values are secrets.
 */
bool
httpd_form_parse(const char *body, size_t len, Form *form, const char **error)
{
	size_t		pos = 0;

	form->fields = NULL;
	form->nfields = 0;
	while (pos < len)
	{
		const char *seg = body + pos;
		const char *amp = memchr(seg, '&', len - pos);
		size_t		seglen = amp ? (size_t) (amp - seg) : len - pos;
		const char *eq;
		char	   *name;
		char	   *value;

		pos += seglen + 1;
		if (seglen == 0)
			continue;
		eq = memchr(seg, '=', seglen);
		name = httpd_url_decode(seg, eq ? (size_t) (eq - seg) : seglen, true);
		value = eq ? httpd_url_decode(eq + 1, seglen - (eq - seg) - 1, true)
			: strdup("");
		if (name == NULL || value == NULL)
		{
			free(name);
			free(value);
			*error = "the request body is not valid form-urlencoded UTF-8";
			goto fail;
		}
		*error = NULL;
		if (name[0] == '\0')
			*error = "a form parameter has no name";
		else if (form->nfields >= FORM_MAX_FIELDS)
			*error = "too many request parameters";
		else
		{
			/* an empty value repeats a name too */
			for (int i = 0; i < form->nfields; i++)
				if (strcmp(form->fields[i].name, name) == 0)
					*error = "a request parameter is repeated";
		}
		if (*error != NULL)
		{
			free(name);
			explicit_bzero(value, strlen(value));
			free(value);
			goto fail;
		}
		{
			FormField  *f = realloc(form->fields,
									(form->nfields + 1) * sizeof(FormField));

			if (f == NULL)
			{
				free(name);
				free(value);
				*error = "out of memory";
				goto fail;
			}
			form->fields = f;
			f[form->nfields].name = name;
			f[form->nfields].value = value;
			form->nfields++;
		}
	}
	return true;

fail:
	httpd_form_free(form);
	return false;
}

const char *
httpd_form_get(const Form *form, const char *name)
{
	for (int i = 0; i < form->nfields; i++)
		if (strcmp(form->fields[i].name, name) == 0)
			return form->fields[i].value[0] ? form->fields[i].value : NULL;
	return NULL;
}

void
httpd_form_free(Form *form)
{
	for (int i = 0; i < form->nfields; i++)
	{
		/* values hold secrets: do not leave them in freed memory */
		explicit_bzero(form->fields[i].value, strlen(form->fields[i].value));
		free(form->fields[i].name);
		free(form->fields[i].value);
	}
	free(form->fields);
	form->fields = NULL;
	form->nfields = 0;
}

/* standard Base64 with padding (RFC 4648 section 4), as Basic auth uses */
unsigned char *
httpd_base64_decode(const char *s, size_t len, size_t *outlen)
{
	unsigned char *out;
	unsigned int acc = 0;
	int			bits = 0;
	size_t		n = 0;
	size_t		pad = 0;

	if (len % 4 != 0)
		return NULL;
	out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];
		int			v;

		if (c == '=')
		{
			/* padding only at the end, at most two */
			if (i < len - 2 || ++pad > 2)
				goto bad;
			continue;
		}
		if (pad)
			goto bad;
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '+')
			v = 62;
		else if (c == '/')
			v = 63;
		else
			goto bad;
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (acc >> bits) & 0xff;
		}
	}
	out[n] = '\0';
	*outlen = n;
	return out;

bad:
	free(out);
	return NULL;
}
