/* Message encoding for the gRPC runtime: protobuf-c <-> grpc_byte_buffer,
 * the bounded per-call send queue, and small list helpers. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "lib/rpc_int.h"

void rpc_list_init(rpc_link *head) { head->prev = head->next = head; }

void rpc_list_push(rpc_link *head, rpc_link *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

void rpc_list_del(rpc_link *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

mid_result rpc_sendq_init(rpc_sendq *q, size_t cap)
{
    memset(q, 0, sizeof *q);
    MID_ENSURE(cap > 0 && cap <= RPC_MAX_SENDQ, MID_E_INVALID, "send queue length %zu", cap);
    q->ring = calloc(cap, sizeof *q->ring);
    MID_ENSURE_MEM(q->ring);
    q->cap = cap;
    return mid_ok();
}

mid_result rpc_sendq_push(rpc_sendq *q, grpc_byte_buffer *bb)
{
    MID_ENSURE(q->count < q->cap, MID_E_BUSY, "send queue full (%zu messages)", q->cap);
    q->ring[(q->head + q->count) % q->cap] = bb;
    q->count++;
    return mid_ok();
}

grpc_byte_buffer *rpc_sendq_pop(rpc_sendq *q)
{
    if (q->count == 0) return NULL;
    grpc_byte_buffer *bb = q->ring[q->head];
    q->ring[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return bb;
}

void rpc_sendq_clear(rpc_sendq *q)
{
    grpc_byte_buffer *bb;
    while ((bb = rpc_sendq_pop(q)) != NULL) grpc_byte_buffer_destroy(bb);
}

void rpc_sendq_free(rpc_sendq *q)
{
    if (q->ring) rpc_sendq_clear(q);
    if (q->inflight) grpc_byte_buffer_destroy(q->inflight);
    free(q->ring);
    memset(q, 0, sizeof *q);
}

mid_result rpc_pack(const ProtobufCMessage *msg, size_t max, grpc_byte_buffer **out)
{
    *out = NULL;
    MID_ENSURE(msg != NULL, MID_E_INVALID, "no message");
    size_t n = protobuf_c_message_get_packed_size(msg);
    MID_ENSURE(n <= max, MID_E_TOO_LARGE, "message of %zu bytes over the %zu byte limit", n, max);
    grpc_slice s = grpc_slice_malloc(n);
    size_t w = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    if (w != n) {
        grpc_slice_unref(s);
        MID_BAIL(MID_E_INTERNAL, "protobuf-c packed %zu of %zu bytes", w, n);
    }
    *out = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return mid_ok();
}

/* protobuf-c's unpack recurses once per nested message with no limit of its
 * own, so a request a few dozen KiB long that nests google.protobuf.Value /
 * ListValue (an Envoy Node's metadata) tens of thousands deep overflows the
 * loop thread's stack. We refuse nesting deeper than protobuf's own default
 * recursion limit before protobuf-c sees the bytes. */
#define RPC_MAX_DEPTH 100

static bool read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* False when a field of message type nests more than RPC_MAX_DEPTH levels
 * below `depth`, or a field number is 0. Follows only the framing it can
 * read: at a level whose framing is broken protobuf-c fails before it
 * unpacks that level's submessages, so stopping there bounds its recursion
 * too. */
static bool depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                     unsigned depth)
{
    if (depth > RPC_MAX_DEPTH) return false;
    size_t i = 0;
    while (i < len) {
        uint64_t tag, v;
        if (!read_varint(p, len, &i, &tag)) return true;
        /* Field number 0 is invalid. protobuf-c refuses it written in one
         * byte but keeps it as an unknown field when the tag is an overlong
         * varint (and would then echo a tag it refuses itself). */
        if (tag >> 3 == 0) return false;
        switch (tag & 7) {
        case 0:
            if (!read_varint(p, len, &i, &v)) return true;
            break;
        case 1:
            if (len - i < 8) return true;
            i += 8;
            break;
        case 5:
            if (len - i < 4) return true;
            i += 4;
            break;
        case 2: {
            if (!read_varint(p, len, &i, &v) || v > len - i) return true;
            const ProtobufCFieldDescriptor *f =
                tag >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3))
                    : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !depth_ok(f->descriptor, p + i, (size_t)v, depth + 1))
                return false;
            i += (size_t)v;
            break;
        }
        default:
            return true; /* groups and bad wire types: protobuf-c refuses them */
        }
    }
    return true;
}

rpc_unpack_res rpc_codec_unpack(const uint8_t *buf, size_t len,
                                const ProtobufCMessageDescriptor *desc, size_t max, arena *a,
                                ProtobufCMessage **out)
{
    *out = NULL;
    if (len > max) return RPC_UNPACK_TOO_LARGE;
    if (!depth_ok(desc, buf, len, 0)) return RPC_UNPACK_MALFORMED; /* before protobuf-c recurses */
    *out = protobuf_c_message_unpack(desc, arena_allocator(a), len, buf);
    if (!*out) return arena_exhausted(a) ? RPC_UNPACK_TOO_LARGE : RPC_UNPACK_MALFORMED;
    return RPC_UNPACK_OK;
}

rpc_unpack_res rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                          size_t max, arena *a, ProtobufCMessage **out)
{
    *out = NULL;
    if (grpc_byte_buffer_length(bb) > max) return RPC_UNPACK_TOO_LARGE;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) return RPC_UNPACK_MALFORMED; /* bad compression */
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    /* over max after decompression: TOO_LARGE, as before */
    rpc_unpack_res res =
        rpc_codec_unpack(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), desc, max, a, out);
    grpc_slice_unref(s);
    return res;
}

grpc_slice rpc_details_slice(const char *msg)
{
    if (!msg) return grpc_empty_slice();
    size_t n = strnlen(msg, RPC_MAX_DETAILS);
    return grpc_slice_from_copied_buffer(msg, n);
}
