/* The store front end: validation, backend wrappers, the writer thread with
 * group commit, and the audit chain on top of any backend (store_int.h).
 *
 * Write path: a caller validates its input on its own thread, puts a request
 * (living on its stack) in a bounded queue and sleeps on the request's
 * condition variable. The writer takes up to max_batch requests, opens one
 * write transaction, reads the audit head inside it, applies each request in
 * its own savepoint (a failing one is rolled back alone), commits, and only
 * then wakes every caller with its own result. See docs/storage.md.
 */
#include "storage/store.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lib/log.h"
#include "lib/timeutil.h"
#include "storage/audit.h"
#include "storage/store_int.h"
#include "storage/store_mesh.h"

#define STORE_BUSY_TIMEOUT_DEFAULT 5000
#define STORE_MAX_BATCH_DEFAULT 256
#define STORE_MAX_BATCH_LIMIT 4096
#define STORE_QUEUE_MIN 64
#define STORE_ERRMSG_MAX 1024
#define STORE_IDLE_READERS 4 /* read connections kept open between reads */

static const store_backend *const backends[] = {&store_backend_sqlite};

typedef enum {
    REQ_AUDIT,
    REQ_AUTHORITY_PUT,
    REQ_AUTHORITY_INSERT,
    REQ_AUTHORITY_STATE,
    REQ_CERT_INSERT,
    REQ_CERT_MANY,
    REQ_ENTRY_CREATE,
    REQ_ENTRY_DELETE,
    REQ_TOKEN_CREATE,
    REQ_TOKEN_CONSUME,
    REQ_AGENT_UPSERT,
    REQ_AGENT_RENEW,
    REQ_AGENT_BAN,
    REQ_AGENT_TOUCH,
    REQ_MESH_APPLY
} req_kind;

/* An error carried from the writer thread to the caller's thread. */
typedef struct {
    mid_err err;
    const char *file; /* __FILE__ literals: static storage */
    int line;
    char msg[STORE_ERRMSG_MAX];
} carried_err;

/* One certificate of a REQ_CERT_MANY request, with its own outcome. */
typedef struct {
    store_cert cert; /* defaults applied */
    int has_ev;
    store_audit_event ev; /* normalized; seq, ts_ms and hashes set when applied */
    size_t index;         /* position in the caller's arrays */
    carried_err res;
} cert_item;

/* One change of a REQ_MESH_APPLY request (validated; the strings are the
 * caller's, who blocks until the writer is done with them). */
typedef struct {
    const store_mesh_change *ch;
    int has_ev;
    store_audit_event ev; /* normalized; seq, ts_ms and hashes set when applied */
} mesh_item;

typedef struct store_req store_req;
struct store_req {
    req_kind kind;
    store_req *also; /* further requests applied all-or-nothing with this one */
    store_authority auth; /* REQ_AUTHORITY_PUT / _INSERT, defaults applied */
    store_cert cert;      /* REQ_CERT_INSERT, defaults applied */
    const char *id, *from_state, *to_state; /* REQ_AUTHORITY_STATE; id also for the
                                               entry, token and agent requests */
    store_entry entry;   /* REQ_ENTRY_CREATE: validated, selectors sorted; the writer
                            sets entry.revision */
    char selectors_hash[STORE_SELECTORS_HASH_HEX + 1]; /* REQ_ENTRY_CREATE */
    store_join_token token; /* REQ_TOKEN_CREATE */
    store_agent agent;      /* REQ_AGENT_UPSERT */
    const char *serial;     /* REQ_AGENT_RENEW */
    int64_t now, not_after; /* REQ_TOKEN_CONSUME, REQ_AGENT_RENEW, REQ_AGENT_TOUCH,
                               REQ_MESH_APPLY (now) */
    int banned;             /* REQ_AGENT_BAN */
    cert_item *items;       /* REQ_CERT_MANY: each applied in its own savepoint */
    size_t n_items;
    mesh_item *mesh;        /* REQ_MESH_APPLY: all applied in the request's savepoint */
    size_t n_mesh;
    int64_t mesh_revision;  /* REQ_MESH_APPLY: set by the writer, the new mesh revision */
    /* filled by the writer for the caller to own (cleared by it on failure) */
    store_entry_row *entry_out;      /* REQ_ENTRY_DELETE, may be NULL */
    store_join_token_row *token_out; /* REQ_TOKEN_CONSUME, may be NULL */
    int has_ev;
    store_audit_event ev; /* normalized; seq, ts_ms and hashes set when applied */
    /* filled by the writer, read by the caller once `done` is posted */
    sem_t done;
    int async;              /* its caller may wait for it much later (store_cert_batch) */
    void (*notify)(void *); /* async: called when finished, before `done` is posted */
    void *notify_arg;
    store_req *wake_next;   /* wake_link's list of a finished batch */
    carried_err res;
};

struct store {
    const store_backend *vt;
    store_conn *wconn; /* writer thread only (and store_open before it starts) */
    char *target;        /* location without its prefix, to open more readers */
    store_options opts;
    pthread_mutex_t rmu; /* guards the idle reader connections */
    store_conn *idle[STORE_IDLE_READERS];
    size_t nidle;
    int version;
    int max_batch;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv_work, cv_space, cv_idle;
    store_req **queue;
    size_t qcap, qhead, qlen;
    atomic_size_t inflight; /* callers between enqueue() and the end of wait_done() */
    atomic_int stopping;    /* set under mu; read without it by wait_done() */
    int paused;
    store_stats stats;
    pthread_t writer;
    store_req **batch; /* writer-owned scratch, max_batch entries */

    atomic_int fault_nth[STORE_FAULT_COUNT_];
    atomic_int fault_err[STORE_FAULT_COUNT_];
};

/* ---- carried errors ------------------------------------------------------- */

static void carry_current(carried_err *c)
{
    c->err = mid_errcode();
    if (c->err == MID_E_OK) c->err = MID_E_INTERNAL;
    c->file = mid_errfile();
    c->line = mid_errline();
    snprintf(c->msg, sizeof c->msg, "%s", mid_errmsg());
}

static mid_result raise_carried(const carried_err *c)
{
    return mid_fail(c->err, c->file, c->line, "%s", c->msg);
}

/* ---- backend wrappers: the one place faults are injected --------------------- */

static const char *fault_name(store_fault_point p)
{
    switch (p) {
    case STORE_FAULT_BEGIN: return "begin";
    case STORE_FAULT_APPLY: return "apply";
    case STORE_FAULT_COMMIT: return "commit";
    case STORE_FAULT_COUNT_: break;
    }
    return "?";
}

static MID_RESULT fault_check(store *st, store_fault_point p)
{
    if (atomic_load(&st->fault_nth[p]) <= 0) return MID_OK_RESULT;
    if (atomic_fetch_sub(&st->fault_nth[p], 1) != 1) return MID_OK_RESULT;
    MID_BAIL((mid_err)atomic_load(&st->fault_err[p]), "injected fault (%s)", fault_name(p));
}

static MID_RESULT be_begin(store *st)
{
    MID_GUARD(fault_check(st, STORE_FAULT_BEGIN));
    return st->vt->begin_immediate(st->wconn);
}

static MID_RESULT be_commit(store *st)
{
    MID_GUARD(fault_check(st, STORE_FAULT_COMMIT));
    return st->vt->commit(st->wconn);
}

static MID_RESULT be_rollback(store *st) { return st->vt->rollback(st->wconn); }
static MID_RESULT be_savepoint(store *st) { return st->vt->savepoint(st->wconn); }
static MID_RESULT be_release(store *st) { return st->vt->release(st->wconn); }
static MID_RESULT be_rollback_to(store *st) { return st->vt->rollback_to(st->wconn); }

static MID_RESULT be_write_head(store *st, int64_t *seq, uint8_t hash[STORE_HASH_LEN])
{
    return st->vt->audit_head(st->wconn, seq, hash);
}

/* Entries: the revision moves on every create and delete, in the same
 * savepoint as the change, so a refused change leaves it alone. */
static MID_RESULT be_entry_create(store *st, store_req *rq)
{
    MID_GUARD(st->vt->entries_revision_bump(st->wconn, &rq->entry.revision));
    return st->vt->entry_insert(st->wconn, &rq->entry, rq->selectors_hash);
}

static MID_RESULT be_entry_delete(store *st, store_req *rq)
{
    store_entry_row tmp, *out = rq->entry_out ? rq->entry_out : &tmp;
    int64_t rev;
    MID_GUARD(st->vt->entry_delete(st->wconn, rq->id, out));
    if (out == &tmp) store_entry_row_clear(&tmp);
    return st->vt->entries_revision_bump(st->wconn, &rev);
}

static MID_RESULT be_token_consume(store *st, store_req *rq)
{
    store_join_token_row tmp, *out = rq->token_out ? rq->token_out : &tmp;
    MID_GUARD(st->vt->join_token_consume(st->wconn, rq->id, rq->now, out));
    if (out == &tmp) store_join_token_row_clear(&tmp);
    return MID_OK_RESULT;
}

static MID_RESULT be_apply(store *st, store_req *rq)
{
    MID_GUARD(fault_check(st, STORE_FAULT_APPLY));
    switch (rq->kind) {
    case REQ_AUDIT: return MID_OK_RESULT;
    case REQ_AUTHORITY_PUT: return st->vt->authority_put(st->wconn, &rq->auth);
    case REQ_AUTHORITY_INSERT: return st->vt->authority_insert(st->wconn, &rq->auth);
    case REQ_AUTHORITY_STATE:
        return st->vt->authority_set_state(st->wconn, rq->id, rq->from_state, rq->to_state);
    case REQ_CERT_INSERT: return st->vt->cert_insert(st->wconn, &rq->cert);
    case REQ_CERT_MANY: break; /* apply_many */
    case REQ_MESH_APPLY: break; /* apply_mesh */
    case REQ_ENTRY_CREATE: return be_entry_create(st, rq);
    case REQ_ENTRY_DELETE: return be_entry_delete(st, rq);
    case REQ_TOKEN_CREATE: return st->vt->join_token_insert(st->wconn, &rq->token);
    case REQ_TOKEN_CONSUME: return be_token_consume(st, rq);
    case REQ_AGENT_UPSERT: return st->vt->agent_upsert(st->wconn, &rq->agent);
    case REQ_AGENT_RENEW:
        return st->vt->agent_renew(st->wconn, rq->id, rq->serial, rq->not_after, rq->now);
    case REQ_AGENT_BAN: return st->vt->agent_set_banned(st->wconn, rq->id, rq->banned);
    case REQ_AGENT_TOUCH: return st->vt->agent_touch(st->wconn, rq->id, rq->now);
    }
    MID_BAIL(MID_E_INTERNAL, "unknown store request kind %d", (int)rq->kind);
}

