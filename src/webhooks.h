/*-------------------------------------------------------------------------
 *
 * webhooks.h
 *	  What other parts use of webhooks.c: its settings, and queueing an
 *	  event for a tenant's webhook subscribers.
 *
 * IDENTIFICATION
 *	  src/webhooks.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_WEBHOOKS_H
#define AGENTIDP_WEBHOOKS_H

#include "postgres.h"

#include "utils/uuid.h"

/* from _PG_init: the webhook settings */
extern void agentidp_webhooks_init(void);

/*
 * Queue an event (data: a JSON object of ids, never a secret) for the
 * tenant's subscribers, in the current transaction.  Runs in the caller's
 * SPI connection, whose user must be allowed to write the outbox (the
 * extension owner).
 */
extern void agentidp_enqueue_event(const pg_uuid_t *tenant_id, const char *type,
								   const char *data);

#endif							/* AGENTIDP_WEBHOOKS_H */
