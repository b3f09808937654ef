/* Istio ServiceEntry / AuthorizationPolicy YAML -> meshcore/model.h records.
 *
 * Two passes per document. libyaml's event API feeds a small tree of our own
 * (so that anchors, aliases, odd tags, duplicate keys, deep nesting and huge
 * documents are refused before anything is interpreted, with the line and
 * column of the node at fault); the tree is then read field by field against
 * the supported subset, and the record is checked with mesh_*_validate. A
 * validation failure names a field path ("spec.endpoints[1].address"); that
 * path is looked up in the tree to put the node's line and column in front
 * of the message. docs/mesh.md ("Resource files") documents the subset.
 */
#include "meshcore/yaml_load.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "lib/fsutil.h"
#include "lib/quote.h"
#include "meshcore/model_int.h"

#define YAML_DEPTH_MAX 32        /* nested sequences/mappings per document */
#define YAML_NODES_MAX (1 << 18) /* nodes per document */
#define YAML_FILES_MAX 4096      /* files read from one directory */
#define YPATH_MAX 512            /* field paths in messages */
#define FILE_PATH_MAX 4096

/* ---- the tree ---------------------------------------------------------------- */

typedef enum { YN_SCALAR, YN_SEQ, YN_MAP } yn_type;

typedef struct ynode {
    yn_type type;
    size_t line, col;     /* 1-based */
    char *str;            /* scalar bytes, NUL-terminated (may hold NULs) */
    size_t len;
    bool plain;           /* unquoted scalar */
    struct ynode **kids;  /* sequence items, or mapping key, value, key, value... */
    size_t n, cap;
} ynode;

static void ynode_free(ynode *n)
{
    if (n == NULL) return;
    for (size_t i = 0; i < n->n; i++) ynode_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n);
}

typedef struct {
    const char *src; /* source name for messages */
} yctx;

/* Fails with "SRC:LINE:COL: PATH: message". */
__attribute__((format(printf, 7, 8))) static mid_result yfail_at(int code_line, mid_err err,
                                                                const yctx *c, size_t line,
                                                                size_t col, const char *path,
                                                                const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mid_fail(err, __FILE__, code_line, "%s:%zu:%zu: %s: %s", c->src, line, col,
                    path[0] ? path : "document", msg);
}

#define YFAIL_AT(err, c, line, col, path, ...)                                        \
    return yfail_at(__LINE__, (err), (c), (line), (col), (path), __VA_ARGS__)
#define YFAIL(err, c, node, path, ...)                                                \
    return yfail_at(__LINE__, (err), (c), (node)->line, (node)->col, (path), __VA_ARGS__)

static bool ident_key(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
    return true;
}

/* Appends a mapping key to a field path: ".key" for plain identifiers,
 * ["key"] (mesh_path_key, the form model.c's messages use) otherwise, and
 * always for user-chosen keys (`user`: labels, endpoint port names). */
static void path_key_as(char *out, size_t cap, const char *base, const char *key, size_t klen,
                        bool user)
{
    size_t o = strnlen(base, cap - 1);
    memmove(out, base, o);
    if (user || !ident_key(key, klen)) {
        mesh_path_key(out, o, cap, key, klen);
        return;
    }
    if (o > 0 && o + 1 < cap) out[o++] = '.';
    for (size_t i = 0; i < klen && o + 1 < cap; i++) out[o++] = key[i];
    out[o] = '\0';
}

static void path_key(char *out, size_t cap, const char *base, const char *key, size_t klen)
{
    path_key_as(out, cap, base, key, klen, false);
}

static void path_index(char *out, size_t cap, const char *base, size_t i)
{
    size_t o = strnlen(base, cap - 1);
    memmove(out, base, o);
    snprintf(out + o, cap - o, "[%zu]", i);
}

/* ---- pass 1: events -> tree --------------------------------------------------- */

typedef struct {
    const yctx *c;
    ynode *stack[YAML_DEPTH_MAX];
    size_t depth;
    ynode *root;
    size_t nodes;
} builder;

/* The path of the node about to be attached (levels == depth) or of the
 * container at stack[levels] (levels < depth). */
static void builder_path(const builder *b, size_t levels, char *out, size_t cap)
{
    char tmp[YPATH_MAX];
    out[0] = '\0';
    for (size_t i = 0; i < levels && i < b->depth; i++) {
        const ynode *node = b->stack[i];
        bool pending = i == b->depth - 1 && levels == b->depth;
        snprintf(tmp, sizeof tmp, "%s", out);
        if (node->type == YN_MAP) {
            size_t key_idx;
            if (pending) {
                if (node->n % 2 == 0) return; /* at a key position */
                key_idx = node->n - 1;
            } else {
                if (node->n < 2) return;
                key_idx = node->n - 2;
            }
            path_key(out, cap, tmp, node->kids[key_idx]->str, node->kids[key_idx]->len);
        } else {
            size_t idx = pending ? node->n : (node->n ? node->n - 1 : 0);
            path_index(out, cap, tmp, idx);
        }
    }
}

static mid_result builder_fail(const builder *b, int code_line, mid_err err,
                               const yaml_mark_t *m, const char *what)
{
    char path[YPATH_MAX];
    builder_path(b, b->depth, path, sizeof path);
    return yfail_at(code_line, err, b->c, m->line + 1, m->column + 1, path, "%s", what);
}

static bool tag_ok(const yaml_char_t *tag)
{
    static const char *const standard[] = {"str", "int", "bool", "null", "float", "map", "seq"};
    static const char prefix[] = "tag:yaml.org,2002:";
    if (tag == NULL) return true;
    const char *t = (const char *)tag;
    if (strncmp(t, prefix, sizeof prefix - 1) != 0) return false;
    for (size_t i = 0; i < sizeof standard / sizeof standard[0]; i++)
        if (strcmp(t + sizeof prefix - 1, standard[i]) == 0) return true;
    return false;
}

