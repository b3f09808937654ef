/* ca_issue_batch: see ca/batch.h. The per-certificate work is ca/issue.c's
 * (ca/issue_int.h); this file shares it out, gathers the signed
 * certificates into one store request (store_cert_insert_many_start) and
 * hands them out once it is durable.
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

_Static_assert(CA_BATCH_MAX <= STORE_CERT_MANY_MAX, "a batch is one store request");

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
    ca_batch_call *next_call;  /* help list link (under help_mu) */
    int listed;                /* on the help list (under help_mu) */
    int stored;                /* its store request is finished (under help_mu) */
};

/* Request i of `call`, on this thread: prepare it, or audit its refusal and
 * keep the error and message for the owner. */
static void sign_one(ca_batch_call *call, size_t i)
{
    ca_issue_prep *p = &call->prep[i];
    mid_result r = ca_issue_prepare(call->c, &call->reqs[i], p);
    if (!mid_is_ok(r)) {
        ca_issue_prep_clear(p);
        call->prep_res[i] = ca_issue_refused(call->c, &call->reqs[i], r);
        snprintf(call->prep_msg[i].msg, sizeof call->prep_msg[i].msg, "%s", mid_errmsg());
    }
    atomic_fetch_add_explicit(&call->done, 1, memory_order_release);
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
    sign_one(call, i);
    /* The owner may be asleep waiting for this last one, or for work. */
    pthread_mutex_lock(&c->help_mu);
    pthread_cond_broadcast(&c->help_cv);
    pthread_mutex_unlock(&c->help_mu);
    return 1;
}

/* Until every request of `call` is finished: sign what is left of it, then
 * help other calls; sleep only when there is nothing to do at all. */
static void finish_own(ca_batch_call *call)
{
    ca *c = call->c;
    for (;;) {
        pthread_mutex_lock(&c->help_mu);
        size_t i = claim_locked(call);
        pthread_mutex_unlock(&c->help_mu);
        if (i >= call->n) break;
        sign_one(call, i);
    }
    while (atomic_load_explicit(&call->done, memory_order_acquire) < call->n) {
        if (help_one(c, call)) continue;
        pthread_mutex_lock(&c->help_mu);
        while (atomic_load_explicit(&call->done, memory_order_acquire) < call->n &&
               c->help_head == NULL)
            pthread_cond_wait(&c->help_cv, &c->help_mu);
        pthread_mutex_unlock(&c->help_mu);
    }
}

/* The store's writer thread, when this call's request is finished. */
static void store_finished(void *arg)
{
    ca_batch_call *call = arg;
    pthread_mutex_lock(&call->c->help_mu);
    call->stored = 1;
    pthread_cond_broadcast(&call->c->help_cv);
    pthread_mutex_unlock(&call->c->help_mu);
}

/* Until the store request `sb` of `call` is finished: help other calls;
 * sleep only when there is nothing to sign, until there is or the request
 * is finished. */
static mid_result wait_store(ca_batch_call *call, store_cert_batch *sb)
{
    ca *c = call->c;
    for (;;) {
        pthread_mutex_lock(&c->help_mu);
        while (!call->stored && c->help_head == NULL)
            pthread_cond_wait(&c->help_cv, &c->help_mu);
        int stored = call->stored;
        pthread_mutex_unlock(&c->help_mu);
        if (stored) break;
        help_one(c, NULL);
    }
    return store_cert_batch_wait(sb);
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

static void call_free(ca_batch_call *call)
{
    if (call == NULL) return;
    if (call->prep != NULL)
        for (size_t i = 0; i < call->n; i++) ca_issue_prep_clear(&call->prep[i]);
    free(call->prep);
    free(call->prep_res);
    free(call->prep_msg);
    free(call);
}

/* Records the signed certificates of `call` in one store request and hands
 * out the durable ones; refusals (before or by the store) go to `o`. */
static void record(ca_batch_call *call, ca_svid **out, batch_out *o)
{
    ca *c = call->c;
    size_t n = call->n, k = 0;
    store_cert *certs = calloc(n, sizeof *certs);
    store_audit_event *evs = calloc(n, sizeof *evs);
    mid_result *stored = calloc(n, sizeof *stored);
    size_t *idx = calloc(n, sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        if (!mid_is_ok(call->prep_res[i])) {
            note_failure(o, i, call->prep_res[i], call->prep_msg[i].msg);
            continue;
        }
        if (certs == NULL || evs == NULL || stored == NULL || idx == NULL) {
            /* Audited like any other failed issuance, so nothing is silent. */
            refuse(c, &call->reqs[i], mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory"),
                   i, o);
            continue;
        }
        certs[k] = call->prep[i].cert;
        evs[k] = call->prep[i].ev;
        idx[k++] = i;
    }
    if (k > 0) {
        /* Each certificate leaves only once its row and its audit event are
         * committed. The store describes its first failure only; the others
         * get the same text when they failed the same way (a failed
         * commit), else their error's name. */
        store_cert_batch *sb = NULL;
        mid_result all = store_cert_insert_many_start(c->st, certs, evs, k, stored,
                                                      store_finished, call, &sb);
        if (mid_is_ok(all)) all = wait_store(call, sb);
        else
            for (size_t j = 0; j < k; j++) stored[j] = all;
        char first[CA_BATCH_MSG_MAX] = "";
        if (!mid_is_ok(all)) snprintf(first, sizeof first, "%s", mid_errmsg());
        for (size_t j = 0; j < k; j++) {
            size_t i = idx[j];
            if (mid_is_ok(stored[j])) {
                out[i] = ca_issue_prep_take(&call->prep[i]);
                o->results[i] = stored[j];
                continue;
            }
            mid_err e = stored[j].err;
            mid_result r = e == all.err ? mid_fail(e, __FILE__, __LINE__, "%s", first)
                                        : mid_fail(e, __FILE__, __LINE__,
                                                   "the store did not record certificate %s (%s)",
                                                   call->prep[i].serial, mid_errname(e));
            refuse(c, &call->reqs[i], r, i, o);
        }
    }
    free(certs);
    free(evs);
    free(stored);
    free(idx);
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
    ca_batch_call *call = calloc(1, sizeof *call);
    if (call != NULL) {
        *call = (ca_batch_call){.c = c, .reqs = reqs, .n = n};
        call->prep = calloc(n, sizeof *call->prep);
        call->prep_res = calloc(n, sizeof *call->prep_res);
        call->prep_msg = calloc(n, sizeof *call->prep_msg);
    }
    if (call == NULL || !call->prep || !call->prep_res || !call->prep_msg) {
        call_free(call);
        for (size_t i = 0; i < n; i++)
            refuse(c, &reqs[i], mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory"), i,
                   &o);
        goto report;
    }
    for (size_t i = 0; i < n; i++) call->prep_res[i] = MID_OK_RESULT;
    atomic_init(&call->done, 0);

    /* Offer the requests to idle threads, sign them here too, then record. */
    pthread_mutex_lock(&c->help_mu);
    call->next_call = c->help_head;
    c->help_head = call;
    call->listed = 1;
    pthread_cond_broadcast(&c->help_cv);
    pthread_mutex_unlock(&c->help_mu);
    finish_own(call);
    record(call, out, &o);
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
