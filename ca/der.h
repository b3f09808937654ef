/* A small length-checked DER reader for peer data (the CSR parser), and a
 * bounded DER writer for what the CA encodes itself (X.509-SVIDs, see
 * der_writer below). The reader is in the style of s2n's stuffer: a cursor over a borrowed byte range that only ever
 * moves forward, and every read checks the bytes it needs are there first.
 *
 * Only DER is read: single-byte tags (no high tag numbers), definite lengths
 * in their shortest form (no indefinite length, no padding in the long form),
 * at most 4 length bytes. Nothing here recurses; a cursor opened on a
 * constructed value is one level deeper than its parent and opening one
 * beyond DER_MAX_DEPTH fails, so schema code cannot be driven deeper than a
 * fixed bound by its input. Pointers handed out point into the original
 * buffer, which must outlive every cursor and TLV taken from it.
 *
 * Every function returns 1 on success and 0 on failure (the cursor is then
 * left unchanged) and, on failure, sets a static description of what was
 * wrong in `c->why` for the caller's error message. */
#ifndef MESHID_CA_DER_H
#define MESHID_CA_DER_H

#include <stddef.h>
#include <stdint.h>

#define DER_MAX_DEPTH 8

/* Universal and context tags we read (identifier octets). */
enum {
    DER_INTEGER = 0x02,
    DER_BIT_STRING = 0x03,
    DER_OCTET_STRING = 0x04,
    DER_NULL = 0x05,
    DER_OID = 0x06,
    DER_SEQUENCE = 0x30,
    DER_SET = 0x31,
    DER_CTX0_CONSTRUCTED = 0xa0,
};

typedef struct {
    const unsigned char *data; /* borrowed */
    size_t len;
    size_t pos;                /* next unread byte, 0 <= pos <= len */
    int depth;                 /* 0 for a cursor over a whole buffer */
    const char *why;           /* last failure, static text; NULL when none */
} der_cursor;

/* One element: its tag, its value (contents octets) and the whole encoding
 * (identifier, length and contents: what a signature covers). */
typedef struct {
    uint8_t tag;
    const unsigned char *value;
    size_t value_len;
    const unsigned char *tlv;
    size_t tlv_len;
} der_tlv;

/* A cursor over `len` bytes at `data` (borrowed), depth 0. */
void der_init(der_cursor *c, const unsigned char *data, size_t len);

/* Bytes not read yet. */
size_t der_remaining(const der_cursor *c);

/* 1 when the cursor has nothing left. */
int der_at_end(const der_cursor *c);

/* The tag of the next element without consuming it; 0 when at the end
 * (0 is never a valid DER tag here). */
uint8_t der_peek_tag(const der_cursor *c);

/* Reads the next element, whatever its tag. */
int der_read_any(der_cursor *c, der_tlv *out);

/* Reads the next element and requires its tag to be `tag`. */
int der_read(der_cursor *c, uint8_t tag, der_tlv *out);

/* Opens a cursor on the value of the constructed element `t`, one level
 * deeper than `parent`. Fails beyond DER_MAX_DEPTH or for a primitive tag. */
int der_enter(der_cursor *parent, const der_tlv *t, der_cursor *inner);

/* Reads an element `tag` and opens a cursor on its value (der_read then
 * der_enter). */
int der_read_enter(der_cursor *c, uint8_t tag, der_cursor *inner, der_tlv *out);

/* A non-negative INTEGER in minimal DER: `*mag` points at its magnitude
 * without the sign-padding zero byte (for zero, one 0x00 byte). Fails for
 * negative or non-minimal encodings. */
int der_read_uint(der_cursor *c, const unsigned char **mag, size_t *mag_len);

/* A BIT STRING whose bit count is a multiple of 8 (first contents octet 0):
 * `*bits` points after the unused-bits octet. */
int der_read_bits(der_cursor *c, const unsigned char **bits, size_t *bits_len);

/* An OBJECT IDENTIFIER with well-formed contents (non-empty, no 0x80
 * padding at the start of a subidentifier, last octet ends one). */
int der_read_oid(der_cursor *c, der_tlv *out);

/* 1 for well-formed OBJECT IDENTIFIER contents octets (as der_read_oid). */
int der_oid_well_formed(const unsigned char *v, size_t n);

/* The OID `t` (from der_read_oid) as text for messages: OpenSSL's long name
 * when it has one, else dotted decimal; "?" when it cannot be shown. */
void der_oid_text(const der_tlv *t, char *out, size_t cap);

/* OpenSSL's NID for the OID `t`, NID_undef (0) when it has none. */
int der_oid_nid(const der_tlv *t);

/* 1 when `t` is an OBJECT IDENTIFIER whose contents octets are `oid`. */
int der_oid_is(const der_tlv *t, const unsigned char *oid, size_t oid_len);

#define DER_OID_IS(t, arr) der_oid_is((t), (arr), sizeof(arr))

/* ---- writing ----------------------------------------------------------------
 *
 * A writer over a caller's buffer of fixed capacity. Elements are written
 * in order; a constructed one is opened with der_w_open (its length is not
 * known yet: four bytes are reserved) and closed with der_w_close, which
 * writes the length in its shortest form and moves the contents down over
 * the unused reserved bytes. Nothing is ever written past `cap`: a write
 * that does not fit, nesting beyond DER_MAX_DEPTH, a close without an open
 * or a length of 2^24 or more marks the writer failed, and later calls do
 * nothing. Check der_w_finish once at the end. */
typedef struct {
    unsigned char *buf;         /* borrowed, cap bytes */
    size_t cap;
    size_t len;                 /* bytes written */
    size_t open[DER_MAX_DEPTH]; /* where the contents of each open element start */
    int depth;
    int failed;
} der_writer;

void der_w_init(der_writer *w, unsigned char *buf, size_t cap);

/* Appends n bytes as they are (an already encoded element). */
void der_w_raw(der_writer *w, const void *p, size_t n);

/* Appends a primitive element: tag, length, the n contents octets at v. */
void der_w_prim(der_writer *w, uint8_t tag, const void *v, size_t n);

/* Opens a constructed element `tag`; its contents follow until der_w_close. */
void der_w_open(der_writer *w, uint8_t tag);

/* Closes the innermost open element. */
void der_w_close(der_writer *w);

/* 1 when nothing failed and every opened element was closed; the encoding
 * is then buf[0..len). */
int der_w_finish(const der_writer *w);

#endif
