/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  The policy hook: agentidp.policy_function, a SQL function
 *	  (input jsonb) RETURNS jsonb, and agentidp.policy_url, an external
 *	  policy engine spoken to with OPA's Data API, decide every token
 *	  issuance and every recorded action.  What a decision does (refusal,
 *	  step-up, a pending approval) is left to tokens.c and record_action;
 *	  HTTP is http.c's.
 *
 * IDENTIFICATION
 *	  src/policy.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "agentidp.h"
#include "audit.h"
#include "http.h"
#include "policy.h"

/* the longest response of a policy engine read */
#define POLICY_MAX_RESPONSE		(64 * 1024)
/* the longest reason kept from a policy's answer */
#define POLICY_MAX_REASON		256

char	   *agentidp_policy_function = NULL;
char	   *agentidp_policy_url = NULL;
static int	agentidp_policy_timeout = 200;
static bool agentidp_policy_fail_open = false;

PG_FUNCTION_INFO_V1(agentidp__policy_decide);

/* a function name as a SQL name, schema-qualified */
static bool
check_policy_function(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL || p[0] == '\0')
		return true;
	if (strlen(p) > 2 * NAMEDATALEN)
	{
		GUC_check_errdetail("A function name is at most %d characters.", 2 * NAMEDATALEN);
		return false;
	}
	/*
	 * Schema-qualified: the callers run with search_path pinned to
	 * pg_catalog, pg_temp, where no user's function is found by its name.
	 */
	if (strchr(p, '.') == NULL)
	{
		GUC_check_errdetail("Name the function with its schema, such as \"policy.decide\".");
		return false;
	}
	for (; *p; p++)
	{
		/* no parentheses: the signature is always (jsonb) */
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '.' || *p == '"' || *p == '$'))
		{
			GUC_check_errdetail("agentidp.policy_function is a function name such as \"policy.decide\", without its argument list.");
			return false;
		}
	}
	return true;
}

/* a URL that could be requested at all; its address is checked per request */
static bool
check_policy_url(char **newval, void **extra, GucSource source)
{
	bool		not_public;
	char	   *problem;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	problem = agentidp_http_url_problem(*newval, true, &not_public);
	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		return false;
	}
	return true;
}

void
agentidp_policy_init(void)
{
	DefineCustomStringVariable("agentidp.policy_function",
							   "SQL function (input jsonb) RETURNS jsonb that decides each issuance and recorded action.",
							   "Empty: no policy function.  It runs as the extension owner.",
							   &agentidp_policy_function,
							   "",
							   PGC_SUSET,
							   0,
							   check_policy_function, NULL, NULL);
	DefineCustomStringVariable("agentidp.policy_url",
							   "URL of an external policy engine (OPA Data API) that decides each issuance and recorded action.",
							   "Empty: none.  Asked after agentidp.policy_function when both are set.",
							   &agentidp_policy_url,
							   "",
							   PGC_SUSET,
							   0,
							   check_policy_url, NULL, NULL);
	DefineCustomIntVariable("agentidp.policy_timeout",
							"How long a request to agentidp.policy_url may take.",
							NULL,
							&agentidp_policy_timeout,
							200, 1, 60000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("agentidp.policy_fail_open",
							 "Whether a request is allowed when the policy engine fails.",
							 "Off (the default), an unreachable engine or an unreadable answer denies.",
							 &agentidp_policy_fail_open,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
}

/*
 * Read a decision object: {"decision": "allow" | "deny" |
 * "require_approval", "reason": "..."} or {"allow": true | false}.  False
 * when it is neither.
 */
static bool
parse_decision(Jsonb *jb, AgentidpPolicyDecision *decision, char **reason)
{
	JsonbValue	key;
	JsonbValue *v;

	*reason = NULL;
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return false;

	key.type = jbvString;
	key.val.string.val = "reason";
	key.val.string.len = 6;
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
	if (v != NULL && v->type == jbvString)
		*reason = pnstrdup(v->val.string.val,
						   pg_mbcliplen(v->val.string.val, v->val.string.len,
										POLICY_MAX_REASON));

	key.val.string.val = "decision";
	key.val.string.len = 8;
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
	if (v != NULL)
	{
		if (v->type != jbvString)
			return false;
		if (v->val.string.len == 5 && strncmp(v->val.string.val, "allow", 5) == 0)
			*decision = AGENTIDP_POLICY_ALLOW;
		else if (v->val.string.len == 4 && strncmp(v->val.string.val, "deny", 4) == 0)
			*decision = AGENTIDP_POLICY_DENY;
		else if (v->val.string.len == 16 &&
				 strncmp(v->val.string.val, "require_approval", 16) == 0)
			*decision = AGENTIDP_POLICY_REQUIRE_APPROVAL;
		else
			return false;
		return true;
	}

	key.val.string.val = "allow";
	key.val.string.len = 5;
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
	if (v != NULL && v->type == jbvBool)
	{
		*decision = v->val.boolean ? AGENTIDP_POLICY_ALLOW : AGENTIDP_POLICY_DENY;
		return true;
	}
	return false;
}

/*
 * The policy function: looked up each time (a syscache probe), so that a
 * function created, replaced or dropped after the setting is seen at once.
 * A missing function or one of another shape is a configuration error, an
 * ERROR whatever agentidp.policy_fail_open says: it is no outage to ride
 * out.
 */
static Oid
policy_function_oid(void)
{
	List	   *names;
	Oid			argtypes[1] = {JSONBOID};
	Oid			fn;

	names = stringToQualifiedNameList(agentidp_policy_function);
	fn = LookupFuncName(names, 1, argtypes, true);
	if (!OidIsValid(fn))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_FUNCTION),
				errmsg("policy function %s(jsonb) does not exist", agentidp_policy_function),
				errhint("agentidp.policy_function must name a function (input jsonb) RETURNS jsonb; a superuser can reset it."));
	if (get_func_rettype(fn) != JSONBOID || get_func_retset(fn))
		ereport(ERROR,
				errcode(ERRCODE_DATATYPE_MISMATCH),
				errmsg("policy function %s(jsonb) must return jsonb", agentidp_policy_function),
				errdetail("It returns %s%s.", get_func_retset(fn) ? "SETOF " : "",
						  format_type_be(get_func_rettype(fn))));
	return fn;
}

