/* Compiling authorization policies into Envoy RBAC filter configs. See
 * meshcore/rbac.h; docs/policy.md has the translation table.
 *
 * The message tree is built in the caller's arena and packed into it; the
 * builders below return NULL only when the arena is exhausted, and the two
 * public functions turn that into MID_E_NOMEM. Each construct mirrors a
 * matcher of meshcore/policy.c (kept equivalent by tests/unit/policy). */
#include <stdio.h>
#include <string.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "meshcore/rbac.h"

typedef Envoy__Config__Rbac__V3__RBAC Rbac;
typedef Envoy__Config__Rbac__V3__RBAC__PoliciesEntry RbacEntry;
typedef Envoy__Config__Rbac__V3__Policy RbacPolicy;
typedef Envoy__Config__Rbac__V3__Permission Perm;
typedef Envoy__Config__Rbac__V3__Permission__Set PermSet;
typedef Envoy__Config__Rbac__V3__Principal Prin;
typedef Envoy__Config__Rbac__V3__Principal__Set PrinSet;
typedef Envoy__Config__Rbac__V3__Principal__Authenticated PrinAuth;
typedef Envoy__Type__Matcher__V3__StringMatcher StrMatch;
typedef Envoy__Type__Matcher__V3__RegexMatcher RegexMatch;
typedef Envoy__Type__Matcher__V3__PathMatcher PathMatch;
typedef Envoy__Config__Route__V3__HeaderMatcher HeaderMatch;

#define SPIFFE_SCHEME "spiffe://"
#define SPIFFE_SCHEME_LEN (sizeof(SPIFFE_SCHEME) - 1)
#define NAME_FMT "ns[%s]-policy[%s]-rule[%zu]"

/* What the operation compiler keeps: everything (HTTP), or only the L4
 * fields (TCP: methods, paths and hosts are unknown). */
typedef struct {
    arena *a;
    int tcp;
} cctx;

/* ---- allocation and strings ------------------------------------------------ */

/* A zero-initialised protobuf-c message of descriptor d in the arena. */
static void *msg_new(arena *a, size_t size, const ProtobufCMessageDescriptor *d)
{
    void *m = arena_alloc(a, size);
    if (m != NULL) protobuf_c_message_init(d, m);
    return m;
}

#define NEW_MSG(a, T, desc) ((T *)msg_new((a), sizeof(T), &(desc)))

/* Concatenation of up to three parts, the middle one regex-escaped (RE2 and
 * POSIX ERE agree on backslash-escaping these metacharacters). */
static char *str3(arena *a, const char *pre, const char *mid, size_t mid_len, int escape,
                  const char *post)
{
    size_t lpre = strlen(pre), lpost = strlen(post);
    char *s = arena_alloc(a, lpre + 2 * mid_len + lpost + 1);
    if (s == NULL) return NULL;
    size_t k = 0;
    memcpy(s, pre, lpre);
    k = lpre;
    for (size_t i = 0; i < mid_len; i++) {
        if (escape && strchr("\\.+*?()|[]{}^$", mid[i]) != NULL) s[k++] = '\\';
        s[k++] = mid[i];
    }
    memcpy(s + k, post, lpost);
    k += lpost;
    s[k] = '\0';
    return s;
}

static char *lit(arena *a, const char *pre, const char *mid, size_t mid_len)
{
    return str3(a, pre, mid, mid_len, 0, "");
}

/* ---- string matchers -------------------------------------------------------- */

typedef enum { SM_EXACT, SM_PREFIX, SM_SUFFIX, SM_REGEX } sm_kind;

static StrMatch *sm_new(arena *a, sm_kind k, char *s, int icase)
{
    if (s == NULL) return NULL;
    StrMatch *m = NEW_MSG(a, StrMatch, envoy__type__matcher__v3__string_matcher__descriptor);
    if (m == NULL) return NULL;
    m->ignore_case = icase;
    switch (k) {
    case SM_EXACT:
        m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
        m->exact = s;
        break;
    case SM_PREFIX:
        m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX;
        m->prefix = s;
        break;
    case SM_SUFFIX:
        m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX;
        m->suffix = s;
        break;
    case SM_REGEX: {
        RegexMatch *r = NEW_MSG(a, RegexMatch, envoy__type__matcher__v3__regex_matcher__descriptor);
        if (r == NULL) return NULL;
        r->regex = s;
        m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX;
        m->safe_regex = r;
        break;
    }
    }
    return m;
}

