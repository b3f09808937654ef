/* Versions and sharing: equal registries give equal versions, one changed
 * endpoint changes only the resources that carry it; proxies of a flavour
 * share the outbound parts; 1,000 services x 10 endpoints serve 1,000
 * proxies (time and memory printed, not asserted). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <unistd.h>

#include "tests/unit/xds/xds_tests.h"

static xds_snapshot *snap(xds_gen *g, const mesh_registry *reg, const xds_proxy *p)
{
    xds_snapshot *s = NULL;
    mid_result r = xds_gen_snapshot(g, reg, p, &s);
    if (!mid_is_ok(r)) fail_msg("xds_gen_snapshot: %s", mid_errmsg());
    return s;
}

/* Names of the resources whose version differs between a and b (both must
 * hold the same names), as a ';'-joined list. */
static void changed(const xds_snapshot *a, const xds_snapshot *b, xds_type t, char *out,
                    size_t cap)
{
    out[0] = '\0';
    assert_int_equal(xds_snapshot_count(a, t), xds_snapshot_count(b, t));
    for (size_t i = 0; i < xds_snapshot_count(a, t); i++) {
        const xds_resource *ra = xds_snapshot_at(a, t, i);
        const xds_resource *rb = t_res(b, t, ra->name);
        if (strcmp(ra->version, rb->version) == 0) continue;
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? ";" : "", ra->name);
    }
}

static void test_versions_stable_and_local(void **state)
{
    (void)state;
    mesh_registry *r1 = t_bookinfo(1, NULL);
    mesh_registry *r2 = t_bookinfo(2, NULL);          /* equal content, new revision */
    mesh_registry *r3 = t_bookinfo(3, "10.0.0.99");   /* one endpoint moved */
    xds_gen *g1 = NULL, *g2 = NULL;
    OK(xds_gen_new(&g1));
    OK(xds_gen_new(&g2));
    xds_proxy sc = t_sidecar(ID_RATINGS);
    xds_proxy px = t_proxyless(ID_RATINGS, "default");
    const xds_proxy *proxies[] = {&sc, &px};
    for (size_t k = 0; k < 2; k++) {
        xds_snapshot *a = snap(g1, r1, proxies[k]);
        xds_snapshot *b = snap(g2, r2, proxies[k]); /* another generator */
        xds_snapshot *c = snap(g1, r3, proxies[k]);
        char diff[2048];
        for (int t = 0; t < XDS_TYPE_COUNT; t++) {
            assert_string_equal(xds_snapshot_version(a, (xds_type)t),
                                xds_snapshot_version(b, (xds_type)t));
            changed(a, b, (xds_type)t, diff, sizeof diff);
            assert_string_equal(diff, "");
        }
        /* only the reviews assignments change */
        changed(a, c, XDS_EDS, diff, sizeof diff);
        assert_string_equal(diff, "outbound|3306||" H_REVIEWS ";outbound|9080||" H_REVIEWS
                                  ";outbound|9090||" H_REVIEWS);
        assert_string_not_equal(xds_snapshot_version(a, XDS_EDS), xds_snapshot_version(c, XDS_EDS));
        for (int t = 0; t < XDS_TYPE_COUNT; t++) {
            if (t == XDS_EDS) continue;
            changed(a, c, (xds_type)t, diff, sizeof diff);
            assert_string_equal(diff, "");
            assert_string_equal(xds_snapshot_version(a, (xds_type)t),
                                xds_snapshot_version(c, (xds_type)t));
        }
        xds_snapshot_unref(a);
        xds_snapshot_unref(b);
        xds_snapshot_unref(c);
    }
    xds_proxy_clear(&sc);
    xds_proxy_clear(&px);
    xds_gen_free(g1);
    xds_gen_free(g2);
    mesh_registry_unref(r1);
    mesh_registry_unref(r2);
    mesh_registry_unref(r3);
}

