/* xDS snapshots: sealed, reference-counted resource sets and per-proxy
 * snapshots made of shared sets plus own resources. See xds_snapshot.h.
 *
 * A resource's version is computed when it is added. Sealing a set sorts it
 * and computes its digest: a SHA-256 over its count and every (name,
 * version) in name order, each field preceded by its length, so that no two
 * different lists hash alike by concatenation. A snapshot's type version is
 * a SHA-256 over the type's resource count and the digests of its non-empty
 * sets (shared parts in order, then the own resources), so sealing one of a
 * thousand per-proxy snapshots hashes a few digests, not every resource of
 * the shared parts again. Names are unique within a set (checked when
 * added); a snapshot checks only its own resources against the parts, and
 * the parts against each other when there is more than one. */
#include "meshcore/xds_snapshot.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "lib/hash.h"

#define NAME_MAX_LEN 4096        /* bytes of one resource name */
#define SET_MAX_RESOURCES (1u << 20)
#define PARTS_MAX 64             /* shared sets per type in one snapshot */
#define PRINT_MAX 200            /* bytes of a name quoted in an error message */

static const char *const type_urls[XDS_TYPE_COUNT] = {
    XDS_TYPE_URL_CDS, XDS_TYPE_URL_EDS, XDS_TYPE_URL_LDS, XDS_TYPE_URL_RDS};
static const char *const type_shorts[XDS_TYPE_COUNT] = {"cds", "eds", "lds", "rds"};

const char *xds_type_url(xds_type t)
{
    return (unsigned)t < XDS_TYPE_COUNT ? type_urls[t] : "";
}

const char *xds_type_short(xds_type t)
{
    return (unsigned)t < XDS_TYPE_COUNT ? type_shorts[t] : "?";
}

/* Copies at most PRINT_MAX bytes of s with non-printable bytes replaced. */
static const char *printable(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap && i < PRINT_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    buf[i] = '\0';
    return buf;
}

MID_RESULT xds_type_from_url(const char *type_url, xds_type *out)
{
    MID_ENSURE(type_url != NULL, MID_E_INVALID, "missing type URL");
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        if (strcmp(type_url, type_urls[t]) == 0) {
            *out = (xds_type)t;
            return mid_ok();
        }
    }
    char pb[PRINT_MAX + 1];
    MID_BAIL(MID_E_INVALID, "unsupported type URL \"%s\"", printable(type_url, pb, sizeof pb));
}

MID_RESULT xds_type_from_short(const char *s, xds_type *out)
{
    MID_ENSURE(s != NULL, MID_E_INVALID, "missing xDS type");
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        if (strcasecmp(s, type_shorts[t]) == 0) {
            *out = (xds_type)t;
            return mid_ok();
        }
    }
    char pb[PRINT_MAX + 1];
    MID_BAIL(MID_E_INVALID, "unknown xDS type \"%s\" (want cds, eds, lds or rds)",
             printable(s, pb, sizeof pb));
}

/* ---- resource sets ---------------------------------------------------------- */

#define DIGEST_LEN 32 /* SHA-256 */

struct xds_rset {
    atomic_size_t refs;
    bool sealed;
    bool digest_ok;                /* sealed: `digest` is valid */
    uint8_t digest[DIGEST_LEN];    /* sealed: over count and every (name, version) */
    xds_resource *res; /* each res[i] owns one block: version, name, bytes */
    size_t n, cap;
    /* Unsealed only: open-addressing index of names (slot = index + 1). */
    uint32_t *slots;
    size_t nslots;
};

/* Slot holding `name`, or the empty slot where it would go. */
static size_t slot_of(const xds_rset *r, const char *name)
{
    size_t mask = r->nslots - 1;
    size_t i = (size_t)hash_str(name) & mask;
    while (r->slots[i] && strcmp(r->res[r->slots[i] - 1].name, name) != 0) i = (i + 1) & mask;
    return i;
}