/* Istio's wildcard forms: "*", "*suffix", "prefix*", else exact. */
typedef enum { W_ANY, W_SUFFIX, W_PREFIX, W_EXACT } wild_kind;

static wild_kind wild_split(const char *v, const char **body, size_t *len)
{
    size_t n = strlen(v);
    if (strcmp(v, "*") == 0) {
        *body = v;
        *len = 0;
        return W_ANY;
    }
    if (n > 0 && v[0] == '*') {
        *body = v + 1;
        *len = n - 1;
        return W_SUFFIX;
    }
    if (n > 0 && v[n - 1] == '*') {
        *body = v;
        *len = n - 1;
        return W_PREFIX;
    }
    *body = v;
    *len = n;
    return W_EXACT;
}

/* ---- principals ------------------------------------------------------------- */

static Prin *prin_any(arena *a)
{
    Prin *p = NEW_MSG(a, Prin, envoy__config__rbac__v3__principal__descriptor);
    if (p == NULL) return NULL;
    p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY;
    p->any = 1;
    return p;
}

static Prin *prin_not(arena *a, Prin *inner)
{
    if (inner == NULL) return NULL;
    Prin *p = NEW_MSG(a, Prin, envoy__config__rbac__v3__principal__descriptor);
    if (p == NULL) return NULL;
    p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID;
    p->not_id = inner;
    return p;
}

/* and_ids / or_ids of ids[0..n); a single id stands for itself. */
static Prin *prin_set(arena *a, int and, Prin **ids, size_t n)
{
    if (ids == NULL) return NULL;
    if (n == 1) return ids[0];
    PrinSet *s = NEW_MSG(a, PrinSet, envoy__config__rbac__v3__principal__set__descriptor);
    Prin *p = NEW_MSG(a, Prin, envoy__config__rbac__v3__principal__descriptor);
    if (s == NULL || p == NULL) return NULL;
    s->ids = ids;
    s->n_ids = n;
    if (and) {
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS;
        p->and_ids = s;
    } else {
        p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS;
        p->or_ids = s;
    }
    return p;
}

/* authenticated { principal_name: m } (the peer certificate's URI SAN). */
static Prin *prin_authn(arena *a, StrMatch *m)
{
    if (m == NULL) return NULL;
    PrinAuth *au =
        NEW_MSG(a, PrinAuth, envoy__config__rbac__v3__principal__authenticated__descriptor);
    Prin *p = NEW_MSG(a, Prin, envoy__config__rbac__v3__principal__descriptor);
    if (au == NULL || p == NULL) return NULL;
    au->principal_name = m;
    p->identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED;
    p->authenticated = au;
    return p;
}

/* One principals value: "td/path" or "spiffe://td/path", wildcards as in
 * Istio; "*" is any authenticated peer. */
static Prin *prin_principal(arena *a, const char *v)
{
    if (strncmp(v, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) == 0) v += SPIFFE_SCHEME_LEN;
    const char *body;
    size_t len;
    switch (wild_split(v, &body, &len)) {
    case W_ANY:
        return prin_authn(a, sm_new(a, SM_REGEX, lit(a, ".+", "", 0), 0));
    case W_SUFFIX:
        return prin_authn(a, sm_new(a, SM_REGEX, str3(a, "spiffe://.*", body, len, 1, ""), 0));
    case W_PREFIX:
        return prin_authn(a, sm_new(a, SM_PREFIX, lit(a, SPIFFE_SCHEME, body, len), 0));
    case W_EXACT:
        break;
    }
    return prin_authn(a, sm_new(a, SM_EXACT, lit(a, SPIFFE_SCHEME, body, len), 0));
}

/* One namespaces value, on the peer ID's "/ns/<ns>/" path segment. A value
 * that cannot name a namespace segment ("" or containing '/') matches
 * nothing: not_id { any }. */