static AgentidpPolicyDecision
ask_function(Jsonb *input, char **reason, bool *ok)
{
	LOCAL_FCINFO(fcinfo, 1);
	FmgrInfo	flinfo;
	Datum		result;
	AgentidpPolicyDecision decision = AGENTIDP_POLICY_DENY;

	fmgr_info(policy_function_oid(), &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(input);
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	*ok = !fcinfo->isnull &&
		parse_decision(DatumGetJsonbP(result), &decision, reason);
	return decision;
}

/*
 * POST {"input": ...} to the engine; its answer's "result" is the
 * decision.  *ok is false, and *reason says why, when the engine could
 * not be asked or its answer is not a decision.  The URL itself is never
 * put in a reason: it may carry a token in its query.
 */
static AgentidpPolicyDecision
ask_url(const char *input, char **reason, bool *ok)
{
	AgentidpHttpRequest req;
	AgentidpHttpOptions opt;
	StringInfoData body;
	bool		not_public;
	char	   *problem;
	AgentidpPolicyDecision decision = AGENTIDP_POLICY_DENY;
	JsonLexContext *lex;
	Jsonb	   *answer;
	JsonbValue	key;
	JsonbValue *v;

	*ok = false;
	problem = agentidp_http_url_problem(agentidp_policy_url, agentidp_allow_private_addresses,
										&not_public);
	if (problem != NULL)
	{
		*reason = psprintf("policy engine URL refused: %s%s", problem,
						   not_public ? " (agentidp.allow_private_addresses is off)" : "");
		return decision;
	}

	initStringInfo(&body);
	appendStringInfo(&body, "{\"input\":%s}", input);
	memset(&req, 0, sizeof(req));
	req.url = agentidp_policy_url;
	req.body = body.data;
	req.body_len = body.len;
	req.headers = list_make1("Content-Type: application/json");
	opt.timeout_ms = agentidp_policy_timeout;
	opt.max_response = POLICY_MAX_RESPONSE;
	opt.allow_private = agentidp_allow_private_addresses;
	agentidp_http_perform(&req, 1, &opt);

	if (req.error != NULL)
	{
		*reason = psprintf("policy engine unreachable: %s%s", req.error,
						   req.refused ? " (agentidp.allow_private_addresses is off)" : "");
		return decision;
	}
	if (req.status != 200)
	{
		*reason = psprintf("policy engine answered HTTP status %ld", req.status);
		return decision;
	}

	/* validate first: jsonb_in would ERROR on garbage, which is no decision */
	lex = makeJsonLexContextCstringLen(req.response, req.response_len, PG_UTF8, false);
	if (req.response_len == 0 || strlen(req.response) != req.response_len ||
		strstr(req.response, "\\u0000") != NULL ||
		pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
	{
		*reason = pstrdup("policy engine answered something that is not JSON");
		return decision;
	}
	answer = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(req.response)));
	if (!JB_ROOT_IS_OBJECT(answer))
		v = NULL;
	else
	{
		key.type = jbvString;
		key.val.string.val = "result";
		key.val.string.len = 6;
		v = findJsonbValueFromContainer(&answer->root, JB_FOBJECT, &key);
	}
	if (v == NULL || v->type != jbvBinary ||
		!parse_decision(JsonbValueToJsonb(v), &decision, reason))
	{
		/* OPA answers {} when the rule is undefined for the input */
		*reason = pstrdup("policy engine answered no decision in \"result\"");
		return AGENTIDP_POLICY_DENY;
	}
	*ok = true;
	return decision;
}

