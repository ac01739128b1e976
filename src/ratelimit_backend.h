/*-------------------------------------------------------------------------
 *
 * ratelimit_backend.h
 *	  The two stores of rate-limit buckets, as ratelimit.c uses them: a
 *	  hash table in shared memory (ratelimit_shmem.c) and Redis
 *	  (redis_limit.c).  Both decide the same way (GCRA, see ratelimit.c):
 *	  a check of several buckets passes only if each of them would, and
 *	  then takes one request from each.
 *
 * IDENTIFICATION
 *	  src/ratelimit_backend.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_RATELIMIT_BACKEND_H
#define AGENTIDP_RATELIMIT_BACKEND_H

/* a check takes at most this many buckets (a client's and its tenant's) */
#define RATE_MAX_BUCKETS 2

/* one bucket of a check; times in microseconds */
typedef struct RateBucket
{
	const char *key;			/* "agentidp:rl:{<tenant>}:...", see docs/limits.md */
	int64		period;			/* the limit's period */
	int64		emission;		/* period / limit: the time one request uses */
} RateBucket;

/* the answer to a check, about its binding bucket; times in microseconds */
typedef struct RateVerdict
{
	bool		allowed;
	int			binding;		/* the bucket refused, or the closest to refusal */
	int64		remaining;		/* requests it still lets through at once */
	int64		reset;			/* until it is full again */
	int64		retry;			/* refused: until a request would pass */
} RateVerdict;

/* what the counters of agentidp.rate_limit_status() count */
typedef enum RateCounter
{
	RC_EVICTED_IDLE,			/* entries dropped that had fully recovered */
	RC_EVICTED_LIVE,			/* entries dropped that had not */
	RC_REDIS_FAILURES,			/* checks Redis did not answer */
	RC_UNCHECKED_PASSED,		/* of those, let through (fail open) */
	RC_UNCHECKED_REFUSED,		/* of those, refused (fail closed) */
	RC_COUNT
} RateCounter;

/* ratelimit.c: GCRA over the buckets, given their stored states */
extern void agentidp_rate_decide(const RateBucket *b, int n, int64 now,
								 const int64 *tat, int64 *next, RateVerdict *v);

/* ratelimit_shmem.c */
extern int	agentidp_rate_limit_slots;
extern void agentidp_shmem_limits_init(void);
extern bool agentidp_shmem_limits_ready(void);
extern void agentidp_shmem_limits_check(const RateBucket *b, int n, RateVerdict *v);
extern void agentidp_limits_count(RateCounter c);
extern void agentidp_limits_counters(uint64 *values, int64 *used);

/* redis_limit.c */
extern void agentidp_redis_limits_init(void);
extern bool agentidp_redis_configured(void);

/*
 * One round trip, in two halves, so that the caller can work while Redis
 * answers: send the check, then receive its verdict.  Each is false when
 * Redis did not take or answer it, with why (a message without the
 * password) in *why.  The buckets must stay valid until the receive.
 */
extern bool agentidp_redis_limits_send(const RateBucket *b, int n, const char **why);
extern bool agentidp_redis_limits_receive(RateVerdict *v, const char **why);

/* the configured server as "redis://host:port/db", without credentials */
extern const char *agentidp_redis_target(void);

#endif							/* AGENTIDP_RATELIMIT_BACKEND_H */
