/* Unit tests for lib/result.c: the thread-local last error, the guard macros,
 * error names and the OpenSSL adapter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>

#include "lib/result.h"
#include "tests/unit/lib/lib_tests.h"

/* ---- helpers exercising the macros ---------------------------------------- */

static int cleanups;

static mid_result fail_if(bool bad)
{
    MID_ENSURE(!bad, MID_E_INVALID, "value was %s", bad ? "bad" : "good");
    return mid_ok();
}

static mid_result guarded(bool bad, int *reached)
{
    MID_GUARD(fail_if(bad));
    (*reached)++;
    return mid_ok();
}

static mid_result bail_always(void) { MID_BAIL(MID_E_DENIED, "no, %d times", 3); }

static mid_result try_style(bool fail_first, bool fail_check)
{
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, fail_if(fail_first));
    MID_CHECK(r, !fail_check, MID_E_STATE, "check failed");
out:
    cleanups++;
    return r;
}

static mid_result ossl_guard(int rc)
{
    MID_GUARD_OSSL(rc, MID_E_CRYPTO, "openssl call");
    return mid_ok();
}

static mid_result ossl_check(int rc)
{
    mid_result r = MID_OK_RESULT;
    MID_CHECK_OSSL(r, rc, MID_E_CRYPTO, "openssl check");
out:
    cleanups++;
    return r;
}

/* Leaves "no start line" (or similar) on OpenSSL's error queue. */
static void push_openssl_error(void)
{
    static const char junk[] = "this is not PEM";
    BIO *b = BIO_new_mem_buf(junk, (int)sizeof junk - 1);
    assert_non_null(b);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    assert_null(x);
    BIO_free(b);
    assert_int_not_equal(ERR_peek_error(), 0);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_fail_records_last_error(void **state)
{
    (void)state;
    mid_errclear();
    mid_result r = mid_fail(MID_E_NOT_FOUND, "x.c", 42, "thing %s (%d)", "gone", 7);
    assert_int_equal(r.err, MID_E_NOT_FOUND);
    assert_false(mid_is_ok(r));
    assert_int_equal(mid_errcode(), MID_E_NOT_FOUND);
    assert_string_equal(mid_errmsg(), "thing gone (7)");
    assert_string_equal(mid_errfile(), "x.c");
    assert_int_equal(mid_errline(), 42);

    mid_errclear();
    assert_int_equal(mid_errcode(), MID_E_OK);
    assert_string_equal(mid_errmsg(), "");
    assert_string_equal(mid_errfile(), "");
    assert_int_equal(mid_errline(), 0);
    assert_true(mid_is_ok(mid_ok()));
    assert_true(mid_is_ok(MID_OK_RESULT));
}

static void test_message_truncated_to_1k(void **state)
{
    (void)state;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    (void)mid_fail(MID_E_INVALID, __FILE__, __LINE__, "%s", big);
    assert_int_equal(strlen(mid_errmsg()), 1023);
}

static void test_wrap_previous_message(void **state)
{
    (void)state;
    /* Adding context to an inner error reads the message while writing it. */
    (void)mid_fail(MID_E_IO, __FILE__, __LINE__, "inner reason");
    (void)mid_fail(MID_E_IO, __FILE__, __LINE__, "outer context: %s", mid_errmsg());
    assert_string_equal(mid_errmsg(), "outer context: inner reason");
    (void)mid_fail(MID_E_IO, __FILE__, __LINE__, "%s; and more", mid_errmsg());
    assert_string_equal(mid_errmsg(), "outer context: inner reason; and more");
}

static void test_guard_ensure_bail(void **state)
{
    (void)state;
    int reached = 0;
    assert_true(mid_is_ok(guarded(false, &reached)));
    assert_int_equal(reached, 1);
    mid_result r = guarded(true, &reached);
    assert_int_equal(r.err, MID_E_INVALID);
    assert_int_equal(reached, 1);
    assert_string_equal(mid_errmsg(), "value was bad");
    assert_non_null(strstr(mid_errfile(), "test_result.c"));
    assert_true(mid_errline() > 0);

    r = bail_always();
    assert_int_equal(r.err, MID_E_DENIED);
    assert_string_equal(mid_errmsg(), "no, 3 times");
}

static void test_try_check_cleanup(void **state)
{
    (void)state;
    cleanups = 0;
    assert_true(mid_is_ok(try_style(false, false)));
    assert_int_equal(cleanups, 1);
    assert_int_equal(try_style(true, false).err, MID_E_INVALID);
    assert_int_equal(cleanups, 2);
    assert_int_equal(try_style(false, true).err, MID_E_STATE);
    assert_string_equal(mid_errmsg(), "check failed");
    assert_int_equal(cleanups, 3);
}

static mid_result need_mem(const void *p)
{
    MID_ENSURE_MEM(p);
    return mid_ok();
}

static mid_result check_mem(const void *p)
{
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, p);
out:
    cleanups++;
    return r;
}