/*
 * The input object with the request's context added as its member
 * "request" (audit.c): where the request came from is the same for an
 * issuance and an action, so it is added here, once, for both.
 */
static char *
with_request_context(const char *input)
{
	StringInfoData in;
	size_t		len = strlen(input);
	bool		empty = true;

	while (len > 0 && isspace((unsigned char) input[len - 1]))
		len--;
	if (len < 2 || input[0] != '{' || input[len - 1] != '}')
		elog(ERROR, "a policy input must be a JSON object");
	for (size_t i = 1; i < len - 1 && empty; i++)
		empty = isspace((unsigned char) input[i]);
	initStringInfo(&in);
	appendBinaryStringInfo(&in, input, len - 1);
	appendStringInfoString(&in, empty ? "\"request\":" : ",\"request\":");
	agentidp_request_context_json(&in);
	appendStringInfoChar(&in, '}');
	return in.data;
}

AgentidpPolicyDecision
agentidp_policy_decide(const char *request_input, char **reason)
{
	AgentidpPolicyDecision decision = AGENTIDP_POLICY_ALLOW;
	bool		ok = true;
	const char *input = with_request_context(request_input);

	*reason = NULL;
	if (agentidp_policy_function != NULL && agentidp_policy_function[0] != '\0')
	{
		Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(input)));

		decision = ask_function(jb, reason, &ok);
		if (!ok)
			*reason = pstrdup("policy function returned no decision");
		if (!ok || decision != AGENTIDP_POLICY_ALLOW)
			goto done;
	}
	if (agentidp_policy_url != NULL && agentidp_policy_url[0] != '\0')
		decision = ask_url(input, reason, &ok);

done:
	if (!ok)
	{
		ereport(LOG,
				errmsg("policy %s: %s", agentidp_policy_fail_open ? "failed open" : "failed closed",
					   *reason));
		decision = agentidp_policy_fail_open ? AGENTIDP_POLICY_ALLOW : AGENTIDP_POLICY_DENY;
		*reason = psprintf("%s (agentidp.policy_fail_open is %s)", *reason,
						   agentidp_policy_fail_open ? "on" : "off");
	}
	return decision;
}

/*
 * agentidp._policy_decide(input jsonb) RETURNS jsonb: the decision as
 * {"decision": ..., "reason": ...}, or NULL when no policy is configured.
 * For record_action (SQL); issuance calls agentidp_policy_decide().
 */
Datum
agentidp__policy_decide(PG_FUNCTION_ARGS)
{
	Jsonb	   *input;
	char	   *reason;
	AgentidpPolicyDecision d;
	StringInfoData out;
	static const char *const names[] = {"allow", "deny", "require_approval"};

	if (!agentidp_policy_active() || PG_ARGISNULL(0))
		PG_RETURN_NULL();
	input = PG_GETARG_JSONB_P(0);
	d = agentidp_policy_decide(JsonbToCString(NULL, &input->root, VARSIZE(input)), &reason);
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"decision\":");
	escape_json(&out, names[d]);
	appendStringInfoString(&out, ",\"reason\":");
	if (reason != NULL)
		escape_json(&out, reason);
	else
		appendStringInfoString(&out, "null");
	appendStringInfoChar(&out, '}');
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
