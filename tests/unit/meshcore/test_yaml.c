/* Unit tests for meshcore/yaml_load.c: every real Istio example inside the
 * supported subset loads with the expected content, every example outside
 * it is refused naming the unsupported field, and malformed, oversized,
 * aliased, duplicated and out-of-subset input is refused with
 * "SOURCE:LINE:COL: FIELD: reason". Run by tests/unit/meshcore/main.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/fsutil.h"
#include "meshcore/yaml_load.h"
#include "tests/unit/meshcore/meshcore_tests.h"

/* A valid ServiceEntry (SE_BASE ends inside the ports list, SE_HEAD after
 * resolution); tests append lines to it. Line numbers:
 * 1 apiVersion, 2 kind, 3 metadata, 4 name, 5 namespace, 6 spec, 7 hosts,
 * 8 - host, 9 ports, 10 - number, 11 name, 12 protocol, 13 resolution,
 * 14 endpoints, 15 - address, 16 ports, 17 http. */
#define SE_BASE                                                                     \
    "apiVersion: networking.istio.io/v1\n"                                          \
    "kind: ServiceEntry\n"                                                          \
    "metadata:\n"                                                                   \
    "  name: web\n"                                                                 \
    "  namespace: shop\n"                                                           \
    "spec:\n"                                                                       \
    "  hosts:\n"                                                                    \
    "  - web.shop.svc\n"                                                            \
    "  ports:\n"                                                                    \
    "  - number: 80\n"                                                              \
    "    name: http\n"                                                              \
    "    protocol: HTTP\n"

#define SE_HEAD SE_BASE "  resolution: STATIC\n"

#define AP_HEAD                                                                     \
    "apiVersion: security.istio.io/v1\n"                                            \
    "kind: AuthorizationPolicy\n"                                                   \
    "metadata:\n"                                                                   \
    "  name: pol\n"                                                                 \
    "  namespace: shop\n"                                                           \
    "spec:\n"

/* ---- the within/ examples ------------------------------------------------- */

static void assert_label(const mesh_label *l, size_t n, size_t i, const char *k, const char *v)
{
    assert_true(i < n);
    assert_string_equal(l[i].key, k);
    assert_string_equal(l[i].value, v);
}

static void test_within_se_s1tcp(void **state)
{
    (void)state;
    mesh_doc *d = load_one(ISTIO_WITHIN "se-s1tcp-labels-ports.yaml");
    assert_int_equal(d->kind, MESH_KIND_SERVICE);
    const mesh_service *s = d->u.service;
    assert_string_equal(s->namespace_, "none");
    assert_string_equal(s->name, "s1tcp");
    assert_int_equal(s->n_hosts, 1);
    assert_string_equal(s->hosts[0], "s1tcp.none");
    assert_int_equal(s->n_ports, 1);
    assert_string_equal(s->ports[0].name, "tcplocal");
    assert_int_equal(s->ports[0].number, 2000);
    assert_int_equal(s->ports[0].protocol, MESH_PROTO_TCP);
    assert_int_equal(s->ports[0].target_port, 0);
    assert_int_equal(s->mesh_internal, 1);
    assert_int_equal(s->n_endpoints, 1);
    const mesh_endpoint *e = &s->endpoints[0];
    assert_string_equal(e->address, "10.11.0.1");
    assert_int_equal(e->n_ports, 1);
    assert_string_equal(e->ports[0].name, "tcplocal");
    assert_int_equal(e->ports[0].number, 7070);
    assert_int_equal(e->n_labels, 1);
    assert_label(e->labels, e->n_labels, 0, "app", "s1tcp");
    assert_null(e->spiffe_id);
    assert_null(e->service_account);
    assert_int_equal(e->health, MESH_HEALTH_HEALTHY);
    /* The source is the file and the line of the document's first key (line 1
     * is the "# Source:" comment). */
    assert_string_equal(d->source, ISTIO_WITHIN "se-s1tcp-labels-ports.yaml:2");
    mesh_doc_list_free(d, 1);
}

static void test_within_se_static_labels(void **state)
{
    (void)state;
    mesh_doc *d = load_one(ISTIO_WITHIN "se-static-labels.yaml");
    const mesh_service *s = d->u.service;
    assert_string_equal(s->namespace_, "ns2");
    assert_string_equal(s->name, "service-static-no-addr");
    assert_string_equal(s->hosts[0], "random-3.host.example");
    assert_int_equal(s->ports[0].number, 80);
    assert_string_equal(s->ports[0].name, "http");
    assert_int_equal(s->ports[0].protocol, MESH_PROTO_HTTP);
    assert_int_equal(s->n_endpoints, 1);
    assert_string_equal(s->endpoints[0].address, "1.2.3.4");
    assert_int_equal(s->endpoints[0].n_ports, 0);
    assert_label(s->endpoints[0].labels, s->endpoints[0].n_labels, 0, "security.istio.io/tlsMode",
                 "istio");
    mesh_doc_list_free(d, 1);
}

static void test_within_se_two_endpoints(void **state)
{
    (void)state;
    mesh_doc *d = load_one(ISTIO_WITHIN "se-two-endpoints.yaml");
    const mesh_service *s = d->u.service;
    assert_string_equal(s->namespace_, "testns");
    assert_string_equal(s->name, "external-svc-ep");
    assert_string_equal(s->hosts[0], "ep.extsvc.com");
    assert_int_equal(s->ports[0].number, 8002);
    assert_string_equal(s->ports[0].name, "extsvc-http");
    assert_int_equal(s->ports[0].protocol, MESH_PROTO_HTTP);
    assert_int_equal(s->n_endpoints, 2);
    assert_string_equal(s->endpoints[0].address, "127.0.0.2");
    assert_int_equal(s->endpoints[0].ports[0].number, 8080);
    assert_string_equal(s->endpoints[1].address, "127.0.0.3");
    assert_string_equal(s->endpoints[1].ports[0].name, "extsvc-http");
    assert_int_equal(s->endpoints[1].ports[0].number, 8002);
    mesh_doc_list_free(d, 1);
}

