/* sds/server: the renewal schedule of the server's own TLS SVID. The
 * schedule itself (sds/server_int.h) with exact numbers, then a server whose
 * SVID lives a few seconds, probed with a fresh handshake every 250 ms across
 * several lifetimes and an intermediate rotation: an agent (re)connecting
 * must never meet an expired server certificate. Before the fix the timer
 * looked at the SVID only every 30 s, whatever its lifetime, so a 20 s SVID
 * was served expired for 10 s out of every 30 (tests/interop/
 * test_auto_rotation.sh saw it as "certificate verify failed"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ca/ca.h"
#include "lib/log.h"
#include "lib/rpc.h"
#include "lib/timeutil.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "meshid/agent/v1/agent.pb-c.h"
#include "sds/server.h"
#include "sds/server_int.h"
#include "storage/store.h"
#include "tests/testlib/rpc_wait.h"
#include "tests/unit/server/server_tests.h"

#define TD "tls.test"
#define SVID_TTL 4 /* seconds: several renewals within a short test */
#define PROBE_MS 250
#define WAIT_MS 20000

/* ---- the schedule ---------------------------------------------------------- */

static void test_renew_at(void **state)
{
    (void)state;
    /* half way from when the SVID was taken into use, not from notBefore */
    assert_int_equal(server_tls_renew_at_ms(1000, 21000), 11000);
    assert_int_equal(server_tls_renew_at_ms(0, 3600000), 1800000);
    /* nothing left (or a clock oddity): due at once */
    assert_int_equal(server_tls_renew_at_ms(5000, 5000), 5000);
    assert_int_equal(server_tls_renew_at_ms(5000, 4000), 5000);
}

static void test_next_check(void **state)
{
    (void)state;
    const int64_t now = 1795689690000;
    /* a fresh 20 s SVID: looked at again at its half life, not 30 s later */
    assert_int_equal(server_tls_next_ms(now, now, now + 20000, 0), 10000);
    /* the same SVID 4 s later, and past its half life */
    assert_int_equal(server_tls_next_ms(now + 4000, now, now + 20000, 0), 6000);
    assert_int_equal(server_tls_next_ms(now + 10000, now, now + 20000, 0), 0);
    assert_int_equal(server_tls_next_ms(now + 25000, now, now + 20000, 0), 0);
    /* an hour-long SVID: still looked at every SERVER_TLS_CHECK_MS (bundle) */
    assert_int_equal(server_tls_next_ms(now, now, now + 3600000, 0), SERVER_TLS_CHECK_MS);
    /* cut short by an issuer expiring in 6 s: half of what it really has */
    assert_int_equal(server_tls_next_ms(now, now, now + 6000, 0), 3000);
    /* failures: SERVER_TLS_RETRY_MS doubling, capped at SERVER_TLS_CHECK_MS */
    const int64_t na = now + 3600000;
    assert_int_equal(server_tls_next_ms(now, now - 1800000, na, 1), SERVER_TLS_RETRY_MS);
    assert_int_equal(server_tls_next_ms(now, now - 1800000, na, 3), 4 * SERVER_TLS_RETRY_MS);
    assert_int_equal(server_tls_next_ms(now, now - 1800000, na, 40), SERVER_TLS_CHECK_MS);
    /* ... but never later than half the time left, at least 100 ms apart */
    assert_int_equal(server_tls_next_ms(now, now - 10000, now + 3000, 3), 1500);
    assert_int_equal(server_tls_next_ms(now, now - 10000, now + 60, 3), 100);
    /* already expired: the plain backoff */
    assert_int_equal(server_tls_next_ms(now, now - 10000, now - 1000, 2), 2 * SERVER_TLS_RETRY_MS);
}

/* ---- a server with a short-lived SVID ------------------------------------------ */

typedef struct {
    char dir[64];
    rpc_loop *loop;
    server *srv;
    char target[64];
    char *bundle_pem;
    rpc_channel *admin;
    char msg[512];
    int handshakes, refused;
} tfx;

static int tls_setup(void **state)
{
    tfx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/meshid-server-tls-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char db[128];
    snprintf(db, sizeof db, "%s/meshid.db", f->dir);
    store *st;
    assert_true(mid_is_ok(store_open(db, NULL, &st)));
    ca_init_opts io = {.trust_domain = TD, .key_type = CA_KEY_EC_P256, .actor = "test"};
    assert_true(mid_is_ok(ca_init(st, f->dir, &io)));
    store_close(st);
    assert_true(mid_is_ok(rpc_loop_new(&f->loop)));
    server_opts o = {.data_dir = f->dir, .listen = "127.0.0.1:0", .workers = 2,
                     .sync_poll_ms = 100, .server_svid_ttl = SVID_TTL};
    if (!mid_is_ok(server_start(&o, f->loop, &f->srv))) fail_msg("server_start: %s", mid_errmsg());
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", server_port(f->srv));
    f->bundle_pem = strdup(server_bundle_pem(f->srv));
    char t[4200];
    snprintf(t, sizeof t, "unix:%s", server_admin_path(f->srv));
    assert_true(mid_is_ok(rpc_channel_new(f->loop, t, NULL, 0, &f->admin)));
    *state = f;
    return 0;
}