static MID_RESULT index_grow(xds_rset *r)
{
    size_t nslots = r->nslots ? r->nslots * 2 : 64;
    uint32_t *old = r->slots;
    size_t oldn = r->nslots;
    r->slots = calloc(nslots, sizeof *r->slots);
    if (!r->slots) {
        r->slots = old;
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    r->nslots = nslots;
    for (size_t i = 0; i < oldn; i++) {
        if (old[i]) r->slots[slot_of(r, r->res[old[i] - 1].name)] = old[i];
    }
    free(old);
    return mid_ok();
}

MID_RESULT xds_rset_new(xds_rset **out)
{
    xds_rset *r = calloc(1, sizeof *r);
    MID_ENSURE_MEM(r);
    atomic_init(&r->refs, 1);
    *out = r;
    return mid_ok();
}

/* The first XDS_VERSION_LEN hex chars of SHA-256(bytes) into ver (NUL-terminated). */
static MID_RESULT resource_version(const uint8_t *bytes, size_t len, char *ver)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const uint8_t empty[1] = {0};
    MID_GUARD_OSSL(EVP_Digest(len ? bytes : empty, len, md, &mdlen, EVP_sha256(), NULL),
                   MID_E_CRYPTO, "sha256");
    MID_ENSURE(mdlen * 2 >= XDS_VERSION_LEN, MID_E_INTERNAL, "short digest");
    for (size_t i = 0; i < XDS_VERSION_LEN / 2; i++) {
        ver[2 * i] = hex[md[i] >> 4];
        ver[2 * i + 1] = hex[md[i] & 15];
    }
    ver[XDS_VERSION_LEN] = '\0';
    return mid_ok();
}

MID_RESULT xds_rset_add(xds_rset *r, const char *name, const uint8_t *bytes, size_t len)
{
    MID_ENSURE(!r->sealed, MID_E_STATE, "resource set is sealed");
    MID_ENSURE(name != NULL && name[0], MID_E_INVALID, "empty resource name");
    MID_ENSURE(bytes != NULL || len == 0, MID_E_INVALID, "missing resource bytes");
    size_t nlen = strnlen(name, NAME_MAX_LEN + 1);
    char pb[PRINT_MAX + 1];
    MID_ENSURE(nlen <= NAME_MAX_LEN, MID_E_TOO_LARGE, "resource name over %d bytes", NAME_MAX_LEN);
    MID_ENSURE(len <= XDS_RESOURCE_MAX, MID_E_TOO_LARGE, "resource \"%s\" is %zu bytes (max %u)",
               printable(name, pb, sizeof pb), len, XDS_RESOURCE_MAX);
    MID_ENSURE(r->n < SET_MAX_RESOURCES, MID_E_TOO_LARGE, "more than %u resources in one set",
               SET_MAX_RESOURCES);
    if ((r->n + 1) * 2 > r->nslots) MID_GUARD(index_grow(r));
    size_t slot = slot_of(r, name);
    MID_ENSURE(r->slots[slot] == 0, MID_E_EXISTS, "duplicate resource name \"%s\"",
               printable(name, pb, sizeof pb));
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        xds_resource *res = realloc(r->res, cap * sizeof *res);
        MID_ENSURE_MEM(res);
        r->res = res;
        r->cap = cap;
    }
    /* One block: version (17) | name (nlen + 1) | bytes (len). */
    char *blk = malloc(XDS_VERSION_LEN + 1 + nlen + 1 + len);
    MID_ENSURE_MEM(blk);
    mid_result vr = resource_version(bytes, len, blk);
    if (!mid_is_ok(vr)) {
        free(blk);
        return vr;
    }
    char *nm = blk + XDS_VERSION_LEN + 1;
    memcpy(nm, name, nlen + 1);
    uint8_t *b = (uint8_t *)(nm + nlen + 1);
    if (len) memcpy(b, bytes, len);
    r->res[r->n] = (xds_resource){.name = nm, .version = blk, .bytes = b, .len = len};
    r->n++;
    r->slots[slot] = (uint32_t)r->n;
    return mid_ok();
}

static int res_cmp(const void *a, const void *b)
{
    return strcmp(((const xds_resource *)a)->name, ((const xds_resource *)b)->name);
}

