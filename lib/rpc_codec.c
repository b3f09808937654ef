/* Message encoding for the gRPC runtime: protobuf-c <-> grpc_byte_buffer,
 * the bounded per-call send queue, and small list helpers. */
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

rpc_unpack_res rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                          size_t max, arena *a, ProtobufCMessage **out)
{
    *out = NULL;
    if (grpc_byte_buffer_length(bb) > max) return RPC_UNPACK_TOO_LARGE;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) return RPC_UNPACK_MALFORMED; /* bad compression */
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    rpc_unpack_res res = RPC_UNPACK_OK;
    if (GRPC_SLICE_LENGTH(s) > max) {
        res = RPC_UNPACK_TOO_LARGE; /* decompressed past the limit */
    } else {
        *out = protobuf_c_message_unpack(desc, arena_allocator(a), GRPC_SLICE_LENGTH(s),
                                         GRPC_SLICE_START_PTR(s));
        if (!*out) res = arena_exhausted(a) ? RPC_UNPACK_TOO_LARGE : RPC_UNPACK_MALFORMED;
    }
    grpc_slice_unref(s);
    return res;
}

grpc_slice rpc_details_slice(const char *msg)
{
    if (!msg) return grpc_empty_slice();
    size_t n = strnlen(msg, RPC_MAX_DETAILS);
    return grpc_slice_from_copied_buffer(msg, n);
}