static void test_ensure_mem(void **state)
{
    (void)state;
    int x = 0;
    assert_true(mid_is_ok(need_mem(&x)));
    assert_int_equal(need_mem(NULL).err, MID_E_NOMEM);
    assert_string_equal(mid_errmsg(), "out of memory");
    cleanups = 0;
    assert_true(mid_is_ok(check_mem(&x)));
    assert_int_equal(check_mem(NULL).err, MID_E_NOMEM);
    assert_int_equal(cleanups, 2);
}

static void test_errname(void **state)
{
    (void)state;
    static const struct {
        mid_err err;
        const char *name;
    } names[] = {
        {MID_E_OK, "ok"},           {MID_E_INVALID, "invalid"},   {MID_E_TOO_LARGE, "too-large"},
        {MID_E_NOT_FOUND, "not-found"}, {MID_E_EXISTS, "exists"}, {MID_E_DENIED, "denied"},
        {MID_E_STATE, "bad-state"}, {MID_E_USAGE, "usage"},       {MID_E_IO, "io"},
        {MID_E_NOMEM, "no-memory"}, {MID_E_DB, "database"},       {MID_E_BUSY, "busy"},
        {MID_E_CORRUPT, "corrupt"}, {MID_E_CRYPTO, "crypto"},     {MID_E_VERIFY, "verify"},
        {MID_E_INTERNAL, "internal"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_string_equal(mid_errname(names[i].err), names[i].name);
    assert_string_equal(mid_errname((mid_err)12345), "unknown");
}

static void test_fail_ossl_appends_reason(void **state)
{
    (void)state;
    ERR_clear_error();
    push_openssl_error();
    mid_result r = mid_fail_ossl(MID_E_CRYPTO, "c.c", 9, "loading %s", "cert.pem");
    assert_int_equal(r.err, MID_E_CRYPTO);
    const char *msg = mid_errmsg();
    assert_true(strncmp(msg, "loading cert.pem (", 18) == 0);
    assert_non_null(strstr(msg, "no start line"));
    assert_int_equal(msg[strlen(msg) - 1], ')');
    /* The queue is cleared so the next failure does not inherit it. */
    assert_int_equal(ERR_peek_error(), 0);
    assert_int_equal(mid_errline(), 9);
}

static void test_fail_ossl_without_queue(void **state)
{
    (void)state;
    ERR_clear_error();
    (void)mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "plain");
    assert_string_equal(mid_errmsg(), "plain");
}

static void test_fail_ossl_long_message(void **state)
{
    (void)state;
    char big[1100];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    push_openssl_error();
    (void)mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "%s", big);
    assert_true(strlen(mid_errmsg()) <= 1023);
    assert_int_equal(ERR_peek_error(), 0);

    /* Room for part of the reason only: still terminated, still bounded. */
    push_openssl_error();
    (void)mid_fail_ossl(MID_E_CRYPTO, __FILE__, __LINE__, "%.1015s", big);
    assert_int_equal(strlen(mid_errmsg()), 1023);
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_ossl_macros(void **state)
{
    (void)state;
    ERR_clear_error();
    assert_true(mid_is_ok(ossl_guard(1)));
    /* Anything but 1 is failure, including OpenSSL's -1 and 0. */
    assert_int_equal(ossl_guard(0).err, MID_E_CRYPTO);
    assert_int_equal(ossl_guard(-1).err, MID_E_CRYPTO);
    assert_int_equal(ossl_guard(2).err, MID_E_CRYPTO);
    cleanups = 0;
    assert_true(mid_is_ok(ossl_check(1)));
    push_openssl_error();
    assert_int_equal(ossl_check(0).err, MID_E_CRYPTO);
    assert_non_null(strstr(mid_errmsg(), "openssl check ("));
    assert_int_equal(cleanups, 2);
}

static void *other_thread(void *arg)
{
    (void)arg;
    (void)mid_fail(MID_E_BUSY, "t.c", 1, "from another thread");
    return NULL;
}

static void test_last_error_is_per_thread(void **state)
{
    (void)state;
    (void)mid_fail(MID_E_DB, "m.c", 2, "from this thread");
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(mid_errcode(), MID_E_DB);
    assert_string_equal(mid_errmsg(), "from this thread");
}

int run_result_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_records_last_error),
        cmocka_unit_test(test_message_truncated_to_1k),
        cmocka_unit_test(test_wrap_previous_message),
        cmocka_unit_test(test_guard_ensure_bail),
        cmocka_unit_test(test_try_check_cleanup),
        cmocka_unit_test(test_ensure_mem),
        cmocka_unit_test(test_errname),
        cmocka_unit_test(test_fail_ossl_appends_reason),
        cmocka_unit_test(test_fail_ossl_without_queue),
        cmocka_unit_test(test_fail_ossl_long_message),
        cmocka_unit_test(test_ossl_macros),
        cmocka_unit_test(test_last_error_is_per_thread),
    };
    return cmocka_run_group_tests_name("lib/result", tests, NULL, NULL);
}
