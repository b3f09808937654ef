/* The evaluator against Istio's documented AuthorizationPolicy semantics
 * (https://istio.io/latest/docs/reference/config/security/authorization-policy/),
 * one test per rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "meshcore/policy.h"
#include "tests/unit/policy/policy_tests.h"

#define TD "spiffe://cluster.local"

static mesh_request http_rq(const char *principal, const char *method, const char *path,
                            uint32_t port, const char *host)
{
    return (mesh_request){principal, method, path, port, host, 1};
}

static mesh_request tcp_rq(const char *principal, uint32_t port)
{
    return (mesh_request){principal, NULL, NULL, port, NULL, 0};
}

/* Evaluates one request against pols for w. */
static mesh_decision decide(mesh_policy **pols, size_t n, const mesh_workload *w, mesh_request rq)
{
    mesh_decision d;
    memset(&d, 0x5a, sizeof d);
    mesh_policy_evaluate((const mesh_policy *const *)pols, n, w, &rq, &d);
    return d;
}

static int allowed(mesh_policy **pols, size_t n, const mesh_workload *w, mesh_request rq)
{
    return decide(pols, n, w, rq).allowed;
}

/* Whether one value of one field, alone in a one-rule policy "foo/p" with
 * `action`, matches rq: an ALLOW policy allows it, a DENY policy denies it.
 * principals and namespaces go in from[].source, the rest in
 * to[].operation. */
static int value_matches(arena *a, const mesh_workload *w, const char *action, const char *field,
                         const char *value, mesh_request rq)
{
    char spec[128];
    (void)snprintf(spec, sizeof spec, "%s=%s", field, value);
    mesh_policy *p = tb_policy(a, "foo", "p", action, NULL);
    if (strcmp(field, "principals") == 0 || strcmp(field, "namespaces") == 0)
        tb_source(a, tb_rule(a, p), spec);
    else
        tb_operation(a, tb_rule(a, p), spec);
    int ok = allowed(&p, 1, w, rq);
    return strcmp(action, "DENY") == 0 ? !ok : ok;
}

/* DENY policies are evaluated first: a matching DENY wins over a matching ALLOW. */
static void test_deny_before_allow(void **state)
{
    arena *a = *state;
    mesh_policy *pols[2];
    pols[0] = tb_policy(a, "foo", "allow-sleep", "ALLOW", NULL);
    tb_source(a, tb_rule(a, pols[0]), "principals=cluster.local/ns/foo/sa/sleep");
    pols[1] = tb_policy(a, "foo", "deny-get", "DENY", NULL);
    tb_operation(a, tb_rule(a, pols[1]), "methods=GET");
    mesh_workload w = tb_workload(a, "foo", "app=httpbin");

    mesh_decision d = decide(pols, 2, &w, http_rq(TD "/ns/foo/sa/sleep", "GET", "/", 80, "h"));
    assert_false(d.allowed);
    assert_ptr_equal(d.policy, pols[1]);
    assert_int_equal(d.rule, 0);
    assert_string_equal(d.reason, "DENY policy matched");

    d = decide(pols, 2, &w, http_rq(TD "/ns/foo/sa/sleep", "POST", "/", 80, "h"));
    assert_true(d.allowed);
    assert_ptr_equal(d.policy, pols[0]);
    assert_int_equal(d.rule, 0);
    assert_string_equal(d.reason, "ALLOW policy matched");
    /* Order of the array does not matter. */
    mesh_policy *rev[2] = {pols[1], pols[0]};
    assert_false(allowed(rev, 2, &w, http_rq(TD "/ns/foo/sa/sleep", "GET", "/", 80, "h")));
}

/* No ALLOW policy selecting the workload: allowed (unless denied). */
static void test_no_allow_policy_allows(void **state)
{
    arena *a = *state;
    mesh_policy *p = tb_policy(a, "foo", "deny-get", "DENY", NULL);
    tb_operation(a, tb_rule(a, p), "methods=GET");
    mesh_workload w = tb_workload(a, "foo", NULL);
    mesh_decision d = decide(&p, 1, &w, http_rq(NULL, "POST", "/", 80, "h"));
    assert_true(d.allowed);
    assert_null(d.policy);
    assert_int_equal(d.rule, -1);
    assert_string_equal(d.reason, "no ALLOW policy applies to the workload");
    /* No policy at all. */
    d = decide(NULL, 0, &w, http_rq(NULL, "POST", "/", 80, "h"));
    assert_true(d.allowed);
    assert_null(d.policy);
}

