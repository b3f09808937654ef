/* xds_proxy_from_node: identity rules, flavour detection, metadata checks
 * and limits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "google/protobuf/struct.pb-c.h"
#include "tests/unit/xds/xds_tests.h"

#define META_MAX 8

/* A Node with up to META_MAX string metadata entries (value NULL = a number). */
typedef struct {
    Envoy__Config__Core__V3__Node node;
    Google__Protobuf__Struct md;
    Google__Protobuf__Struct__FieldsEntry ent[META_MAX];
    Google__Protobuf__Struct__FieldsEntry *entp[META_MAX];
    Google__Protobuf__Value val[META_MAX];
} t_node;

static void node_init(t_node *n, const char *id, const char *ua)
{
    memset(n, 0, sizeof *n);
    envoy__config__core__v3__node__init(&n->node);
    google__protobuf__struct__init(&n->md);
    n->node.id = (char *)id;
    n->node.cluster = (char *)"test-cluster";
    n->node.user_agent_name = (char *)ua;
    n->node.metadata = &n->md;
    n->md.fields = n->entp;
}

static void meta(t_node *n, const char *key, const char *value)
{
    size_t i = n->md.n_fields++;
    assert_true(i < META_MAX);
    google__protobuf__struct__fields_entry__init(&n->ent[i]);
    google__protobuf__value__init(&n->val[i]);
    n->ent[i].key = (char *)key;
    n->ent[i].value = &n->val[i];
    if (value) {
        n->val[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        n->val[i].string_value = (char *)value;
    } else {
        n->val[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        n->val[i].number_value = 42;
    }
    n->entp[i] = &n->ent[i];
}

static void test_tls_peer_is_identity(void **state)
{
    (void)state;
    t_node n;
    xds_proxy p;
    node_init(&n, "sidecar~10.0.0.1~x.ns~ns.svc.cluster.local", "envoy");
    OK(xds_proxy_from_node(&n.node, ID_RATINGS, &p));
    assert_string_equal(p.spiffe_id, ID_RATINGS);
    assert_string_equal(p.node_id, "sidecar~10.0.0.1~x.ns~ns.svc.cluster.local");
    assert_string_equal(p.node_cluster, "test-cluster");
    assert_false(p.proxyless);
    assert_null(p.cert_provider);
    assert_string_equal(p.sds_cluster, "sds-grpc");
    xds_proxy_clear(&p);
    assert_null(p.spiffe_id);
    xds_proxy_clear(&p); /* twice is fine */

    /* metadata equal to the peer: accepted; a node id that is another
     * SPIFFE ID does not matter over TLS */
    node_init(&n, ID_REVIEWS, "envoy");
    meta(&n, "SPIFFE_ID", ID_RATINGS);
    OK(xds_proxy_from_node(&n.node, ID_RATINGS, &p));
    assert_string_equal(p.spiffe_id, ID_RATINGS);
    xds_proxy_clear(&p);
}

static void test_tls_peer_mismatch_denied(void **state)
{
    (void)state;
    t_node n;
    xds_proxy p;
    node_init(&n, "n1", "envoy");
    meta(&n, "SPIFFE_ID", ID_REVIEWS);
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_DENIED);
    assert_non_null(strstr(mid_errmsg(), "claims"));
    assert_non_null(strstr(mid_errmsg(), ID_RATINGS));
    assert_null(p.spiffe_id);
    /* a malformed peer ID (cannot happen with our TLS layer, still refused) */
    node_init(&n, "n1", "envoy");
    FAILS(xds_proxy_from_node(&n.node, "spiffe://Example.org/x", &p), MID_E_INVALID);
    FAILS(xds_proxy_from_node(&n.node, "spiffe://example.org", &p), MID_E_INVALID);
}

static void test_plaintext_identity(void **state)
{
    (void)state;
    t_node n;
    xds_proxy p;
    /* metadata SPIFFE_ID wins over the node id */
    node_init(&n, ID_REVIEWS, "envoy");
    meta(&n, "SPIFFE_ID", ID_RATINGS);
    OK(xds_proxy_from_node(&n.node, NULL, &p));
    assert_string_equal(p.spiffe_id, ID_RATINGS);
    xds_proxy_clear(&p);
    /* node id as SPIFFE ID */
    node_init(&n, ID_REVIEWS, "envoy");
    OK(xds_proxy_from_node(&n.node, NULL, &p));
    assert_string_equal(p.spiffe_id, ID_REVIEWS);
    xds_proxy_clear(&p);
    /* none */
    node_init(&n, "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", "envoy");
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_DENIED);
    assert_non_null(strstr(mid_errmsg(), "has no identity"));
    assert_non_null(strstr(mid_errmsg(), "sidecar~10.0.0.1"));
    node_init(&n, "", "envoy");
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_DENIED);
    n.node.id = NULL;
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_DENIED);
    n.node.metadata = NULL;
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_DENIED);
}

