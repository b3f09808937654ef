/* storage/audit.c: canonical form (known answers computed independently with
 * Python's hashlib from docs/storage.md), validation, hex. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/audit.h"
#include "storage_test.h"

static const store_audit_event kat1 = {
    .seq = 1,
    .ts_ms = 1700000000000,
    .actor = "cli:uid=1000",
    .event = "ca.init",
    .spiffe_id = NULL,
    .serial = "0a1b",
    .outcome = "ok",
    .reason = "",
    .details = "{\"k\":1}",
};

static const char kat1_canonical_hex[] =
    "010000000f6d65736869642e61756469742e763100000000000000010000018bcfe56800010000000c636c"
    "693a7569643d31303030010000000763612e696e69740001000000043061316201000000026f6b01000000"
    "0001000000077b226b223a317d";
static const char kat1_hash[] = "c128d84fa70e7b756ed6a50aa67b4945bab683bfb389bc3eee73a4fed469156e";
static const char kat2_hash[] = "3f73fb8cdab39c50f70f8648c82c93060ac8355505571eee0523c29fd8b8d8d7";
static const char kat1_empty_sid_hash[] =
    "6ef8aa077a8d9490eb431c20a19fb7dab952e8781282330791b7dada4209e045";

static void test_canonical_known_answer(void **state)
{
    (void)state;
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_mid_ok(audit_canonical(&kat1, &buf, &len));
    assert_int_equal(len, (sizeof kat1_canonical_hex - 1) / 2);
    char *hex = malloc(2 * len + 1);
    assert_non_null(hex);
    for (size_t i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", buf[i]);
    assert_string_equal(hex, kat1_canonical_hex);
    free(hex);
    free(buf);
}

static void test_hash_known_answer_and_chain(void **state)
{
    (void)state;
    uint8_t zero[STORE_HASH_LEN] = {0}, h1[STORE_HASH_LEN], h2[STORE_HASH_LEN];
    char hex[AUDIT_HEX_LEN + 1];
    assert_mid_ok(audit_hash(&kat1, zero, h1));
    audit_hex_encode(h1, hex);
    assert_string_equal(hex, kat1_hash);

    store_audit_event e2 = {
        .seq = 2,
        .ts_ms = 1700000000001,
        .actor = "system",
        .event = "svid.issue",
        .spiffe_id = "spiffe://example.org/a",
        .serial = NULL,
        .outcome = "denied",
        .reason = "no",
        .details = "{}",
    };
    assert_mid_ok(audit_hash(&e2, h1, h2));
    audit_hex_encode(h2, hex);
    assert_string_equal(hex, kat2_hash);

    /* NULL and "" are different content. */
    store_audit_event e3 = kat1;
    e3.spiffe_id = "";
    assert_mid_ok(audit_hash(&e3, zero, h2));
    audit_hex_encode(h2, hex);
    assert_string_equal(hex, kat1_empty_sid_hash);
    assert_memory_not_equal(h1, h2, STORE_HASH_LEN);
}

static void test_field_boundaries_are_unambiguous(void **state)
{
    (void)state;
    /* Moving bytes between adjacent fields must change the hash. */
    uint8_t zero[STORE_HASH_LEN] = {0}, a[STORE_HASH_LEN], b[STORE_HASH_LEN];
    store_audit_event e1 = kat1, e2 = kat1;
    e1.actor = "ab";
    e1.event = "c";
    e2.actor = "a";
    e2.event = "bc";
    assert_mid_ok(audit_hash(&e1, zero, a));
    assert_mid_ok(audit_hash(&e2, zero, b));
    assert_memory_not_equal(a, b, STORE_HASH_LEN);
}

static void test_hex(void **state)
{
    (void)state;
    uint8_t h[STORE_HASH_LEN];
    char hex[AUDIT_HEX_LEN + 1];
    assert_true(audit_hex_decode(kat1_hash, h));
    audit_hex_encode(h, hex);
    assert_string_equal(hex, kat1_hash);
    assert_false(audit_hex_decode(NULL, h));
    assert_false(audit_hex_decode("abc", h));
    char upper[AUDIT_HEX_LEN + 1];
    memcpy(upper, kat1_hash, sizeof upper);
    upper[0] = 'C';
    assert_false(audit_hex_decode(upper, h));
    char longer[AUDIT_HEX_LEN + 2];
    snprintf(longer, sizeof longer, "%s0", kat1_hash);
    assert_false(audit_hex_decode(longer, h));
}