/* Checks anchor, tag and limits of a new node at `m`; creates it. */
static mid_result builder_new(builder *b, yn_type type, const yaml_mark_t *m,
                              const yaml_char_t *anchor, const yaml_char_t *tag, ynode **out)
{
    *out = NULL;
    if (anchor != NULL) {
        char q[QUOTE_MAX + 8];
        char what[256];
        quote_str((const char *)anchor, q, sizeof q);
        snprintf(what, sizeof what,
                 "YAML anchor &%s is not supported (meshid does not expand anchors and aliases; "
                 "write the value out)",
                 q);
        return builder_fail(b, __LINE__, MID_E_INVALID, m, what);
    }
    if (!tag_ok(tag)) {
        char q[QUOTE_MAX + 8];
        char what[256];
        quote_str((const char *)tag, q, sizeof q);
        snprintf(what, sizeof what, "YAML tag \"%s\" is not supported (only standard tags)", q);
        return builder_fail(b, __LINE__, MID_E_INVALID, m, what);
    }
    if (b->nodes >= YAML_NODES_MAX) {
        char what[128];
        snprintf(what, sizeof what, "the document has more than %d YAML nodes", YAML_NODES_MAX);
        return builder_fail(b, __LINE__, MID_E_TOO_LARGE, m, what);
    }
    if (type != YN_SCALAR && b->depth >= YAML_DEPTH_MAX) {
        char what[128];
        snprintf(what, sizeof what, "nesting deeper than %d levels is not supported",
                 YAML_DEPTH_MAX);
        return builder_fail(b, __LINE__, MID_E_INVALID, m, what);
    }
    if (b->depth > 0) {
        const ynode *parent = b->stack[b->depth - 1];
        if (parent->type == YN_MAP && parent->n % 2 == 0 && type != YN_SCALAR)
            return builder_fail(b, __LINE__, MID_E_INVALID, m,
                                "mapping keys must be plain strings");
    }
    ynode *n = calloc(1, sizeof *n);
    MID_ENSURE_MEM(n);
    n->type = type;
    n->line = m->line + 1;
    n->col = m->column + 1;
    b->nodes++;
    *out = n;
    return mid_ok();
}

/* Attaches `n` to the open container (or as the root); takes ownership. */
static mid_result builder_attach(builder *b, ynode *n)
{
    if (b->depth == 0) {
        if (b->root != NULL) {
            ynode_free(n);
            MID_BAIL(MID_E_INTERNAL, "yaml: second root node");
        }
        b->root = n;
        return mid_ok();
    }
    ynode *parent = b->stack[b->depth - 1];
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        ynode **kids = realloc(parent->kids, cap * sizeof *kids);
        if (kids == NULL) {
            ynode_free(n);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
        parent->kids = kids;
        parent->cap = cap;
    }
    parent->kids[parent->n++] = n;
    return mid_ok();
}

static int key_cmp(const ynode *a, const ynode *b)
{
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    return memcmp(a->str, b->str, a->len);
}

static int key_ptr_cmp(const void *x, const void *y)
{
    const ynode *a = *(const ynode *const *)x;
    const ynode *b = *(const ynode *const *)y;
    int c = key_cmp(a, b);
    if (c != 0) return c;
    /* Equal keys: earlier in the document first. */
    if (a->line != b->line) return a->line < b->line ? -1 : 1;
    return a->col < b->col ? -1 : a->col > b->col;
}

/* Refuses a mapping that has one key twice (O(n log n)). */
static mid_result check_duplicate_keys(const builder *b, const ynode *map)
{
    size_t pairs = map->n / 2;
    if (pairs < 2) return mid_ok();
    const ynode **keys = malloc(pairs * sizeof *keys);
    MID_ENSURE_MEM(keys);
    for (size_t i = 0; i < pairs; i++) keys[i] = map->kids[2 * i];
    qsort(keys, pairs, sizeof *keys, key_ptr_cmp);
    const ynode *dup = NULL;
    for (size_t i = 1; i < pairs && dup == NULL; i++)
        if (key_cmp(keys[i - 1], keys[i]) == 0) dup = keys[i];
    free(keys);
    if (dup == NULL) return mid_ok();
    char base[YPATH_MAX];
    char path[YPATH_MAX];
    builder_path(b, b->depth - 1, base, sizeof base);
    path_key(path, sizeof path, base, dup->str, dup->len);
    return yfail_at(__LINE__, MID_E_INVALID, b->c, dup->line, dup->col, path,
                    "duplicate key in one mapping");
}

/* ---- pass 2: tree -> records ------------------------------------------------------ */

static bool is_null(const ynode *n)
{
    if (n == NULL) return true;
    if (n->type != YN_SCALAR || !n->plain) return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

static const ynode *map_getn(const ynode *m, const char *key, size_t klen)
{
    if (m == NULL || m->type != YN_MAP) return NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (m->kids[i]->len == klen && memcmp(m->kids[i]->str, key, klen) == 0) return m->kids[i + 1];
    return NULL;
}

static const ynode *map_get(const ynode *m, const char *key)
{
    return map_getn(m, key, strlen(key));
}

static const char *type_name(const ynode *n)
{
    return n->type == YN_MAP ? "a mapping" : n->type == YN_SEQ ? "a list" : "a scalar";
}

/* Every key of `m` must be in `allowed` (NULL-terminated). */
static mid_result check_keys(const yctx *c, const ynode *m, const char *path,
                             const char *const *allowed)
{
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const ynode *k = m->kids[i];
        bool known = false;
        for (size_t j = 0; allowed[j] != NULL && !known; j++)
            known = k->len == strlen(allowed[j]) && memcmp(k->str, allowed[j], k->len) == 0;
        if (known) continue;
        char list[256] = "";
        size_t o = 0;
        for (size_t j = 0; allowed[j] != NULL && o < sizeof list; j++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "", allowed[j]);
        char p[YPATH_MAX];
        path_key(p, sizeof p, path, k->str, k->len);
        YFAIL(MID_E_INVALID, c, k, p, "field not supported by meshid (supported: %s)", list);
    }
    return mid_ok();
}

static mid_result want_map(const yctx *c, const ynode *n, const char *path)
{
    if (n->type != YN_MAP) YFAIL(MID_E_INVALID, c, n, path, "must be a mapping, not %s", type_name(n));
    return mid_ok();
}

static mid_result want_seq(const yctx *c, const ynode *n, const char *path, size_t max)
{
    if (n->type != YN_SEQ) YFAIL(MID_E_INVALID, c, n, path, "must be a list, not %s", type_name(n));
    if (n->n > max)
        YFAIL(MID_E_TOO_LARGE, c, n, path, "%zu entries is over the limit of %zu", n->n, max);
    return mid_ok();
}

/* A mapping's pair count against a limit. */
static mid_result want_map_max(const yctx *c, const ynode *n, const char *path, size_t max)
{
    MID_GUARD(want_map(c, n, path));
    if (n->n / 2 > max)
        YFAIL(MID_E_TOO_LARGE, c, n, path, "%zu entries is over the limit of %zu", n->n / 2, max);
    return mid_ok();
}

