/* The ca/ unit test binary: one cmocka group per file, run by main.c. */
#ifndef MESHID_TESTS_UNIT_CA_CA_TESTS_H
#define MESHID_TESTS_UNIT_CA_CA_TESTS_H

#include <stdarg.h>
#include <string.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ca/ca.h"
#include "storage/store.h"

int ca_test_keys(void);
int ca_test_csr(void);
int ca_test_x509(void);
int ca_test_x509_der(void);
int ca_test_issue(void);
int ca_test_batch(void);
int ca_test_bundle(void);
int ca_test_upstream(void);
int ca_test_audit_head(void);
int ca_test_rotation(void);

/* A data directory with a store and, after ca_env_init, an open CA. */
typedef struct {
    char *dir;
    store *st;
    ca *c;
} ca_env;

/* New temp dir and store; no CA yet. */
ca_env *ca_env_new(void);
/* ca_init for example.org with `kt` and the given lifetimes, then ca_open. */
void ca_env_init(ca_env *e, ca_key_type kt, int64_t root_ttl, int64_t inter_ttl);
void ca_env_free(ca_env *e);

/* cmocka setup/teardown: an EC example.org CA with default lifetimes. */
int ca_env_setup(void **state);
int ca_env_teardown(void **state);

/* Asserts that `r` failed with `err` and that the message contains `needle`. */
#define assert_fails_with(r, code, needle)                                                      \
    do {                                                                                        \
        mid_result r_ = (r);                                                                    \
        if (r_.err != (code) || strstr(mid_errmsg(), (needle)) == NULL)                         \
            fail_msg("expected %s containing '%s', got %s: %s", mid_errname(code), (needle),    \
                     mid_errname(r_.err), mid_errmsg());                                        \
    } while (0)

#define assert_ok(r)                                                                            \
    do {                                                                                        \
        mid_result r_ = (r);                                                                    \
        if (!mid_is_ok(r_)) fail_msg("unexpected error %s: %s (%s:%d)", mid_errname(r_.err),  \
                                     mid_errmsg(), mid_errfile(), mid_errline());               \
    } while (0)

#endif