static MID_RESULT be_audit_insert(store *st, const store_audit_event *ev)
{
    return st->vt->audit_insert(st->wconn, ev);
}

/* ---- the writer --------------------------------------------------------------- */

/* Chains `ev` after (*seq, hash) and inserts it; on success (*seq, hash)
 * become the event's. */
static MID_RESULT append_event(store *st, store_audit_event *ev, int64_t *seq,
                               uint8_t hash[STORE_HASH_LEN])
{
    ev->seq = *seq + 1;
    if (ev->ts_ms == 0) ev->ts_ms = time_now_ms();
    memcpy(ev->prev_hash, hash, STORE_HASH_LEN);
    MID_GUARD(audit_hash(ev, hash, ev->hash));
    MID_GUARD(be_audit_insert(st, ev));
    *seq = ev->seq;
    memcpy(hash, ev->hash, STORE_HASH_LEN);
    return MID_OK_RESULT;
}

/* Ends a request's savepoint: kept when `r` is OK, else undone with the
 * error carried to `res`. Non-OK only when the transaction is in doubt. */
static MID_RESULT end_savepoint(store *st, mid_result r, carried_err *res)
{
    if (mid_is_ok(r)) r = be_release(st);
    if (mid_is_ok(r)) return MID_OK_RESULT;
    carry_current(res);
    return be_rollback_to(st);
}

/* REQ_CERT_MANY: every certificate in its own savepoint, so a refused one
 * is undone alone and the others (and the head) carry on. */
static MID_RESULT apply_many(store *st, store_req *rq, int64_t *head_seq,
                             uint8_t head_hash[STORE_HASH_LEN])
{
    for (size_t i = 0; i < rq->n_items; i++) {
        cert_item *it = &rq->items[i];
        int64_t seq = *head_seq;
        uint8_t hash[STORE_HASH_LEN];
        memcpy(hash, head_hash, STORE_HASH_LEN);
        MID_GUARD(be_savepoint(st));
        mid_result r = fault_check(st, STORE_FAULT_APPLY);
        if (mid_is_ok(r)) r = st->vt->cert_insert(st->wconn, &it->cert);
        if (mid_is_ok(r) && it->has_ev) r = append_event(st, &it->ev, &seq, hash);
        MID_GUARD(end_savepoint(st, r, &it->res));
        if (!mid_is_ok(r)) continue;
        *head_seq = seq;
        memcpy(head_hash, hash, STORE_HASH_LEN);
    }
    return MID_OK_RESULT;
}

/* One change of a mesh apply: its if_revision condition, then the write.
 * The condition is checked here, above the backend, so every backend
 * applies the same rule. */
static MID_RESULT mesh_change_apply(store *st, const store_mesh_change *ch, int64_t revision,
                                    int64_t now)
{
    MID_GUARD(fault_check(st, STORE_FAULT_APPLY));
    if (ch->if_revision != 0) {
        int64_t cur = 0;
        MID_GUARD(st->vt->mesh_revision_of(st->wconn, ch->kind, ch->namespace_, ch->name, &cur));
        MID_ENSURE(ch->if_revision >= 0 || cur == 0, MID_E_STATE,
                   "%s %.253s/%.253s changed concurrently: it already exists (revision %lld)",
                   ch->kind, ch->namespace_, ch->name, (long long)cur);
        MID_ENSURE(ch->if_revision < 0 || cur != 0, MID_E_STATE,
                   "%s %.253s/%.253s changed concurrently: expected revision %lld, it was "
                   "deleted",
                   ch->kind, ch->namespace_, ch->name, (long long)ch->if_revision);
        MID_ENSURE(ch->if_revision < 0 || cur == ch->if_revision, MID_E_STATE,
                   "%s %.253s/%.253s changed concurrently: expected revision %lld, it is %lld",
                   ch->kind, ch->namespace_, ch->name, (long long)ch->if_revision,
                   (long long)cur);
    }
    if (ch->op == STORE_MESH_DELETE)
        return st->vt->mesh_delete(st->wconn, ch->kind, ch->namespace_, ch->name);
    return st->vt->mesh_put(st->wconn, ch->kind, ch->namespace_, ch->name, ch->spec_json,
                            revision, now);
}

/* REQ_MESH_APPLY: one savepoint for the revision bump and every change with
 * its event, so a failing change (or injected fault) undoes all of them and
 * leaves the other requests of the batch alone. */
static MID_RESULT apply_mesh(store *st, store_req *rq, int64_t *head_seq,
                             uint8_t head_hash[STORE_HASH_LEN])
{
    int64_t seq = *head_seq, rev = 0;
    uint8_t hash[STORE_HASH_LEN];
    memcpy(hash, head_hash, STORE_HASH_LEN);
    MID_GUARD(be_savepoint(st));
    mid_result r = st->vt->mesh_revision_bump(st->wconn, &rev);
    for (size_t i = 0; i < rq->n_mesh && mid_is_ok(r); i++) {
        mesh_item *it = &rq->mesh[i];
        r = mesh_change_apply(st, it->ch, rev, rq->now);
        if (mid_is_ok(r) && it->has_ev) r = append_event(st, &it->ev, &seq, hash);
    }
    MID_GUARD(end_savepoint(st, r, &rq->res));
    if (!mid_is_ok(r)) return MID_OK_RESULT;
    rq->mesh_revision = rev;
    *head_seq = seq;
    memcpy(head_hash, hash, STORE_HASH_LEN);
    return MID_OK_RESULT;
}

/* Applies one request inside its savepoint. On success the head advances to
 * the request's event. On a request error the savepoint is undone, the
 * error is stored in rq->res and OK is returned; a non-OK return means the
 * transaction itself is in doubt and the batch must be abandoned. */
static MID_RESULT apply_one(store *st, store_req *rq, int64_t *head_seq,
                            uint8_t head_hash[STORE_HASH_LEN])
{
    if (rq->kind == REQ_CERT_MANY) return apply_many(st, rq, head_seq, head_hash);
    if (rq->kind == REQ_MESH_APPLY) return apply_mesh(st, rq, head_seq, head_hash);
    int64_t seq = *head_seq;
    uint8_t hash[STORE_HASH_LEN];
    memcpy(hash, head_hash, STORE_HASH_LEN);
    MID_GUARD(be_savepoint(st));
    mid_result r = MID_OK_RESULT;
    for (store_req *q = rq; q != NULL && mid_is_ok(r); q = q->also) {
        r = be_apply(st, q);
        if (mid_is_ok(r) && q->has_ev) r = append_event(st, &q->ev, &seq, hash);
    }
    MID_GUARD(end_savepoint(st, r, &rq->res));
    if (!mid_is_ok(r)) return MID_OK_RESULT;
    *head_seq = seq;
    memcpy(head_hash, hash, STORE_HASH_LEN);
    return MID_OK_RESULT;
}

/* The fast path of a batch made only of certificate writes, the hot path
 * of issuance: every certificate and its event under ONE savepoint instead
 * of one each. A savepoint per certificate costs two statements and a copy
 * of every page it first touches into SQLite's statement journal (~2 us
 * and ~2 KB of WAL per certificate in bench_issue). If anything fails the
 * savepoint is undone and run_batch applies the batch again the careful
 * way (apply_one), so a refused certificate still fails alone. Not taken
 * while a test has armed an apply fault: injected faults exercise the
 * careful path, where real failures end up. certs_only says whether the
 * batch qualifies; apply_certs_fast sets *applied to 1 when it applied the
 * whole batch (the head then advanced), 0 when it undid everything, and
 * returns non-OK only when the transaction is in doubt. */
static int certs_only(store *st, store_req **b, size_t n)
{
    if (atomic_load(&st->fault_nth[STORE_FAULT_APPLY]) > 0) return 0;
    for (size_t i = 0; i < n; i++)
        if ((b[i]->kind != REQ_CERT_INSERT && b[i]->kind != REQ_CERT_MANY) || b[i]->also != NULL)
            return 0;
    return 1;
}

static MID_RESULT apply_certs_fast(store *st, store_req **b, size_t n, int64_t *head_seq,
                                   uint8_t head_hash[STORE_HASH_LEN], int *applied)
{
    int64_t seq = *head_seq;
    uint8_t hash[STORE_HASH_LEN];
    memcpy(hash, head_hash, STORE_HASH_LEN);
    *applied = 0;
    MID_GUARD(be_savepoint(st));
    mid_result r = MID_OK_RESULT;
    for (size_t i = 0; i < n && mid_is_ok(r); i++) {
        store_req *rq = b[i];
        if (rq->kind == REQ_CERT_INSERT) {
            r = st->vt->cert_insert(st->wconn, &rq->cert);
            if (mid_is_ok(r) && rq->has_ev) r = append_event(st, &rq->ev, &seq, hash);
            continue;
        }
        for (size_t k = 0; k < rq->n_items && mid_is_ok(r); k++) {
            cert_item *it = &rq->items[k];
            r = st->vt->cert_insert(st->wconn, &it->cert);
            if (mid_is_ok(r) && it->has_ev) r = append_event(st, &it->ev, &seq, hash);
        }
    }
    if (!mid_is_ok(r)) return be_rollback_to(st); /* the careful path takes over */
    MID_GUARD(be_release(st));
    *head_seq = seq;
    memcpy(head_hash, hash, STORE_HASH_LEN);
    *applied = 1;
    return MID_OK_RESULT;
}

/* Records a request carries: its certificates, its mesh changes, or 1. */
static size_t req_records(const store_req *rq)
{
    if (rq->kind == REQ_CERT_MANY) return rq->n_items;
    if (rq->kind == REQ_MESH_APPLY) return rq->n_mesh;
    return 1;
}

/* Fails every request (and certificate of a REQ_CERT_MANY) of the batch
 * that has no error of its own yet. */
static void fail_pending(store_req **b, size_t n, const carried_err *e)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i]->res.err == MID_E_OK) b[i]->res = *e;
        for (size_t k = 0; k < b[i]->n_items; k++)
            if (b[i]->items[k].res.err == MID_E_OK) b[i]->items[k].res = *e;
    }
}


