/* ca_issue_batch: see ca/batch.h. The per-certificate work is ca/issue.c's
 * (ca/issue_int.h); this file shares it out, sends the signed certificates
 * to the store in parts as they are ready (store_cert_insert_many_start,
 * BATCH_PART below) and hands each out once its part is durable.
 *
 * Helping. Every call in progress is listed on its `ca` handle while it
 * has requests nobody has started on. A thread that has nothing of its own
 * left to sign - its call's requests are all taken, or its certificates are
 * waiting for their durable write - signs requests of another listed call
 * instead of sleeping. On a server whose workers each run one chunk of a
 * batch (sds/node_service.c) a worker would otherwise leave its core idle
 * for the whole commit of its chunk; with helping the cores keep signing
 * while any call has work left. Which thread signs a request changes
 * nothing else: every request is still validated, verified, signed and
 * (when refused) audited exactly as ca_issue does it, each result lands in
 * its own call's slot, and no certificate leaves its call before its row
 * and audit event are committed. */
#include "ca/batch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca_int.h"
#include "ca/issue_int.h"

_Static_assert(CA_BATCH_MAX <= STORE_CERT_MANY_MAX, "a batch fits store requests");

/* Signed certificates go to the store in parts of BATCH_PART (the last
 * may be smaller) as soon as they are ready, not all at the end: the
 * store's writer records the first parts while the rest are signed, so a
 * call waits at its end only for the commit of its last part, and its
 * thread helps other calls meanwhile. With the whole call written at its
 * end, two calls that help each other finish signing together and then
 * both wait for the same long commit with their cores idle (the bench's
 * batch row kept only ~1.5 of 2 CPUs busy). Concurrent parts still share
 * commits (store group commit). */
#define BATCH_PART 8
_Static_assert(BATCH_PART <= STORE_CERT_MANY_MAX, "a part is one store request");

/* One store request of a call: certificates [first, first + count) of the
 * call's certs/evs/res arrays. */
typedef struct {
    size_t first, count;
    store_cert_batch *sb;   /* NULL when it could not be queued */
    mid_result start;       /* store_cert_insert_many_start's refusal, if any */
    char start_msg[CA_BATCH_MSG_MAX];
} batch_part;

/* One ca_issue_batch call, shared with helpers while it is listed. The
 * owner frees it only once every request it handed out is finished
 * (`done` == n), and a helper touches it only between claiming a request
 * (under help_mu, while listed) and counting it done. */
struct ca_batch_call {
    ca *c;
    const ca_issue_req *reqs;
    size_t n;
    ca_issue_prep *prep;       /* n: request i's certificate, filled by whoever signs it */
    mid_result *prep_res;      /* n: request i's refusal, if it was refused before the store */
    ca_batch_msg *prep_msg;    /* n: ... and its message */
    size_t next;               /* next request nobody has started on (under help_mu) */
    atomic_size_t done;        /* requests finished, by anyone */
    atomic_uchar *fin;         /* n: request i is finished (signed or refused) */
    ca_batch_call *next_call;  /* help list link (under help_mu) */
    int listed;                /* on the help list (under help_mu) */
    size_t stored;             /* store requests finished (under help_mu) */
    /* The owner's, for recording: requests [0, submitted) went to the store
     * in parts, part j holding certs/evs/stored [part[j].first, + count). */
    size_t submitted;
    store_cert *certs;         /* n */
    store_audit_event *evs;    /* n */
    mid_result *res;           /* n: each queued certificate's store outcome */
    size_t *idx;               /* n: the request each queued certificate is */
    size_t k;                  /* certificates queued so far */
    batch_part part[CA_BATCH_MAX / BATCH_PART + 1];
    size_t nparts;
};

/* Request i of `call`, on this thread: prepare it, or audit its refusal and
 * keep the error and message for the owner. Returns 1 when it was the
 * call's last unfinished request. A helper must not touch `call` after
 * this (the owner may free it as soon as every request is finished). */
