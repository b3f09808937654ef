#include "ca/der.h"

#include <limits.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <stdio.h>
#include <string.h>

static int fail(der_cursor *c, const char *why)
{
    c->why = why;
    return 0;
}

void der_init(der_cursor *c, const unsigned char *data, size_t len)
{
    c->data = data;
    c->len = data != NULL ? len : 0;
    c->pos = 0;
    c->depth = 0;
    c->why = NULL;
}

size_t der_remaining(const der_cursor *c) { return c->len - c->pos; }

int der_at_end(const der_cursor *c) { return c->pos == c->len; }

uint8_t der_peek_tag(const der_cursor *c) { return c->pos < c->len ? c->data[c->pos] : 0; }

int der_read_any(der_cursor *c, der_tlv *out)
{
    size_t at = c->pos, left = c->len - c->pos;
    if (left < 2) return fail(c, left == 0 ? "missing element" : "truncated element header");
    uint8_t tag = c->data[at];
    /* High tag numbers (low five bits all set) never occur in what we read. */
    if ((tag & 0x1f) == 0x1f) return fail(c, "multi-byte tag");
    uint8_t l0 = c->data[at + 1];
    size_t hdr = 2, vlen = 0;
    if (l0 < 0x80) {
        vlen = l0;
    } else {
        size_t nlen = l0 & 0x7f;
        if (nlen == 0) return fail(c, "indefinite length (BER, not DER)");
        if (nlen > 4) return fail(c, "length field too long");
        if (left - 2 < nlen) return fail(c, "truncated length field");
        for (size_t i = 0; i < nlen; i++) vlen = (vlen << 8) | c->data[at + 2 + i];
        /* DER: the shortest form, so no leading zero and no long form
         * below 128. */
        if (c->data[at + 2] == 0 || vlen < 0x80) return fail(c, "non-minimal length (not DER)");
        hdr += nlen;
    }
    if (vlen > left - hdr) return fail(c, "length runs past the end of the data");
    out->tag = tag;
    out->tlv = c->data + at;
    out->tlv_len = hdr + vlen;
    out->value = c->data + at + hdr;
    out->value_len = vlen;
    c->pos = at + hdr + vlen;
    return 1;
}

int der_read(der_cursor *c, uint8_t tag, der_tlv *out)
{
    if (c->pos < c->len && c->data[c->pos] != tag) return fail(c, "unexpected element type");
    return der_read_any(c, out);
}

int der_enter(der_cursor *parent, const der_tlv *t, der_cursor *inner)
{
    if (!(t->tag & 0x20)) return fail(parent, "primitive element where a constructed one belongs");
    if (parent->depth >= DER_MAX_DEPTH) return fail(parent, "nested too deeply");
    inner->data = t->value;
    inner->len = t->value_len;
    inner->pos = 0;
    inner->depth = parent->depth + 1;
    inner->why = NULL;
    return 1;
}

int der_read_enter(der_cursor *c, uint8_t tag, der_cursor *inner, der_tlv *out)
{
    der_tlv t;
    size_t at = c->pos;
    if (!der_read(c, tag, &t)) return 0;
    if (!der_enter(c, &t, inner)) {
        c->pos = at;
        return 0;
    }
    if (out != NULL) *out = t;
    return 1;
}

int der_read_uint(der_cursor *c, const unsigned char **mag, size_t *mag_len)
{
    der_tlv t;
    size_t at = c->pos;
    if (!der_read(c, DER_INTEGER, &t)) return 0;
    const unsigned char *v = t.value;
    size_t n = t.value_len;
    const char *why = NULL;
    if (n == 0)
        why = "empty INTEGER";
    else if (v[0] & 0x80)
        why = "negative INTEGER";
    else if (n > 1 && v[0] == 0 && !(v[1] & 0x80))
        why = "non-minimal INTEGER (not DER)";
    if (why != NULL) {
        c->pos = at;
        return fail(c, why);
    }
    if (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    *mag = v;
    *mag_len = n;
    return 1;
}

int der_read_bits(der_cursor *c, const unsigned char **bits, size_t *bits_len)
{
    der_tlv t;
    size_t at = c->pos;
    if (!der_read(c, DER_BIT_STRING, &t)) return 0;
    if (t.value_len == 0 || t.value[0] != 0) {
        c->pos = at;
        return fail(c, "BIT STRING with unused bits");
    }
    *bits = t.value + 1;
    *bits_len = t.value_len - 1;
    return 1;
}

int der_oid_is(const der_tlv *t, const unsigned char *oid, size_t oid_len)
{
    return t->tag == DER_OID && t->value_len == oid_len && memcmp(t->value, oid, oid_len) == 0;
}

int der_oid_well_formed(const unsigned char *v, size_t n)
{
    if (n == 0 || (v[n - 1] & 0x80)) return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] == 0x80 && (i == 0 || !(v[i - 1] & 0x80))) return 0; /* padded subidentifier */
    return 1;
}