/* One group commit. Returns 1 when the batch committed. */
static int run_batch(store *st, store_req **b, size_t n)
{
    carried_err e;
    int64_t head_seq = 0;
    uint8_t head_hash[STORE_HASH_LEN];

    for (size_t i = 0; i < n; i++) {
        b[i]->res.err = MID_E_OK;
        for (size_t k = 0; k < b[i]->n_items; k++) b[i]->items[k].res.err = MID_E_OK;
    }
    mid_result r = be_begin(st);
    int in_txn = mid_is_ok(r);
    if (in_txn) r = be_write_head(st, &head_seq, head_hash);
    int applied = 0;
    if (mid_is_ok(r) && certs_only(st, b, n)) {
        r = apply_certs_fast(st, b, n, &head_seq, head_hash, &applied);
        pthread_mutex_lock(&st->mu);
        if (applied)
            st->stats.fast_batches++;
        else
            st->stats.fast_fallbacks++;
        pthread_mutex_unlock(&st->mu);
    }
    for (size_t i = 0; i < n && mid_is_ok(r) && !applied; i++)
        r = apply_one(st, b[i], &head_seq, head_hash);
    if (mid_is_ok(r)) r = be_commit(st);
    if (mid_is_ok(r)) return 1;

    carry_current(&e);
    LOG_WARN("store: batch of %zu write(s) failed: %s", n, e.msg);
    if (in_txn && !mid_is_ok(be_rollback(st)))
        LOG_ERROR("store: rollback failed: %s", mid_errmsg());
    /* Nothing of this batch is durable: requests that applied fail with the
     * batch's error, those that failed on their own keep theirs. */
    fail_pending(b, n, &e);
    return 0;
}

/* Waking the callers of a finished batch. Each sleeps on its own semaphore
 * (not on mu, which they would all queue up on again on their way out) and
 * the writer posts every one of them itself, an async request
 * (store_cert_batch) after its notify callback. An earlier version posted
 * only the first caller and had each caller post the next once awake (one
 * system call per batch for the writer), but on a busy machine each hop of
 * that chain waited for a CPU, so most callers sat in the chain instead of
 * working: with 32 callers on 2 CPUs batches shrank to 3-8 records and
 * throughput fell by a tenth or more (docs/storage.md, "Waking callers").
 *
 * wake_link (mu held) links the batch's requests; wake_post then posts
 * them. Requests may vanish as soon as they are posted. */
static store_req *wake_link(store_req **b, size_t n)
{
    store_req *head = NULL;
    for (size_t i = n; i-- > 0;) { /* built backwards: posted in request order */
        b[i]->wake_next = head;
        head = b[i];
    }
    return head;
}

static void wake_post(store_req *r)
{
    for (store_req *next; r != NULL; r = next) {
        next = r->wake_next; /* r may vanish once posted */
        if (r->async && r->notify != NULL) r->notify(r->notify_arg); /* while r exists */
        sem_post(&r->done);
    }
}

/* Takes the next batch from the queue into st->batch (mu held): at most
 * max_batch records (a multi-certificate request counts its
 * certificates), but always at least one request. Returns the number of
 * requests, *records their records. */
static size_t take_batch(store *st, size_t *records)
{
    size_t n = 0;
    *records = 0;
    while (n < st->qlen && n < (size_t)st->max_batch) {
        store_req *rq = st->queue[st->qhead];
        size_t w = req_records(rq);
        if (n > 0 && *records + w > (size_t)st->max_batch) break;
        st->batch[n++] = rq;
        st->qhead = (st->qhead + 1) % st->qcap;
        *records += w;
    }
    st->qlen -= n;
    pthread_cond_broadcast(&st->cv_space);
    return n;
}

/* Runs the batch take_batch took (called without mu), then counts it and
 * wakes its callers. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void run_taken(store *st, size_t n, size_t records)
{
    uint64_t cpu0 = thread_cpu_ns();
    int committed = run_batch(st, st->batch, n);
    uint64_t cpu1 = thread_cpu_ns();
    pthread_mutex_lock(&st->mu);
    st->stats.writer_cpu_ns += cpu1 - cpu0;
    st->stats.writes += records;
    if (committed)
        st->stats.transactions++;
    else
        st->stats.commit_failures++;
    if (records > st->stats.max_batch_seen) st->stats.max_batch_seen = records;
    for (size_t i = 0; i < n; i++) {
        store_req *rq = st->batch[i];
        if (rq->kind != REQ_CERT_MANY && rq->res.err != MID_E_OK)
            st->stats.writes_failed += req_records(rq); /* all or nothing */
        for (size_t k = 0; k < rq->n_items; k++)
            if (rq->items[k].res.err != MID_E_OK) st->stats.writes_failed++;
    }
    store_req *w = wake_link(st->batch, n);
    pthread_mutex_unlock(&st->mu);
    wake_post(w);
}

/* The writer thread: one batch (one transaction) at a time, whenever
 * requests are queued. */
static void *writer_main(void *arg)
{
    store *st = arg;
    (void)pthread_setname_np(pthread_self(), "store-writer"); /* for top -H, perf */
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->stopping && (st->qlen == 0 || st->paused))
            pthread_cond_wait(&st->cv_work, &st->mu);
        if (st->qlen == 0) break; /* stopping and drained */
        size_t records = 0, n = take_batch(st, &records);
        pthread_mutex_unlock(&st->mu);
        run_taken(st, n, records);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Queues rq for the writer (waiting while the queue is full). Returns 0,
 * with nothing queued, when the store is closing. On 1 the caller must call
 * wait_done(st, rq) once, and keep rq and what it points to alive until
 * then. A caller counts as inside (inflight) from here, waiting for room
 * included, so that store_close never frees what it is still using. */
static int enqueue(store *st, store_req *rq)
{
    rq->res.err = MID_E_OK;
    pthread_mutex_lock(&st->mu);
    atomic_fetch_add(&st->inflight, 1);
    while (st->qlen == st->qcap && !st->stopping) pthread_cond_wait(&st->cv_space, &st->mu);
    int ok = !st->stopping;
    if (ok) {
        (void)sem_init(&rq->done, 0, 0); /* fails only for values over SEM_VALUE_MAX */
        st->queue[(st->qhead + st->qlen) % st->qcap] = rq;
        st->qlen++;
        pthread_cond_signal(&st->cv_work);
    } else if (atomic_fetch_sub(&st->inflight, 1) == 1) {
        pthread_cond_broadcast(&st->cv_idle); /* stopping: store_close may be waiting */
    }
    pthread_mutex_unlock(&st->mu);
    return ok;
}

/* Blocks until rq, queued by enqueue(), is committed (or failed). No lock
 * is taken unless the store is closing and this was the last caller inside. */
static void wait_done(store *st, store_req *rq)
{
    while (sem_wait(&rq->done) != 0) {
        /* EINTR only: a signal handler ran; keep waiting */
    }
    sem_destroy(&rq->done);
    if (atomic_fetch_sub(&st->inflight, 1) == 1 && st->stopping) {
        pthread_mutex_lock(&st->mu);
        pthread_cond_broadcast(&st->cv_idle);
        pthread_mutex_unlock(&st->mu);
    }
}

/* Queues rq and blocks until the writer has committed (or failed) it.
 * Re-raises the writer's error on this thread. */
static MID_RESULT submit(store *st, store_req *rq)
{
    MID_ENSURE(enqueue(st, rq), MID_E_STATE, "store is closing");
    wait_done(st, rq);
    if (rq->res.err != MID_E_OK) return raise_carried(&rq->res);
    return MID_OK_RESULT;
}

/* ---- input validation (on the caller's thread) ---------------------------------- */

static MID_RESULT check_str(const char *what, const char *s, size_t max, int required)
{
    if (s == NULL) {
        MID_ENSURE(!required, MID_E_INVALID, "%s is required", what);
        return MID_OK_RESULT;
    }
    size_t n = strnlen(s, max + 1);
    MID_ENSURE(!required || n > 0, MID_E_INVALID, "%s must not be empty", what);
    MID_ENSURE(n <= max, MID_E_TOO_LARGE, "%s is longer than %zu bytes", what, max);
    return MID_OK_RESULT;
}