static int sign_one(ca_batch_call *call, size_t i)
{
    ca_issue_prep *p = &call->prep[i];
    mid_result r = ca_issue_prepare(call->c, &call->reqs[i], p);
    if (!mid_is_ok(r)) {
        ca_issue_prep_clear(p);
        call->prep_res[i] = ca_issue_refused(call->c, &call->reqs[i], r);
        snprintf(call->prep_msg[i].msg, sizeof call->prep_msg[i].msg, "%s", mid_errmsg());
    }
    size_t n = call->n;
    atomic_store_explicit(&call->fin[i], 1, memory_order_release);
    return atomic_fetch_add_explicit(&call->done, 1, memory_order_acq_rel) + 1 == n;
}

/* Takes the next unstarted request of `call` (help_mu held); unlists the
 * call when that was its last. Returns n when there is none. */
static size_t claim_locked(ca_batch_call *call)
{
    size_t i = call->next < call->n ? call->next++ : call->n;
    if (call->next == call->n && call->listed) {
        ca_batch_call **pp = &call->c->help_head;
        while (*pp != call) pp = &(*pp)->next_call;
        *pp = call->next_call;
        call->listed = 0;
    }
    return i;
}

/* Signs one request of any listed call other than `self` (NULL: any).
 * Returns 0 when there was nothing to take. */
static int help_one(ca *c, const ca_batch_call *self)
{
    pthread_mutex_lock(&c->help_mu);
    ca_batch_call *call = c->help_head;
    while (call != NULL && call == self) call = call->next_call;
    size_t i = call != NULL ? claim_locked(call) : 0;
    pthread_mutex_unlock(&c->help_mu);
    if (call == NULL || i >= call->n) return 0;
    /* The owner may be asleep waiting for its last one: wake the sleepers
     * then, and only then (a wake-up per signature woke every idle caller,
     * with 32 callers mostly for nothing). */
    if (sign_one(call, i)) {
        pthread_mutex_lock(&c->help_mu);
        pthread_cond_broadcast(&c->help_cv);
        pthread_mutex_unlock(&c->help_mu);
    }
    return 1;
}

/* Where the per-item outcomes go, and the failure of the lowest index
 * (the one the return value reports). */
typedef struct {
    mid_result *results;
    ca_batch_msg *msgs; /* may be NULL */
    size_t first;       /* n when nothing failed */
    char first_msg[CA_BATCH_MSG_MAX];
} batch_out;

static void note_failure(batch_out *o, size_t i, mid_result r, const char *msg)
{
    o->results[i] = r;
    if (o->msgs != NULL) snprintf(o->msgs[i].msg, sizeof o->msgs[i].msg, "%s", msg);
    if (i < o->first) {
        o->first = i;
        snprintf(o->first_msg, sizeof o->first_msg, "%s", msg);
    }
}

/* Item i failed with `r` (this thread's last error describes it): audit the
 * refusal as ca_issue would, record the outcome and message. */
static void refuse(ca *c, const ca_issue_req *req, mid_result r, size_t i, batch_out *o)
{
    mid_result a = ca_issue_refused(c, req, r);
    note_failure(o, i, a, mid_errmsg());
}

/* The store's writer thread (or store_cert_insert_many_start itself, when
 * it queued nothing), when one of this call's store requests is finished. */
static void store_finished(void *arg)
{
    ca_batch_call *call = arg;
    pthread_mutex_lock(&call->c->help_mu);
    call->stored++;
    pthread_cond_broadcast(&call->c->help_cv);
    pthread_mutex_unlock(&call->c->help_mu);
}

/* Owner only: sends the finished requests from call->submitted on to the
 * store as one part, when there are BATCH_PART of them in a row, or, with
 * `all`, whatever is left (every request is finished by then). Requests
 * refused before the store get their outcome in `o` now. */