static mid_result scalar_text(const yctx *c, const ynode *n, const char *path, const char **out)
{
    if (n->type != YN_SCALAR)
        YFAIL(MID_E_INVALID, c, n, path, "must be a string, not %s", type_name(n));
    if (strlen(n->str) != n->len) YFAIL(MID_E_INVALID, c, n, path, "contains a NUL character");
    *out = n->str;
    return mid_ok();
}

static mid_result get_str(const yctx *c, const ynode *n, const char *path, char **out)
{
    const char *s = NULL;
    *out = NULL;
    MID_GUARD(scalar_text(c, n, path, &s));
    *out = strdup(s);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

/* A port number 1..65535, written as a number or a string of digits. */
static mid_result get_port(const yctx *c, const ynode *n, const char *path, uint32_t *out)
{
    const char *s = NULL;
    MID_GUARD(scalar_text(c, n, path, &s));
    char q[QUOTE_MAX + 8];
    quote_str(s, q, sizeof q);
    size_t len = strlen(s);
    bool ok = len >= 1 && len <= 5 && s[0] != '0';
    uint32_t v = 0;
    for (size_t i = 0; ok && i < len; i++) {
        ok = s[i] >= '0' && s[i] <= '9';
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (!ok || v < 1 || v > 65535)
        YFAIL(MID_E_INVALID, c, n, path, "\"%s\" is not a port number (1..65535)", q);
    *out = v;
    return mid_ok();
}

/* A required field: present and not null. */
static mid_result required(const yctx *c, const ynode *parent, const ynode *v, const char *path)
{
    if (is_null(v)) {
        const ynode *at = v != NULL ? v : parent;
        YFAIL(MID_E_INVALID, c, at, path, "is required");
    }
    return mid_ok();
}

/* An optional list of strings; absent/null leaves *out NULL. */
static mid_result get_strv(const yctx *c, const ynode *v, const char *path, char ***out, size_t *n)
{
    char p[YPATH_MAX];
    *out = NULL;
    *n = 0;
    if (is_null(v)) return mid_ok();
    MID_GUARD(want_seq(c, v, path, MESH_VALUES_MAX));
    if (v->n == 0) return mid_ok();
    char **a = calloc(v->n, sizeof *a);
    MID_ENSURE_MEM(a);
    for (size_t i = 0; i < v->n; i++) {
        path_index(p, sizeof p, path, i);
        mid_result r = get_str(c, v->kids[i], p, &a[i]);
        if (!mid_is_ok(r)) {
            mesh_strv_free(a, v->n);
            return r;
        }
    }
    *out = a;
    *n = v->n;
    return mid_ok();
}

/* An optional map of string -> string, sorted by key. */
static mid_result get_labels(const yctx *c, const ynode *v, const char *path, mesh_label **out,
                             size_t *n)
{
    char p[YPATH_MAX];
    *out = NULL;
    *n = 0;
    if (is_null(v)) return mid_ok();
    MID_GUARD(want_map_max(c, v, path, MESH_LABELS_MAX));
    size_t pairs = v->n / 2;
    if (pairs == 0) return mid_ok();
    mesh_label *l = calloc(pairs, sizeof *l);
    MID_ENSURE_MEM(l);
    mid_result r = MID_OK_RESULT;
    for (size_t i = 0; i < pairs && mid_is_ok(r); i++) {
        const ynode *k = v->kids[2 * i];
        path_key_as(p, sizeof p, path, k->str, k->len, true);
        r = get_str(c, k, p, &l[i].key);
        if (mid_is_ok(r)) r = get_str(c, v->kids[2 * i + 1], p, &l[i].value);
    }
    if (!mid_is_ok(r)) {
        mesh_labels_free(l, pairs);
        return r;
    }
    mesh_labels_sort(l, pairs);
    *out = l;
    *n = pairs;
    return mid_ok();
}

/* ---- validation messages -> positions --------------------------------------------- */

/* Follows the field path at the start of `msg` ("spec.ports[0].name: ...",
 * segments .ident, [N] and ["key"]) through the tree; returns the deepest
 * node reached (at least `root`). */
static const ynode *resolve_path(const ynode *root, const char *msg)
{
    const ynode *cur = root;
    const char *p = msg;
    bool first = true;
    char key[256];
    for (;;) {
        size_t klen = 0;
        const ynode *next = NULL;
        if ((first && (isalnum((unsigned char)*p) || *p == '_')) || (!first && *p == '.')) {
            if (!first) p++;
            while ((isalnum((unsigned char)*p) || *p == '_') && klen < sizeof key) key[klen++] = *p++;
            next = map_getn(cur, key, klen);
        } else if (p[0] == '[' && p[1] == '"') {
            p += 2;
            while (*p && *p != '"' && klen < sizeof key) {
                if (p[0] == '\\' && p[1] == 'x' && isxdigit((unsigned char)p[2]) &&
                    isxdigit((unsigned char)p[3])) {
                    char hex[3] = {p[2], p[3], 0};
                    key[klen++] = (char)strtol(hex, NULL, 16);
                    p += 4;
                } else {
                    key[klen++] = *p++;
                }
            }
            if (p[0] != '"' || p[1] != ']') return cur;
            p += 2;
            next = map_getn(cur, key, klen);
        } else if (p[0] == '[' && isdigit((unsigned char)p[1])) {
            char *end;
            unsigned long idx = strtoul(p + 1, &end, 10);
            if (*end != ']') return cur;
            p = end + 1;
            if (cur->type == YN_SEQ && idx < cur->n) next = cur->kids[idx];
        } else {
            return cur;
        }
        if (next == NULL) return cur;
        cur = next;
        first = false;
    }
}

/* Re-raises a validation failure with the position of the node it names. */
static mid_result relocate(const yctx *c, const ynode *root, mid_result r)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", mid_errmsg());
    const ynode *at = resolve_path(root, msg);
    return mid_fail(r.err, __FILE__, __LINE__, "%s:%zu:%zu: %s", c->src, at->line, at->col, msg);
}

/* ---- ServiceEntry ------------------------------------------------------------------ */

/* Istio's protocol from a port name: the part before the first '-'. */
static mesh_protocol infer_protocol(const char *name)
{
    static const struct {
        const char *prefix;
        mesh_protocol p;
    } map[] = {{"http", MESH_PROTO_HTTP}, {"http2", MESH_PROTO_HTTP2}, {"grpc", MESH_PROTO_GRPC},
               {"https", MESH_PROTO_HTTPS}, {"tcp", MESH_PROTO_TCP}, {"tls", MESH_PROTO_TLS},
               {"mongo", MESH_PROTO_MONGO}};
    size_t n = strcspn(name, "-");
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strlen(map[i].prefix) == n && strncasecmp(name, map[i].prefix, n) == 0) return map[i].p;
    return MESH_PROTO_TCP;
}