static void test_within_se_workload(void **state)
{
    (void)state;
    mesh_doc *d = load_one(ISTIO_WITHIN "se-workload-ports.yaml");
    const mesh_service *s = d->u.service;
    assert_string_equal(s->namespace_, "seexamples");
    assert_string_equal(s->name, "workload");
    assert_string_equal(s->hosts[0], "test.seexamples");
    assert_int_equal(s->ports[0].number, 1200);
    assert_int_equal(s->ports[0].protocol, MESH_PROTO_TCP);
    assert_int_equal(s->n_endpoints, 1);
    assert_string_equal(s->endpoints[0].address, "10.12.0.1");
    assert_int_equal(s->endpoints[0].ports[0].number, 21200);
    mesh_doc_list_free(d, 1);
}

static void test_within_ap_simple(void **state)
{
    (void)state;
    mesh_doc *d = load_one(ISTIO_WITHIN "ap-allow-nothing-empty-spec.yaml");
    assert_int_equal(d->kind, MESH_KIND_POLICY);
    assert_string_equal(d->u.policy->namespace_, "default");
    assert_string_equal(d->u.policy->name, "allow-nothing");
    assert_int_equal(d->u.policy->action, MESH_ACTION_ALLOW);
    assert_int_equal(d->u.policy->n_rules, 0);
    assert_int_equal(d->u.policy->n_selector, 0);
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-deny-all.yaml");
    const mesh_policy *p = d->u.policy;
    assert_string_equal(p->namespace_, MESH_DEFAULT_NAMESPACE); /* no namespace given */
    assert_int_equal(p->action, MESH_ACTION_DENY);
    assert_int_equal(p->n_rules, 1);
    assert_int_equal(p->rules[0].n_from, 0);
    assert_int_equal(p->rules[0].n_to, 0);
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-allow-read.yaml");
    p = d->u.policy;
    assert_int_equal(p->action, MESH_ACTION_ALLOW);
    assert_label(p->selector, p->n_selector, 0, "app", "products");
    assert_int_equal(p->n_rules, 1);
    assert_int_equal(p->rules[0].n_from, 0);
    assert_int_equal(p->rules[0].n_to, 1);
    assert_int_equal(p->rules[0].to[0].n_methods, 2);
    assert_string_equal(p->rules[0].to[0].methods[0], "GET");
    assert_string_equal(p->rules[0].to[0].methods[1], "HEAD");
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-deny-method-get.yaml");
    p = d->u.policy;
    assert_string_equal(p->namespace_, "foo");
    assert_int_equal(p->action, MESH_ACTION_DENY);
    assert_label(p->selector, p->n_selector, 0, "app", "httpbin");
    assert_string_equal(p->rules[0].to[0].methods[0], "GET");
    mesh_doc_list_free(d, 1);
}

