/* The authorization policy evaluator: Istio's AuthorizationPolicy semantics
 * (the subset in meshcore/model.h) applied to one request to one workload.
 *
 * Order (Istio): only the policies that select the workload count; if any
 * DENY policy matches, the request is denied; else if no ALLOW policy selects
 * the workload it is allowed; else it is allowed iff some ALLOW policy
 * matches. docs/policy.md has the field-by-field rules, the TCP rule for
 * HTTP-only fields and the limits.
 *
 * Pure functions over caller-owned data: nothing is allocated or retained,
 * safe to call from any thread on immutable inputs.
 */
#ifndef MESHID_MESHCORE_POLICY_H
#define MESHID_MESHCORE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "meshcore/model.h"

/* The workload a request goes to: its namespace and labels (any order). */
typedef struct {
    const char *namespace_;
    const mesh_label *labels;
    size_t n_labels;
} mesh_workload;

/* One request (HTTP) or connection (TCP) as the destination's proxy sees it. */
typedef struct {
    const char *principal; /* peer SPIFFE ID "spiffe://td/ns/x/sa/y"; NULL or ""
                              = no authenticated peer (plaintext) */
    const char *method;    /* HTTP only; NULL = absent */
    const char *path;      /* HTTP only, without the query string; NULL = absent */
    uint32_t port;         /* destination port; 0 = unknown */
    const char *host;      /* HTTP only (:authority); NULL = absent */
    int http;              /* 0: a TCP connection, HTTP attributes unknown */
} mesh_request;

typedef struct {
    int allowed;
    const mesh_policy *policy; /* deciding policy, NULL when decided by default */
    int rule;                  /* index of the matching rule in policy, -1 if none */
    const char *reason;        /* static text */
} mesh_decision;

/* 1 when `p` applies to `w`: p is in w's namespace or in MESH_ROOT_NAMESPACE,
 * and every selector label is among w's labels (empty selector = all). */
int mesh_policy_selects(const mesh_policy *p, const mesh_workload *w);

/* 1 when rule `r` of a policy with `action` matches `rq` (exposed for
 * `meshid policy check` explanations and for tests). The action matters
 * only on TCP (rq->http == 0): an ALLOW rule naming methods, paths or hosts
 * never matches; any other action ignores those fields. */
int mesh_rule_matches(const mesh_rule *r, mesh_action action, const mesh_request *rq);

/* Decides `rq` against the n policies `pols` (any order; those that do not
 * select `w` and NULL entries are ignored; an action outside the enum counts
 * as DENY). Fills *out; never fails. When several policies match, the first
 * one in `pols` order is reported (Envoy would name another: it tries RBAC
 * policies in name order; the decision is the same). */
void mesh_policy_evaluate(const mesh_policy *const *pols, size_t n, const mesh_workload *w,
                          const mesh_request *rq, mesh_decision *out);

/* One line for `meshid policy check`, e.g.
 *   "DENY by foo/deny-get rule 0 (DENY policy matched)"
 *   "ALLOW (no ALLOW policy applies to the workload)"
 * NUL-terminated in buf. MID_E_TOO_LARGE if it does not fit in cap,
 * MID_E_INVALID for NULL arguments. */
MID_RESULT mesh_decision_format(const mesh_decision *d, char *buf, size_t cap);

#endif
