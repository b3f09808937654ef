/* Background checkpoints of the writer's WAL: see walckpt.h. */
#include "storage/sqlite/walckpt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

#define WALCKPT_FRAMES_DEFAULT 10000
#define WALCKPT_HARD_FACTOR 4      /* the hook checkpoints inline past this many thresholds */
#define WALCKPT_FINISH_FRAMES 512  /* a round stops once at most this many frames are left */
#define WALCKPT_ROUND_PASSES 4     /* passes per round at most (new frames keep coming) */

static atomic_int ck_frames = WALCKPT_FRAMES_DEFAULT;
static atomic_uint_fast64_t ck_passes, ck_finishes, ck_inline;

struct walckpt {
    sqlite3 *wdb;     /* the writer connection: writer thread only */
    char *path;
    int started;      /* thread running; writer thread only */
    int failed;       /* the thread could not start: inline checkpoints; writer thread only */
    atomic_int ready; /* a round ended near the end of the WAL: the writer finishes it */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int want, stop;   /* under mu */
    pthread_t thread;
    sqlite3 *db;      /* the checkpointer's own connection: its thread only */
};

int walckpt_frames(void) { return atomic_load(&ck_frames); }

void walckpt_set_frames(int frames)
{
    atomic_store(&ck_frames, frames > 0 ? frames : WALCKPT_FRAMES_DEFAULT);
}

void walckpt_stats_get(walckpt_stats *out)
{
    out->passes = atomic_load(&ck_passes);
    out->finishes = atomic_load(&ck_finishes);
    out->inline_ = atomic_load(&ck_inline);
}

/* The thread's connection, opened on first use; 0 when it cannot be. */
static int own_conn(walckpt *k)
{
    if (k->db != NULL) return 1;
    int rc = sqlite3_open_v2(k->path, &k->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(k->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return 1;
    LOG_WARN("store: checkpointer cannot open %s: %s", k->path,
             k->db != NULL ? sqlite3_errmsg(k->db) : sqlite3_errstr(rc));
    sqlite3_close(k->db);
    k->db = NULL;
    return 0;
}

/* One round: PASSIVE checkpoints until at most WALCKPT_FINISH_FRAMES are
 * left to copy, then hands the rest to the writer. */
static void run_round(walckpt *k)
{
    if (!own_conn(k)) return; /* the hook's inline fallback still bounds the WAL */
    for (int i = 0; i < WALCKPT_ROUND_PASSES; i++) {
        int log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        atomic_fetch_add(&ck_passes, 1);
        if (rc != SQLITE_OK) {
            /* BUSY: another checkpoint is running; anything else is worth a line */
            if ((rc & 0xff) != SQLITE_BUSY)
                LOG_WARN("store: background checkpoint of %s: %s", k->path, sqlite3_errmsg(k->db));
            return;
        }
        if (log - done <= WALCKPT_FINISH_FRAMES) break;
    }
    atomic_store(&k->ready, 1);
}

static void *ck_main(void *arg)
{
    walckpt *k = arg;
    (void)pthread_setname_np(pthread_self(), "store-ckpt"); /* for top -H, perf */
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->want && !k->stop) pthread_cond_wait(&k->cv, &k->mu);
        if (k->stop) break;
        k->want = 0;
        pthread_mutex_unlock(&k->mu);
        run_round(k);
        pthread_mutex_lock(&k->mu);
        k->want = 0; /* asked during the round: the writer finishes it */
    }
    pthread_mutex_unlock(&k->mu);
    sqlite3_close(k->db);
    k->db = NULL;
    return NULL;
}

/* The WAL hook, after each commit of the writer connection (writer thread). */
static int ck_hook(void *arg, sqlite3 *db, const char *name, int nframes)
{
    walckpt *k = arg;
    int t = atomic_load(&ck_frames);
    if (nframes < t) return SQLITE_OK;
    if (!k->failed && nframes < WALCKPT_HARD_FACTOR * t) {
        if (atomic_load(&k->ready)) return SQLITE_OK; /* finished before the next write */
        if (!k->started) {
            if (pthread_create(&k->thread, NULL, ck_main, k) == 0) {
                k->started = 1;
            } else {
                k->failed = 1;
                LOG_WARN("store: cannot start the checkpointer thread for %s;"
                         " checkpointing inside commits",
                         k->path);
            }
        }
        if (k->started) {
            pthread_mutex_lock(&k->mu);
            k->want = 1;
            pthread_cond_signal(&k->cv);
            pthread_mutex_unlock(&k->mu);
            return SQLITE_OK;
        }
    }
    atomic_fetch_add(&ck_inline, 1);
    (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

MID_RESULT walckpt_attach(sqlite3 *db, const char *path, walckpt **out)
{
    walckpt *k = calloc(1, sizeof *k);
    MID_ENSURE_MEM(k);
    k->path = strdup(path);
    if (k->path == NULL) {
        free(k);
        MID_ENSURE_MEM(NULL);
    }
    if (pthread_mutex_init(&k->mu, NULL) != 0) {
        free(k->path);
        free(k);
        MID_BAIL(MID_E_NOMEM, "cannot create a mutex");
    }
    if (pthread_cond_init(&k->cv, NULL) != 0) {
        pthread_mutex_destroy(&k->mu);
        free(k->path);
        free(k);
        MID_BAIL(MID_E_NOMEM, "cannot create a condition variable");
    }
    k->wdb = db;
    sqlite3_wal_hook(db, ck_hook, k);
    *out = k;
    return MID_OK_RESULT;
}

void walckpt_before_write(walckpt *k)
{
    if (k == NULL || !atomic_load(&k->ready)) return;
    atomic_store(&k->ready, 0);
    /* BUSY (the thread started another round meanwhile) is harmless: the
     * WAL goes on and the next round ends here again. */
    (void)sqlite3_wal_checkpoint_v2(k->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    atomic_fetch_add(&ck_finishes, 1);
}

void walckpt_detach(walckpt *k)
{
    if (k == NULL) return;
    sqlite3_wal_hook(k->wdb, NULL, NULL);
    if (k->started) {
        pthread_mutex_lock(&k->mu);
        k->stop = 1;
        pthread_cond_signal(&k->cv);
        pthread_mutex_unlock(&k->mu);
        (void)pthread_join(k->thread, NULL);
    }
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k->path);
    free(k);
}
