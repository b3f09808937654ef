/* ca_issue_batch: per-request outcomes in request order, refusals audited
 * like ca_issue's, nothing handed out that the store did not commit (a
 * failed commit of all parts, of one part), arguments, and
 * several calls at once on one handle (threads sign each other's requests
 * while they wait, ca/batch.c) with every certificate landing in its own
 * call's slot. */
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/batch.h"
#include "ca/x509.h"
#include "storage/store_int.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

/* The single URI SAN of a leaf PEM chain's first certificate. */
static void leaf_uri(const char *chain_pem, char *out, size_t cap)
{
    STACK_OF(X509) *sk = cafx_pem_certs(chain_pem);
    GENERAL_NAMES *g = X509_get_ext_d2i(sk_X509_value(sk, 0), NID_subject_alt_name, NULL, NULL);
    assert_non_null(g);
    const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, 0);
    assert_int_equal(n->type, GEN_URI);
    snprintf(out, cap, "%s", (const char *)ASN1_STRING_get0_data(n->d.uniformResourceIdentifier));
    GENERAL_NAMES_free(g);
    sk_X509_pop_free(sk, X509_free);
}

/* Requests for spiffe://example.org/b/<tag>-<i>, each with its own key and
 * CSR; every `bad_every`-th (when > 0) asks for another trust domain. */
typedef struct {
    size_t n;
    char (*id)[96];
    unsigned char **csr;
    ca_issue_req *req;
} reqset;

static reqset reqs_make(size_t n, const char *tag, size_t bad_every)
{
    reqset s = {.n = n};
    s.id = calloc(n, sizeof *s.id);
    s.csr = calloc(n, sizeof *s.csr);
    s.req = calloc(n, sizeof *s.req);
    assert_true(s.id && s.csr && s.req);
    EVP_PKEY *k = cafx_key("ec-p256");
    for (size_t i = 0; i < n; i++) {
        int bad = bad_every > 0 && i % bad_every == bad_every - 1;
        snprintf(s.id[i], sizeof s.id[i], "spiffe://%s/b/%s-%zu",
                 bad ? "other.org" : "example.org", tag, i);
        size_t len = 0;
        const char *uris[] = {s.id[i], NULL};
        s.csr[i] = cafx_csr(k, uris, NULL, 1, &len);
        s.req[i] = (ca_issue_req){.spiffe_id = s.id[i], .csr = s.csr[i], .csr_len = len,
                                  .ttl = 600, .actor = "test:batch"};
    }
    EVP_PKEY_free(k);
    return s;
}

static void reqs_free(reqset *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->csr[i]);
    free(s->csr);
    free(s->id);
    free(s->req);
}

/* Checks one call's outcome: bad requests refused (MID_E_DENIED), the
 * others issued for exactly their own SPIFFE ID and recorded. */
static void check_outcome(ca_env *e, const reqset *s, size_t bad_every, ca_svid **out,
                          const mid_result *res)
{
    for (size_t i = 0; i < s->n; i++) {
        int bad = bad_every > 0 && i % bad_every == bad_every - 1;
        if (bad) {
            assert_int_equal(res[i].err, MID_E_DENIED);
            assert_null(out[i]);
            continue;
        }
        if (!mid_is_ok(res[i])) fail_msg("request %zu: %s", i, mid_errname(res[i].err));
        assert_non_null(out[i]);
        assert_string_equal(ca_svid_spiffe_id(out[i]), s->id[i]);
        char uri[128];
        leaf_uri(ca_svid_chain_pem(out[i]), uri, sizeof uri);
        assert_string_equal(uri, s->id[i]);
        store_cert_row row;
        assert_ok(store_cert_get(e->st, ca_svid_serial(out[i]), &row));
        assert_string_equal(row.c.spiffe_id, s->id[i]);
        store_cert_row_clear(&row);
    }
}

