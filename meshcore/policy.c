/* Authorization policy evaluation with Istio's semantics. See
 * meshcore/policy.h and docs/policy.md.
 *
 * Every matcher here has a twin in meshcore/rbac.c that expresses the same
 * test as an Envoy RBAC construct; tests/unit/policy checks that the two
 * agree on a large request matrix, so a change to one needs the other. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "meshcore/policy.h"

#define SPIFFE_SCHEME "spiffe://"
#define SPIFFE_SCHEME_LEN (sizeof(SPIFFE_SCHEME) - 1)

static int starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static int ends_with_n(const char *s, size_t ls, const char *sfx, int icase)
{
    size_t lx = strlen(sfx);
    if (lx > ls) return 0;
    return icase ? strncasecmp(s + ls - lx, sfx, lx) == 0 : strncmp(s + ls - lx, sfx, lx) == 0;
}

/* Istio's string forms against s[0..ls): "*" (anything), "*suffix",
 * "prefix*", else exact. A '*' anywhere else is literal. */
static int wild_match_n(const char *pat, const char *s, size_t ls, int icase)
{
    size_t lp = strlen(pat);
    if (strcmp(pat, "*") == 0) return 1;
    if (lp > 0 && pat[0] == '*') return ends_with_n(s, ls, pat + 1, icase);
    if (lp > 0 && pat[lp - 1] == '*') {
        if (lp - 1 > ls) return 0;
        return icase ? strncasecmp(s, pat, lp - 1) == 0 : strncmp(s, pat, lp - 1) == 0;
    }
    if (lp != ls) return 0;
    return icase ? strncasecmp(s, pat, ls) == 0 : strncmp(s, pat, ls) == 0;
}

static int wild_match(const char *pat, const char *s)
{
    return wild_match_n(pat, s, strlen(s), 0);
}

/* The authenticated peer, or NULL ("" counts as no peer). */
static const char *peer_of(const mesh_request *rq)
{
    return rq->principal != NULL && rq->principal[0] != '\0' ? rq->principal : NULL;
}

/* principals value against the peer ID. Values are "td/path" or a full
 * "spiffe://td/path", with Istio wildcards; "*" alone is any peer. */
static int principal_value_matches(const char *v, const char *peer)
{
    if (starts_with(v, SPIFFE_SCHEME)) v += SPIFFE_SCHEME_LEN;
    if (strcmp(v, "*") == 0) return 1;
    if (!starts_with(peer, SPIFFE_SCHEME)) return 0;
    return wild_match(v, peer + SPIFFE_SCHEME_LEN);
}

/* The namespace of a peer ID "spiffe://td/ns/<ns>/...": *ns and *len, or 0 when
 * the ID does not follow that convention (no trust domain, no "/ns/", an
 * empty namespace or nothing after it). */
static int peer_namespace(const char *peer, const char **ns, size_t *len)
{
    if (!starts_with(peer, SPIFFE_SCHEME)) return 0;
    const char *td = peer + SPIFFE_SCHEME_LEN;
    const char *slash = strchr(td, '/');
    if (slash == NULL || slash == td) return 0;
    if (!starts_with(slash, "/ns/")) return 0;
    const char *n = slash + 4;
    const char *end = strchr(n, '/');
    if (end == NULL || end == n) return 0;
    *ns = n;
    *len = (size_t)(end - n);
    return 1;
}

static int source_matches(const mesh_source *s, const mesh_request *rq)
{
    const char *peer = peer_of(rq);
    if (s->n_principals > 0) {
        int hit = 0;
        for (size_t i = 0; i < s->n_principals && peer != NULL && !hit; i++)
            hit = principal_value_matches(s->principals[i], peer);
        if (!hit) return 0;
    }
    if (s->n_not_principals > 0 && peer != NULL) {
        for (size_t i = 0; i < s->n_not_principals; i++)
            if (principal_value_matches(s->not_principals[i], peer)) return 0;
    }
    if (s->n_namespaces > 0) {
        const char *ns = NULL;
        size_t len = 0;
        if (peer == NULL || !peer_namespace(peer, &ns, &len)) return 0;
        int hit = 0;
        for (size_t i = 0; i < s->n_namespaces && !hit; i++)
            hit = wild_match_n(s->namespaces[i], ns, len, 0);
        if (!hit) return 0;
    }
    return 1;
}

/* The authority without a trailing ":<digits>" port: its length. */
static size_t host_without_port(const char *h)
{
    size_t len = strlen(h);
    const char *colon = strrchr(h, ':');
    if (colon == NULL || colon[1] == '\0') return len;
    for (const char *p = colon + 1; *p != '\0'; p++)
        if (*p < '0' || *p > '9') return len;
    return (size_t)(colon - h);
}

/* Hosts compare case-insensitively against the :authority with or
 * without its port ("example.com" matches "Example.com:8080"). */
static int host_value_matches(const char *v, const char *host)
{
    if (strcmp(v, "*") == 0) return 1;
    if (wild_match_n(v, host, strlen(host), 1)) return 1;
    size_t bare = host_without_port(host);
    return bare != strlen(host) && wild_match_n(v, host, bare, 1);
}

static int any_string(char *const *vals, size_t n, const char *s,
                      int (*m)(const char *, const char *))
{
    if (s == NULL) return 0;
    for (size_t i = 0; i < n; i++)
        if (m(vals[i], s)) return 1;
    return 0;
}

