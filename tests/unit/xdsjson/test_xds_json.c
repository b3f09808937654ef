/* Unit tests for meshcore/xds_json.c: every resource the xDS generator makes
 * for a sidecar and a proxyless client converts to JSON with every nested
 * Any opened (no base64 fallback), and the JSON shows the fields in their
 * proto3 JSON form (wrappers, durations, enums, maps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "meshcore/model.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_json.h"
#include "meshcore/xds_snapshot.h"
#include "meshcore/yaml_load.h"
#include "tests/unit/xdsjson/xdsjson_tests.h"

#define TD "example.org"
#define ID_RATINGS "spiffe://" TD "/ns/bookinfo/sa/ratings"
#define ID_REVIEWS "spiffe://" TD "/ns/bookinfo/sa/reviews"
#define PFX "type.googleapis.com/"

static const char registry_yaml[] =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata: {name: reviews, namespace: bookinfo}\n"
    "spec:\n"
    "  hosts: [reviews.bookinfo.svc]\n"
    "  ports:\n"
    "  - {number: 9080, name: http, protocol: HTTP}\n"
    "  - {number: 9090, name: grpc, protocol: GRPC}\n"
    "  - {number: 3306, name: tcp, protocol: TCP}\n"
    "  resolution: STATIC\n"
    "  endpoints:\n"
    "  - {address: 10.0.0.1, serviceAccount: reviews, labels: {app: reviews}}\n"
    "  - {address: 10.0.0.2, serviceAccount: reviews, labels: {app: reviews}}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata: {name: ratings, namespace: bookinfo}\n"
    "spec:\n"
    "  hosts: [ratings.bookinfo.svc]\n"
    "  ports:\n"
    "  - {number: 9080, name: http, protocol: HTTP}\n"
    "  - {number: 27017, name: mongo, protocol: MONGO}\n"
    "  resolution: STATIC\n"
    "  endpoints:\n"
    "  - {address: 10.0.1.1, serviceAccount: ratings, labels: {app: ratings}}\n"
    "---\n"
    "apiVersion: security.istio.io/v1\n"
    "kind: AuthorizationPolicy\n"
    "metadata: {name: ratings-viewer, namespace: bookinfo}\n"
    "spec:\n"
    "  selector: {matchLabels: {app: ratings}}\n"
    "  action: ALLOW\n"
    "  rules:\n"
    "  - from: [{source: {principals: [\"" TD "/ns/bookinfo/sa/reviews\"]}}]\n"
    "    to: [{operation: {methods: [GET], paths: [\"/ratings/*\"]}}]\n"
    "---\n"
    "apiVersion: security.istio.io/v1\n"
    "kind: AuthorizationPolicy\n"
    "metadata: {name: no-mongo-from-elsewhere, namespace: bookinfo}\n"
    "spec:\n"
    "  selector: {matchLabels: {app: ratings}}\n"
    "  action: DENY\n"
    "  rules:\n"
    "  - from: [{source: {notPrincipals: [\"" TD "/ns/bookinfo/sa/reviews\"]}}]\n"
    "    to: [{operation: {ports: [\"27017\"]}}]\n";

static mesh_registry *registry(void)
{
    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_result r = mesh_yaml_parse(registry_yaml, sizeof registry_yaml - 1, "test.yaml", &docs, &n);
    if (!mid_is_ok(r)) fail_msg("yaml: %s", mid_errmsg());
    mesh_service **svcs = calloc(n, sizeof *svcs);
    mesh_policy **pols = calloc(n, sizeof *pols);
    assert_true(svcs && pols);
    size_t ns = 0, np = 0;
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind == MESH_KIND_SERVICE) {
            svcs[ns++] = docs[i].u.service;
            docs[i].u.service = NULL;
        } else {
            pols[np++] = docs[i].u.policy;
            docs[i].u.policy = NULL;
        }
    }
    mesh_doc_list_free(docs, n);
    mesh_registry *reg = NULL;
    r = mesh_registry_new(TD, 1, svcs, ns, pols, np, &reg);
    if (!mid_is_ok(r)) fail_msg("registry: %s", mid_errmsg());
    return reg;
}

static xds_proxy proxy(const char *id, int proxyless)
{
    xds_proxy p = {0};
    p.node_id = strdup("n1");
    p.node_cluster = strdup("test");
    p.spiffe_id = strdup(id);
    p.proxyless = proxyless;
    if (proxyless) p.cert_provider = strdup("default");
    else p.sds_cluster = strdup(XDS_SDS_CLUSTER_DEFAULT);
    return p;
}

/* ---- walking the JSON ------------------------------------------------------------------- */

typedef struct {
    char urls[32][160]; /* distinct "@type"s seen */
    size_t n;
} seen_types;

static void note_type(seen_types *s, const char *url)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->urls[i], url) == 0) return;
    assert_true(s->n < sizeof s->urls / sizeof s->urls[0]);
    snprintf(s->urls[s->n++], sizeof s->urls[0], "%s", url);
}

static int saw(const seen_types *s, const char *url)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->urls[i], url) == 0) return 1;
    return 0;
}

