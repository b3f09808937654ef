/* ca_audit_head_sign / ca_audit_head_verify: a good head verifies against the
 * store's anchors and given anchors; tampered, malformed or foreign heads are
 * errors; a truncated or rewritten log is reported in the verdict. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ca/codec.h"
#include "storage/audit.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

static void issue_some(ca_env *e, int n)
{
    for (int i = 0; i < n; i++) {
        ca_issue_req req = {.spiffe_id = "spiffe://example.org/w", .ttl = 60};
        ca_svid *s = NULL;
        assert_ok(ca_issue(e->c, &req, &s));
        ca_svid_free(s);
    }
}

static char *sign_head(ca_env *e)
{
    char *head = NULL;
    assert_ok(ca_audit_head_sign(e->c, &head));
    return head;
}

/* Replaces one member of the head (JSON value given as text). */
static char *with_member(const char *head, const char *name, json_t *value)
{
    json_t *doc = json_loads(head, 0, NULL);
    assert_non_null(doc);
    json_object_set_new(doc, name, value);
    char *out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return out;
}

static void t_head_roundtrip(void **state)
{
    ca_env *e = *state;
    issue_some(e, 3);
    char *head = sign_head(e);
    json_t *doc = json_loads(head, 0, NULL);
    assert_non_null(doc);
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    assert_ok(store_audit_head(e->st, &seq, h));
    char hex[65];
    ca_hex_encode(h, STORE_HASH_LEN, hex);
    assert_int_equal(json_integer_value(json_object_get(doc, "seq")), seq);
    assert_string_equal(json_string_value(json_object_get(doc, "hash")), hex);
    assert_string_equal(json_string_value(json_object_get(doc, "trust_domain")), "example.org");
    assert_string_equal(json_string_value(json_object_get(doc, "alg")), "ecdsa-with-SHA256");
    assert_int_equal(strlen(json_string_value(json_object_get(doc, "time"))), 20);
    assert_int_equal(json_array_size(json_object_get(doc, "x5c")), 1);
    assert_true(json_is_string(json_object_get(doc, "sig")));
    json_decref(doc);

    store_audit_verdict v;
    memset(&v, 0, sizeof v);
    assert_ok(ca_audit_head_verify(e->st, head, NULL, &v));
    assert_int_equal(v.ok, 1);

    /* with explicit anchors (the bundle) */
    char *bundle = NULL;
    assert_ok(ca_bundle_pem(e->c, &bundle));
    memset(&v, 0, sizeof v);
    assert_ok(ca_audit_head_verify(e->st, head, bundle, &v));
    assert_int_equal(v.ok, 1);
    free(bundle);

    /* the log growing after the head is fine */
    issue_some(e, 2);
    memset(&v, 0, sizeof v);
    assert_ok(ca_audit_head_verify(e->st, head, NULL, &v));
    assert_int_equal(v.ok, 1);
    assert_int_equal(v.head_seq, seq + 2);
    free(head);
}