static void test_identity_change_changes_cluster(void **state)
{
    (void)state;
    /* a new endpoint identity shows in the SAN list: CDS changes for the
     * clusters of that service only */
    static const t_port ports[] = {{"http", 80, MESH_PROTO_HTTP, 0}};
    t_endpoint ea = {"10.0.0.1", "a", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL};
    t_endpoint eb = {"10.0.0.2", "b", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL};
    mesh_service *s1[] = {t_service("ns", "a", "a.ns", 1, ports, 1, &ea, 1),
                          t_service("ns", "b", "b.ns", 1, ports, 1, &eb, 1)};
    eb.service_account = "b2";
    mesh_service *s2[] = {t_service("ns", "a", "a.ns", 1, ports, 1, &ea, 1),
                          t_service("ns", "b", "b.ns", 1, ports, 1, &eb, 1)};
    mesh_registry *r1 = t_registry(1, s1, 2, NULL, 0), *r2 = t_registry(2, s2, 2, NULL, 0);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_proxy p = t_sidecar("spiffe://" TD "/ns/ns/sa/a");
    xds_snapshot *a = snap(g, r1, &p), *b = snap(g, r2, &p);
    char diff[512];
    changed(a, b, XDS_CDS, diff, sizeof diff);
    assert_string_equal(diff, "outbound|80||b.ns");
    changed(a, b, XDS_EDS, diff, sizeof diff);
    assert_string_equal(diff, "");
    xds_snapshot_unref(a);
    xds_snapshot_unref(b);
    xds_proxy_clear(&p);
    xds_gen_free(g);
    mesh_registry_unref(r1);
    mesh_registry_unref(r2);
}

static void test_sharing(void **state)
{
    (void)state;
    mesh_registry *reg = t_bookinfo(1, NULL);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_proxy a = t_sidecar(ID_RATINGS), b = t_sidecar(ID_REVIEWS);
    xds_snapshot *sa = snap(g, reg, &a);
    xds_gen_stats st;
    xds_gen_get_stats(g, &st);
    uint64_t shared = st.shared_builds;
    assert_true(shared >= 3); /* eds, clusters, sidecar listeners+routes */
    xds_snapshot *sb = snap(g, reg, &b);
    xds_gen_get_stats(g, &st);
    assert_int_equal(st.shared_builds, shared); /* nothing outbound rebuilt */
    assert_int_equal(st.inbound_builds, 2);
    /* the same bytes, not copies */
    const char *names[] = {"outbound|9080||" H_REVIEWS, "outbound|443||" H_EXT};
    for (size_t i = 0; i < 2; i++) {
        assert_ptr_equal(t_res(sa, XDS_CDS, names[i])->bytes, t_res(sb, XDS_CDS, names[i])->bytes);
        assert_ptr_equal(t_res(sa, XDS_EDS, names[i])->bytes, t_res(sb, XDS_EDS, names[i])->bytes);
    }
    assert_ptr_equal(t_res(sa, XDS_RDS, "9080")->bytes, t_res(sb, XDS_RDS, "9080")->bytes);
    /* per identity: different inbound parts */
    assert_null(xds_snapshot_find(sb, XDS_LDS, "127.0.0.1_9090"));
    (void)t_res(sa, XDS_LDS, "127.0.0.1_9090");
    assert_string_not_equal(xds_snapshot_version(sa, XDS_LDS), xds_snapshot_version(sb, XDS_LDS));
    /* the same identity again: the cached snapshot */
    xds_snapshot *sa2 = snap(g, reg, &a);
    assert_ptr_equal(sa, sa2);
    xds_gen_get_stats(g, &st);
    assert_int_equal(st.snapshot_hits, 1);
    /* proxyless: one snapshot per certificate provider, EDS shared with
     * sidecars */
    xds_proxy p1 = t_proxyless(ID_RATINGS, NULL), p2 = t_proxyless(ID_REVIEWS, NULL);
    xds_proxy p3 = t_proxyless(ID_REVIEWS, "default");
    xds_snapshot *s1 = snap(g, reg, &p1), *s2 = snap(g, reg, &p2), *s3 = snap(g, reg, &p3);
    assert_ptr_equal(s1, s2);
    assert_ptr_not_equal(s1, s3);
    assert_ptr_equal(t_res(s1, XDS_EDS, names[0])->bytes, t_res(sa, XDS_EDS, names[0])->bytes);
    assert_ptr_equal(t_res(s1, XDS_LDS, H_RATINGS)->bytes, t_res(s3, XDS_LDS, H_RATINGS)->bytes);
    assert_string_not_equal(xds_snapshot_version(s1, XDS_CDS), xds_snapshot_version(s3, XDS_CDS));
    /* a new registry drops every cache; old snapshots stay valid */
    mesh_registry *reg2 = t_bookinfo(2, "10.0.0.77");
    xds_snapshot *sa3 = snap(g, reg2, &a);
    assert_ptr_not_equal(sa, sa3);
    xds_gen_get_stats(g, &st);
    assert_int_equal(st.flushes, 1);
    mesh_registry_unref(reg); /* the generator no longer holds it either */
    assert_non_null(t_res(sa, XDS_CDS, names[0])->bytes);
    xds_snapshot *snaps[] = {sa, sb, sa2, s1, s2, s3, sa3};
    for (size_t i = 0; i < sizeof snaps / sizeof snaps[0]; i++) xds_snapshot_unref(snaps[i]);
    xds_proxy *ps[] = {&a, &b, &p1, &p2, &p3};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) xds_proxy_clear(ps[i]);
    xds_gen_free(g);
    mesh_registry_unref(reg2);
}