static void submit_ready(ca_batch_call *call, batch_out *o, int all)
{
    size_t end = call->submitted;
    while (end < call->n && atomic_load_explicit(&call->fin[end], memory_order_acquire)) end++;
    if (end == call->submitted || (!all && end - call->submitted < BATCH_PART)) return;
    batch_part *pt = &call->part[call->nparts];
    *pt = (batch_part){.first = call->k, .start = MID_OK_RESULT};
    for (size_t i = call->submitted; i < end; i++) {
        if (!mid_is_ok(call->prep_res[i])) {
            note_failure(o, i, call->prep_res[i], call->prep_msg[i].msg);
            continue;
        }
        call->certs[call->k] = call->prep[i].cert;
        call->evs[call->k] = call->prep[i].ev;
        call->idx[call->k++] = i;
    }
    call->submitted = end;
    pt->count = call->k - pt->first;
    if (pt->count == 0) return; /* all refused: no store request */
    call->nparts++;
    pt->start = store_cert_insert_many_start(call->c->st, call->certs + pt->first,
                                             call->evs + pt->first, pt->count,
                                             call->res + pt->first, store_finished, call,
                                             &pt->sb);
    if (!mid_is_ok(pt->start)) {
        snprintf(pt->start_msg, sizeof pt->start_msg, "%s", mid_errmsg());
        pt->sb = NULL;
        store_finished(call); /* nothing queued: it will not be called */
    }
}

/* Until every request of `call` is finished: sign what is left of it,
 * sending finished ones to the store as they come, then help other calls;
 * sleep only when there is nothing to do at all. Ends with everything sent. */
static void finish_own(ca_batch_call *call, batch_out *o)
{
    ca *c = call->c;
    for (;;) {
        pthread_mutex_lock(&c->help_mu);
        size_t i = claim_locked(call);
        pthread_mutex_unlock(&c->help_mu);
        if (i >= call->n) break;
        (void)sign_one(call, i); /* the owner: nobody waits for this */
        submit_ready(call, o, 0);
    }
    while (atomic_load_explicit(&call->done, memory_order_acquire) < call->n) {
        if (help_one(c, call)) {
            submit_ready(call, o, 0);
            continue;
        }
        pthread_mutex_lock(&c->help_mu);
        while (atomic_load_explicit(&call->done, memory_order_acquire) < call->n &&
               c->help_head == NULL)
            pthread_cond_wait(&c->help_cv, &c->help_mu);
        pthread_mutex_unlock(&c->help_mu);
        submit_ready(call, o, 0);
    }
    submit_ready(call, o, 1);
}

/* Until every store request of `call` is finished: help other calls;
 * sleep only when there is nothing to sign, until there is or they are. */
static void wait_store(ca_batch_call *call)
{
    ca *c = call->c;
    for (;;) {
        pthread_mutex_lock(&c->help_mu);
        while (call->stored < call->nparts && c->help_head == NULL)
            pthread_cond_wait(&c->help_cv, &c->help_mu);
        int stored = call->stored == call->nparts;
        pthread_mutex_unlock(&c->help_mu);
        if (stored) return;
        help_one(c, NULL);
    }
}

static void call_free(ca_batch_call *call)
{
    if (call == NULL) return;
    if (call->prep != NULL)
        for (size_t i = 0; i < call->n; i++) ca_issue_prep_clear(&call->prep[i]);
    free(call->prep);
    free(call->prep_res);
    free(call->prep_msg);
    free(call->fin);
    free(call->certs);
    free(call->evs);
    free(call->res);
    free(call->idx);
    free(call);
}

/* Hands out the certificates of part `pt` that are durable; the others are
 * refused (and audited). The store describes a part's first failure only;
 * the others get the same text when they failed the same way (a failed
 * commit), else their error's name. */
