/*-------------------------------------------------------------------------
 *
 * authz.c
 *	  A verified token's claims as the identity of a transaction, and the
 *	  helpers row-level security policies call: current_tenant(),
 *	  current_agent(), current_claims(), has_scope(), has_role(),
 *	  acting_for().
 *
 *	  authenticate() keeps the claims in the setting agentidp.identity,
 *	  set as SET LOCAL would: it ends with the transaction (or the
 *	  savepoint it was set in), so a pooled connection cannot carry it to
 *	  the next transaction, and parallel workers see it like any setting.
 *	  Only superusers may set it by hand; authenticate() sets it from C
 *	  after verification.  Behind PostgREST, which verified the token's
 *	  signature and set request.jwt.claims, postgrest_pre_request() makes
 *	  those claims the identity after checking what PostgREST cannot
 *	  (revocation, agent, tenant, credential), and only when a superuser
 *	  turned agentidp.trust_postgrest_claims on: any role can set
 *	  request.jwt.claims itself.  The helpers read agentidp.identity alone,
 *	  so claims that did not pass those checks are no identity.
 *
 * IDENTIFICATION
 *	  src/authz.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "storage/proc.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"

#include "agentidp.h"
#include "authz.h"
#include "issuers.h"
#include "token_state.h"
#include "tokens.h"

PG_FUNCTION_INFO_V1(agentidp_authenticate);
PG_FUNCTION_INFO_V1(agentidp_current_claims);
PG_FUNCTION_INFO_V1(agentidp_current_tenant);
PG_FUNCTION_INFO_V1(agentidp_current_agent);
PG_FUNCTION_INFO_V1(agentidp_acting_for);
PG_FUNCTION_INFO_V1(agentidp_has_scope);
PG_FUNCTION_INFO_V1(agentidp_has_role);
PG_FUNCTION_INFO_V1(agentidp_postgrest_pre_request);

/* the claims as the identity of this transaction */
static void
set_identity(Jsonb *claims)
{
	char	   *text = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

	(void) set_config_option("agentidp.identity", text, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * The identity parsed once: the helpers run in row-level security
 * policies, twice or more per query, and parsing the claims each time
 * would cost more than the lookup they guard.  The cache holds the text
 * it was parsed from; any change of agentidp.identity (a new
 * authenticate(), the end of the transaction) misses it.
 */
static MemoryContext identity_cxt = NULL;
static char *identity_text = NULL;
static Jsonb *identity_claims = NULL;
/* what the policies ask most, read out once: tenant_id and scope */
static pg_uuid_t *identity_tenant = NULL;
static char *identity_scope = NULL;

static pg_uuid_t *uuid_member(Jsonb *jb, const char *name);
static char *string_member(Jsonb *jb, const char *name);

/* the claims of the current identity, read-only; NULL when there is none */
static Jsonb *
identity(void)
{
	const char *text = agentidp_identity;
	MemoryContext old;

	if (text == NULL || text[0] == '\0')
		return NULL;
	if (identity_text != NULL && strcmp(identity_text, text) == 0)
		return identity_claims;
	if (identity_cxt == NULL)
		identity_cxt = AllocSetContextCreate(TopMemoryContext, "agentidp identity",
											 ALLOCSET_SMALL_SIZES);
	MemoryContextReset(identity_cxt);
	identity_text = NULL;
	old = MemoryContextSwitchTo(identity_cxt);
	identity_claims = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	identity_tenant = uuid_member(identity_claims, "tenant_id");
	identity_scope = string_member(identity_claims, "scope");
	identity_text = pstrdup(text);
	MemoryContextSwitchTo(old);
	return identity_claims;
}

static JsonbValue *
member(Jsonb *jb, const char *name)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) name;
	k.val.string.len = strlen(name);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
}

static char *
string_member(Jsonb *jb, const char *name)
{
	JsonbValue *v = jb ? member(jb, name) : NULL;

	return (v != NULL && v->type == jbvString) ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
}

/* 8-4-4-4-12 lower-case hex: what uuid_in parses without complaint */
static bool
canonical_uuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

/* a uuid claim, or NULL when absent or not a uuid */
static pg_uuid_t *
uuid_member(Jsonb *jb, const char *name)
{
	char	   *s = string_member(jb, name);

	if (s == NULL || !canonical_uuid(s))
		return NULL;
	return DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(s)));
}

