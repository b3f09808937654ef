#include <stdlib.h>
#include <string.h>

#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

ca_env *ca_env_new(void)
{
    ca_env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->dir = cafx_tmpdir();
    e->st = cafx_store_open(e->dir);
    return e;
}

void ca_env_init(ca_env *e, ca_key_type kt, int64_t root_ttl, int64_t inter_ttl)
{
    ca_init_opts o = {.trust_domain = "example.org", .key_type = kt, .root_ttl = root_ttl,
                      .intermediate_ttl = inter_ttl, .actor = "test:unit"};
    assert_ok(ca_init(e->st, e->dir, &o));
    assert_ok(ca_open(e->st, e->dir, &e->c));
}

void ca_env_free(ca_env *e)
{
    if (e == NULL) return;
    ca_close(e->c);
    store_close(e->st);
    cafx_rmtree(e->dir);
    free(e->dir);
    free(e);
}

int ca_env_setup(void **state)
{
    ca_env *e = ca_env_new();
    ca_env_init(e, CA_KEY_EC_P256, 0, 0);
    *state = e;
    return 0;
}

int ca_env_teardown(void **state)
{
    ca_env_free(*state);
    return 0;
}