static void test_validate(void **state)
{
    (void)state;
    store_audit_event ok = make_event("svid.issue", "spiffe://example.org/x", "01");
    assert_mid_ok(audit_validate(&ok));
    ok.details = NULL;
    ok.reason = NULL;
    ok.spiffe_id = NULL;
    assert_mid_ok(audit_validate(&ok));
    assert_mid_err(audit_validate(NULL), MID_E_INVALID);

    store_audit_event e = make_event("x", NULL, NULL);
    e.outcome = "success";
    assert_mid_err(audit_validate(&e), MID_E_INVALID);
    e.outcome = NULL;
    assert_mid_err(audit_validate(&e), MID_E_INVALID);
    e = make_event("x", NULL, NULL);
    e.actor = "";
    assert_mid_err(audit_validate(&e), MID_E_INVALID);
    e.actor = NULL;
    assert_mid_err(audit_validate(&e), MID_E_INVALID);
    e = make_event("", NULL, NULL);
    assert_mid_err(audit_validate(&e), MID_E_INVALID);
    e = make_event("x", NULL, NULL);
    e.ts_ms = -1;
    assert_mid_err(audit_validate(&e), MID_E_INVALID);

    e = make_event("x", NULL, NULL);
    const char *bad_details[] = {"not json", "[1,2]", "\"str\"", "42", "{\"a\":1,\"a\":2}", "{",
                                 ""};
    for (size_t i = 0; i < sizeof bad_details / sizeof bad_details[0]; i++) {
        e.details = bad_details[i];
        assert_mid_err(audit_validate(&e), MID_E_INVALID);
    }

    /* Size limits: at the limit accepted, one over refused. */
    size_t n = STORE_AUDIT_DETAILS_MAX;
    char *big = malloc(n + 2);
    assert_non_null(big);
    big[0] = '{';
    big[1] = '"';
    big[2] = 'k';
    big[3] = '"';
    big[4] = ':';
    big[5] = '"';
    memset(big + 6, 'x', n - 8);
    big[n - 2] = '"';
    big[n - 1] = '}';
    big[n] = '\0';
    e.details = big;
    assert_mid_ok(audit_validate(&e));
    big[n - 1] = ' ';
    big[n] = '}';
    big[n + 1] = '\0';
    assert_mid_err(audit_validate(&e), MID_E_TOO_LARGE);
    free(big);

    e = make_event("x", NULL, NULL);
    char *text = malloc(STORE_AUDIT_TEXT_MAX + 2);
    assert_non_null(text);
    memset(text, 'r', STORE_AUDIT_TEXT_MAX);
    text[STORE_AUDIT_TEXT_MAX] = '\0';
    e.reason = text;
    assert_mid_ok(audit_validate(&e));
    text[STORE_AUDIT_TEXT_MAX] = 'r';
    text[STORE_AUDIT_TEXT_MAX + 1] = '\0';
    assert_mid_err(audit_validate(&e), MID_E_TOO_LARGE);
    e.reason = NULL;
    e.actor = text;
    assert_mid_err(audit_validate(&e), MID_E_TOO_LARGE);
    free(text);
}

/* What audit_validate must say about `details`, decided by jansson alone:
 * a JSON object without duplicate keys (the store's rule). */
static int jansson_accepts(const char *details)
{
    json_error_t err;
    json_t *j = json_loads(details, JSON_REJECT_DUPLICATES, &err);
    int ok = j != NULL && json_is_object(j);
    json_decref(j);
    return ok;
}

static void check_same_verdict(const char *details)
{
    store_audit_event e = make_event("x", NULL, NULL);
    e.details = details;
    mid_result r = audit_validate(&e);
    int want = jansson_accepts(details);
    if (mid_is_ok(r) != want)
        fail_msg("details '%s': audit_validate says %s, jansson says %s", details,
                 mid_is_ok(r) ? "ok" : mid_errname(r.err), want ? "ok" : "invalid");
    if (!want) assert_int_equal(r.err, MID_E_INVALID);
}