/* Lowercase hex of length min..max (required). */
static MID_RESULT check_hex(const char *what, const char *s, size_t min, size_t max)
{
    MID_ENSURE(s != NULL, MID_E_INVALID, "%s is required", what);
    size_t n = strnlen(s, max + 1);
    MID_ENSURE(n >= min && n <= max, MID_E_INVALID, "%s must be %zu to %zu hex digits", what, min,
               max);
    for (size_t i = 0; i < n; i++)
        MID_ENSURE((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'), MID_E_INVALID,
                   "%s must be lowercase hex", what);
    return MID_OK_RESULT;
}

static MID_RESULT check_one_of(const char *what, const char *s, const char *const *allowed)
{
    MID_ENSURE(s != NULL, MID_E_INVALID, "%s is required", what);
    for (size_t i = 0; allowed[i] != NULL; i++)
        if (strcmp(s, allowed[i]) == 0) return MID_OK_RESULT;
    MID_BAIL(MID_E_INVALID, "%s '%.64s' is not allowed", what, s);
}

static const char *const authority_kinds[] = {"root", "intermediate", NULL};
static const char *const authority_states[] = {"prepared", "active", "old",     "tainted",
                                               "revoked",  "removed", NULL};
static const char *const cert_statuses[] = {"valid", "revoked", NULL};

static MID_RESULT check_authority(const store_authority *a)
{
    MID_ENSURE(a != NULL, MID_E_INVALID, "authority is required");
    MID_GUARD(check_hex("authority id", a->id, 1, 128));
    MID_GUARD(check_one_of("authority kind", a->kind, authority_kinds));
    MID_GUARD(check_one_of("authority state", a->state, authority_states));
    MID_GUARD(check_str("authority trust_domain", a->trust_domain, STORE_TEXT_MAX, 1));
    if (a->parent_id != NULL) MID_GUARD(check_hex("authority parent_id", a->parent_id, 1, 128));
    MID_GUARD(check_str("authority cert_pem", a->cert_pem, STORE_PEM_MAX, 1));
    MID_GUARD(check_str("authority chain_pem", a->chain_pem, STORE_PEM_MAX, 0));
    MID_GUARD(check_str("authority key_ref", a->key_ref, STORE_TEXT_MAX, 0));
    MID_ENSURE(a->upstream == 0 || a->upstream == 1, MID_E_INVALID, "authority upstream is 0 or 1");
    MID_ENSURE(a->not_after >= a->not_before, MID_E_INVALID, "authority not_after < not_before");
    MID_ENSURE(a->created_at >= 0, MID_E_INVALID, "authority created_at is negative");
    return MID_OK_RESULT;
}

static MID_RESULT check_cert(const store_cert *c)
{
    MID_ENSURE(c != NULL, MID_E_INVALID, "certificate is required");
    MID_GUARD(check_hex("certificate serial", c->serial, 1, 64));
    MID_GUARD(check_str("certificate spiffe_id", c->spiffe_id, STORE_TEXT_MAX, 1));
    MID_GUARD(check_hex("certificate key_fp", c->key_fp, 64, 64));
    MID_GUARD(check_hex("certificate authority_id", c->authority_id, 1, 128));
    MID_GUARD(check_one_of("certificate status", c->status, cert_statuses));
    MID_ENSURE(c->cert_der != NULL && c->cert_der_len > 0, MID_E_INVALID,
               "certificate cert_der is required");
    MID_ENSURE(c->cert_der_len <= STORE_CERT_DER_MAX, MID_E_TOO_LARGE,
               "certificate cert_der is longer than %d bytes", STORE_CERT_DER_MAX);
    MID_ENSURE(c->not_after >= c->not_before, MID_E_INVALID, "certificate not_after < not_before");
    MID_ENSURE(c->issued_at >= 0, MID_E_INVALID, "certificate issued_at is negative");
    return MID_OK_RESULT;
}

/* Text that ends up in logs, SANs and lookups: no control bytes. */
static MID_RESULT check_printable(const char *what, const char *s, size_t max, int required)
{
    MID_GUARD(check_str(what, s, max, required));
    if (s == NULL) return MID_OK_RESULT;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        MID_ENSURE(*p >= 0x20 && *p != 0x7f, MID_E_INVALID, "%s contains a control byte (0x%02x)",
                   what, *p);
    return MID_OK_RESULT;
}

/* The shape of a SPIFFE ID; identity/spiffe_id.h does the real validation
 * above the store. */
static MID_RESULT check_spiffe_shape(const char *what, const char *s, int required)
{
    MID_GUARD(check_printable(what, s, STORE_TEXT_MAX, required));
    if (s == NULL) return MID_OK_RESULT;
    MID_ENSURE(strncmp(s, "spiffe://", 9) == 0 && s[9] != '\0', MID_E_INVALID,
               "%s '%.128s' is not a spiffe:// URI", what, s);
    return MID_OK_RESULT;
}

static MID_RESULT check_entry_id(const char *id)
{
    MID_ENSURE(id != NULL, MID_E_INVALID, "entry id is required");
    size_t n = strnlen(id, STORE_ENTRY_ID_MAX + 1);
    MID_ENSURE(n >= 1 && n <= STORE_ENTRY_ID_MAX, MID_E_INVALID,
               "entry id must be 1 to %d characters", STORE_ENTRY_ID_MAX);
    for (size_t i = 0; i < n; i++)
        MID_ENSURE((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') || id[i] == '-',
                   MID_E_INVALID, "entry id must be lowercase hex digits and dashes");
    return MID_OK_RESULT;
}

static int selector_cmp(const void *a, const void *b)
{
    const store_selector *x = a, *y = b;
    int c = strcmp(x->type, y->type);
    return c != 0 ? c : strcmp(x->value, y->value);
}

/* Validates an entry for create and copies its selectors, sorted, into
 * `sorted` (STORE_ENTRY_SELECTORS_MAX slots). */
static MID_RESULT check_entry(const store_entry *e, store_selector *sorted)
{
    MID_ENSURE(e != NULL, MID_E_INVALID, "entry is required");
    if (e->id != NULL) MID_GUARD(check_entry_id(e->id));
    MID_GUARD(check_spiffe_shape("entry spiffe_id", e->spiffe_id, 1));
    MID_GUARD(check_spiffe_shape("entry parent_id", e->parent_id, 1));
    MID_ENSURE(e->n_selectors >= 1, MID_E_INVALID, "an entry needs at least one selector");
    MID_ENSURE(e->n_selectors <= STORE_ENTRY_SELECTORS_MAX, MID_E_TOO_LARGE,
               "an entry has at most %d selectors", STORE_ENTRY_SELECTORS_MAX);
    MID_ENSURE(e->selectors != NULL, MID_E_INVALID, "entry selectors are missing");
    for (size_t i = 0; i < e->n_selectors; i++) {
        const store_selector *sel = &e->selectors[i];
        MID_GUARD(check_printable("selector type", sel->type, STORE_SELECTOR_TYPE_MAX, 1));
        MID_GUARD(check_printable("selector value", sel->value, STORE_SELECTOR_VALUE_MAX, 1));
        MID_ENSURE(strchr(sel->type, ':') == NULL, MID_E_INVALID,
                   "selector type '%.64s' must not contain ':'", sel->type);
        sorted[i] = *sel;
    }
    qsort(sorted, e->n_selectors, sizeof *sorted, selector_cmp);
    for (size_t i = 1; i < e->n_selectors; i++)
        MID_ENSURE(selector_cmp(&sorted[i - 1], &sorted[i]) != 0, MID_E_INVALID,
                   "selector %.64s:%.128s is listed twice", sorted[i].type, sorted[i].value);
    MID_ENSURE(e->n_dns_names <= STORE_ENTRY_DNS_MAX, MID_E_TOO_LARGE,
               "an entry has at most %d DNS names", STORE_ENTRY_DNS_MAX);
    MID_ENSURE(e->n_dns_names == 0 || e->dns_names != NULL, MID_E_INVALID,
               "entry dns_names are missing");
    for (size_t i = 0; i < e->n_dns_names; i++)
        MID_GUARD(check_printable("entry DNS name", e->dns_names[i], 255, 1));
    MID_ENSURE(e->ttl_seconds >= 0, MID_E_INVALID, "entry ttl_seconds is negative");
    MID_ENSURE(e->created_at >= 0, MID_E_INVALID, "entry created_at is negative");
    return MID_OK_RESULT;
}

static MID_RESULT check_join_token(const store_join_token *t)
{
    MID_ENSURE(t != NULL, MID_E_INVALID, "join token is required");
    MID_GUARD(check_hex("join token hash", t->token_hash, 64, 64));
    MID_GUARD(check_spiffe_shape("join token agent_spiffe_id", t->agent_spiffe_id, 0));
    MID_ENSURE(t->created_at >= 0, MID_E_INVALID, "join token created_at is negative");
    return MID_OK_RESULT;
}

static MID_RESULT check_agent(const store_agent *a)
{
    MID_ENSURE(a != NULL, MID_E_INVALID, "agent is required");
    MID_GUARD(check_spiffe_shape("agent spiffe_id", a->spiffe_id, 1));
    MID_GUARD(check_hex("agent serial", a->serial, 1, 64));
    MID_GUARD(check_printable("agent hostname", a->hostname, 255, 0));
    MID_ENSURE(a->banned == 0 || a->banned == 1, MID_E_INVALID, "agent banned is 0 or 1");
    MID_ENSURE(a->attested_at >= 0 && a->last_seen >= 0, MID_E_INVALID,
               "agent times must not be negative");
    return MID_OK_RESULT;
}

/* Validates and attaches the optional audit event of a write. */
static MID_RESULT req_set_event(store_req *rq, const store_audit_event *ev)
{
    if (ev == NULL) return MID_OK_RESULT;
    MID_GUARD(audit_validate(ev));
    audit_normalize(ev, &rq->ev);
    rq->has_ev = 1;
    return MID_OK_RESULT;
}

static MID_RESULT check_store(const store *st)
{
    MID_ENSURE(st != NULL, MID_E_INVALID, "no store");
    return MID_OK_RESULT;
}

/* ---- writes ---------------------------------------------------------------------- */

MID_RESULT store_audit_append(store *st, const store_audit_event *ev, store_audit_event *ev_out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(ev != NULL, MID_E_INVALID, "audit event is required");
    store_req rq = {.kind = REQ_AUDIT};
    MID_GUARD(req_set_event(&rq, ev));
    MID_GUARD(submit(st, &rq));
    if (ev_out != NULL) *ev_out = rq.ev;
    return MID_OK_RESULT;
}

static MID_RESULT authority_req(store_req *rq, const store_authority *a,
                                const store_audit_event *ev)
{
    MID_GUARD(check_authority(a));
    *rq = (store_req){.kind = REQ_AUTHORITY_PUT, .auth = *a};
    if (rq->auth.chain_pem == NULL) rq->auth.chain_pem = "";
    if (rq->auth.key_ref == NULL) rq->auth.key_ref = "";
    if (rq->auth.created_at == 0) rq->auth.created_at = time_now();
    return req_set_event(rq, ev);
}

MID_RESULT store_authority_put(store *st, const store_authority *a, const store_audit_event *ev)
{
    return store_authority_put_all(st, a, ev, 1);
}

MID_RESULT store_authority_put_all(store *st, const store_authority *a,
                                   const store_audit_event *ev, size_t n)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(a != NULL && n >= 1 && n <= STORE_PUT_ALL_MAX, MID_E_INVALID,
               "between 1 and %d authorities per write", STORE_PUT_ALL_MAX);
    store_req rq[STORE_PUT_ALL_MAX];
    for (size_t i = 0; i < n; i++) {
        MID_GUARD(authority_req(&rq[i], &a[i], ev != NULL ? &ev[i] : NULL));
        if (i > 0) rq[i - 1].also = &rq[i];
    }
    return submit(st, &rq[0]);
}

MID_RESULT store_authority_apply(store *st, const store_authority *put,
                                 const store_audit_event *put_ev, size_t n_put,
                                 const store_authority_transition *tr,
                                 const store_audit_event *tr_ev, size_t n_tr)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(n_put + n_tr >= 1 && n_put + n_tr <= STORE_PUT_ALL_MAX, MID_E_INVALID,
               "between 1 and %d authority changes per write", STORE_PUT_ALL_MAX);
    MID_ENSURE((n_put == 0 || put != NULL) && (n_tr == 0 || tr != NULL), MID_E_INVALID,
               "authority changes are required");
    store_req rq[STORE_PUT_ALL_MAX];
    size_t k = 0;
    /* Transitions first: they check the rows the new ones may refer to. */
    for (size_t i = 0; i < n_tr; i++, k++) {
        MID_GUARD(check_hex("authority id", tr[i].id, 1, 128));
        MID_GUARD(check_one_of("authority state", tr[i].from_state, authority_states));
        MID_GUARD(check_one_of("authority state", tr[i].to_state, authority_states));
        rq[k] = (store_req){.kind = REQ_AUTHORITY_STATE, .id = tr[i].id,
                            .from_state = tr[i].from_state, .to_state = tr[i].to_state};
        MID_GUARD(req_set_event(&rq[k], tr_ev != NULL ? &tr_ev[i] : NULL));
    }
    for (size_t i = 0; i < n_put; i++, k++) {
        MID_GUARD(authority_req(&rq[k], &put[i], put_ev != NULL ? &put_ev[i] : NULL));
        rq[k].kind = REQ_AUTHORITY_INSERT;
    }
    for (size_t i = 1; i < k; i++) rq[i - 1].also = &rq[i];
    return submit(st, &rq[0]);
}