static void t_head_tampered(void **state)
{
    ca_env *e = *state;
    issue_some(e, 2);
    char *head = sign_head(e);
    json_t *doc = json_loads(head, 0, NULL);
    const char *sig = json_string_value(json_object_get(doc, "sig"));
    unsigned char *raw = NULL;
    size_t len = 0;
    assert_ok(ca_b64_decode(sig, strlen(sig), 1024, "sig", &raw, &len));
    raw[len - 1] ^= 0x01;
    char *bad_sig = NULL;
    assert_ok(ca_b64_encode(raw, len, &bad_sig));
    free(raw);
    int64_t seq = json_integer_value(json_object_get(doc, "seq"));
    json_decref(doc);

    store_audit_verdict v;
    struct {
        const char *member;
        json_t *value;
        const char *needle;
    } cases[] = {
        {"sig", json_string(bad_sig), "signature does not verify"},
        {"seq", json_integer(seq - 1), "signature does not verify"},
        {"time", json_string("2020-01-01T00:00:00Z"), "signer does not chain"},
        {"hash", json_string("00000000000000000000000000000000000000000000000000000000000000ff"),
         "signature does not verify"},
        {"alg", json_string("sha256WithRSAEncryption"), "does not match"},
        {"trust_domain", json_string("other.org"), "not an authority of trust domain other.org"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = with_member(head, cases[i].member, cases[i].value);
        assert_fails_with(ca_audit_head_verify(e->st, t, NULL, &v), MID_E_VERIFY, cases[i].needle);
        free(t);
    }
    free(bad_sig);

    /* signed by a foreign CA: its chain does not reach our anchors */
    ca_env *other = ca_env_new();
    ca_env_init(other, CA_KEY_EC_P256, 0, 0);
    char *foreign = sign_head(other);
    assert_fails_with(ca_audit_head_verify(e->st, foreign, NULL, &v), MID_E_VERIFY,
                      "does not chain to a trust anchor");
    /* ... and our head against the foreign bundle */
    char *other_bundle = NULL;
    assert_ok(ca_bundle_pem(other->c, &other_bundle));
    assert_fails_with(ca_audit_head_verify(e->st, head, other_bundle, &v), MID_E_VERIFY,
                      "does not chain");
    free(other_bundle);
    free(foreign);
    ca_env_free(other);
    free(head);
}

static void t_head_malformed(void **state)
{
    ca_env *e = *state;
    char *head = sign_head(e);
    store_audit_verdict v;
    static const char *texts[] = {"", "not json", "[]", "{}", "{\"seq\":1}",
                                  "{\"seq\":1,\"seq\":2}"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        assert_fails_with(ca_audit_head_verify(e->st, texts[i], NULL, &v), MID_E_INVALID,
                          "audit head");
    struct {
        const char *member;
        json_t *value;
    } cases[] = {
        {"seq", json_string("1")},
        {"seq", json_integer(-1)},
        {"hash", json_string("abc")},
        {"hash", json_string("ZZ00000000000000000000000000000000000000000000000000000000000000")},
        {"time", json_string("yesterday")},
        {"time", json_string("1969-12-31T23:59:59Z")},
        {"trust_domain", json_string("spiffe://example.org")},
        {"x5c", json_array()},
        {"x5c", json_string("MIIB")},
        {"x5c", json_pack("[s]", "not base64!")},
        {"x5c", json_pack("[s]", "AAAA")},
        {"sig", json_integer(5)},
        {"sig", json_string("@@@@")},
        {"alg", json_null()},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = with_member(head, cases[i].member, cases[i].value);
        mid_result r = ca_audit_head_verify(e->st, t, NULL, &v);
        if (r.err != MID_E_INVALID)
            fail_msg("case %zu (%s): %s: %s", i, cases[i].member, mid_errname(r.err), mid_errmsg());
        free(t);
    }
    char *big = malloc(70 * 1024);
    memset(big, ' ', 70 * 1024 - 1);
    big[70 * 1024 - 1] = '\0';
    assert_fails_with(ca_audit_head_verify(e->st, big, NULL, &v), MID_E_TOO_LARGE, "audit head");
    free(big);
    assert_fails_with(ca_audit_head_verify(e->st, head, "garbage", &v), MID_E_INVALID,
                      "trust anchors");
    free(head);
}

/* Closes the CA and the store, runs `sql` on the database, reopens the store. */
static void tamper(ca_env *e, const char *sql)
{
    char db[700];
    cafx_db_path(e->dir, db, sizeof db);
    ca_close(e->c);
    e->c = NULL;
    store_close(e->st);
    e->st = NULL;
    assert_int_equal(cafx_sql(db, sql), 0);
    e->st = cafx_store_open(e->dir);
}

static void t_head_truncated_log(void **state)
{
    ca_env *e = *state;
    issue_some(e, 4);
    char *head = sign_head(e);
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    assert_ok(store_audit_head(e->st, &seq, h));
    char sql[300];
    snprintf(sql, sizeof sql,
             "DROP TRIGGER audit_events_no_delete; DELETE FROM audit_events WHERE seq > %lld;",
             (long long)(seq - 2));
    tamper(e, sql);
    store_audit_verdict v;
    memset(&v, 0, sizeof v);
    assert_ok(ca_audit_head_verify(e->st, head, NULL, &v));
    assert_int_equal(v.ok, 0);
    char want[200];
    snprintf(want, sizeof want, "log truncated: head says seq %lld but the log ends at %lld",
             (long long)seq, (long long)(seq - 2));
    assert_non_null(strstr(v.reason, want));
    free(head);
}

static void t_head_rewritten_log(void **state)
{
    ca_env *e = *state;
    issue_some(e, 3);
    char *head = sign_head(e);
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    assert_ok(store_audit_head(e->st, &seq, h));
    /* Rewrite the last event and recompute its hash: the chain itself still
     * verifies, only the signed head can tell. */
    store_audit_row row;
    memset(&row, 0, sizeof row);
    assert_ok(store_audit_get(e->st, seq, &row));
    store_audit_event ev = row.ev;
    ev.spiffe_id = "spiffe://example.org/someone-else";
    uint8_t nh[STORE_HASH_LEN];
    assert_ok(audit_hash(&ev, row.ev.prev_hash, nh));
    char hex[AUDIT_HEX_LEN + 1], sql[600];
    audit_hex_encode(nh, hex);
    snprintf(sql, sizeof sql,
             "DROP TRIGGER audit_events_no_update; UPDATE audit_events SET spiffe_id = "
             "'spiffe://example.org/someone-else', hash = '%s' WHERE seq = %lld;",
             hex, (long long)seq);
    store_audit_row_clear(&row);
    tamper(e, sql);

    store_audit_verdict v;
    memset(&v, 0, sizeof v);
    assert_ok(store_audit_verify(e->st, &v));
    assert_int_equal(v.ok, 1); /* the rewrite is self-consistent */
    memset(&v, 0, sizeof v);
    assert_ok(ca_audit_head_verify(e->st, head, NULL, &v));
    assert_int_equal(v.ok, 0);
    char want[200];
    snprintf(want, sizeof want, "event %lld differs from the signed head (rewritten)",
             (long long)seq);
    assert_non_null(strstr(v.reason, want));
    assert_int_equal(v.broken_seq, seq);
    free(head);
}

int ca_test_audit_head(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_head_roundtrip, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_head_tampered, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_head_malformed, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_head_truncated_log, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_head_rewritten_log, ca_env_setup, ca_env_teardown),
    };
    return cmocka_run_group_tests_name("ca/audit_head", tests, NULL, NULL);
}