static void test_malformed_ids_invalid(void **state)
{
    (void)state;
    t_node n;
    xds_proxy p;
    node_init(&n, "n1", "envoy");
    meta(&n, "SPIFFE_ID", "spiffe://example.org/ns//sa/x");
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "metadata SPIFFE_ID"));
    node_init(&n, "n1", "envoy");
    meta(&n, "SPIFFE_ID", "not a spiffe id");
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_INVALID);
    node_init(&n, "spiffe://UPPER.example/x", "envoy");
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "node id"));
    node_init(&n, "spiffe://example.org", "envoy"); /* no path: not a workload */
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "workload"));
    /* wrong metadata type */
    node_init(&n, ID_REVIEWS, "envoy");
    meta(&n, "SPIFFE_ID", NULL);
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "must be a string"));
    node_init(&n, ID_REVIEWS, "envoy");
    meta(&n, "SDS_CLUSTER", NULL);
    FAILS(xds_proxy_from_node(&n.node, NULL, &p), MID_E_INVALID);
    /* no node */
    FAILS(xds_proxy_from_node(NULL, ID_REVIEWS, &p), MID_E_INVALID);
}

static void test_flavours(void **state)
{
    (void)state;
    t_node n;
    xds_proxy p;
    /* gRPC by user agent; CERT_PROVIDER kept, SDS_CLUSTER ignored */
    node_init(&n, ID_REVIEWS, "gRPC Node Pure JS");
    meta(&n, "CERT_PROVIDER", "default");
    meta(&n, "SDS_CLUSTER", "ignored");
    OK(xds_proxy_from_node(&n.node, NULL, &p));
    assert_true(p.proxyless);
    assert_string_equal(p.cert_provider, "default");
    assert_null(p.sds_cluster);
    xds_proxy_clear(&p);
    /* gRPC by GENERATOR, no provider = plaintext */
    node_init(&n, ID_REVIEWS, "something");
    meta(&n, "GENERATOR", "grpc");
    OK(xds_proxy_from_node(&n.node, NULL, &p));
    assert_true(p.proxyless);
    assert_null(p.cert_provider);
    xds_proxy_clear(&p);
    /* Envoy with its own SDS cluster; CERT_PROVIDER ignored */
    node_init(&n, ID_REVIEWS, "envoy");
    meta(&n, "SDS_CLUSTER", "my-sds");
    meta(&n, "CERT_PROVIDER", "default");
    meta(&n, "GENERATOR", "envoy");
    OK(xds_proxy_from_node(&n.node, NULL, &p));
    assert_false(p.proxyless);
    assert_string_equal(p.sds_cluster, "my-sds");
    assert_null(p.cert_provider);
    xds_proxy_clear(&p);
    /* "grpc" in lower case as the agent name is not proxyless */
    node_init(&n, ID_REVIEWS, "grpc-go");
    OK(xds_proxy_from_node(&n.node, NULL, &p));
    assert_false(p.proxyless);
    xds_proxy_clear(&p);
}

static void test_limits_and_bad_values(void **state)
{
    (void)state;
    t_node n;
    xds_proxy p;
    char big[XDS_NODE_ID_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    node_init(&n, big, "envoy");
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_TOO_LARGE);
    big[XDS_NODE_ID_MAX] = '\0'; /* exactly at the limit: fine */
    node_init(&n, big, "envoy");
    OK(xds_proxy_from_node(&n.node, ID_RATINGS, &p));
    xds_proxy_clear(&p);
    node_init(&n, "n1", "envoy");
    n.node.cluster = big;
    big[XDS_NODE_ID_MAX] = 'a';
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_TOO_LARGE);

    char longname[XDS_META_VALUE_MAX + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    node_init(&n, "n1", "envoy");
    meta(&n, "SDS_CLUSTER", longname);
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_TOO_LARGE);
    node_init(&n, "n1", "envoy");
    meta(&n, "SDS_CLUSTER", "");
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_INVALID);
    node_init(&n, "n1", "gRPC C++");
    meta(&n, "CERT_PROVIDER", "has space");
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_INVALID);
    node_init(&n, "n1", "gRPC C++");
    meta(&n, "CERT_PROVIDER", "bad\nline");
    FAILS(xds_proxy_from_node(&n.node, ID_RATINGS, &p), MID_E_INVALID);
    assert_null(strchr(mid_errmsg(), '\n'));
}

int run_xds_proxy_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_peer_is_identity),
        cmocka_unit_test(test_tls_peer_mismatch_denied),
        cmocka_unit_test(test_plaintext_identity),
        cmocka_unit_test(test_malformed_ids_invalid),
        cmocka_unit_test(test_flavours),
        cmocka_unit_test(test_limits_and_bad_values),
    };
    return cmocka_run_group_tests_name("xds_proxy", tests, NULL, NULL);
}
