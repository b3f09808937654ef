/* Unit tests for meshcore/model.c: enum names, validation of hand-built
 * records, deep clones, and the canonical JSON codec (exact shape, round
 * trips of every Istio example, and refusal of malformed JSON and content).
 * Run by tests/unit/meshcore/main.c.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "meshcore/model.h"
#include "meshcore/model_int.h"
#include "meshcore/yaml_load.h"
#include "tests/unit/meshcore/meshcore_tests.h"

/* ---- enums --------------------------------------------------------------------- */

static void test_protocols(void **state)
{
    (void)state;
    static const char *const names[] = {"HTTP", "HTTP2", "GRPC", "HTTPS", "TCP", "TLS", "MONGO"};
    for (int i = 0; i < 7; i++) {
        mesh_protocol p;
        assert_string_equal(mesh_protocol_name((mesh_protocol)i), names[i]);
        assert_true(mid_is_ok(mesh_protocol_parse(names[i], &p)));
        assert_int_equal(p, i);
        assert_int_equal(mesh_protocol_is_http(p), i <= MESH_PROTO_GRPC);
    }
    mesh_protocol p;
    assert_int_equal(mesh_protocol_parse("http", &p).err, MID_E_INVALID); /* exact spelling */
    assert_msg_has("protocol \"http\" is not supported");
    assert_int_equal(mesh_protocol_parse("UDP", &p).err, MID_E_INVALID);
    assert_int_equal(mesh_protocol_parse("", &p).err, MID_E_INVALID);
    assert_string_equal(mesh_protocol_name((mesh_protocol)99), "UNKNOWN");

    static const char *const health[] = {"HEALTHY", "UNHEALTHY", "DRAINING"};
    for (int i = 0; i < 3; i++) {
        mesh_health h;
        assert_string_equal(mesh_health_name((mesh_health)i), health[i]);
        assert_true(mid_is_ok(mesh_health_parse(health[i], &h)));
        assert_int_equal(h, i);
    }
    mesh_health h;
    assert_int_equal(mesh_health_parse("healthy", &h).err, MID_E_INVALID);
    assert_string_equal(mesh_health_name((mesh_health)7), "UNKNOWN");
}

/* ---- JSON: exact shape ------------------------------------------------------------ */

static const char full_service_json[] =
    "{\"endpoints\":["
    "{\"address\":\"10.0.0.1\",\"labels\":{\"app\":\"web\",\"version\":\"v1\"},"
    "\"ports\":{\"http\":8080},\"serviceAccount\":\"web-sa\"},"
    "{\"address\":\"2001:db8::1\",\"health\":\"DRAINING\","
    "\"spiffeId\":\"spiffe://example.org/ns/shop/sa/web\"},"
    "{\"address\":\"10.0.0.3\",\"health\":\"UNHEALTHY\"}],"
    "\"hosts\":[\"web.shop.svc\",\"web.example.com\"],"
    "\"location\":\"MESH_EXTERNAL\",\"name\":\"web\",\"namespace\":\"shop\","
    "\"ports\":[{\"name\":\"http\",\"number\":80,\"protocol\":\"HTTP\",\"targetPort\":8080},"
    "{\"name\":\"grpc\",\"number\":9090,\"protocol\":\"GRPC\"}],"
    "\"resolution\":\"STATIC\"}";

static const char full_policy_json[] =
    "{\"action\":\"DENY\",\"name\":\"pol\",\"namespace\":\"shop\","
    "\"rules\":[{\"from\":[{\"namespaces\":[\"dev\"],\"notPrincipals\":[\"*\"],"
    "\"principals\":[\"example.org/ns/a/sa/b\"]},{\"namespaces\":[\"prod-*\"]}],"
    "\"to\":[{\"hosts\":[\"*.example.com\"],\"methods\":[\"GET\",\"POST\"],"
    "\"paths\":[\"/api/*\"],\"ports\":[8080,9090]}]},{}],"
    "\"selector\":{\"app\":\"web\"}}";

