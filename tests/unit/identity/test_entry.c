/* Unit tests for identity/entry.c: selector parsing and value rules, entry
 * validation, and matching (an entry matches when all of its selectors are
 * among the workload's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "identity/entry.h"
#include "lib/result.h"
#include "tests/unit/identity/identity_tests.h"

#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void assert_msg_has(const char *needle)
{
    const char *msg = mid_errmsg();
    if (strstr(msg, needle) == NULL)
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, needle);
}

static void ok_sel(const char *text, const char *type, const char *value)
{
    char buf[ENTRY_SELECTOR_TEXT_MAX + 1];
    entry_selector sel;
    mid_result r = entry_selector_parse(text, buf, sizeof buf, &sel);
    if (!mid_is_ok(r)) fail_msg("'%s' refused: %s", text, mid_errmsg());
    assert_string_equal(sel.type, type);
    assert_string_equal(sel.value, value);
    char back[ENTRY_SELECTOR_TEXT_MAX + 1];
    assert_true(mid_is_ok(entry_selector_format(&sel, back, sizeof back)));
    assert_string_equal(back, text);
}

static void bad_sel(const char *text, mid_err code, const char *needle)
{
    char buf[ENTRY_SELECTOR_TEXT_MAX + 1];
    entry_selector sel = {"x", "y"};
    mid_result r = entry_selector_parse(text, buf, sizeof buf, &sel);
    if (r.err != code)
        fail_msg("'%.100s': expected %s, got %s (%s)", text, mid_errname(code),
                 mid_errname(r.err), mid_errmsg());
    assert_null(sel.type);
    assert_null(sel.value);
    assert_msg_has(needle);
}

static void test_selector_valid(void **state)
{
    (void)state;
    ok_sel("unix:uid:0", "unix", "uid:0");
    ok_sel("unix:uid:1000", "unix", "uid:1000");
    ok_sel("unix:uid:4294967294", "unix", "uid:4294967294");
    ok_sel("unix:gid:65534", "unix", "gid:65534");
    ok_sel("unix:user:www-data", "unix", "user:www-data");
    ok_sel("unix:user:Admin_1.x", "unix", "user:Admin_1.x");
    ok_sel("unix:user:host$", "unix", "user:host$");
    ok_sel("unix:group:docker", "unix", "group:docker");
    ok_sel("unix:path:/usr/bin/envoy", "unix", "path:/usr/bin/envoy");
    ok_sel("unix:path:/opt/my app/bin:x", "unix", "path:/opt/my app/bin:x");
    ok_sel("unix:sha256:" SHA_A, "unix", "sha256:" SHA_A);
}

static void test_selector_syntax(void **state)
{
    (void)state;
    bad_sel("", MID_E_INVALID, "type:value");
    bad_sel("unix", MID_E_INVALID, "type:value");
    bad_sel(":uid:1", MID_E_INVALID, "the type is empty");
    bad_sel("unix:", MID_E_INVALID, "the value is empty");
    bad_sel("k8s:ns:default", MID_E_INVALID, "unknown selector type");
    bad_sel("UNIX:uid:1", MID_E_INVALID, "unknown selector type");
    bad_sel("unix:uid", MID_E_INVALID, "unix:<uid|gid|user|group|path|sha256>:<value>");
    bad_sel("unix:pid:1", MID_E_INVALID, "unknown unix selector key");
    bad_sel("unix:UID:1", MID_E_INVALID, "unknown unix selector key");
}

static void test_selector_ids(void **state)
{
    (void)state;
    const char *bad[] = {"unix:uid:",  "unix:uid:-1",         "unix:uid:+1",
                         "unix:uid:01", "unix:uid:1e3",       "unix:uid:4294967295",
                         "unix:uid:99999999999", "unix:uid: 1", "unix:gid:0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad_sel(bad[i], MID_E_INVALID, "decimal number from 0 to 4294967294");
    bad_sel("unix:gid:abc", MID_E_INVALID, "a gid is");
}

static void test_selector_names(void **state)
{
    (void)state;
    const char *bad[] = {"unix:user:",     "unix:user:-rf",  "unix:user:a b", "unix:user:a/b",
                         "unix:user:a:b", "unix:user:$",     "unix:user:a$b", "unix:group:caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad_sel(bad[i], MID_E_INVALID, "name is 1 to 255");
    char long_name[300];
    memset(long_name, 0, sizeof long_name);
    memcpy(long_name, "unix:user:", 10);
    memset(long_name + 10, 'a', 255);
    ok_sel(long_name, "unix", long_name + 5);
    long_name[10 + 255] = 'a';
    bad_sel(long_name, MID_E_INVALID, "name is 1 to 255");
}

static void test_selector_paths(void **state)
{
    (void)state;
    bad_sel("unix:path:usr/bin/envoy", MID_E_INVALID, "absolute");
    bad_sel("unix:path:/", MID_E_INVALID, "not '/'");
    bad_sel("unix:path:/usr/bin/", MID_E_INVALID, "end with '/'");
    bad_sel("unix:path:/usr//bin", MID_E_INVALID, "'//'");
    bad_sel("unix:path:/usr/./bin", MID_E_INVALID, "'.' or '..'");
    bad_sel("unix:path:/usr/../bin", MID_E_INVALID, "'.' or '..'");
    bad_sel("unix:path:/usr/bin/..", MID_E_INVALID, "'.' or '..'");
    bad_sel("unix:path:/a\nb", MID_E_INVALID, "control bytes");
    bad_sel("unix:path:/a\x7f", MID_E_INVALID, "control bytes");
    ok_sel("unix:path:/usr/bin/.hidden", "unix", "path:/usr/bin/.hidden");
    ok_sel("unix:path:/a/...", "unix", "path:/a/...");

    char *p = malloc(ENTRY_SELECTOR_TEXT_MAX + 10);
    assert_non_null(p);
    memcpy(p, "unix:path:/", 11);
    memset(p + 11, 'a', 4094); /* path of 4095 bytes */
    p[11 + 4094] = '\0';
    ok_sel(p, "unix", p + 5);
    p[11 + 4094] = 'a';
    p[11 + 4095] = '\0'; /* 4096 */
    bad_sel(p, MID_E_INVALID, "over 4095 bytes");
    free(p);
}