MID_RESULT store_authority_set_state(store *st, const char *id, const char *from_state,
                                     const char *to_state, const store_audit_event *ev)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_hex("authority id", id, 1, 128));
    MID_GUARD(check_one_of("authority state", from_state, authority_states));
    MID_GUARD(check_one_of("authority state", to_state, authority_states));
    store_req rq = {.kind = REQ_AUTHORITY_STATE, .id = id, .from_state = from_state,
                    .to_state = to_state};
    MID_GUARD(req_set_event(&rq, ev));
    return submit(st, &rq);
}

MID_RESULT store_cert_insert(store *st, const store_cert *c, const store_audit_event *ev)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_cert(c));
    store_req rq = {.kind = REQ_CERT_INSERT, .cert = *c};
    if (rq.cert.issued_at == 0) rq.cert.issued_at = time_now();
    MID_GUARD(req_set_event(&rq, ev));
    return submit(st, &rq);
}

/* A queued store_cert_insert_many_start, until store_cert_batch_wait. */
struct store_cert_batch {
    store *st;
    store_req rq;               /* REQ_CERT_MANY over items[0..k) */
    int queued;                 /* rq went to the writer (else refused: closing) */
    mid_result *results;        /* the caller's */
    carried_err first;          /* failure of the lowest index so far */
    size_t first_idx;
    size_t k;
    cert_item items[];          /* n allocated, k queued */
};

MID_RESULT store_cert_insert_many_start(store *st, const store_cert *certs,
                                        const store_audit_event *evs, size_t n,
                                        mid_result *results, void (*notify)(void *arg),
                                        void *arg, store_cert_batch **out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(certs != NULL && results != NULL && out != NULL, MID_E_INVALID,
               "certificates are required");
    MID_ENSURE(n >= 1 && n <= STORE_CERT_MANY_MAX, MID_E_INVALID,
               "between 1 and %d certificates per write", STORE_CERT_MANY_MAX);
    store_cert_batch *b = calloc(1, sizeof *b + n * sizeof b->items[0]);
    MID_ENSURE_MEM(b);
    b->st = st;
    b->results = results;
    b->first.err = MID_E_OK;
    b->first_idx = SIZE_MAX;
    /* Malformed input is refused here, on the caller's thread, as
     * store_cert_insert would; only the rest is queued. */
    for (size_t i = 0; i < n; i++) {
        cert_item *it = &b->items[b->k];
        mid_result r = check_cert(&certs[i]);
        if (mid_is_ok(r) && evs != NULL) r = audit_validate(&evs[i]);
        results[i] = r;
        if (!mid_is_ok(r)) {
            if (i < b->first_idx) {
                carry_current(&b->first);
                b->first_idx = i;
            }
            continue;
        }
        it->cert = certs[i];
        if (it->cert.issued_at == 0) it->cert.issued_at = time_now();
        if (evs != NULL) {
            audit_normalize(&evs[i], &it->ev);
            it->has_ev = 1;
        }
        it->index = i;
        b->k++;
    }
    if (b->k > 0) {
        b->rq = (store_req){.kind = REQ_CERT_MANY, .items = b->items, .n_items = b->k,
                            .async = 1, .notify = notify, .notify_arg = arg};
        b->queued = enqueue(st, &b->rq);
    }
    /* Nothing went to the writer (every certificate refused here, or the
     * store is closing): finished already. */
    if (!b->queued && notify != NULL) notify(arg);
    *out = b;
    return MID_OK_RESULT;
}

MID_RESULT store_cert_batch_wait(store_cert_batch *b)
{
    MID_ENSURE(b != NULL, MID_E_INVALID, "no certificate batch");
    carried_err whole = {.err = MID_E_OK};
    if (b->queued) {
        wait_done(b->st, &b->rq);
        whole = b->rq.res;
    } else if (b->k > 0) {
        whole = (carried_err){.err = MID_E_STATE, .file = __FILE__, .line = __LINE__};
        snprintf(whole.msg, sizeof whole.msg, "store is closing");
    }
    /* A request that failed as a whole (closing store, failed commit) made
     * nothing durable: every certificate without an error of its own fails
     * with it. */
    for (size_t j = 0; j < b->k; j++) {
        cert_item *it = &b->items[j];
        if (it->res.err == MID_E_OK && whole.err != MID_E_OK) it->res = whole;
        b->results[it->index] = (mid_result){it->res.err};
        if (it->res.err != MID_E_OK && it->index < b->first_idx) {
            b->first = it->res;
            b->first_idx = it->index;
        }
    }
    carried_err first = b->first;
    free(b);
    if (first.err == MID_E_OK) return MID_OK_RESULT;
    return raise_carried(&first);
}

MID_RESULT store_cert_insert_many(store *st, const store_cert *certs, const store_audit_event *evs,
                                  size_t n, mid_result *results)
{
    store_cert_batch *b = NULL;
    MID_GUARD(store_cert_insert_many_start(st, certs, evs, n, results, NULL, NULL, &b));
    return store_cert_batch_wait(b);
}

/* 16 random bytes as 32 lowercase hex digits. */
static MID_RESULT new_entry_id(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    MID_ENSURE(RAND_bytes(b, sizeof b) == 1, MID_E_CRYPTO, "cannot draw a random entry id");
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 0xf];
    }
    out[32] = '\0';
    return MID_OK_RESULT;
}

MID_RESULT store_entry_create(store *st, const store_entry *e, const store_audit_event *ev,
                              store_entry_row *out)
{
    store_selector sorted[STORE_ENTRY_SELECTORS_MAX];
    char id[33];
    if (out != NULL) memset(out, 0, sizeof *out);
    MID_GUARD(check_store(st));
    MID_GUARD(check_entry(e, sorted));
    store_req rq = {.kind = REQ_ENTRY_CREATE, .entry = *e};
    rq.entry.selectors = sorted;
    if (rq.entry.id == NULL) {
        MID_GUARD(new_entry_id(id));
        rq.entry.id = id;
    }
    if (rq.entry.created_at == 0) rq.entry.created_at = time_now();
    rq.entry.revision = 0;
    MID_GUARD(store_selectors_hash(sorted, e->n_selectors, rq.selectors_hash));
    MID_GUARD(req_set_event(&rq, ev));
    /* Copied before the write, so a committed entry is never reported as
     * failed for want of memory; only the revision is filled in after. */
    if (out != NULL) MID_GUARD(store_entry_row_copy(&rq.entry, out));
    mid_result r = submit(st, &rq);
    if (!mid_is_ok(r)) {
        store_entry_row_clear(out);
        return r;
    }
    if (out != NULL) out->e.revision = rq.entry.revision;
    return MID_OK_RESULT;
}

MID_RESULT store_entry_delete(store *st, const char *id, const store_audit_event *ev,
                              store_entry_row *out)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    MID_GUARD(check_store(st));
    MID_GUARD(check_entry_id(id));
    store_req rq = {.kind = REQ_ENTRY_DELETE, .id = id, .entry_out = out};
    MID_GUARD(req_set_event(&rq, ev));
    mid_result r = submit(st, &rq);
    if (!mid_is_ok(r)) store_entry_row_clear(out); /* filled before a later failure */
    return r;
}

MID_RESULT store_join_token_create(store *st, const store_join_token *t,
                                   const store_audit_event *ev)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_join_token(t));
    store_req rq = {.kind = REQ_TOKEN_CREATE, .token = *t};
    if (rq.token.created_at == 0) rq.token.created_at = time_now();
    rq.token.used_at = 0;
    MID_ENSURE(rq.token.expires_at >= rq.token.created_at, MID_E_INVALID,
               "join token expires_at is before created_at");
    MID_GUARD(req_set_event(&rq, ev));
    return submit(st, &rq);
}

MID_RESULT store_join_token_consume(store *st, const char *token_hash, int64_t now,
                                    const store_audit_event *ev, store_join_token_row *out)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    MID_GUARD(check_store(st));
    MID_GUARD(check_hex("join token hash", token_hash, 64, 64));
    MID_ENSURE(now >= 0, MID_E_INVALID, "time is negative");
    store_req rq = {.kind = REQ_TOKEN_CONSUME, .id = token_hash, .now = now, .token_out = out};
    MID_GUARD(req_set_event(&rq, ev));
    mid_result r = submit(st, &rq);
    if (!mid_is_ok(r)) store_join_token_row_clear(out);
    return r;
}

MID_RESULT store_agent_upsert(store *st, const store_agent *a, const store_audit_event *ev)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_agent(a));
    store_req rq = {.kind = REQ_AGENT_UPSERT, .agent = *a};
    if (rq.agent.hostname == NULL) rq.agent.hostname = "";
    if (rq.agent.attested_at == 0) rq.agent.attested_at = time_now();
    if (rq.agent.last_seen == 0) rq.agent.last_seen = rq.agent.attested_at;
    MID_GUARD(req_set_event(&rq, ev));
    return submit(st, &rq);
}

MID_RESULT store_agent_renew(store *st, const char *spiffe_id, const char *serial,
                             int64_t not_after, int64_t now, const store_audit_event *ev)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_spiffe_shape("agent spiffe_id", spiffe_id, 1));
    MID_GUARD(check_hex("agent serial", serial, 1, 64));
    MID_ENSURE(now >= 0, MID_E_INVALID, "time is negative");
    store_req rq = {.kind = REQ_AGENT_RENEW, .id = spiffe_id, .serial = serial,
                    .not_after = not_after, .now = now};
    MID_GUARD(req_set_event(&rq, ev));
    return submit(st, &rq);
}

MID_RESULT store_agent_set_banned(store *st, const char *spiffe_id, int banned,
                                  const store_audit_event *ev)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_spiffe_shape("agent spiffe_id", spiffe_id, 1));
    MID_ENSURE(banned == 0 || banned == 1, MID_E_INVALID, "banned is 0 or 1");
    store_req rq = {.kind = REQ_AGENT_BAN, .id = spiffe_id, .banned = banned};
    MID_GUARD(req_set_event(&rq, ev));
    return submit(st, &rq);
}

MID_RESULT store_agent_touch(store *st, const char *spiffe_id, int64_t now)
{
    MID_GUARD(check_store(st));
    MID_GUARD(check_spiffe_shape("agent spiffe_id", spiffe_id, 1));
    MID_ENSURE(now >= 0, MID_E_INVALID, "time is negative");
    store_req rq = {.kind = REQ_AGENT_TOUCH, .id = spiffe_id, .now = now};
    return submit(st, &rq);
}

/* ---- mesh resources ------------------------------------------------------------------ */

static const char *const mesh_kinds[] = {STORE_MESH_KIND_SERVICE, STORE_MESH_KIND_POLICY, NULL};