static void test_within_ap_sources(void **state)
{
    (void)state;
    mesh_doc *d = load_one(ISTIO_WITHIN "ap-deny-ns-dev-post.yaml");
    const mesh_policy *p = d->u.policy;
    assert_string_equal(p->name, "httpbin");
    assert_int_equal(p->action, MESH_ACTION_DENY);
    assert_int_equal(p->rules[0].n_from, 1);
    assert_int_equal(p->rules[0].from[0].n_namespaces, 1);
    assert_string_equal(p->rules[0].from[0].namespaces[0], "dev");
    assert_string_equal(p->rules[0].to[0].methods[0], "POST");
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-deny-post-port-8080.yaml");
    p = d->u.policy;
    assert_int_equal(p->rules[0].to[0].n_ports, 1);
    assert_int_equal(p->rules[0].to[0].ports[0], 8080);
    assert_string_equal(p->rules[0].to[0].methods[0], "POST");
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-details-viewer-principal-get.yaml");
    p = d->u.policy;
    assert_string_equal(p->name, "details-viewer"); /* quoted scalars */
    assert_label(p->selector, p->n_selector, 0, "app", "details");
    assert_string_equal(p->rules[0].from[0].principals[0],
                        "cluster.local/ns/default/sa/bookinfo-productpage");
    assert_string_equal(p->rules[0].to[0].methods[0], "GET");
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-mongodb-principal-port.yaml");
    p = d->u.policy;
    assert_label(p->selector, p->n_selector, 0, "app", "mongodb");
    assert_string_equal(p->rules[0].from[0].principals[0],
                        "cluster.local/ns/default/sa/bookinfo-ratings-v2");
    assert_int_equal(p->rules[0].to[0].ports[0], 27017);
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-ns-isolation-except-ingress.yaml");
    p = d->u.policy;
    assert_int_equal(p->rules[0].n_from, 2);
    assert_string_equal(p->rules[0].from[0].namespaces[0], "foo");
    assert_int_equal(p->rules[0].from[0].n_principals, 0);
    assert_string_equal(p->rules[0].from[1].principals[0],
                        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account");
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-require-mtls-not-principals.yaml");
    p = d->u.policy;
    assert_int_equal(p->rules[0].from[0].n_not_principals, 1);
    assert_string_equal(p->rules[0].from[0].not_principals[0], "*");
    mesh_doc_list_free(d, 1);

    d = load_one(ISTIO_WITHIN "ap-tester-path-wildcards.yaml");
    p = d->u.policy;
    assert_int_equal(p->rules[0].to[0].n_paths, 2);
    assert_string_equal(p->rules[0].to[0].paths[0], "/test/*");
    assert_string_equal(p->rules[0].to[0].paths[1], "*/info");
    mesh_doc_list_free(d, 1);
}

/* The within/ directory as a set holds two AuthorizationPolicies foo/httpbin
 * (two separate Istio examples): loading the directory must refuse that,
 * naming both files. */
static void test_within_dir_duplicates(void **state)
{
    (void)state;
    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_result r = mesh_yaml_load_path(ISTIO_WITHIN, &docs, &n);
    assert_int_equal(r.err, MID_E_INVALID);
    assert_null(docs);
    assert_int_equal(n, 0);
    assert_msg_has("AuthorizationPolicy foo/httpbin is defined twice");
    assert_msg_has("ap-deny-ns-dev-post.yaml");
    assert_msg_has("ap-deny-post-port-8080.yaml");
}

/* ---- the outside/ examples ----------------------------------------------- */

static void test_outside_refused(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        const char *field;
        const char *why;
    } cases[] = {
        {"ap-when-jwt-claims.yaml", ":22:5: spec.rules[0].when:", "field not supported by meshid"},
        {"ap-request-principals-not-paths.yaml", "requestPrincipals", "field not supported"},
        {"ap-ip-blocks.yaml", "spec.rules[0].from[0].source.ipBlocks:", "field not supported"},
        {"ap-custom-ext-authz.yaml", "spec.action: action CUSTOM is not supported",
         "(supported: ALLOW, DENY)"},
        {"se-dns-external-https.yaml", ":16:15: spec.resolution: resolution DNS",
         "only STATIC is supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, ISTIO_OUTSIDE "%s", cases[i].file);
        mesh_doc *docs = (mesh_doc *)(uintptr_t)1;
        size_t n = 7;
        mid_errclear();
        mid_result r = mesh_yaml_load_path(path, &docs, &n);
        if (mid_is_ok(r)) fail_msg("%s accepted", path);
        assert_int_equal(r.err, MID_E_INVALID);
        assert_null(docs);
        assert_int_equal(n, 0);
        assert_msg_has(path);
        assert_msg_has(cases[i].field);
        assert_msg_has(cases[i].why);
    }
}

/* ---- negative cases ------------------------------------------------------------ */

static void test_invalid_yaml(void **state)
{
    (void)state;
    expect_yaml_error("apiVersion: [unclosed\nkind: x\n", MID_E_INVALID, "invalid YAML", NULL);
    expect_yaml_error("a: b\n  c: d\n", MID_E_INVALID, "t.yaml:2:", "invalid YAML");
    expect_yaml_error("\t- x\n", MID_E_INVALID, "invalid YAML", NULL);
    expect_yaml_error("- just\n- a list\n", MID_E_INVALID, "document: must be a mapping", NULL);
    expect_yaml_error("hello\n", MID_E_INVALID, "t.yaml:1:1: document: must be a mapping", NULL);
    expect_yaml_error("a: \"\\xff\xff\"\n", MID_E_INVALID, "invalid YAML", NULL);
}

static void test_kind_and_header(void **state)
{
    (void)state;
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\n",
                      MID_E_INVALID,
                      "t.yaml:2:7: kind: kind Gateway is not supported (supported: ServiceEntry, "
                      "AuthorizationPolicy)",
                      NULL);
    expect_yaml_error("kind: ServiceEntry\nmetadata:\n  name: g\n", MID_E_INVALID,
                      "apiVersion: is required", NULL);
    expect_yaml_error("apiVersion: networking.istio.io/v1\nmetadata:\n  name: g\n", MID_E_INVALID,
                      "kind: is required", NULL);
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: {}\n",
                      MID_E_INVALID, "metadata: is required", NULL);
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
                      "  namespace: x\nspec: {}\n",
                      MID_E_INVALID, "metadata.name: is required", NULL);
    expect_yaml_error("apiVersion: security.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
                      "  name: x\n",
                      MID_E_INVALID, "apiVersion: ", "not a supported apiVersion for ServiceEntry");
    expect_yaml_error("apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\n"
                      "metadata:\n  name: x\n",
                      MID_E_INVALID, "not a supported apiVersion for AuthorizationPolicy", NULL);
    expect_yaml_error(AP_HEAD "  {}\nstatus: {}\n", MID_E_INVALID, "t.yaml:8:1: status: field not supported",
                      "(supported: apiVersion, kind, metadata, spec)");
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
                      "  name: web\n  uid: 123\n",
                      MID_E_INVALID, "t.yaml:5:3: metadata.uid: field not supported", NULL);
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
                      "  name: Web_1\nspec:\n  hosts: [a.b]\n  ports: [{number: 1, name: x}]\n",
                      MID_E_INVALID, "t.yaml:4:9: metadata.name: \"Web_1\" is not a valid name",
                      NULL);
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
                      "  name: web\n",
                      MID_E_INVALID, "spec: is required", NULL);
    /* metadata.labels and annotations are accepted and ignored. */
    mesh_doc *d = parse_one(AP_HEAD "  {}\n"
                            "---\n"); /* trailing empty document */
    mesh_doc_list_free(d, 1);
    d = parse_one("apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n"
                  "  name: p\n  labels:\n    team: a\n  annotations:\n    note: \"x: y\"\n");
    assert_string_equal(d->u.policy->namespace_, "default");
    assert_int_equal(d->u.policy->n_rules, 0);
    mesh_doc_list_free(d, 1);
}