static void test_json_exact_shape(void **state)
{
    (void)state;
    mesh_service *s = NULL;
    if (!mid_is_ok(mesh_service_from_json(full_service_json, &s))) fail_msg("%s", mid_errmsg());
    assert_string_equal(s->namespace_, "shop");
    assert_int_equal(s->mesh_internal, 0);
    assert_int_equal(s->n_ports, 2);
    assert_int_equal(s->ports[0].target_port, 8080);
    assert_int_equal(s->ports[1].protocol, MESH_PROTO_GRPC);
    assert_int_equal(s->n_endpoints, 3);
    assert_string_equal(s->endpoints[0].service_account, "web-sa");
    assert_null(s->endpoints[0].spiffe_id);
    assert_string_equal(s->endpoints[0].labels[1].key, "version");
    assert_string_equal(s->endpoints[1].spiffe_id, "spiffe://example.org/ns/shop/sa/web");
    assert_int_equal(s->endpoints[1].health, MESH_HEALTH_DRAINING);
    char *out = NULL;
    assert_true(mid_is_ok(mesh_service_to_json(s, &out)));
    assert_string_equal(out, full_service_json);
    free(out);

    /* A clone encodes identically and shares nothing. */
    mesh_service *c = NULL;
    assert_true(mid_is_ok(mesh_service_clone(s, &c)));
    assert_ptr_not_equal(c->endpoints[0].labels[0].key, s->endpoints[0].labels[0].key);
    mesh_service_free(s);
    assert_true(mid_is_ok(mesh_service_to_json(c, &out)));
    assert_string_equal(out, full_service_json);
    free(out);
    mesh_service_free(c);

    mesh_policy *p = NULL;
    if (!mid_is_ok(mesh_policy_from_json(full_policy_json, &p))) fail_msg("%s", mid_errmsg());
    assert_int_equal(p->action, MESH_ACTION_DENY);
    assert_int_equal(p->n_rules, 2);
    assert_int_equal(p->rules[0].n_from, 2);
    assert_int_equal(p->rules[0].to[0].ports[1], 9090);
    assert_int_equal(p->rules[1].n_from + p->rules[1].n_to, 0);
    assert_true(mid_is_ok(mesh_policy_to_json(p, &out)));
    assert_string_equal(out, full_policy_json);
    free(out);
    mesh_policy *pc = NULL;
    assert_true(mid_is_ok(mesh_policy_clone(p, &pc)));
    mesh_policy_free(p);
    assert_true(mid_is_ok(mesh_policy_to_json(pc, &out)));
    assert_string_equal(out, full_policy_json);
    free(out);
    mesh_policy_free(pc);

    /* Minimal forms: defaults are written out. */
    assert_true(mid_is_ok(mesh_policy_from_json("{\"namespace\":\"a\",\"name\":\"b\"}", &p)));
    assert_true(mid_is_ok(mesh_policy_to_json(p, &out)));
    assert_string_equal(out, "{\"action\":\"ALLOW\",\"name\":\"b\",\"namespace\":\"a\",\"rules\":[]}");
    free(out);
    mesh_policy_free(p);
    assert_true(mid_is_ok(mesh_service_from_json(
        "{\"namespace\":\"a\",\"name\":\"b\",\"hosts\":[\"b.a\"],"
        "\"ports\":[{\"name\":\"t\",\"number\":1,\"protocol\":\"TCP\"}]}",
        &s)));
    assert_true(mid_is_ok(mesh_service_to_json(s, &out)));
    assert_string_equal(out, "{\"endpoints\":[],\"hosts\":[\"b.a\"],\"location\":\"MESH_INTERNAL\","
                             "\"name\":\"b\",\"namespace\":\"a\",\"ports\":[{\"name\":\"t\","
                             "\"number\":1,\"protocol\":\"TCP\"}],\"resolution\":\"STATIC\"}");
    free(out);
    mesh_service_free(s);
}

