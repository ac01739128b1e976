/*-------------------------------------------------------------------------
 *
 * jose_json.c
 *	  Strict JSON for JOSE headers and claims, and its compact text form.
 *
 *	  jsonb keeps the last of duplicate members silently, so it is never
 *	  the first parser of a token: RFC 7515 section 5.2 lets a JWS parser
 *	  either refuse duplicates or take the last, and two parsers that choose
 *	  differently read different claims from one token.  Here PostgreSQL's
 *	  own JSON lexer (common/jsonapi.h) parses with semantic actions that
 *	  refuse duplicates (compared after unescaping), nesting deeper than
 *	  AGENTIDP_JSON_MAX_DEPTH, objects with too many members, and anything
 *	  but a single top-level object; the same actions build the jsonb, so
 *	  the text is read once.  Pure functions: no table access, no GUCs.
 *
 * IDENTIFICATION
 *	  src/jose_json.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "jose.h"

typedef struct StrictParse
{
	const char *what;			/* "header" or "payload", for messages */
	JsonbParseState *state;
	JsonbValue *result;
	int			depth;
	int			values;
	/* member names seen so far in the object open at each depth */
	List	   *names[AGENTIDP_JSON_MAX_DEPTH + 1];
} StrictParse;

static void pg_attribute_noreturn()
strict_error(StrictParse *sp, const char *problem)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("malformed JWS: %s %s", sp->what, problem));
}

static void
enter(StrictParse *sp)
{
	if (++sp->depth > AGENTIDP_JSON_MAX_DEPTH)
		strict_error(sp, "is nested too deeply");
	sp->names[sp->depth] = NIL;
}

static void
count_value(StrictParse *sp)
{
	if (++sp->values > AGENTIDP_JSON_MAX_VALUES)
		strict_error(sp, "has too many values");
}

static void
push(StrictParse *sp, JsonbIteratorToken tok, JsonbValue *v)
{
	JsonbValue *r = pushJsonbValue(&sp->state, tok, v);

	if (sp->state == NULL)
		sp->result = r;
}

static void
on_object_start(void *arg)
{
	StrictParse *sp = arg;

	count_value(sp);
	enter(sp);
	push(sp, WJB_BEGIN_OBJECT, NULL);
}

static void
on_object_end(void *arg)
{
	StrictParse *sp = arg;

	list_free(sp->names[sp->depth]);
	sp->names[sp->depth] = NIL;
	sp->depth--;
	push(sp, WJB_END_OBJECT, NULL);
}

static void
on_array_start(void *arg)
{
	StrictParse *sp = arg;

	if (sp->depth == 0)
		strict_error(sp, "is not a JSON object");
	count_value(sp);
	enter(sp);
	push(sp, WJB_BEGIN_ARRAY, NULL);
}

static void
on_array_end(void *arg)
{
	StrictParse *sp = arg;

	sp->depth--;
	push(sp, WJB_END_ARRAY, NULL);
}

static void
on_field_start(void *arg, char *fname, bool isnull)
{
	StrictParse *sp = arg;
	ListCell   *lc;
	JsonbValue	key;

	/* fname is unescaped, so "\u0061lg" and "alg" collide as they should */
	foreach(lc, sp->names[sp->depth])
	{
		if (strcmp((char *) lfirst(lc), fname) == 0)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("malformed JWS: %s has a duplicate member", sp->what));
	}
	if (list_length(sp->names[sp->depth]) >= AGENTIDP_JSON_MAX_MEMBERS)
		strict_error(sp, "has an object with too many members");
	sp->names[sp->depth] = lappend(sp->names[sp->depth], fname);

	key.type = jbvString;
	key.val.string.len = strlen(fname);
	key.val.string.val = fname;
	push(sp, WJB_KEY, &key);
}