static Prin *prin_namespace(arena *a, const char *v)
{
    const char *body;
    size_t len;
    wild_kind k = wild_split(v, &body, &len);
    if (v[0] == '\0' || memchr(body, '/', len) != NULL) return prin_not(a, prin_any(a));
    const char *pre = "spiffe://[^/]+/ns/", *post = "/.*";
    char *re = NULL;
    switch (k) {
    case W_ANY:
        re = lit(a, "spiffe://[^/]+/ns/[^/]+/.*", "", 0);
        break;
    case W_SUFFIX:
        re = str3(a, "spiffe://[^/]+/ns/[^/]*", body, len, 1, post);
        break;
    case W_PREFIX:
        re = str3(a, pre, body, len, 1, "[^/]*/.*");
        break;
    case W_EXACT:
        re = str3(a, pre, body, len, 1, post);
        break;
    }
    return prin_authn(a, sm_new(a, SM_REGEX, re, 0));
}

static Prin **prin_array(arena *a, size_t n)
{
    return arena_calloc(a, n * sizeof(Prin *));
}

/* or_ids over values compiled by f (NULL on exhaustion). */
static Prin *prin_or_values(arena *a, char *const *vals, size_t n,
                            Prin *(*f)(arena *, const char *))
{
    Prin **ids = prin_array(a, n);
    if (ids == NULL) return NULL;
    for (size_t i = 0; i < n; i++)
        if ((ids[i] = f(a, vals[i])) == NULL) return NULL;
    return prin_set(a, 0, ids, n);
}

/* One source: its fields ANDed; an empty source is any. */
static Prin *prin_source(arena *a, const mesh_source *s)
{
    Prin **and = prin_array(a, 3);
    size_t n = 0;
    if (and == NULL) return NULL;
    if (s->n_principals > 0)
        if ((and[n++] = prin_or_values(a, s->principals, s->n_principals, prin_principal)) == NULL)
            return NULL;
    if (s->n_not_principals > 0)
        if ((and[n++] = prin_not(a, prin_or_values(a, s->not_principals, s->n_not_principals,
                                                   prin_principal))) == NULL)
            return NULL;
    if (s->n_namespaces > 0)
        if ((and[n++] = prin_or_values(a, s->namespaces, s->n_namespaces, prin_namespace)) == NULL)
            return NULL;
    return n == 0 ? prin_any(a) : prin_set(a, 1, and, n);
}

/* ---- permissions ------------------------------------------------------------ */

static Perm *perm_new(arena *a)
{
    return NEW_MSG(a, Perm, envoy__config__rbac__v3__permission__descriptor);
}

static Perm *perm_any(arena *a)
{
    Perm *p = perm_new(a);
    if (p == NULL) return NULL;
    p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY;
    p->any = 1;
    return p;
}

static Perm *perm_set(arena *a, int and, Perm **rules, size_t n)
{
    if (rules == NULL) return NULL;
    if (n == 1) return rules[0];
    PermSet *s = NEW_MSG(a, PermSet, envoy__config__rbac__v3__permission__set__descriptor);
    Perm *p = perm_new(a);
    if (s == NULL || p == NULL) return NULL;
    s->rules = rules;
    s->n_rules = n;
    if (and) {
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES;
        p->and_rules = s;
    } else {
        p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES;
        p->or_rules = s;
    }
    return p;
}

static Perm *perm_header(arena *a, const char *name, StrMatch *m, int present)
{
    if (m == NULL && !present) return NULL;
    HeaderMatch *h = NEW_MSG(a, HeaderMatch, envoy__config__route__v3__header_matcher__descriptor);
    Perm *p = perm_new(a);
    char *hname = lit(a, name, "", 0);
    if (h == NULL || p == NULL || hname == NULL) return NULL;
    h->name = hname;
    if (present) {
        h->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH;
        h->present_match = 1;
    } else {
        h->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH;
        h->string_match = m;
    }
    p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER;
    p->header = h;
    return p;
}