static mid_result load_port(const yctx *c, const ynode *pn, const char *path, mesh_port *pt)
{
    static const char *const keys[] = {"number", "protocol", "name", "targetPort", NULL};
    char p[YPATH_MAX];
    MID_GUARD(want_map(c, pn, path));
    MID_GUARD(check_keys(c, pn, path, keys));
    const ynode *v = map_get(pn, "number");
    path_key(p, sizeof p, path, "number", 6);
    MID_GUARD(required(c, pn, v, p));
    MID_GUARD(get_port(c, v, p, &pt->number));
    v = map_get(pn, "name");
    path_key(p, sizeof p, path, "name", 4);
    MID_GUARD(required(c, pn, v, p));
    MID_GUARD(get_str(c, v, p, &pt->name));
    v = map_get(pn, "targetPort");
    path_key(p, sizeof p, path, "targetPort", 10);
    if (!is_null(v)) MID_GUARD(get_port(c, v, p, &pt->target_port));
    v = map_get(pn, "protocol");
    path_key(p, sizeof p, path, "protocol", 8);
    if (is_null(v)) {
        pt->protocol = infer_protocol(pt->name);
        return mid_ok();
    }
    const char *s = NULL;
    MID_GUARD(scalar_text(c, v, p, &s));
    /* Istio reads the protocol case-insensitively. */
    char upper[32] = "";
    size_t n = strlen(s);
    for (size_t i = 0; i < n && i + 1 < sizeof upper; i++)
        upper[i] = (char)toupper((unsigned char)s[i]);
    upper[n < sizeof upper ? n : sizeof upper - 1] = '\0';
    mid_result r = mesh_protocol_parse(n < sizeof upper ? upper : s, &pt->protocol);
    if (!mid_is_ok(r)) YFAIL(r.err, c, v, p, "%s", mid_errmsg());
    return mid_ok();
}

/* The canonical text of an IP literal, when it is one (else unchanged:
 * validation then names it). */
static mid_result canonical_ip(char **addr)
{
    unsigned char bin[16];
    char canon[INET6_ADDRSTRLEN];
    int family = strchr(*addr, ':') != NULL ? AF_INET6 : AF_INET;
    if (inet_pton(family, *addr, bin) != 1) return mid_ok();
    if (inet_ntop(family, bin, canon, sizeof canon) == NULL || strcmp(canon, *addr) == 0)
        return mid_ok();
    char *c = strdup(canon);
    MID_ENSURE_MEM(c);
    free(*addr);
    *addr = c;
    return mid_ok();
}

static mid_result load_endpoint(const yctx *c, const ynode *en, const char *path,
                                mesh_endpoint *e)
{
    static const char *const keys[] = {"address", "ports", "labels", "serviceAccount", NULL};
    char p[YPATH_MAX];
    MID_GUARD(want_map(c, en, path));
    MID_GUARD(check_keys(c, en, path, keys));
    const ynode *v = map_get(en, "address");
    path_key(p, sizeof p, path, "address", 7);
    MID_GUARD(required(c, en, v, p));
    MID_GUARD(get_str(c, v, p, &e->address));
    MID_GUARD(canonical_ip(&e->address));

    v = map_get(en, "ports");
    path_key(p, sizeof p, path, "ports", 5);
    if (!is_null(v)) {
        MID_GUARD(want_map_max(c, v, p, MESH_PORTS_MAX));
        size_t pairs = v->n / 2;
        if (pairs > 0) {
            e->ports = calloc(pairs, sizeof *e->ports);
            MID_ENSURE_MEM(e->ports);
            e->n_ports = pairs;
        }
        for (size_t i = 0; i < pairs; i++) {
            char kp[YPATH_MAX];
            const ynode *k = v->kids[2 * i];
            path_key_as(kp, sizeof kp, p, k->str, k->len, true);
            MID_GUARD(get_str(c, k, kp, &e->ports[i].name));
            MID_GUARD(get_port(c, v->kids[2 * i + 1], kp, &e->ports[i].number));
        }
    }
    path_key(p, sizeof p, path, "labels", 6);
    MID_GUARD(get_labels(c, map_get(en, "labels"), p, &e->labels, &e->n_labels));
    v = map_get(en, "serviceAccount");
    path_key(p, sizeof p, path, "serviceAccount", 14);
    if (!is_null(v)) {
        char *sa;
        MID_GUARD(get_str(c, v, p, &sa));
        if (strncmp(sa, "spiffe://", 9) == 0)
            e->spiffe_id = sa;
        else
            e->service_account = sa;
    }
    return mid_ok();
}