static void test_unknown_fields(void **state)
{
    (void)state;
    expect_yaml_error(SE_HEAD "  addresses: [10.0.0.1]\n", MID_E_INVALID,
                      "t.yaml:14:3: spec.addresses: field not supported by meshid (supported: "
                      "hosts, ports, location, resolution, endpoints)",
                      NULL);
    static const char *const se_refused[] = {"exportTo: [\".\"]", "subjectAltNames: [x]",
                                             "workloadSelector: {}"};
    for (size_t i = 0; i < sizeof se_refused / sizeof se_refused[0]; i++) {
        char y[1024];
        snprintf(y, sizeof y, SE_HEAD "  %s\n", se_refused[i]);
        char field[64];
        snprintf(field, sizeof field, "spec.%.*s:", (int)strcspn(se_refused[i], ":"), se_refused[i]);
        expect_yaml_error(y, MID_E_INVALID, field, "field not supported");
    }
    static const char *const ep_refused[] = {"network: n1", "locality: us/east", "weight: 2"};
    for (size_t i = 0; i < sizeof ep_refused / sizeof ep_refused[0]; i++) {
        char y[1024];
        snprintf(y, sizeof y, SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    %s\n", ep_refused[i]);
        char field[64];
        snprintf(field, sizeof field, "t.yaml:16:5: spec.endpoints[0].%.*s:",
                 (int)strcspn(ep_refused[i], ":"), ep_refused[i]);
        expect_yaml_error(y, MID_E_INVALID, field,
                          "(supported: address, ports, labels, serviceAccount)");
    }
    expect_yaml_error(SE_HEAD "  ports2: []\n", MID_E_INVALID, "spec.ports2:", NULL);
    expect_yaml_error(SE_HEAD "  location: MESH_ELSEWHERE\n", MID_E_INVALID,
                      "spec.location: location MESH_ELSEWHERE is not supported", NULL);
    expect_yaml_error(SE_BASE "  resolution: NONE\n", MID_E_INVALID,
                      "resolution NONE is not supported: only STATIC is supported", NULL);
    expect_yaml_error(SE_BASE "  resolution: DNS_ROUND_ROBIN\n", MID_E_INVALID,
                      "resolution DNS_ROUND_ROBIN is not supported", NULL);

    /* AuthorizationPolicy: every refused Istio field names itself. */
    static const struct {
        const char *yaml;
        const char *field;
    } ap[] = {
        {"  rules:\n  - when: []\n", "spec.rules[0].when:"},
        {"  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n",
         "spec.rules[0].from[0].source.requestPrincipals:"},
        {"  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n",
         "source.notRequestPrincipals:"},
        {"  rules:\n  - from:\n    - source:\n        ipBlocks: [1.2.3.4]\n", "source.ipBlocks:"},
        {"  rules:\n  - from:\n    - source:\n        notIpBlocks: [1.2.3.4]\n", "source.notIpBlocks:"},
        {"  rules:\n  - from:\n    - source:\n        remoteIpBlocks: [1.2.3.4]\n",
         "source.remoteIpBlocks:"},
        {"  rules:\n  - from:\n    - source:\n        notNamespaces: [a]\n", "source.notNamespaces:"},
        {"  rules:\n  - to:\n    - operation:\n        notMethods: [GET]\n", "operation.notMethods:"},
        {"  rules:\n  - to:\n    - operation:\n        notPaths: [/a]\n",
         "spec.rules[0].to[0].operation.notPaths:"},
        {"  rules:\n  - to:\n    - operation:\n        notPorts: [\"80\"]\n", "operation.notPorts:"},
        {"  rules:\n  - to:\n    - operation:\n        notHosts: [a]\n", "operation.notHosts:"},
        {"  targetRef:\n    kind: Gateway\n", "spec.targetRef:"},
        {"  targetRefs: []\n", "spec.targetRefs:"},
        {"  provider:\n    name: x\n", "spec.provider:"},
        {"  action: AUDIT\n", "spec.action: action AUDIT is not supported"},
        {"  action: allow\n", "spec.action: action allow is not supported"},
        {"  selector:\n    matchExpressions: []\n", "spec.selector.matchExpressions:"},
        {"  rules:\n  - from:\n    - sources: {}\n", "spec.rules[0].from[0].sources:"},
    };
    for (size_t i = 0; i < sizeof ap / sizeof ap[0]; i++) {
        char y[1024];
        snprintf(y, sizeof y, AP_HEAD "%s", ap[i].yaml);
        expect_yaml_error(y, MID_E_INVALID, ap[i].field, NULL);
    }
}

static void test_addresses(void **state)
{
    (void)state;
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n  - address: 10.0.0\n",
                      MID_E_INVALID,
                      "t.yaml:16:14: spec.endpoints[1].address: \"10.0.0\" is not an IP address",
                      NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: web.example.com\n", MID_E_INVALID,
                      "spec.endpoints[0].address: \"web.example.com\" is not an IP address",
                      "DNS resolution is not supported");
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: unix:///var/run/a.sock\n", MID_E_INVALID,
                      "spec.endpoints[0].address:", "is not an IP address");
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1%eth0\n", MID_E_INVALID,
                      "is not an IP address", NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - ports:\n      http: 8080\n", MID_E_INVALID,
                      "spec.endpoints[0].address: is required", NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: [10.0.0.1]\n", MID_E_INVALID,
                      "spec.endpoints[0].address: must be a string, not a list", NULL);
    /* IPv6 is canonicalised. */
    mesh_doc *d = parse_one(SE_HEAD "  endpoints:\n  - address: \"2001:DB8:0:0::1\"\n"
                            "  - address: ::ffff:10.0.0.1\n");
    assert_string_equal(d->u.service->endpoints[0].address, "2001:db8::1");
    assert_string_equal(d->u.service->endpoints[1].address, "::ffff:10.0.0.1");
    mesh_doc_list_free(d, 1);
}

