/* Unit tests for identity/join_token.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "identity/join_token.h"
#include "lib/result.h"
#include "tests/unit/identity/identity_tests.h"

static void test_generate_and_verify(void **state)
{
    (void)state;
    char t1[JOIN_TOKEN_LEN + 1], h1[JOIN_TOKEN_HASH_LEN + 1];
    char t2[JOIN_TOKEN_LEN + 1], h2[JOIN_TOKEN_HASH_LEN + 1];
    assert_true(mid_is_ok(join_token_generate(t1, h1)));
    assert_true(mid_is_ok(join_token_generate(t2, h2)));
    assert_int_equal(strlen(t1), JOIN_TOKEN_LEN);
    assert_int_equal(strlen(h1), JOIN_TOKEN_HASH_LEN);
    assert_string_not_equal(t1, t2);
    assert_string_not_equal(h1, h2);
    assert_string_not_equal(t1, h1);
    char h[JOIN_TOKEN_HASH_LEN + 1];
    assert_true(mid_is_ok(join_token_hash(t1, h)));
    assert_string_equal(h, h1);
    assert_true(join_token_verify(t1, h1));
    assert_false(join_token_verify(t1, h2));
    assert_false(join_token_verify(t2, h1));
}

static void test_known_answer(void **state)
{
    (void)state;
    /* sha256 of 64 '0' characters (python: hashlib.sha256(b"0"*64).hexdigest()) */
    char zeros[JOIN_TOKEN_LEN + 1];
    memset(zeros, '0', JOIN_TOKEN_LEN);
    zeros[JOIN_TOKEN_LEN] = '\0';
    char h[JOIN_TOKEN_HASH_LEN + 1];
    assert_true(mid_is_ok(join_token_hash(zeros, h)));
    assert_string_equal(h, "60e05bd1b195af2f94112fa7197a5c88289058840ce7c6df9693756bc6250f55");
}

static void test_malformed(void **state)
{
    (void)state;
    char h[JOIN_TOKEN_HASH_LEN + 1], t[JOIN_TOKEN_LEN + 1], good[JOIN_TOKEN_HASH_LEN + 1];
    assert_true(mid_is_ok(join_token_generate(t, good)));
    const char *bad[] = {"", "abc", "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(join_token_hash(bad[i], h).err, MID_E_INVALID);
        assert_non_null(strstr(mid_errmsg(), "malformed join token"));
        assert_false(join_token_verify(bad[i], good));
    }
    assert_int_equal(join_token_hash(NULL, h).err, MID_E_INVALID);
    assert_false(join_token_verify(NULL, good));
    assert_false(join_token_verify(t, NULL));
    assert_false(join_token_verify(t, "short"));
    /* A token the message never echoes. */
    t[0] = 'Z';
    assert_int_equal(join_token_hash(t, h).err, MID_E_INVALID);
    assert_null(strstr(mid_errmsg(), t + 1));
}

static void test_agent_id(void **state)
{
    (void)state;
    spiffe_id *id = NULL;
    const char *hash = "60e05bd1b195af2f94112fa7197a5c88289058840ce7c6df9693756bc6250f55";
    assert_true(mid_is_ok(join_token_agent_id("example.org", hash, &id)));
    assert_string_equal(spiffe_id_str(id),
                        "spiffe://example.org/meshid/agent/join_token/60e05bd1b195af2f94112fa7197a5c88");
    spiffe_id_free(id);
    assert_int_equal(join_token_agent_id("Example.org", hash, &id).err, MID_E_INVALID);
    assert_null(id);
    assert_int_equal(join_token_agent_id("example.org", "xyz", &id).err, MID_E_INVALID);
}

int run_join_token_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_and_verify),
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_agent_id),
    };
    return cmocka_run_group_tests_name("join_token", tests, NULL, NULL);
}
