/*-------------------------------------------------------------------------
 *
 * ratelimit_shmem.c
 *	  The shared-memory store of rate-limit buckets: a fixed-size hash
 *	  table of one timestamp per key, in LWLock partitions, and the
 *	  counters of agentidp.rate_limit_status().  The decision itself is
 *	  ratelimit.c's; Redis is redis_limit.c.
 *
 *	  The table needs shared_preload_libraries.  Its size is
 *	  agentidp.rate_limit_slots, fixed at server start and divided evenly
 *	  among the partitions; a key belongs to the partition its hash picks,
 *	  and each partition keeps its entries in a list, least recently
 *	  touched first.  When a partition is full, a new key takes the place
 *	  of an entry that has fully recovered (its bucket is full again, so
 *	  it tells nothing that a missing entry would not), looked for among
 *	  the EVICT_SCAN least recently touched; failing that, of the least
 *	  recently touched one, whose client then finds its bucket full again.
 *	  The counters tell the two apart.
 *
 *	  Keys are stored as their SHA-256: fixed-size entries, and no key can
 *	  be chosen to collide with another tenant's.
 *
 * IDENTIFICATION
 *	  src/ratelimit_shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/sha.h>

#include "lib/ilist.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "ratelimit_backend.h"

/* a power of 2, as dynahash's partitioning requires */
#define RATE_PARTITIONS		16
#define EVICT_SCAN			32

int			agentidp_rate_limit_slots = 16384;

typedef struct RateKey
{
	uint8		digest[SHA256_DIGEST_LENGTH];
} RateKey;

typedef struct RateEntry
{
	RateKey		key;			/* the hash key: first */
	int64		tat;			/* GCRA's theoretical arrival time, µs */
	dlist_node	node;			/* in its partition's list */
} RateEntry;

typedef struct RatePartition
{
	dlist_head	lru;			/* least recently touched first */
	int			nentries;
	int			capacity;
} RatePartition;

typedef struct RateShared
{
	pg_atomic_uint64 counters[RC_COUNT];
	RatePartition parts[RATE_PARTITIONS];
} RateShared;

static RateShared *shared = NULL;
static HTAB *table = NULL;
static LWLockPadded *locks = NULL;

/* without shared memory, the counters are the backend's own */
static uint64 local_counters[RC_COUNT];

static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;

static void
limits_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(RateShared)),
									hash_estimate_size(agentidp_rate_limit_slots,
													   sizeof(RateEntry))));
	RequestNamedLWLockTranche("agentidp_rate_limits", RATE_PARTITIONS);
}