static int tls_teardown(void **state)
{
    tfx *f = *state;
    server_stop(f->srv);
    rpc_loop_free(f->loop);
    server_free(f->srv);
    free(f->bundle_pem);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* One new connection, verified as an agent verifies the server (bundle,
 * server name, SPIFFE ID), carrying an AttestAgent the server refuses
 * (INVALID_ARGUMENT: not a CSR) without spending anything. UNAVAILABLE
 * means the handshake failed: the certificate served was not valid. */
static void probe(tfx *f, const char *when)
{
    rpc_tls tls = {.ca_pem = f->bundle_pem, .server_name = "localhost",
                   .server_spiffe_id = "spiffe://" TD "/meshid/server"};
    rpc_channel *ch;
    assert_true(mid_is_ok(rpc_channel_new(f->loop, f->target, &tls, 0, &ch)));
    Meshid__Agent__V1__AttestAgentRequest req = MESHID__AGENT__V1__ATTEST_AGENT_REQUEST__INIT;
    req.join_token = "not-a-token";
    uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x00};
    req.csr.data = junk;
    req.csr.len = sizeof junk;
    rpc_code c = tl_unary(f->loop, ch, "/meshid.agent.v1.Node/AttestAgent", &req.base,
                          &meshid__agent__v1__attest_agent_response__descriptor, WAIT_MS, f->msg,
                          sizeof f->msg, NULL);
    rpc_channel_free(ch);
    if (c == RPC_UNAVAILABLE)
        fail_msg("%s, handshake %d: the server's certificate did not verify: %s", when,
                 f->handshakes + 1, f->msg);
    assert_int_equal(c, RPC_INVALID_ARGUMENT);
    f->handshakes++;
}

/* Probes every PROBE_MS for `ms`. */
static void probe_for(tfx *f, int64_t ms, const char *when)
{
    int64_t end = time_now_ms() + ms;
    while (time_now_ms() < end) {
        probe(f, when);
        tl_run_for(f->loop, PROBE_MS);
    }
}

static char *signer_id(tfx *f)
{
    Meshid__Admin__V1__AuthorityStatusRequest req =
        MESHID__ADMIN__V1__AUTHORITY_STATUS_REQUEST__INIT;
    Meshid__Admin__V1__AuthorityStatusResponse *resp = NULL;
    rpc_code c = tl_unary(f->loop, f->admin, "/meshid.admin.v1.Admin/AuthorityStatus", &req.base,
                          &meshid__admin__v1__authority_status_response__descriptor, WAIT_MS,
                          f->msg, sizeof f->msg, &resp);
    if (c != RPC_OK) fail_msg("AuthorityStatus: %d %s", c, f->msg);
    char *id = strdup(resp->signer_id);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return id;
}

/* A 4 s SVID is renewed at half life, again and again: every handshake
 * over three lifetimes verifies. Then an intermediate rotation: the server
 * renews from the new signer at once, and keeps renewing that SVID in time
 * (the renewal timer follows the SVID taken into use, not a fixed period). */
static void test_short_svid_always_valid(void **state)
{
    tfx *f = *state;
    probe_for(f, 3 * SVID_TTL * 1000, "before the rotation");

    char *was = signer_id(f);
    Meshid__Admin__V1__RotateAuthorityRequest rr = MESHID__ADMIN__V1__ROTATE_AUTHORITY_REQUEST__INIT;
    rr.timeout_seconds = 5;
    rpc_code c = tl_unary(f->loop, f->admin, "/meshid.admin.v1.Admin/RotateAuthority", &rr.base,
                          &meshid__admin__v1__rotate_authority_response__descriptor, WAIT_MS,
                          f->msg, sizeof f->msg, NULL);
    if (c != RPC_OK) fail_msg("RotateAuthority: %d %s", c, f->msg);
    /* the server follows the new signer within a poll (100 ms) */
    char *now = signer_id(f);
    for (int i = 0; i < 20 && strcmp(was, now) == 0; i++) {
        probe(f, "during the rotation");
        tl_run_for(f->loop, PROBE_MS);
        free(now);
        now = signer_id(f);
    }
    assert_string_not_equal(was, now);
    probe_for(f, 3 * SVID_TTL * 1000, "after the rotation");
    /* 250 ms apart over 24 s (fewer on a slow machine, never none) */
    assert_true(f->handshakes >= 20);
    free(was);
    free(now);
}

int run_tls_renewal_tests(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renew_at),
        cmocka_unit_test(test_next_check),
        cmocka_unit_test_setup_teardown(test_short_svid_always_valid, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests_name("server_tls_renewal", tests, NULL, NULL);
}