/* to_json -> from_json -> to_json is the identity, for every example. */
static void round_trip_doc(const mesh_doc *d)
{
    char *a = NULL, *b = NULL;
    if (d->kind == MESH_KIND_SERVICE) {
        mesh_service *s = NULL;
        assert_true(mid_is_ok(mesh_service_to_json(d->u.service, &a)));
        if (!mid_is_ok(mesh_service_from_json(a, &s))) fail_msg("%s: %s", a, mid_errmsg());
        assert_true(mid_is_ok(mesh_service_to_json(s, &b)));
        mesh_service_free(s);
    } else {
        mesh_policy *p = NULL;
        assert_true(mid_is_ok(mesh_policy_to_json(d->u.policy, &a)));
        if (!mid_is_ok(mesh_policy_from_json(a, &p))) fail_msg("%s: %s", a, mid_errmsg());
        assert_true(mid_is_ok(mesh_policy_to_json(p, &b)));
        mesh_policy_free(p);
    }
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_json_round_trip_examples(void **state)
{
    (void)state;
    DIR *dir = opendir(ISTIO_WITHIN);
    assert_non_null(dir);
    size_t files = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (strstr(de->d_name, ".yaml") == NULL) continue;
        char path[512];
        snprintf(path, sizeof path, ISTIO_WITHIN "%s", de->d_name);
        mesh_doc *d = load_one(path);
        round_trip_doc(d);
        mesh_doc_list_free(d, 1);
        files++;
    }
    closedir(dir);
    assert_int_equal(files, 15);

    /* And a record with every optional field. */
    mesh_service *s = NULL;
    assert_true(mid_is_ok(mesh_service_from_json(full_service_json, &s)));
    mesh_doc d = {.kind = MESH_KIND_SERVICE, .u.service = s};
    round_trip_doc(&d);
    mesh_service_free(s);
}

/* ---- JSON: refusals ----------------------------------------------------------------- */

static void expect_service_json_error(const char *json, mid_err want, const char *needle)
{
    mesh_service *s = (mesh_service *)(uintptr_t)1;
    mid_errclear();
    mid_result r = mesh_service_from_json(json, &s);
    if (mid_is_ok(r)) {
        mesh_service_free(s);
        fail_msg("accepted: %s", json);
    }
    assert_null(s);
    if (r.err != want) fail_msg("%s: error %s: %s", json, mid_errname(r.err), mid_errmsg());
    if (needle) assert_msg_has(needle);
}

static void expect_policy_json_error(const char *json, mid_err want, const char *needle)
{
    mesh_policy *p = (mesh_policy *)(uintptr_t)1;
    mid_errclear();
    mid_result r = mesh_policy_from_json(json, &p);
    if (mid_is_ok(r)) {
        mesh_policy_free(p);
        fail_msg("accepted: %s", json);
    }
    assert_null(p);
    if (r.err != want) fail_msg("%s: error %s: %s", json, mid_errname(r.err), mid_errmsg());
    if (needle) assert_msg_has(needle);
}

#define SVC_HEAD "{\"namespace\":\"a\",\"name\":\"b\",\"hosts\":[\"b.a\"],"
#define SVC_PORTS "\"ports\":[{\"name\":\"http\",\"number\":80,\"protocol\":\"HTTP\"}]"

