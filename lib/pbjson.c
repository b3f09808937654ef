/* Protobuf -> JSON (lib/pbjson.h). One converter state per call carries the
 * limits, the estimated output size and the JSON path for messages. Field
 * presence mirrors protobuf-c's packer (protobuf-c.c: required_field_pack,
 * optional_field_pack, oneof_field_pack, unlabeled_field_pack), so that a
 * message converts exactly as its packed bytes do. */
#include "lib/pbjson.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/arena.h"

#define DEPTH_HARD_MAX 1000   /* max_depth is clamped to this: recursion uses the stack */
#define NUMBER_COST 24        /* estimated bytes of a number in the output */
#define NAME_MAX_LEN 256      /* bytes of a JSON field name */
#define ANY_ARENA_FACTOR 16   /* decode memory allowed per input byte, plus a floor */
#define ANY_ARENA_FLOOR ((size_t)1 << 20)

typedef struct {
    pbjson_resolve_fn resolve;
    void *rctx;
    unsigned max_depth;
    size_t max_bytes;
    size_t used;        /* estimated output bytes so far */
    char path[512];     /* JSON path of the value being converted, for messages */
    size_t plen;
} conv;

static mid_result conv_message(conv *c, const ProtobufCMessage *m, unsigned depth, json_t **out);

/* ---- errors, paths, accounting ------------------------------------------------------------ */