/* Every object with "@type" names a type xds_json_resolve knows (so none
 * fell back to base64), recursively. */
static void walk(json_t *v, seen_types *s)
{
    if (json_is_object(v)) {
        json_t *t = json_object_get(v, "@type");
        if (t != NULL) {
            assert_true(json_is_string(t));
            if (xds_json_resolve(NULL, json_string_value(t)) == NULL)
                fail_msg("an Any of %s was not opened", json_string_value(t));
            note_type(s, json_string_value(t));
        }
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c) walk(c, s);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) walk(c, s);
    }
}

/* json_t at a path of object keys and array indexes ("a.0.b"); NULL if absent. */
static json_t *at(json_t *v, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && v; tok = strtok_r(NULL, ".", &save)) {
        char *end = NULL;
        long i = strtol(tok, &end, 10);
        v = (json_is_array(v) && *end == '\0') ? json_array_get(v, (size_t)i)
                                                : json_object_get(v, tok);
    }
    return v;
}

/* Converts every resource of snapshot s and checks the walk; appends each as
 * a JSON line to `dump` (may be NULL); by_type[t] gets a new array of the
 * type's resources (the caller decrefs). */
static void convert_all(const xds_snapshot *s, seen_types *seen, FILE *dump, json_t **by_type)
{
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        json_t *arr = json_array();
        assert_non_null(arr);
        for (size_t i = 0; i < xds_snapshot_count(s, (xds_type)t); i++) {
            const xds_resource *r = xds_snapshot_at(s, (xds_type)t, i);
            json_t *j = NULL;
            mid_result res = xds_json_resource(xds_type_url((xds_type)t), r->bytes, r->len, &j);
            if (!mid_is_ok(res)) fail_msg("%s %s: %s", xds_type_short((xds_type)t), r->name, mid_errmsg());
            assert_string_equal(json_string_value(json_object_get(j, "@type")), xds_type_url((xds_type)t));
            walk(j, seen);
            if (dump != NULL) {
                char *line = json_dumps(j, JSON_COMPACT);
                assert_non_null(line);
                fprintf(dump, "%s\n", line);
                free(line);
            }
            assert_int_equal(json_array_append_new(arr, j), 0);
        }
        by_type[t] = arr;
    }
}

/* The element of `arr` whose "name" (or "clusterName") equals name. */
static json_t *named(json_t *arr, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(arr, i, c) {
        json_t *n = json_object_get(c, "name");
        if (n == NULL) n = json_object_get(c, "clusterName");
        if (json_is_string(n) && strcmp(json_string_value(n), name) == 0) return c;
    }
    return NULL;
}

