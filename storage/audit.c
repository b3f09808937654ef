/* Audit events: validation, canonical content, hashing and chain checking.
 * The byte format is specified in storage/audit.h and docs/storage.md. */
#include "storage/audit.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t zero_hash[STORE_HASH_LEN];

/* ---- validation ---------------------------------------------------------- */

static MID_RESULT check_text(const char *name, const char *s, int required)
{
    if (s == NULL) {
        MID_ENSURE(!required, MID_E_INVALID, "audit event: %s is required", name);
        return MID_OK_RESULT;
    }
    size_t n = strnlen(s, (size_t)STORE_AUDIT_TEXT_MAX + 1);
    MID_ENSURE(!required || n > 0, MID_E_INVALID, "audit event: %s must not be empty", name);
    MID_ENSURE(n <= STORE_AUDIT_TEXT_MAX, MID_E_TOO_LARGE,
               "audit event: %s is longer than %d bytes", name, STORE_AUDIT_TEXT_MAX);
    return MID_OK_RESULT;
}

/* ---- a fast path for simple details --------------------------------------
 *
 * Nearly every event carries details meshid printed itself: a small flat
 * object of ASCII strings, integers, booleans and short arrays. Parsing
 * that into jansson objects (allocations, a hash table) only to free them
 * again costs more than the rest of the validation. simple_object()
 * recognises a strict subset of JSON without allocating and answers only
 * "certainly a valid object without duplicate keys" (1) or "not sure" (0);
 * on 0 the text goes to jansson exactly as before, so what is accepted and
 * every error message are unchanged. The subset: printable ASCII strings
 * without escapes, integers of at most 15 digits (no fraction or exponent),
 * true/false/null, nesting up to SIMPLE_DEPTH, at most SIMPLE_KEYS keys
 * per object, JSON whitespace between tokens. */
#define SIMPLE_DEPTH 8
#define SIMPLE_KEYS 32

typedef struct {
    const char *p;
    int depth;
} simple_cursor;

static void simple_ws(simple_cursor *c)
{
    while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r') c->p++;
}

/* A string without escapes; its contents in [*s, *s + *n). */
static int simple_string(simple_cursor *c, const char **s, size_t *n)
{
    if (*c->p != '"') return 0;
    const char *q = ++c->p;
    while (*q >= 0x20 && *q <= 0x7e && *q != '"' && *q != '\\') q++;
    if (*q != '"') return 0;
    *s = c->p;
    *n = (size_t)(q - c->p);
    c->p = q + 1;
    return 1;
}

static int simple_value(simple_cursor *c);

static int simple_members(simple_cursor *c)
{
    const char *keys[SIMPLE_KEYS];
    size_t lens[SIMPLE_KEYS], nkeys = 0;
    c->p++; /* '{' */
    simple_ws(c);
    if (*c->p == '}') {
        c->p++;
        return 1;
    }
    for (;;) {
        const char *k;
        size_t kn;
        simple_ws(c);
        if (nkeys == SIMPLE_KEYS || !simple_string(c, &k, &kn)) return 0;
        for (size_t i = 0; i < nkeys; i++)
            if (lens[i] == kn && memcmp(keys[i], k, kn) == 0) return 0; /* duplicate */
        keys[nkeys] = k;
        lens[nkeys++] = kn;
        simple_ws(c);
        if (*c->p++ != ':' || !simple_value(c)) return 0;
        simple_ws(c);
        if (*c->p == '}') {
            c->p++;
            return 1;
        }
        if (*c->p++ != ',') return 0;
    }
}

static int simple_elements(simple_cursor *c)
{
    c->p++; /* '[' */
    simple_ws(c);
    if (*c->p == ']') {
        c->p++;
        return 1;
    }
    for (;;) {
        if (!simple_value(c)) return 0;
        simple_ws(c);
        if (*c->p == ']') {
            c->p++;
            return 1;
        }
        if (*c->p++ != ',') return 0;
    }
}