/* the acting agent's claims object: the token itself, or its "act" */
static char *
act_sub(Jsonb *claims)
{
	JsonbValue *act = member(claims, "act");
	JsonbValue	k;
	JsonbValue *sub;

	if (act == NULL || act->type != jbvBinary)
		return NULL;
	k.type = jbvString;
	k.val.string.val = "sub";
	k.val.string.len = 3;
	sub = findJsonbValueFromContainer(act->val.binary.data, JB_FOBJECT, &k);
	return (sub != NULL && sub->type == jbvString) ?
		pnstrdup(sub->val.string.val, sub->val.string.len) : NULL;
}

/*
 * agentidp.authenticate(token text) RETURNS jsonb
 * agentidp.authenticate(token text, dpop_proof text, htm text, htu text)
 *
 * Verifies an access token (verify_token, or verify_dpop with a proof) and
 * makes its claims the identity of the current transaction.  A failed
 * verification raises and leaves no identity.
 */
Datum
agentidp_authenticate(PG_FUNCTION_ARGS)
{
	text	   *token = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	Jsonb	   *claims;

	if (!IsTransactionBlock())
		ereport(NOTICE,
				errmsg("agentidp.authenticate() outside a transaction block: the identity ends with this statement"),
				errhint("Call it after BEGIN, in the transaction that uses the identity."));
	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
		claims = agentidp_dpop_token_claims(token, PG_GETARG_TEXT_PP(1),
											PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
											PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3),
											NULL);
	else
		claims = agentidp_token_claims(token, NULL);
	set_identity(claims);
	PG_RETURN_JSONB_P(claims);
}

Datum
agentidp_current_claims(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = identity();
	Jsonb	   *copy;

	if (claims == NULL)
		PG_RETURN_NULL();
	/* the caller's own copy: the cache's may go at the next change */
	copy = palloc(VARSIZE(claims));
	memcpy(copy, claims, VARSIZE(claims));
	PG_RETURN_JSONB_P(copy);
}

Datum
agentidp_current_tenant(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *t;

	if (identity() == NULL || identity_tenant == NULL)
		PG_RETURN_NULL();
	t = palloc(sizeof(pg_uuid_t));
	memcpy(t, identity_tenant, sizeof(pg_uuid_t));
	PG_RETURN_UUID_P(t);
}

bool
agentidp_identity_actor(pg_uuid_t *tenant, bool *has_tenant,
						pg_uuid_t *agent, bool *has_agent, char **act_json)
{
	Jsonb	   *claims = identity();
	char	   *actor;
	pg_uuid_t  *a;
	JsonbValue *act;

	*has_tenant = *has_agent = false;
	*act_json = NULL;
	if (claims == NULL)
		return false;
	if (identity_tenant != NULL)
	{
		memcpy(tenant, identity_tenant, sizeof(pg_uuid_t));
		*has_tenant = true;
	}
	actor = act_sub(claims);
	if (actor != NULL && canonical_uuid(actor))
		a = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(actor)));
	else
		a = member(claims, "subject_issuer") != NULL ? NULL : uuid_member(claims, "sub");
	if (a != NULL)
	{
		memcpy(agent, a, sizeof(pg_uuid_t));
		*has_agent = true;
	}
	act = member(claims, "act");
	if (act != NULL && act->type == jbvBinary)
		*act_json = JsonbToCString(NULL, act->val.binary.data, act->val.binary.len);
	return true;
}

/* the agent acting: the actor of a delegated token, else its subject */
Datum
agentidp_current_agent(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = identity();
	char	   *actor = claims ? act_sub(claims) : NULL;
	pg_uuid_t  *a;

	if (actor != NULL && canonical_uuid(actor))
		PG_RETURN_DATUM(DirectFunctionCall1(uuid_in, CStringGetDatum(actor)));
	a = uuid_member(claims, "sub");
	if (a == NULL)
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(a);
}

/* the subject a delegated token acts for; NULL for a token of one's own */
Datum
agentidp_acting_for(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = identity();
	pg_uuid_t  *s;

	/* a person of an outside issuer is no agent here: see current_claims() */
	if (claims == NULL || act_sub(claims) == NULL || member(claims, "subject_issuer") != NULL)
		PG_RETURN_NULL();
	s = uuid_member(claims, "sub");
	if (s == NULL)
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(s);
}

/* is word one of the space-separated words of list? */
static bool
in_list(const char *list, const char *word, size_t len)
{
	for (const char *p = list; p != NULL && *p;)
	{
		const char *e = strchr(p, ' ');
		size_t		plen = e ? (size_t) (e - p) : strlen(p);

		if (plen == len && memcmp(p, word, len) == 0)
			return true;
		p = e ? e + 1 : NULL;
	}
	return false;
}