static void
limits_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("agentidp rate limits", sizeof(RateShared), &found);
	if (!found)
	{
		for (int c = 0; c < RC_COUNT; c++)
			pg_atomic_init_u64(&shared->counters[c], 0);
		for (int p = 0; p < RATE_PARTITIONS; p++)
		{
			dlist_init(&shared->parts[p].lru);
			shared->parts[p].nentries = 0;
			shared->parts[p].capacity = agentidp_rate_limit_slots / RATE_PARTITIONS +
				(p < agentidp_rate_limit_slots % RATE_PARTITIONS ? 1 : 0);
		}
	}

	/*
	 * Every element is allocated up front and the partitions together hold
	 * no more than that, so an insert never needs shared memory of its own.
	 */
	info.keysize = sizeof(RateKey);
	info.entrysize = sizeof(RateEntry);
	info.num_partitions = RATE_PARTITIONS;
	table = ShmemInitHash("agentidp rate limit buckets",
						  agentidp_rate_limit_slots, agentidp_rate_limit_slots, &info,
						  HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
	locks = GetNamedLWLockTranche("agentidp_rate_limits");
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The table and its size exist only when the library is preloaded:
 * PostgreSQL refuses to define a PGC_POSTMASTER setting later.
 */
void
agentidp_shmem_limits_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("agentidp.rate_limit_slots",
							"How many rate-limit keys the shared-memory table holds.",
							"Each takes about 100 bytes; when the table is full, keys whose buckets have recovered make room first.",
							&agentidp_rate_limit_slots,
							16384, 64, 16 * 1024 * 1024,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = limits_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = limits_shmem_startup;
}

bool
agentidp_shmem_limits_ready(void)
{
	return table != NULL;
}

void
agentidp_limits_count(RateCounter c)
{
	if (shared != NULL)
		pg_atomic_fetch_add_u64(&shared->counters[c], 1);
	else
		local_counters[c]++;
}

/* the counters, and the entries in use (-1 without the table) */
void
agentidp_limits_counters(uint64 *values, int64 *used)
{
	*used = -1;
	for (int c = 0; c < RC_COUNT; c++)
		values[c] = shared != NULL ? pg_atomic_read_u64(&shared->counters[c]) : local_counters[c];
	if (shared == NULL)
		return;
	*used = 0;
	for (int p = 0; p < RATE_PARTITIONS; p++)
	{
		LWLockAcquire(&locks[p].lock, LW_SHARED);
		*used += shared->parts[p].nentries;
		LWLockRelease(&locks[p].lock);
	}
}

/*
 * Make room in full partition p for a new entry: drop an entry that has
 * fully recovered, among the EVICT_SCAN least recently touched, else the
 * least recently touched.  Never one of keep[0..nkeep), the entries of the
 * check in progress.
 */
static void
make_room(int p, int64 now, RateEntry *const *keep, int nkeep)
{
	RatePartition *part = &shared->parts[p];
	RateEntry  *victim = NULL;
	RateEntry  *oldest = NULL;
	dlist_iter	it;
	int			seen = 0;

	dlist_foreach(it, &part->lru)
	{
		RateEntry  *e = dlist_container(RateEntry, node, it.cur);
		bool		kept = false;

		for (int k = 0; k < nkeep; k++)
			kept |= (keep[k] == e);
		if (kept)
			continue;
		if (oldest == NULL)
			oldest = e;
		if (e->tat <= now)
		{
			victim = e;
			break;
		}
		if (++seen >= EVICT_SCAN)
			break;
	}
	if (victim == NULL)
		victim = oldest;
	/* a partition holds at least 4 entries, a check at most 2 */
	Assert(victim != NULL);
	agentidp_limits_count(victim->tat <= now ? RC_EVICTED_IDLE : RC_EVICTED_LIVE);
	dlist_delete(&victim->node);
	(void) hash_search(table, &victim->key, HASH_REMOVE, NULL);
	part->nentries--;
}

/*
 * Check the buckets in shared memory and, if every one allows it, take a
 * request from each.  The partitions involved are locked in ascending
 * order, so two checks never wait for each other in a circle.
 */
void
agentidp_shmem_limits_check(const RateBucket *b, int n, RateVerdict *v)
{
	RateKey		keys[RATE_MAX_BUCKETS];
	uint32		hash[RATE_MAX_BUCKETS];
	int			part[RATE_MAX_BUCKETS];
	RateEntry  *entry[RATE_MAX_BUCKETS];
	int64		tat[RATE_MAX_BUCKETS];
	int64		next[RATE_MAX_BUCKETS];
	bool		lock[RATE_PARTITIONS] = {false};
	int64		now = GetCurrentTimestamp();

	Assert(table != NULL && n >= 1 && n <= RATE_MAX_BUCKETS);
	for (int i = 0; i < n; i++)
	{
		SHA256((const unsigned char *) b[i].key, strlen(b[i].key), keys[i].digest);
		hash[i] = get_hash_value(table, &keys[i]);
		part[i] = hash[i] % RATE_PARTITIONS;
		lock[part[i]] = true;
	}
	for (int p = 0; p < RATE_PARTITIONS; p++)
		if (lock[p])
			LWLockAcquire(&locks[p].lock, LW_EXCLUSIVE);

	for (int i = 0; i < n; i++)
	{
		entry[i] = hash_search_with_hash_value(table, &keys[i], hash[i], HASH_FIND, NULL);
		tat[i] = entry[i] != NULL ? entry[i]->tat : 0;
	}
	agentidp_rate_decide(b, n, now, tat, next, v);

	for (int i = 0; v->allowed && i < n; i++)
	{
		RatePartition *pt = &shared->parts[part[i]];

		if (entry[i] == NULL)
		{
			bool		found;

			if (pt->nentries >= pt->capacity)
				make_room(part[i], now, entry, n);
			entry[i] = hash_search_with_hash_value(table, &keys[i], hash[i], HASH_ENTER_NULL, &found);
			/* the elements are preallocated and counted: this cannot fail */
			if (entry[i] == NULL)
				elog(ERROR, "agentidp rate limit table has no free element");
			pt->nentries++;
		}
		else
			dlist_delete(&entry[i]->node);
		entry[i]->tat = next[i];
		dlist_push_tail(&pt->lru, &entry[i]->node);
	}

	for (int p = RATE_PARTITIONS - 1; p >= 0; p--)
		if (lock[p])
			LWLockRelease(&locks[p].lock);
}