/* ALLOW policies select the workload but none matches: denied. */
static void test_allow_present_none_match(void **state)
{
    arena *a = *state;
    mesh_policy *pols[2];
    pols[0] = tb_policy(a, "default", "allow-read", "ALLOW", "app=products");
    tb_operation(a, tb_rule(a, pols[0]), "methods=GET,HEAD");
    pols[1] = tb_policy(a, "default", "allow-data", "ALLOW", NULL);
    tb_operation(a, tb_rule(a, pols[1]), "paths=/data");
    mesh_workload w = tb_workload(a, "default", "app=products");
    mesh_decision d = decide(pols, 2, &w, http_rq(NULL, "POST", "/x", 80, "h"));
    assert_false(d.allowed);
    assert_null(d.policy);
    assert_int_equal(d.rule, -1);
    assert_string_equal(d.reason, "ALLOW policies apply but none matched");
    /* Either ALLOW policy is enough. */
    d = decide(pols, 2, &w, http_rq(NULL, "POST", "/data", 80, "h"));
    assert_true(d.allowed);
    assert_ptr_equal(d.policy, pols[1]);
    assert_true(allowed(pols, 2, &w, http_rq(NULL, "HEAD", "/x", 80, "h")));
}

/* An ALLOW policy without rules allows nothing; a DENY one denies nothing. */
static void test_allow_nothing_and_empty_deny(void **state)
{
    arena *a = *state;
    mesh_policy *allow = tb_policy(a, "default", "allow-nothing", "ALLOW", NULL);
    mesh_policy *deny = tb_policy(a, "default", "deny-nothing", "DENY", NULL);
    mesh_workload w = tb_workload(a, "default", "app=x");
    assert_false(allowed(&allow, 1, &w, http_rq(TD "/ns/default/sa/a", "GET", "/", 80, "h")));
    assert_false(allowed(&allow, 1, &w, tcp_rq(NULL, 80)));
    assert_true(allowed(&deny, 1, &w, http_rq(NULL, "GET", "/", 80, "h")));
    assert_true(allowed(&deny, 1, &w, tcp_rq(NULL, 80)));
}

/* rules: [{}] matches every request: DENY denies everything, ALLOW allows it. */
static void test_empty_rule_matches_all(void **state)
{
    arena *a = *state;
    mesh_policy *deny = tb_policy(a, "default", "deny-all", "DENY", NULL);
    (void)tb_rule(a, deny);
    mesh_policy *allow = tb_policy(a, "default", "allow-all", "ALLOW", NULL);
    (void)tb_rule(a, allow);
    mesh_workload w = tb_workload(a, "default", NULL);
    mesh_request rqs[] = {http_rq(NULL, "GET", "/", 80, "h"),
                          http_rq(TD "/ns/default/sa/a", "DELETE", "/x", 1, "h"), tcp_rq(NULL, 9),
                          tcp_rq(TD "/ns/x/sa/y", 27017)};
    for (size_t i = 0; i < sizeof rqs / sizeof rqs[0]; i++) {
        assert_false(allowed(&deny, 1, &w, rqs[i]));
        assert_true(allowed(&allow, 1, &w, rqs[i]));
        mesh_policy *both[2] = {allow, deny};
        assert_false(allowed(both, 2, &w, rqs[i]));
    }
}

/* A policy applies only to its namespace's workloads whose labels contain
 * the selector. */