static MID_RESULT hash_u64(EVP_MD_CTX *c, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (56 - 8 * i));
    MID_GUARD_OSSL(EVP_DigestUpdate(c, b, sizeof b), MID_E_CRYPTO, "sha256 update");
    return mid_ok();
}

/* SHA-256 over the sorted set's count and every (name, version). */
static MID_RESULT set_digest(const xds_rset *r, EVP_MD_CTX *c, uint8_t out[DIGEST_LEN])
{
    unsigned int mdlen = 0;
    MID_GUARD_OSSL(EVP_DigestInit_ex(c, EVP_sha256(), NULL), MID_E_CRYPTO, "sha256 init");
    MID_GUARD(hash_u64(c, r->n));
    for (size_t j = 0; j < r->n; j++) {
        size_t nl = strlen(r->res[j].name);
        MID_GUARD(hash_u64(c, nl));
        MID_GUARD_OSSL(EVP_DigestUpdate(c, r->res[j].name, nl), MID_E_CRYPTO, "sha256 update");
        MID_GUARD(hash_u64(c, XDS_VERSION_LEN));
        MID_GUARD_OSSL(EVP_DigestUpdate(c, r->res[j].version, XDS_VERSION_LEN), MID_E_CRYPTO,
                       "sha256 update");
    }
    MID_GUARD_OSSL(EVP_DigestFinal_ex(c, out, &mdlen), MID_E_CRYPTO, "sha256 final");
    MID_ENSURE(mdlen == DIGEST_LEN, MID_E_INTERNAL, "unexpected digest length");
    return mid_ok();
}

void xds_rset_seal(xds_rset *r)
{
    if (r->sealed) return;
    if (r->n > 1) qsort(r->res, r->n, sizeof *r->res, res_cmp);
    free(r->slots);
    r->slots = NULL;
    r->nslots = 0;
    r->sealed = true;
    /* A failure (only out of memory in libcrypto) leaves digest_ok false:
     * xds_snapshot_seal then refuses the set. */
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    r->digest_ok = c && mid_is_ok(set_digest(r, c, r->digest));
    EVP_MD_CTX_free(c);
}

xds_rset *xds_rset_ref(xds_rset *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void xds_rset_unref(xds_rset *r)
{
    if (!r) return;
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < r->n; i++) free((char *)r->res[i].version); /* the block's start */
    free(r->res);
    free(r->slots);
    free(r);
}

size_t xds_rset_count(const xds_rset *r)
{
    return r->n;
}

const xds_resource *xds_rset_at(const xds_rset *r, size_t i)
{
    return i < r->n ? &r->res[i] : NULL;
}

static int key_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const xds_resource *)elem)->name);
}

const xds_resource *xds_rset_find(const xds_rset *r, const char *name)
{
    if (!name || r->n == 0) return NULL;
    if (!r->sealed) {
        uint32_t s = r->slots[slot_of(r, name)];
        return s ? &r->res[s - 1] : NULL;
    }
    return bsearch(name, r->res, r->n, sizeof *r->res, key_cmp);
}

/* ---- snapshots --------------------------------------------------------------- */

typedef struct {
    xds_rset *parts[PARTS_MAX + 1]; /* shared sets, then the own set last once sealed */
    size_t nparts;                  /* shared sets only */
    size_t count;                   /* all resources (sealed) */
    char version[XDS_VERSION_LEN + 1];
} snap_type;

struct xds_snapshot {
    atomic_size_t refs;
    bool sealed;
    xds_rset *own[XDS_TYPE_COUNT];
    snap_type types[XDS_TYPE_COUNT];
};

MID_RESULT xds_snapshot_new(xds_snapshot **out)
{
    xds_snapshot *s = calloc(1, sizeof *s);
    MID_ENSURE_MEM(s);
    atomic_init(&s->refs, 1);
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        mid_result r = xds_rset_new(&s->own[t]);
        if (!mid_is_ok(r)) {
            xds_snapshot_unref(s);
            return r;
        }
    }
    *out = s;
    return mid_ok();
}