static int method_value_matches(const char *v, const char *m)
{
    return strcmp(v, m) == 0;
}

/* skip_http: evaluate as if methods/paths/hosts were absent (TCP, DENY). */
static int operation_matches(const mesh_operation *o, const mesh_request *rq, int skip_http)
{
    if (!skip_http) {
        if (o->n_methods > 0 &&
            !any_string(o->methods, o->n_methods, rq->method, method_value_matches))
            return 0;
        if (o->n_paths > 0 && !any_string(o->paths, o->n_paths, rq->path, wild_match)) return 0;
        if (o->n_hosts > 0 && !any_string(o->hosts, o->n_hosts, rq->host, host_value_matches))
            return 0;
    }
    if (o->n_ports > 0) {
        int hit = 0;
        for (size_t i = 0; i < o->n_ports && !hit; i++) hit = o->ports[i] == rq->port;
        if (!hit) return 0;
    }
    return 1;
}

static int rule_uses_http(const mesh_rule *r)
{
    for (size_t i = 0; i < r->n_to; i++) {
        const mesh_operation *o = &r->to[i];
        if (o->n_methods > 0 || o->n_paths > 0 || o->n_hosts > 0) return 1;
    }
    return 0;
}

int mesh_rule_matches(const mesh_rule *r, mesh_action action, const mesh_request *rq)
{
    if (!rq->http && action == MESH_ACTION_ALLOW && rule_uses_http(r)) return 0;
    int skip_http = !rq->http;
    int from_ok = r->n_from == 0;
    for (size_t i = 0; i < r->n_from && !from_ok; i++) from_ok = source_matches(&r->from[i], rq);
    if (!from_ok) return 0;
    int to_ok = r->n_to == 0;
    for (size_t i = 0; i < r->n_to && !to_ok; i++)
        to_ok = operation_matches(&r->to[i], rq, skip_http);
    return to_ok;
}

static const char *ns_or_default(const char *ns)
{
    return ns != NULL ? ns : MESH_DEFAULT_NAMESPACE;
}

int mesh_policy_selects(const mesh_policy *p, const mesh_workload *w)
{
    const char *pns = ns_or_default(p->namespace_);
    if (strcmp(pns, ns_or_default(w->namespace_)) != 0 && strcmp(pns, MESH_ROOT_NAMESPACE) != 0)
        return 0;
    for (size_t i = 0; i < p->n_selector; i++) {
        int found = 0;
        for (size_t j = 0; j < w->n_labels && !found; j++)
            found = strcmp(p->selector[i].key, w->labels[j].key) == 0 &&
                    strcmp(p->selector[i].value, w->labels[j].value) == 0;
        if (!found) return 0;
    }
    return 1;
}

/* The first rule of a policy matching rq, or -1. */
static int first_matching_rule(const mesh_policy *p, const mesh_request *rq)
{
    for (size_t r = 0; r < p->n_rules; r++)
        if (mesh_rule_matches(&p->rules[r], p->action, rq)) return (int)r;
    return -1;
}

void mesh_policy_evaluate(const mesh_policy *const *pols, size_t n, const mesh_workload *w,
                          const mesh_request *rq, mesh_decision *out)
{
    for (size_t i = 0; i < n; i++) {
        const mesh_policy *p = pols[i];
        /* Anything but ALLOW counts as DENY: an out-of-range action fails
         * closed (mesh_policy_validate refuses it anyway). */
        if (p == NULL || p->action == MESH_ACTION_ALLOW || !mesh_policy_selects(p, w)) continue;
        int r = first_matching_rule(p, rq);
        if (r >= 0) {
            *out = (mesh_decision){0, p, r, "DENY policy matched"};
            return;
        }
    }
    int any_allow = 0;
    for (size_t i = 0; i < n; i++) {
        const mesh_policy *p = pols[i];
        if (p == NULL || p->action != MESH_ACTION_ALLOW || !mesh_policy_selects(p, w)) continue;
        any_allow = 1;
        int r = first_matching_rule(p, rq);
        if (r >= 0) {
            *out = (mesh_decision){1, p, r, "ALLOW policy matched"};
            return;
        }
    }
    if (!any_allow)
        *out = (mesh_decision){1, NULL, -1, "no ALLOW policy applies to the workload"};
    else
        *out = (mesh_decision){0, NULL, -1, "ALLOW policies apply but none matched"};
}

MID_RESULT mesh_decision_format(const mesh_decision *d, char *buf, size_t cap)
{
    MID_ENSURE(d != NULL && buf != NULL && cap > 0, MID_E_INVALID,
               "decision format: NULL argument");
    const char *verdict = d->allowed ? "ALLOW" : "DENY";
    const char *reason = d->reason != NULL ? d->reason : "";
    int len;
    if (d->policy != NULL)
        len = snprintf(buf, cap, "%s by %s/%s rule %d (%s)", verdict,
                       ns_or_default(d->policy->namespace_),
                       d->policy->name != NULL ? d->policy->name : "?", d->rule, reason);
    else
        len = snprintf(buf, cap, "%s (%s)", verdict, reason);
    MID_ENSURE(len >= 0, MID_E_INTERNAL, "decision format: snprintf failed");
    MID_ENSURE((size_t)len < cap, MID_E_TOO_LARGE, "decision format: %d bytes do not fit in %zu",
               len, cap);
    return mid_ok();
}