static void test_json_refusals(void **state)
{
    (void)state;
    expect_service_json_error("", MID_E_INVALID, "service JSON");
    expect_service_json_error("{", MID_E_INVALID, "service JSON: line 1");
    expect_service_json_error("[]", MID_E_INVALID, "must be an object");
    expect_service_json_error("{\"a\":1,\"a\":2}", MID_E_INVALID, NULL);
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"extra\":1}", MID_E_INVALID,
                              "unknown field \"extra\"");
    expect_service_json_error("{\"name\":\"b\",\"hosts\":[\"b.a\"]," SVC_PORTS "}", MID_E_INVALID,
                              "namespace: is required");
    expect_service_json_error("{\"namespace\":1,\"name\":\"b\"}", MID_E_INVALID,
                              "namespace: must be a string");
    expect_service_json_error(SVC_HEAD "\"ports\":[]}", MID_E_INVALID,
                              "spec.ports: at least one port is required");
    expect_service_json_error(SVC_HEAD "\"ports\":[{\"name\":\"http\",\"number\":\"80\","
                                       "\"protocol\":\"HTTP\"}]}",
                              MID_E_INVALID, "ports[0].number: must be an integer");
    expect_service_json_error(SVC_HEAD "\"ports\":[{\"name\":\"http\",\"number\":70000,"
                                       "\"protocol\":\"HTTP\"}]}",
                              MID_E_INVALID, "70000 is not in 1..65535");
    expect_service_json_error(SVC_HEAD "\"ports\":[{\"name\":\"http\",\"number\":80,"
                                       "\"protocol\":\"UDP\"}]}",
                              MID_E_INVALID, "ports[0].protocol");
    expect_service_json_error(SVC_HEAD "\"ports\":[{\"name\":\"http\",\"number\":80}]}",
                              MID_E_INVALID, "ports[0].protocol: is required");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"resolution\":\"DNS\"}", MID_E_INVALID,
                              "only STATIC");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"location\":\"x\"}", MID_E_INVALID,
                              "location");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"10.0.0\"}]}",
                              MID_E_INVALID, "spec.endpoints[0].address: \"10.0.0\" is not an IP address");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"10.0.0.01\"}]}",
                              MID_E_INVALID, "is not an IP address");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"2001:DB8::1\"}]}",
                              MID_E_INVALID, "is not in canonical form (write \"2001:db8::1\")");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"1.2.3.4\","
                                                 "\"serviceAccount\":\"sa\",\"spiffeId\":"
                                                 "\"spiffe://x/y\"}]}",
                              MID_E_INVALID, "exclude each other");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"1.2.3.4\","
                                                 "\"health\":\"SICK\"}]}",
                              MID_E_INVALID, "endpoints[0].health");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"1.2.3.4\","
                                                 "\"ports\":{\"grpc\":1}}]}",
                              MID_E_INVALID, "is not the name of a port");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"1.2\\u00003.4\"}]}",
                              MID_E_INVALID, "service JSON");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":{}}", MID_E_INVALID,
                              "endpoints: must be an array");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"1.2.3.4\","
                                                 "\"labels\":{\"a\":1}}]}",
                              MID_E_INVALID, "must be a string");

    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"action\":\"CUSTOM\"}",
                             MID_E_INVALID, "action: must be ALLOW or DENY");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"rules\":[{\"when\":[]}]}",
                             MID_E_INVALID, "rules[0]: unknown field \"when\"");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"rules\":[{\"from\":"
                             "[{\"principals\":[\"spiffe://Bad Domain/x\"]}]}]}",
                             MID_E_INVALID, "spec.rules[0].from[0].source.principals[0]: invalid SPIFFE ID");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"rules\":[{\"to\":"
                             "[{\"ports\":[\"8080\"]}]}]}",
                             MID_E_INVALID, "rules[0].to[0].ports[0]: must be an integer");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"rules\":[1]}", MID_E_INVALID,
                             "rules[0]: must be an object");
    /* list items are named by their index, at every level */
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"rules\":[{},{\"from\":"
                             "[{},\"x\"]}]}",
                             MID_E_INVALID, "rules[1].from[1]: must be an object");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"rules\":[{\"to\":"
                             "[{},{\"paths\":[\"/a\",2]}]}]}",
                             MID_E_INVALID, "rules[0].to[1].paths[1]: must be a string");
    expect_service_json_error(SVC_HEAD SVC_PORTS ",\"endpoints\":[{\"address\":\"1.2.3.4\"},[]]}",
                              MID_E_INVALID, "endpoints[1]: must be an object");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"b\",\"selector\":[]}", MID_E_INVALID,
                             "selector");
    expect_policy_json_error("{\"namespace\":\"a\",\"name\":\"B\"}", MID_E_INVALID,
                             "metadata.name: \"B\" is not a valid name");

    /* Oversized JSON. */
    size_t big = (16u << 20) + 8;
    char *j = malloc(big + 1);
    assert_non_null(j);
    memset(j, ' ', big);
    j[0] = '{';
    j[big - 1] = '}';
    j[big] = '\0';
    expect_policy_json_error(j, MID_E_TOO_LARGE, "over the limit");
    free(j);
}

/* ---- validation of hand-built records ------------------------------------------------- */

typedef struct {
    mesh_service s;
    char *hosts[2];
    mesh_port ports[2];
    mesh_endpoint eps[2];
    mesh_label labels[2];
} svc_fixture;

