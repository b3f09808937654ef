/* libFuzzer target for the ADS server's request intake (meshcore/ads.c,
 * meshcore/xds_gen.c).
 *
 * The bytes are decoded as the runtime decodes a request (fuzz_decode.h:
 * rpc_codec_unpack with the server's limits, fixed-point and tight-arena
 * checks) as a DiscoveryRequest (StreamAggregatedResources) and as a
 * DeltaDiscoveryRequest (DeltaAggregatedResources). What the server then does
 * with the untrusted fields runs without a network:
 *   - the type URL -> xds_type_from_url: OK only for the four served URLs;
 *   - the node -> xds_proxy_from_node, on plaintext (no peer) and as a TLS
 *     peer with a fixed SVID: the identity rules of meshcore/xds_gen.h;
 *   - for an accepted proxy, xds_gen_snapshot against a fixed registry (built
 *     from YAML at start-up), and every requested name looked up in it.
 *
 * Aborts when:
 *   - a type URL other than the four is accepted, or one of them refused;
 *   - xds_proxy_from_node fails with an error outside its contract, succeeds
 *     without an identity, or over TLS returns an identity other than the
 *     peer's; on failure the struct is not zeroed;
 *   - xds_gen_snapshot fails with anything but NOT_FOUND (a sidecar with no
 *     registered endpoint) for an accepted proxy, or a proxyless client is
 *     refused; a looked-up resource does not carry the name asked for.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/log.h"
#include "meshcore/model.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_snapshot.h"
#include "meshcore/yaml_load.h"
#include "tests/fuzz/fuzz_decode.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;

#define TD "fuzz.test"
#define PEER "spiffe://" TD "/ns/shop/sa/web"

static const char REGISTRY_YAML[] =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata: {name: web, namespace: shop}\n"
    "spec:\n"
    "  hosts: [web.shop.svc]\n"
    "  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: grpc, protocol: GRPC}]\n"
    "  endpoints:\n"
    "  - {address: 10.0.0.1, labels: {app: web}, serviceAccount: web}\n"
    "  - {address: 10.0.0.2, ports: {http: 18080}, labels: {app: web}, serviceAccount: web}\n"
    "---\n"
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata: {name: db, namespace: shop}\n"
    "spec:\n"
    "  hosts: [db.shop.svc]\n"
    "  ports: [{number: 5432, name: tcp, protocol: TCP}]\n"
    "  endpoints:\n"
    "  - {address: 10.0.1.1, serviceAccount: \"spiffe://" TD "/ns/shop/sa/db\"}\n"
    "---\n"
    "apiVersion: security.istio.io/v1\n"
    "kind: AuthorizationPolicy\n"
    "metadata: {name: web-viewers, namespace: shop}\n"
    "spec:\n"
    "  selector: {matchLabels: {app: web}}\n"
    "  rules:\n"
    "  - from: [{source: {principals: [\"" TD "/ns/shop/sa/*\"]}}]\n"
    "    to: [{operation: {methods: [GET], paths: [\"/api/*\"]}}]\n";

static mesh_registry *g_reg;
static xds_gen *g_gen;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_OFF);
    fuzz_decode_init();
    mesh_doc *docs = NULL;
    size_t n = 0;
    CHECK(mid_is_ok(mesh_yaml_parse(REGISTRY_YAML, sizeof REGISTRY_YAML - 1, "fuzz.yaml", &docs, &n)));
    /* mesh_registry_new takes the arrays too: heap, not stack */
    mesh_service **svcs = calloc(n, sizeof *svcs);
    mesh_policy **pols = calloc(n, sizeof *pols);
    CHECK(svcs != NULL && pols != NULL);
    size_t ns = 0, np = 0;
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind == MESH_KIND_SERVICE) CHECK(mid_is_ok(mesh_service_clone(docs[i].u.service, &svcs[ns++])));
        else CHECK(mid_is_ok(mesh_policy_clone(docs[i].u.policy, &pols[np++])));
    }
    mesh_doc_list_free(docs, n);
    CHECK(mid_is_ok(mesh_registry_new(TD, 1, svcs, ns, pols, np, &g_reg)));
    CHECK(mid_is_ok(xds_gen_new(&g_gen)));
    return 0;
}

static void check_type_url(const char *url)
{
    if (!url) return;
    xds_type t;
    mid_result r = xds_type_from_url(url, &t);
    bool known = false;
    for (int i = 0; i < XDS_TYPE_COUNT; i++) known |= strcmp(url, xds_type_url((xds_type)i)) == 0;
    CHECK(mid_is_ok(r) == known);
    if (known) CHECK(strcmp(xds_type_url(t), url) == 0);
    else CHECK(r.err == MID_E_INVALID);
}

static bool zeroed(const xds_proxy *p)
{
    static const xds_proxy zero;
    return memcmp(p, &zero, sizeof zero) == 0;
}

/* The node as the server sees it, plus the names the request asks for. */
static void check_node(const Envoy__Config__Core__V3__Node *node, char **names, size_t n_names)
{
    for (int tls = 0; tls < 2; tls++) {
        xds_proxy p;
        mid_result r = xds_proxy_from_node(node, tls ? PEER : NULL, &p);
        if (!mid_is_ok(r)) {
            CHECK(r.err == MID_E_DENIED || r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE);
            CHECK(zeroed(&p));
            continue;
        }
        CHECK(p.spiffe_id != NULL && strncmp(p.spiffe_id, "spiffe://", 9) == 0);
        if (tls) CHECK(strcmp(p.spiffe_id, PEER) == 0);
        xds_snapshot *snap = NULL;
        r = xds_gen_snapshot(g_gen, g_reg, &p, &snap);
        if (mid_is_ok(r)) {
            for (size_t i = 0; i < n_names && i < 64; i++) {
                for (int t = 0; t < XDS_TYPE_COUNT; t++) {
                    const xds_resource *res = xds_snapshot_find(snap, (xds_type)t, names[i]);
                    if (res) CHECK(strcmp(res->name, names[i]) == 0);
                }
            }
            xds_snapshot_unref(snap);
        } else {
            CHECK(r.err == MID_E_NOT_FOUND && !p.proxyless);
        }
        xds_proxy_clear(&p);
        CHECK(zeroed(&p));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessage *m =
        decode(&envoy__service__discovery__v3__discovery_request__descriptor, data, size);
    if (m) {
        const disc_req *q = (const disc_req *)m;
        check_type_url(q->type_url);
        if (q->node) check_node(q->node, q->resource_names, q->n_resource_names);
    }
    arena_reset(g_msg);
    m = decode(&envoy__service__discovery__v3__delta_discovery_request__descriptor, data, size);
    if (m) {
        const delta_req *q = (const delta_req *)m;
        check_type_url(q->type_url);
        if (q->node) check_node(q->node, q->resource_names_subscribe, q->n_resource_names_subscribe);
    }
    arena_reset(g_msg);
    return 0;
}
