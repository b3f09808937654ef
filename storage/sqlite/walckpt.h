/* Checkpoints of the writer's WAL on a thread of their own.
 *
 * SQLite checkpoints a WAL database from inside the COMMIT that takes the
 * WAL past its threshold (wal_autocheckpoint): that one commit copies every
 * page changed since the last checkpoint into the database file and syncs
 * it, ~10-20 ms during which no caller of the store is answered and, under
 * load, the CPUs run out of work (measured: 21 commits over 2 ms, 263 ms in
 * all, in a 4 s bench run; ~10 % of the writer's CPU).
 *
 * Here the writer connection's WAL hook only asks: when the WAL holds
 * `walckpt_frames()` frames, a checkpointer thread (started on first need,
 * with its own connection) runs PASSIVE checkpoints, which never block the
 * writer or readers, until what is left is small. The writer then finishes
 * the job before its next transaction (walckpt_before_write): a PASSIVE
 * checkpoint of the few frames written meanwhile, after which SQLite starts
 * the WAL over at the next BEGIN. If the thread cannot be started, or the
 * WAL reaches four times the threshold anyway, the hook checkpoints inline
 * as SQLite would have.
 *
 * Safety: checkpoints only copy committed frames (a PASSIVE one skips
 * frames a reader may still need); durability of commits is the WAL's and
 * does not change. The checkpointer connection syncs like the writer
 * (synchronous=FULL): WAL before copying, database file after.
 */
#ifndef MESHID_STORAGE_SQLITE_WALCKPT_H
#define MESHID_STORAGE_SQLITE_WALCKPT_H

#include <sqlite3.h>
#include <stdint.h>

#include "lib/result.h"

typedef struct walckpt walckpt;

/* Takes over the WAL hook of `db`, the store's writer connection to the
 * database file `path` (replacing wal_autocheckpoint). Nothing is started
 * until the WAL first reaches the threshold. */
MID_RESULT walckpt_attach(sqlite3 *db, const char *path, walckpt **out);

/* Called by the writer thread before each transaction: finishes a
 * checkpoint the thread has brought close to the end. */
void walckpt_before_write(walckpt *k);

/* Stops and joins the thread and closes its connection; call before
 * closing the writer connection. NULL ok. */
void walckpt_detach(walckpt *k);

/* Frames in the WAL that start a checkpoint (default 10000, ~40 MiB with
 * 4 KiB pages). Process-wide; a test may lower it before opening stores. */
int walckpt_frames(void);
void walckpt_set_frames(int frames);

/* Process-wide counters. */
typedef struct {
    uint64_t passes;   /* PASSIVE checkpoints run by checkpointer threads */
    uint64_t finishes; /* checkpoints the writer ran to finish one of those */
    uint64_t inline_;  /* checkpoints the WAL hook ran itself (fallback) */
} walckpt_stats;

void walckpt_stats_get(walckpt_stats *out);

#endif