static void test_selector(void **state)
{
    arena *a = *state;
    mesh_policy *p = tb_policy(a, "default", "deny-v1", "DENY", "app=products,version=v1");
    (void)tb_rule(a, p);
    mesh_workload match = tb_workload(a, "default", "team=x,version=v1,app=products");
    mesh_workload partial = tb_workload(a, "default", "app=products");
    mesh_workload wrong_value = tb_workload(a, "default", "app=products,version=v2");
    mesh_workload other_ns = tb_workload(a, "foo", "app=products,version=v1");
    assert_true(mesh_policy_selects(p, &match));
    assert_false(mesh_policy_selects(p, &partial));
    assert_false(mesh_policy_selects(p, &wrong_value));
    assert_false(mesh_policy_selects(p, &other_ns));
    mesh_request rq = http_rq(NULL, "GET", "/", 80, "h");
    assert_false(allowed(&p, 1, &match, rq));
    assert_true(allowed(&p, 1, &partial, rq));
    assert_true(allowed(&p, 1, &other_ns, rq));
    /* An unselected ALLOW policy does not make the workload default-deny. */
    mesh_policy *allow = tb_policy(a, "default", "allow-none-of-them", "ALLOW", "app=other");
    assert_true(allowed(&allow, 1, &partial, rq));
    /* No selector: every workload of the namespace. */
    mesh_policy *ns_wide = tb_policy(a, "foo", "ns-wide", "DENY", NULL);
    (void)tb_rule(a, ns_wide);
    assert_true(mesh_policy_selects(ns_wide, &other_ns));
    assert_false(mesh_policy_selects(ns_wide, &match));
}

/* Policies in the root namespace apply to every namespace. */
static void test_root_namespace(void **state)
{
    arena *a = *state;
    mesh_policy *p = tb_policy(a, MESH_ROOT_NAMESPACE, "global-deny-post", "DENY", NULL);
    tb_operation(a, tb_rule(a, p), "methods=POST");
    mesh_policy *sel =
        tb_policy(a, MESH_ROOT_NAMESPACE, "global-products", "ALLOW", "app=products");
    tb_operation(a, tb_rule(a, sel), "methods=GET");
    mesh_workload foo = tb_workload(a, "foo", "app=httpbin");
    mesh_workload prod = tb_workload(a, "bar", "app=products");
    assert_true(mesh_policy_selects(p, &foo));
    assert_true(mesh_policy_selects(p, &prod));
    assert_false(mesh_policy_selects(sel, &foo));
    assert_true(mesh_policy_selects(sel, &prod));
    mesh_policy *pols[2] = {p, sel};
    assert_false(allowed(pols, 2, &foo, http_rq(NULL, "POST", "/", 80, "h")));
    assert_true(allowed(pols, 2, &foo, http_rq(NULL, "PUT", "/", 80, "h")));
    assert_false(allowed(pols, 2, &prod, http_rq(NULL, "PUT", "/", 80, "h")));
    assert_true(allowed(pols, 2, &prod, http_rq(NULL, "GET", "/", 80, "h")));
}

/* notPrincipals ["*"] matches requests without an authenticated peer
 * (the "require mTLS" recipe). */