static void test_listener_chunks(void **state)
{
    (void)state;
    /* 100 services on distinct ports: the outbound listeners come in
     * shared chunks; a proxy listening on one of those ports gets that
     * chunk copied without it and the other chunks by reference */
    enum { NS = 100 };
    mesh_service *svcs[NS];
    for (size_t i = 0; i < NS; i++) {
        char name[16], host[32], sa[16];
        snprintf(name, sizeof name, "s%zu", i);
        snprintf(host, sizeof host, "s%zu.ns", i);
        snprintf(sa, sizeof sa, "sa%zu", i);
        t_port port = {"http", (uint32_t)(10000 + i), i % 3 ? MESH_PROTO_HTTP : MESH_PROTO_TCP, 0};
        t_endpoint ep = {"10.0.0.1", sa, NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL};
        svcs[i] = t_service("ns", name, host, 1, &port, 1, &ep, 1);
    }
    mesh_registry *reg = t_registry(1, svcs, NS, NULL, 0);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_proxy a = t_sidecar("spiffe://" TD "/ns/ns/sa/sa50");
    xds_proxy b = t_sidecar("spiffe://" TD "/ns/ns/sa/sa99");
    xds_snapshot *sa = snap(g, reg, &a), *sb = snap(g, reg, &b);
    assert_int_equal(xds_snapshot_count(sa, XDS_LDS), NS); /* 99 outbound + 1 inbound */
    assert_null(xds_snapshot_find(sa, XDS_LDS, "127.0.0.1_10050"));
    assert_null(xds_snapshot_find(sb, XDS_LDS, "127.0.0.1_10099"));
    (void)t_res(sa, XDS_LDS, "inbound|10050");
    for (size_t i = 0; i < NS; i++) {
        char name[32];
        snprintf(name, sizeof name, "127.0.0.1_%zu", 10000 + i);
        const xds_resource *ra = xds_snapshot_find(sa, XDS_LDS, name);
        const xds_resource *rb = xds_snapshot_find(sb, XDS_LDS, name);
        assert_int_equal(ra == NULL, i == 50);
        assert_int_equal(rb == NULL, i == 99);
        if (!ra || !rb) continue;
        assert_string_equal(ra->version, rb->version);
        /* ports 10000..10031 are in a chunk neither proxy listens in */
        if (i < 32) assert_ptr_equal(ra->bytes, rb->bytes);
    }
    /* TCP ports have no route config, HTTP ports one each */
    assert_null(xds_snapshot_find(sa, XDS_RDS, "10000"));
    (void)t_res(sa, XDS_RDS, "10001");
    xds_snapshot_unref(sa);
    xds_snapshot_unref(sb);
    xds_proxy_clear(&a);
    xds_proxy_clear(&b);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

static void test_mixed_protocols_on_one_port(void **state)
{
    (void)state;
    /* the first service in registry order ((namespace, name) order) decides
     * a port number's kind: "a" (TCP) wins over "b" (HTTP) */
    t_port tcp = {"tcp", 7000, MESH_PROTO_TCP, 0}, http = {"http", 7000, MESH_PROTO_HTTP, 0};
    t_port own = {"http", 8080, MESH_PROTO_HTTP, 0};
    t_endpoint ep = {"10.0.0.9", "c", NULL, MESH_HEALTH_HEALTHY, NULL, 0, NULL, NULL};
    mesh_service *svcs[] = {t_service("ns", "b", "b.ns", 1, &http, 1, NULL, 0),
                            t_service("ns", "a", "a.ns", 1, &tcp, 1, NULL, 0),
                            t_service("ns", "c", "c.ns", 1, &own, 1, &ep, 1)};
    mesh_registry *reg = t_registry(1, svcs, 3, NULL, 0);
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_proxy p = t_sidecar("spiffe://" TD "/ns/ns/sa/c");
    xds_snapshot *s = snap(g, reg, &p);
    const xds_resource *r = t_res(s, XDS_LDS, "127.0.0.1_7000");
    assert_non_null(memmem(r->bytes, r->len, "outbound|7000||a.ns", 19));
    assert_null(memmem(r->bytes, r->len, "b.ns", 4));
    assert_null(xds_snapshot_find(s, XDS_RDS, "7000"));
    /* both still have clusters and endpoints */
    (void)t_res(s, XDS_CDS, "outbound|7000||b.ns");
    (void)t_res(s, XDS_EDS, "outbound|7000||b.ns");
    xds_snapshot_unref(s);
    xds_proxy_clear(&p);
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = 0;
    fclose(f);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Heap bytes in use (glibc; 0 elsewhere or under ASan, which keeps its own
 * heap). RSS alone hides reuse of memory freed by earlier tests. */
static long heap_kb(void)
{
#ifdef __GLIBC__
    struct mallinfo2 mi = mallinfo2();
    return (long)(mi.uordblks / 1024);
#else
    return 0;
#endif
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

enum { SCALE_SERVICES = 1000, SCALE_ENDPOINTS = 10 };

static mesh_registry *scale_registry(int64_t rev, const char *moved)
{
    static const t_port ports[] = {{"http", 8080, MESH_PROTO_HTTP, 0},
                                   {"grpc", 9090, MESH_PROTO_GRPC, 0}};
    mesh_service **svcs = calloc(SCALE_SERVICES, sizeof *svcs);
    assert_non_null(svcs);
    for (size_t i = 0; i < SCALE_SERVICES; i++) {
        char name[32], host[64], sa[32], ips[SCALE_ENDPOINTS][24];
        t_endpoint eps[SCALE_ENDPOINTS];
        snprintf(name, sizeof name, "svc%zu", i);
        snprintf(host, sizeof host, "svc%zu.ns%zu.svc.cluster.local", i, i % 10);
        snprintf(sa, sizeof sa, "sa%zu", i);
        for (size_t e = 0; e < SCALE_ENDPOINTS; e++) {
            snprintf(ips[e], sizeof ips[e], "10.%zu.%zu.%zu", i / 250, i % 250, e + 1);
            eps[e] = (t_endpoint){ips[e], sa, NULL, MESH_HEALTH_HEALTHY, NULL, 0, "app", name};
        }
        if (moved && i == 7) eps[0].address = moved;
        char ns[16];
        snprintf(ns, sizeof ns, "ns%zu", i % 10);
        svcs[i] = t_service(ns, name, host, 1, ports, 2, eps, SCALE_ENDPOINTS);
    }
    mesh_policy *pols[] = {t_policy("ns1", "allow-ns1", MESH_ACTION_ALLOW, NULL, NULL,
                                    TD "/ns/ns2/sa/*")};
    mesh_registry *reg = t_registry(rev, svcs, SCALE_SERVICES, pols, 1);
    free(svcs);
    return reg;
}

static void test_scale_1000(void **state)
{
    (void)state;
    long rss0 = rss_kb(), heap0 = heap_kb();
    mesh_registry *reg = scale_registry(1, NULL);
    long rss_reg = rss_kb(), heap_reg = heap_kb();
    xds_gen *g = NULL;
    OK(xds_gen_new(&g));
    xds_snapshot **snaps = calloc(SCALE_SERVICES, sizeof *snaps);
    assert_non_null(snaps);
    double t0 = now_s(), t_first = 0, t_last = 0;
    for (size_t i = 0; i < SCALE_SERVICES; i++) {
        char id[96];
        snprintf(id, sizeof id, "spiffe://" TD "/ns/ns%zu/sa/sa%zu", i % 10, i);
        xds_proxy p = t_sidecar(id);
        double ts = now_s();
        snaps[i] = snap(g, reg, &p);
        double te = now_s() - ts;
        if (i == 0) t_first = te;
        if (i == SCALE_SERVICES - 1) t_last = te;
        xds_proxy_clear(&p);
    }
    double t_all = now_s() - t0;
    long rss_all = rss_kb(), heap_all = heap_kb();
    xds_snapshot *s = snaps[SCALE_SERVICES - 1];
    assert_int_equal(xds_snapshot_count(s, XDS_CDS), 2 * SCALE_SERVICES + 2);
    assert_int_equal(xds_snapshot_count(s, XDS_EDS), 2 * SCALE_SERVICES);
    assert_int_equal(xds_snapshot_count(s, XDS_LDS), 2); /* inbound 8080, 9090 */
    assert_int_equal(xds_snapshot_count(s, XDS_RDS), 2);
    assert_ptr_equal(t_res(snaps[0], XDS_EDS, "outbound|8080||svc5.ns5.svc.cluster.local")->bytes,
                     t_res(s, XDS_EDS, "outbound|8080||svc5.ns5.svc.cluster.local")->bytes);
    xds_gen_stats st;
    xds_gen_get_stats(g, &st);
    assert_int_equal(st.snapshot_builds, SCALE_SERVICES);
    assert_true(st.shared_builds <= 3);
    printf("xds scale: %d services x %d endpoints (registry: RSS +%ld KB, heap +%ld KB); %d "
           "sidecar snapshots in %.3f s (first %.1f ms incl. shared parts, last %.1f us); "
           "generator and snapshots: RSS +%ld KB, heap +%ld KB\n",
           SCALE_SERVICES, SCALE_ENDPOINTS, rss_reg - rss0, heap_reg - heap0, SCALE_SERVICES,
           t_all, t_first * 1e3, t_last * 1e6, rss_all - rss_reg, heap_all - heap_reg);

    /* one endpoint moves: a rebuild for the new registry; only that
     * service's assignments change */
    mesh_registry *reg2 = scale_registry(2, "10.99.0.1");
    char id[96];
    snprintf(id, sizeof id, "spiffe://" TD "/ns/ns3/sa/sa3");
    xds_proxy p = t_sidecar(id);
    t0 = now_s();
    xds_snapshot *s2 = snap(g, reg2, &p);
    double t_rebuild = now_s() - t0;
    xds_snapshot *s1 = snaps[3];
    size_t nchanged = 0;
    for (size_t i = 0; i < xds_snapshot_count(s1, XDS_EDS); i++) {
        const xds_resource *a = xds_snapshot_at(s1, XDS_EDS, i);
        if (strcmp(a->version, t_res(s2, XDS_EDS, a->name)->version) != 0) nchanged++;
    }
    assert_int_equal(nchanged, 2);
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        if (t == XDS_EDS) continue;
        assert_string_equal(xds_snapshot_version(s1, (xds_type)t),
                            xds_snapshot_version(s2, (xds_type)t));
    }
    printf("xds scale: rebuild after one endpoint change %.1f ms\n", t_rebuild * 1e3);
    xds_snapshot_unref(s2);
    xds_proxy_clear(&p);
    for (size_t i = 0; i < SCALE_SERVICES; i++) xds_snapshot_unref(snaps[i]);
    free(snaps);
    xds_gen_free(g);
    mesh_registry_unref(reg);
    mesh_registry_unref(reg2);
}

int run_xds_cache_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_stable_and_local),
        cmocka_unit_test(test_identity_change_changes_cluster),
        cmocka_unit_test(test_sharing),
        cmocka_unit_test(test_listener_chunks),
        cmocka_unit_test(test_mixed_protocols_on_one_port),
        cmocka_unit_test(test_scale_1000),
    };
    return cmocka_run_group_tests_name("xds_cache", tests, NULL, NULL);
}
