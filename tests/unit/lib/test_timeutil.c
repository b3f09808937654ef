/* Unit tests for lib/timeutil.c: durations, RFC 3339 parsing, relative times
 * and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lib/timeutil.h"
#include "tests/unit/lib/lib_tests.h"

#define MAX_DURATION (100LL * 366 * 86400)

static void dur_ok(const char *s, int64_t want)
{
    int64_t got = -1;
    mid_result r = time_parse_duration(s, &got);
    if (!mid_is_ok(r)) fail_msg("duration '%s' rejected: %s", s, mid_errmsg());
    if (got != want) fail_msg("duration '%s' = %lld, want %lld", s, (long long)got, (long long)want);
}

static void dur_bad(const char *s, mid_err want, const char *needle)
{
    int64_t got = -1;
    mid_result r = time_parse_duration(s, &got);
    if (mid_is_ok(r)) fail_msg("duration '%s' accepted as %lld", s ? s : "(null)", (long long)got);
    assert_int_equal(r.err, want);
    assert_int_equal(got, -1); /* untouched on failure */
    if (strstr(mid_errmsg(), needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", mid_errmsg(), needle);
}

static void when_ok(const char *s, int64_t now, int64_t want)
{
    int64_t got = -1;
    mid_result r = time_parse_when(s, now, &got);
    if (!mid_is_ok(r)) fail_msg("time '%s' rejected: %s", s, mid_errmsg());
    if (got != want) fail_msg("time '%s' = %lld, want %lld", s, (long long)got, (long long)want);
}

static void when_bad(const char *s, const char *needle)
{
    int64_t got = -1;
    mid_result r = time_parse_when(s, 1000000, &got);
    if (mid_is_ok(r)) fail_msg("time '%s' accepted as %lld", s ? s : "(null)", (long long)got);
    assert_int_equal(r.err, MID_E_INVALID);
    assert_int_equal(got, -1);
    if (strstr(mid_errmsg(), needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", mid_errmsg(), needle);
}

/* ---- durations -------------------------------------------------------------- */

static void test_duration_units(void **state)
{
    (void)state;
    dur_ok("90s", 90);
    dur_ok("15m", 900);
    dur_ok("1h", 3600);
    dur_ok("1h30m", 5400);
    dur_ok("2d", 172800);
    dur_ok("1w", 604800);
    dur_ok("1d2h3m4s", 86400 + 7200 + 180 + 4);
    dur_ok("45", 45);      /* bare number: seconds */
    dur_ok("1h30", 3630);  /* a trailing bare number is seconds too */
    dur_ok("0001m", 60);   /* leading zeros */
    dur_ok("0s1s", 1);     /* zero parts are fine if the total is positive */
}

static void test_duration_bad(void **state)
{
    (void)state;
    dur_bad("", MID_E_INVALID, "empty duration");
    dur_bad(NULL, MID_E_INVALID, "empty duration");
    dur_bad("h", MID_E_INVALID, "bad duration 'h'");
    dur_bad("1x", MID_E_INVALID, "bad duration unit in '1x'");
    dur_bad("1H", MID_E_INVALID, "bad duration unit");
    dur_bad("1y", MID_E_INVALID, "bad duration unit");
    dur_bad("1.5h", MID_E_INVALID, "bad duration unit");
    dur_bad("-1h", MID_E_INVALID, "bad duration");
    dur_bad("+1h", MID_E_INVALID, "bad duration");
    dur_bad(" 1h", MID_E_INVALID, "bad duration");
    dur_bad("1h ", MID_E_INVALID, "bad duration");
    dur_bad("1hh", MID_E_INVALID, "bad duration");
    dur_bad("1 h", MID_E_INVALID, "bad duration unit");
}

static void test_duration_zero(void **state)
{
    (void)state;
    dur_bad("0", MID_E_INVALID, "must be positive");
    dur_bad("0s", MID_E_INVALID, "must be positive");
    dur_bad("0h0m", MID_E_INVALID, "must be positive");
    dur_bad("000w", MID_E_INVALID, "must be positive");
}

static void test_duration_overflow(void **state)
{
    (void)state;
    char buf[64];
    /* The limit: 100 years of 366 days. */
    snprintf(buf, sizeof buf, "%llds", (long long)MAX_DURATION);
    dur_ok(buf, MAX_DURATION);
    snprintf(buf, sizeof buf, "%llds", (long long)MAX_DURATION + 1);
    dur_bad(buf, MID_E_TOO_LARGE, "too long");
    dur_ok("36600d", MAX_DURATION);
    dur_bad("36601d", MID_E_TOO_LARGE, "too long");
    dur_bad("36600d1s", MID_E_TOO_LARGE, "too long");
    dur_ok("5228w", 5228LL * 7 * 86400);
    dur_bad("5229w", MID_E_TOO_LARGE, "too long");
    /* Far past int64: must not wrap around. */
    dur_bad("9223372036854775808s", MID_E_TOO_LARGE, "too long");
    dur_bad("99999999999999999999999999999999h", MID_E_TOO_LARGE, "too long");
    dur_bad("18446744073709551617", MID_E_TOO_LARGE, "too long");
    /* Many parts, each under the limit, adding up past it. */
    dur_bad("30000d30000d", MID_E_TOO_LARGE, "too long");
}

/* ---- RFC 3339 ------------------------------------------------------------------ */

static void test_rfc3339_basic(void **state)
{
    (void)state;
    when_ok("1970-01-01T00:00:00Z", 0, 0);
    when_ok("2026-01-02T03:04:05Z", 0, 1767323045);
    when_ok("2026-01-02t03:04:05z", 0, 1767323045);
    when_ok("2026-01-02 03:04:05Z", 0, 1767323045);
    when_ok("1969-12-31T23:59:59Z", 0, -1);
    when_ok("1900-01-01T00:00:00Z", 0, -2208988800LL);
    when_ok("9999-12-31T23:59:59Z", 0, 253402300799LL);
    /* `now` does not matter for absolute times. */
    when_ok("2026-01-02T03:04:05Z", 123456, 1767323045);
}

static void test_rfc3339_offsets(void **state)
{
    (void)state;
    when_ok("2026-01-02T05:04:05+02:00", 0, 1767323045);
    when_ok("2026-01-01T22:34:05-04:30", 0, 1767323045);
    when_ok("2026-01-02T03:04:05+00:00", 0, 1767323045);
    when_ok("2026-01-02T03:04:05-00:00", 0, 1767323045);
    when_ok("2026-01-02T03:04:05+23:59", 0, 1767323045 - 23 * 3600 - 59 * 60);
    when_bad("2026-01-02T03:04:05+24:00", "bad offset");
    when_bad("2026-01-02T03:04:05+02:60", "bad offset");
    when_bad("2026-01-02T03:04:05+2:00", "bad offset");
    when_bad("2026-01-02T03:04:05+0200", "bad offset");
    when_bad("2026-01-02T03:04:05+02", "bad offset");
    when_bad("2026-01-02T03:04:05+", "bad offset");
}

static void test_rfc3339_fractions(void **state)
{
    (void)state;
    when_ok("2026-01-02T03:04:05.5Z", 0, 1767323045);
    when_ok("2026-01-02T03:04:05.999999999Z", 0, 1767323045);
    when_ok("2026-01-02T03:04:05.123456789012345+01:00", 0, 1767323045 - 3600);
    when_bad("2026-01-02T03:04:05.Z", "bad fraction");
    when_bad("2026-01-02T03:04:05.", "bad fraction");
    when_bad("2026-01-02T03:04:05,5Z", "needs a zone");
}

static void test_rfc3339_leap(void **state)
{
    (void)state;
    when_ok("2024-02-29T12:00:00Z", 0, 1709208000);
    when_ok("2000-02-29T00:00:00Z", 0, 951782400);
    /* Feb 29 only exists in leap years (2100 is not one, 2000 was). */
    when_bad("2023-02-29T00:00:00Z", "out of range");
    when_bad("2100-02-29T00:00:00Z", "out of range");
    when_bad("2024-02-30T00:00:00Z", "out of range");
    /* A leap second is accepted and read as the second before it. */
    when_ok("2016-12-31T23:59:60Z", 0, 1483228799);
}

static void test_rfc3339_bad_dates(void **state)
{
    (void)state;
    when_bad("2026-13-01T00:00:00Z", "out of range");
    when_bad("2026-00-01T00:00:00Z", "out of range");
    when_bad("2026-01-00T00:00:00Z", "out of range");
    when_bad("2026-01-32T00:00:00Z", "out of range");
    when_bad("2026-04-31T00:00:00Z", "out of range");
    when_bad("2026-01-01T24:00:00Z", "out of range");
    when_bad("2026-01-01T00:60:00Z", "out of range");
    when_bad("2026-01-01T00:00:61Z", "out of range");
    when_bad("2026-01-02X03:04:05Z", "bad time");
    when_bad("2026-1-02T03:04:05Z+", "bad time");
    when_bad("2026-01-02T03:04:05ZZ", "trailing characters");
    when_bad("2026-01-02T03:04:05Z ", "trailing characters");
    when_bad("2026-01-02T03:04:05 ", "needs a zone");
    when_bad("2026-01-02T03:04:05", "bad time"); /* no zone at all */
    when_bad("2026-01-02", "bad time");
    when_bad("2026-01-02T03:04:0xZ", "bad time");
    when_bad("abcd-01-02T03:04:05Z", "bad time");
}

static void test_when_relative(void **state)
{
    (void)state;
    int64_t now = 1767323045;
    when_ok("1h", now, now - 3600);
    when_ok("90s", now, now - 90);
    when_ok("1h30m", now, now - 5400);
    when_ok("2d", now, now - 172800);
    when_ok("1w", now, now - 604800);
    when_bad("", "empty time");
    when_bad(NULL, "empty time");
    when_bad("yesterday", "bad time 'yesterday'");
    when_bad("0s", "bad time");
    when_bad("-1h", "bad time");
}

/* ---- formatting ------------------------------------------------------------- */

static void test_format_rfc3339(void **state)
{
    (void)state;
    char out[TIME_RFC3339_LEN];
    time_format_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    time_format_rfc3339(1767323045, out);
    assert_string_equal(out, "2026-01-02T03:04:05Z");
    time_format_rfc3339(1709208000, out);
    assert_string_equal(out, "2024-02-29T12:00:00Z");
    time_format_rfc3339(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    /* Out of gmtime's range: a readable fallback, never garbage. */
    time_format_rfc3339(INT64_MAX, out);
    assert_string_equal(out, "@9223372036854775807");
    time_format_rfc3339(INT64_MIN, out);
    assert_string_equal(out, "@-9223372036854775808");

    /* Round trip. */
    static const int64_t samples[] = {0, 1, 951782400, 1709208000, 1767323045, 253402300799LL,
                                      -2208988800LL};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        int64_t back = -7;
        time_format_rfc3339(samples[i], out);
        assert_true(mid_is_ok(time_parse_when(out, 0, &back)));
        assert_int_equal(back, samples[i]);
    }
}

static void test_format_rfc3339_ms(void **state)
{
    (void)state;
    char out[TIME_RFC3339_LEN];
    time_format_rfc3339_ms(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    time_format_rfc3339_ms(1500, out);
    assert_string_equal(out, "1970-01-01T00:00:01.500Z");
    time_format_rfc3339_ms(1767323045123LL, out);
    assert_string_equal(out, "2026-01-02T03:04:05.123Z");
    time_format_rfc3339_ms(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    time_format_rfc3339_ms(-1000, out);
    assert_string_equal(out, "1969-12-31T23:59:59.000Z");
    time_format_rfc3339_ms(-1001, out);
    assert_string_equal(out, "1969-12-31T23:59:58.999Z");
    /* Extremes must not overflow (UBSan would abort) and stay terminated. */
    time_format_rfc3339_ms(INT64_MIN, out);
    assert_true(strlen(out) < TIME_RFC3339_LEN);
    time_format_rfc3339_ms(INT64_MAX, out);
    assert_true(strlen(out) < TIME_RFC3339_LEN);
}

static void test_format_duration(void **state)
{
    (void)state;
    char out[32];
    time_format_duration(5400, out, sizeof out);
    assert_string_equal(out, "1h30m");
    time_format_duration(90, out, sizeof out);
    assert_string_equal(out, "1m30s");
    time_format_duration(86400 + 3600 + 60 + 1, out, sizeof out);
    assert_string_equal(out, "1d1h1m1s");
    time_format_duration(604800, out, sizeof out);
    assert_string_equal(out, "7d");
    time_format_duration(0, out, sizeof out);
    assert_string_equal(out, "0s");
    time_format_duration(-5, out, sizeof out);
    assert_string_equal(out, "0s");
    time_format_duration(INT64_MAX, out, sizeof out);
    assert_true(strlen(out) > 0);

    /* Round trip through the parser. */
    static const int64_t samples[] = {1, 59, 60, 61, 3599, 3600, 5400, 86399, 86400, 90061,
                                      604800, MAX_DURATION};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        int64_t back = -1;
        time_format_duration(samples[i], out, sizeof out);
        assert_true(mid_is_ok(time_parse_duration(out, &back)));
        assert_int_equal(back, samples[i]);
    }

    /* A small buffer truncates but stays terminated and in bounds. */
    char small[4];
    time_format_duration(90061, small, sizeof small);
    assert_string_equal(small, "1d1");
    char one[1];
    time_format_duration(90061, one, sizeof one);
    assert_string_equal(one, "");
    /* A zero-sized buffer is not written at all. */
    char guard = 'g';
    time_format_duration(90061, &guard, 0);
    assert_int_equal(guard, 'g');
    time_format_duration(0, &guard, 0);
    assert_int_equal(guard, 'g');
}

static void test_clock(void **state)
{
    (void)state;
    int64_t t0 = (int64_t)time(NULL);
    int64_t now = time_now();
    int64_t ms = time_now_ms();
    assert_true(now >= t0 && now <= t0 + 2);
    assert_true(ms / 1000 >= t0 && ms / 1000 <= t0 + 2);
}

int run_timeutil_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_bad),
        cmocka_unit_test(test_duration_zero),
        cmocka_unit_test(test_duration_overflow),
        cmocka_unit_test(test_rfc3339_basic),
        cmocka_unit_test(test_rfc3339_offsets),
        cmocka_unit_test(test_rfc3339_fractions),
        cmocka_unit_test(test_rfc3339_leap),
        cmocka_unit_test(test_rfc3339_bad_dates),
        cmocka_unit_test(test_when_relative),
        cmocka_unit_test(test_format_rfc3339),
        cmocka_unit_test(test_format_rfc3339_ms),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests_name("lib/timeutil", tests, NULL, NULL);
}
