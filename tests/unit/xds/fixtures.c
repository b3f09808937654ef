/* Registry fixtures of the xds tests (see xds_tests.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tests/unit/xds/xds_tests.h"

static char *dup(const char *s)
{
    if (!s) return NULL;
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static void *zalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

mesh_service *t_service(const char *ns, const char *name, const char *host, int mesh_internal,
                        const t_port *ports, size_t n_ports, const t_endpoint *eps, size_t n_eps)
{
    mesh_service *s = zalloc(1, sizeof *s);
    s->namespace_ = dup(ns);
    s->name = dup(name);
    s->hosts = zalloc(1, sizeof *s->hosts);
    s->hosts[0] = dup(host);
    s->n_hosts = 1;
    s->mesh_internal = mesh_internal;
    s->ports = zalloc(n_ports, sizeof *s->ports);
    s->n_ports = n_ports;
    for (size_t i = 0; i < n_ports; i++) {
        s->ports[i].name = dup(ports[i].name);
        s->ports[i].number = ports[i].number;
        s->ports[i].protocol = ports[i].protocol;
        s->ports[i].target_port = ports[i].target_port;
    }
    s->endpoints = n_eps ? zalloc(n_eps, sizeof *s->endpoints) : NULL;
    s->n_endpoints = n_eps;
    for (size_t i = 0; i < n_eps; i++) {
        mesh_endpoint *e = &s->endpoints[i];
        e->address = dup(eps[i].address);
        e->service_account = dup(eps[i].service_account);
        e->spiffe_id = dup(eps[i].spiffe_id);
        e->health = eps[i].health;
        if (eps[i].port_name) {
            e->ports = zalloc(1, sizeof *e->ports);
            e->ports[0].name = dup(eps[i].port_name);
            e->ports[0].number = eps[i].port_number;
            e->n_ports = 1;
        }
        if (eps[i].label_key) {
            e->labels = zalloc(1, sizeof *e->labels);
            e->labels[0].key = dup(eps[i].label_key);
            e->labels[0].value = dup(eps[i].label_value);
            e->n_labels = 1;
        }
    }
    return s;
}

void t_add_host(mesh_service *s, const char *host)
{
    char **h = realloc(s->hosts, (s->n_hosts + 1) * sizeof *h);
    assert_non_null(h);
    s->hosts = h;
    s->hosts[s->n_hosts++] = dup(host);
}

mesh_policy *t_policy(const char *ns, const char *name, mesh_action action, const char *key,
                      const char *value, const char *principal)
{
    mesh_policy *p = zalloc(1, sizeof *p);
    p->namespace_ = dup(ns);
    p->name = dup(name);
    p->action = action;
    if (key) {
        p->selector = zalloc(1, sizeof *p->selector);
        p->selector[0].key = dup(key);
        p->selector[0].value = dup(value);
        p->n_selector = 1;
    }
    p->rules = zalloc(1, sizeof *p->rules);
    p->n_rules = 1;
    if (principal) {
        mesh_rule *r = &p->rules[0];
        r->from = zalloc(1, sizeof *r->from);
        r->n_from = 1;
        r->from[0].principals = zalloc(1, sizeof(char *));
        r->from[0].principals[0] = dup(principal);
        r->from[0].n_principals = 1;
    }
    return p;
}

mesh_registry *t_registry(int64_t rev, mesh_service **svcs, size_t n, mesh_policy **pols, size_t m)
{
    mesh_service **sv = zalloc(n, sizeof *sv);
    memcpy(sv, svcs, n * sizeof *sv);
    mesh_policy **pv = NULL;
    if (m) {
        pv = zalloc(m, sizeof *pv);
        memcpy(pv, pols, m * sizeof *pv);
    }
    mesh_registry *reg = NULL;
    mid_result r = mesh_registry_new(TD, rev, sv, n, pv, m, &reg);
    if (!mid_is_ok(r)) fail_msg("mesh_registry_new: %s", mid_errmsg());
    return reg;
}

mesh_registry *t_bookinfo(int64_t rev, const char *reviews_ip)
{
    static const t_port reviews_ports[] = {
        {"http", 9080, MESH_PROTO_HTTP, 0},
        {"grpc", 9090, MESH_PROTO_GRPC, 19090},
        {"tcp", 3306, MESH_PROTO_TCP, 0},
    };
    const t_endpoint reviews_eps[] = {
        {reviews_ip ? reviews_ip : "10.0.0.1", "reviews", NULL, MESH_HEALTH_HEALTHY, NULL, 0, "app",
         "reviews"},
        {"10.0.0.2", "reviews", NULL, MESH_HEALTH_UNHEALTHY, "grpc", 9999, "app", "reviews"},
        {"10.0.0.3", NULL, ID_REVIEWS_V2, MESH_HEALTH_DRAINING, NULL, 0, "app", "reviews"},
    };
    static const t_port ratings_ports[] = {{"http", 9080, MESH_PROTO_HTTP, 0}};
    static const t_endpoint ratings_eps[] = {
        {"10.0.1.1", "ratings", NULL, MESH_HEALTH_HEALTHY, NULL, 0, "app", "ratings"},
    };
    static const t_port noeps_ports[] = {{"http2", 8000, MESH_PROTO_HTTP2, 0}};
    static const t_port ext_ports[] = {{"https", 443, MESH_PROTO_TLS, 0}};
    static const t_endpoint ext_eps[] = {
        {"93.184.216.34", NULL, NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL},
    };
    mesh_service *svcs[] = {
        t_service("bookinfo", "reviews", H_REVIEWS, 1, reviews_ports, 3, reviews_eps, 3),
        t_service("bookinfo", "ratings", H_RATINGS, 1, ratings_ports, 1, ratings_eps, 1),
        t_service("bookinfo", "noeps", H_NOEPS, 1, noeps_ports, 1, NULL, 0),
        t_service("external", "api", H_EXT, 0, ext_ports, 1, ext_eps, 1),
    };
    mesh_policy *pols[] = {
        t_policy("bookinfo", "ratings-viewer", MESH_ACTION_ALLOW, "app", "ratings",
                 TD "/ns/bookinfo/sa/reviews"),
    };
    return t_registry(rev, svcs, 4, pols, 1);
}

xds_proxy t_sidecar(const char *id)
{
    xds_proxy p = {0};
    p.node_id = dup("sidecar~test");
    p.node_cluster = dup("test");
    p.spiffe_id = dup(id);
    p.sds_cluster = dup(XDS_SDS_CLUSTER_DEFAULT);
    return p;
}

xds_proxy t_proxyless(const char *id, const char *cert_provider)
{
    xds_proxy p = {0};
    p.node_id = dup("grpc~test");
    p.node_cluster = dup("test");
    p.spiffe_id = dup(id);
    p.proxyless = 1;
    p.cert_provider = dup(cert_provider);
    return p;
}

const xds_resource *t_res(const xds_snapshot *s, xds_type t, const char *name)
{
    const xds_resource *r = xds_snapshot_find(s, t, name);
    if (!r) fail_msg("%s resource \"%s\" missing", xds_type_short(t), name);
    return r;
}