static mid_result load_service_spec(const yctx *c, const ynode *spec, mesh_service *s)
{
    static const char *const keys[] = {"hosts", "ports", "location", "resolution", "endpoints",
                                       NULL};
    char p[YPATH_MAX];
    MID_GUARD(want_map(c, spec, "spec"));
    MID_GUARD(check_keys(c, spec, "spec", keys));

    const ynode *v = map_get(spec, "hosts");
    MID_GUARD(required(c, spec, v, "spec.hosts"));
    MID_GUARD(want_seq(c, v, "spec.hosts", MESH_HOSTS_MAX));
    MID_GUARD(get_strv(c, v, "spec.hosts", &s->hosts, &s->n_hosts));

    v = map_get(spec, "ports");
    MID_GUARD(required(c, spec, v, "spec.ports"));
    MID_GUARD(want_seq(c, v, "spec.ports", MESH_PORTS_MAX));
    if (v->n > 0) {
        s->ports = calloc(v->n, sizeof *s->ports);
        MID_ENSURE_MEM(s->ports);
        s->n_ports = v->n;
    }
    for (size_t i = 0; i < v->n; i++) {
        path_index(p, sizeof p, "spec.ports", i);
        MID_GUARD(load_port(c, v->kids[i], p, &s->ports[i]));
    }

    s->mesh_internal = 1;
    v = map_get(spec, "location");
    if (!is_null(v)) {
        const char *loc = NULL;
        MID_GUARD(scalar_text(c, v, "spec.location", &loc));
        char q[QUOTE_MAX + 8];
        quote_str(loc, q, sizeof q);
        if (strcmp(loc, "MESH_EXTERNAL") == 0)
            s->mesh_internal = 0;
        else if (strcmp(loc, "MESH_INTERNAL") != 0)
            YFAIL(MID_E_INVALID, c, v, "spec.location",
                  "location %s is not supported (supported: MESH_INTERNAL, MESH_EXTERNAL)", q);
    }

    v = map_get(spec, "resolution");
    if (!is_null(v)) {
        const char *res = NULL;
        MID_GUARD(scalar_text(c, v, "spec.resolution", &res));
        char q[QUOTE_MAX + 8];
        quote_str(res, q, sizeof q);
        if (strcmp(res, "NONE") == 0 || strcmp(res, "DNS") == 0 ||
            strcmp(res, "DNS_ROUND_ROBIN") == 0)
            YFAIL(MID_E_INVALID, c, v, "spec.resolution",
                  "resolution %s is not supported: only STATIC is supported (meshid does not "
                  "resolve names; list the endpoints' IP addresses)",
                  q);
        if (strcmp(res, "STATIC") != 0)
            YFAIL(MID_E_INVALID, c, v, "spec.resolution",
                  "unknown resolution %s: only STATIC is supported", q);
    }

    v = map_get(spec, "endpoints");
    if (!is_null(v)) {
        MID_GUARD(want_seq(c, v, "spec.endpoints", MESH_ENDPOINTS_MAX));
        if (v->n > 0) {
            s->endpoints = calloc(v->n, sizeof *s->endpoints);
            MID_ENSURE_MEM(s->endpoints);
            s->n_endpoints = v->n;
        }
        for (size_t i = 0; i < v->n; i++) {
            path_index(p, sizeof p, "spec.endpoints", i);
            MID_GUARD(load_endpoint(c, v->kids[i], p, &s->endpoints[i]));
        }
    }
    return mid_ok();
}

/* ---- AuthorizationPolicy ------------------------------------------------------------ */

static mid_result load_source(const yctx *c, const ynode *fn, const char *path, mesh_source *s)
{
    static const char *const from_keys[] = {"source", NULL};
    static const char *const keys[] = {"principals", "notPrincipals", "namespaces", NULL};
    char base[YPATH_MAX];
    char p[YPATH_MAX];
    if (is_null(fn)) return mid_ok();
    MID_GUARD(want_map(c, fn, path));
    MID_GUARD(check_keys(c, fn, path, from_keys));
    const ynode *src = map_get(fn, "source");
    if (is_null(src)) return mid_ok();
    path_key(base, sizeof base, path, "source", 6);
    MID_GUARD(want_map(c, src, base));
    MID_GUARD(check_keys(c, src, base, keys));
    path_key(p, sizeof p, base, "principals", 10);
    MID_GUARD(get_strv(c, map_get(src, "principals"), p, &s->principals, &s->n_principals));
    path_key(p, sizeof p, base, "notPrincipals", 13);
    MID_GUARD(get_strv(c, map_get(src, "notPrincipals"), p, &s->not_principals,
                       &s->n_not_principals));
    path_key(p, sizeof p, base, "namespaces", 10);
    MID_GUARD(get_strv(c, map_get(src, "namespaces"), p, &s->namespaces, &s->n_namespaces));
    return mid_ok();
}

static mid_result load_operation(const yctx *c, const ynode *tn, const char *path,
                                 mesh_operation *o)
{
    static const char *const to_keys[] = {"operation", NULL};
    static const char *const keys[] = {"methods", "paths", "ports", "hosts", NULL};
    char base[YPATH_MAX];
    char p[YPATH_MAX];
    if (is_null(tn)) return mid_ok();
    MID_GUARD(want_map(c, tn, path));
    MID_GUARD(check_keys(c, tn, path, to_keys));
    const ynode *op = map_get(tn, "operation");
    if (is_null(op)) return mid_ok();
    path_key(base, sizeof base, path, "operation", 9);
    MID_GUARD(want_map(c, op, base));
    MID_GUARD(check_keys(c, op, base, keys));
    path_key(p, sizeof p, base, "methods", 7);
    MID_GUARD(get_strv(c, map_get(op, "methods"), p, &o->methods, &o->n_methods));
    path_key(p, sizeof p, base, "paths", 5);
    MID_GUARD(get_strv(c, map_get(op, "paths"), p, &o->paths, &o->n_paths));
    path_key(p, sizeof p, base, "hosts", 5);
    MID_GUARD(get_strv(c, map_get(op, "hosts"), p, &o->hosts, &o->n_hosts));
    const ynode *v = map_get(op, "ports");
    path_key(p, sizeof p, base, "ports", 5);
    if (!is_null(v)) {
        MID_GUARD(want_seq(c, v, p, MESH_VALUES_MAX));
        if (v->n > 0) {
            o->ports = calloc(v->n, sizeof *o->ports);
            MID_ENSURE_MEM(o->ports);
            o->n_ports = v->n;
        }
        for (size_t i = 0; i < v->n; i++) {
            char ip[YPATH_MAX];
            path_index(ip, sizeof ip, p, i);
            MID_GUARD(get_port(c, v->kids[i], ip, &o->ports[i]));
        }
    }
    return mid_ok();
}

static mid_result load_rule(const yctx *c, const ynode *rn, const char *path, mesh_rule *rule)
{
    static const char *const keys[] = {"from", "to", NULL};
    char base[YPATH_MAX];
    char p[YPATH_MAX];
    if (is_null(rn)) return mid_ok();
    MID_GUARD(want_map(c, rn, path));
    MID_GUARD(check_keys(c, rn, path, keys));
    const ynode *v = map_get(rn, "from");
    path_key(base, sizeof base, path, "from", 4);
    if (!is_null(v)) {
        MID_GUARD(want_seq(c, v, base, MESH_VALUES_MAX));
        if (v->n > 0) {
            rule->from = calloc(v->n, sizeof *rule->from);
            MID_ENSURE_MEM(rule->from);
            rule->n_from = v->n;
        }
        for (size_t i = 0; i < v->n; i++) {
            path_index(p, sizeof p, base, i);
            MID_GUARD(load_source(c, v->kids[i], p, &rule->from[i]));
        }
    }
    v = map_get(rn, "to");
    path_key(base, sizeof base, path, "to", 2);
    if (!is_null(v)) {
        MID_GUARD(want_seq(c, v, base, MESH_VALUES_MAX));
        if (v->n > 0) {
            rule->to = calloc(v->n, sizeof *rule->to);
            MID_ENSURE_MEM(rule->to);
            rule->n_to = v->n;
        }
        for (size_t i = 0; i < v->n; i++) {
            path_index(p, sizeof p, base, i);
            MID_GUARD(load_operation(c, v->kids[i], p, &rule->to[i]));
        }
    }
    return mid_ok();
}