static int simple_value(simple_cursor *c)
{
    simple_ws(c);
    const char *s;
    size_t n;
    switch (*c->p) {
    case '"': return simple_string(c, &s, &n);
    case '{':
    case '[': {
        if (c->depth == SIMPLE_DEPTH) return 0;
        c->depth++;
        int ok = *c->p == '{' ? simple_members(c) : simple_elements(c);
        c->depth--;
        return ok;
    }
    case 't': return strncmp(c->p, "true", 4) == 0 ? (c->p += 4, 1) : 0;
    case 'f': return strncmp(c->p, "false", 5) == 0 ? (c->p += 5, 1) : 0;
    case 'n': return strncmp(c->p, "null", 4) == 0 ? (c->p += 4, 1) : 0;
    default: break;
    }
    /* -?(0|[1-9][0-9]{0,14}) not followed by a fraction or an exponent */
    const char *q = c->p;
    if (*q == '-') q++;
    const char *digits = q;
    while (*q >= '0' && *q <= '9') q++;
    size_t nd = (size_t)(q - digits);
    if (nd == 0 || nd > 15 || (nd > 1 && digits[0] == '0')) return 0;
    if (*q == '.' || *q == 'e' || *q == 'E') return 0;
    c->p = q;
    return 1;
}

static int simple_object(const char *text)
{
    simple_cursor c = {.p = text, .depth = 0};
    simple_ws(&c);
    if (*c.p != '{' || !simple_value(&c)) return 0;
    simple_ws(&c);
    return *c.p == '\0';
}

static MID_RESULT check_details(const char *details)
{
    if (details == NULL) return MID_OK_RESULT;
    size_t n = strnlen(details, (size_t)STORE_AUDIT_DETAILS_MAX + 1);
    MID_ENSURE(n <= STORE_AUDIT_DETAILS_MAX, MID_E_TOO_LARGE,
               "audit event: details is longer than %d bytes", STORE_AUDIT_DETAILS_MAX);
    if (simple_object(details)) return MID_OK_RESULT;
    json_error_t jerr;
    json_t *j = json_loads(details, JSON_REJECT_DUPLICATES, &jerr);
    MID_ENSURE(j != NULL, MID_E_INVALID, "audit event: details is not valid JSON: %s (line %d)",
               jerr.text, jerr.line);
    int is_obj = json_is_object(j);
    json_decref(j);
    MID_ENSURE(is_obj, MID_E_INVALID, "audit event: details must be a JSON object");
    return MID_OK_RESULT;
}

MID_RESULT audit_validate(const store_audit_event *ev)
{
    MID_ENSURE(ev != NULL, MID_E_INVALID, "audit event: missing");
    MID_ENSURE(ev->ts_ms >= 0, MID_E_INVALID, "audit event: negative timestamp");
    MID_GUARD(check_text("actor", ev->actor, 1));
    MID_GUARD(check_text("event", ev->event, 1));
    MID_GUARD(check_text("spiffe_id", ev->spiffe_id, 0));
    MID_GUARD(check_text("serial", ev->serial, 0));
    MID_GUARD(check_text("reason", ev->reason, 0));
    MID_ENSURE(ev->outcome != NULL &&
                   (strcmp(ev->outcome, "ok") == 0 || strcmp(ev->outcome, "denied") == 0 ||
                    strcmp(ev->outcome, "error") == 0),
               MID_E_INVALID, "audit event: outcome must be ok, denied or error");
    MID_GUARD(check_details(ev->details));
    return MID_OK_RESULT;
}

void audit_normalize(const store_audit_event *in, store_audit_event *out)
{
    *out = *in;
    if (out->reason == NULL) out->reason = "";
    if (out->details == NULL) out->details = "{}";
}

/* ---- canonical serialization -------------------------------------------- */

