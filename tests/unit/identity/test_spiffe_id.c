/* Unit tests for identity/spiffe_id.c: every rule of the SPIFFE ID
 * specification as implemented, with valid and invalid cases. Each rejection
 * is checked for its error code and for the rule named in its message.
 * Run by tests/unit/identity/main.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "identity/spiffe_id.h"
#include "lib/result.h"
#include "tests/unit/identity/identity_tests.h"

/* ---- helpers ------------------------------------------------------------- */

static void assert_msg_has(const char *needle)
{
    const char *msg = mid_errmsg();
    if (strstr(msg, needle) == NULL)
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, needle);
}

/* Parses `len` bytes from a heap copy exactly `len` long, so ASan catches any
 * read past the end. */
static mid_result parse_exact(const char *s, size_t len, spiffe_id **out)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, s, len);
    mid_result r = spiffe_id_parse(copy, len, out);
    free(copy);
    return r;
}

static void ok_id(const char *s)
{
    spiffe_id *id = NULL;
    mid_errclear();
    mid_result r = parse_exact(s, strlen(s), &id);
    if (!mid_is_ok(r)) fail_msg("'%s' rejected: %s", s, mid_errmsg());
    assert_non_null(id);
    assert_string_equal(spiffe_id_str(id), s);
    spiffe_id_free(id);
}

static void bad_id_len(const char *s, size_t len, mid_err want, const char *needle)
{
    spiffe_id *id = (spiffe_id *)(uintptr_t)1; /* must be reset to NULL */
    mid_errclear();
    mid_result r = parse_exact(s, len, &id);
    if (mid_is_ok(r)) fail_msg("'%.*s' accepted", (int)len, s);
    assert_null(id);
    assert_int_equal(r.err, want);
    assert_int_equal(mid_errcode(), want);
    assert_msg_has(needle);
    assert_msg_has("invalid SPIFFE ID '");
}

static void bad_id(const char *s, mid_err want, const char *needle)
{
    bad_id_len(s, strlen(s), want, needle);
}