static void test_sidecar_and_proxyless(void **state)
{
    (void)state;
    mesh_registry *reg = registry();
    xds_gen *g = NULL;
    assert_true(mid_is_ok(xds_gen_new(&g)));
    const char *dump_path = getenv("XDS_JSON_DUMP");
    FILE *dump = dump_path ? fopen(dump_path, "w") : NULL;
    if (dump_path != NULL && dump == NULL) fail_msg("cannot write %s", dump_path);
    seen_types seen = {0};

    xds_proxy px[] = {proxy(ID_RATINGS, 0), proxy(ID_REVIEWS, 0), proxy(ID_REVIEWS, 1)};
    json_t *by_type[3][XDS_TYPE_COUNT];
    for (size_t k = 0; k < 3; k++) {
        xds_snapshot *s = NULL;
        mid_result r = xds_gen_snapshot(g, reg, &px[k], &s);
        if (!mid_is_ok(r)) fail_msg("snapshot %zu: %s", k, mid_errmsg());
        convert_all(s, &seen, dump, by_type[k]);
        xds_snapshot_unref(s);
    }
    if (dump != NULL) assert_int_equal(fclose(dump), 0);

    /* every typed config meshid nests showed up, opened */
    static const char *const want[] = {
        PFX "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        PFX "envoy.extensions.filters.http.router.v3.Router",
        PFX "envoy.extensions.filters.http.rbac.v3.RBAC",
        PFX "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        PFX "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        PFX "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        PFX "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!saw(&seen, want[i])) fail_msg("no %s in any resource", want[i]);

    /* the ratings sidecar: inbound listener with mTLS required (a BoolValue
     * shown as a plain true) and the RBAC filter before the router */
    json_t *lds = by_type[0][XDS_LDS];
    json_t *inbound = named(lds, "inbound|9080");
    if (inbound == NULL) fail_msg("no inbound|9080 listener");
    assert_string_equal(json_string_value(at(inbound, "trafficDirection")), "INBOUND");
    json_t *chain = at(inbound, "filterChains.0");
    assert_non_null(chain);
    assert_true(json_is_true(at(chain, "transportSocket.typedConfig.requireClientCertificate")));
    json_t *hcm = at(chain, "filters.0.typedConfig");
    assert_non_null(hcm);
    json_t *filters = json_object_get(hcm, "httpFilters");
    assert_true(json_array_size(filters) >= 2);
    int allow = 0;
    for (size_t i = 0; i + 1 < json_array_size(filters); i++) {
        json_t *tc = at(json_array_get(filters, i), "typedConfig");
        assert_string_equal(json_string_value(json_object_get(tc, "@type")),
                            PFX "envoy.extensions.filters.http.rbac.v3.RBAC");
        json_t *action = at(tc, "rules.action"); /* absent: ALLOW, the enum's zero */
        if (action == NULL) allow++;
        else assert_string_equal(json_string_value(action), "DENY");
        assert_true(json_is_object(at(tc, "rules.policies"))); /* a map */
    }
    assert_int_equal(allow, 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(filters, json_array_size(filters) - 1), "name")),
        "envoy.filters.http.router");

    /* an outbound EDS cluster: Duration, oneof enum, ADS config source, h2 */
    json_t *cds = by_type[1][XDS_CDS];
    json_t *cl = named(cds, "outbound|9090||reviews.bookinfo.svc");
    if (cl == NULL) fail_msg("no outbound|9090||reviews.bookinfo.svc cluster");
    assert_string_equal(json_string_value(at(cl, "type")), "EDS");
    json_t *ct = at(cl, "connectTimeout");
    assert_true(json_is_string(ct) && json_string_value(ct)[strlen(json_string_value(ct)) - 1] == 's');
    assert_true(json_is_object(at(cl, "edsClusterConfig.edsConfig.ads")));
    json_t *h2 = json_object_get(at(cl, "typedExtensionProtocolOptions"),
                                 "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    assert_true(json_is_object(at(h2, "explicitHttpConfig.http2ProtocolOptions")));
    json_t *san = at(cl, "transportSocket.typedConfig.commonTlsContext.combinedValidationContext."
                         "defaultValidationContext.matchTypedSubjectAltNames.0");
    assert_non_null(san);
    assert_string_equal(json_string_value(json_object_get(san, "sanType")), "URI");
    assert_string_equal(json_string_value(at(san, "matcher.exact")), ID_REVIEWS);

    /* endpoints: two healthy ones, weights as plain numbers */
    json_t *cla = named(by_type[1][XDS_EDS], "outbound|9080||reviews.bookinfo.svc");
    if (cla == NULL) fail_msg("no ClusterLoadAssignment for reviews:9080");
    assert_int_equal(json_array_size(at(cla, "endpoints.0.lbEndpoints")), 2);
    json_t *addr = at(cla, "endpoints.0.lbEndpoints.0.endpoint.address.socketAddress");
    assert_non_null(addr);
    assert_int_equal(json_integer_value(json_object_get(addr, "portValue")), 9080);

    /* the proxyless client got an api_listener */
    json_t *pl = by_type[2][XDS_LDS];
    assert_true(json_array_size(pl) > 0);
    assert_non_null(at(json_array_get(pl, 0), "apiListener.apiListener.@type"));

    for (size_t k = 0; k < 3; k++) {
        for (int t = 0; t < XDS_TYPE_COUNT; t++) json_decref(by_type[k][t]);
        xds_proxy_clear(&px[k]);
    }
    xds_gen_free(g);
    mesh_registry_unref(reg);
}

static void test_table_and_errors(void **state)
{
    (void)state;
    size_t n = xds_json_n_types();
    assert_true(n >= 15);
    for (size_t i = 0; i < n; i++) {
        char url[256];
        snprintf(url, sizeof url, PFX "%s", xds_json_type(i)->name);
        assert_ptr_equal(xds_json_resolve(NULL, url), xds_json_type(i));
    }
    assert_null(xds_json_type(n));
    assert_null(xds_json_resolve(NULL, PFX "envoy.config.cluster.v3.Clusters"));
    assert_null(xds_json_resolve(NULL, "example.com/envoy.config.cluster.v3.Cluster"));
    assert_null(xds_json_resolve(NULL, "envoy.config.cluster.v3.Cluster"));
    assert_null(xds_json_resolve(NULL, NULL));

    json_t *j = (json_t *)&j;
    static const uint8_t garbage[] = {0x0a, 0x7f, 'x'};
    assert_int_equal(xds_json_resource(XDS_TYPE_URL_CDS, garbage, sizeof garbage, &j).err, MID_E_INVALID);
    assert_null(j);
    assert_int_equal(xds_json_resource("", garbage, sizeof garbage, &j).err, MID_E_INVALID);
    /* unknown types are shown, as base64 */
    assert_true(mid_is_ok(xds_json_resource(PFX "x.Y", garbage, sizeof garbage, &j)));
    assert_string_equal(json_string_value(json_object_get(j, "value")), "Cn94");
    json_decref(j);
    /* an empty Cluster is {"@type"} only */
    assert_true(mid_is_ok(xds_json_resource(XDS_TYPE_URL_CDS, NULL, 0, &j)));
    assert_int_equal(json_object_size(j), 1);
    json_decref(j);
}

int run_xds_json_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sidecar_and_proxyless),
        cmocka_unit_test(test_table_and_errors),
    };
    return cmocka_run_group_tests_name("meshcore/xds_json", tests, NULL, NULL);
}