Datum
agentidp_has_scope(PG_FUNCTION_ARGS)
{
	text	   *scope;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	scope = PG_GETARG_TEXT_PP(0);
	if (identity() == NULL)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(in_list(identity_scope, VARDATA_ANY(scope), VARSIZE_ANY_EXHDR(scope)));
}

Datum
agentidp_has_role(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims;
	JsonbValue *roles;
	text	   *role;
	size_t		len;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	role = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(role);
	claims = identity();
	roles = claims ? member(claims, "roles") : NULL;
	if (roles == NULL || roles->type != jbvBinary || !JsonContainerIsArray(roles->val.binary.data))
		PG_RETURN_BOOL(false);
	for (int i = 0; i < JsonContainerSize(roles->val.binary.data); i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(roles->val.binary.data, i);

		if (e->type == jbvString && e->val.string.len == len &&
			memcmp(e->val.string.val, VARDATA_ANY(role), len) == 0)
			PG_RETURN_BOOL(true);
	}
	PG_RETURN_BOOL(false);
}

static void
refuse_claims(const char *why)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			errmsg("invalid token: %s", why));
}

/* PostgREST's claims of an anonymous request: its role and nothing else */
static bool
anonymous_claims(Jsonb *claims)
{
	return JB_ROOT_IS_OBJECT(claims) &&
		(JB_ROOT_COUNT(claims) == 0 ||
		 (JB_ROOT_COUNT(claims) == 1 && member(claims, "role") != NULL));
}

/* cred is "s:<secret_id>" or "k:<key_id>", as tokens.c writes it */
static bool
valid_cred(const char *cred)
{
	return strlen(cred) == 38 && (cred[0] == 's' || cred[0] == 'k') && cred[1] == ':' &&
		canonical_uuid(cred + 2);
}

/*
 * agentidp.postgrest_pre_request() RETURNS void
 *
 * For PostgREST's db-pre-request.  PostgREST verified the token's
 * signature, times and audience and set request.jwt.claims; this checks
 * what can change after issuance (revocation, agent and actor, tenant,
 * credential), which PostgREST cannot, refuses with 28000, and then makes
 * the claims the identity of the request's transaction.  Nothing happens
 * unless a superuser turned agentidp.trust_postgrest_claims on.  An
 * anonymous request (no claims, or PostgREST's role alone) gets no
 * identity.  DPoP-bound tokens are refused: PostgREST cannot check their
 * proof, so serving them would make them bearer tokens.
 */
Datum
agentidp_postgrest_pre_request(PG_FUNCTION_ARGS)
{
	const char *text = GetConfigOption("request.jwt.claims", true, false);
	Jsonb	   *claims;
	pg_uuid_t  *tenant;
	pg_uuid_t  *agent;
	char	   *jti;
	char	   *actor;
	char	   *cred;
	char	   *subject_issuer;
	bool		trusted;
	TokenState	st;
	AgentidpOwnerContext oc;

	if (!agentidp_trust_postgrest_claims)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agentidp.trust_postgrest_claims is off"),
				errdetail("request.jwt.claims is an identity only where PostgREST alone sets it."),
				errhint("A superuser turns agentidp.trust_postgrest_claims on for PostgREST's role or database."));
	if (text == NULL || text[0] == '\0')
		PG_RETURN_VOID();
	claims = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	if (anonymous_claims(claims))
		PG_RETURN_VOID();
	tenant = uuid_member(claims, "tenant_id");
	subject_issuer = string_member(claims, "subject_issuer");
	/* a person's token (subject_issuer) stands for its acting agent */
	agent = subject_issuer != NULL ? NULL : uuid_member(claims, "sub");
	if (subject_issuer != NULL && (actor = act_sub(claims)) != NULL && canonical_uuid(actor))
		agent = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(actor)));
	jti = string_member(claims, "jti");
	if (!JB_ROOT_IS_OBJECT(claims) || tenant == NULL || agent == NULL || jti == NULL)
		refuse_claims("not an agentidp access token");
	if (member(claims, "cnf") != NULL)
		refuse_claims("a DPoP-bound token needs its proof, which PostgREST does not check");
	cred = string_member(claims, "cred");
	if (member(claims, "cred") != NULL && (cred == NULL || !valid_cred(cred)))
		refuse_claims("malformed cred claim");
	actor = act_sub(claims);
	if (member(claims, "act") != NULL && (actor == NULL || !canonical_uuid(actor)))
		refuse_claims("malformed act claim");

	SPI_connect();
	agentidp_become_owner(&oc);
	agentidp_token_state(tenant, agent, jti, NULL, cred, &st);
	trusted = subject_issuer == NULL || agentidp_issuer_trusted(tenant, subject_issuer);
	if (st.tenant_found && actor != NULL)
	{
		TokenState	ast;

		/* the actor of a delegated token must be active too */
		agentidp_token_state(tenant, DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(actor))),
							 jti, NULL, NULL, &ast);
		if (!ast.agent_found || strcmp(ast.agent_status, "active") != 0)
			st.agent_found = false;
	}
	agentidp_restore_user(&oc);
	SPI_finish();

	if (!st.tenant_found || strcmp(st.tenant_status, "active") != 0)
		refuse_claims("the tenant is not active");
	if (st.revoked)
		refuse_claims("revoked");
	if (!st.agent_found || strcmp(st.agent_status, "active") != 0)
		refuse_claims("the agent is not active");
	if (!st.cred_active)
		refuse_claims("the credential it was obtained with is revoked");
	if (!trusted)
		refuse_claims("the subject's issuer is no longer trusted");
	set_identity(claims);
	PG_RETURN_VOID();
}