static Perm *perm_method(arena *a, const char *v)
{
    return perm_header(a, ":method", sm_new(a, SM_EXACT, lit(a, v, "", 0), 0), 0);
}

static Perm *perm_path(arena *a, const char *v)
{
    const char *body;
    size_t len;
    StrMatch *m = NULL;
    switch (wild_split(v, &body, &len)) {
    case W_ANY:
        m = sm_new(a, SM_REGEX, lit(a, ".*", "", 0), 0);
        break;
    case W_SUFFIX:
        m = sm_new(a, SM_SUFFIX, lit(a, "", body, len), 0);
        break;
    case W_PREFIX:
        m = sm_new(a, SM_PREFIX, lit(a, "", body, len), 0);
        break;
    case W_EXACT:
        m = sm_new(a, SM_EXACT, lit(a, "", body, len), 0);
        break;
    }
    PathMatch *pm = NEW_MSG(a, PathMatch, envoy__type__matcher__v3__path_matcher__descriptor);
    Perm *p = perm_new(a);
    if (m == NULL || pm == NULL || p == NULL) return NULL;
    pm->rule_case = ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH;
    pm->path = m;
    p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH;
    p->url_path = pm;
    return p;
}

/* Hosts: the :authority, case-insensitive, with or without a ":port"
 * (Istio's behaviour), as one RE2 full match "(?i)HOST(:[0-9]+)?". */
static Perm *perm_host(arena *a, const char *v)
{
    const char *body;
    size_t len;
    char *re = NULL;
    switch (wild_split(v, &body, &len)) {
    case W_ANY:
        return perm_header(a, ":authority", NULL, 1);
    case W_SUFFIX:
        re = str3(a, "(?i).*", body, len, 1, "(:[0-9]+)?");
        break;
    case W_PREFIX:
        re = str3(a, "(?i)", body, len, 1, ".*");
        break;
    case W_EXACT:
        re = str3(a, "(?i)", body, len, 1, "(:[0-9]+)?");
        break;
    }
    return perm_header(a, ":authority", sm_new(a, SM_REGEX, re, 0), 0);
}

static Perm *perm_port(arena *a, uint32_t port)
{
    Perm *p = perm_new(a);
    if (p == NULL) return NULL;
    p->rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT;
    p->destination_port = port;
    return p;
}

static Perm *perm_or_values(arena *a, char *const *vals, size_t n,
                            Perm *(*f)(arena *, const char *))
{
    Perm **rules = arena_calloc(a, n * sizeof(Perm *));
    if (rules == NULL) return NULL;
    for (size_t i = 0; i < n; i++)
        if ((rules[i] = f(a, vals[i])) == NULL) return NULL;
    return perm_set(a, 0, rules, n);
}

/* One operation: its fields ANDed (HTTP fields left out on TCP); an empty
 * one is any. */
static Perm *perm_operation(const cctx *c, const mesh_operation *o)
{
    arena *a = c->a;
    Perm **and = arena_calloc(a, 4 * sizeof(Perm *));
    size_t n = 0;
    if (and == NULL) return NULL;
    if (!c->tcp && o->n_methods > 0)
        if ((and[n++] = perm_or_values(a, o->methods, o->n_methods, perm_method)) == NULL)
            return NULL;
    if (!c->tcp && o->n_paths > 0)
        if ((and[n++] = perm_or_values(a, o->paths, o->n_paths, perm_path)) == NULL) return NULL;
    if (o->n_ports > 0) {
        Perm **ports = arena_calloc(a, o->n_ports * sizeof(Perm *));
        if (ports == NULL) return NULL;
        for (size_t i = 0; i < o->n_ports; i++)
            if ((ports[i] = perm_port(a, o->ports[i])) == NULL) return NULL;
        if ((and[n++] = perm_set(a, 0, ports, o->n_ports)) == NULL) return NULL;
    }
    if (!c->tcp && o->n_hosts > 0)
        if ((and[n++] = perm_or_values(a, o->hosts, o->n_hosts, perm_host)) == NULL) return NULL;
    return n == 0 ? perm_any(a) : perm_set(a, 1, and, n);
}

/* ---- policies and filters --------------------------------------------------- */