MID_RESULT xds_snapshot_add(xds_snapshot *s, xds_type t, const char *name, const uint8_t *bytes,
                            size_t len)
{
    MID_ENSURE((unsigned)t < XDS_TYPE_COUNT, MID_E_INVALID, "bad xDS type %d", (int)t);
    MID_ENSURE(!s->sealed, MID_E_STATE, "snapshot is sealed");
    return xds_rset_add(s->own[t], name, bytes, len);
}

MID_RESULT xds_snapshot_add_set(xds_snapshot *s, xds_type t, xds_rset *set)
{
    MID_ENSURE((unsigned)t < XDS_TYPE_COUNT, MID_E_INVALID, "bad xDS type %d", (int)t);
    MID_ENSURE(!s->sealed, MID_E_STATE, "snapshot is sealed");
    MID_ENSURE(set != NULL && set->sealed, MID_E_STATE, "resource set is not sealed");
    snap_type *st = &s->types[t];
    MID_ENSURE(st->nparts < PARTS_MAX, MID_E_TOO_LARGE, "more than %d shared sets for %s",
               PARTS_MAX, xds_type_short(t));
    st->parts[st->nparts++] = xds_rset_ref(set);
    return mid_ok();
}

static MID_RESULT dup_error(xds_type t, const char *name)
{
    char pb[PRINT_MAX + 1];
    MID_BAIL(MID_E_EXISTS, "%s resource \"%s\" occurs twice in one snapshot", xds_type_short(t),
             printable(name, pb, sizeof pb));
}

/* Two sorted, duplicate-free sets: MID_E_EXISTS for a name in both. Looks
 * the smaller one up in the larger one when it is much smaller, merges
 * otherwise. */
static MID_RESULT check_pair(const xds_rset *x, const xds_rset *y, xds_type t)
{
    if (x->n > y->n) {
        const xds_rset *tmp = x;
        x = y;
        y = tmp;
    }
    if (x->n == 0) return mid_ok();
    /* Disjoint name ranges: nothing in common. */
    if (strcmp(x->res[x->n - 1].name, y->res[0].name) < 0 ||
        strcmp(y->res[y->n - 1].name, x->res[0].name) < 0)
        return mid_ok();
    if (x->n * 16 <= y->n) {
        for (size_t i = 0; i < x->n; i++)
            if (bsearch(x->res[i].name, y->res, y->n, sizeof *y->res, key_cmp))
                return dup_error(t, x->res[i].name);
        return mid_ok();
    }
    size_t i = 0, j = 0;
    while (i < x->n && j < y->n) {
        int c = strcmp(x->res[i].name, y->res[j].name);
        if (c == 0) return dup_error(t, x->res[i].name);
        if (c < 0) i++;
        else j++;
    }
    return mid_ok();
}

static int set_first_cmp(const void *a, const void *b)
{
    const xds_rset *x = *(const xds_rset *const *)a, *y = *(const xds_rset *const *)b;
    return strcmp(x->res[0].name, y->res[0].name);
}

/* Each set is sorted and duplicate-free, so only names in two different
 * sets can collide: the own set against every part, then (more than one
 * part) the parts against each other, by their name ranges and, where
 * ranges overlap, pairwise. */
static MID_RESULT check_duplicates(const snap_type *st, xds_type t)
{
    const xds_rset *own = st->parts[st->nparts];
    for (size_t i = 0; i < st->nparts; i++) MID_GUARD(check_pair(own, st->parts[i], t));
    if (st->nparts < 2) return mid_ok();
    const xds_rset *p[PARTS_MAX];
    size_t k = 0;
    for (size_t i = 0; i < st->nparts; i++)
        if (st->parts[i]->n) p[k++] = st->parts[i];
    qsort(p, k, sizeof *p, set_first_cmp);
    for (size_t i = 0; i < k; i++) {
        /* p[i+1..] start at or after p[i]'s first name: only those that
         * start at or before its last name can share one with it. */
        for (size_t j = i + 1; j < k; j++) {
            if (strcmp(p[j]->res[0].name, p[i]->res[p[i]->n - 1].name) > 0) break;
            MID_GUARD(check_pair(p[i], p[j], t));
        }
    }
    return mid_ok();
}