static void fixture(svc_fixture *f)
{
    memset(f, 0, sizeof *f);
    f->s.namespace_ = "shop";
    f->s.name = "web";
    f->hosts[0] = "web.shop";
    f->s.hosts = f->hosts;
    f->s.n_hosts = 1;
    f->ports[0] = (mesh_port){"http", 80, MESH_PROTO_HTTP, 0};
    f->s.ports = f->ports;
    f->s.n_ports = 1;
    f->labels[0] = (mesh_label){"app", "web"};
    f->labels[1] = (mesh_label){"version", "v1"};
    f->eps[0].address = "10.0.0.1";
    f->eps[0].labels = f->labels;
    f->eps[0].n_labels = 2;
    f->s.endpoints = f->eps;
    f->s.n_endpoints = 1;
}

static void expect_invalid_service(const mesh_service *s, mid_err want, const char *needle)
{
    mid_errclear();
    mid_result r = mesh_service_validate(s);
    if (mid_is_ok(r)) fail_msg("accepted (want %s)", needle);
    assert_int_equal(r.err, want);
    assert_msg_has(needle);
    char *json = (char *)(uintptr_t)1;
    assert_int_equal(mesh_service_to_json(s, &json).err, want);
    assert_null(json);
}

static void test_validate_service(void **state)
{
    (void)state;
    svc_fixture f;
    fixture(&f);
    assert_true(mid_is_ok(mesh_service_validate(&f.s)));

    f.s.namespace_ = NULL;
    expect_invalid_service(&f.s, MID_E_INVALID, "metadata.namespace: is required");
    fixture(&f);
    f.s.namespace_ = "a.b";
    expect_invalid_service(&f.s, MID_E_INVALID, "metadata.namespace: \"a.b\" is not a valid namespace");
    fixture(&f);
    f.labels[0] = (mesh_label){"version", "v0"}; /* not sorted / duplicate */
    expect_invalid_service(&f.s, MID_E_INVALID, "labels[\"version\"]: duplicate label key");
    fixture(&f);
    f.labels[0] = (mesh_label){"zeta", "v0"};
    expect_invalid_service(&f.s, MID_E_INVALID, "labels are not sorted by key");
    fixture(&f);
    f.eps[0].address = "010.0.0.1";
    expect_invalid_service(&f.s, MID_E_INVALID, "spec.endpoints[0].address");
    fixture(&f);
    f.eps[0].address = "::FFFF:1.2.3.4";
    expect_invalid_service(&f.s, MID_E_INVALID, "not in canonical form");
    fixture(&f);
    f.ports[0].protocol = (mesh_protocol)42;
    expect_invalid_service(&f.s, MID_E_INVALID, "spec.ports[0].protocol: unknown protocol");
    fixture(&f);
    f.eps[0].health = (mesh_health)9;
    expect_invalid_service(&f.s, MID_E_INVALID, "unknown health");
    fixture(&f);
    f.eps[0].spiffe_id = "spiffe://example.org/a//b";
    expect_invalid_service(&f.s, MID_E_INVALID, "spec.endpoints[0].serviceAccount: invalid SPIFFE ID");
    fixture(&f);
    f.s.n_hosts = MESH_HOSTS_MAX + 1;
    expect_invalid_service(&f.s, MID_E_TOO_LARGE, "spec.hosts: 65 hosts is over the limit of 64");
    fixture(&f);
    f.s.n_endpoints = MESH_ENDPOINTS_MAX + 1;
    expect_invalid_service(&f.s, MID_E_TOO_LARGE, "spec.endpoints:");
    fixture(&f);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    f.s.name = longname;
    expect_invalid_service(&f.s, MID_E_TOO_LARGE, "metadata.name:");
    fixture(&f);
    f.hosts[0] = "web.shop.";
    expect_invalid_service(&f.s, MID_E_INVALID, "not a valid DNS name");

    /* Both identity fields at once are what the registry leaves behind: valid. */
    fixture(&f);
    f.eps[0].service_account = "web";
    f.eps[0].spiffe_id = "spiffe://example.org/ns/shop/sa/web";
    assert_true(mid_is_ok(mesh_service_validate(&f.s)));
    char *json = NULL;
    assert_true(mid_is_ok(mesh_service_to_json(&f.s, &json)));
    assert_null(strstr(json, "spiffeId")); /* derived, not stored */
    assert_non_null(strstr(json, "\"serviceAccount\":\"web\""));
    free(json);
}