/* A resource's key: kind from its set, namespace and name 1..STORE_MESH_NAME_MAX
 * bytes without control bytes. */
static MID_RESULT check_mesh_key(const char *kind, const char *namespace_, const char *name)
{
    MID_GUARD(check_one_of("mesh resource kind", kind, mesh_kinds));
    MID_GUARD(check_printable("mesh resource namespace", namespace_, STORE_MESH_NAME_MAX, 1));
    MID_GUARD(check_printable("mesh resource name", name, STORE_MESH_NAME_MAX, 1));
    return MID_OK_RESULT;
}

/* A resource's spec: at most STORE_MESH_SPEC_MAX bytes of JSON that parses
 * (no duplicate keys) to an object. Adds its length to *total. */
static MID_RESULT check_mesh_spec(const store_mesh_change *ch, size_t *total)
{
    MID_ENSURE(ch->spec_json != NULL, MID_E_INVALID, "%s %.253s/%.253s: a put needs its spec",
               ch->kind, ch->namespace_, ch->name);
    size_t n = strnlen(ch->spec_json, (size_t)STORE_MESH_SPEC_MAX + 1);
    MID_ENSURE(n <= STORE_MESH_SPEC_MAX, MID_E_TOO_LARGE,
               "%s %.253s/%.253s: spec is longer than %u bytes", ch->kind, ch->namespace_,
               ch->name, STORE_MESH_SPEC_MAX);
    *total += n;
    MID_ENSURE(*total <= STORE_MESH_APPLY_BYTES_MAX, MID_E_TOO_LARGE,
               "the specs of one mesh apply are longer than %u bytes together",
               STORE_MESH_APPLY_BYTES_MAX);
    json_error_t jerr;
    json_t *j = json_loadb(ch->spec_json, n, JSON_REJECT_DUPLICATES, &jerr);
    MID_ENSURE(j != NULL, MID_E_INVALID, "%s %.253s/%.253s: spec is not valid JSON: %s (line %d)",
               ch->kind, ch->namespace_, ch->name, jerr.text, jerr.line);
    int is_obj = json_is_object(j);
    json_decref(j);
    MID_ENSURE(is_obj, MID_E_INVALID, "%s %.253s/%.253s: spec must be a JSON object", ch->kind,
               ch->namespace_, ch->name);
    return MID_OK_RESULT;
}

static MID_RESULT check_mesh_change(const store_mesh_change *ch, size_t *total)
{
    MID_ENSURE(ch->op == STORE_MESH_PUT || ch->op == STORE_MESH_DELETE, MID_E_INVALID,
               "mesh change op %d is neither put nor delete", (int)ch->op);
    MID_GUARD(check_mesh_key(ch->kind, ch->namespace_, ch->name));
    MID_ENSURE(ch->if_revision >= -1, MID_E_INVALID,
               "%s %.253s/%.253s: if_revision %lld is not -1, 0 or a revision", ch->kind,
               ch->namespace_, ch->name, (long long)ch->if_revision);
    if (ch->op == STORE_MESH_DELETE) {
        MID_ENSURE(ch->if_revision != -1, MID_E_INVALID,
                   "%s %.253s/%.253s: a delete cannot require that the resource does not exist",
                   ch->kind, ch->namespace_, ch->name);
        return MID_OK_RESULT;
    }
    return check_mesh_spec(ch, total);
}

/* Re-raises the current error r with "mesh change N: " in front. */
static mid_result mesh_change_error(mid_result r, size_t i)
{
    char msg[STORE_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", mid_errmsg());
    return mid_fail(r.err, mid_errfile(), mid_errline(), "mesh change %zu: %s", i + 1, msg);
}

static int mesh_key_cmp(const void *a, const void *b)
{
    const store_mesh_change *x = *(const store_mesh_change *const *)a;
    const store_mesh_change *y = *(const store_mesh_change *const *)b;
    int c = strcmp(x->kind, y->kind);
    if (c == 0) c = strcmp(x->namespace_, y->namespace_);
    return c != 0 ? c : strcmp(x->name, y->name);
}

MID_RESULT store_mesh_apply(store *st, const store_mesh_change *ch, size_t n,
                            const store_audit_event *evs, int64_t *revision)
{
    mid_result r = MID_OK_RESULT;
    mesh_item *items = NULL;
    const store_mesh_change **order = NULL;
    size_t total = 0;

    MID_TRY(r, check_store(st));
    MID_CHECK(r, ch != NULL && n >= 1, MID_E_INVALID, "a mesh apply needs at least one change");
    MID_CHECK(r, n <= STORE_MESH_APPLY_MAX, MID_E_TOO_LARGE,
              "a mesh apply has at most %d changes, not %zu", STORE_MESH_APPLY_MAX, n);
    items = calloc(n, sizeof *items);
    order = calloc(n, sizeof *order);
    MID_CHECK_MEM(r, items);
    MID_CHECK_MEM(r, order);
    for (size_t i = 0; i < n; i++) {
        r = check_mesh_change(&ch[i], &total);
        if (mid_is_ok(r) && evs != NULL) r = audit_validate(&evs[i]);
        if (!mid_is_ok(r)) {
            r = mesh_change_error(r, i);
            goto out;
        }
        items[i].ch = &ch[i];
        if (evs != NULL) {
            audit_normalize(&evs[i], &items[i].ev);
            items[i].has_ev = 1;
        }
        order[i] = &ch[i];
    }
    qsort(order, n, sizeof *order, mesh_key_cmp);
    for (size_t i = 1; i < n; i++)
        MID_CHECK(r, mesh_key_cmp(&order[i - 1], &order[i]) != 0, MID_E_INVALID,
                  "%s %.253s/%.253s appears more than once in one mesh apply", order[i]->kind,
                  order[i]->namespace_, order[i]->name);
    store_req rq = {.kind = REQ_MESH_APPLY, .mesh = items, .n_mesh = n, .now = time_now()};
    MID_TRY(r, submit(st, &rq));
    if (revision != NULL) *revision = rq.mesh_revision;
out:
    free(items);
    free(order);
    return r;
}

/* ---- reads (caller's thread) --------------------------------------------------------
 * Each read borrows a read connection from a small pool (opening one when all
 * are busy), so concurrent reads, and a slow query callback that reads again,
 * never wait on each other. WAL readers do not block the writer. */

static MID_RESULT reader_get(store *st, store_conn **out)
{
    pthread_mutex_lock(&st->rmu);
    store_conn *c = st->nidle > 0 ? st->idle[--st->nidle] : NULL;
    pthread_mutex_unlock(&st->rmu);
    if (c == NULL) MID_GUARD(st->vt->open(st->target, &st->opts, STORE_CONN_READER, &c));
    *out = c;
    return MID_OK_RESULT;
}

static void reader_put(store *st, store_conn *c)
{
    pthread_mutex_lock(&st->rmu);
    if (st->nidle < STORE_IDLE_READERS) {
        st->idle[st->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&st->rmu);
    if (c != NULL) st->vt->close(c);
}

MID_RESULT store_audit_head(store *st, int64_t *seq, uint8_t hash[STORE_HASH_LEN])
{
    MID_GUARD(check_store(st));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->audit_head(c, seq, hash);
    reader_put(st, c);
    return r;
}

MID_RESULT store_audit_get(store *st, int64_t seq, store_audit_row *out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(out != NULL, MID_E_INVALID, "no output row");
    memset(out, 0, sizeof *out);
    MID_ENSURE(seq >= 1, MID_E_NOT_FOUND, "no audit event with seq %lld", (long long)seq);
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->audit_get(c, seq, out);
    reader_put(st, c);
    return r;
}

typedef struct {
    store_audit_cb cb;
    void *ctx;
} query_ctx;

static int query_row(void *ctx, const store_audit_event *row, int hashes_ok)
{
    (void)hashes_ok; /* a display path: undecodable hashes show as zeros */
    query_ctx *q = ctx;
    return q->cb(q->ctx, row);
}

MID_RESULT store_audit_query(store *st, const store_audit_filter *f, store_audit_cb cb, void *ctx)
{
    static const store_audit_filter all = {0};
    MID_GUARD(check_store(st));
    MID_ENSURE(cb != NULL, MID_E_INVALID, "no callback");
    if (f == NULL) f = &all;
    MID_ENSURE(f->since_ms >= 0 && f->until_ms >= 0 && f->limit >= 0 && f->after_seq >= 0,
               MID_E_INVALID, "audit filter bounds must not be negative");
    MID_GUARD(check_str("filter spiffe_id", f->spiffe_id, STORE_AUDIT_TEXT_MAX, 0));
    MID_GUARD(check_str("filter event", f->event, STORE_AUDIT_TEXT_MAX, 0));
    MID_GUARD(check_str("filter outcome", f->outcome, STORE_AUDIT_TEXT_MAX, 0));
    query_ctx q = {cb, ctx};
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->audit_query(c, f, query_row, &q);
    reader_put(st, c);
    return r;
}

typedef struct {
    audit_verifier vf;
    mid_result err;
} verify_ctx;

static int verify_row(void *ctx, const store_audit_event *row, int hashes_ok)
{
    verify_ctx *v = ctx;
    int more = 0;
    v->err = audit_verifier_step(&v->vf, row, hashes_ok, &more);
    return !mid_is_ok(v->err) || !more;
}

MID_RESULT store_audit_verify(store *st, store_audit_verdict *out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(out != NULL, MID_E_INVALID, "no verdict");
    verify_ctx v = {.err = MID_OK_RESULT};
    audit_verifier_init(&v.vf, out);
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->audit_iterate(c, 0, verify_row, &v);
    reader_put(st, c);
    MID_GUARD(r);
    return v.err;
}

MID_RESULT store_authority_list(store *st, store_authority_row **rows, size_t *n)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(rows != NULL && n != NULL, MID_E_INVALID, "no output list");
    *rows = NULL;
    *n = 0;
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->authority_list(c, rows, n);
    reader_put(st, c);
    return r;
}

MID_RESULT store_cert_get(store *st, const char *serial, store_cert_row *out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(out != NULL, MID_E_INVALID, "no output row");
    memset(out, 0, sizeof *out);
    MID_GUARD(check_str("serial", serial, STORE_TEXT_MAX, 1));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->cert_get(c, serial, out);
    reader_put(st, c);
    return r;
}

MID_RESULT store_cert_count_live(store *st, const char *authority_id, int64_t now, int64_t *n)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(n != NULL, MID_E_INVALID, "no output count");
    MID_GUARD(check_str("authority id", authority_id, STORE_TEXT_MAX, 1));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->cert_count_live(c, authority_id, now, n);
    reader_put(st, c);
    return r;
}