int der_read_oid(der_cursor *c, der_tlv *out)
{
    size_t at = c->pos;
    if (!der_read(c, DER_OID, out)) return 0;
    if (!der_oid_well_formed(out->value, out->value_len)) {
        c->pos = at;
        return fail(c, "malformed OBJECT IDENTIFIER");
    }
    return 1;
}

void der_oid_text(const der_tlv *t, char *out, size_t cap)
{
    snprintf(out, cap, "?");
    const unsigned char *p = t->tlv;
    ASN1_OBJECT *o = t->tag == DER_OID ? d2i_ASN1_OBJECT(NULL, &p, (long)t->tlv_len) : NULL;
    if (o != NULL && cap > 0 && OBJ_obj2txt(out, (int)(cap > INT_MAX ? INT_MAX : cap), o, 0) <= 0)
        snprintf(out, cap, "?");
    ASN1_OBJECT_free(o);
    ERR_clear_error();
}

int der_oid_nid(const der_tlv *t)
{
    const unsigned char *p = t->tlv;
    ASN1_OBJECT *o = t->tag == DER_OID ? d2i_ASN1_OBJECT(NULL, &p, (long)t->tlv_len) : NULL;
    int nid = o != NULL ? OBJ_obj2nid(o) : NID_undef;
    ASN1_OBJECT_free(o);
    ERR_clear_error();
    return nid;
}

/* ---- writing ------------------------------------------------------------------ */

#define DER_W_RESERVED 4 /* tag's length field while open: 0x83 + three bytes */

void der_w_init(der_writer *w, unsigned char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf != NULL ? cap : 0;
    w->len = 0;
    w->depth = 0;
    w->failed = buf == NULL;
}

/* Bytes the length field of `n` takes (1 up to 127, then 0x8k + k bytes). */
static size_t len_size(size_t n)
{
    return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 4;
}

static void put_len(unsigned char *p, size_t n, size_t size)
{
    if (size == 1) {
        p[0] = (unsigned char)n;
        return;
    }
    p[0] = (unsigned char)(0x80 | (size - 1));
    for (size_t i = size - 1; i >= 1; i--) {
        p[i] = (unsigned char)(n & 0xff);
        n >>= 8;
    }
}

static int w_room(der_writer *w, size_t n)
{
    if (w->failed || n > w->cap - w->len) {
        w->failed = 1;
        return 0;
    }
    return 1;
}

void der_w_raw(der_writer *w, const void *p, size_t n)
{
    if (n == 0 || !w_room(w, n)) return;
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void der_w_prim(der_writer *w, uint8_t tag, const void *v, size_t n)
{
    if (n >= 0x1000000) {
        w->failed = 1;
        return;
    }
    size_t ls = len_size(n);
    if (!w_room(w, 1 + ls) || !w_room(w, 1 + ls + n)) return;
    w->buf[w->len] = tag;
    put_len(w->buf + w->len + 1, n, ls);
    w->len += 1 + ls;
    der_w_raw(w, v, n);
}

void der_w_open(der_writer *w, uint8_t tag)
{
    if (w->depth >= DER_MAX_DEPTH) w->failed = 1;
    if (!w_room(w, 1 + DER_W_RESERVED)) return;
    w->buf[w->len] = tag;
    w->len += 1 + DER_W_RESERVED;
    w->open[w->depth++] = w->len;
}

void der_w_close(der_writer *w)
{
    if (w->failed) return;
    if (w->depth == 0) {
        w->failed = 1;
        return;
    }
    size_t start = w->open[--w->depth];
    size_t n = w->len - start;
    if (n >= 0x1000000) {
        w->failed = 1;
        return;
    }
    size_t ls = len_size(n);
    unsigned char *lenp = w->buf + start - DER_W_RESERVED;
    if (ls < DER_W_RESERVED) memmove(lenp + ls, w->buf + start, n);
    put_len(lenp, n, ls);
    w->len -= DER_W_RESERVED - ls;
}

int der_w_finish(const der_writer *w) { return !w->failed && w->depth == 0; }