static mid_result conv_fail(const conv *c, mid_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mid_result conv_fail(const conv *c, mid_err e, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mid_fail(e, __FILE__, __LINE__, "pbjson: %s: %s", c->plen ? c->path : "(top)", msg);
}

/* Appends to the path; returns the length to restore with path_pop. A path
 * that does not fit ends in "..." and stays cut. */
static size_t path_push(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(conv *c, const char *fmt, ...)
{
    size_t mark = c->plen;
    size_t room = sizeof c->path - c->plen;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->path + c->plen, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        c->path[c->plen] = '\0';
    } else if ((size_t)n >= room) {
        c->plen = sizeof c->path - 1;
        memcpy(c->path + sizeof c->path - 4, "...", 4);
    } else {
        c->plen += (size_t)n;
    }
    return mark;
}

static void path_pop(conv *c, size_t mark)
{
    if (mark < sizeof c->path) {
        c->plen = mark;
        c->path[mark] = '\0';
    }
}

static mid_result charge(conv *c, size_t n)
{
    if (n > c->max_bytes || c->used > c->max_bytes - n)
        return conv_fail(c, MID_E_TOO_LARGE, "output over the limit of %zu bytes", c->max_bytes);
    c->used += n;
    return mid_ok();
}

/* ---- text helpers ---------------------------------------------------------------------------- */

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((b & 0xe0) == 0xc0) {
            len = 2;
            cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            len = 3;
            cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            len = 4;
            cp = b & 0x07;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static mid_result make_string(conv *c, const char *s, json_t **out)
{
    if (s == NULL) s = "";
    size_t n = strlen(s);
    MID_GUARD(charge(c, n + 2));
    if (!utf8_valid((const unsigned char *)s, n))
        return conv_fail(c, MID_E_INVALID, "string is not valid UTF-8");
    *out = json_stringn(s, n);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

static mid_result make_base64(conv *c, const uint8_t *p, size_t n, json_t **out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (n > (SIZE_MAX - 4) / 4 * 3)
        return conv_fail(c, MID_E_TOO_LARGE, "bytes field too large");
    size_t olen = (n + 2) / 3 * 4;
    MID_GUARD(charge(c, olen + 2));
    char *buf = malloc(olen + 1);
    MID_ENSURE_MEM(buf);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        buf[o++] = tab[(v >> 18) & 63];
        buf[o++] = tab[(v >> 12) & 63];
        buf[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        buf[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    buf[o] = '\0';
    *out = json_stringn(buf, o);
    free(buf);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

static mid_result make_printf(conv *c, json_t **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mid_result make_printf(conv *c, json_t **out, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    MID_ENSURE(n >= 0 && (size_t)n < sizeof buf, MID_E_INTERNAL, "number format overflow");
    MID_GUARD(charge(c, (size_t)n + 2));
    *out = json_stringn(buf, (size_t)n);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

static mid_result make_double(conv *c, double v, json_t **out)
{
    if (isnan(v)) return make_printf(c, out, "NaN");
    if (isinf(v)) return make_printf(c, out, v > 0 ? "Infinity" : "-Infinity");
    MID_GUARD(charge(c, NUMBER_COST));
    *out = json_real(v);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

static mid_result make_integer(conv *c, json_int_t v, json_t **out)
{
    MID_GUARD(charge(c, NUMBER_COST));
    *out = json_integer(v);
    MID_ENSURE_MEM(*out);
    return mid_ok();
}

MID_RESULT pbjson_json_name(const char *proto_name, char *out, size_t cap)
{
    size_t o = 0;
    int upper = 0;
    for (const char *p = proto_name; *p; p++) {
        if (*p == '_') {
            upper = 1;
            continue;
        }
        MID_ENSURE(o + 1 < cap, MID_E_TOO_LARGE, "field name '%s' is too long", proto_name);
        char ch = *p;
        if (upper && ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        upper = 0;
        out[o++] = ch;
    }
    MID_ENSURE(cap > 0, MID_E_TOO_LARGE, "no room for a field name");
    out[o] = '\0';
    return mid_ok();
}

/* ---- reading protobuf-c structs -------------------------------------------------------------- */

static const void *member_at(const ProtobufCMessage *m, unsigned offset)
{
    return (const char *)m + offset;
}

static int is_pointer_type(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_MESSAGE;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    default: return 4; /* 32-bit integers, enums, float */
    }
}

/* True when the unlabeled (proto3) value at p is its type's zero. */
static int zeroish(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_MESSAGE: return *(const void *const *)p == NULL;
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0.0f;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0.0;
    default:
        if (elem_size(f->type) == 8) return *(const uint64_t *)p == 0;
        return *(const uint32_t *)p == 0;
    }
}

/* How many values of f are present in m: 0 or 1, or the repeated count. */
static size_t present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const void *p = member_at(m, f->offset);
    if (f->label == PROTOBUF_C_LABEL_REPEATED) return *(const size_t *)member_at(m, f->quantifier_offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(const uint32_t *)member_at(m, f->quantifier_offset) != f->id) return 0;
        if (is_pointer_type(f->type)) {
            const void *ptr = *(const void *const *)p;
            return ptr != NULL && ptr != f->default_value;
        }
        return 1;
    }
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return !is_pointer_type(f->type) || *(const void *const *)p != NULL;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (is_pointer_type(f->type)) {
            const void *ptr = *(const void *const *)p;
            return ptr != NULL && ptr != f->default_value;
        }
        return *(const protobuf_c_boolean *)member_at(m, f->quantifier_offset) != 0;
    default: return !zeroish(f, p);
    }
}

static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d,
                                                   const char *name)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (strcmp(d->fields[i].name, name) == 0) return &d->fields[i];
    return NULL;
}

/* ---- values ----------------------------------------------------------------------------------- */

/* Converts a message-typed value that may be NULL (an absent map value or
 * list element): a default instance of its type, except google.protobuf.Value
 * which becomes null. */
static mid_result conv_message_or_default(conv *c, const ProtobufCMessageDescriptor *d,
                                          const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    if (m != NULL) return conv_message(c, m, depth, out);
    if (strcmp(d->name, "google.protobuf.Value") == 0) {
        MID_GUARD(charge(c, 4));
        *out = json_null();
        return mid_ok();
    }
    ProtobufCMessage *tmp = calloc(1, d->sizeof_message);
    MID_ENSURE_MEM(tmp);
    protobuf_c_message_init(d, tmp);
    mid_result r = conv_message(c, tmp, depth, out);
    free(tmp);
    return r;
}

/* One value of field f stored at p (a struct member or an array element). */
static mid_result conv_value(conv *c, const ProtobufCFieldDescriptor *f, const void *p,
                             unsigned depth, json_t **out)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return make_integer(c, *(const int32_t *)p, out);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return make_integer(c, *(const uint32_t *)p, out);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return make_printf(c, out, "%" PRId64, *(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return make_printf(c, out, "%" PRIu64, *(const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT: return make_double(c, *(const float *)p, out);
    case PROTOBUF_C_TYPE_DOUBLE: return make_double(c, *(const double *)p, out);
    case PROTOBUF_C_TYPE_BOOL:
        MID_GUARD(charge(c, 5));
        *out = json_boolean(*(const protobuf_c_boolean *)p);
        return mid_ok();
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        int v = *(const int *)p;
        if (strcmp(ed->name, "google.protobuf.NullValue") == 0) {
            MID_GUARD(charge(c, 4));
            *out = json_null();
            return mid_ok();
        }
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
        if (ev == NULL) return make_integer(c, v, out);
        return make_string(c, ev->name, out);
    }
    case PROTOBUF_C_TYPE_STRING: return make_string(c, *(const char *const *)p, out);
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return make_base64(c, b->data, b->len, out);
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return conv_message_or_default(c, f->descriptor, *(const ProtobufCMessage *const *)p,
                                       depth + 1, out);
    }
    return conv_fail(c, MID_E_INTERNAL, "field %s has unknown type %d", f->name, (int)f->type);
}

/* protoc's map entry: "<Field>Entry" nested in the parent, key = 1, value = 2. */
static int is_map_field(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return 0;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
        strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0 ||
        e->fields[0].label == PROTOBUF_C_LABEL_REPEATED ||
        e->fields[1].label == PROTOBUF_C_LABEL_REPEATED)
        return 0;
    char want[NAME_MAX_LEN + 8];
    if (pbjson_json_name(f->name, want, NAME_MAX_LEN).err != MID_E_OK) {
        mid_errclear();
        return 0;
    }
    if (want[0] >= 'a' && want[0] <= 'z') want[0] = (char)(want[0] - 'a' + 'A');
    size_t wl = strlen(want);
    memcpy(want + wl, "Entry", sizeof "Entry");
    size_t pl = strlen(parent->name);
    return strcmp(e->short_name, want) == 0 && strncmp(e->name, parent->name, pl) == 0 &&
           e->name[pl] == '.' && strcmp(e->name + pl + 1, e->short_name) == 0;
}

/* The JSON object key of a map entry's key field. */
static mid_result map_key(conv *c, const ProtobufCFieldDescriptor *kf, const void *p, char *buf,
                          size_t cap, const char **key)
{
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        if (s == NULL) s = "";
        if (!utf8_valid((const unsigned char *)s, strlen(s)))
            return conv_fail(c, MID_E_INVALID, "map key is not valid UTF-8");
        *key = s;
        return mid_ok();
    }
    case PROTOBUF_C_TYPE_BOOL: *key = *(const protobuf_c_boolean *)p ? "true" : "false"; break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: snprintf(buf, cap, "%" PRId32, *(const int32_t *)p); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: snprintf(buf, cap, "%" PRIu32, *(const uint32_t *)p); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: snprintf(buf, cap, "%" PRId64, *(const int64_t *)p); break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)p); break;
    default: return conv_fail(c, MID_E_INVALID, "map key of type %d", (int)kf->type);
    }
    if (kf->type != PROTOBUF_C_TYPE_BOOL) *key = buf;
    return mid_ok();
}

