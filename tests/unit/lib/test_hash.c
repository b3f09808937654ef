/* Unit tests for lib/hash.c: hash_str keeps the values the mesh tables were
 * written with, and spreads near-identical names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lib/hash.h"
#include "tests/unit/lib/lib_tests.h"

/* The same loop, written out independently of lib/hash.c. */
static uint64_t reference(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static void test_hash_values(void **state)
{
    (void)state;
    assert_true(hash_str("") == 1469598103934665603ull);
    const char *names[] = {"a", "outbound|80||web.default.svc", "inbound|8080||", "\xff\x01"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_true(hash_str(names[i]) == reference(names[i]));
    /* one byte apart, or the same bytes in another order: different hashes */
    assert_true(hash_str("ab") != hash_str("ba"));
    assert_true(hash_str("web-1") != hash_str("web-2"));
    assert_true(hash_str("x") != hash_str(""));
}

int run_hash_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_values),
    };
    return cmocka_run_group_tests_name("hash", tests, NULL, NULL);
}