static void test_hosts_and_ports(void **state)
{
    (void)state;
    static const char se_top[] = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                                 "metadata:\n  name: web\nspec:\n";
    char y[2048];
    snprintf(y, sizeof y, "%s  hosts: [\"*\"]\n  ports: [{number: 80, name: http}]\n", se_top);
    expect_yaml_error(y, MID_E_INVALID, "spec.hosts[0]: host \"*\": wildcard hosts are not supported",
                      NULL);
    snprintf(y, sizeof y, "%s  hosts: [\"*.example.com\"]\n  ports: [{number: 80, name: http}]\n",
             se_top);
    expect_yaml_error(y, MID_E_INVALID, "wildcard hosts are not supported", NULL);
    snprintf(y, sizeof y, "%s  hosts: [Web.Example]\n  ports: [{number: 80, name: http}]\n", se_top);
    expect_yaml_error(y, MID_E_INVALID, "must be lower case", NULL);
    snprintf(y, sizeof y, "%s  hosts: []\n  ports: [{number: 80, name: http}]\n", se_top);
    expect_yaml_error(y, MID_E_INVALID, "spec.hosts: at least one host is required", NULL);
    snprintf(y, sizeof y, "%s  ports: [{number: 80, name: http}]\n", se_top);
    expect_yaml_error(y, MID_E_INVALID, "spec.hosts: is required", NULL);
    snprintf(y, sizeof y, "%s  hosts: [a.b]\n", se_top);
    expect_yaml_error(y, MID_E_INVALID, "spec.ports: is required", NULL);
    snprintf(y, sizeof y, "%s  hosts: [a.b, a.b]\n  ports: [{number: 80, name: http}]\n", se_top);
    expect_yaml_error(y, MID_E_INVALID, "spec.hosts[1]: host is listed twice", NULL);

    /* Ports: duplicates, range, names, endpoint references. */
    expect_yaml_error(SE_BASE "  - number: 80\n    name: http-alt\n", MID_E_INVALID,
                      "t.yaml:13:13: spec.ports[1].number: port 80 is already used by spec.ports[0]",
                      NULL);
    expect_yaml_error(SE_BASE "  - number: 81\n    name: http\n", MID_E_INVALID,
                      "spec.ports[1].name: port name \"http\" is already used", NULL);
    expect_yaml_error(SE_BASE "  - number: 65536\n    name: big\n", MID_E_INVALID,
                      "spec.ports[1].number: \"65536\" is not a port number (1..65535)", NULL);
    expect_yaml_error(SE_BASE "  - number: 0\n    name: zero\n", MID_E_INVALID,
                      "is not a port number", NULL);
    expect_yaml_error(SE_BASE "  - number: -1\n    name: neg\n", MID_E_INVALID,
                      "is not a port number", NULL);
    expect_yaml_error(SE_BASE "  - number: 81\n", MID_E_INVALID, "spec.ports[1].name: is required",
                      NULL);
    expect_yaml_error(SE_BASE "  - name: x\n", MID_E_INVALID, "spec.ports[1].number: is required",
                      NULL);
    expect_yaml_error(SE_BASE "  - number: 81\n    name: udp\n    protocol: UDP\n", MID_E_INVALID,
                      "spec.ports[1].protocol:", "protocol \"UDP\" is not supported");
    expect_yaml_error(SE_BASE "  - number: 81\n    name: \"a b\"\n", MID_E_INVALID,
                      "spec.ports[1].name: port name \"a b\" is not valid", NULL);
    expect_yaml_error(SE_BASE "  - number: 81\n    name: t\n    targetPort: 70000\n",
                      MID_E_INVALID, "spec.ports[1].targetPort:", NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    ports:\n      grpc: 9000\n",
                      MID_E_INVALID,
                      "t.yaml:17:13: spec.endpoints[0].ports[\"grpc\"]: \"grpc\" is not the name of "
                      "a port of this service",
                      NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    ports:\n      http: x\n",
                      MID_E_INVALID, "spec.endpoints[0].ports[\"http\"]: \"x\" is not a port number",
                      NULL);

    /* Protocols: inferred from the port name as Istio does, or given in any case. */
    mesh_doc *d = parse_one(
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata:\n  name: web\n"
        "spec:\n  hosts: [web.example]\n  location: MESH_EXTERNAL\n  ports:\n"
        "  - {number: 1, name: http}\n  - {number: 2, name: http-web}\n"
        "  - {number: 3, name: grpc-api}\n  - {number: 4, name: http2-x}\n"
        "  - {number: 5, name: https}\n  - {number: 6, name: tls-x}\n"
        "  - {number: 7, name: mongo}\n  - {number: 8, name: redis}\n"
        "  - {number: 9, name: web, protocol: grpc}\n  - {number: 10, name: GRPC-x}\n"
        "  - {number: 11, name: http-z, protocol: TCP, targetPort: 8080}\n"
        "  - {number: \"12\", name: tcp}\n");
    const mesh_service *s = d->u.service;
    static const mesh_protocol want[] = {MESH_PROTO_HTTP,  MESH_PROTO_HTTP,  MESH_PROTO_GRPC,
                                         MESH_PROTO_HTTP2, MESH_PROTO_HTTPS, MESH_PROTO_TLS,
                                         MESH_PROTO_MONGO, MESH_PROTO_TCP,   MESH_PROTO_GRPC,
                                         MESH_PROTO_GRPC,  MESH_PROTO_TCP,   MESH_PROTO_TCP};
    assert_int_equal(s->n_ports, 12);
    for (size_t i = 0; i < 12; i++) {
        if (s->ports[i].protocol != want[i])
            fail_msg("port %s: protocol %s", s->ports[i].name, mesh_protocol_name(s->ports[i].protocol));
        assert_int_equal(s->ports[i].number, i + 1);
    }
    assert_int_equal(s->ports[10].target_port, 8080);
    assert_int_equal(s->mesh_internal, 0);
    assert_int_equal(s->n_endpoints, 0);
    mesh_doc_list_free(d, 1);
}

