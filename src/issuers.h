/*-------------------------------------------------------------------------
 *
 * issuers.h
 *	  Trusted external issuers (issuers.c): a person's identity provider,
 *	  whose tokens token exchange (tokens.c) accepts as the subject an
 *	  agent acts for.
 *
 * IDENTIFICATION
 *	  src/issuers.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_ISSUERS_H
#define AGENTIDP_ISSUERS_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/uuid.h"

/* a verified token of a trusted issuer, as the subject of an exchange */
typedef struct ExternalSubject
{
	char	   *issuer;
	char	   *sub;
	int64		exp;
	char	   *scope;			/* the token's "scope", or NULL */
	Datum	   *policy;			/* the trust's scopes (text), when scoped */
	int			npolicy;
	bool		scoped;
} ExternalSubject;

/*
 * When the token's kid names a key in the cached key set of one of the
 * tenant's trusted issuers: verifies it with that key (algorithm, issuer,
 * audience = the tenant's issuer, times) and returns true, raising 28000
 * when it is not valid.  False when no trusted issuer has that kid: the
 * token is not one of theirs.  Runs in the caller's SPI connection, as
 * the extension owner.
 */
extern bool agentidp_external_subject(const pg_uuid_t *tenant, const char *tenant_issuer,
									  text *token, int64 now, ExternalSubject *out);

/* whether the tenant still trusts the issuer (SPI, as the owner) */
extern bool agentidp_issuer_trusted(const pg_uuid_t *tenant, const char *issuer);

#endif							/* AGENTIDP_ISSUERS_H */