MID_RESULT store_entry_get(store *st, const char *id, store_entry_row *out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(out != NULL, MID_E_INVALID, "no output row");
    memset(out, 0, sizeof *out);
    MID_GUARD(check_entry_id(id));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->entry_get(c, id, out);
    reader_put(st, c);
    return r;
}

MID_RESULT store_entry_list(store *st, const char *parent_id, store_entry_row **rows, size_t *n,
                            int64_t *revision)
{
    int64_t rev = 0;
    MID_GUARD(check_store(st));
    MID_ENSURE(rows != NULL && n != NULL, MID_E_INVALID, "no output list");
    *rows = NULL;
    *n = 0;
    MID_GUARD(check_str("parent_id", parent_id, STORE_TEXT_MAX, 0));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->entry_list(c, parent_id, rows, n, &rev);
    reader_put(st, c);
    if (mid_is_ok(r) && revision != NULL) *revision = rev;
    return r;
}

MID_RESULT store_entries_revision(store *st, int64_t *revision)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(revision != NULL, MID_E_INVALID, "no output revision");
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->entries_revision(c, revision);
    reader_put(st, c);
    return r;
}

MID_RESULT store_agent_get(store *st, const char *spiffe_id, store_agent_row *out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(out != NULL, MID_E_INVALID, "no output row");
    memset(out, 0, sizeof *out);
    MID_GUARD(check_str("agent spiffe_id", spiffe_id, STORE_TEXT_MAX, 1));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->agent_get(c, spiffe_id, out);
    reader_put(st, c);
    return r;
}

MID_RESULT store_agent_list(store *st, store_agent_row **rows, size_t *n)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(rows != NULL && n != NULL, MID_E_INVALID, "no output list");
    *rows = NULL;
    *n = 0;
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->agent_list(c, rows, n);
    reader_put(st, c);
    return r;
}

MID_RESULT store_mesh_list(store *st, const char *kind, store_mesh_row **rows, size_t *n,
                           int64_t *revision)
{
    int64_t rev = 0;
    MID_GUARD(check_store(st));
    MID_ENSURE(rows != NULL && n != NULL, MID_E_INVALID, "no output list");
    *rows = NULL;
    *n = 0;
    if (kind != NULL) MID_GUARD(check_one_of("mesh resource kind", kind, mesh_kinds));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->mesh_list(c, kind, rows, n, &rev);
    reader_put(st, c);
    if (mid_is_ok(r) && revision != NULL) *revision = rev;
    return r;
}

MID_RESULT store_mesh_get(store *st, const char *kind, const char *namespace_, const char *name,
                          store_mesh_row *out)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(out != NULL, MID_E_INVALID, "no output row");
    memset(out, 0, sizeof *out);
    MID_GUARD(check_mesh_key(kind, namespace_, name));
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->mesh_get(c, kind, namespace_, name, out);
    reader_put(st, c);
    return r;
}

MID_RESULT store_mesh_revision(store *st, int64_t *revision)
{
    MID_GUARD(check_store(st));
    MID_ENSURE(revision != NULL, MID_E_INVALID, "no output revision");
    store_conn *c;
    MID_GUARD(reader_get(st, &c));
    mid_result r = st->vt->mesh_revision(c, revision);
    reader_put(st, c);
    return r;
}

/* ---- owned rows ------------------------------------------------------------------- */

/* Copies up to 9 optional strings into one allocation; dst[i] = NULL for NULL. */
static MID_RESULT pack_strings(const char *const *src, const char **dst, size_t n, char **owned)
{
    size_t total = 1, len[9];
    MID_ENSURE(n <= 9, MID_E_INTERNAL, "too many fields");
    for (size_t i = 0; i < n; i++) {
        len[i] = src[i] ? strlen(src[i]) + 1 : 0;
        total += len[i];
    }
    char *buf = malloc(total);
    MID_ENSURE_MEM(buf);
    char *p = buf;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == NULL) {
            dst[i] = NULL;
            continue;
        }
        memcpy(p, src[i], len[i]);
        dst[i] = p;
        p += len[i];
    }
    *owned = buf;
    return MID_OK_RESULT;
}

MID_RESULT store_audit_row_copy(const store_audit_event *src, store_audit_row *dst)
{
    const char *in[7] = {src->actor,   src->event,  src->spiffe_id, src->serial,
                         src->outcome, src->reason, src->details};
    const char *o[7];
    memset(dst, 0, sizeof *dst);
    MID_GUARD(pack_strings(in, o, 7, &dst->owned_));
    dst->ev = *src;
    dst->ev.actor = o[0];
    dst->ev.event = o[1];
    dst->ev.spiffe_id = o[2];
    dst->ev.serial = o[3];
    dst->ev.outcome = o[4];
    dst->ev.reason = o[5];
    dst->ev.details = o[6];
    return MID_OK_RESULT;
}

MID_RESULT store_authority_row_copy(const store_authority *src, store_authority_row *dst)
{
    const char *in[8] = {src->id,       src->kind,      src->state,   src->trust_domain,
                         src->parent_id, src->cert_pem, src->chain_pem, src->key_ref};
    const char *o[8];
    memset(dst, 0, sizeof *dst);
    MID_GUARD(pack_strings(in, o, 8, &dst->owned_));
    dst->a = *src;
    dst->a.id = o[0];
    dst->a.kind = o[1];
    dst->a.state = o[2];
    dst->a.trust_domain = o[3];
    dst->a.parent_id = o[4];
    dst->a.cert_pem = o[5];
    dst->a.chain_pem = o[6];
    dst->a.key_ref = o[7];
    return MID_OK_RESULT;
}