static void test_service_accounts_and_labels(void **state)
{
    (void)state;
    mesh_doc *d = parse_one(SE_HEAD "  endpoints:\n"
                                    "  - address: 10.0.0.1\n    serviceAccount: web-sa\n"
                                    "    labels: {version: v1, app: web, \"example.com/tier\": \"\"}\n"
                                    "  - address: 10.0.0.2\n"
                                    "    serviceAccount: spiffe://example.org/ns/shop/sa/web\n");
    const mesh_service *s = d->u.service;
    assert_string_equal(s->endpoints[0].service_account, "web-sa");
    assert_null(s->endpoints[0].spiffe_id);
    /* sorted by key */
    assert_int_equal(s->endpoints[0].n_labels, 3);
    assert_label(s->endpoints[0].labels, 3, 0, "app", "web");
    assert_label(s->endpoints[0].labels, 3, 1, "example.com/tier", "");
    assert_label(s->endpoints[0].labels, 3, 2, "version", "v1");
    assert_null(s->endpoints[1].service_account);
    assert_string_equal(s->endpoints[1].spiffe_id, "spiffe://example.org/ns/shop/sa/web");
    mesh_doc_list_free(d, 1);

    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    serviceAccount: Web_SA\n",
                      MID_E_INVALID, "t.yaml:16:21: spec.endpoints[0].serviceAccount:",
                      "neither a service account name");
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n"
                              "    serviceAccount: spiffe://Example.org/x\n",
                      MID_E_INVALID, "spec.endpoints[0].serviceAccount: invalid SPIFFE ID", NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n"
                              "    serviceAccount: spiffe://example.org\n",
                      MID_E_INVALID, "names a trust domain, not a workload", NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    labels:\n      \"bad key!\": x\n",
                      MID_E_INVALID, "t.yaml:17:19: spec.endpoints[0].labels[\"bad key!\"]:",
                      "label key \"bad key!\" is not valid");
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    labels:\n      app: \"a b\"\n",
                      MID_E_INVALID, "spec.endpoints[0].labels[\"app\"]: label value \"a b\" is not valid",
                      NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    labels:\n"
                              "      app: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                      MID_E_TOO_LARGE, "label value", "longer than 63");
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    labels:\n      app: {a: b}\n",
                      MID_E_INVALID, "must be a string, not a mapping", NULL);
}