/* SHA-256 over the type's count and the digests of its non-empty sets in
 * snapshot order; the first XDS_VERSION_LEN hex chars into out. */
static MID_RESULT type_version(const snap_type *st, EVP_MD_CTX *c, char *out)
{
    static const char hex[] = "0123456789abcdef";
    MID_GUARD_OSSL(EVP_DigestInit_ex(c, EVP_sha256(), NULL), MID_E_CRYPTO, "sha256 init");
    MID_GUARD(hash_u64(c, st->count));
    for (size_t i = 0; i <= st->nparts; i++) {
        const xds_rset *p = st->parts[i];
        if (!p->n) continue;
        MID_ENSURE(p->digest_ok, MID_E_CRYPTO, "resource set without a digest");
        MID_GUARD_OSSL(EVP_DigestUpdate(c, p->digest, DIGEST_LEN), MID_E_CRYPTO, "sha256 update");
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    MID_GUARD_OSSL(EVP_DigestFinal_ex(c, md, &mdlen), MID_E_CRYPTO, "sha256 final");
    for (size_t i = 0; i < XDS_VERSION_LEN / 2; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[XDS_VERSION_LEN] = '\0';
    return mid_ok();
}

MID_RESULT xds_snapshot_seal(xds_snapshot *s)
{
    MID_ENSURE(!s->sealed, MID_E_STATE, "snapshot is sealed");
    mid_result r = MID_OK_RESULT;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    MID_ENSURE_MEM(c);
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        snap_type *st = &s->types[t];
        xds_rset_seal(s->own[t]);
        /* The own set becomes the last part; parts[nparts] is its slot. */
        st->parts[st->nparts] = s->own[t];
        st->count = 0;
        for (size_t i = 0; i <= st->nparts; i++) st->count += st->parts[i]->n;
        MID_TRY(r, check_duplicates(st, (xds_type)t));
        MID_TRY(r, type_version(st, c, st->version));
    }
    s->sealed = true;
out:
    EVP_MD_CTX_free(c);
    return r;
}

xds_snapshot *xds_snapshot_ref(xds_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void xds_snapshot_unref(xds_snapshot *s)
{
    if (!s) return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        for (size_t i = 0; i < s->types[t].nparts; i++) xds_rset_unref(s->types[t].parts[i]);
        xds_rset_unref(s->own[t]);
    }
    free(s);
}

size_t xds_snapshot_count(const xds_snapshot *s, xds_type t)
{
    if (!s->sealed || (unsigned)t >= XDS_TYPE_COUNT) return 0;
    return s->types[t].count;
}

const xds_resource *xds_snapshot_at(const xds_snapshot *s, xds_type t, size_t i)
{
    if (!s->sealed || (unsigned)t >= XDS_TYPE_COUNT) return NULL;
    const snap_type *st = &s->types[t];
    for (size_t p = 0; p <= st->nparts; p++) {
        if (i < st->parts[p]->n) return &st->parts[p]->res[i];
        i -= st->parts[p]->n;
    }
    return NULL;
}

const xds_resource *xds_snapshot_find(const xds_snapshot *s, xds_type t, const char *name)
{
    if (!s->sealed || (unsigned)t >= XDS_TYPE_COUNT || !name) return NULL;
    const snap_type *st = &s->types[t];
    for (size_t p = 0; p <= st->nparts; p++) {
        const xds_resource *r = xds_rset_find(st->parts[p], name);
        if (r) return r;
    }
    return NULL;
}

size_t xds_snapshot_set_count(const xds_snapshot *s, xds_type t)
{
    if (!s->sealed || (unsigned)t >= XDS_TYPE_COUNT) return 0;
    return s->types[t].nparts + 1;
}

xds_rset *xds_snapshot_set(const xds_snapshot *s, xds_type t, size_t i)
{
    if (!s->sealed || (unsigned)t >= XDS_TYPE_COUNT || i > s->types[t].nparts) return NULL;
    return s->types[t].parts[i];
}

const char *xds_snapshot_version(const xds_snapshot *s, xds_type t)
{
    if (!s->sealed || (unsigned)t >= XDS_TYPE_COUNT) return "";
    return s->types[t].version;
}