static int rule_uses_http(const mesh_rule *r)
{
    for (size_t i = 0; i < r->n_to; i++)
        if (r->to[i].n_methods > 0 || r->to[i].n_paths > 0 || r->to[i].n_hosts > 0) return 1;
    return 0;
}

/* The RBAC Policy of one rule: permissions = its operations (or any),
 * principals = its sources (or any). */
static RbacPolicy *rbac_rule(const cctx *c, const mesh_rule *r)
{
    arena *a = c->a;
    RbacPolicy *pol = NEW_MSG(a, RbacPolicy, envoy__config__rbac__v3__policy__descriptor);
    size_t np = r->n_to > 0 ? r->n_to : 1, ni = r->n_from > 0 ? r->n_from : 1;
    Perm **perms = arena_calloc(a, np * sizeof(Perm *));
    Prin **ids = prin_array(a, ni);
    if (pol == NULL || perms == NULL || ids == NULL) return NULL;
    for (size_t i = 0; i < np; i++)
        if ((perms[i] = r->n_to > 0 ? perm_operation(c, &r->to[i]) : perm_any(a)) == NULL)
            return NULL;
    for (size_t i = 0; i < ni; i++)
        if ((ids[i] = r->n_from > 0 ? prin_source(a, &r->from[i]) : prin_any(a)) == NULL)
            return NULL;
    pol->permissions = perms;
    pol->n_permissions = np;
    pol->principals = ids;
    pol->n_principals = ni;
    return pol;
}

static const char *ns_of(const mesh_policy *p)
{
    return p->namespace_ != NULL ? p->namespace_ : MESH_DEFAULT_NAMESPACE;
}

static int same_policy_name(const mesh_policy *x, const mesh_policy *y)
{
    return strcmp(ns_of(x), ns_of(y)) == 0 && strcmp(x->name, y->name) == 0;
}

/* The RBAC rules of every policy with `action` selecting w, or *out = NULL
 * when there is none. */
static MID_RESULT build_rbac(const mesh_policy *const *pols, size_t n_pols, const mesh_workload *w,
                             mesh_action action, const cctx *c, Rbac **out)
{
    arena *a = c->a;
    size_t n_sel = 0, n_entries = 0;
    *out = NULL;
    for (size_t i = 0; i < n_pols; i++) {
        const mesh_policy *p = pols[i];
        MID_ENSURE(p != NULL && p->name != NULL, MID_E_INVALID,
                   "RBAC: policy %zu is NULL or unnamed", i);
        MID_ENSURE(p->action == MESH_ACTION_ALLOW || p->action == MESH_ACTION_DENY, MID_E_INVALID,
                   "RBAC: policy %s/%s has an unknown action %d", ns_of(p), p->name,
                   (int)p->action);
        if (p->action != action || !mesh_policy_selects(p, w)) continue;
        for (size_t j = 0; j < i; j++)
            MID_ENSURE(!(same_policy_name(pols[j], p) && pols[j]->action == action &&
                         mesh_policy_selects(pols[j], w)),
                       MID_E_INVALID, "RBAC: policy %s/%s given twice", ns_of(p), p->name);
        n_sel++;
        n_entries += p->n_rules;
    }
    if (n_sel == 0) return mid_ok();

    Rbac *rbac = NEW_MSG(a, Rbac, envoy__config__rbac__v3__rbac__descriptor);
    RbacEntry **entries = arena_calloc(a, (n_entries > 0 ? n_entries : 1) * sizeof(RbacEntry *));
    MID_ENSURE(rbac != NULL && entries != NULL, MID_E_NOMEM, "RBAC: arena exhausted");
    rbac->action = action == MESH_ACTION_DENY ? ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY
                                              : ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW;
    size_t k = 0;
    for (size_t i = 0; i < n_pols; i++) {
        const mesh_policy *p = pols[i];
        if (p->action != action || !mesh_policy_selects(p, w)) continue;
        for (size_t r = 0; r < p->n_rules; r++) {
            /* Istio: on TCP an ALLOW rule naming HTTP-only fields never
             * matches, so it is not emitted at all. */
            if (c->tcp && action == MESH_ACTION_ALLOW && rule_uses_http(&p->rules[r])) continue;
            int len = snprintf(NULL, 0, NAME_FMT, ns_of(p), p->name, r);
            MID_ENSURE(len > 0, MID_E_INTERNAL, "RBAC: snprintf failed");
            char *name = arena_alloc(a, (size_t)len + 1);
            RbacEntry *e =
                NEW_MSG(a, RbacEntry, envoy__config__rbac__v3__rbac__policies_entry__descriptor);
            MID_ENSURE(name != NULL && e != NULL, MID_E_NOMEM, "RBAC: arena exhausted");
            (void)snprintf(name, (size_t)len + 1, NAME_FMT, ns_of(p), p->name, r);
            e->key = name;
            e->value = rbac_rule(c, &p->rules[r]);
            MID_ENSURE(e->value != NULL, MID_E_NOMEM, "RBAC: arena exhausted");
            entries[k++] = e;
        }
    }
    rbac->policies = entries;
    rbac->n_policies = k;
    *out = rbac;
    return mid_ok();
}

