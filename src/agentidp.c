/*-------------------------------------------------------------------------
 *
 * agentidp.c
 *	  Module entry point: settings (GUCs) and the helpers every part uses
 *	  to run privileged SQL as the extension owner.  The parts themselves
 *	  live in their own files (tenants.c, credentials.c, jose.c).
 *
 * IDENTIFICATION
 *	  src/agentidp.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/err.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "agentidp.h"
#include "policy.h"
#include "ratelimit.h"
#include "refusals.h"
#include "webhooks.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *agentidp_issuer_base = NULL;
char	   *agentidp_kek_file = NULL;
int			agentidp_key_prepublish = 3600;
int			agentidp_max_token_lifetime = 900;
char	   *agentidp_trace_id = NULL;
char	   *agentidp_approval_id = NULL;
int			agentidp_clock_skew = 60;
int			agentidp_verified_token_cache = 4096;
char	   *agentidp_identity = NULL;
bool		agentidp_trust_postgrest_claims = false;
bool		agentidp_allow_private_addresses = false;

/*
 * The issuer base is the public URL prefix of the HTTP front; a tenant's
 * default issuer is <base>/t/<tenant name>.  Issuers end up in every token's
 * "iss" claim, so the base must be an absolute http(s) URL with a host, no
 * query, fragment, white space, control character or trailing slash (RFC
 * 8414 section 2).  189 characters leave room for "/t/" and a 63-character
 * tenant name within the 255 allowed for an issuer.
 */
#define ISSUER_BASE_MAX_LEN 189

static bool
check_issuer_base(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	const char *host;

	if (v == NULL)
		return true;
	if (strncmp(v, "https://", 8) == 0)
		host = v + 8;
	else if (strncmp(v, "http://", 7) == 0)
		host = v + 7;
	else
	{
		GUC_check_errdetail("agentidp.issuer_base must start with \"https://\" or \"http://\".");
		return false;
	}
	for (const char *p = v; *p; p++)
	{
		if ((unsigned char) *p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
		{
			GUC_check_errdetail("agentidp.issuer_base must not contain white space, control characters, a query or a fragment.");
			return false;
		}
	}
	if (*host == '\0' || *host == '/' || v[strlen(v) - 1] == '/' ||
		strlen(v) > ISSUER_BASE_MAX_LEN)
	{
		GUC_check_errdetail("agentidp.issuer_base must be a URL of at most %d characters with a host and no trailing slash.",
							ISSUER_BASE_MAX_LEN);
		return false;
	}
	return true;
}

/*
 * agentidp.trace_id: what callers set (SET LOCAL) so that audit rows can be
 * matched with their traces.  A W3C traceparent
 * ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>") is reduced to
 * its trace id; any other value must be 1 to 128 characters of letters,
 * digits and "-", "_", ".", ":", so nothing odd reaches the audit log.
 */
#define TRACE_ID_MAX_LEN 128

/* version-format-id-flags: 2, 32, 16 and 2 lowercase hex digits */
/*
 * The approval a token request names for a risky scope (step-up).  Only
 * its shape is checked here: _step_up() decides whether it is one, so that
 * a wrong id is an OAuth invalid_scope rather than a settings error.
 */
static bool
check_approval_id(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v == NULL)
		return true;
	if (strlen(v) > 64)
	{
		GUC_check_errdetail("agentidp.approval_id must be at most 64 characters.");
		return false;
	}
	for (const char *p = v; *p; p++)
	{
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
		{
			GUC_check_errdetail("agentidp.approval_id must not contain control characters.");
			return false;
		}
	}
	return true;
}

static bool
is_traceparent(const char *v, size_t len)
{
	if (len != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (i == 2 || i == 35 || i == 52)
			continue;
		if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
			return false;
	}
	return true;
}