static mid_result load_policy_spec(const yctx *c, const ynode *spec, mesh_policy *pol)
{
    static const char *const keys[] = {"selector", "action", "rules", NULL};
    static const char *const sel_keys[] = {"matchLabels", NULL};
    char p[YPATH_MAX];
    pol->action = MESH_ACTION_ALLOW;
    if (is_null(spec)) return mid_ok();
    MID_GUARD(want_map(c, spec, "spec"));
    /* The action first: CUSTOM comes with `provider`, and naming the action
     * says more than naming the provider field. */
    const ynode *v = map_get(spec, "action");
    if (!is_null(v)) {
        const char *a = NULL;
        MID_GUARD(scalar_text(c, v, "spec.action", &a));
        char q[QUOTE_MAX + 8];
        quote_str(a, q, sizeof q);
        if (strcmp(a, "DENY") == 0)
            pol->action = MESH_ACTION_DENY;
        else if (strcmp(a, "ALLOW") != 0)
            YFAIL(MID_E_INVALID, c, v, "spec.action",
                  "action %s is not supported (supported: ALLOW, DENY)", q);
    }

    MID_GUARD(check_keys(c, spec, "spec", keys));

    v = map_get(spec, "selector");
    if (!is_null(v)) {
        MID_GUARD(want_map(c, v, "spec.selector"));
        MID_GUARD(check_keys(c, v, "spec.selector", sel_keys));
        MID_GUARD(get_labels(c, map_get(v, "matchLabels"), "spec.selector.matchLabels",
                             &pol->selector, &pol->n_selector));
    }

    v = map_get(spec, "rules");
    if (!is_null(v)) {
        MID_GUARD(want_seq(c, v, "spec.rules", MESH_RULES_MAX));
        if (v->n > 0) {
            pol->rules = calloc(v->n, sizeof *pol->rules);
            MID_ENSURE_MEM(pol->rules);
            pol->n_rules = v->n;
        }
        for (size_t i = 0; i < v->n; i++) {
            path_index(p, sizeof p, "spec.rules", i);
            MID_GUARD(load_rule(c, v->kids[i], p, &pol->rules[i]));
        }
    }
    return mid_ok();
}

/* ---- documents --------------------------------------------------------------------- */

typedef struct {
    mesh_doc *v;
    size_t n, cap;
} docvec;

static void docvec_free(docvec *d)
{
    mesh_doc_list_free(d->v, d->n);
    d->v = NULL;
    d->n = d->cap = 0;
}

static mid_result docvec_push(docvec *d, mesh_doc doc)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        mesh_doc *v = realloc(d->v, cap * sizeof *v);
        MID_ENSURE_MEM(v);
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = doc;
    return mid_ok();
}

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i] != NULL; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

/* metadata.name / metadata.namespace (labels and annotations are accepted
 * and ignored). */
static mid_result load_metadata(const yctx *c, const ynode *root, char **ns, char **name)
{
    static const char *const keys[] = {"name", "namespace", "labels", "annotations", NULL};
    const ynode *md = map_get(root, "metadata");
    MID_GUARD(required(c, root, md, "metadata"));
    MID_GUARD(want_map(c, md, "metadata"));
    MID_GUARD(check_keys(c, md, "metadata", keys));
    const ynode *v = map_get(md, "name");
    MID_GUARD(required(c, md, v, "metadata.name"));
    MID_GUARD(get_str(c, v, "metadata.name", name));
    v = map_get(md, "namespace");
    if (is_null(v)) {
        *ns = strdup(MESH_DEFAULT_NAMESPACE);
        MID_ENSURE_MEM(*ns);
    } else {
        MID_GUARD(get_str(c, v, "metadata.namespace", ns));
    }
    v = map_get(md, "labels");
    if (!is_null(v)) MID_GUARD(want_map(c, v, "metadata.labels"));
    v = map_get(md, "annotations");
    if (!is_null(v)) MID_GUARD(want_map(c, v, "metadata.annotations"));
    return mid_ok();
}

/* The record of a document whose kind and apiVersion were checked. */
static mid_result build_doc(const yctx *c, const ynode *root, bool is_service, size_t doc_line,
                            docvec *out)
{
    mid_result r = MID_OK_RESULT;
    mesh_doc doc = {.kind = is_service ? MESH_KIND_SERVICE : MESH_KIND_POLICY};
    char src[FILE_PATH_MAX + 32];
    snprintf(src, sizeof src, "%s:%zu", c->src, doc_line);
    doc.source = strdup(src);
    MID_CHECK_MEM(r, doc.source);
    const ynode *spec = map_get(root, "spec");
    if (is_service) {
        mesh_service *s = calloc(1, sizeof *s);
        MID_CHECK_MEM(r, s);
        doc.u.service = s;
        MID_TRY(r, load_metadata(c, root, &s->namespace_, &s->name));
        MID_TRY(r, required(c, root, spec, "spec"));
        MID_TRY(r, load_service_spec(c, spec, s));
        r = mesh_service_validate(s);
    } else {
        mesh_policy *pol = calloc(1, sizeof *pol);
        MID_CHECK_MEM(r, pol);
        doc.u.policy = pol;
        MID_TRY(r, load_metadata(c, root, &pol->namespace_, &pol->name));
        MID_TRY(r, load_policy_spec(c, spec, pol));
        r = mesh_policy_validate(pol);
    }
    if (!mid_is_ok(r)) MID_TRY(r, relocate(c, root, r));
    MID_TRY(r, docvec_push(out, doc));
    doc.source = NULL;
    doc.u.service = NULL;
    doc.u.policy = NULL;
out:
    free(doc.source);
    if (doc.kind == MESH_KIND_SERVICE)
        mesh_service_free(doc.u.service);
    else
        mesh_policy_free(doc.u.policy);
    return r;
}

