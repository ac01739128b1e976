/*-------------------------------------------------------------------------
 *
 * agentidp.h
 *	  Declarations shared by every part of the agentidp extension: its
 *	  settings and the helpers that run SQL with the extension owner's rights.
 *
 * IDENTIFICATION
 *	  src/agentidp.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_H
#define AGENTIDP_H

#include "executor/spi.h"

/* settings (GUCs), defined in agentidp.c */
extern char *agentidp_issuer_base;
extern char *agentidp_kek_file;
extern int	agentidp_key_prepublish;
extern int	agentidp_max_token_lifetime;
extern char *agentidp_trace_id;
extern char *agentidp_approval_id;
extern int	agentidp_clock_skew;
extern bool agentidp_allow_private_addresses;
extern int	agentidp_verified_token_cache;
extern char *agentidp_identity;
extern bool agentidp_trust_postgrest_claims;

/* audit.c: transaction callbacks that chain a transaction's events */
extern void agentidp_audit_init(void);

/*
 * Switch to the owner of the extension's tables for privileged SPI work
 * that the caller may not do directly, with a pinned search_path.  The
 * caller's identity is captured first, so the switch never loses it.  On
 * ERROR, transaction abort restores both the user and the settings.
 */
typedef struct AgentidpOwnerContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} AgentidpOwnerContext;

extern void agentidp_become_owner(AgentidpOwnerContext *ctx);

/* the oid of one of the extension's tables, or an error saying what to do */
extern Oid	agentidp_relation_oid(const char *relname);
extern void agentidp_restore_user(AgentidpOwnerContext *ctx);

/*
 * Pin search_path for SQL run as the caller; returns the GUC nest level to
 * hand to AtEOXact_GUC(true, level) when done.
 */
extern int	agentidp_pin_search_path(void);

/* run a saved plan, preparing it on first use in this backend */
extern int	agentidp_run_plan(SPIPlanPtr *slot, const char *sql, int nargs,
							  Oid *argtypes, Datum *args, const char *nulls,
							  bool read_only, long count);

/* the last OpenSSL error as text, for errdetail_internal; never secret */
extern const char *agentidp_openssl_error(void);

#endif							/* AGENTIDP_H */