/* A policy with one principal (or namespace, path, ...) to validate. */
static mid_result validate_value(const char *principal, const char *ns, const char *method,
                                 const char *path, const char *host, uint32_t port)
{
    char *pv[1] = {(char *)principal};
    char *nv[1] = {(char *)ns};
    char *mv[1] = {(char *)method};
    char *av[1] = {(char *)path};
    char *hv[1] = {(char *)host};
    uint32_t ports[1] = {port};
    mesh_source src = {pv, principal != NULL, NULL, 0, nv, ns != NULL};
    mesh_operation op = {mv, method != NULL, av, path != NULL, ports, port != 0, hv, host != NULL};
    mesh_rule rule = {&src, 1, &op, 1};
    mesh_policy p = {"shop", "pol", NULL, 0, MESH_ACTION_ALLOW, &rule, 1};
    mid_errclear();
    return mesh_policy_validate(&p);
}

static void test_validate_policy_values(void **state)
{
    (void)state;
    static const char *const good_principals[] = {
        "*", "example.org/ns/a/sa/b", "spiffe://example.org/ns/a/sa/b", "example.org/*",
        "*/ns/a/sa/b", "spiffe://example.org/*", "cluster.local/ns/default/sa/sleep"};
    for (size_t i = 0; i < sizeof good_principals / sizeof good_principals[0]; i++)
        if (!mid_is_ok(validate_value(good_principals[i], NULL, NULL, NULL, NULL, 0)))
            fail_msg("%s: %s", good_principals[i], mid_errmsg());
    static const struct {
        const char *v;
        const char *needle;
    } bad_principals[] = {
        {"spiffe://Bad Domain/x", "invalid SPIFFE ID 'spiffe://Bad Domain/x'"},
        {"example.org", "must be \"<trust-domain>/<path>\""},
        {"spiffe://example.org", "names a trust domain, not a workload"},
        {"example.org/a/", "invalid SPIFFE ID"},
        {"**", "'*' is only allowed"},
        {"a*b/c", "'*' is only allowed"},
        {"example.org/ns a/*", "cannot appear in a SPIFFE ID"},
        {"", "empty principal"},
        {"SPIFFE://example.org/x", "invalid SPIFFE ID"},
    };
    for (size_t i = 0; i < sizeof bad_principals / sizeof bad_principals[0]; i++) {
        mid_result r = validate_value(bad_principals[i].v, NULL, NULL, NULL, NULL, 0);
        if (mid_is_ok(r)) fail_msg("principal \"%s\" accepted", bad_principals[i].v);
        assert_msg_has("spec.rules[0].from[0].source.principals[0]: ");
        assert_msg_has(bad_principals[i].needle);
    }

    static const char *const good_ns[] = {"*", "prod", "prod-*", "*-dev", "a-b-c"};
    for (size_t i = 0; i < sizeof good_ns / sizeof good_ns[0]; i++)
        assert_true(mid_is_ok(validate_value(NULL, good_ns[i], NULL, NULL, NULL, 0)));
    static const char *const bad_ns[] = {"Prod", "a.b", "", "-", "*a*", "a_b"};
    for (size_t i = 0; i < sizeof bad_ns / sizeof bad_ns[0]; i++) {
        if (mid_is_ok(validate_value(NULL, bad_ns[i], NULL, NULL, NULL, 0)))
            fail_msg("namespace \"%s\" accepted", bad_ns[i]);
        assert_msg_has("source.namespaces[0]: ");
    }

    assert_true(mid_is_ok(validate_value(NULL, NULL, "GET", "/", "a.b", 1)));
    assert_true(mid_is_ok(validate_value(NULL, NULL, "PATCH", "*", "*", 65535)));
    assert_true(mid_is_ok(validate_value(NULL, NULL, "X_Y-Z", "*.png", "Api.Example.*", 8)));
    assert_false(mid_is_ok(validate_value(NULL, NULL, "get", NULL, NULL, 0)));
    assert_msg_has("operation.methods[0]: method \"get\"");
    assert_false(mid_is_ok(validate_value(NULL, NULL, "", NULL, NULL, 0)));
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, "a", NULL, 0)));
    assert_msg_has("operation.paths[0]: path \"a\" must start with '/'");
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, "/a b", NULL, 0)));
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, "/a*b", NULL, 0)));
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, "a*", NULL, 0)));
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, NULL, "a_b", 0)));
    assert_msg_has("operation.hosts[0]:");
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, NULL, "*a*", 0)));
    assert_false(mid_is_ok(validate_value(NULL, NULL, NULL, NULL, NULL, 65536)));
    assert_msg_has("operation.ports[0]: port 65536 is not in 1..65535");

    /* Action and limits. */
    mesh_policy p = {"shop", "pol", NULL, 0, (mesh_action)5, NULL, 0};
    assert_int_equal(mesh_policy_validate(&p).err, MID_E_INVALID);
    assert_msg_has("spec.action");
    mesh_rule rules[1] = {{0}};
    p = (mesh_policy){"shop", "pol", NULL, 0, MESH_ACTION_ALLOW, rules, MESH_RULES_MAX + 1};
    assert_int_equal(mesh_policy_validate(&p).err, MID_E_TOO_LARGE);
    mesh_label sel[2] = {{"b", "1"}, {"a", "2"}};
    p = (mesh_policy){"shop", "pol", sel, 2, MESH_ACTION_ALLOW, NULL, 0};
    assert_int_equal(mesh_policy_validate(&p).err, MID_E_INVALID);
    assert_msg_has("spec.selector.matchLabels[\"a\"]: labels are not sorted");
}