static bool
check_trace_id(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	size_t		len;

	if (v == NULL || v[0] == '\0')
		return true;
	len = strlen(v);
	if (is_traceparent(v, len))
	{
		char	   *id;

		if (strncmp(v + 3, "00000000000000000000000000000000", 32) == 0)
		{
			GUC_check_errdetail("A traceparent's trace id must not be all zeros.");
			return false;
		}
		/* GUC string values are malloc'd in PostgreSQL 15 */
		id = malloc(33);
		if (id == NULL)
			return false;
		memcpy(id, v + 3, 32);
		id[32] = '\0';
		free(*newval);
		*newval = id;
		return true;
	}
	if (len > TRACE_ID_MAX_LEN ||
		strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") != len)
	{
		GUC_check_errdetail("agentidp.trace_id must be a W3C traceparent or 1 to %d letters, digits, \"-\", \"_\", \".\" or \":\".",
							TRACE_ID_MAX_LEN);
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomStringVariable("agentidp.issuer_base",
							   "Public URL prefix of the token endpoint; a tenant's default issuer is <base>/t/<name>.",
							   NULL,
							   &agentidp_issuer_base,
							   "http://127.0.0.1:8499",
							   PGC_SUSET,
							   0,
							   check_issuer_base, NULL, NULL);

	/* superusers alone may even read where the KEK lives */
	DefineCustomStringVariable("agentidp.kek_file",
							   "File holding the key-encryption keys that protect tenants' signing keys.",
							   NULL,
							   &agentidp_kek_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.key_prepublish",
							"How long a new signing key is published in the JWKS before it signs.",
							"Resource servers that cache the JWKS see a key before any token uses it.",
							&agentidp_key_prepublish,
							3600, 0, 7 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.max_token_lifetime",
							"The longest lifetime of a token signed with a tenant's key.",
							"A retired key stays in the JWKS this long after a newer key took over.",
							&agentidp_max_token_lifetime,
							900, 60, 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.clock_skew",
							"Leeway for the exp, nbf and iat of tokens being verified.",
							"Clocks of issuers and verifiers differ a little (RFC 7519 sections 4.1.4 and 4.1.5 allow a small leeway).",
							&agentidp_clock_skew,
							60, 0, 300,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("agentidp.verified_token_cache",
							"How many access tokens each session remembers as correctly signed.",
							"A token seen again skips its signature check, nothing else; 0 turns this off.",
							&agentidp_verified_token_cache,
							4096, 0, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	/*
	 * The transaction's identity, which authenticate() sets (as SET LOCAL)
	 * after verifying a token.  Superusers alone may set it by hand: it
	 * is who the helpers say the caller is.
	 */
	DefineCustomStringVariable("agentidp.identity",
							   "The verified token claims that are the identity of this transaction.",
							   "Set by agentidp.authenticate(); ends with the transaction.",
							   &agentidp_identity,
							   "",
							   PGC_SUSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("agentidp.trust_postgrest_claims",
							 "Whether request.jwt.claims, which PostgREST sets after verifying a token, is an identity.",
							 "Any role can set request.jwt.claims: turn this on only where PostgREST alone connects.",
							 &agentidp_trust_postgrest_claims,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	/* outbound HTTP (webhooks, issuers' key sets) must not reach inside the network */
	DefineCustomBoolVariable("agentidp.allow_private_addresses",
							 "Whether outbound requests may go to loopback, link-local and private addresses.",
							 "Off, a webhook or key set URL cannot make the server reach its own network (SSRF).",
							 &agentidp_allow_private_addresses,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("agentidp.trace_id",
							   "Trace id recorded in the audit rows of what the session changes.",
							   "Set it per transaction (SET LOCAL), e.g. from a W3C traceparent header.",
							   &agentidp_trace_id,
							   "",
							   PGC_USERSET,
							   0,
							   check_trace_id, NULL, NULL);

	DefineCustomStringVariable("agentidp.approval_id",
							   "Approval a token request carries for a risky scope (step-up).",
							   "Set per grant by token_endpoint from the request's approval_id.",
							   &agentidp_approval_id,
							   "",
							   PGC_USERSET,
							   0,
							   check_approval_id, NULL, NULL);

	/* the background worker's and the maintenance tasks' settings first */
	agentidp_worker_init();
	agentidp_webhooks_init();
	agentidp_ratelimit_init();
	agentidp_policy_init();

	MarkGUCPrefixReserved("agentidp");

	agentidp_audit_init();
	agentidp_refusals_init();
}

/*
 * One of the extension's tables; an error names what is missing: the
 * extension, or (for tables a later version added) the update.
 */
Oid
agentidp_relation_oid(const char *relname)
{
	Oid			nsp = get_namespace_oid("agentidp", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;

	if (!OidIsValid(nsp))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agentidp is not installed in this database"),
				errhint("Run CREATE EXTENSION agentidp."));
	if (!OidIsValid(relid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("agentidp.%s does not exist", relname),
				errhint("Update the extension: ALTER EXTENSION agentidp UPDATE."));
	return relid;
}

/*
 * The extension's tables belong to the superuser that created the extension;
 * we look the owner up from agentidp.tenants every time rather than caching
 * it, since a syscache probe is cheap and ownership can change.
 */
static Oid
extension_owner(void)
{
	Oid			relid = agentidp_relation_oid("tenants");
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

void
agentidp_become_owner(AgentidpOwnerContext *ctx)
{
	Oid			owner = extension_owner();

	GetUserIdAndSecContext(&ctx->save_userid, &ctx->save_sec_context);
	SetUserIdAndSecContext(owner,
						   ctx->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	ctx->save_nestlevel = agentidp_pin_search_path();
}

/* the caller's search_path must not resolve anything we run */
int
agentidp_pin_search_path(void)
{
	int			level = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return level;
}

int
agentidp_run_plan(SPIPlanPtr *slot, const char *sql, int nargs,
				  Oid *argtypes, Datum *args, const char *nulls,
				  bool read_only, long count)
{
	int			rc;

	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	rc = SPI_execute_plan(*slot, args, nulls, read_only, count);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return rc;
}

void
agentidp_restore_user(AgentidpOwnerContext *ctx)
{
	AtEOXact_GUC(true, ctx->save_nestlevel);
	SetUserIdAndSecContext(ctx->save_userid, ctx->save_sec_context);
}

const char *
agentidp_openssl_error(void)
{
	unsigned long e = ERR_get_error();
	const char *s;

	ERR_clear_error();
	if (e == 0)
		return "no OpenSSL error reported";
	s = ERR_reason_error_string(e);
	return s ? s : "unknown OpenSSL error";
}
