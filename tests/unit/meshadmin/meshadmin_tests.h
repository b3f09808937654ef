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
#include "tests/testlib/mid_assert.h"

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

/* Number of mesh resources in the store. */
size_t ma_stored_count(store *st);

/* Number of audit events with type `event` (NULL: all). */
int64_t ma_count_events(store *st, const char *event);
/* Audit events of type `event` with outcome "ok". */
int64_t ma_count_ok(store *st, const char *event);
/* Audit events of type `event` with outcome "denied" whose reason contains
 * `reason_part` (NULL: any). */
int64_t ma_count_refusals(store *st, const char *event, const char *reason_part);

/* Each runs its cmocka group and returns the number of failed tests. */
int run_registry_store_tests(void);
int run_mesh_admin_tests(void);

#endif