static void test_selector_sha256(void **state)
{
    (void)state;
    bad_sel("unix:sha256:" "0123", MID_E_INVALID, "64 lowercase hex");
    bad_sel("unix:sha256:" SHA_A "0", MID_E_INVALID, "64 lowercase hex");
    bad_sel("unix:sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            MID_E_INVALID, "64 lowercase hex");
    bad_sel("unix:sha256:0123456789abcdeg0123456789abcdef0123456789abcdef0123456789abcdef",
            MID_E_INVALID, "64 lowercase hex");
}

static void test_selector_limits_and_messages(void **state)
{
    (void)state;
    /* Too long for the caller's buffer. */
    char small[8];
    entry_selector sel;
    mid_result r = entry_selector_parse("unix:uid:1000", small, sizeof small, &sel);
    assert_int_equal(r.err, MID_E_TOO_LARGE);
    /* Over the absolute limit, without reading past it. */
    size_t n = ENTRY_SELECTOR_TEXT_MAX + 100;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'a', n);
    big[n] = '\0';
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    r = entry_selector_parse(big, buf, n + 1, &sel);
    assert_int_equal(r.err, MID_E_TOO_LARGE);
    free(big);
    free(buf);
    /* A long type. */
    entry_selector t = {"tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt", "v"};
    assert_int_equal(entry_selector_validate(&t).err, MID_E_TOO_LARGE);
    /* Hostile bytes are escaped and the quote is cut. */
    bad_sel("unix:user:a'\x1b[31m", MID_E_INVALID, "a\\x27\\x1b[31m");
    char longv[400];
    memcpy(longv, "unix:uid:", 9);
    memset(longv + 9, '9', 300);
    longv[309] = '\0';
    bad_sel(longv, MID_E_INVALID, "...");
    assert_true(strlen(mid_errmsg()) < 400);
    /* Format into a short buffer. */
    entry_selector ok = {"unix", "uid:1"};
    char out[6];
    assert_int_equal(entry_selector_format(&ok, out, sizeof out).err, MID_E_TOO_LARGE);
}

