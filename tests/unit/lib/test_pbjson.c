/* Unit tests for lib/pbjson.c: protobuf-c messages to proto3 JSON, checked
 * against exact expected JSON, in memory and after a pack/decode round trip,
 * and the refusals (bad bytes, bad UTF-8, out-of-range well-known types,
 * depth and size limits). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "envoy/type/v3/semantic_version.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "lib/pbjson.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "tests/unit/lib/lib_tests.h"

#define SECRET_URL "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

/* ---- helpers ------------------------------------------------------------------------------ */

static const ProtobufCMessageDescriptor *const known[] = {
    &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__struct__descriptor,
};
static pbjson_table table = {known, sizeof known / sizeof known[0]};

/* Buffers packed by the tests, freed in one go. */
static uint8_t *bufs[32];
static size_t n_bufs;

static void free_bufs(void)
{
    for (size_t i = 0; i < n_bufs; i++) free(bufs[i]);
    n_bufs = 0;
}

static ProtobufCBinaryData pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    assert_int_equal(protobuf_c_message_pack(m, b), n);
    assert_true(n_bufs < sizeof bufs / sizeof bufs[0]);
    bufs[n_bufs++] = b;
    return (ProtobufCBinaryData){.len = n, .data = b};
}

static Google__Protobuf__Any any_of(const char *url, const ProtobufCMessage *m)
{
    Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
    a.type_url = (char *)url;
    a.value = pack(m);
    return a;
}

/* Compares JSON exactly (json_equal: same keys, values, array order). */
static void expect_json(json_t *got, const char *want_text)
{
    json_error_t err;
    json_t *want = json_loads(want_text, JSON_DECODE_ANY, &err);
    if (want == NULL) fail_msg("bad expected JSON: %s: %s", err.text, want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        char *w = json_dumps(want, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "got:  %s\nwant: %s\n", g, w);
        free(g);
        free(w);
        json_decref(want);
        fail_msg("JSON differs");
    }
    json_decref(want);
}

/* Converts m in memory and after packing and decoding; both must equal want. */
static void check(const ProtobufCMessage *m, const char *want)
{
    json_t *j = NULL;
    mid_result r = pbjson_from_message(m, pbjson_table_resolve, &table, &j);
    if (!mid_is_ok(r)) fail_msg("from_message: %s", mid_errmsg());
    expect_json(j, want);
    json_decref(j);
    ProtobufCBinaryData b = pack(m);
    r = pbjson_from_packed(m->descriptor, b.data, b.len, pbjson_table_resolve, &table, &j);
    if (!mid_is_ok(r)) fail_msg("from_packed: %s", mid_errmsg());
    expect_json(j, want);
    json_decref(j);
}