static void test_not_principals_star(void **state)
{
    arena *a = *state;
    mesh_policy *p = tb_policy(a, "foo", "require-mtls", "DENY", NULL);
    tb_source(a, tb_rule(a, p), "notPrincipals=*");
    mesh_workload w = tb_workload(a, "foo", NULL);
    assert_false(allowed(&p, 1, &w, http_rq(NULL, "GET", "/", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq("", "GET", "/", 80, "h"))); /* "" = no peer */
    assert_false(allowed(&p, 1, &w, tcp_rq(NULL, 80)));
    assert_true(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/a", "GET", "/", 80, "h")));
    assert_true(allowed(&p, 1, &w, tcp_rq("spiffe://other.td/x", 80)));
    /* notPrincipals with a specific value: everyone but that peer (and
     * plaintext) matches. */
    mesh_policy *q = tb_policy(a, "foo", "only-a", "DENY", NULL);
    tb_source(a, tb_rule(a, q), "notPrincipals=cluster.local/ns/foo/sa/a");
    assert_true(allowed(&q, 1, &w, http_rq(TD "/ns/foo/sa/a", "GET", "/", 80, "h")));
    assert_false(allowed(&q, 1, &w, http_rq(TD "/ns/foo/sa/b", "GET", "/", 80, "h")));
    assert_false(allowed(&q, 1, &w, http_rq(NULL, "GET", "/", 80, "h")));
}

/* principals: "td/path" or the full spiffe:// ID, "*" and prefix/suffix
 * wildcards; plaintext matches none. */
static void test_principals(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    struct {
        const char *value, *peer;
        int match;
    } cases[] = {
        {"cluster.local/ns/foo/sa/a", TD "/ns/foo/sa/a", 1},
        {"cluster.local/ns/foo/sa/a", TD "/ns/foo/sa/ab", 0},
        {"cluster.local/ns/foo/sa/a", "spiffe://other.td/ns/foo/sa/a", 0},
        {"cluster.local/ns/foo/sa/a", NULL, 0},
        {"spiffe://cluster.local/ns/foo/sa/a", TD "/ns/foo/sa/a", 1},
        {"*", TD "/ns/foo/sa/a", 1},
        {"*", "spiffe://x/y", 1},
        {"*", NULL, 0},
        {"*", "", 0},
        {"cluster.local/*", TD "/ns/anything/sa/z", 1},
        {"cluster.local/*", "spiffe://cluster.localx/ns/a", 0},
        {"spiffe://cluster.local/ns/foo/*", TD "/ns/foo/sa/z", 1},
        {"*/sa/sleep", TD "/ns/foo/sa/sleep", 1},
        {"*/sa/sleep", "spiffe://other.td/ns/bar/sa/sleep", 1},
        {"*/sa/sleep", TD "/ns/foo/sa/sleeper", 0},
        {"*//cluster.local/ns/foo/sa/a", TD "/ns/foo/sa/a", 0}, /* "spiffe://" is not part of it */
        {"cluster.local/ns/foo/sa/a", "cluster.local/ns/foo/sa/a", 0}, /* not a SPIFFE ID */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = value_matches(a, &w, "ALLOW", "principals", cases[i].value,
                                http_rq(cases[i].peer, "GET", "/", 80, "h"));
        if (got != cases[i].match)
            fail_msg("principals %s vs %s: got %d", cases[i].value,
                     cases[i].peer ? cases[i].peer : "(none)", got);
    }
    /* Several values: any of them. */
    mesh_policy *p = tb_policy(a, "foo", "p", "ALLOW", NULL);
    tb_source(a, tb_rule(a, p), "principals=cluster.local/ns/foo/sa/a,cluster.local/ns/foo/sa/b");
    assert_true(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/b", "GET", "/", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/c", "GET", "/", 80, "h")));
}

/* namespaces: taken from the peer ID's "/ns/<ns>/" path (Istio's
 * convention), with wildcards. */