static mid_result convert_doc(const yctx *c, const ynode *root, size_t doc_line, docvec *out)
{
    static const char *const top_keys[] = {"apiVersion", "kind", "metadata", "spec", NULL};
    static const char *const se_versions[] = {"networking.istio.io/v1",
                                              "networking.istio.io/v1beta1",
                                              "networking.istio.io/v1alpha3", NULL};
    static const char *const ap_versions[] = {"security.istio.io/v1", "security.istio.io/v1beta1",
                                              NULL};
    char q[QUOTE_MAX + 8];
    if (root->type != YN_MAP)
        YFAIL(MID_E_INVALID, c, root, "",
              "must be a mapping (an Istio resource with apiVersion, kind, metadata, spec), not %s",
              type_name(root));
    MID_GUARD(check_keys(c, root, "", top_keys));

    const ynode *kind_n = map_get(root, "kind");
    const char *kind = NULL;
    MID_GUARD(required(c, root, kind_n, "kind"));
    MID_GUARD(scalar_text(c, kind_n, "kind", &kind));
    quote_str(kind, q, sizeof q);
    bool is_service = strcmp(kind, "ServiceEntry") == 0;
    if (!is_service && strcmp(kind, "AuthorizationPolicy") != 0)
        YFAIL(MID_E_INVALID, c, kind_n, "kind",
              "kind %s is not supported (supported: ServiceEntry, AuthorizationPolicy)", q);

    const ynode *api_n = map_get(root, "apiVersion");
    const char *api = NULL;
    MID_GUARD(required(c, root, api_n, "apiVersion"));
    MID_GUARD(scalar_text(c, api_n, "apiVersion", &api));
    quote_str(api, q, sizeof q);
    if (is_service && !in_list(api, se_versions))
        YFAIL(MID_E_INVALID, c, api_n, "apiVersion",
              "%s is not a supported apiVersion for ServiceEntry (supported: "
              "networking.istio.io/v1, networking.istio.io/v1beta1, "
              "networking.istio.io/v1alpha3)",
              q);
    if (!is_service && !in_list(api, ap_versions))
        YFAIL(MID_E_INVALID, c, api_n, "apiVersion",
              "%s is not a supported apiVersion for AuthorizationPolicy (supported: "
              "security.istio.io/v1, security.istio.io/v1beta1)",
              q);

    return build_doc(c, root, is_service, doc_line, out);
}

/* ---- duplicates ------------------------------------------------------------------- */

static const char *doc_ns(const mesh_doc *d)
{
    return d->kind == MESH_KIND_SERVICE ? d->u.service->namespace_ : d->u.policy->namespace_;
}

static const char *doc_name(const mesh_doc *d)
{
    return d->kind == MESH_KIND_SERVICE ? d->u.service->name : d->u.policy->name;
}

typedef struct {
    const mesh_doc *d;
    size_t idx;
} doc_ref;

static int doc_ref_cmp(const void *x, const void *y)
{
    const doc_ref *a = x;
    const doc_ref *b = y;
    if (a->d->kind != b->d->kind) return a->d->kind < b->d->kind ? -1 : 1;
    int c = strcmp(doc_ns(a->d), doc_ns(b->d));
    if (c == 0) c = strcmp(doc_name(a->d), doc_name(b->d));
    if (c != 0) return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Two documents of one kind with one namespace/name: MID_E_INVALID naming
 * both sources. */
static mid_result check_duplicates(const mesh_doc *docs, size_t n)
{
    if (n < 2) return mid_ok();
    doc_ref *refs = malloc(n * sizeof *refs);
    MID_ENSURE_MEM(refs);
    for (size_t i = 0; i < n; i++) refs[i] = (doc_ref){&docs[i], i};
    qsort(refs, n, sizeof *refs, doc_ref_cmp);
    const mesh_doc *first = NULL, *again = NULL;
    for (size_t i = 1; i < n && again == NULL; i++) {
        if (refs[i - 1].d->kind == refs[i].d->kind &&
            strcmp(doc_ns(refs[i - 1].d), doc_ns(refs[i].d)) == 0 &&
            strcmp(doc_name(refs[i - 1].d), doc_name(refs[i].d)) == 0) {
            first = refs[i - 1].d;
            again = refs[i].d;
        }
    }
    free(refs);
    if (again == NULL) return mid_ok();
    MID_BAIL(MID_E_INVALID, "%s:1: metadata.name: %s %s/%s is defined twice (first at %s)",
             again->source ? again->source : "?",
             again->kind == MESH_KIND_SERVICE ? "ServiceEntry" : "AuthorizationPolicy",
             doc_ns(again), doc_name(again), first->source ? first->source : "?");
}

/* ---- the event loop -------------------------------------------------------------- */

static mid_result syntax_error(const yctx *c, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR) MID_BAIL(MID_E_NOMEM, "%s: out of memory", c->src);
    char what[512];
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->context != NULL)
        snprintf(what, sizeof what, "%s %s (line %zu)", problem, p->context,
                 (size_t)p->context_mark.line + 1);
    else
        snprintf(what, sizeof what, "%s", problem);
    size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
    if (p->error == YAML_READER_ERROR) line = col = 1;
    return mid_fail(MID_E_INVALID, __FILE__, __LINE__, "%s:%zu:%zu: invalid YAML: %s", c->src,
                    line, col, what);
}

