/* The mesh admin unit test binary (build/asan/tests/unit_meshadmin):
 * meshcore/registry_store.c against a real temporary store, and
 * meshcore/mesh_admin.c plus the sds/server.c extension hook over a real
 * Unix socket. */
#ifndef MESHID_TESTS_UNIT_MESHADMIN_MESHADMIN_TESTS_H
#define MESHID_TESTS_UNIT_MESHADMIN_MESHADMIN_TESTS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lib/result.h"
#include "meshcore/model.h"
#include "storage/store.h"

#define assert_mid_ok(expr)                                                            \
    do {                                                                               \
        mid_result t_r_ = (expr);                                                      \
        if (!mid_is_ok(t_r_)) fail_msg("%s: %s", #expr, mid_errmsg());                 \
    } while (0)
#define assert_mid_err(expr, code)                                                     \
    do {                                                                               \
        mid_result t_r_ = (expr);                                                      \
        if (t_r_.err != (code))                                                        \
            fail_msg("%s: expected %s, got %s (%s)", #expr, mid_errname(code),         \
                     mid_errname(t_r_.err), mid_errmsg());                             \
    } while (0)
#define assert_contains(hay, needle)                                                   \
    do {                                                                               \
        if (strstr((hay), (needle)) == NULL)                                           \
            fail_msg("\"%s\" does not contain \"%s\"", (hay), (needle));               \
    } while (0)

/* A temporary directory holding meshid.db. */
typedef struct {
    char dir[256];
    char db[300];
} ma_tmp;

void ma_tmp_init(ma_tmp *t);
void ma_tmp_cleanup(ma_tmp *t);
store *ma_open_store(const ma_tmp *t);

/* Parses YAML text (fails the test on error). */
void ma_parse(const char *yaml, const char *source, mesh_doc **docs, size_t *n);

/* Number of audit events with type `event` (NULL: all). */
int64_t ma_count_events(store *st, const char *event);

/* Each runs its cmocka group and returns the number of failed tests. */
int run_registry_store_tests(void);
int run_mesh_admin_tests(void);

#endif
