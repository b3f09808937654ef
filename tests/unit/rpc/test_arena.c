/* Arena: limits, alignment, reset, protobuf-c decoding into an arena. */
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/arena.h"
#include "meshid/test/v1/echo.pb-c.h"
#include "tests/unit/rpc/rpc_tests.h"

static void test_alloc_and_limit(void **state)
{
    (void)state;
    arena *a;
    assert_true(mid_is_ok(arena_new(1000, &a)));
    char *p = arena_alloc(a, 10);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
    memset(p, 'x', 10);
    void *q = arena_alloc(a, 7);
    assert_non_null(q);
    assert_int_equal((uintptr_t)q % alignof(max_align_t), 0);
    assert_int_equal(arena_used(a), 17);
    assert_null(arena_alloc(a, 1000)); /* over the limit */
    assert_true(arena_exhausted(a));
    assert_non_null(arena_alloc(a, 983)); /* exactly up to it */
    assert_null(arena_alloc(a, 1));
    arena_reset(a);
    assert_false(arena_exhausted(a));
    assert_int_equal(arena_used(a), 0);
    char *s = arena_strndup(a, "hello world", 5);
    assert_string_equal(s, "hello");
    assert_non_null(arena_calloc(a, 0));
    arena_free(a);
    arena_free(NULL);
}

static void test_many_and_large(void **state)
{
    (void)state;
    arena *a;
    assert_true(mid_is_ok(arena_new(0, &a)));
    for (int i = 0; i < 10000; i++) {
        unsigned char *p = arena_alloc(a, (size_t)(i % 100) + 1);
        assert_non_null(p);
        memset(p, i & 0xff, (size_t)(i % 100) + 1);
    }
    unsigned char *big = arena_alloc(a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    arena_free(a);
}

static void test_protobuf_unpack(void **state)
{
    (void)state;
    Meshid__Test__V1__EchoRequest req = MESHID__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "abc";
    req.count = 7;
    uint8_t blob[300];
    memset(blob, 9, sizeof blob);
    req.blob.data = blob;
    req.blob.len = sizeof blob;
    uint8_t buf[512];
    size_t n = meshid__test__v1__echo_request__pack(&req, buf);

    arena *a;
    assert_true(mid_is_ok(arena_new(4096, &a)));
    Meshid__Test__V1__EchoRequest *got =
        meshid__test__v1__echo_request__unpack(arena_allocator(a), n, buf);
    assert_non_null(got);
    assert_string_equal(got->text, "abc");
    assert_int_equal(got->count, 7);
    assert_int_equal(got->blob.len, 300);
    arena_free(a); /* no protobuf_c_message_free_unpacked needed */

    /* a limit smaller than the decoded message: decoding fails cleanly */
    assert_true(mid_is_ok(arena_new(200, &a)));
    assert_null(meshid__test__v1__echo_request__unpack(arena_allocator(a), n, buf));
    assert_true(arena_exhausted(a));
    arena_free(a);

    /* truncated input */
    assert_true(mid_is_ok(arena_new(4096, &a)));
    assert_null(meshid__test__v1__echo_request__unpack(arena_allocator(a), n - 10, buf));
    assert_false(arena_exhausted(a));
    arena_free(a);
}

int run_arena_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_and_limit),
        cmocka_unit_test(test_many_and_large),
        cmocka_unit_test(test_protobuf_unpack),
    };
    return cmocka_run_group_tests_name("arena", tests, NULL, NULL);
}