static mid_result conv_map(conv *c, const ProtobufCFieldDescriptor *f,
                           const ProtobufCMessage *const *entries, size_t n, unsigned depth,
                           json_t **out)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    json_t *obj = json_object();
    MID_ENSURE_MEM(obj);
    mid_result r = MID_OK_RESULT;
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessage *e = entries[i];
        if (e == NULL) continue;
        char kbuf[32];
        const char *key = NULL;
        MID_TRY(r, map_key(c, kf, member_at(e, kf->offset), kbuf, sizeof kbuf, &key));
        MID_TRY(r, charge(c, strlen(key) + 4));
        size_t mark = path_push(c, "[\"%.64s\"]", key);
        json_t *v = NULL;
        if (vf->type == PROTOBUF_C_TYPE_MESSAGE)
            r = conv_message_or_default(c, vf->descriptor,
                                        *(const ProtobufCMessage *const *)member_at(e, vf->offset),
                                        depth + 1, &v);
        else
            r = conv_value(c, vf, member_at(e, vf->offset), depth, &v);
        path_pop(c, mark);
        if (!mid_is_ok(r)) goto out;
        MID_CHECK(r, json_object_set_new(obj, key, v) == 0, MID_E_NOMEM, "out of memory");
    }
out:
    if (!mid_is_ok(r)) json_decref(obj);
    else *out = obj;
    return r;
}

