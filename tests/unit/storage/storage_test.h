/* Shared fixtures for the storage unit tests (one cmocka binary). */
#ifndef MESHID_TESTS_UNIT_STORAGE_TEST_H
#define MESHID_TESTS_UNIT_STORAGE_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "storage/store.h"

#define ROOT_ID "a1"

/* The schema version this build migrates to. */
#define STORE_TEST_SCHEMA_LATEST 6
#define INTER_ID "b2"

/* Asserts a mid_result is OK, printing the thread's last error if not. */
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

/* A fresh temporary directory and a database path inside it. */
typedef struct {
    char dir[256];
    char db[300];
} tmpdb;

/* Creates the directory (fails the test otherwise). */
void tmpdb_init(tmpdb *t);
/* Removes the directory and everything in it. */
void tmpdb_cleanup(tmpdb *t);

/* Opens a store on t->db with the given options (NULL: defaults); fails the test on error. */
store *open_store(const tmpdb *t, const store_options *o);

/* A valid event with the given event type and subject. */
store_audit_event make_event(const char *event, const char *spiffe_id, const char *serial);
/* A valid root authority (id ROOT_ID) and intermediate (INTER_ID, parent ROOT_ID). */
store_authority make_root(void);
store_authority make_intermediate(void);
/* A valid certificate; serial must outlive its use. */
store_cert make_cert(const char *serial, const char *spiffe_id);
/* Puts the root and intermediate authorities (with events). */
void put_authorities(store *st);

/* A raw SQLite connection to the same file, for tampering and locking. */
sqlite3 *raw_open(const char *path);
/* Executes SQL on a raw connection; fails the test on error. */
void raw_exec(sqlite3 *db, const char *sql);
/* Drops the append-only triggers (what a tamperer would do first). */
void raw_drop_audit_guards(sqlite3 *db);

/* Number of audit events (through the store). */
int64_t count_events(store *st);

/* Each test file's group runner; returns the number of failures. */
int run_audit_tests(void);
int run_store_tests(void);
int run_batch_tests(void);
int run_cert_many_tests(void);
int run_tamper_tests(void);
int run_registry_tests(void);
int run_migration_tests(void);
int run_authority_apply_tests(void);
int run_mesh_store_tests(void);

#endif
