/* cmocka assertions on lib/result.h results for unit tests: on failure they
 * print the expression and the thread's last error message. Include after
 * <cmocka.h>. */
#ifndef MESHID_TESTS_TESTLIB_MID_ASSERT_H
#define MESHID_TESTS_TESTLIB_MID_ASSERT_H

#include <string.h>

#include "lib/result.h"

/* Fails the test unless `expr` (a mid_result) is OK. */
#define assert_mid_ok(expr)                                                            \
    do {                                                                               \
        mid_result t_r_ = (expr);                                                      \
        if (!mid_is_ok(t_r_)) fail_msg("%s: %s", #expr, mid_errmsg());                 \
    } while (0)

/* Fails the test unless `expr` fails with error code `code`. */
#define assert_mid_err(expr, code)                                                     \
    do {                                                                               \
        mid_result t_r_ = (expr);                                                      \
        if (t_r_.err != (code))                                                        \
            fail_msg("%s: expected %s, got %s (%s)", #expr, mid_errname(code),         \
                     mid_errname(t_r_.err), mid_errmsg());                             \
    } while (0)

/* Fails the test unless the string `hay` contains `needle`. */
#define assert_contains(hay, needle)                                                   \
    do {                                                                               \
        if (strstr((hay), (needle)) == NULL)                                           \
            fail_msg("\"%s\" does not contain \"%s\"", (hay), (needle));               \
    } while (0)

#endif