static mid_result conv_repeated(conv *c, const ProtobufCFieldDescriptor *f, const void *arr,
                                size_t n, unsigned depth, json_t **out)
{
    json_t *a = json_array();
    MID_ENSURE_MEM(a);
    mid_result r = MID_OK_RESULT;
    size_t sz = elem_size(f->type);
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_push(c, "[%zu]", i);
        json_t *v = NULL;
        r = charge(c, 1);
        if (mid_is_ok(r)) r = conv_value(c, f, (const char *)arr + i * sz, depth, &v);
        path_pop(c, mark);
        if (!mid_is_ok(r)) goto out;
        MID_CHECK(r, json_array_append_new(a, v) == 0, MID_E_NOMEM, "out of memory");
    }
out:
    if (!mid_is_ok(r)) json_decref(a);
    else *out = a;
    return r;
}

static mid_result conv_generic(conv *c, const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    MID_GUARD(charge(c, 2));
    json_t *obj = json_object();
    MID_ENSURE_MEM(obj);
    mid_result r = MID_OK_RESULT;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        size_t n = present(m, f);
        if (n == 0) continue;
        char name[NAME_MAX_LEN];
        MID_TRY(r, pbjson_json_name(f->name, name, sizeof name));
        MID_TRY(r, charge(c, strlen(name) + 4));
        size_t mark = path_push(c, ".%s", name);
        json_t *v = NULL;
        const void *p = member_at(m, f->offset);
        if (f->label != PROTOBUF_C_LABEL_REPEATED)
            r = conv_value(c, f, p, depth, &v);
        else if (is_map_field(d, f))
            r = conv_map(c, f, *(const ProtobufCMessage *const *const *)p, n, depth, &v);
        else
            r = conv_repeated(c, f, *(const void *const *)p, n, depth, &v);
        path_pop(c, mark);
        if (!mid_is_ok(r)) goto out;
        MID_CHECK(r, json_object_set_new(obj, name, v) == 0, MID_E_NOMEM, "out of memory");
    }
out:
    if (!mid_is_ok(r)) json_decref(obj);
    else *out = obj;
    return r;
}

/* ---- well-known types ----------------------------------------------------------------------- */

static int64_t get_i64(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f = field_named(m->descriptor, name);
    if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED || elem_size(f->type) != 8 ||
        f->type == PROTOBUF_C_TYPE_DOUBLE)
        return 0;
    return *(const int64_t *)member_at(m, f->offset);
}

static int32_t get_i32(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f = field_named(m->descriptor, name);
    if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED || elem_size(f->type) != 4 ||
        f->type == PROTOBUF_C_TYPE_FLOAT)
        return 0;
    return *(const int32_t *)member_at(m, f->offset);
}

#define DURATION_SECONDS_MAX INT64_C(315576000000)
#define TIMESTAMP_MIN INT64_C(-62135596800) /* 0001-01-01T00:00:00Z */
#define TIMESTAMP_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

/* ".5" style fraction with 0, 3, 6 or 9 digits, as the mapping prints them. */
static void fraction(char *buf, size_t cap, int32_t nanos)
{
    if (nanos == 0) buf[0] = '\0';
    else if (nanos % 1000000 == 0) snprintf(buf, cap, ".%03" PRId32, nanos / 1000000);
    else if (nanos % 1000 == 0) snprintf(buf, cap, ".%06" PRId32, nanos / 1000);
    else snprintf(buf, cap, ".%09" PRId32, nanos);
}

static mid_result conv_duration(conv *c, const ProtobufCMessage *m, json_t **out)
{
    int64_t s = get_i64(m, "seconds");
    int32_t ns = get_i32(m, "nanos");
    if (s < -DURATION_SECONDS_MAX || s > DURATION_SECONDS_MAX || ns < -999999999 ||
        ns > 999999999 || (s > 0 && ns < 0) || (s < 0 && ns > 0))
        return conv_fail(c, MID_E_INVALID, "Duration %" PRId64 "s %" PRId32 "ns is out of range",
                         s, ns);
    int neg = s < 0 || ns < 0;
    uint64_t us = (uint64_t)(s < 0 ? -s : s);
    char frac[16];
    fraction(frac, sizeof frac, ns < 0 ? -ns : ns);
    return make_printf(c, out, "%s%" PRIu64 "%ss", neg ? "-" : "", us, frac);
}

