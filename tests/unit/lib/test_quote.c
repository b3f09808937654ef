/* Unit tests for lib/quote.c: quote_printable (the xDS/SDS servers' quoting
 * of client text) and quote_str. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/quote.h"
#include "tests/unit/lib/lib_tests.h"

static void test_printable_plain_and_escaped(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(quote_printable("node-1 'a' \"b\"", 16, buf, sizeof buf),
                        "node-1 'a' \"b\"");
    assert_string_equal(quote_printable("a\\b\n\x7f\xff", 16, buf, sizeof buf),
                        "a\\x5cb\\x0a\\x7f\\xff");
    assert_string_equal(quote_printable(NULL, 16, buf, sizeof buf), "");
    assert_string_equal(quote_printable("", 16, buf, sizeof buf), "");
}

static void test_printable_limits(void **state)
{
    (void)state;
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    /* over `max` input bytes: the rest becomes "..." */
    char buf[4 * 8 + 8];
    const char *p = quote_printable(big, 8, buf, sizeof buf);
    assert_ptr_equal(p, buf);
    assert_string_equal(buf, "xxxxxxxx...");
    /* exactly `max` bytes: no ellipsis */
    assert_string_equal(quote_printable("xxxxxxxx", 8, buf, sizeof buf), "xxxxxxxx");
    /* max * 4 + 8 holds the worst case: every byte escaped, then "..." */
    char bad[20];
    memset(bad, 0x01, sizeof bad - 1);
    bad[sizeof bad - 1] = '\0';
    quote_printable(bad, 8, buf, sizeof buf);
    assert_int_equal(strlen(buf), 8 * 4 + 3);
    assert_non_null(strstr(buf, "..."));
    /* a small buffer truncates but stays terminated and printable */
    char tiny[7];
    quote_printable(bad, 8, tiny, sizeof tiny);
    assert_true(strlen(tiny) < sizeof tiny);
    for (size_t i = 0; tiny[i]; i++) assert_true(tiny[i] >= 0x20 && tiny[i] < 0x7f);
    char one[1];
    quote_printable("abc", 8, one, sizeof one);
    assert_int_equal(one[0], '\0');
}

static void test_quote_str(void **state)
{
    (void)state;
    char buf[QUOTE_MAX + 8];
    quote_str("it's", buf, sizeof buf);
    assert_string_equal(buf, "it\\x27s"); /* quote_str escapes the quote */
    quote_str(NULL, buf, sizeof buf);
    assert_string_equal(buf, "");
}

int run_quote_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_printable_plain_and_escaped),
        cmocka_unit_test(test_printable_limits),
        cmocka_unit_test(test_quote_str),
    };
    return cmocka_run_group_tests_name("quote", tests, NULL, NULL);
}