static MID_RESULT pack_into(arena *a, const ProtobufCMessage *m, mesh_rbac_filter *f)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = arena_alloc(a, len);
    MID_ENSURE(buf != NULL, MID_E_NOMEM, "RBAC: arena exhausted packing %zu bytes", len);
    MID_ENSURE(protobuf_c_message_pack(m, buf) == len, MID_E_INTERNAL, "RBAC: pack size mismatch");
    f->bytes = buf;
    f->len = len;
    return mid_ok();
}

static MID_RESULT compile(const mesh_policy *const *pols, size_t n_pols, const mesh_workload *w,
                          const char *stat_prefix, int tcp, arena *a, mesh_rbac_filter out[2],
                          size_t *n)
{
    MID_ENSURE(a != NULL && w != NULL && out != NULL && n != NULL && (pols != NULL || n_pols == 0),
               MID_E_INVALID, "RBAC: NULL argument");
    *n = 0;
    const cctx c = {a, tcp};
    static const mesh_action order[2] = {MESH_ACTION_DENY, MESH_ACTION_ALLOW};
    for (size_t i = 0; i < 2; i++) {
        Rbac *rules = NULL;
        MID_GUARD(build_rbac(pols, n_pols, w, order[i], &c, &rules));
        if (rules == NULL) continue;
        mesh_rbac_filter *f = &out[*n];
        if (tcp) {
            Envoy__Extensions__Filters__Network__Rbac__V3__RBAC cfg =
                ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__INIT;
            cfg.rules = rules;
            cfg.stat_prefix = (char *)stat_prefix;
            f->name = MESH_RBAC_NETWORK_FILTER;
            f->type_url = MESH_RBAC_NETWORK_TYPE_URL;
            MID_GUARD(pack_into(a, &cfg.base, f));
        } else {
            Envoy__Extensions__Filters__Http__Rbac__V3__RBAC cfg =
                ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT;
            cfg.rules = rules;
            f->name = MESH_RBAC_HTTP_FILTER;
            f->type_url = MESH_RBAC_HTTP_TYPE_URL;
            MID_GUARD(pack_into(a, &cfg.base, f));
        }
        (*n)++;
    }
    return mid_ok();
}

MID_RESULT mesh_rbac_http_filters(const mesh_policy *const *pols, size_t n_pols,
                                  const mesh_workload *w, arena *a, mesh_rbac_filter out[2],
                                  size_t *n)
{
    return compile(pols, n_pols, w, NULL, 0, a, out, n);
}

MID_RESULT mesh_rbac_network_filters(const mesh_policy *const *pols, size_t n_pols,
                                     const mesh_workload *w, const char *stat_prefix, arena *a,
                                     mesh_rbac_filter out[2], size_t *n)
{
    MID_ENSURE(stat_prefix != NULL && stat_prefix[0] != '\0', MID_E_INVALID,
               "RBAC: the network filter needs a non-empty stat_prefix");
    return compile(pols, n_pols, w, stat_prefix, 1, a, out, n);
}