/* ---- entries ----------------------------------------------------------------- */

static const entry_selector UID1000 = {"unix", "uid:1000"};
static const entry_selector GID50 = {"unix", "gid:50"};
static const entry_selector ENVOY = {"unix", "path:/usr/bin/envoy"};
static const entry_selector USERWEB = {"unix", "user:web"};

static entry make_entry(const entry_selector *sel, size_t n)
{
    entry e = {
        .id = "e1",
        .spiffe_id = "spiffe://example.org/ns/default/sa/web",
        .parent_id = "spiffe://example.org/meshid/agent/join_token/abc",
        .selectors = sel,
        .n_selectors = n,
        .ttl_seconds = 3600,
    };
    return e;
}

static void bad_entry(const entry *e, mid_err code, const char *needle)
{
    mid_result r = entry_validate(e);
    if (r.err != code)
        fail_msg("expected %s, got %s (%s)", mid_errname(code), mid_errname(r.err),
                 mid_errmsg());
    assert_msg_has(needle);
}

static void test_entry_validate(void **state)
{
    (void)state;
    entry_selector two[2] = {UID1000, ENVOY};
    entry e = make_entry(two, 2);
    const char *dns[] = {"web.example.org", "*.web.svc", "localhost", "a-b.c1"};
    e.dns_names = dns;
    e.n_dns_names = 4;
    assert_true(mid_is_ok(entry_validate(&e)));

    entry x = e;
    x.spiffe_id = "spiffe://example.org";
    bad_entry(&x, MID_E_INVALID, "not a workload");
    x = e;
    x.spiffe_id = "spiffe://other.org/w";
    bad_entry(&x, MID_E_INVALID, "different trust domains");
    x = e;
    x.spiffe_id = "https://example.org/w";
    bad_entry(&x, MID_E_INVALID, "spiffe://");
    x = e;
    x.parent_id = NULL;
    bad_entry(&x, MID_E_INVALID, "parent_id is required");
    x = e;
    x.n_selectors = 0;
    bad_entry(&x, MID_E_INVALID, "at least one selector");
    x = e;
    x.n_selectors = ENTRY_SELECTORS_MAX + 1;
    bad_entry(&x, MID_E_TOO_LARGE, "at most 64 selectors");
    entry_selector dup[3] = {UID1000, ENVOY, {"unix", "uid:1000"}};
    x = e;
    x.selectors = dup;
    x.n_selectors = 3;
    bad_entry(&x, MID_E_INVALID, "listed twice");
    entry_selector badsel[1] = {{"unix", "uid:01"}};
    x = e;
    x.selectors = badsel;
    x.n_selectors = 1;
    bad_entry(&x, MID_E_INVALID, "decimal number");
    x = e;
    x.ttl_seconds = -1;
    bad_entry(&x, MID_E_INVALID, "ttl_seconds");
    x = e;
    x.ttl_seconds = ENTRY_TTL_MAX + 1;
    bad_entry(&x, MID_E_INVALID, "ttl_seconds");
    const char *baddns[][1] = {{""}, {"-a.org"}, {"a-.org"}, {"a..org"}, {"a.org."},
                               {"a_b.org"}, {"*"}, {"a.*.org"}, {"a b"}};
    for (size_t i = 0; i < sizeof baddns / sizeof baddns[0]; i++) {
        x = e;
        x.dns_names = baddns[i];
        x.n_dns_names = 1;
        bad_entry(&x, MID_E_INVALID, "invalid DNS name");
    }
    char label[80];
    memset(label, 'a', 64);
    label[64] = '\0';
    const char *longlabel[1] = {label};
    x = e;
    x.dns_names = longlabel;
    x.n_dns_names = 1;
    bad_entry(&x, MID_E_INVALID, "invalid DNS name");
    x = e;
    x.n_dns_names = ENTRY_DNS_NAMES_MAX + 1;
    bad_entry(&x, MID_E_TOO_LARGE, "DNS names");
}