static mid_result conv_timestamp(conv *c, const ProtobufCMessage *m, json_t **out)
{
    int64_t s = get_i64(m, "seconds");
    int32_t ns = get_i32(m, "nanos");
    if (s < TIMESTAMP_MIN || s > TIMESTAMP_MAX || ns < 0 || ns > 999999999)
        return conv_fail(c, MID_E_INVALID, "Timestamp %" PRId64 "s %" PRId32 "ns is out of range",
                         s, ns);
    time_t t = (time_t)s;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return conv_fail(c, MID_E_INVALID, "Timestamp %" PRId64 " is not representable", s);
    char frac[16];
    fraction(frac, sizeof frac, ns);
    return make_printf(c, out, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* google.protobuf.*Value: the plain value of field "value" (even when zero). */
static mid_result conv_wrapper(conv *c, const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    const ProtobufCFieldDescriptor *f = field_named(m->descriptor, "value");
    if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED) return conv_generic(c, m, depth, out);
    return conv_value(c, f, member_at(m, f->offset), depth, out);
}

static mid_result conv_struct_value(conv *c, const ProtobufCMessage *m, unsigned depth,
                                    json_t **out)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const ProtobufCFieldDescriptor *kind = NULL;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (present(m, &d->fields[i])) kind = &d->fields[i];
    if (kind == NULL) return conv_fail(c, MID_E_INVALID, "google.protobuf.Value has no kind set");
    const void *p = member_at(m, kind->offset);
    if (kind->type == PROTOBUF_C_TYPE_DOUBLE && !isfinite(*(const double *)p))
        return conv_fail(c, MID_E_INVALID, "google.protobuf.Value number is not finite");
    return conv_value(c, kind, p, depth, out);
}