static void test_namespaces(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    struct {
        const char *value, *peer;
        int match;
    } cases[] = {
        {"dev", TD "/ns/dev/sa/tester", 1},
        {"dev", "spiffe://other.td/ns/dev/sa/x", 1}, /* any trust domain */
        {"dev", TD "/ns/devx/sa/tester", 0},
        {"dev", TD "/ns/foo/sa/dev", 0},
        {"dev", TD "/sa/x/ns/dev/y", 0}, /* "/ns/" must start the path */
        {"dev", TD "/ns/dev", 0},        /* nothing after the namespace */
        {"dev", NULL, 0},
        {"dev*", TD "/ns/devel/sa/x", 1},
        {"dev*", TD "/ns/prod/sa/x", 0},
        {"*-prod", TD "/ns/api-prod/sa/x", 1},
        {"*-prod", TD "/ns/api-prod2/sa/x", 0},
        {"*", TD "/ns/anything/sa/x", 1},
        {"*", "spiffe://td/workload/x", 0}, /* no namespace in the ID */
        {"*", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int denied = value_matches(a, &w, "DENY", "namespaces", cases[i].value,
                                   http_rq(cases[i].peer, "GET", "/", 80, "h"));
        if (denied != cases[i].match)
            fail_msg("namespaces %s vs %s: got %d", cases[i].value,
                     cases[i].peer ? cases[i].peer : "(none)", denied);
    }
}

/* Fields of one source are ANDed, sources ORed; from AND to. */
static void test_and_or(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    mesh_policy *p = tb_policy(a, "foo", "p", "ALLOW", NULL);
    mesh_rule *r = tb_rule(a, p);
    tb_source(
        a, r,
        "principals=cluster.local/*;namespaces=foo;notPrincipals=cluster.local/ns/foo/sa/bad");
    tb_source(a, r, "principals=other.td/ns/x/sa/y");
    tb_operation(a, r, "methods=GET;paths=/a*");
    tb_operation(a, r, "ports=8080");
    assert_true(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/ok", "GET", "/ab", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/bad", "GET", "/ab", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(TD "/ns/bar/sa/ok", "GET", "/ab", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/ok", "POST", "/ab", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/ok", "GET", "/b", 80, "h")));
    assert_true(allowed(&p, 1, &w, http_rq(TD "/ns/foo/sa/ok", "POST", "/b", 8080, "h")));
    assert_true(allowed(&p, 1, &w, http_rq("spiffe://other.td/ns/x/sa/y", "GET", "/a", 1, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(NULL, "GET", "/a", 8080, "h")));
    /* Second rule: rules are ORed. */
    tb_source(a, tb_rule(a, p), "namespaces=bar");
    mesh_decision d = decide(&p, 1, &w, http_rq(TD "/ns/bar/sa/ok", "PUT", "/z", 1, "h"));
    assert_true(d.allowed);
    assert_int_equal(d.rule, 1);
}

/* paths: exact, "prefix*", "*suffix", "*" (ap-tester-path-wildcards). */
static void test_paths(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "default", "app=products");
    mesh_policy *p = tb_policy(a, "default", "tester", "ALLOW", "app=products");
    tb_operation(a, tb_rule(a, p), "paths=/test/*,*/info");
    const char *yes[] = {"/test/a", "/test/", "/test/a/b", "/x/info", "/info", "/a/b/info"};
    const char *no[] = {"/test", "/tes", "/x/infos", "/", "/data", "info"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(allowed(&p, 1, &w, http_rq(NULL, "GET", yes[i], 80, "h")));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(allowed(&p, 1, &w, http_rq(NULL, "GET", no[i], 80, "h")));
    mesh_policy *exact = tb_policy(a, "default", "exact", "ALLOW", NULL);
    tb_operation(a, tb_rule(a, exact), "paths=/data");
    assert_true(allowed(&exact, 1, &w, http_rq(NULL, "GET", "/data", 80, "h")));
    assert_false(allowed(&exact, 1, &w, http_rq(NULL, "GET", "/data/", 80, "h")));
    mesh_policy *any = tb_policy(a, "default", "any", "ALLOW", NULL);
    tb_operation(a, tb_rule(a, any), "paths=*");
    assert_true(allowed(&any, 1, &w, http_rq(NULL, "GET", "/whatever", 80, "h")));
}

/* methods: exact and case-sensitive. */
static void test_methods(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "default", NULL);
    mesh_policy *p = tb_policy(a, "default", "read", "ALLOW", NULL);
    tb_operation(a, tb_rule(a, p), "methods=GET,HEAD");
    assert_true(allowed(&p, 1, &w, http_rq(NULL, "GET", "/", 80, "h")));
    assert_true(allowed(&p, 1, &w, http_rq(NULL, "HEAD", "/", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(NULL, "get", "/", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(NULL, "POST", "/", 80, "h")));
    assert_false(allowed(&p, 1, &w, http_rq(NULL, NULL, "/", 80, "h")));
}

/* ports: the destination port, exact (ap-deny-post-port-8080). */
static void test_ports(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    mesh_policy *p = tb_policy(a, "foo", "httpbin", "DENY", NULL);
    tb_operation(a, tb_rule(a, p), "methods=POST;ports=8080");
    assert_false(allowed(&p, 1, &w, http_rq(NULL, "POST", "/", 8080, "h")));
    assert_true(allowed(&p, 1, &w, http_rq(NULL, "POST", "/", 80, "h")));
    assert_true(allowed(&p, 1, &w, http_rq(NULL, "GET", "/", 8080, "h")));
    mesh_policy *q = tb_policy(a, "foo", "two", "ALLOW", NULL);
    tb_operation(a, tb_rule(a, q), "ports=80,27017");
    assert_true(allowed(&q, 1, &w, tcp_rq(NULL, 27017)));
    assert_true(allowed(&q, 1, &w, http_rq(NULL, "GET", "/", 80, "h")));
    assert_false(allowed(&q, 1, &w, tcp_rq(NULL, 27018)));
    assert_false(allowed(&q, 1, &w, tcp_rq(NULL, 0)));
}

/* hosts: case-insensitive, with or without the :authority's port,
 * "*.suffix" / "prefix.*" / "*". */
static void test_hosts(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    struct {
        const char *value, *host;
        int match;
    } cases[] = {
        {"api.example.com", "api.example.com", 1},
        {"api.example.com", "API.Example.COM", 1},
        {"api.example.com", "api.example.com:8080", 1},
        {"api.example.com", "api.example.com:", 0},
        {"api.example.com", "api.example.com:80x", 0},
        {"api.example.com", "api.example.com.evil", 0},
        {"api.example.com:8080", "api.example.com:8080", 1},
        {"api.example.com:8080", "api.example.com", 0},
        {"*.example.com", "a.b.Example.com", 1},
        {"*.example.com", "a.example.com:443", 1},
        {"*.example.com", "example.com", 0},
        {"api.*", "API.anything:1", 1},
        {"api.*", "apix.com", 0},
        {"*", "anything", 1},
        {"*", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = value_matches(a, &w, "ALLOW", "hosts", cases[i].value,
                                http_rq(NULL, "GET", "/", 80, cases[i].host));
        if (got != cases[i].match)
            fail_msg("hosts %s vs %s: got %d", cases[i].value,
                     cases[i].host ? cases[i].host : "(none)", got);
    }
}

/* TCP: HTTP-only fields (methods, paths, hosts) make an ALLOW rule never
 * match and are ignored in a DENY rule. */
static void test_tcp_http_fields(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    const char *peer = TD "/ns/foo/sa/a";

    mesh_policy *allow = tb_policy(a, "foo", "allow", "ALLOW", NULL);
    mesh_rule *r = tb_rule(a, allow);
    tb_source(a, r, "principals=cluster.local/ns/foo/sa/a");
    tb_operation(a, r, "methods=GET;ports=27017");
    assert_true(allowed(&allow, 1, &w, http_rq(peer, "GET", "/", 27017, "h")));
    assert_false(allowed(&allow, 1, &w, tcp_rq(peer, 27017)));
    assert_false(
        mesh_rule_matches(r, MESH_ACTION_ALLOW, &(mesh_request){peer, NULL, NULL, 27017, NULL, 0}));
    /* A ports-only rule works on TCP. */
    mesh_rule *r2 = tb_rule(a, allow);
    tb_operation(a, r2, "ports=27017");
    mesh_decision d = decide(&allow, 1, &w, tcp_rq(NULL, 27017));
    assert_true(d.allowed);
    assert_int_equal(d.rule, 1);
    /* One HTTP operation spoils the whole ALLOW rule on TCP, even when
     * another operation of it has only ports (Istio skips the rule). */
    mesh_policy *mixed = tb_policy(a, "foo", "mixed", "ALLOW", NULL);
    mesh_rule *r3 = tb_rule(a, mixed);
    tb_operation(a, r3, "paths=/x");
    tb_operation(a, r3, "ports=9000");
    assert_false(allowed(&mixed, 1, &w, tcp_rq(peer, 9000)));
    assert_true(allowed(&mixed, 1, &w, http_rq(peer, "GET", "/y", 9000, "h")));

    /* DENY: the HTTP fields are ignored, which denies more. */
    mesh_policy *deny = tb_policy(a, "foo", "deny-get", "DENY", NULL);
    tb_operation(a, tb_rule(a, deny), "methods=GET");
    assert_false(allowed(&deny, 1, &w, tcp_rq(peer, 1234)));
    assert_true(allowed(&deny, 1, &w, http_rq(peer, "POST", "/", 1234, "h")));
    mesh_policy *deny_port = tb_policy(a, "foo", "deny-post-8080", "DENY", NULL);
    tb_operation(a, tb_rule(a, deny_port), "methods=POST;hosts=x;paths=/a;ports=8080");
    assert_false(allowed(&deny_port, 1, &w, tcp_rq(peer, 8080)));
    assert_true(allowed(&deny_port, 1, &w, tcp_rq(peer, 8081)));
    assert_true(allowed(&deny_port, 1, &w, http_rq(peer, "GET", "/a", 8080, "x")));
    /* Sources still count on TCP. */
    mesh_policy *deny_dev = tb_policy(a, "foo", "deny-dev-post", "DENY", NULL);
    mesh_rule *r4 = tb_rule(a, deny_dev);
    tb_source(a, r4, "namespaces=dev");
    tb_operation(a, r4, "methods=POST");
    assert_false(allowed(&deny_dev, 1, &w, tcp_rq(TD "/ns/dev/sa/x", 80)));
    assert_true(allowed(&deny_dev, 1, &w, tcp_rq(TD "/ns/foo/sa/x", 80)));
}

/* An action outside the enum fails closed (treated as DENY). */
static void test_unknown_action_fails_closed(void **state)
{
    arena *a = *state;
    mesh_workload w = tb_workload(a, "foo", NULL);
    mesh_policy *p = tb_policy(a, "foo", "weird", "ALLOW", NULL);
    (void)tb_rule(a, p);
    p->action = (mesh_action)7;
    assert_false(allowed(&p, 1, &w, http_rq(NULL, "GET", "/", 80, "h")));
    /* NULL entries are skipped. */
    mesh_policy *pols[2] = {NULL, NULL};
    assert_true(allowed(pols, 2, &w, http_rq(NULL, "GET", "/", 80, "h")));
}

static void test_decision_format(void **state)
{
    arena *a = *state;
    mesh_policy *p = tb_policy(a, "foo", "deny-get", "DENY", NULL);
    char buf[128];
    mesh_decision d = {0, p, 0, "DENY policy matched"};
    assert_true(mid_is_ok(mesh_decision_format(&d, buf, sizeof buf)));
    assert_string_equal(buf, "DENY by foo/deny-get rule 0 (DENY policy matched)");
    d = (mesh_decision){1, NULL, -1, "no ALLOW policy applies to the workload"};
    assert_true(mid_is_ok(mesh_decision_format(&d, buf, sizeof buf)));
    assert_string_equal(buf, "ALLOW (no ALLOW policy applies to the workload)");
    /* Too small: refused, not truncated silently. */
    mid_result r = mesh_decision_format(&d, buf, 10);
    assert_int_equal(r.err, MID_E_TOO_LARGE);
    r = mesh_decision_format(NULL, buf, sizeof buf);
    assert_int_equal(r.err, MID_E_INVALID);
    r = mesh_decision_format(&d, NULL, 0);
    assert_int_equal(r.err, MID_E_INVALID);
    /* A real decision round trip. */
    mesh_workload w = tb_workload(a, "foo", NULL);
    tb_operation(a, tb_rule(a, p), "methods=GET");
    mesh_request rq = http_rq(NULL, "GET", "/", 80, "h");
    mesh_policy_evaluate((const mesh_policy *const *)&p, 1, &w, &rq, &d);
    assert_true(mid_is_ok(mesh_decision_format(&d, buf, sizeof buf)));
    assert_string_equal(buf, "DENY by foo/deny-get rule 0 (DENY policy matched)");
}

int run_policy_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deny_before_allow, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_no_allow_policy_allows, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_allow_present_none_match, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_allow_nothing_and_empty_deny, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_empty_rule_matches_all, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_selector, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_root_namespace, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_not_principals_star, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_principals, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_namespaces, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_and_or, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_paths, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_methods, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_ports, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_hosts, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_tcp_http_fields, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_action_fails_closed, tb_setup, tb_teardown),
        cmocka_unit_test_setup_teardown(test_decision_format, tb_setup, tb_teardown),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
