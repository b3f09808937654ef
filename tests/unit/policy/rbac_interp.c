/* Envoy RBAC interpreter for tests. See rbac_interp.h. */
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "tests/unit/policy/rbac_interp.h"

typedef Envoy__Config__Rbac__V3__RBAC Rbac;
typedef Envoy__Config__Rbac__V3__Policy RbacPolicy;
typedef Envoy__Config__Rbac__V3__Permission Perm;
typedef Envoy__Config__Rbac__V3__Principal Prin;
typedef Envoy__Type__Matcher__V3__StringMatcher StrMatch;
typedef Envoy__Config__Route__V3__HeaderMatcher HeaderMatch;

#define MAX_FILTERS 4
#define MAX_DEPTH 64

typedef struct {
    const char *key; /* the regex string inside the unpacked message */
    regex_t re;
} cached_re;

struct rbac_interp {
    size_t n;
    ProtobufCMessage *msg[MAX_FILTERS]; /* unpacked, default allocator */
    const Rbac *rules[MAX_FILTERS];
    cached_re *res;
    size_t n_res, cap_res;
    char *err; /* for errors during evaluation */
    size_t errcap;
    int failed;
};

static void seterr(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t cap, const char *fmt, ...)
{
    if (err == NULL || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* ---- load: validation walk, regex compilation --------------------------------- */

typedef struct {
    rbac_interp *it;
    char *err;
    size_t cap;
} loadctx;

static int add_regex(loadctx *c, const char *pattern)
{
    rbac_interp *it = c->it;
    if (pattern == NULL || pattern[0] == '\0') {
        seterr(c->err, c->cap, "empty safe_regex");
        return 0;
    }
    for (size_t i = 0; i < it->n_res; i++)
        if (it->res[i].key == pattern) return 1;
    if (it->n_res == it->cap_res) {
        size_t cap = it->cap_res ? it->cap_res * 2 : 64;
        cached_re *nr = realloc(it->res, cap * sizeof *nr);
        if (nr == NULL) return 0;
        it->res = nr;
        it->cap_res = cap;
    }
    int flags = REG_EXTENDED | REG_NOSUB;
    const char *body = pattern;
    if (strncmp(body, "(?i)", 4) == 0) {
        flags |= REG_ICASE;
        body += 4;
    }
    /* Envoy's safe_regex is a full match (RE2::FullMatch). */
    size_t len = strlen(body) + 5;
    char *anchored = malloc(len);
    if (anchored == NULL) return 0;
    (void)snprintf(anchored, len, "^(%s)$", body);
    int rc = regcomp(&it->res[it->n_res].re, anchored, flags);
    free(anchored);
    if (rc != 0) {
        seterr(c->err, c->cap, "regex \"%s\" does not compile", pattern);
        return 0;
    }
    it->res[it->n_res].key = pattern;
    it->n_res++;
    return 1;
}

static int check_sm(loadctx *c, const StrMatch *m, const char *where)
{
    if (m == NULL) {
        seterr(c->err, c->cap, "%s: missing StringMatcher", where);
        return 0;
    }
    switch (m->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        return 1;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        /* Envoy: prefix, suffix and contains need min_len 1. */
        if (m->prefix == NULL || m->prefix[0] == '\0') {
            seterr(c->err, c->cap, "%s: empty prefix/suffix/contains", where);
            return 0;
        }
        return 1;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        if (m->safe_regex == NULL) return 0;
        return add_regex(c, m->safe_regex->regex);
    default:
        seterr(c->err, c->cap, "%s: StringMatcher with no pattern", where);
        return 0;
    }
}

static int check_perm(loadctx *c, const Perm *p, int depth)
{
    if (p == NULL || depth > MAX_DEPTH) {
        seterr(c->err, c->cap, "NULL or too deep permission");
        return 0;
    }
    switch (p->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES: {
        const Envoy__Config__Rbac__V3__Permission__Set *s = p->and_rules;
        if (s == NULL || s->n_rules == 0) {
            seterr(c->err, c->cap, "permission set with no rules");
            return 0;
        }
        for (size_t i = 0; i < s->n_rules; i++)
            if (!check_perm(c, s->rules[i], depth + 1)) return 0;
        return 1;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        if (!p->any) seterr(c->err, c->cap, "permission any=false");
        return p->any;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER: {
        const HeaderMatch *h = p->header;
        if (h == NULL || h->name == NULL || h->name[0] == '\0') {
            seterr(c->err, c->cap, "header matcher without a name");
            return 0;
        }
        if (h->invert_match || h->treat_missing_header_as_empty) {
            seterr(c->err, c->cap, "header matcher flags not supported by the interpreter");
            return 0;
        }
        switch (h->header_match_specifier_case) {
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
            return check_sm(c, h->string_match, h->name);
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
            return h->safe_regex_match != NULL && add_regex(c, h->safe_regex_match->regex);
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
            return 1;
        default:
            seterr(c->err, c->cap, "header matcher %s with no specifier", h->name);
            return 0;
        }
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        if (p->url_path == NULL ||
            p->url_path->rule_case != ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH) {
            seterr(c->err, c->cap, "url_path without a path matcher");
            return 0;
        }
        return check_sm(c, p->url_path->path, "url_path");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        if (p->destination_port > 65535) seterr(c->err, c->cap, "destination_port > 65535");
        return p->destination_port <= 65535;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE:
        return check_perm(c, p->not_rule, depth + 1);
    default:
        seterr(c->err, c->cap, "permission with no rule set (%d)", (int)p->rule_case);
        return 0;
    }
}

static int check_prin(loadctx *c, const Prin *p, int depth)
{
    if (p == NULL || depth > MAX_DEPTH) {
        seterr(c->err, c->cap, "NULL or too deep principal");
        return 0;
    }
    switch (p->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS: {
        const Envoy__Config__Rbac__V3__Principal__Set *s = p->and_ids;
        if (s == NULL || s->n_ids == 0) {
            seterr(c->err, c->cap, "principal set with no ids");
            return 0;
        }
        for (size_t i = 0; i < s->n_ids; i++)
            if (!check_prin(c, s->ids[i], depth + 1)) return 0;
        return 1;
    }
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        if (!p->any) seterr(c->err, c->cap, "principal any=false");
        return p->any;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED:
        if (p->authenticated == NULL) return 0;
        return p->authenticated->principal_name == NULL ||
               check_sm(c, p->authenticated->principal_name, "principal_name");
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID:
        return check_prin(c, p->not_id, depth + 1);
    default:
        seterr(c->err, c->cap, "principal with no identifier set (%d)", (int)p->identifier_case);
        return 0;
    }
}

static int check_rbac(loadctx *c, const Rbac *r)
{
    if (r == NULL) {
        seterr(c->err, c->cap, "filter without rules");
        return 0;
    }
    if (r->action != ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW &&
        r->action != ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY) {
        seterr(c->err, c->cap, "RBAC action %d", (int)r->action);
        return 0;
    }
    for (size_t i = 0; i < r->n_policies; i++) {
        const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *e = r->policies[i];
        if (e == NULL || e->key == NULL || e->key[0] == '\0' || e->value == NULL) {
            seterr(c->err, c->cap, "policy entry %zu without a name or value", i);
            return 0;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->policies[j]->key, e->key) == 0) {
                seterr(c->err, c->cap, "policy name %s twice", e->key);
                return 0;
            }
        const RbacPolicy *p = e->value;
        if (p->n_permissions == 0 || p->n_principals == 0) {
            seterr(c->err, c->cap, "policy %s: permissions and principals must be non-empty",
                   e->key);
            return 0;
        }
        for (size_t j = 0; j < p->n_permissions; j++)
            if (!check_perm(c, p->permissions[j], 0)) return 0;
        for (size_t j = 0; j < p->n_principals; j++)
            if (!check_prin(c, p->principals[j], 0)) return 0;
    }
    return 1;
}

void rbac_interp_free(rbac_interp *it)
{
    if (it == NULL) return;
    for (size_t i = 0; i < it->n; i++) protobuf_c_message_free_unpacked(it->msg[i], NULL);
    for (size_t i = 0; i < it->n_res; i++) regfree(&it->res[i].re);
    free(it->res);
    free(it);
}

rbac_interp *rbac_interp_load(const mesh_rbac_filter *filters, size_t n, char *err, size_t errcap)
{
    if (n > MAX_FILTERS) {
        seterr(err, errcap, "%zu filters", n);
        return NULL;
    }
    rbac_interp *it = calloc(1, sizeof *it);
    if (it == NULL) return NULL;
    loadctx c = {it, err, errcap};
    for (size_t i = 0; i < n; i++) {
        const mesh_rbac_filter *f = &filters[i];
        if (f->name == NULL || f->type_url == NULL) goto fail;
        if (strcmp(f->name, "envoy.filters.http.rbac") == 0 &&
            strcmp(f->type_url, "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC") ==
                0) {
            Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *m =
                envoy__extensions__filters__http__rbac__v3__rbac__unpack(NULL, f->len, f->bytes);
            if (m == NULL) {
                seterr(err, errcap, "filter %zu: HTTP RBAC does not decode", i);
                goto fail;
            }
            it->msg[it->n] = &m->base;
            it->rules[it->n++] = m->rules;
        } else if (strcmp(f->name, "envoy.filters.network.rbac") == 0 &&
                   strcmp(f->type_url,
                          "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC") ==
                       0) {
            Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *m =
                envoy__extensions__filters__network__rbac__v3__rbac__unpack(NULL, f->len, f->bytes);
            if (m == NULL) {
                seterr(err, errcap, "filter %zu: network RBAC does not decode", i);
                goto fail;
            }
            it->msg[it->n] = &m->base;
            it->rules[it->n++] = m->rules;
            if (m->stat_prefix == NULL || m->stat_prefix[0] == '\0') {
                seterr(err, errcap, "filter %zu: network RBAC without stat_prefix", i);
                goto fail;
            }
        } else {
            seterr(err, errcap, "filter %zu: unexpected name %s / type %s", i, f->name,
                   f->type_url);
            goto fail;
        }
        if (!check_rbac(&c, it->rules[i])) goto fail;
    }
    return it;
fail:
    rbac_interp_free(it);
    return NULL;
}

size_t rbac_interp_n_policies(const rbac_interp *it)
{
    size_t k = 0;
    for (size_t i = 0; i < it->n; i++) k += it->rules[i]->n_policies;
    return k;
}

/* ---- evaluation --------------------------------------------------------------- */

static int regex_full(rbac_interp *it, const char *pattern, const char *s)
{
    for (size_t i = 0; i < it->n_res; i++)
        if (it->res[i].key == pattern) return regexec(&it->res[i].re, s, 0, NULL, 0) == 0;
    it->failed = 1;
    seterr(it->err, it->errcap, "regex %s was not compiled", pattern);
    return 0;
}

static int sm_match(rbac_interp *it, const StrMatch *m, const char *s)
{
    size_t ls = strlen(s);
    int ic = m->ignore_case;
    switch (m->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        return ic ? strcasecmp(s, m->exact) == 0 : strcmp(s, m->exact) == 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX: {
        size_t lp = strlen(m->prefix);
        return lp <= ls && (ic ? strncasecmp(s, m->prefix, lp) : strncmp(s, m->prefix, lp)) == 0;
    }
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX: {
        size_t lx = strlen(m->suffix);
        return lx <= ls && (ic ? strncasecmp(s + ls - lx, m->suffix, lx)
                               : strncmp(s + ls - lx, m->suffix, lx)) == 0;
    }
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        return ic ? strcasestr(s, m->contains) != NULL : strstr(s, m->contains) != NULL;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        /* Envoy ignores ignore_case for safe_regex. */
        return regex_full(it, m->safe_regex->regex, s);
    default:
        it->failed = 1;
        return 0;
    }
}

static const char *header_value(const mesh_request *rq, const char *name)
{
    if (!rq->http) return NULL;
    if (strcmp(name, ":method") == 0) return rq->method;
    if (strcmp(name, ":path") == 0) return rq->path;
    if (strcmp(name, ":authority") == 0 || strcasecmp(name, "host") == 0) return rq->host;
    return NULL;
}

static int perm_match(rbac_interp *it, const Perm *p, const mesh_request *rq)
{
    switch (p->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        for (size_t i = 0; i < p->and_rules->n_rules; i++)
            if (!perm_match(it, p->and_rules->rules[i], rq)) return 0;
        return 1;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        for (size_t i = 0; i < p->or_rules->n_rules; i++)
            if (perm_match(it, p->or_rules->rules[i], rq)) return 1;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        return 1;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER: {
        const HeaderMatch *h = p->header;
        const char *v = header_value(rq, h->name);
        if (v == NULL) return 0; /* a missing header matches nothing */
        switch (h->header_match_specifier_case) {
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
            return h->present_match;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
            return regex_full(it, h->safe_regex_match->regex, v);
        default:
            return sm_match(it, h->string_match, v);
        }
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH: {
        if (!rq->http || rq->path == NULL) return 0;
        /* url_path matches the path without its query string. */
        const char *q = strchr(rq->path, '?');
        if (q == NULL) return sm_match(it, p->url_path->path, rq->path);
        char *bare = strndup(rq->path, (size_t)(q - rq->path));
        if (bare == NULL) {
            it->failed = 1;
            return 0;
        }
        int r = sm_match(it, p->url_path->path, bare);
        free(bare);
        return r;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        return rq->port == p->destination_port;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE:
        return !perm_match(it, p->not_rule, rq);
    default:
        it->failed = 1;
        return 0;
    }
}

static int prin_match(rbac_interp *it, const Prin *p, const mesh_request *rq)
{
    switch (p->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        for (size_t i = 0; i < p->and_ids->n_ids; i++)
            if (!prin_match(it, p->and_ids->ids[i], rq)) return 0;
        return 1;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        for (size_t i = 0; i < p->or_ids->n_ids; i++)
            if (prin_match(it, p->or_ids->ids[i], rq)) return 1;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        return 1;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED:
        /* No peer certificate (plaintext): never authenticated. The peer's
         * URI SAN is the request's principal. */
        if (rq->principal == NULL) return 0;
        if (p->authenticated->principal_name == NULL) return 1;
        return sm_match(it, p->authenticated->principal_name, rq->principal);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID:
        return !prin_match(it, p->not_id, rq);
    default:
        it->failed = 1;
        return 0;
    }
}

static int policy_match(rbac_interp *it, const RbacPolicy *p, const mesh_request *rq)
{
    int perm = 0, prin = 0;
    for (size_t i = 0; i < p->n_permissions && !perm; i++)
        perm = perm_match(it, p->permissions[i], rq);
    for (size_t i = 0; i < p->n_principals && !prin; i++)
        prin = prin_match(it, p->principals[i], rq);
    return perm && prin;
}

int rbac_interp_decide(rbac_interp *it, const mesh_request *rq, char *err, size_t errcap)
{
    it->err = err;
    it->errcap = errcap;
    it->failed = 0;
    for (size_t i = 0; i < it->n; i++) {
        const Rbac *r = it->rules[i];
        int matched = 0;
        for (size_t j = 0; j < r->n_policies && !matched; j++)
            matched = policy_match(it, r->policies[j]->value, rq);
        int allowed =
            r->action == ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW ? matched : !matched;
        if (it->failed) return -1;
        if (!allowed) return 0;
    }
    return it->failed ? -1 : 1;
}

int rbac_interp_policy_matches(rbac_interp *it, const char *name, const mesh_request *rq)
{
    for (size_t i = 0; i < it->n; i++)
        for (size_t j = 0; j < it->rules[i]->n_policies; j++)
            if (strcmp(it->rules[i]->policies[j]->key, name) == 0)
                return policy_match(it, it->rules[i]->policies[j]->value, rq);
    return -1;
}