MID_RESULT store_cert_row_copy(const store_cert *src, store_cert_row *dst)
{
    const char *in[5] = {src->serial, src->spiffe_id, src->key_fp, src->authority_id,
                         src->status};
    const char *o[5];
    size_t n = src->cert_der != NULL ? src->cert_der_len : 0;
    memset(dst, 0, sizeof *dst);
    MID_GUARD(pack_strings(in, o, 5, &dst->owned_));
    dst->c = *src;
    dst->c.serial = o[0];
    dst->c.spiffe_id = o[1];
    dst->c.key_fp = o[2];
    dst->c.authority_id = o[3];
    dst->c.status = o[4];
    dst->c.cert_der = NULL;
    dst->c.cert_der_len = 0;
    if (n > 0) {
        unsigned char *der = malloc(n);
        if (der == NULL) {
            store_cert_row_clear(dst);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
        memcpy(der, src->cert_der, n);
        dst->der_owned_ = der;
        dst->c.cert_der = der;
        dst->c.cert_der_len = n;
    }
    return MID_OK_RESULT;
}

/* One allocation: the selector array, then the dns_names array, then the
 * strings (the arrays first keeps them aligned as malloc aligns). */
MID_RESULT store_entry_row_copy(const store_entry *src, store_entry_row *dst)
{
    const char *top[3] = {src->id, src->spiffe_id, src->parent_id};
    size_t nsel = src->n_selectors, ndns = src->n_dns_names;
    size_t total = nsel * sizeof(store_selector) + ndns * sizeof(char *) + 1;
    memset(dst, 0, sizeof *dst);
    for (size_t i = 0; i < 3; i++) total += top[i] ? strlen(top[i]) + 1 : 0;
    for (size_t i = 0; i < nsel; i++)
        total += strlen(src->selectors[i].type) + strlen(src->selectors[i].value) + 2;
    for (size_t i = 0; i < ndns; i++) total += strlen(src->dns_names[i]) + 1;
    char *buf = malloc(total);
    MID_ENSURE_MEM(buf);
    store_selector *sel = (store_selector *)(void *)buf;
    const char **dns = (const char **)(void *)(buf + nsel * sizeof(store_selector));
    char *p = buf + nsel * sizeof(store_selector) + ndns * sizeof(char *);
#define PUT(dstp, s)                                                                          \
    do {                                                                                      \
        size_t l_ = strlen(s) + 1;                                                            \
        memcpy(p, (s), l_);                                                                   \
        (dstp) = p;                                                                           \
        p += l_;                                                                              \
    } while (0)
    dst->e = *src;
    dst->e.id = dst->e.spiffe_id = dst->e.parent_id = NULL;
    if (src->id) PUT(dst->e.id, src->id);
    if (src->spiffe_id) PUT(dst->e.spiffe_id, src->spiffe_id);
    if (src->parent_id) PUT(dst->e.parent_id, src->parent_id);
    for (size_t i = 0; i < nsel; i++) {
        PUT(sel[i].type, src->selectors[i].type);
        PUT(sel[i].value, src->selectors[i].value);
    }
    for (size_t i = 0; i < ndns; i++) PUT(dns[i], src->dns_names[i]);
#undef PUT
    dst->e.selectors = nsel ? sel : NULL;
    dst->e.dns_names = ndns ? dns : NULL;
    dst->owned_ = buf;
    return MID_OK_RESULT;
}

MID_RESULT store_join_token_row_copy(const store_join_token *src, store_join_token_row *dst)
{
    const char *in[2] = {src->token_hash, src->agent_spiffe_id};
    const char *o[2];
    memset(dst, 0, sizeof *dst);
    MID_GUARD(pack_strings(in, o, 2, &dst->owned_));
    dst->t = *src;
    dst->t.token_hash = o[0];
    dst->t.agent_spiffe_id = o[1];
    return MID_OK_RESULT;
}

MID_RESULT store_agent_row_copy(const store_agent *src, store_agent_row *dst)
{
    const char *in[3] = {src->spiffe_id, src->serial, src->hostname};
    const char *o[3];
    memset(dst, 0, sizeof *dst);
    MID_GUARD(pack_strings(in, o, 3, &dst->owned_));
    dst->a = *src;
    dst->a.spiffe_id = o[0];
    dst->a.serial = o[1];
    dst->a.hostname = o[2];
    return MID_OK_RESULT;
}

MID_RESULT store_mesh_row_fill(store_mesh_row *dst, const char *kind, const char *namespace_,
                               const char *name, const char *spec_json, int64_t revision,
                               int64_t created_at, int64_t updated_at)
{
    const char *in[4] = {kind, namespace_, name, spec_json};
    char *o[4] = {NULL, NULL, NULL, NULL};
    memset(dst, 0, sizeof *dst);
    for (size_t i = 0; i < 4; i++) {
        if (in[i] == NULL) continue;
        o[i] = strdup(in[i]);
        if (o[i] == NULL) {
            for (size_t k = 0; k < i; k++) free(o[k]);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
    }
    dst->kind = o[0];
    dst->namespace_ = o[1];
    dst->name = o[2];
    dst->spec_json = o[3];
    dst->revision = revision;
    dst->created_at = created_at;
    dst->updated_at = updated_at;
    return MID_OK_RESULT;
}

void store_mesh_row_clear(store_mesh_row *r)
{
    if (r == NULL) return;
    free(r->kind);
    free(r->namespace_);
    free(r->name);
    free(r->spec_json);
    memset(r, 0, sizeof *r);
}

void store_mesh_list_free(store_mesh_row *rows, size_t n)
{
    if (rows == NULL) return;
    for (size_t i = 0; i < n; i++) store_mesh_row_clear(&rows[i]);
    free(rows);
}

MID_RESULT store_rows_grow(void **v, size_t size, size_t *len, size_t *cap, void **slot)
{
    if (*len == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        MID_ENSURE(ncap <= SIZE_MAX / size, MID_E_TOO_LARGE, "too many rows");
        void *nv = realloc(*v, ncap * size);
        MID_ENSURE_MEM(nv);
        *v = nv;
        *cap = ncap;
    }
    *slot = (char *)*v + *len * size;
    memset(*slot, 0, size);
    (*len)++;
    return MID_OK_RESULT;
}

MID_RESULT store_selectors_hash(const store_selector *sel, size_t n,
                                char out[STORE_SELECTORS_HASH_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";
    mid_result r = MID_OK_RESULT;
    unsigned char md[STORE_HASH_LEN];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    out[0] = '\0';
    MID_CHECK(r, ctx != NULL, MID_E_NOMEM, "out of memory");
    MID_CHECK_OSSL(r, EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), MID_E_CRYPTO, "sha256 init");
    for (size_t i = 0; i < n; i++) {
        const char *part[2] = {sel[i].type, sel[i].value};
        for (size_t k = 0; k < 2; k++) {
            size_t l = strlen(part[k]);
            MID_CHECK(r, l <= UINT32_MAX, MID_E_TOO_LARGE, "selector too long");
            unsigned char be[4] = {(unsigned char)(l >> 24), (unsigned char)(l >> 16),
                                   (unsigned char)(l >> 8), (unsigned char)l};
            MID_CHECK_OSSL(r, EVP_DigestUpdate(ctx, be, 4), MID_E_CRYPTO, "sha256 update");
            MID_CHECK_OSSL(r, EVP_DigestUpdate(ctx, part[k], l), MID_E_CRYPTO, "sha256 update");
        }
    }
    MID_CHECK_OSSL(r, EVP_DigestFinal_ex(ctx, md, &mdlen), MID_E_CRYPTO, "sha256 final");
    for (size_t i = 0; i < STORE_HASH_LEN; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[STORE_SELECTORS_HASH_HEX] = '\0';
out:
    EVP_MD_CTX_free(ctx);
    return r;
}

void store_entry_row_clear(store_entry_row *row)
{
    if (row == NULL) return;
    free(row->owned_);
    memset(row, 0, sizeof *row);
}

void store_entry_list_free(store_entry_row *rows, size_t n)
{
    if (rows == NULL) return;
    for (size_t i = 0; i < n; i++) free(rows[i].owned_);
    free(rows);
}

void store_join_token_row_clear(store_join_token_row *row)
{
    if (row == NULL) return;
    free(row->owned_);
    memset(row, 0, sizeof *row);
}

void store_agent_row_clear(store_agent_row *row)
{
    if (row == NULL) return;
    free(row->owned_);
    memset(row, 0, sizeof *row);
}

void store_agent_list_free(store_agent_row *rows, size_t n)
{
    if (rows == NULL) return;
    for (size_t i = 0; i < n; i++) free(rows[i].owned_);
    free(rows);
}

void store_audit_row_clear(store_audit_row *row)
{
    if (row == NULL) return;
    free(row->owned_);
    memset(row, 0, sizeof *row);
}

void store_authority_row_clear(store_authority_row *row)
{
    if (row == NULL) return;
    free(row->owned_);
    memset(row, 0, sizeof *row);
}

void store_authority_list_free(store_authority_row *rows, size_t n)
{
    if (rows == NULL) return;
    for (size_t i = 0; i < n; i++) free(rows[i].owned_);
    free(rows);
}

void store_cert_row_clear(store_cert_row *row)
{
    if (row == NULL) return;
    free(row->owned_);
    free(row->der_owned_);
    memset(row, 0, sizeof *row);
}

/* ---- lifecycle ------------------------------------------------------------------- */

static MID_RESULT pick_backend(const char *location, const store_backend **vt, const char **target)
{
    MID_ENSURE(location != NULL && *location != '\0', MID_E_INVALID, "no store location");
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        size_t n = strlen(backends[i]->prefix);
        if (strncmp(location, backends[i]->prefix, n) == 0) {
            *vt = backends[i];
            *target = location + n;
            MID_ENSURE(**target != '\0', MID_E_INVALID, "store location '%s' has no path",
                       location);
            return MID_OK_RESULT;
        }
    }
    MID_ENSURE(strncmp(location, "postgres:", 9) != 0 && strncmp(location, "postgresql:", 11) != 0,
               MID_E_INVALID, "store location '%s': the PostgreSQL backend is not built in",
               location);
    *vt = &store_backend_sqlite; /* a bare path */
    *target = location;
    return MID_OK_RESULT;
}

static void store_free(store *st, int sync_inited)
{
    if (st == NULL) return;
    for (size_t i = 0; i < st->nidle; i++) st->vt->close(st->idle[i]);
    if (st->wconn) st->vt->close(st->wconn);
    if (sync_inited) {
        pthread_mutex_destroy(&st->rmu);
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->cv_work);
        pthread_cond_destroy(&st->cv_space);
        pthread_cond_destroy(&st->cv_idle);
    }
    free(st->queue);
    free(st->batch);
    free(st->target);
    free(st);
}

MID_RESULT store_open(const char *location, const store_options *opts, store **out)
{
    mid_result r = MID_OK_RESULT;
    store_options o = {STORE_BUSY_TIMEOUT_DEFAULT, STORE_MAX_BATCH_DEFAULT,
                       STORE_AUDIT_INDEX_CHUNK_DEFAULT};
    const store_backend *vt = NULL;
    const char *target = NULL;
    store *st = NULL;
    int sync_inited = 0;

    MID_CHECK(r, out != NULL, MID_E_INVALID, "no output store");
    *out = NULL;
    if (opts != NULL) {
        MID_CHECK(r,
                  opts->busy_timeout_ms >= 0 && opts->max_batch >= 0 &&
                      opts->audit_index_chunk >= 0,
                  MID_E_INVALID, "store options must not be negative");
        MID_CHECK(r, opts->max_batch <= STORE_MAX_BATCH_LIMIT, MID_E_INVALID,
                  "store max_batch is over %d", STORE_MAX_BATCH_LIMIT);
        MID_CHECK(r, opts->audit_index_chunk <= STORE_AUDIT_INDEX_CHUNK_MAX, MID_E_INVALID,
                  "store audit_index_chunk is over %d", STORE_AUDIT_INDEX_CHUNK_MAX);
        if (opts->busy_timeout_ms > 0) o.busy_timeout_ms = opts->busy_timeout_ms;
        if (opts->max_batch > 0) o.max_batch = opts->max_batch;
        if (opts->audit_index_chunk > 0) o.audit_index_chunk = opts->audit_index_chunk;
    }
    MID_TRY(r, pick_backend(location, &vt, &target));

    st = calloc(1, sizeof *st);
    MID_CHECK_MEM(r, st);
    st->vt = vt;
    st->opts = o;
    st->target = strdup(target);
    MID_CHECK_MEM(r, st->target);
    st->max_batch = o.max_batch;
    st->qcap = (size_t)o.max_batch * 4 < STORE_QUEUE_MIN ? STORE_QUEUE_MIN : (size_t)o.max_batch * 4;
    st->queue = calloc(st->qcap, sizeof *st->queue);
    st->batch = calloc((size_t)o.max_batch, sizeof *st->batch);
    MID_CHECK_MEM(r, st->queue);
    MID_CHECK_MEM(r, st->batch);
    for (int i = 0; i < STORE_FAULT_COUNT_; i++) {
        atomic_init(&st->fault_nth[i], 0);
        atomic_init(&st->fault_err[i], MID_E_INTERNAL);
    }
    MID_CHECK(r,
              pthread_mutex_init(&st->rmu, NULL) == 0 && pthread_mutex_init(&st->mu, NULL) == 0 &&
                  pthread_cond_init(&st->cv_work, NULL) == 0 &&
                  pthread_cond_init(&st->cv_space, NULL) == 0 &&
                  pthread_cond_init(&st->cv_idle, NULL) == 0,
              MID_E_NOMEM, "cannot create store locks");
    sync_inited = 1;

    MID_TRY(r, vt->open(target, &o, STORE_CONN_WRITER, &st->wconn));
    MID_TRY(r, vt->migrate(st->wconn, &st->version));
    MID_TRY(r, vt->open(target, &o, STORE_CONN_READER, &st->idle[0]));
    st->nidle = 1;
    MID_CHECK(r, pthread_create(&st->writer, NULL, writer_main, st) == 0, MID_E_INTERNAL,
              "cannot start the store writer thread");
    *out = st;
    st = NULL;
out:
    store_free(st, sync_inited);
    return r;
}

void store_close(store *st)
{
    if (st == NULL) return;
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    st->paused = 0;
    pthread_cond_broadcast(&st->cv_work);
    pthread_cond_broadcast(&st->cv_space);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->writer, NULL);
    /* Callers woken by the last batch may still be leaving submit(). */
    pthread_mutex_lock(&st->mu);
    while (st->inflight > 0) pthread_cond_wait(&st->cv_idle, &st->mu);
    pthread_mutex_unlock(&st->mu);
    store_free(st, 1);
}

int store_schema_version(store *st) { return st ? st->version : 0; }

/* ---- observability and test hooks -------------------------------------------------- */

void store_stats_get(store *st, store_stats *out)
{
    pthread_mutex_lock(&st->mu);
    *out = st->stats;
    out->queued = st->qlen;
    pthread_mutex_unlock(&st->mu);
}

void store_fault_set(store *st, store_fault_point p, int nth, mid_err err)
{
    if ((int)p < 0 || (int)p >= (int)STORE_FAULT_COUNT_) return;
    atomic_store(&st->fault_err[p], (int)err);
    atomic_store(&st->fault_nth[p], nth);
}

void store_writer_pause(store *st, int paused)
{
    pthread_mutex_lock(&st->mu);
    st->paused = paused && !st->stopping;
    pthread_cond_broadcast(&st->cv_work);
    pthread_mutex_unlock(&st->mu);
}
