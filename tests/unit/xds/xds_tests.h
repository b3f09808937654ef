/* The xds unit test binary: the xDS generator (meshcore/xds_gen.h), run by
 * main.c, plus the registry fixtures its groups share (fixtures.c).
 * To add a group: declare its runner here and call it from main(). */
#ifndef MESHID_TESTS_UNIT_XDS_XDS_TESTS_H
#define MESHID_TESTS_UNIT_XDS_XDS_TESTS_H

#include <stddef.h>
#include <stdint.h>

#include "meshcore/model.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_snapshot.h"

/* Each runs its cmocka group and returns the number of failed tests. */
int run_xds_proxy_tests(void);
int run_xds_sidecar_tests(void);
int run_xds_proxyless_tests(void);
int run_xds_cache_tests(void);

#define OK(expr) assert_true(mid_is_ok(expr))
#define FAILS(expr, code)                                 \
    do {                                                  \
        mid_result r_ = (expr);                           \
        assert_int_equal(r_.err, (code));                 \
    } while (0)

#define TD "example.org"

/* ---- fixtures (fixtures.c); every builder aborts the test on failure ---- */

typedef struct {
    const char *name;
    uint32_t number;
    mesh_protocol protocol;
    uint32_t target_port;
} t_port;

typedef struct {
    const char *address;
    const char *service_account; /* or NULL */
    const char *spiffe_id;       /* or NULL */
    mesh_health health;
    const char *port_name;       /* one port override, or NULL */
    uint32_t port_number;
    const char *label_key;       /* one label, or NULL */
    const char *label_value;
} t_endpoint;

/* A heap service (owned by the caller until handed to a registry). */
mesh_service *t_service(const char *ns, const char *name, const char *host, int mesh_internal,
                        const t_port *ports, size_t n_ports, const t_endpoint *eps, size_t n_eps);
/* Adds another host to s. */
void t_add_host(mesh_service *s, const char *host);
/* An ALLOW (or DENY) policy selecting label key=value (NULL = all of ns)
 * with one rule from `principal` (NULL = rule {}). */
mesh_policy *t_policy(const char *ns, const char *name, mesh_action action, const char *key,
                      const char *value, const char *principal);
/* A registry over the n services and m policies (takes them). */
mesh_registry *t_registry(int64_t rev, mesh_service **svcs, size_t n, mesh_policy **pols,
                          size_t m);

/* The bookinfo-like registry the content tests use (see fixtures.c). */
mesh_registry *t_bookinfo(int64_t rev, const char *reviews_ip);
#define H_REVIEWS "reviews.bookinfo.svc.cluster.local"
#define H_RATINGS "ratings.bookinfo.svc.cluster.local"
#define H_NOEPS "noeps.bookinfo.svc.cluster.local"
#define H_EXT "api.example.com"
#define ID_REVIEWS "spiffe://" TD "/ns/bookinfo/sa/reviews"
#define ID_REVIEWS_V2 "spiffe://" TD "/ns/bookinfo/sa/reviews-v2"
#define ID_RATINGS "spiffe://" TD "/ns/bookinfo/sa/ratings"

/* A proxy value for tests (strings are heap copies; xds_proxy_clear). */
xds_proxy t_sidecar(const char *id);
xds_proxy t_proxyless(const char *id, const char *cert_provider);

/* The resource (asserts it exists). */
const xds_resource *t_res(const xds_snapshot *s, xds_type t, const char *name);

#endif