static void t_batch_outcomes(void **state)
{
    ca_env *e = *state;
    /* Sizes around the limits, one with a refusal every 5th request. */
    static const size_t sizes[] = {1, 2, 9, 33, CA_BATCH_MAX};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k], bad_every = n >= 9 ? 5 : 0;
        char tag[16];
        snprintf(tag, sizeof tag, "o%zu", n);
        reqset s = reqs_make(n, tag, bad_every);
        ca_svid **out = calloc(n, sizeof *out);
        mid_result *res = calloc(n, sizeof *res);
        ca_batch_msg *msgs = calloc(n, sizeof *msgs);
        long issued0 = cafx_count_events(e->st, "svid.issue", "ok");
        long refused0 = cafx_count_events(e->st, "svid.refuse", "denied");
        mid_result r = ca_issue_batch_msgs(e->c, s.req, n, out, res, msgs);
        size_t nbad = bad_every ? n / bad_every : 0;
        if (nbad == 0) {
            assert_ok(r);
        } else {
            assert_int_equal(r.err, MID_E_DENIED);
            assert_non_null(strstr(mid_errmsg(), "request 4 of")); /* the first refused */
            assert_non_null(strstr(msgs[4].msg, "not in trust domain"));
            assert_string_equal(msgs[0].msg, "");
        }
        check_outcome(e, &s, bad_every, out, res);
        assert_int_equal(cafx_count_events(e->st, "svid.issue", "ok") - issued0, (long)(n - nbad));
        assert_int_equal(cafx_count_events(e->st, "svid.refuse", "denied") - refused0,
                         (long)nbad);
        for (size_t i = 0; i < n; i++) ca_svid_free(out[i]);
        free(out);
        free(res);
        free(msgs);
        reqs_free(&s);
    }
}

static void t_batch_arguments(void **state)
{
    ca_env *e = *state;
    reqset s = reqs_make(1, "arg", 0);
    ca_svid *out[1] = {NULL};
    mid_result res[1];
    long events0 = cafx_count_events(e->st, NULL, NULL);
    assert_fails_with(ca_issue_batch(e->c, s.req, 0, out, res), MID_E_INVALID, "between 1");
    assert_fails_with(ca_issue_batch(e->c, s.req, CA_BATCH_MAX + 1, out, res), MID_E_INVALID,
                      "between 1");
    assert_fails_with(ca_issue_batch(NULL, s.req, 1, out, res), MID_E_INVALID, "missing");
    assert_fails_with(ca_issue_batch(e->c, NULL, 1, out, res), MID_E_INVALID, "missing");
    assert_fails_with(ca_issue_batch(e->c, s.req, 1, NULL, res), MID_E_INVALID, "missing");
    assert_fails_with(ca_issue_batch(e->c, s.req, 1, out, NULL), MID_E_INVALID, "missing");
    assert_int_equal(cafx_count_events(e->st, NULL, NULL), events0); /* nothing audited */
    reqs_free(&s);
}

/* A call's certificates go to the store in parts (ca/batch.c,
 * BATCH_PART); here the writer is paused until every part is queued, so
 * they share one commit, and that commit fails: nothing is handed out,
 * every certificate is refused with the store's error and audited. */
enum { FAIL_N = 12 }; /* more than one part */

typedef struct {
    ca_env *e;
    reqset s;
    ca_svid *out[FAIL_N];
    mid_result res[FAIL_N];
    ca_batch_msg msgs[FAIL_N];
    mid_result all;
} fail_call;

static void *fail_call_main(void *arg)
{
    fail_call *f = arg;
    f->all = ca_issue_batch_msgs(f->e->c, f->s.req, FAIL_N, f->out, f->res, f->msgs);
    return NULL;
}