/* Handles one event; *done at the end of the stream. */
static mid_result on_event(builder *b, const yaml_event_t *ev, docvec *out,
                           bool *done)
{
    ynode *n = NULL;
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_NO_EVENT:
        return mid_ok();
    case YAML_STREAM_END_EVENT:
        *done = true;
        return mid_ok();
    case YAML_DOCUMENT_START_EVENT:
        b->root = NULL;
        b->depth = 0;
        b->nodes = 0;
        return mid_ok();
    case YAML_DOCUMENT_END_EVENT: {
        ynode *root = b->root;
        b->root = NULL;
        mid_result r = mid_ok();
        /* The document's line is its first node's (after any comments). */
        if (!is_null(root)) r = convert_doc(b->c, root, root->line, out);
        ynode_free(root);
        return r;
    }
    case YAML_ALIAS_EVENT: {
        char q[QUOTE_MAX + 8];
        char what[256];
        quote_str((const char *)ev->data.alias.anchor, q, sizeof q);
        snprintf(what, sizeof what,
                 "YAML alias *%s is not supported (meshid does not expand anchors and aliases; "
                 "write the value out)",
                 q);
        return builder_fail(b, __LINE__, MID_E_INVALID, &ev->start_mark, what);
    }
    case YAML_SCALAR_EVENT:
        MID_GUARD(builder_new(b, YN_SCALAR, &ev->start_mark, ev->data.scalar.anchor,
                              ev->data.scalar.tag, &n));
        n->len = ev->data.scalar.length;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->str = malloc(n->len + 1);
        if (n->str == NULL) {
            ynode_free(n);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
        if (n->len) memcpy(n->str, ev->data.scalar.value, n->len);
        n->str[n->len] = '\0';
        return builder_attach(b, n);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
        MID_GUARD(builder_new(b, seq ? YN_SEQ : YN_MAP, &ev->start_mark,
                              seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor,
                              seq ? ev->data.sequence_start.tag : ev->data.mapping_start.tag, &n));
        MID_GUARD(builder_attach(b, n));
        b->stack[b->depth++] = n;
        return mid_ok();
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        MID_ENSURE(b->depth > 0, MID_E_INTERNAL, "yaml: unbalanced end event");
        if (ev->type == YAML_MAPPING_END_EVENT)
            MID_GUARD(check_duplicate_keys(b, b->stack[b->depth - 1]));
        b->depth--;
        return mid_ok();
    }
    return mid_ok();
}

MID_RESULT mesh_yaml_parse(const char *text, size_t len, const char *source_name, mesh_doc **docs,
                           size_t *n)
{
    mid_result r = MID_OK_RESULT;
    *docs = NULL;
    *n = 0;
    yctx c = {source_name != NULL ? source_name : "<input>"};
    builder b = {.c = &c};
    docvec out = {0};
    yaml_parser_t parser;
    bool parser_ready = false;
    if (len > MESH_DOC_BYTES_MAX)
        YFAIL_AT(MID_E_TOO_LARGE, &c, 1, 1, "", "%zu bytes is over the limit of %u bytes", len,
                 MESH_DOC_BYTES_MAX);
    MID_CHECK(r, text != NULL || len == 0, MID_E_INVALID, "%s: no text", c.src);
    MID_CHECK(r, yaml_parser_initialize(&parser) == 1, MID_E_NOMEM, "out of memory");
    parser_ready = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""), len);
    for (bool done = false; !done;) {
        yaml_event_t ev;
        if (yaml_parser_parse(&parser, &ev) != 1) MID_TRY(r, syntax_error(&c, &parser));
        r = on_event(&b, &ev, &out, &done);
        yaml_event_delete(&ev);
        if (!mid_is_ok(r)) goto out;
    }
    MID_TRY(r, check_duplicates(out.v, out.n));
    *docs = out.v;
    *n = out.n;
    out.v = NULL;
    out.n = 0;
out:
    ynode_free(b.root);
    if (parser_ready) yaml_parser_delete(&parser);
    docvec_free(&out);
    return r;
}

/* ---- files and directories ---------------------------------------------------------- */

static mid_result load_file(const char *path, docvec *all)
{
    char *text = NULL;
    size_t len = 0;
    MID_GUARD(fs_read_file(path, MESH_DOC_BYTES_MAX, &text, &len));
    mesh_doc *d = NULL;
    size_t k = 0;
    mid_result r = mesh_yaml_parse(text, len, path, &d, &k);
    free(text);
    MID_GUARD(r);
    for (size_t i = 0; i < k; i++) {
        r = docvec_push(all, d[i]);
        if (!mid_is_ok(r)) {
            mesh_doc_list_free(d + i, k - i);
            free(d);
            return r;
        }
    }
    free(d);
    return mid_ok();
}

static bool yaml_name(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.') return false;
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) ||
           (n > 4 && strcmp(name + n - 4, ".yml") == 0);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names of the regular *.yaml / *.yml files of `dir`. */
static mid_result list_dir(const char *dir, char ***names, size_t *n)
{
    mid_result r = MID_OK_RESULT;
    *names = NULL;
    *n = 0;
    char **v = NULL;
    size_t cnt = 0;
    DIR *d = opendir(dir);
    if (d == NULL) MID_BAIL(MID_E_IO, "%s: %s", dir, strerror(errno));
    v = calloc(YAML_FILES_MAX, sizeof *v);
    MID_CHECK_MEM(r, v);
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            MID_CHECK(r, errno == 0, MID_E_IO, "%s: %s", dir, strerror(errno));
            break;
        }
        if (!yaml_name(de->d_name)) continue;
        char full[FILE_PATH_MAX];
        MID_TRY(r, fs_join(full, sizeof full, dir, de->d_name));
        struct stat st;
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        MID_CHECK(r, cnt < YAML_FILES_MAX, MID_E_TOO_LARGE,
                  "%s: more than %d YAML files in one directory", dir, YAML_FILES_MAX);
        v[cnt] = strdup(de->d_name);
        MID_CHECK_MEM(r, v[cnt]);
        cnt++;
    }
    qsort(v, cnt, sizeof *v, name_cmp);
    *names = v;
    *n = cnt;
    v = NULL;
out:
    if (v != NULL)
        for (size_t i = 0; i < cnt; i++) free(v[i]);
    free(v);
    closedir(d);
    return r;
}

MID_RESULT mesh_yaml_load_path(const char *path, mesh_doc **docs, size_t *n)
{
    mid_result r = MID_OK_RESULT;
    *docs = NULL;
    *n = 0;
    docvec all = {0};
    char **names = NULL;
    size_t n_names = 0;
    MID_ENSURE(path != NULL, MID_E_INVALID, "no path");
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) MID_BAIL(MID_E_NOT_FOUND, "%s: no such file or directory", path);
        MID_BAIL(MID_E_IO, "%s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        MID_TRY(r, list_dir(path, &names, &n_names));
        for (size_t i = 0; i < n_names; i++) {
            char full[FILE_PATH_MAX];
            MID_TRY(r, fs_join(full, sizeof full, path, names[i]));
            MID_TRY(r, load_file(full, &all));
        }
    } else {
        MID_TRY(r, load_file(path, &all));
    }
    MID_TRY(r, check_duplicates(all.v, all.n));
    *docs = all.v;
    *n = all.n;
    all.v = NULL;
    all.n = 0;
out:
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    docvec_free(&all);
    return r;
}