static void collect_part(ca_batch_call *call, batch_part *pt, ca_svid **out, batch_out *o)
{
    mid_result all = pt->start;
    char first[CA_BATCH_MSG_MAX] = "";
    if (pt->sb != NULL) {
        all = store_cert_batch_wait(pt->sb);
        if (!mid_is_ok(all)) snprintf(first, sizeof first, "%s", mid_errmsg());
    } else {
        snprintf(first, sizeof first, "%s", pt->start_msg);
        for (size_t j = 0; j < pt->count; j++) call->res[pt->first + j] = all;
    }
    for (size_t j = pt->first; j < pt->first + pt->count; j++) {
        size_t i = call->idx[j];
        if (mid_is_ok(call->res[j])) {
            out[i] = ca_issue_prep_take(&call->prep[i]);
            o->results[i] = call->res[j];
            continue;
        }
        mid_err e = call->res[j].err;
        mid_result r = e == all.err ? mid_fail(e, __FILE__, __LINE__, "%s", first)
                                    : mid_fail(e, __FILE__, __LINE__,
                                               "the store did not record certificate %s (%s)",
                                               call->prep[i].serial, mid_errname(e));
        refuse(call->c, &call->reqs[i], r, i, o);
    }
}

static ca_batch_call *call_new(ca *c, const ca_issue_req *reqs, size_t n)
{
    ca_batch_call *call = calloc(1, sizeof *call);
    if (call == NULL) return NULL;
    *call = (ca_batch_call){.c = c, .reqs = reqs, .n = n};
    call->prep = calloc(n, sizeof *call->prep);
    call->prep_res = calloc(n, sizeof *call->prep_res);
    call->prep_msg = calloc(n, sizeof *call->prep_msg);
    call->fin = calloc(n, sizeof *call->fin);
    call->certs = calloc(n, sizeof *call->certs);
    call->evs = calloc(n, sizeof *call->evs);
    call->res = calloc(n, sizeof *call->res);
    call->idx = calloc(n, sizeof *call->idx);
    if (!call->prep || !call->prep_res || !call->prep_msg || !call->fin || !call->certs ||
        !call->evs || !call->res || !call->idx) {
        call_free(call);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        call->prep_res[i] = MID_OK_RESULT;
        atomic_init(&call->fin[i], 0);
    }
    atomic_init(&call->done, 0);
    return call;
}

MID_RESULT ca_issue_batch_msgs(ca *c, const ca_issue_req *reqs, size_t n, ca_svid **out,
                               mid_result *results, ca_batch_msg *msgs)
{
    MID_ENSURE(c != NULL && reqs != NULL && out != NULL && results != NULL, MID_E_INVALID,
               "missing arguments");
    MID_ENSURE(n >= 1 && n <= CA_BATCH_MAX, MID_E_INVALID,
               "%zu requests in one batch; between 1 and %d", n, CA_BATCH_MAX);
    batch_out o = {.results = results, .msgs = msgs, .first = n};
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        results[i] = MID_OK_RESULT;
        if (msgs != NULL) msgs[i].msg[0] = '\0';
    }
    ca_batch_call *call = call_new(c, reqs, n);
    if (call == NULL) {
        for (size_t i = 0; i < n; i++)
            refuse(c, &reqs[i], mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory"), i,
                   &o);
        goto report;
    }

    /* Offer the requests to idle threads, sign them here too (sending them
     * to the store part by part), then hand out the durable ones. */
    pthread_mutex_lock(&c->help_mu);
    call->next_call = c->help_head;
    c->help_head = call;
    call->listed = 1;
    pthread_cond_broadcast(&c->help_cv);
    pthread_mutex_unlock(&c->help_mu);
    finish_own(call, &o);
    wait_store(call);
    for (size_t j = 0; j < call->nparts; j++) collect_part(call, &call->part[j], out, &o);
    call_free(call);

report:
    if (o.first == n) return MID_OK_RESULT;
    return mid_fail(results[o.first].err, __FILE__, __LINE__, "request %zu of %zu: %s", o.first,
                    n, o.first_msg);
}

MID_RESULT ca_issue_batch(ca *c, const ca_issue_req *reqs, size_t n, ca_svid **out,
                          mid_result *results)
{
    return ca_issue_batch_msgs(c, reqs, n, out, results, NULL);
}