/*
 * agentidp._preview_kind(query text) RETURNS text
 *
 * What the previews accept: 'select' for one SELECT statement that changes
 * nothing (no SELECT INTO, no FOR UPDATE/SHARE, no data-modifying WITH;
 * functions it calls could still write, so preview_access also runs it
 * read-only), 'write' for one INSERT, UPDATE, DELETE or MERGE, and NULL for
 * everything else: several statements, utility commands, DDL, CALL, DO,
 * COPY, whose effects a rolled-back subtransaction may not undo.
 */
PG_FUNCTION_INFO_V1(agentidp_preview_kind);
Datum
agentidp_preview_kind(PG_FUNCTION_ARGS)
{
	List	   *stmts = raw_parser(text_to_cstring(PG_GETARG_TEXT_PP(0)), RAW_PARSE_DEFAULT);
	Node	   *stmt;
	SelectStmt *select;

	if (list_length(stmts) != 1)
		PG_RETURN_NULL();
	stmt = linitial_node(RawStmt, stmts)->stmt;
	switch (nodeTag(stmt))
	{
		case T_InsertStmt:
		case T_UpdateStmt:
		case T_DeleteStmt:
		case T_MergeStmt:
			PG_RETURN_TEXT_P(cstring_to_text("write"));
		case T_SelectStmt:
			break;
		default:
			PG_RETURN_NULL();
	}
	select = (SelectStmt *) stmt;
	if (select->intoClause != NULL || select->lockingClause != NIL)
		PG_RETURN_NULL();
	if (select->withClause != NULL)
	{
		ListCell   *lc;

		foreach(lc, select->withClause->ctes)
		{
			CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

			if (!IsA(cte->ctequery, SelectStmt))
				PG_RETURN_NULL();
		}
	}
	PG_RETURN_TEXT_P(cstring_to_text("select"));
}

/*
 * agentidp._arm_statement_timeout(ms integer) RETURNS void
 *
 * A statement_timeout for the rest of the running statement: setting the
 * GUC inside a function would only apply to the next statement.  It
 * never extends the session's statement_timeout: the sooner of the two
 * ends the statement.  0 puts the session's own back, for what the
 * statement does after the preview.
 */
PG_FUNCTION_INFO_V1(agentidp_arm_statement_timeout);
Datum
agentidp_arm_statement_timeout(PG_FUNCTION_ARGS)
{
	int32		ms = PG_GETARG_INT32(0);
	int64		session_left = -1;	/* none */

	if (ms < 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("the timeout must not be negative"));
	if (StatementTimeout > 0)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentStatementStartTimestamp(), GetCurrentTimestamp(),
							&secs, &usecs);
		session_left = Max((int64) StatementTimeout - (secs * 1000 + usecs / 1000), 1);
	}
	if (ms == 0)
	{
		if (session_left > 0)
			enable_timeout_after(STATEMENT_TIMEOUT, (int) session_left);
		else
			disable_timeout(STATEMENT_TIMEOUT, false);
	}
	else
		enable_timeout_after(STATEMENT_TIMEOUT,
							 session_left > 0 ? (int) Min(ms, session_left) : ms);
	PG_RETURN_VOID();
}