static void
on_scalar(void *arg, char *token, JsonTokenType type)
{
	StrictParse *sp = arg;
	JsonbValue	v;

	if (sp->depth == 0)
		strict_error(sp, "is not a JSON object");
	count_value(sp);

	switch (type)
	{
		case JSON_TOKEN_STRING:
			v.type = jbvString;
			v.val.string.len = strlen(token);
			v.val.string.val = token;
			break;
		case JSON_TOKEN_NUMBER:
			{
				/*
				 * The lexer has checked the RFC 8259 syntax; bound the
				 * exponent, which numeric_in would refuse with its own
				 * error (1e200000) or expand at length (1e-100000).
				 */
				const char *e = strpbrk(token, "eE");

				if (e != NULL)
				{
					int			digits = 0;
					long		exponent = 0;

					for (e++; *e == '+' || *e == '-'; e++)
						;
					/* digits counted first: no overflow, whatever the length */
					for (; *e >= '0' && *e <= '9' && digits < 6; e++, digits++)
						exponent = exponent * 10 + (*e - '0');
					if (digits >= 6 || exponent > 1000)
						strict_error(sp, "has a number out of range");
				}
			}
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																CStringGetDatum(token),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
			v.type = jbvBool;
			v.val.boolean = true;
			break;
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = false;
			break;
		default:
			v.type = jbvNull;
			break;
	}
	push(sp, sp->state->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE, &v);
}

/*
 * Parse len bytes of UTF-8 as exactly one JSON object, strictly.  what
 * names the part ("header", "payload") in error messages, all of which are
 * 22023.
 */
Jsonb *
agentidp_json_parse_strict(const char *json, int len, const char *what)
{
	StrictParse sp = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;
	JsonParseErrorType rc;
	char	   *text;

	sp.what = what;

	/* invalid UTF-8, overlong forms and NUL bytes never reach the lexer */
	if (!pg_verify_mbstr(PG_UTF8, json, len, true))
		strict_error(&sp, "is not valid UTF-8");
	text = pg_any_to_server(json, len, PG_UTF8);

	sem.semstate = &sp;
	sem.object_start = on_object_start;
	sem.object_end = on_object_end;
	sem.array_start = on_array_start;
	sem.array_end = on_array_end;
	sem.object_field_start = on_field_start;
	sem.scalar = on_scalar;

	/* unconverted, text is json itself: not NUL-terminated */
	lex = makeJsonLexContextCstringLen(text, text == json ? len : strlen(text),
									   GetDatabaseEncoding(), true);
	rc = pg_parse_json(lex, &sem);

	/*
	 * json_errdetail() would quote the offending bytes; a token's bytes do
	 * not belong in the server log, so the message stays generic.
	 */
	if (rc != JSON_SUCCESS)
		strict_error(&sp, "is not valid JSON");
	if (sp.result == NULL)
		strict_error(&sp, "is not a JSON object");
	return JsonbValueToJsonb(sp.result);
}

/*
 * Compact JSON text of a jsonb object: no white space, members in jsonb's
 * order.  Used for what we sign, so tokens are as short as they can be.
 */
void
agentidp_json_compact(StringInfo out, Jsonb *jb)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				if (!first)
					appendStringInfoChar(out, ',');
				appendStringInfoChar(out, tok == WJB_BEGIN_OBJECT ? '{' : '[');
				first = true;
				continue;
			case WJB_END_OBJECT:
				appendStringInfoChar(out, '}');
				first = false;
				continue;
			case WJB_END_ARRAY:
				appendStringInfoChar(out, ']');
				first = false;
				continue;
			case WJB_KEY:
				if (!first)
					appendStringInfoChar(out, ',');
				escape_json(out, pnstrdup(v.val.string.val, v.val.string.len));
				appendStringInfoChar(out, ':');
				first = true;	/* the value needs no comma */
				continue;
			default:
				break;
		}

		/* a scalar value or element */
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		switch (v.type)
		{
			case jbvString:
				escape_json(out, pnstrdup(v.val.string.val, v.val.string.len));
				break;
			case jbvNumeric:
				appendStringInfoString(out,
									   DatumGetCString(DirectFunctionCall1(numeric_out,
																		   NumericGetDatum(v.val.numeric))));
				break;
			case jbvBool:
				appendStringInfoString(out, v.val.boolean ? "true" : "false");
				break;
			default:
				appendStringInfoString(out, "null");
				break;
		}
	}
}
