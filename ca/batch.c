/* ca_issue_batch: see ca/batch.h. The per-certificate work is ca/issue.c's
 * (ca/issue_int.h); this file only gathers the signed certificates into a
 * few store requests (store_cert_insert_many_start, one per CA_BATCH_STEP
 * certificates, queued while the next ones are signed) and hands them out
 * once they are durable. */
#include "ca/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca_int.h"
#include "ca/issue_int.h"

_Static_assert(CA_BATCH_MAX <= STORE_CERT_MANY_MAX, "a batch is one store request");

/* Certificates per store request within one call: each step is queued as
 * soon as it is signed, so the store writes it while this thread signs the
 * next one, and only the last step's write is waited for with nothing left
 * to do. Fewer, larger steps mean fewer transactions; smaller ones hide
 * more of the write. */
#define CA_BATCH_STEP 8
#define CA_BATCH_STEPS ((CA_BATCH_MAX + CA_BATCH_STEP - 1) / CA_BATCH_STEP)

/* Everything one call holds; released by batch_free. */
typedef struct {
    ca_issue_prep *prep;   /* n, one per request */
    store_cert *certs;     /* k <= n: the signed ones, in request order */
    store_audit_event *evs;
    mid_result *stored;    /* k: outcome of each store write */
    size_t *idx;           /* k: request index of certs[j] */
} batch_state;

/* One store request: certs[from .. from + n) of the batch. */
typedef struct {
    store_cert_batch *pending; /* NULL once waited for (or never queued) */
    size_t from, n;
    mid_result whole;          /* what the request as a whole returned */
    char first[CA_BATCH_MSG_MAX]; /* its first failure's message */
} batch_step;

static void batch_free(batch_state *b, size_t n)
{
    if (b->prep != NULL)
        for (size_t i = 0; i < n; i++) ca_issue_prep_clear(&b->prep[i]);
    free(b->prep);
    free(b->certs);
    free(b->evs);
    free(b->stored);
    free(b->idx);
}

/* Where the per-item outcomes go, and the failure of the lowest index
 * (the one the return value reports). */
typedef struct {
    mid_result *results;
    ca_batch_msg *msgs; /* may be NULL */
    size_t first;       /* n when nothing failed */
    char first_msg[CA_BATCH_MSG_MAX];
} batch_out;

/* Item i failed with `r` (this thread's last error describes it): audit the
 * refusal as ca_issue would, record the outcome and message. */
static void refuse(ca *c, const ca_issue_req *req, mid_result r, size_t i, batch_out *o)
{
    o->results[i] = ca_issue_refused(c, req, r);
    if (o->msgs != NULL) snprintf(o->msgs[i].msg, sizeof o->msgs[i].msg, "%s", mid_errmsg());
    if (i < o->first) {
        o->first = i;
        snprintf(o->first_msg, sizeof o->first_msg, "%s", mid_errmsg());
    }
}

/* Queues certs[from .. k) as one store request (the writer starts on it at
 * once); a request that cannot even be queued fails all of them. */
static void step_start(ca *c, batch_state *b, size_t from, size_t k, batch_step *s)
{
    *s = (batch_step){.from = from, .n = k - from, .whole = MID_OK_RESULT};
    mid_result r = store_cert_insert_many_start(c->st, b->certs + from, b->evs + from, s->n,
                                                b->stored + from, &s->pending);
    if (mid_is_ok(r)) return;
    s->pending = NULL;
    s->whole = r;
    snprintf(s->first, sizeof s->first, "%s", mid_errmsg());
    for (size_t j = from; j < k; j++) b->stored[j] = r;
}

static void step_wait(batch_step *s)
{
    if (s->pending == NULL) return;
    s->whole = store_cert_batch_wait(s->pending);
    s->pending = NULL;
    if (!mid_is_ok(s->whole)) snprintf(s->first, sizeof s->first, "%s", mid_errmsg());
}

MID_RESULT ca_issue_batch_msgs(ca *c, const ca_issue_req *reqs, size_t n, ca_svid **out,
                               mid_result *results, ca_batch_msg *msgs)
{
    MID_ENSURE(c != NULL && reqs != NULL && out != NULL && results != NULL, MID_E_INVALID,
               "missing arguments");
    MID_ENSURE(n >= 1 && n <= CA_BATCH_MAX, MID_E_INVALID,
               "%zu requests in one batch; between 1 and %d", n, CA_BATCH_MAX);
    batch_state b = {0};
    batch_out o = {.results = results, .msgs = msgs, .first = n};
    batch_step steps[CA_BATCH_STEPS];
    size_t k = 0, queued = 0, nsteps = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        results[i] = MID_OK_RESULT;
        if (msgs != NULL) msgs[i].msg[0] = '\0';
    }
    b.prep = calloc(n, sizeof *b.prep);
    b.certs = calloc(n, sizeof *b.certs);
    b.evs = calloc(n, sizeof *b.evs);
    b.stored = calloc(n, sizeof *b.stored);
    b.idx = calloc(n, sizeof *b.idx);
    if (!b.prep || !b.certs || !b.evs || !b.stored || !b.idx) {
        /* Audited like any other failed issuance, so nothing is silent. */
        for (size_t i = 0; i < n; i++)
            refuse(c, &reqs[i], mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory"), i,
                   &o);
        batch_free(&b, 0);
        goto report;
    }

    /* Validate, verify and sign every request on this thread, handing each
     * step of signed certificates to the store as soon as it is complete.
     * b.prep[i] does not move, so the records queued point into it safely. */
    for (size_t i = 0; i < n; i++) {
        mid_result r = ca_issue_prepare(c, &reqs[i], &b.prep[i]);
        if (!mid_is_ok(r)) {
            ca_issue_prep_clear(&b.prep[i]);
            refuse(c, &reqs[i], r, i, &o);
        } else {
            b.certs[k] = b.prep[i].cert;
            b.evs[k] = b.prep[i].ev;
            b.idx[k++] = i;
        }
        if (k > queued && (k - queued == CA_BATCH_STEP || i == n - 1)) {
            step_start(c, &b, queued, k, &steps[nsteps++]);
            queued = k;
        }
    }

    /* Each certificate leaves only once its row and its audit event are
     * committed. The store describes a request's first failure only; the
     * others of that request get the same text when they failed the same
     * way (a failed commit), else their error's name. */
    for (size_t s = 0; s < nsteps; s++) {
        step_wait(&steps[s]);
        for (size_t j = steps[s].from; j < steps[s].from + steps[s].n; j++) {
            size_t i = b.idx[j];
            if (mid_is_ok(b.stored[j])) {
                out[i] = ca_issue_prep_take(&b.prep[i]);
                results[i] = b.stored[j];
                continue;
            }
            mid_err e = b.stored[j].err;
            mid_result r = e == steps[s].whole.err
                               ? mid_fail(e, __FILE__, __LINE__, "%s", steps[s].first)
                               : mid_fail(e, __FILE__, __LINE__,
                                          "the store did not record certificate %s (%s)",
                                          b.prep[i].serial, mid_errname(e));
            refuse(c, &reqs[i], r, i, &o);
        }
    }
    batch_free(&b, n);

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