/* Where canonical bytes go: a digest, or (md == NULL) a growing buffer. */
typedef struct {
    EVP_MD_CTX *md;
    unsigned char *buf;
    size_t len, cap;
    int failed; /* sticky: a digest update or allocation failed */
} sink;

static void sink_put(sink *s, const void *p, size_t n)
{
    if (s->failed || n == 0) return;
    if (s->md != NULL) {
        if (EVP_DigestUpdate(s->md, p, n) != 1) s->failed = 1;
        return;
    }
    if (s->cap - s->len < n) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap - s->len < n) cap *= 2;
        unsigned char *nb = realloc(s->buf, cap);
        if (nb == NULL) {
            s->failed = 1;
            return;
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void put_i64(sink *s, int64_t v)
{
    uint64_t u = (uint64_t)v;
    unsigned char b[8];
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(u & 0xff);
        u >>= 8;
    }
    sink_put(s, b, sizeof b);
}

static MID_RESULT put_str(sink *s, const char *str)
{
    if (str == NULL) {
        unsigned char tag = 0x00;
        sink_put(s, &tag, 1);
        return MID_OK_RESULT;
    }
    size_t n = strlen(str);
    MID_ENSURE(n <= UINT32_MAX, MID_E_TOO_LARGE, "audit field over 4 GiB");
    unsigned char hdr[5] = {0x01, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    sink_put(s, hdr, sizeof hdr);
    sink_put(s, str, n);
    return MID_OK_RESULT;
}

static MID_RESULT serialize(sink *s, const store_audit_event *ev)
{
    MID_GUARD(put_str(s, AUDIT_FORMAT_TAG));
    put_i64(s, ev->seq);
    put_i64(s, ev->ts_ms);
    MID_GUARD(put_str(s, ev->actor));
    MID_GUARD(put_str(s, ev->event));
    MID_GUARD(put_str(s, ev->spiffe_id));
    MID_GUARD(put_str(s, ev->serial));
    MID_GUARD(put_str(s, ev->outcome));
    MID_GUARD(put_str(s, ev->reason));
    MID_GUARD(put_str(s, ev->details));
    return MID_OK_RESULT;
}

MID_RESULT audit_canonical(const store_audit_event *ev, unsigned char **out, size_t *len)
{
    sink s = {0};
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, serialize(&s, ev));
    MID_CHECK(r, !s.failed, MID_E_NOMEM, "out of memory serializing an audit event");
    *out = s.buf;
    *len = s.len;
    s.buf = NULL;
out:
    free(s.buf);
    return r;
}

/* SHA-256, fetched from the default provider once per process.
 * EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) would fetch it again for every
 * event: a name lookup under OpenSSL's global store lock, which showed up in
 * the writer thread's profile (and is contended by every issuing thread).
 * A fetched EVP_MD is immutable and may be shared by threads; it is kept
 * until exit. NULL if the fetch failed (audit_hash then fails cleanly). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

MID_RESULT audit_hash(const store_audit_event *ev, const uint8_t prev[STORE_HASH_LEN],
                      uint8_t out[STORE_HASH_LEN])
{
    mid_result r = MID_OK_RESULT;
    sink s = {0};
    unsigned int n = 0;
    MID_CHECK(r, pthread_once(&sha256_once, sha256_fetch) == 0 && sha256_md != NULL,
              MID_E_CRYPTO, "SHA-256 is not available");
    s.md = EVP_MD_CTX_new();
    MID_CHECK(r, s.md != NULL, MID_E_NOMEM, "out of memory (digest context)");
    MID_CHECK_OSSL(r, EVP_DigestInit_ex(s.md, sha256_md, NULL), MID_E_CRYPTO,
                   "SHA-256 init failed");
    sink_put(&s, prev, STORE_HASH_LEN);
    MID_TRY(r, serialize(&s, ev));
    MID_CHECK(r, !s.failed, MID_E_CRYPTO, "SHA-256 update failed");
    MID_CHECK_OSSL(r, EVP_DigestFinal_ex(s.md, out, &n), MID_E_CRYPTO, "SHA-256 final failed");
    MID_CHECK(r, n == STORE_HASH_LEN, MID_E_INTERNAL, "SHA-256 gave %u bytes", n);
out:
    EVP_MD_CTX_free(s.md);
    return r;
}

/* ---- hex ----------------------------------------------------------------- */