static mid_result conv_list_value(conv *c, const ProtobufCMessage *m, unsigned depth,
                                  json_t **out)
{
    const ProtobufCFieldDescriptor *f = field_named(m->descriptor, "values");
    if (f == NULL || f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return conv_generic(c, m, depth, out);
    size_t n = present(m, f);
    if (n == 0) {
        MID_GUARD(charge(c, 2));
        *out = json_array();
        MID_ENSURE_MEM(*out);
        return mid_ok();
    }
    return conv_repeated(c, f, *(const void *const *)member_at(m, f->offset), n, depth, out);
}

static mid_result conv_struct(conv *c, const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    const ProtobufCFieldDescriptor *f = field_named(m->descriptor, "fields");
    if (f == NULL || !is_map_field(m->descriptor, f)) return conv_generic(c, m, depth, out);
    MID_GUARD(charge(c, 2));
    size_t n = present(m, f);
    if (n == 0) {
        *out = json_object();
        MID_ENSURE_MEM(*out);
        return mid_ok();
    }
    return conv_map(c, f, *(const ProtobufCMessage *const *const *)member_at(m, f->offset), n,
                    depth, out);
}

/* Type names whose JSON is not an object of fields. */
static int wkt_kind(const char *name)
{
    static const char *const special[] = {
        "google.protobuf.Any",         "google.protobuf.Duration",    "google.protobuf.Timestamp",
        "google.protobuf.Struct",      "google.protobuf.Value",       "google.protobuf.ListValue",
        "google.protobuf.DoubleValue", "google.protobuf.FloatValue",  "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value", "google.protobuf.Int32Value",  "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",   "google.protobuf.StringValue", "google.protobuf.BytesValue",
    };
    if (strncmp(name, "google.protobuf.", 16) != 0) return -1;
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        if (strcmp(name, special[i]) == 0) return (int)i;
    return -1;
}

/* ---- packed input ------------------------------------------------------------------------------ */

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* Walks the wire bytes of a `d` message: well-formed tags and lengths, and
 * message nesting within max_depth (protobuf-c decodes recursively). */
static mid_result wire_check(conv *c, const ProtobufCMessageDescriptor *d, const uint8_t *p,
                             size_t len, unsigned depth)
{
    if (depth > c->max_depth)
        return conv_fail(c, MID_E_TOO_LARGE, "%s nested deeper than %u", d->name, c->max_depth);
    size_t i = 0;
    while (i < len) {
        uint64_t tag = 0, n = 0;
        if (!read_varint(p, len, &i, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
            return conv_fail(c, MID_E_INVALID, "%s: malformed field tag", d->name);
        switch (tag & 7) {
        case 0:
            if (!read_varint(p, len, &i, &n))
                return conv_fail(c, MID_E_INVALID, "%s: truncated varint", d->name);
            break;
        case 1:
        case 5: {
            size_t w = (tag & 7) == 1 ? 8 : 4;
            if (len - i < w) return conv_fail(c, MID_E_INVALID, "%s: truncated field", d->name);
            i += w;
            break;
        }
        case 2: {
            if (!read_varint(p, len, &i, &n) || n > len - i)
                return conv_fail(c, MID_E_INVALID, "%s: truncated length-delimited field",
                                 d->name);
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE)
                MID_GUARD(wire_check(c, f->descriptor, p + i, (size_t)n, depth + 1));
            i += (size_t)n;
            break;
        }
        default:
            return conv_fail(c, MID_E_INVALID, "%s: unsupported wire type %u", d->name,
                             (unsigned)(tag & 7));
        }
    }
    return mid_ok();
}

/* Decodes bytes into an arena (*a, freed by the caller) after wire_check. */
static mid_result unpack(conv *c, const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                         size_t len, unsigned depth, arena **a, ProtobufCMessage **m)
{
    if (len > c->max_bytes)
        return conv_fail(c, MID_E_TOO_LARGE, "%s of %zu bytes is over the limit of %zu", d->name,
                         len, c->max_bytes);
    static const uint8_t empty[1] = {0};
    if (buf == NULL) {
        if (len != 0) return conv_fail(c, MID_E_INVALID, "%s: no bytes", d->name);
        buf = empty;
    }
    MID_GUARD(wire_check(c, d, buf, len, depth));
    size_t limit = len > (SIZE_MAX - ANY_ARENA_FLOOR) / ANY_ARENA_FACTOR
                       ? SIZE_MAX
                       : len * ANY_ARENA_FACTOR + ANY_ARENA_FLOOR;
    MID_GUARD(arena_new(limit, a));
    *m = protobuf_c_message_unpack(d, arena_allocator(*a), len, buf);
    if (*m == NULL) {
        if (arena_exhausted(*a))
            return conv_fail(c, MID_E_TOO_LARGE, "%s needs more than %zu bytes to decode",
                             d->name, limit);
        return conv_fail(c, MID_E_INVALID, "%s does not decode", d->name);
    }
    return mid_ok();
}

static mid_result conv_any(conv *c, const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    const ProtobufCFieldDescriptor *uf = field_named(m->descriptor, "type_url");
    const ProtobufCFieldDescriptor *vf = field_named(m->descriptor, "value");
    if (uf == NULL || vf == NULL || uf->type != PROTOBUF_C_TYPE_STRING ||
        vf->type != PROTOBUF_C_TYPE_BYTES)
        return conv_generic(c, m, depth, out);
    const char *url = *(const char *const *)member_at(m, uf->offset);
    const ProtobufCBinaryData *val = member_at(m, vf->offset);
    if (url == NULL || url[0] == '\0') {
        if (val->len != 0) return conv_fail(c, MID_E_INVALID, "Any with a value but no type URL");
        return conv_generic(c, m, depth, out); /* {} */
    }
    json_t *obj = json_object();
    MID_ENSURE_MEM(obj);
    mid_result r = MID_OK_RESULT;
    arena *a = NULL;
    ProtobufCMessage *im = NULL;
    json_t *tv = NULL, *inner = NULL;
    MID_TRY(r, charge(c, 10));
    MID_TRY(r, make_string(c, url, &tv));
    MID_CHECK(r, json_object_set_new(obj, "@type", tv) == 0, MID_E_NOMEM, "out of memory");
    const ProtobufCMessageDescriptor *d = c->resolve ? c->resolve(c->rctx, url) : NULL;
    if (d == NULL) {
        json_t *b64 = NULL;
        MID_TRY(r, make_base64(c, val->data, val->len, &b64));
        MID_CHECK(r, json_object_set_new(obj, "value", b64) == 0, MID_E_NOMEM, "out of memory");
        goto out;
    }
    MID_TRY(r, unpack(c, d, val->data, val->len, depth + 1, &a, &im));
    MID_TRY(r, conv_message(c, im, depth + 1, &inner));
    if (wkt_kind(d->name) >= 0 || !json_is_object(inner)) {
        json_t *v = inner; /* set_new takes it, even when it fails */
        inner = NULL;
        MID_CHECK(r, json_object_set_new(obj, "value", v) == 0, MID_E_NOMEM, "out of memory");
    } else {
        MID_CHECK(r, json_object_update(obj, inner) == 0, MID_E_NOMEM, "out of memory");
    }
out:
    json_decref(inner);
    arena_free(a);
    if (!mid_is_ok(r)) json_decref(obj);
    else *out = obj;
    return r;
}

static mid_result conv_message(conv *c, const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    if (depth > c->max_depth)
        return conv_fail(c, MID_E_TOO_LARGE, "messages nested deeper than %u", c->max_depth);
    const char *name = m->descriptor->name;
    switch (wkt_kind(name)) {
    case 0: return conv_any(c, m, depth, out);
    case 1: return conv_duration(c, m, out);
    case 2: return conv_timestamp(c, m, out);
    case 3: return conv_struct(c, m, depth, out);
    case 4: return conv_struct_value(c, m, depth, out);
    case 5: return conv_list_value(c, m, depth, out);
    case -1: return conv_generic(c, m, depth, out);
    default: return conv_wrapper(c, m, depth, out);
    }
}

/* ---- public ------------------------------------------------------------------------------------ */

static void conv_init(conv *c, const pbjson_opts *o)
{
    memset(c, 0, sizeof *c);
    if (o != NULL) {
        c->resolve = o->resolve;
        c->rctx = o->resolve_ctx;
        c->max_depth = o->max_depth;
        c->max_bytes = o->max_bytes;
    }
    if (c->max_depth == 0) c->max_depth = PBJSON_MAX_DEPTH;
    if (c->max_depth > DEPTH_HARD_MAX) c->max_depth = DEPTH_HARD_MAX;
    if (c->max_bytes == 0) c->max_bytes = PBJSON_MAX_BYTES;
}

MID_RESULT pbjson_from_message_opts(const ProtobufCMessage *m, const pbjson_opts *o, json_t **out)
{
    *out = NULL;
    MID_ENSURE(m != NULL && m->descriptor != NULL, MID_E_INVALID, "pbjson: no message");
    conv c;
    conv_init(&c, o);
    return conv_message(&c, m, 1, out);
}

MID_RESULT pbjson_from_packed_opts(const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                                   size_t len, const pbjson_opts *o, json_t **out)
{
    *out = NULL;
    MID_ENSURE(d != NULL && (buf != NULL || len == 0), MID_E_INVALID, "pbjson: no input");
    conv c;
    conv_init(&c, o);
    arena *a = NULL;
    ProtobufCMessage *m = NULL;
    mid_result r = unpack(&c, d, buf, len, 1, &a, &m);
    if (mid_is_ok(r)) r = conv_message(&c, m, 1, out);
    arena_free(a);
    return r;
}

MID_RESULT pbjson_from_message(const ProtobufCMessage *m, pbjson_resolve_fn fn, void *ctx,
                               json_t **out)
{
    pbjson_opts o = {.resolve = fn, .resolve_ctx = ctx};
    return pbjson_from_message_opts(m, &o, out);
}

MID_RESULT pbjson_from_packed(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                              pbjson_resolve_fn fn, void *ctx, json_t **out)
{
    pbjson_opts o = {.resolve = fn, .resolve_ctx = ctx};
    return pbjson_from_packed_opts(d, buf, len, &o, out);
}

const ProtobufCMessageDescriptor *pbjson_table_resolve(void *table, const char *type_url)
{
    const pbjson_table *t = table;
    if (t == NULL || type_url == NULL) return NULL;
    const char *slash = strrchr(type_url, '/');
    const char *name = slash ? slash + 1 : type_url;
    for (size_t i = 0; i < t->n; i++)
        if (t->descs[i] != NULL && strcmp(t->descs[i]->name, name) == 0) return t->descs[i];
    return NULL;
}