static void t_batch_store_failure(void **state)
{
    ca_env *e = *state;
    fail_call f = {.e = e, .s = reqs_make(FAIL_N, "fail", 0)};
    long errors0 = cafx_count_events(e->st, "svid.refuse", "error");
    long issued0 = cafx_count_events(e->st, "svid.issue", "ok");
    store_writer_pause(e->st, 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fail_call_main, &f), 0);
    store_stats st;
    for (int ms = 0;; ms++) { /* every part queued: FAIL_N / 8 rounded up */
        store_stats_get(e->st, &st);
        if (st.queued >= 2) break;
        assert_true(ms < 10000); /* still one part after 10 s: parts are gone */
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    store_fault_set(e->st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    store_writer_pause(e->st, 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(f.all.err, MID_E_IO);
    for (size_t i = 0; i < FAIL_N; i++) {
        assert_null(f.out[i]);
        assert_int_equal(f.res[i].err, MID_E_IO);
        assert_non_null(strstr(f.msgs[i].msg, "injected fault"));
    }
    assert_int_equal(cafx_count_events(e->st, "svid.refuse", "error") - errors0, FAIL_N);
    assert_int_equal(cafx_count_events(e->st, "svid.issue", "ok"), issued0);
    reqs_free(&f.s);
}

/* The commit of one part fails while the others may commit on their own:
 * each certificate is either durable and handed out, or refused with the
 * store's error and audited, never both; at least the failed part is
 * refused, and every one handed out is in the store. */
static void t_batch_part_failure(void **state)
{
    ca_env *e = *state;
    reqset s = reqs_make(FAIL_N, "part", 0);
    ca_svid *out[FAIL_N];
    mid_result res[FAIL_N];
    ca_batch_msg msgs[FAIL_N];
    long errors0 = cafx_count_events(e->st, "svid.refuse", "error");
    long issued0 = cafx_count_events(e->st, "svid.issue", "ok");
    store_fault_set(e->st, STORE_FAULT_COMMIT, 1, MID_E_IO);
    mid_result all = ca_issue_batch_msgs(e->c, s.req, FAIL_N, out, res, msgs);
    long failed = 0;
    for (size_t i = 0; i < FAIL_N; i++) {
        if (res[i].err == MID_E_OK) {
            assert_non_null(out[i]);
            store_cert_row row;
            assert_ok(store_cert_get(e->st, ca_svid_serial(out[i]), &row));
            store_cert_row_clear(&row);
            ca_svid_free(out[i]);
            continue;
        }
        assert_int_equal(res[i].err, MID_E_IO);
        assert_null(out[i]);
        assert_non_null(strstr(msgs[i].msg, "injected fault"));
        failed++;
    }
    assert_true(failed >= 1);
    assert_int_equal(all.err, MID_E_IO);
    assert_int_equal(cafx_count_events(e->st, "svid.refuse", "error") - errors0, failed);
    assert_int_equal(cafx_count_events(e->st, "svid.issue", "ok") - issued0, FAIL_N - failed);
    reqs_free(&s);
}

/* Several calls at once: the threads that finish signing first sign the
 * others' requests while they wait; each call still gets exactly its own
 * certificates, in its own order. */
#define CONC_CALLS 6
#define CONC_N 24

typedef struct {
    ca_env *e;
    int id;
    int rounds;
    int failures;
    char first_error[256];
} conc_arg;

static void *conc_main(void *arg)
{
    conc_arg *a = arg;
    for (int round = 0; round < a->rounds; round++) {
        char tag[16];
        snprintf(tag, sizeof tag, "c%d-%d", a->id, round);
        size_t bad_every = a->id % 2 ? 7 : 0;
        reqset s = reqs_make(CONC_N, tag, bad_every);
        ca_svid *out[CONC_N];
        mid_result res[CONC_N];
        mid_result all = ca_issue_batch(a->e->c, s.req, CONC_N, out, res);
        if ((bad_every ? MID_E_DENIED : MID_E_OK) != all.err && a->failures++ == 0)
            snprintf(a->first_error, sizeof a->first_error, "call %s: %s", tag,
                     mid_errname(all.err));
        for (size_t i = 0; i < CONC_N; i++) {
            int bad = bad_every && i % bad_every == bad_every - 1;
            int ok = bad ? res[i].err == MID_E_DENIED && out[i] == NULL
                         : mid_is_ok(res[i]) && out[i] != NULL &&
                               strcmp(ca_svid_spiffe_id(out[i]), s.id[i]) == 0;
            if (!ok && a->failures++ == 0)
                snprintf(a->first_error, sizeof a->first_error, "call %s request %zu: %s", tag,
                         i, mid_errname(res[i].err));
            ca_svid_free(out[i]);
        }
        reqs_free(&s);
    }
    return NULL;
}

static void t_batch_concurrent_calls(void **state)
{
    ca_env *e = *state;
    long issued0 = cafx_count_events(e->st, "svid.issue", "ok");
    pthread_t th[CONC_CALLS];
    conc_arg args[CONC_CALLS];
    for (int i = 0; i < CONC_CALLS; i++) {
        args[i] = (conc_arg){.e = e, .id = i, .rounds = 3};
        assert_int_equal(pthread_create(&th[i], NULL, conc_main, &args[i]), 0);
    }
    long expect = 0;
    for (int i = 0; i < CONC_CALLS; i++) {
        pthread_join(th[i], NULL);
        if (args[i].failures) fail_msg("thread %d: %s", i, args[i].first_error);
        expect += 3L * (i % 2 ? CONC_N - CONC_N / 7 : CONC_N);
    }
    assert_int_equal(cafx_count_events(e->st, "svid.issue", "ok") - issued0, expect);
    store_audit_verdict v;
    assert_ok(store_audit_verify(e->st, &v));
    assert_true(v.ok);
}

int ca_test_batch(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_batch_outcomes, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_batch_arguments, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_batch_store_failure, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_batch_part_failure, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_batch_concurrent_calls, ca_env_setup,
                                        ca_env_teardown),
    };
    return cmocka_run_group_tests_name("ca/batch", tests, NULL, NULL);
}