void audit_hex_encode(const uint8_t in[STORE_HASH_LEN], char out[AUDIT_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < STORE_HASH_LEN; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[AUDIT_HEX_LEN] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int audit_hex_decode(const char *hex, uint8_t out[STORE_HASH_LEN])
{
    memset(out, 0, STORE_HASH_LEN);
    if (hex == NULL || strnlen(hex, AUDIT_HEX_LEN + 1) != AUDIT_HEX_LEN) return 0;
    for (size_t i = 0; i < STORE_HASH_LEN; i++) {
        int hi = hex_val(hex[2 * i]), lo = hex_val(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            memset(out, 0, STORE_HASH_LEN);
            return 0;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

/* ---- chain verification -------------------------------------------------- */

void audit_verifier_init(audit_verifier *vf, store_audit_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->ok = 1;
    vf->v = v;
    vf->last_seq = 0;
    memset(vf->last_hash, 0, sizeof vf->last_hash);
}

__attribute__((format(printf, 3, 4))) static void broken(audit_verifier *vf, int64_t seq,
                                                         const char *fmt, ...)
{
    va_list ap;
    vf->v->ok = 0;
    vf->v->broken_seq = seq;
    va_start(ap, fmt);
    vsnprintf(vf->v->reason, sizeof vf->v->reason, fmt, ap);
    va_end(ap);
}

MID_RESULT audit_verifier_step(audit_verifier *vf, const store_audit_event *row, int hashes_ok,
                               int *more)
{
    int64_t s = row->seq;
    *more = 0;
    vf->v->events++;
    if (vf->last_seq == 0 && s != 1) {
        if (s > 1)
            broken(vf, 1, "chain does not start at seq 1 (first row is seq %lld): events deleted "
                          "from the start", (long long)s);
        else
            broken(vf, s, "invalid seq %lld (seqs start at 1)", (long long)s);
        return MID_OK_RESULT;
    }
    if (vf->last_seq != 0 && s != vf->last_seq + 1) {
        broken(vf, vf->last_seq + 1, "seq %lld is missing (next row is seq %lld): event deleted",
               (long long)(vf->last_seq + 1), (long long)s);
        return MID_OK_RESULT;
    }
    if (!hashes_ok) {
        broken(vf, s, "stored hash or prev_hash is not %d lowercase hex digits", AUDIT_HEX_LEN);
        return MID_OK_RESULT;
    }
    const uint8_t *expect_prev = s == 1 ? zero_hash : vf->last_hash;
    if (memcmp(row->prev_hash, expect_prev, STORE_HASH_LEN) != 0) {
        if (s == 1)
            broken(vf, s, "prev_hash of seq 1 is not all zeros: chain replaced");
        else
            broken(vf, s, "prev_hash does not match the hash of seq %lld: event inserted, "
                          "replaced or reordered", (long long)(s - 1));
        return MID_OK_RESULT;
    }
    uint8_t h[STORE_HASH_LEN];
    MID_GUARD(audit_hash(row, row->prev_hash, h));
    if (memcmp(h, row->hash, STORE_HASH_LEN) != 0) {
        broken(vf, s, "content changed: stored hash does not match the recomputed hash");
        return MID_OK_RESULT;
    }
    vf->last_seq = s;
    memcpy(vf->last_hash, row->hash, STORE_HASH_LEN);
    vf->v->head_seq = s;
    memcpy(vf->v->head_hash, row->hash, STORE_HASH_LEN);
    *more = 1;
    return MID_OK_RESULT;
}