static void test_policy_values(void **state)
{
    (void)state;
    expect_yaml_error(AP_HEAD "  rules:\n  - from:\n    - source:\n"
                              "        principals: [\"spiffe://Bad Domain/x\"]\n",
                      MID_E_INVALID,
                      "t.yaml:10:22: spec.rules[0].from[0].source.principals[0]: invalid SPIFFE ID "
                      "'spiffe://Bad Domain/x'",
                      NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - from:\n    - source:\n"
                              "        principals: [\"cluster.local/ns/a b\"]\n",
                      MID_E_INVALID, "principals[0]: invalid SPIFFE ID", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - from:\n    - source:\n        principals: [justname]\n",
                      MID_E_INVALID, "must be \"<trust-domain>/<path>\"", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - from:\n    - source:\n        notPrincipals: [\"a*b/c\"]\n",
                      MID_E_INVALID, "notPrincipals[0]:", "'*' is only allowed");
    expect_yaml_error(AP_HEAD "  rules:\n  - from:\n    - source:\n        namespaces: [Foo]\n",
                      MID_E_INVALID, "source.namespaces[0]: namespace \"Foo\"", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - to:\n    - operation:\n        methods: [get]\n",
                      MID_E_INVALID, "operation.methods[0]: method \"get\" must be an upper-case", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - to:\n    - operation:\n        paths: [api/x]\n",
                      MID_E_INVALID, "operation.paths[0]: path \"api/x\" must start with '/'", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - to:\n    - operation:\n        paths: [\"/a/*/b\"]\n",
                      MID_E_INVALID, "'*' is only allowed", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - to:\n    - operation:\n        ports: [\"80a\"]\n",
                      MID_E_INVALID, "operation.ports[0]: \"80a\" is not a port number", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - to:\n    - operation:\n        hosts: [\"a b\"]\n",
                      MID_E_INVALID, "operation.hosts[0]: host \"a b\" is not a DNS name", NULL);
    expect_yaml_error(AP_HEAD "  rules: {}\n", MID_E_INVALID, "spec.rules: must be a list", NULL);
    expect_yaml_error(AP_HEAD "  rules:\n  - to: [{operation: {methods: GET}}]\n", MID_E_INVALID,
                      "spec.rules[0].to[0].operation.methods: must be a list", NULL);

    /* Every accepted form, ports as strings and numbers. */
    mesh_doc *d = parse_one(
        AP_HEAD "  action: DENY\n  selector:\n    matchLabels: {app: web, version: v1}\n"
                "  rules:\n"
                "  - from:\n"
                "    - source:\n"
                "        principals: [\"*\", \"example.org/ns/a/sa/b\", \"spiffe://example.org/x\",\n"
                "                     \"example.org/ns/a/*\", \"*/sa/b\", \"spiffe://example.org/*\"]\n"
                "        namespaces: [\"*\", \"prod-*\", \"*-dev\", default]\n"
                "    to:\n"
                "    - operation:\n"
                "        methods: [GET, M-SEARCH]\n"
                "        paths: [\"*\", /x, \"/api/*\", \"*.css\"]\n"
                "        ports: [\"8080\", 9090]\n"
                "        hosts: [\"*\", \"*.example.com\", \"api.*\", Web.Example.com]\n"
                "  - {}\n"
                "  - to: []\n");
    const mesh_policy *p = d->u.policy;
    assert_int_equal(p->action, MESH_ACTION_DENY);
    assert_int_equal(p->n_selector, 2);
    assert_int_equal(p->n_rules, 3);
    assert_int_equal(p->rules[0].from[0].n_principals, 6);
    assert_int_equal(p->rules[0].from[0].n_namespaces, 4);
    assert_int_equal(p->rules[0].to[0].n_ports, 2);
    assert_int_equal(p->rules[0].to[0].ports[0], 8080);
    assert_int_equal(p->rules[0].to[0].ports[1], 9090);
    assert_int_equal(p->rules[0].to[0].n_hosts, 4);
    assert_int_equal(p->rules[1].n_from + p->rules[1].n_to, 0);
    assert_int_equal(p->rules[2].n_to, 0);
    mesh_doc_list_free(d, 1);
}

/* "a: [[...]]\n" with `levels` brackets (plus the root mapping). */
static void nested(char *out, size_t cap, size_t levels)
{
    assert_true(2 * levels + 5 < cap);
    memcpy(out, "a: ", 3);
    memset(out + 3, '[', levels);
    memset(out + 3 + levels, ']', levels);
    memcpy(out + 3 + 2 * levels, "\n", 2);
}

static void test_yaml_features_refused(void **state)
{
    (void)state;
    expect_yaml_error(SE_HEAD "  endpoints:\n  - &ep\n    address: 10.0.0.1\n  - *ep\n",
                      MID_E_INVALID, "anchor &ep is not supported", "does not expand");
    expect_yaml_error("base: &b 1\n" SE_HEAD, MID_E_INVALID, "t.yaml:1:7: base: YAML anchor", NULL);
    expect_yaml_error("a: *nothing\n", MID_E_INVALID, NULL, NULL);
    expect_yaml_error(SE_HEAD "  location: !custom MESH_INTERNAL\n", MID_E_INVALID,
                      "spec.location: YAML tag \"!custom\" is not supported", NULL);
    expect_yaml_error(SE_HEAD "  endpoints: !<tag:example.com:x> []\n", MID_E_INVALID,
                      "YAML tag", NULL);
    /* Standard tags are fine. */
    mesh_doc *d = parse_one(SE_HEAD "  location: !!str MESH_EXTERNAL\n");
    assert_int_equal(d->u.service->mesh_internal, 0);
    mesh_doc_list_free(d, 1);

    /* Duplicate keys, at any level. */
    expect_yaml_error(SE_HEAD "  resolution: STATIC\n", MID_E_INVALID,
                      "t.yaml:14:3: spec.resolution: duplicate key in one mapping", NULL);
    expect_yaml_error("kind: a\nkind: b\n", MID_E_INVALID, "t.yaml:2:1: kind: duplicate key", NULL);
    expect_yaml_error(SE_HEAD "  endpoints:\n  - address: 10.0.0.1\n    labels: {a: \"1\", b: \"2\", a: \"3\"}\n",
                      MID_E_INVALID, "spec.endpoints[0].labels.a: duplicate key", NULL);
    expect_yaml_error("? [a]\n: b\n", MID_E_INVALID, "mapping keys must be plain strings", NULL);

    /* Nesting: 32 levels are parsed (and then refused as content), 33 are not. */
    char deep[512];
    nested(deep, sizeof deep, 31);
    expect_yaml_error(deep, MID_E_INVALID, "a: field not supported", NULL);
    char deeper[512];
    nested(deeper, sizeof deeper, 32);
    expect_yaml_error(deeper, MID_E_INVALID, "nesting deeper than 32 levels", NULL);

    /* A NUL inside a quoted scalar. */
    expect_yaml_error("apiVersion: networking.istio.io/v1\nkind: \"Service\\0Entry\"\n",
                      MID_E_INVALID, "kind: contains a NUL character", NULL);
}

static void test_sizes(void **state)
{
    (void)state;
    /* Over MESH_DOC_BYTES_MAX: refused before parsing. */
    size_t big = MESH_DOC_BYTES_MAX + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '#', big);
    mesh_doc *docs = (mesh_doc *)(uintptr_t)1;
    size_t n = 3;
    mid_result r = mesh_yaml_parse(text, big, "big.yaml", &docs, &n);
    assert_int_equal(r.err, MID_E_TOO_LARGE);
    assert_null(docs);
    assert_int_equal(n, 0);
    assert_msg_has("big.yaml:1:1:");
    assert_msg_has("over the limit");
    /* Exactly at the limit: a comment-only file is fine (no documents). */
    text[big - 2] = '\n';
    r = mesh_yaml_parse(text, big - 1, "big.yaml", &docs, &n);
    assert_true(mid_is_ok(r));
    assert_int_equal(n, 0);
    free(text);

    /* Too many hosts, ports, labels, rules. */
    char *y = malloc(64 * 1024);
    assert_non_null(y);
    size_t o = (size_t)snprintf(y, 64 * 1024, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                                               "metadata: {name: web}\nspec:\n  ports: [{number: 1, name: a}]\n  hosts:\n");
    for (int i = 0; i <= MESH_HOSTS_MAX; i++) o += (size_t)snprintf(y + o, 64 * 1024 - o, "  - h%d.example\n", i);
    expect_yaml_error(y, MID_E_TOO_LARGE, "spec.hosts: 65 entries is over the limit of 64", NULL);
    o = (size_t)snprintf(y, 64 * 1024, AP_HEAD "  rules:\n");
    for (int i = 0; i <= MESH_RULES_MAX; i++) o += (size_t)snprintf(y + o, 64 * 1024 - o, "  - {}\n");
    expect_yaml_error(y, MID_E_TOO_LARGE, "spec.rules: 257 entries", NULL);
    o = (size_t)snprintf(y, 64 * 1024, AP_HEAD "  selector:\n    matchLabels:\n");
    for (int i = 0; i <= MESH_LABELS_MAX; i++) o += (size_t)snprintf(y + o, 64 * 1024 - o, "      k%d: v\n", i);
    expect_yaml_error(y, MID_E_TOO_LARGE, "spec.selector.matchLabels: 65 entries", NULL);
    free(y);
}

static void test_documents(void **state)
{
    (void)state;
    mesh_doc *docs = NULL;
    size_t n = 0;
    /* Empty text and comment-only documents yield nothing. */
    assert_true(mid_is_ok(parse_yaml_str("", &docs, &n)));
    assert_int_equal(n, 0);
    assert_null(docs);
    assert_true(mid_is_ok(parse_yaml_str("# nothing\n---\n# still nothing\n---\n", &docs, &n)));
    assert_int_equal(n, 0);

    /* Several documents, with their start lines. */
    const char *multi = "# header\n---\n" SE_HEAD "---\n# a policy\n" AP_HEAD "  {}\n---\n---\n"
                        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                        "metadata: {name: pol, namespace: other}\n";
    assert_true(mid_is_ok(parse_yaml_str(multi, &docs, &n)));
    assert_int_equal(n, 3);
    assert_int_equal(docs[0].kind, MESH_KIND_SERVICE);
    assert_string_equal(docs[0].source, "t.yaml:3");
    assert_int_equal(docs[1].kind, MESH_KIND_POLICY);
    assert_string_equal(docs[1].source, "t.yaml:18");
    assert_string_equal(docs[2].u.policy->namespace_, "other");
    mesh_doc_list_free(docs, n);

    /* One bad document spoils the whole text; nothing is returned. */
    expect_yaml_error(SE_HEAD "---\n" AP_HEAD "  bogus: 1\n", MID_E_INVALID, "t.yaml:21:3: spec.bogus",
                      NULL);
    /* The same kind/namespace/name twice in one file. */
    expect_yaml_error(SE_HEAD "---\n" SE_HEAD, MID_E_INVALID,
                      "t.yaml:15:1: metadata.name: ServiceEntry shop/web is defined twice (first "
                      "at t.yaml:1)",
                      NULL);
    /* ...but a service and a policy may share a name. */
    assert_true(mid_is_ok(parse_yaml_str(SE_HEAD "---\n" AP_HEAD "  {}\n---\n"
                                         "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                         "metadata: {name: web, namespace: shop}\n",
                                         &docs, &n)));
    assert_int_equal(n, 3);
    mesh_doc_list_free(docs, n);
}

/* ---- directories ----------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_true(mid_is_ok(fs_write_file(path, text, strlen(text), 0644)));
}

static void remove_dir(const char *dir, const char *const *names)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void test_load_path(void **state)
{
    (void)state;
    char dir[] = "/tmp/meshid-yaml-XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const char *const names[] = {"b.yml", "a.yaml", "c.txt", ".hidden.yaml", "sub.yaml",
                                        "z.yaml", NULL};
    write_file(dir, "b.yml", AP_HEAD "  {}\n");
    write_file(dir, "a.yaml", SE_HEAD);
    write_file(dir, "c.txt", "not: yaml at all: [");
    write_file(dir, ".hidden.yaml", "broken: [");
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sub.yaml", dir);
    assert_int_equal(mkdir(sub, 0755), 0); /* directories are skipped */

    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_result r = mesh_yaml_load_path(dir, &docs, &n);
    if (!mid_is_ok(r)) fail_msg("%s", mid_errmsg());
    assert_int_equal(n, 2);
    assert_int_equal(docs[0].kind, MESH_KIND_SERVICE); /* a.yaml before b.yml */
    assert_non_null(strstr(docs[0].source, "/a.yaml:1"));
    assert_int_equal(docs[1].kind, MESH_KIND_POLICY);
    assert_non_null(strstr(docs[1].source, "/b.yml:1"));
    mesh_doc_list_free(docs, n);

    /* A duplicate across files names both. */
    write_file(dir, "z.yaml", "# again\n" SE_HEAD);
    r = mesh_yaml_load_path(dir, &docs, &n);
    assert_int_equal(r.err, MID_E_INVALID);
    assert_null(docs);
    assert_int_equal(n, 0);
    assert_msg_has("/z.yaml:2:1: metadata.name: ServiceEntry shop/web is defined twice");
    assert_msg_has("/a.yaml:1)");

    /* A broken file anywhere: nothing at all. */
    write_file(dir, "z.yaml", "kind: [\n");
    r = mesh_yaml_load_path(dir, &docs, &n);
    assert_int_equal(r.err, MID_E_INVALID);
    assert_null(docs);
    assert_msg_has("/z.yaml:");

    /* A single file. */
    char file[600];
    snprintf(file, sizeof file, "%s/a.yaml", dir);
    mesh_doc_list_free(load_one(file), 1);

    rmdir(sub);
    remove_dir(dir, names);

    r = mesh_yaml_load_path(dir, &docs, &n);
    assert_int_equal(r.err, MID_E_NOT_FOUND);
    assert_null(docs);
    r = mesh_yaml_load_path("/tmp/meshid-no-such-file.yaml", &docs, &n);
    assert_int_equal(r.err, MID_E_NOT_FOUND);
}

int run_yaml_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_within_se_s1tcp),
        cmocka_unit_test(test_within_se_static_labels),
        cmocka_unit_test(test_within_se_two_endpoints),
        cmocka_unit_test(test_within_se_workload),
        cmocka_unit_test(test_within_ap_simple),
        cmocka_unit_test(test_within_ap_sources),
        cmocka_unit_test(test_within_dir_duplicates),
        cmocka_unit_test(test_outside_refused),
        cmocka_unit_test(test_invalid_yaml),
        cmocka_unit_test(test_kind_and_header),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_hosts_and_ports),
        cmocka_unit_test(test_service_accounts_and_labels),
        cmocka_unit_test(test_policy_values),
        cmocka_unit_test(test_yaml_features_refused),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_documents),
        cmocka_unit_test(test_load_path),
    };
    return cmocka_run_group_tests_name("meshcore_yaml", tests, NULL, NULL);
}