/* The allocation-free fast path for simple details (storage/audit.c,
 * simple_object) must never accept what jansson refuses: hand-picked edge
 * cases around every rule of the subset, then random mutations of typical
 * details. */
static void test_details_fast_path_matches_jansson(void **state)
{
    (void)state;
    static const char *cases[] = {
        "{}", " {} ", "\t{\n}\r\n", "{\"a\":1}", "{\"a\":1,\"b\":\"x\"}", "{\"\":0}",
        "{\"a\":1,\"a\":1}", "{\"a\":{\"b\":1,\"b\":2}}", "{\"a\":{\"b\":1},\"b\":2}",
        "{\"a\":[1,2,[3,[4]]]}", "{\"a\":[]}", "{\"a\":[,]}", "{\"a\":[1,]}", "{\"a\":1,}",
        "{,}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1 \"b\":2}", "{} {}", "{}x",
        "[{}]", "\"{}\"", "{\"a\":true,\"b\":false,\"c\":null}", "{\"a\":tru}",
        "{\"a\":truex}", "{\"a\":nul}", "{\"a\":True}", "{\"a\":0}", "{\"a\":-0}",
        "{\"a\":01}", "{\"a\":-}", "{\"a\":--1}", "{\"a\":+1}", "{\"a\":1.5}",
        "{\"a\":1e3}", "{\"a\":1E3}", "{\"a\":999999999999999}", "{\"a\":9999999999999999}",
        "{\"a\":99999999999999999999}", "{\"a\":-999999999999999}", "{\"a\":.5}",
        "{\"a\":\"\\n\"}", "{\"a\":\"\\u0000\"}", "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\\"\"}", "{\"a\":\"caf\xc3\xa9\"}", "{\"a\":\"\xff\"}",
        "{\"a\":\"tab\there\"}", "{\"a\":\"x\x7f\"}", "{\"a\\u0062\":1,\"ab\":2}",
        "{\"a\":1,\"\\u0061\":2}", "{\"a\":[[[[[[[[[[1]]]]]]]]]]}",
        "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{}}}}}}}}}",
        "{\"a\":1}\f", "\v{}", "{\"a\"\n:\n1\n}", "{'a':1}", "{a:1}", "{\"a\":\"unterminated}",
        ("{\"authority_id\":\"ab12\",\"csr\":true,\"dns\":[\"a.example\",\"*.b\"],"
         "\"key_fp\":\"00ff\",\"not_after\":\"2026-01-01T00:00:00Z\",\"ttl\":3600}"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_same_verdict(cases[i]);

    /* More than 32 keys (the fast path gives up and jansson decides). */
    char many[1024];
    size_t o = (size_t)snprintf(many, sizeof many, "{");
    for (int k = 0; k < 40; k++)
        o += (size_t)snprintf(many + o, sizeof many - o, "%s\"k%d\":%d", k ? "," : "", k, k);
    snprintf(many + o, sizeof many - o, "}");
    check_same_verdict(many);
    memcpy(strstr(many, "\"k39\""), "\"k01\"", 5); /* a duplicate past key 32 */
    check_same_verdict(many);

    /* Random single-byte mutations of a typical event's details. */
    static const char base[] = "{\"authority_id\":\"ab12\",\"csr\":true,\"dns\":[\"a.ex\"],"
                               "\"n\":[1,-2,0],\"o\":{\"p\":null,\"q\":false},\"ttl\":3600}";
    static const char alphabet[] = "{}[]\":,-0123456789.eEtrufalsn \\\tx\x01\x80";
    unsigned seed = 12345;
    char buf[sizeof base];
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, base, sizeof base);
        for (int m = 0; m < 1 + round % 3; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % (sizeof base - 1);
            seed = seed * 1103515245u + 12345u;
            buf[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        check_same_verdict(buf);
    }
}

int run_audit_tests(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_known_answer),
        cmocka_unit_test(test_hash_known_answer_and_chain),
        cmocka_unit_test(test_field_boundaries_are_unambiguous),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_details_fast_path_matches_jansson),
    };
    return cmocka_run_group_tests_name("storage/audit", tests, NULL, NULL);
}