/* ---- helpers shared with the YAML loader (model_int.h) ---------------------------- */

static void test_path_key_and_lists(void **state)
{
    (void)state;
    char out[64] = "spec.labels";
    size_t o = mesh_path_key(out, strlen(out), sizeof out, "a\"b\\c\0d\x7f", 8);
    assert_string_equal(out, "spec.labels[\"a\\x22b\\x5cc\\x00d\\x7f\"]");
    assert_int_equal(o, strlen(out));
    /* a long key is cut to fit, terminated, and still closed when there is room */
    char small[16];
    o = mesh_path_key(small, 0, sizeof small, "0123456789abcdef", 16);
    assert_true(o < sizeof small);
    assert_int_equal(strlen(small), o);
    assert_memory_equal(small, "[\"0123456", 9);
    assert_string_equal(small + o - 2, "\"]");
    /* no room at all past the base: nothing but the terminator */
    char tight[4] = "abc";
    assert_int_equal(mesh_path_key(tight, 3, sizeof tight, "k", 1), 3);
    assert_string_equal(tight, "abc");

    mesh_label *l = calloc(3, sizeof *l);
    assert_non_null(l);
    const char *keys[] = {"zeta", "app", "example.com/mid"};
    for (int i = 0; i < 3; i++) {
        l[i].key = strdup(keys[i]);
        l[i].value = strdup("v");
    }
    mesh_labels_sort(l, 3);
    assert_string_equal(l[0].key, "app");
    assert_string_equal(l[1].key, "example.com/mid");
    assert_string_equal(l[2].key, "zeta");
    mesh_labels_free(l, 3);
    mesh_labels_free(NULL, 0);
    char **v = calloc(2, sizeof *v);
    assert_non_null(v);
    v[0] = strdup("x"); /* v[1] left NULL, as after a failed read */
    mesh_strv_free(v, 2);
    mesh_strv_free(NULL, 0);
}

int run_model_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocols),
        cmocka_unit_test(test_json_exact_shape),
        cmocka_unit_test(test_json_round_trip_examples),
        cmocka_unit_test(test_json_refusals),
        cmocka_unit_test(test_validate_service),
        cmocka_unit_test(test_validate_policy_values),
        cmocka_unit_test(test_path_key_and_lists),
    };
    return cmocka_run_group_tests_name("meshcore_model", tests, NULL, NULL);
}