static void check_fails(const ProtobufCMessage *m, const pbjson_opts *o, mid_err want,
                        const char *needle)
{
    json_t *j = (json_t *)&j; /* must be reset to NULL */
    mid_result r = pbjson_from_message_opts(m, o, &j);
    if (mid_is_ok(r)) fail_msg("accepted; wanted \"%s\"", needle);
    assert_null(j);
    assert_int_equal(r.err, want);
    if (strstr(mid_errmsg(), needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", mid_errmsg(), needle);
}

static void packed_fails(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n,
                         const pbjson_opts *o, mid_err want, const char *needle)
{
    json_t *j = (json_t *)&j;
    mid_result r = pbjson_from_packed_opts(d, b, n, o, &j);
    if (mid_is_ok(r)) fail_msg("accepted; wanted \"%s\"", needle);
    assert_null(j);
    assert_int_equal(r.err, want);
    if (strstr(mid_errmsg(), needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", mid_errmsg(), needle);
}

static Google__Protobuf__Value str_value(const char *s)
{
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v.string_value = (char *)s;
    return v;
}

/* ---- conversions ------------------------------------------------------------------------- */

static void test_discovery_response_with_secret(void **state)
{
    (void)state;
    Envoy__Config__Core__V3__DataSource chain = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT;
    chain.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
    chain.inline_bytes = (ProtobufCBinaryData){.len = 4, .data = (uint8_t *)"PEM\n"};
    Envoy__Config__Core__V3__DataSource key = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT;
    key.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    key.inline_string = (char *)"k";
    Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate cert =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT;
    cert.certificate_chain = &chain;
    cert.private_key = &key;
    Envoy__Extensions__TransportSockets__Tls__V3__Secret sec =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT;
    sec.name = (char *)"default";
    sec.type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
    sec.tls_certificate = &cert;
    Google__Protobuf__Any a = any_of(SECRET_URL, &sec.base);
    Google__Protobuf__Any *res[] = {&a};
    Envoy__Service__Discovery__V3__DiscoveryResponse resp =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.version_info = (char *)"v1";
    resp.type_url = (char *)SECRET_URL;
    resp.nonce = (char *)"n1";
    resp.n_resources = 1;
    resp.resources = res;
    check(&resp.base,
          "{\"versionInfo\": \"v1\", \"typeUrl\": \"" SECRET_URL "\", \"nonce\": \"n1\","
          " \"resources\": [{\"@type\": \"" SECRET_URL "\", \"name\": \"default\","
          "  \"tlsCertificate\": {\"certificateChain\": {\"inlineBytes\": \"UEVNCg==\"},"
          "                       \"privateKey\": {\"inlineString\": \"k\"}}}]}");

    /* "@type" comes first in the object */
    json_t *j = NULL;
    assert_true(mid_is_ok(pbjson_from_message(&resp.base, pbjson_table_resolve, &table, &j)));
    json_t *r0 = json_array_get(json_object_get(j, "resources"), 0);
    assert_string_equal(json_object_iter_key(json_object_iter(r0)), "@type");
    json_decref(j);

    /* canary = true and a control plane appear once set */
    Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
    cp.identifier = (char *)"meshid";
    resp.canary = 1;
    resp.control_plane = &cp;
    resp.n_resources = 0;
    check(&resp.base, "{\"versionInfo\": \"v1\", \"typeUrl\": \"" SECRET_URL "\", \"nonce\": \"n1\","
                      " \"canary\": true, \"controlPlane\": {\"identifier\": \"meshid\"}}");
    free_bufs();
}

static void test_node_struct_and_status(void **state)
{
    (void)state;
    Google__Protobuf__Value sid = str_value("spiffe://td/ns/a/sa/b");
    Google__Protobuf__Value num = GOOGLE__PROTOBUF__VALUE__INIT;
    num.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    num.number_value = 1.5;
    Google__Protobuf__Value yes = GOOGLE__PROTOBUF__VALUE__INIT;
    yes.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    yes.bool_value = 1;
    Google__Protobuf__Value nul = GOOGLE__PROTOBUF__VALUE__INIT;
    nul.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    Google__Protobuf__Value x = str_value("x");
    Google__Protobuf__Value *items[] = {&num, &x};
    Google__Protobuf__ListValue lv = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
    lv.n_values = 2;
    lv.values = items;
    Google__Protobuf__Value list = GOOGLE__PROTOBUF__VALUE__INIT;
    list.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    list.list_value = &lv;
    Google__Protobuf__Value v = str_value("v");
    Google__Protobuf__Struct__FieldsEntry ie = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    ie.key = (char *)"k";
    ie.value = &v;
    Google__Protobuf__Struct__FieldsEntry *ies[] = {&ie};
    Google__Protobuf__Struct inner = GOOGLE__PROTOBUF__STRUCT__INIT;
    inner.n_fields = 1;
    inner.fields = ies;
    Google__Protobuf__Value sub = GOOGLE__PROTOBUF__VALUE__INIT;
    sub.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    sub.struct_value = &inner;
    Google__Protobuf__Struct__FieldsEntry e[6];
    Google__Protobuf__Value *vals[] = {&sid, &num, &yes, &nul, &list, &sub};
    const char *keys[] = {"SPIFFE_ID", "n", "b", "z", "l", "s"};
    Google__Protobuf__Struct__FieldsEntry *eps[6];
    for (size_t i = 0; i < 6; i++) {
        google__protobuf__struct__fields_entry__init(&e[i]);
        e[i].key = (char *)keys[i];
        e[i].value = vals[i];
        eps[i] = &e[i];
    }
    Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
    md.n_fields = 6;
    md.fields = eps;

    Envoy__Type__V3__SemanticVersion sv = ENVOY__TYPE__V3__SEMANTIC_VERSION__INIT;
    sv.major_number = 1;
    sv.minor_number = 29;
    Envoy__Config__Core__V3__BuildVersion bv = ENVOY__CONFIG__CORE__V3__BUILD_VERSION__INIT;
    bv.version = &sv;
    Envoy__Config__Core__V3__Locality loc = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    loc.zone = (char *)"z1";
    char *features[] = {(char *)"f1", (char *)"f2"};
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = (char *)"n1";
    node.cluster = (char *)"c";
    node.metadata = &md;
    node.locality = &loc;
    node.user_agent_name = (char *)"envoy";
    node.user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_BUILD_VERSION;
    node.user_agent_build_version = &bv;
    node.n_client_features = 2;
    node.client_features = features;

    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = 13;
    st.message = (char *)"bad \"cluster\"\n";
    char *names[] = {(char *)"a"};
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    req.node = &node;
    req.n_resource_names = 1;
    req.resource_names = names;
    req.error_detail = &st;
    check(&req.base,
          "{\"node\": {\"id\": \"n1\", \"cluster\": \"c\","
          "  \"metadata\": {\"SPIFFE_ID\": \"spiffe://td/ns/a/sa/b\", \"n\": 1.5, \"b\": true,"
          "                \"z\": null, \"l\": [1.5, \"x\"], \"s\": {\"k\": \"v\"}},"
          "  \"locality\": {\"zone\": \"z1\"}, \"userAgentName\": \"envoy\","
          "  \"userAgentBuildVersion\": {\"version\": {\"majorNumber\": 1, \"minorNumber\": 29}},"
          "  \"clientFeatures\": [\"f1\", \"f2\"]},"
          " \"resourceNames\": [\"a\"],"
          " \"errorDetail\": {\"code\": 13, \"message\": \"bad \\\"cluster\\\"\\n\"}}");

    /* an empty Struct is {} and an empty list [] when present */
    md.n_fields = 0;
    lv.n_values = 0;
    node.n_client_features = 0;
    node.user_agent_version_type_case = ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE__NOT_SET;
    req.error_detail = NULL;
    req.n_resource_names = 0;
    check(&req.base, "{\"node\": {\"id\": \"n1\", \"cluster\": \"c\", \"metadata\": {},"
                     " \"locality\": {\"zone\": \"z1\"}, \"userAgentName\": \"envoy\"}}");
    check(&list.base, "[]");
    free_bufs();
}

static void test_maps(void **state)
{
    (void)state;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry e1 =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry e2 = e1;
    e1.key = (char *)"outbound|80||a";
    e1.value = (char *)"3";
    e2.key = (char *)"b";
    e2.value = (char *)"";
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *es[] = {&e1,
                                                                                              &e2};
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest d =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    d.type_url = (char *)"t";
    check(&d.base, "{\"typeUrl\": \"t\"}"); /* empty map: absent */
    d.n_initial_resource_versions = 2;
    d.initial_resource_versions = es;
    check(&d.base, "{\"typeUrl\": \"t\", \"initialResourceVersions\": {\"outbound|80||a\": \"3\","
                   " \"b\": \"\"}}");

    /* map<string, Struct> and map<string, Any> (resolved) */
    Google__Protobuf__Value v = str_value("v");
    Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    fe.key = (char *)"k";
    fe.value = &v;
    Google__Protobuf__Struct__FieldsEntry *fes[] = {&fe};
    Google__Protobuf__Struct s = GOOGLE__PROTOBUF__STRUCT__INIT;
    s.n_fields = 1;
    s.fields = fes;
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry me =
        ENVOY__CONFIG__CORE__V3__METADATA__FILTER_METADATA_ENTRY__INIT;
    me.key = (char *)"istio";
    me.value = &s;
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry me2 = me;
    me2.key = (char *)"empty";
    me2.value = NULL; /* absent message value: the default instance */
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *mes[] = {&me, &me2};
    Google__Protobuf__Any a = any_of("type.googleapis.com/google.protobuf.Struct", &s.base);
    Envoy__Config__Core__V3__Metadata__TypedFilterMetadataEntry te =
        ENVOY__CONFIG__CORE__V3__METADATA__TYPED_FILTER_METADATA_ENTRY__INIT;
    te.key = (char *)"typed";
    te.value = &a;
    Envoy__Config__Core__V3__Metadata__TypedFilterMetadataEntry *tes[] = {&te};
    Envoy__Config__Core__V3__Metadata md = ENVOY__CONFIG__CORE__V3__METADATA__INIT;
    md.n_filter_metadata = 2;
    md.filter_metadata = mes;
    md.n_typed_filter_metadata = 1;
    md.typed_filter_metadata = tes;
    check(&md.base, "{\"filterMetadata\": {\"istio\": {\"k\": \"v\"}, \"empty\": {}},"
                    " \"typedFilterMetadata\": {\"typed\": {\"@type\":"
                    " \"type.googleapis.com/google.protobuf.Struct\", \"value\": {\"k\": \"v\"}}}}");
    /* a Struct entry without a value is null */
    fe.value = NULL;
    check(&s.base, "{\"k\": null}");
    free_bufs();
}

static void test_durations_and_wrappers(void **state)
{
    (void)state;
    Google__Protobuf__Duration du = GOOGLE__PROTOBUF__DURATION__INIT;
    Envoy__Service__Discovery__V3__Resource res = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
    res.name = (char *)"r";
    res.ttl = &du;
    static const struct {
        int64_t s;
        int32_t ns;
        const char *want;
    } cases[] = {
        {1, 500000000, "\"1.500s\""},      {0, 0, "\"0s\""},
        {-1, -5000, "\"-1.000005s\""},     {3, 1, "\"3.000000001s\""},
        {0, -200000000, "\"-0.200s\""},    {315576000000, 0, "\"315576000000s\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        du.seconds = cases[i].s;
        du.nanos = cases[i].ns;
        char want[128];
        snprintf(want, sizeof want, "{\"name\": \"r\", \"ttl\": %s}", cases[i].want);
        check(&res.base, want);
    }
    du.seconds = 1;
    du.nanos = -1;
    check_fails(&res.base, NULL, MID_E_INVALID, "pbjson: .ttl: Duration 1s -1ns is out of range");
    du.seconds = 315576000001;
    du.nanos = 0;
    check_fails(&du.base, NULL, MID_E_INVALID, "out of range");
    du.seconds = 0;
    du.nanos = 1000000000;
    check_fails(&du.base, NULL, MID_E_INVALID, "out of range");

    /* wrappers: the plain value, even when zero */
    Google__Protobuf__BoolValue b = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    check(&b.base, "false");
    Google__Protobuf__UInt32Value u32 = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    u32.value = 4000000000u;
    check(&u32.base, "4000000000");
    Google__Protobuf__Int32Value i32 = GOOGLE__PROTOBUF__INT32_VALUE__INIT;
    i32.value = -7;
    check(&i32.base, "-7");
    Google__Protobuf__Int64Value i64 = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    i64.value = INT64_MIN;
    check(&i64.base, "\"-9223372036854775808\"");
    Google__Protobuf__UInt64Value u64 = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    u64.value = UINT64_MAX;
    check(&u64.base, "\"18446744073709551615\"");
    Google__Protobuf__StringValue sv = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    check(&sv.base, "\"\"");
    Google__Protobuf__BytesValue bv = GOOGLE__PROTOBUF__BYTES_VALUE__INIT;
    bv.value = (ProtobufCBinaryData){.len = 5, .data = (uint8_t *)"\x00\xff\x10" "ab"};
    check(&bv.base, "\"AP8QYWI=\"");
    Google__Protobuf__FloatValue fv = GOOGLE__PROTOBUF__FLOAT_VALUE__INIT;
    fv.value = 0.5f;
    check(&fv.base, "0.5");
    Google__Protobuf__DoubleValue dv = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    dv.value = NAN;
    check(&dv.base, "\"NaN\"");
    dv.value = -INFINITY;
    check(&dv.base, "\"-Infinity\"");

    /* 64-bit integers in ordinary messages are strings; zero ones are absent */
    Meshid__Admin__V1__PrepareAuthorityResponse par = MESHID__ADMIN__V1__PREPARE_AUTHORITY_RESPONSE__INIT;
    par.bundle_sequence = (UINT64_C(1) << 63) + 1;
    par.root_is_new = 1;
    check(&par.base, "{\"rootIsNew\": true, \"bundleSequence\": \"9223372036854775809\"}");
    Meshid__Admin__V1__Agent ag = MESHID__ADMIN__V1__AGENT__INIT;
    ag.not_after = -1;
    ag.spiffe_id = (char *)"spiffe://td/x";
    check(&ag.base, "{\"spiffeId\": \"spiffe://td/x\", \"notAfter\": \"-1\"}");

    /* Struct numbers must be finite */
    Google__Protobuf__Value nv = GOOGLE__PROTOBUF__VALUE__INIT;
    nv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    nv.number_value = INFINITY;
    check_fails(&nv.base, NULL, MID_E_INVALID, "not finite");
    nv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET;
    check_fails(&nv.base, NULL, MID_E_INVALID, "no kind set");
    free_bufs();
}

static void test_enums_and_oneofs(void **state)
{
    (void)state;
    Envoy__Config__Core__V3__AggregatedConfigSource ads =
        ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT;
    Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT;
    Envoy__Config__Core__V3__ConfigSource cs = ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT;
    cs.config_source_specifier_case = ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    cs.ads = &ads;
    cs.resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
    cs.initial_fetch_timeout = &zero;
    check(&cs.base, "{\"ads\": {}, \"resourceApiVersion\": \"V3\", \"initialFetchTimeout\": \"0s\"}");
    cs.resource_api_version = (Envoy__Config__Core__V3__ApiVersion)99; /* unknown: the number */
    cs.initial_fetch_timeout = NULL;
    check(&cs.base, "{\"ads\": {}, \"resourceApiVersion\": 99}");
    cs.resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__AUTO; /* zero: absent */
    check(&cs.base, "{\"ads\": {}}");

    Envoy__Type__Matcher__V3__StringMatcher sm = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT;
    sm.match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
    sm.exact = (char *)"spiffe://td/meshid/server";
    Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher san =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__INIT;
    san.san_type = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI;
    san.matcher = &sm;
    check(&san.base, "{\"sanType\": \"URI\", \"matcher\": {\"exact\": \"spiffe://td/meshid/server\"}}");

    /* a oneof string at protobuf_c_empty_string is not sent (pitfall §0.1-1),
     * a separate "" is */
    Envoy__Config__Core__V3__DataSource ds = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT;
    ds.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    ds.inline_string = (char *)protobuf_c_empty_string;
    check(&ds.base, "{}");
    static char empty[1] = "";
    ds.inline_string = empty;
    check(&ds.base, "{\"inlineString\": \"\"}");
    ds.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
    ds.inline_bytes = (ProtobufCBinaryData){0};
    check(&ds.base, "{\"inlineBytes\": \"\"}"); /* a set oneof scalar is sent even if empty */
    free_bufs();
}

static void test_any_fallbacks(void **state)
{
    (void)state;
    Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
    cp.identifier = (char *)"abc";
    Google__Protobuf__Any a = any_of("type.googleapis.com/envoy.config.core.v3.ControlPlane", &cp.base);
    Google__Protobuf__Any *res[] = {&a};
    Envoy__Service__Discovery__V3__DiscoveryResponse resp =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.n_resources = 1;
    resp.resources = res;
    /* not in the table: base64 of the bytes (0a 03 'abc') */
    check(&resp.base, "{\"resources\": [{\"@type\": \"type.googleapis.com/envoy.config.core.v3."
                      "ControlPlane\", \"value\": \"CgNhYmM=\"}]}");
    /* no resolver at all */
    json_t *j = NULL;
    assert_true(mid_is_ok(pbjson_from_message(&a.base, NULL, NULL, &j)));
    expect_json(j, "{\"@type\": \"type.googleapis.com/envoy.config.core.v3.ControlPlane\","
                   " \"value\": \"CgNhYmM=\"}");
    json_decref(j);

    /* a well-known inner type: {"@type", "value": its JSON} */
    Google__Protobuf__Duration du = GOOGLE__PROTOBUF__DURATION__INIT;
    du.seconds = 2;
    Google__Protobuf__Any ad = any_of("type.googleapis.com/google.protobuf.Duration", &du.base);
    check(&ad.base, "{\"@type\": \"type.googleapis.com/google.protobuf.Duration\", \"value\": \"2s\"}");

    /* empty Any is {}; bytes without a type are refused */
    Google__Protobuf__Any empty = GOOGLE__PROTOBUF__ANY__INIT;
    check(&empty.base, "{}");
    empty.value = (ProtobufCBinaryData){.len = 1, .data = (uint8_t *)"x"};
    check_fails(&empty.base, NULL, MID_E_INVALID, "Any with a value but no type URL");
    free_bufs();
}

/* ---- refusals ---------------------------------------------------------------------------------- */

static void test_bad_bytes(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *rd = &envoy__service__discovery__v3__discovery_response__descriptor;
    pbjson_opts o = {.resolve = pbjson_table_resolve, .resolve_ctx = &table};
    /* truncated: field 1 claims 5 bytes, 2 follow */
    static const uint8_t trunc[] = {0x0a, 0x05, 'a', 'b'};
    packed_fails(rd, trunc, sizeof trunc, &o, MID_E_INVALID, "truncated length-delimited");
    static const uint8_t badtag[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    packed_fails(rd, badtag, sizeof badtag, &o, MID_E_INVALID, "malformed field tag");
    static const uint8_t group[] = {0x0b, 0x0c}; /* wire type 3 */
    packed_fails(rd, group, sizeof group, &o, MID_E_INVALID, "unsupported wire type 3");
    static const uint8_t fixed[] = {0x09, 0x01, 0x02}; /* 64-bit field, 2 bytes */
    packed_fails(rd, fixed, sizeof fixed, &o, MID_E_INVALID, "truncated field");
    /* a message field sent as a varint: protobuf-c refuses it */
    static const uint8_t wrongtype[] = {0x30, 0x01}; /* control_plane (6) as varint */
    packed_fails(rd, wrongtype, sizeof wrongtype, &o, MID_E_INVALID, "does not decode");

    /* a resolvable Any whose value is garbage: error with the path */
    Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
    a.type_url = (char *)SECRET_URL;
    a.value = (ProtobufCBinaryData){.len = sizeof trunc, .data = (uint8_t *)trunc};
    Google__Protobuf__Any *res[] = {&a};
    Envoy__Service__Discovery__V3__DiscoveryResponse resp =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.n_resources = 1;
    resp.resources = res;
    check_fails(&resp.base, &o, MID_E_INVALID, "pbjson: .resources[0]: envoy.extensions.transport_sockets.tls.v3.Secret: truncated");
    ProtobufCBinaryData b = pack(&resp.base);
    packed_fails(rd, b.data, b.len, &o, MID_E_INVALID, ".resources[0]");

    /* a whole message cut short */
    Envoy__Extensions__TransportSockets__Tls__V3__Secret sec =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT;
    sec.name = (char *)"default";
    b = pack(&sec.base);
    packed_fails(&envoy__extensions__transport_sockets__tls__v3__secret__descriptor, b.data,
                 b.len - 1, &o, MID_E_INVALID, "truncated");

    /* strings must be UTF-8, map keys too */
    resp.n_resources = 0;
    resp.nonce = (char *)"n\xc3\x28";
    check_fails(&resp.base, &o, MID_E_INVALID, "pbjson: .nonce: string is not valid UTF-8");
    resp.nonce = (char *)"\xed\xa0\x80"; /* a surrogate */
    check_fails(&resp.base, &o, MID_E_INVALID, "not valid UTF-8");
    resp.nonce = (char *)"\xc0\xaf"; /* overlong */
    check_fails(&resp.base, &o, MID_E_INVALID, "not valid UTF-8");
    resp.nonce = (char *)"caf\xc3\xa9 \xf0\x9f\x98\x80";
    check(&resp.base, "{\"nonce\": \"caf\xc3\xa9 \xf0\x9f\x98\x80\"}");
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry e =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
    e.key = (char *)"\xff";
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *es[] = {&e};
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest d =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    d.n_initial_resource_versions = 1;
    d.initial_resource_versions = es;
    check_fails(&d.base, NULL, MID_E_INVALID, "map key is not valid UTF-8");

    json_t *j = (json_t *)&j;
    assert_int_equal(pbjson_from_packed(rd, NULL, 0, NULL, NULL, &j).err, MID_E_OK); /* {} */
    expect_json(j, "{}");
    json_decref(j);
    assert_int_equal(pbjson_from_packed(rd, NULL, 3, NULL, NULL, &j).err, MID_E_INVALID);
    assert_null(j);
    free_bufs();
}

/* Value -> ListValue -> Value -> ... `levels` lists deep, around a string. */
static Google__Protobuf__Value *deep_list(size_t levels)
{
    Google__Protobuf__Value *v = malloc(sizeof *v);
    assert_non_null(v);
    *v = str_value("leaf");
    for (size_t i = 0; i < levels; i++) {
        Google__Protobuf__ListValue *lv = malloc(sizeof *lv);
        Google__Protobuf__Value **items = malloc(sizeof *items);
        Google__Protobuf__Value *outer = malloc(sizeof *outer);
        assert_true(lv && items && outer);
        google__protobuf__list_value__init(lv);
        items[0] = v;
        lv->n_values = 1;
        lv->values = items;
        google__protobuf__value__init(outer);
        outer->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        outer->list_value = lv;
        v = outer;
    }
    return v;
}

static void free_deep_list(Google__Protobuf__Value *v)
{
    while (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE) {
        Google__Protobuf__Value *next = v->list_value->values[0];
        free(v->list_value->values);
        free(v->list_value);
        free(v);
        v = next;
    }
    free(v);
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* each list level is two messages (Value + ListValue) */
    Google__Protobuf__Value *ok = deep_list(31); /* 63 messages */
    json_t *j = NULL;
    mid_result r = pbjson_from_message(&ok->base, NULL, NULL, &j);
    if (!mid_is_ok(r)) fail_msg("31 levels refused: %s", mid_errmsg());
    json_t *leaf = j;
    for (int i = 0; i < 31; i++) leaf = json_array_get(leaf, 0);
    assert_string_equal(json_string_value(leaf), "leaf");
    json_decref(j);
    ProtobufCBinaryData b = pack(&ok->base);
    r = pbjson_from_packed(&google__protobuf__value__descriptor, b.data, b.len, NULL, NULL, &j);
    if (!mid_is_ok(r)) fail_msg("31 levels refused packed: %s", mid_errmsg());
    json_decref(j);
    free_deep_list(ok);

    Google__Protobuf__Value *deep = deep_list(32); /* 65 messages */
    check_fails(&deep->base, NULL, MID_E_TOO_LARGE, "nested deeper than 64");
    b = pack(&deep->base);
    packed_fails(&google__protobuf__value__descriptor, b.data, b.len, NULL, MID_E_TOO_LARGE,
                 "nested deeper than 64");
    pbjson_opts o = {.max_depth = 5};
    check_fails(&deep->base, &o, MID_E_TOO_LARGE, "nested deeper than 5");
    free_deep_list(deep);

    /* a hostile wire message far deeper than the stack would like, written
     * back to front (Value.list_value = 6, ListValue.values = 1): refused
     * before protobuf-c decodes it */
    enum { LEVELS = 200000, CAP = LEVELS * 8 + 16 };
    uint8_t *w = malloc(CAP);
    assert_non_null(w);
    size_t at = CAP;
    w[--at] = 'x';
    w[--at] = 1;
    w[--at] = 0x1a; /* string_value "x" */
    for (size_t i = 0; i < LEVELS; i++) {
        size_t len = CAP - at;
        uint8_t tmp[10];
        size_t n = 0;
        do {
            tmp[n++] = (uint8_t)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
            len >>= 7;
        } while (len);
        while (n) w[--at] = tmp[--n];
        w[--at] = (i % 2 == 0) ? 0x0a : 0x32;
    }
    packed_fails(&google__protobuf__value__descriptor, w + at, CAP - at, NULL,
                 MID_E_TOO_LARGE, "nested deeper than 64");
    pbjson_opts big = {.max_depth = 100000}; /* clamped to 1000 */
    packed_fails(&google__protobuf__value__descriptor, w + at, CAP - at, &big,
                 MID_E_TOO_LARGE, "nested deeper than 1000");
    free(w);
    free_bufs();
}

static void test_size_limit(void **state)
{
    (void)state;
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    Envoy__Service__Discovery__V3__DiscoveryResponse resp =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    resp.nonce = big;
    pbjson_opts o = {.max_bytes = 256};
    check_fails(&resp.base, &o, MID_E_TOO_LARGE, "output over the limit of 256 bytes");
    ProtobufCBinaryData b = pack(&resp.base);
    packed_fails(resp.base.descriptor, b.data, b.len, &o, MID_E_TOO_LARGE, "over the limit of 256");
    o.max_bytes = 400; /* input fits, output fits */
    json_t *j = NULL;
    assert_true(mid_is_ok(pbjson_from_packed_opts(resp.base.descriptor, b.data, b.len, &o, &j)));
    json_decref(j);

    /* many small repeated values add up */
    char *names[100];
    for (size_t i = 0; i < 100; i++) names[i] = (char *)"abcdefgh";
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    req.n_resource_names = 100;
    req.resource_names = names;
    o.max_bytes = 800;
    check_fails(&req.base, &o, MID_E_TOO_LARGE, ".resourceNames[");
    free_bufs();
}

static void test_names_and_table(void **state)
{
    (void)state;
    char out[64];
    static const char *const cases[][2] = {
        {"match_typed_subject_alt_names", "matchTypedSubjectAltNames"},
        {"id", "id"},
        {"foo_1bar", "foo1bar"},
        {"a_b_c", "aBC"},
        {"ipv4_compat", "ipv4Compat"},
        {"x__y", "xY"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_true(mid_is_ok(pbjson_json_name(cases[i][0], out, sizeof out)));
        assert_string_equal(out, cases[i][1]);
    }
    assert_int_equal(pbjson_json_name("abcdef", out, 6).err, MID_E_TOO_LARGE);
    assert_true(mid_is_ok(pbjson_json_name("abcdef", out, 7)));

    assert_ptr_equal(pbjson_table_resolve(&table, SECRET_URL), known[0]);
    assert_ptr_equal(pbjson_table_resolve(&table, "example.com/x/y/google.protobuf.Duration"), known[1]);
    assert_ptr_equal(pbjson_table_resolve(&table, "google.protobuf.Struct"), known[2]);
    assert_null(pbjson_table_resolve(&table, "type.googleapis.com/google.protobuf.Durations"));
    assert_null(pbjson_table_resolve(&table, "type.googleapis.com/"));
    assert_null(pbjson_table_resolve(NULL, SECRET_URL));
}

int run_pbjson_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discovery_response_with_secret),
        cmocka_unit_test(test_node_struct_and_status),
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_durations_and_wrappers),
        cmocka_unit_test(test_enums_and_oneofs),
        cmocka_unit_test(test_any_fallbacks),
        cmocka_unit_test(test_bad_bytes),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_names_and_table),
    };
    return cmocka_run_group_tests_name("lib/pbjson", tests, NULL, NULL);
}