/* A string of `n` copies of `ch`, malloc'd. */
static char *repeat(char ch, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

/* "spiffe://example.org/aaa..." exactly `total` bytes long, malloc'd. */
static char *id_of_length(size_t total)
{
    static const char prefix[] = "spiffe://example.org/";
    size_t plen = sizeof prefix - 1;
    char *s = repeat('a', total);
    memcpy(s, prefix, plen);
    return s;
}

#define RULE_TD_CHARS                                                                       \
    "trust domain characters are limited to lowercase letters, digits, dots, dashes and " \
    "underscores"
#define RULE_PATH_CHARS                                                                    \
    "path segment characters are limited to letters, digits, dots, dashes and underscores"

/* ---- valid IDs ------------------------------------------------------------ */

static void test_valid_ids(void **state)
{
    (void)state;
    ok_id("spiffe://example.org");
    ok_id("spiffe://example.org/ns/default/sa/web");
    ok_id("spiffe://a");
    ok_id("spiffe://a-b_c.d0123456789/x");
    ok_id("spiffe://abcdefghijklmnopqrstuvwxyz0123456789._-/p");
    ok_id("spiffe://td/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
    ok_id("spiffe://td/...");  /* only "." and ".." are special */
    ok_id("spiffe://td/.a/a./..b/b..");
    ok_id("spiffe://td/_/-/a");
}

static void test_accessors(void **state)
{
    (void)state;
    spiffe_id *id = NULL;
    const char *s = "spiffe://example.org/ns/prod/sa/api";
    assert_true(mid_is_ok(spiffe_id_parse(s, strlen(s), &id)));
    assert_string_equal(spiffe_id_str(id), s);
    assert_string_equal(spiffe_id_trust_domain(id), "example.org");
    assert_string_equal(spiffe_id_path(id), "/ns/prod/sa/api");
    assert_true(spiffe_id_is_workload(id));
    spiffe_id_free(id);

    s = "spiffe://example.org";
    assert_true(mid_is_ok(spiffe_id_parse(s, strlen(s), &id)));
    assert_string_equal(spiffe_id_trust_domain(id), "example.org");
    assert_string_equal(spiffe_id_path(id), "");
    assert_false(spiffe_id_is_workload(id));
    spiffe_id_free(id);
    spiffe_id_free(NULL);
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    /* Only `len` bytes count: the rest of the buffer is ignored. */
    const char *s = "spiffe://example.org/abc";
    spiffe_id *id = NULL;
    assert_true(mid_is_ok(parse_exact(s, 20, &id)));
    assert_string_equal(spiffe_id_str(id), "spiffe://example.org");
    spiffe_id_free(id);
    assert_true(mid_is_ok(parse_exact(s, 22, &id)));
    assert_string_equal(spiffe_id_path(id), "/a");
    spiffe_id_free(id);
}

/* ---- empty, size, NUL ----------------------------------------------------- */

static void test_empty(void **state)
{
    (void)state;
    bad_id("", MID_E_INVALID, "must not be empty");
    spiffe_id *id = NULL;
    assert_int_equal(spiffe_id_parse(NULL, 0, &id).err, MID_E_INVALID);
    assert_msg_has("must not be empty");
    assert_null(id);
}

static void test_max_length(void **state)
{
    (void)state;
    char *s = id_of_length(SPIFFE_ID_MAX);
    assert_int_equal(strlen(s), 2048);
    ok_id(s);
    free(s);

    s = id_of_length(SPIFFE_ID_MAX + 1);
    bad_id(s, MID_E_TOO_LARGE, "over the limit of 2048 bytes");
    /* The message quotes only a bounded prefix of the input. */
    assert_true(strlen(mid_errmsg()) < 300);
    assert_msg_has("...'");
    free(s);

    /* Multi-segment at exactly the limit. */
    s = id_of_length(SPIFFE_ID_MAX);
    for (size_t i = 30; i < SPIFFE_ID_MAX - 1; i += 10) s[i] = '/';
    ok_id(s);
    free(s);

    s = id_of_length(100000);
    bad_id(s, MID_E_TOO_LARGE, "over the limit");
    free(s);
}

static void test_trust_domain_length(void **state)
{
    (void)state;
    char buf[400];
    char *td = repeat('a', SPIFFE_TD_MAX);
    snprintf(buf, sizeof buf, "spiffe://%s/x", td);
    ok_id(buf);
    snprintf(buf, sizeof buf, "spiffe://%s", td);
    ok_id(buf);
    free(td);

    td = repeat('a', SPIFFE_TD_MAX + 1);
    snprintf(buf, sizeof buf, "spiffe://%s/x", td);
    bad_id(buf, MID_E_TOO_LARGE, "the trust domain is over the limit of 255 bytes");
    snprintf(buf, sizeof buf, "spiffe://%s", td);
    bad_id(buf, MID_E_TOO_LARGE, "trust domain is over the limit of 255 bytes");
    free(td);
}

static void test_embedded_nul(void **state)
{
    (void)state;
    static const char a[] = "spiffe://example.org/a\0b";
    bad_id_len(a, sizeof a - 1, MID_E_INVALID, "must not contain a NUL byte (at offset 22)");
    static const char b[] = "spiffe://exa\0mple.org";
    bad_id_len(b, sizeof b - 1, MID_E_INVALID, "NUL byte");
    static const char c[] = "spiffe://example.org\0";
    bad_id_len(c, sizeof c - 1, MID_E_INVALID, "NUL byte");
    /* The quoted input shows the NUL escaped. */
    assert_msg_has("\\x00");
}

/* ---- scheme --------------------------------------------------------------- */

static void test_scheme(void **state)
{
    (void)state;
    bad_id("example.org/ns/a", MID_E_INVALID, "must start with \"spiffe://\"");
    bad_id("example.org", MID_E_INVALID, "must start with \"spiffe://\"");
    bad_id("spiffe//example.org", MID_E_INVALID, "must start with \"spiffe://\"");
    bad_id("/spiffe://example.org", MID_E_INVALID, "must start with \"spiffe://\"");
    bad_id("https://example.org/a", MID_E_INVALID, "scheme must be \"spiffe://\"");
    bad_id("spiffe:/example.org/a", MID_E_INVALID, "scheme must be \"spiffe://\"");
    bad_id("spiffe:example.org", MID_E_INVALID, "scheme must be \"spiffe://\"");
    bad_id("spiffes://example.org", MID_E_INVALID, "scheme must be \"spiffe://\"");
    bad_id("spiffe", MID_E_INVALID, "must start with \"spiffe://\"");
    bad_id("spiffe:", MID_E_INVALID, "scheme must be \"spiffe://\"");
    bad_id(" spiffe://example.org", MID_E_INVALID, "scheme must be \"spiffe://\"");
}

static void test_scheme_uppercase(void **state)
{
    (void)state;
    bad_id("SPIFFE://example.org/a", MID_E_INVALID,
           "scheme must be written in lower case as \"spiffe://\"");
    bad_id("Spiffe://example.org", MID_E_INVALID, "lower case");
    bad_id("spiffE://example.org", MID_E_INVALID, "lower case");
}

/* ---- trust domain --------------------------------------------------------- */

static void test_trust_domain_missing(void **state)
{
    (void)state;
    bad_id("spiffe://", MID_E_INVALID, "the trust domain is missing");
    bad_id("spiffe:///", MID_E_INVALID, "the trust domain is missing");
    bad_id("spiffe:///ns/a", MID_E_INVALID, "the trust domain is missing");
}

static void test_trust_domain_uppercase(void **state)
{
    (void)state;
    bad_id("spiffe://Ex.org/a", MID_E_INVALID, RULE_TD_CHARS);
    /* The full message, as promised in the header. */
    assert_string_equal(mid_errmsg(),
                        "invalid SPIFFE ID 'spiffe://Ex.org/a': " RULE_TD_CHARS
                        " (upper case 'E' at offset 9)");
    bad_id("spiffe://example.ORG", MID_E_INVALID, "upper case 'O' at offset 17");
}

static void test_trust_domain_chars(void **state)
{
    (void)state;
    bad_id("spiffe://exa mple.org", MID_E_INVALID, RULE_TD_CHARS " (' ' at offset 12)");
    bad_id("spiffe://ex+ample.org", MID_E_INVALID, RULE_TD_CHARS);
    bad_id("spiffe://ex~ample.org", MID_E_INVALID, RULE_TD_CHARS);
    bad_id("spiffe://ex!ample.org", MID_E_INVALID, RULE_TD_CHARS);
    bad_id("spiffe://ex\\ample.org", MID_E_INVALID, RULE_TD_CHARS " (0x5c at offset 11)");
    bad_id("spiffe://\xc3\xa9xample.org", MID_E_INVALID, RULE_TD_CHARS " (0xc3 at offset 9)");
    bad_id("spiffe://ex\tample.org", MID_E_INVALID, "0x09");
}

static void test_trust_domain_percent(void **state)
{
    (void)state;
    bad_id("spiffe://ex%41mple.org/a", MID_E_INVALID,
           "the trust domain must not be percent-encoded");
    bad_id("spiffe://%65xample.org", MID_E_INVALID, "percent-encoded");
}

static void test_trust_domain_port(void **state)
{
    (void)state;
    bad_id("spiffe://example.org:8443/a", MID_E_INVALID,
           "the trust domain must not contain a port (':' at offset 20)");
    bad_id("spiffe://example.org:", MID_E_INVALID, "must not contain a port");
}

static void test_trust_domain_userinfo(void **state)
{
    (void)state;
    bad_id("spiffe://user@example.org/a", MID_E_INVALID,
           "the trust domain must not contain userinfo ('@' at offset 13)");
    bad_id("spiffe://user:secret@example.org/a", MID_E_INVALID,
           "must not contain userinfo");
    bad_id("spiffe://@example.org", MID_E_INVALID, "userinfo");
}

static void test_trust_domain_ip(void **state)
{
    (void)state;
    ok_id("spiffe://192.168.0.1/ns/a");
    ok_id("spiffe://10.0.0.1");
    bad_id("spiffe://[::1]/a", MID_E_INVALID, "must not be an IPv6 address literal");
    bad_id("spiffe://[2001:db8::1]", MID_E_INVALID, "IPv6");
    /* Bare IPv6 without brackets: ':' is a port delimiter in a URI. */
    bad_id("spiffe://2001:db8::1", MID_E_INVALID, "port");
}

/* ---- query and fragment --------------------------------------------------- */

static void test_query(void **state)
{
    (void)state;
    bad_id("spiffe://example.org/a?x=1", MID_E_INVALID, "a query is not allowed ('?' at offset 22)");
    bad_id("spiffe://example.org?x=1", MID_E_INVALID, "a query is not allowed ('?' at offset");
    bad_id("spiffe://example.org/a/?", MID_E_INVALID, "query");
}

static void test_fragment(void **state)
{
    (void)state;
    bad_id("spiffe://example.org/a#frag", MID_E_INVALID, "a fragment is not allowed ('#' at offset");
    bad_id("spiffe://example.org#frag", MID_E_INVALID, "a fragment is not allowed ('#' at offset");
    bad_id("spiffe://example.org/a#b?c", MID_E_INVALID, "fragment");
}

/* ---- path ------------------------------------------------------------------ */

static void test_path_empty_segment(void **state)
{
    (void)state;
    bad_id("spiffe://example.org//a", MID_E_INVALID,
           "path segments must not be empty ('//' at offset 20)");
    bad_id("spiffe://example.org/a//b", MID_E_INVALID, "must not be empty");
    bad_id("spiffe://example.org///", MID_E_INVALID, "must not be empty");
}

static void test_path_dot_segments(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "spiffe://example.org/.",      "spiffe://example.org/..",
        "spiffe://example.org/a/./b",  "spiffe://example.org/a/../b",
        "spiffe://example.org/a/..",   "spiffe://example.org/./a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad_id(bad[i], MID_E_INVALID, "path segments must not be '.' or '..'");
}

static void test_path_trailing_slash(void **state)
{
    (void)state;
    bad_id("spiffe://example.org/", MID_E_INVALID, "the path must not end with '/'");
    bad_id("spiffe://example.org/a/", MID_E_INVALID, "the path must not end with '/'");
    bad_id("spiffe://example.org/a/b/", MID_E_INVALID, "must not end with '/'");
}

static void test_path_percent(void **state)
{
    (void)state;
    bad_id("spiffe://example.org/a%20b", MID_E_INVALID,
           "the path must not be percent-encoded ('%' at offset 22)");
    bad_id("spiffe://example.org/%2e%2e", MID_E_INVALID, "percent-encoded");
}

static void test_path_chars(void **state)
{
    (void)state;
    bad_id("spiffe://example.org/a b", MID_E_INVALID, RULE_PATH_CHARS " (' ' at offset 22)");
    bad_id("spiffe://example.org/a+b", MID_E_INVALID, RULE_PATH_CHARS);
    bad_id("spiffe://example.org/a~b", MID_E_INVALID, RULE_PATH_CHARS);
    bad_id("spiffe://example.org/a:b", MID_E_INVALID, RULE_PATH_CHARS);
    bad_id("spiffe://example.org/a@b", MID_E_INVALID, RULE_PATH_CHARS);
    bad_id("spiffe://example.org/a=b", MID_E_INVALID, RULE_PATH_CHARS);
    bad_id("spiffe://example.org/a\\b", MID_E_INVALID, RULE_PATH_CHARS " (0x5c");
    bad_id("spiffe://example.org/caf\xc3\xa9", MID_E_INVALID, RULE_PATH_CHARS " (0xc3");
    bad_id("spiffe://example.org/a\nb", MID_E_INVALID, RULE_PATH_CHARS " (0x0a");
}

/* ---- messages -------------------------------------------------------------- */

static void test_message_escapes_and_truncates(void **state)
{
    (void)state;
    /* Control bytes in the input never reach the message raw. */
    bad_id("spiffe://example.org/a\r\nlevel=error forged", MID_E_INVALID, "\\x0d\\x0a");
    assert_null(strchr(mid_errmsg(), '\n'));
    assert_null(strchr(mid_errmsg(), '\r'));
    bad_id("spiffe://example.org/it's", MID_E_INVALID, "it\\x27s");

    /* A long bad ID is quoted only in part. */
    char *s = id_of_length(1500);
    s[1400] = '?';
    bad_id(s, MID_E_INVALID, "query");
    const char *msg = mid_errmsg();
    assert_true(strlen(msg) < 250);
    assert_non_null(strstr(msg, "...'"));
    free(s);
}

/* ---- member_of ------------------------------------------------------------- */

static void test_member_of(void **state)
{
    (void)state;
    spiffe_id *id = NULL;
    const char *s = "spiffe://example.org/ns/a";
    assert_true(mid_is_ok(spiffe_id_parse(s, strlen(s), &id)));
    assert_true(spiffe_id_member_of(id, "example.org"));
    assert_false(spiffe_id_member_of(id, "example.or"));
    assert_false(spiffe_id_member_of(id, "example.org.evil"));
    assert_false(spiffe_id_member_of(id, "evil.example.org"));
    assert_false(spiffe_id_member_of(id, "EXAMPLE.ORG"));
    assert_false(spiffe_id_member_of(id, "spiffe://example.org"));
    assert_false(spiffe_id_member_of(id, ""));
    assert_false(spiffe_id_member_of(id, NULL));
    assert_false(spiffe_id_member_of(NULL, "example.org"));
    spiffe_id_free(id);
}

/* ---- from_parts ------------------------------------------------------------ */

static void ok_parts(const char *td, const char *path, const char *want)
{
    spiffe_id *id = NULL;
    mid_result r = spiffe_id_from_parts(td, path, &id);
    if (!mid_is_ok(r)) fail_msg("from_parts(%s, %s) rejected: %s", td, path, mid_errmsg());
    assert_string_equal(spiffe_id_str(id), want);
    assert_string_equal(spiffe_id_trust_domain(id), td);
    assert_string_equal(spiffe_id_path(id), path ? path : "");
    spiffe_id_free(id);
}

static void bad_parts(const char *td, const char *path, mid_err want, const char *needle)
{
    spiffe_id *id = (spiffe_id *)(uintptr_t)1;
    mid_errclear();
    mid_result r = spiffe_id_from_parts(td, path, &id);
    if (mid_is_ok(r)) fail_msg("from_parts(%s, %s) accepted", td, path);
    assert_null(id);
    assert_int_equal(r.err, want);
    assert_msg_has(needle);
}

static void test_from_parts(void **state)
{
    (void)state;
    ok_parts("example.org", "/ns/default/sa/web", "spiffe://example.org/ns/default/sa/web");
    ok_parts("example.org", "", "spiffe://example.org");
    ok_parts("example.org", NULL, "spiffe://example.org");
    ok_parts("10.0.0.1", "/A_b-c.d", "spiffe://10.0.0.1/A_b-c.d");

    spiffe_id *id = NULL;
    assert_true(mid_is_ok(spiffe_id_from_parts("example.org", "", &id)));
    assert_false(spiffe_id_is_workload(id));
    spiffe_id_free(id);

    bad_parts("Example.org", "/a", MID_E_INVALID, RULE_TD_CHARS);
    assert_msg_has("invalid trust domain 'Example.org'");
    bad_parts("", "/a", MID_E_INVALID, "the trust domain is missing");
    bad_parts(NULL, "/a", MID_E_INVALID, "the trust domain is missing");
    bad_parts("spiffe://example.org", "", MID_E_INVALID, "must not include a scheme");
    bad_parts("example.org/x", "", MID_E_INVALID, "must not contain '/' or a path");
    bad_parts("example.org:80", "", MID_E_INVALID, "port");
    bad_parts("u@example.org", "", MID_E_INVALID, "userinfo");
    bad_parts("[::1]", "", MID_E_INVALID, "IPv6");
    bad_parts("ex%41.org", "", MID_E_INVALID, "percent-encoded");
    bad_parts("example.org", "a", MID_E_INVALID, "the path must be empty or start with '/'");
    bad_parts("example.org", "/", MID_E_INVALID, "must not end with '/'");
    bad_parts("example.org", "/a/", MID_E_INVALID, "must not end with '/'");
    bad_parts("example.org", "/a//b", MID_E_INVALID, "must not be empty");
    bad_parts("example.org", "/..", MID_E_INVALID, "'.' or '..'");
    bad_parts("example.org", "/a?b", MID_E_INVALID, "query");
    bad_parts("example.org", "/a#b", MID_E_INVALID, "fragment");
    bad_parts("example.org", "/a%2F", MID_E_INVALID, "percent-encoded");
    bad_parts("example.org", "/a b", MID_E_INVALID, RULE_PATH_CHARS);
    assert_msg_has("invalid SPIFFE ID path '/a b'");
}

static void test_from_parts_lengths(void **state)
{
    (void)state;
    char *td = repeat('t', SPIFFE_TD_MAX);
    /* 9 + 255 + path = 2048 exactly. */
    char *path = repeat('p', SPIFFE_ID_MAX - 9 - SPIFFE_TD_MAX);
    path[0] = '/';
    spiffe_id *id = NULL;
    assert_true(mid_is_ok(spiffe_id_from_parts(td, path, &id)));
    assert_int_equal(strlen(spiffe_id_str(id)), SPIFFE_ID_MAX);
    /* What from_parts builds, parse accepts. */
    spiffe_id *again = NULL;
    assert_true(mid_is_ok(spiffe_id_parse(spiffe_id_str(id), SPIFFE_ID_MAX, &again)));
    spiffe_id_free(again);
    spiffe_id_free(id);
    free(path);

    path = repeat('p', SPIFFE_ID_MAX - 9 - SPIFFE_TD_MAX + 1);
    path[0] = '/';
    bad_parts(td, path, MID_E_TOO_LARGE, "over the limit of 2048 bytes");
    free(path);
    free(td);

    td = repeat('t', SPIFFE_TD_MAX + 1);
    bad_parts(td, "/a", MID_E_TOO_LARGE, "over the limit of 255 bytes");
    free(td);

    /* Huge inputs are rejected without scanning them whole. */
    td = repeat('t', 100000);
    bad_parts(td, "", MID_E_TOO_LARGE, "over the limit");
    free(td);
    path = repeat('p', 100000);
    path[0] = '/';
    bad_parts("example.org", path, MID_E_TOO_LARGE, "over the limit of 2048 bytes");
    free(path);
}

/* ---- trust_domain_parse ---------------------------------------------------- */

static void ok_td(const char *in, const char *want)
{
    char out[SPIFFE_TD_MAX + 1];
    mid_result r = spiffe_trust_domain_parse(in, out);
    if (!mid_is_ok(r)) fail_msg("trust domain '%s' rejected: %s", in, mid_errmsg());
    assert_string_equal(out, want);
}

static void bad_td(const char *in, mid_err want, const char *needle)
{
    char out[SPIFFE_TD_MAX + 1];
    memset(out, 'x', sizeof out);
    mid_errclear();
    mid_result r = spiffe_trust_domain_parse(in, out);
    if (mid_is_ok(r)) fail_msg("trust domain '%s' accepted", in);
    assert_int_equal(r.err, want);
    assert_string_equal(out, "");
    assert_msg_has(needle);
    assert_msg_has("invalid trust domain '");
}

static void test_trust_domain_parse(void **state)
{
    (void)state;
    ok_td("example.org", "example.org");
    ok_td("spiffe://example.org", "example.org");
    ok_td("10.0.0.1", "10.0.0.1");
    ok_td("a_b-c.d", "a_b-c.d");

    bad_td("", MID_E_INVALID, "the trust domain is missing");
    bad_td(NULL, MID_E_INVALID, "the trust domain is missing");
    bad_td("spiffe://", MID_E_INVALID, "the trust domain is missing");
    bad_td("spiffe://example.org/", MID_E_INVALID, "must not contain '/' or a path");
    bad_td("spiffe://example.org/ns/a", MID_E_INVALID, "must not contain '/' or a path");
    bad_td("example.org/a", MID_E_INVALID, "must not contain '/' or a path");
    bad_td("Example.org", MID_E_INVALID, RULE_TD_CHARS);
    bad_td("SPIFFE://example.org", MID_E_INVALID, "lower case");
    bad_td("https://example.org", MID_E_INVALID, "scheme must be \"spiffe://\"");
    bad_td("example.org:443", MID_E_INVALID, "port");
    bad_td("user@example.org", MID_E_INVALID, "userinfo");
    bad_td("[::1]", MID_E_INVALID, "IPv6");
    bad_td("ex%41mple.org", MID_E_INVALID, "percent-encoded");
    bad_td("example.org?x", MID_E_INVALID, "query");
    bad_td("spiffe://example.org#x", MID_E_INVALID, "fragment");
    bad_td("exa mple.org", MID_E_INVALID, RULE_TD_CHARS);
}

static void test_trust_domain_parse_lengths(void **state)
{
    (void)state;
    char *td = repeat('a', SPIFFE_TD_MAX);
    ok_td(td, td);
    char buf[300];
    snprintf(buf, sizeof buf, "spiffe://%s", td);
    ok_td(buf, td);
    free(td);

    td = repeat('a', SPIFFE_TD_MAX + 1);
    bad_td(td, MID_E_TOO_LARGE, "the trust domain is over the limit of 255 bytes");
    free(td);

    td = repeat('a', 100000);
    bad_td(td, MID_E_TOO_LARGE, "over the limit of 255 bytes");
    assert_true(strlen(mid_errmsg()) < 300);
    free(td);
}

int run_spiffe_id_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_ids),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_max_length),
        cmocka_unit_test(test_trust_domain_length),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_scheme),
        cmocka_unit_test(test_scheme_uppercase),
        cmocka_unit_test(test_trust_domain_missing),
        cmocka_unit_test(test_trust_domain_uppercase),
        cmocka_unit_test(test_trust_domain_chars),
        cmocka_unit_test(test_trust_domain_percent),
        cmocka_unit_test(test_trust_domain_port),
        cmocka_unit_test(test_trust_domain_userinfo),
        cmocka_unit_test(test_trust_domain_ip),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_fragment),
        cmocka_unit_test(test_path_empty_segment),
        cmocka_unit_test(test_path_dot_segments),
        cmocka_unit_test(test_path_trailing_slash),
        cmocka_unit_test(test_path_percent),
        cmocka_unit_test(test_path_chars),
        cmocka_unit_test(test_message_escapes_and_truncates),
        cmocka_unit_test(test_member_of),
        cmocka_unit_test(test_from_parts),
        cmocka_unit_test(test_from_parts_lengths),
        cmocka_unit_test(test_trust_domain_parse),
        cmocka_unit_test(test_trust_domain_parse_lengths),
    };
    return cmocka_run_group_tests_name("spiffe_id", tests, NULL, NULL);
}