static void test_match_subset(void **state)
{
    (void)state;
    entry_selector es[2] = {UID1000, ENVOY};
    entry e = make_entry(es, 2);
    /* The workload has more selectors than the entry, in another order. */
    entry_selector have[4] = {USERWEB, ENVOY, GID50, UID1000};
    assert_true(entry_matches(&e, have, 4));
    /* Missing one of the entry's selectors: no match. */
    assert_false(entry_matches(&e, have, 3));
    entry_selector only_uid[1] = {UID1000};
    assert_false(entry_matches(&e, only_uid, 1));
    /* No selectors discovered. */
    assert_false(entry_matches(&e, NULL, 0));
    /* Equality is exact: same key, other value; same value, other type. */
    entry_selector near[2] = {{"unix", "uid:10000"}, {"unixx", "path:/usr/bin/envoy"}};
    entry_selector near2[2] = {UID1000, {"unix", "path:/usr/bin/envoy2"}};
    assert_false(entry_matches(&e, near, 2));
    assert_false(entry_matches(&e, near2, 2));
    /* An entry without selectors matches nothing, not everything. */
    entry empty = make_entry(NULL, 0);
    assert_false(entry_matches(&empty, have, 4));
}

static void test_match_all(void **state)
{
    (void)state;
    entry_selector s_uid[1] = {UID1000};
    entry_selector s_uid_envoy[2] = {ENVOY, UID1000};
    entry_selector s_gid[1] = {GID50};
    entry_selector s_user_gid[2] = {USERWEB, GID50};
    entry entries[4] = {make_entry(s_uid, 1), make_entry(s_uid_envoy, 2), make_entry(s_gid, 1),
                        make_entry(s_user_gid, 2)};
    size_t idx[4], n = 99;

    entry_selector w1[2] = {UID1000, ENVOY}; /* entries 0 and 1 */
    entry_match_all(entries, 4, w1, 2, idx, &n);
    assert_int_equal(n, 2);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);

    entry_selector w2[3] = {GID50, UID1000, USERWEB}; /* 0, 2, 3 */
    entry_match_all(entries, 4, w2, 3, idx, &n);
    assert_int_equal(n, 3);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 2);
    assert_int_equal(idx[2], 3);

    entry_selector w3[1] = {{"unix", "uid:0"}}; /* none */
    entry_match_all(entries, 4, w3, 1, idx, &n);
    assert_int_equal(n, 0);

    entry_match_all(entries, 0, w1, 2, idx, &n);
    assert_int_equal(n, 0);
}

static void test_match_parsed_selectors(void **state)
{
    (void)state;
    /* What the agent does: parse the attestor's "unix:..." strings, match. */
    const char *found[] = {"unix:uid:1000", "unix:gid:50", "unix:path:/usr/bin/envoy"};
    char buf[3][128];
    entry_selector have[3];
    for (size_t i = 0; i < 3; i++)
        assert_true(mid_is_ok(entry_selector_parse(found[i], buf[i], sizeof buf[i], &have[i])));
    entry_selector es[2] = {ENVOY, UID1000};
    entry e = make_entry(es, 2);
    assert_true(entry_matches(&e, have, 3));
}

int run_entry_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selector_valid),
        cmocka_unit_test(test_selector_syntax),
        cmocka_unit_test(test_selector_ids),
        cmocka_unit_test(test_selector_names),
        cmocka_unit_test(test_selector_paths),
        cmocka_unit_test(test_selector_sha256),
        cmocka_unit_test(test_selector_limits_and_messages),
        cmocka_unit_test(test_entry_validate),
        cmocka_unit_test(test_match_subset),
        cmocka_unit_test(test_match_all),
        cmocka_unit_test(test_match_parsed_selectors),
    };
    return cmocka_run_group_tests_name("entry", tests, NULL, NULL);
}
