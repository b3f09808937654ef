/* Shared by the *_request fuzz targets: decode bytes exactly as the rpc
 * runtime does (rpc_codec_unpack, same size limit, arena-backed) and check
 * the invariants every decoder must keep. Header-only on purpose: each
 * target is one translation unit linked on its own. */
#ifndef MESHID_TESTS_FUZZ_DECODE_H
#define MESHID_TESTS_FUZZ_DECODE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena.h"
#include "lib/result.h"
#include "lib/rpc_int.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

#define MAX_MSG RPC_DEFAULT_MAX_MSG
#define MAX_ARENA (4 * RPC_DEFAULT_MAX_MSG) /* the runtime's default per message */

static arena *g_msg;   /* decoded requests; reset by the target after each use */
static arena *g_again; /* re-decoding for the fixed-point check */

/* Creates the two arenas; call from LLVMFuzzerInitialize. */
static void fuzz_decode_init(void)
{
    CHECK(mid_is_ok(arena_new(MAX_ARENA, &g_msg)));
    CHECK(mid_is_ok(arena_new(MAX_ARENA, &g_again)));
}

/* decode -> pack -> decode -> pack gives the same bytes. */
static void check_fixed_point(const ProtobufCMessage *m)
{
    CHECK(protobuf_c_message_check(m));
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b1 = malloc(n ? n : 1);
    CHECK(b1 != NULL);
    CHECK(protobuf_c_message_pack(m, b1) == n);
    ProtobufCMessage *m2 = NULL;
    CHECK(rpc_codec_unpack(b1, n, m->descriptor, MAX_MSG, g_again, &m2) == RPC_UNPACK_OK);
    size_t n2 = protobuf_c_message_get_packed_size(m2);
    CHECK(n2 == n);
    uint8_t *b2 = malloc(n2 ? n2 : 1);
    CHECK(b2 != NULL);
    CHECK(protobuf_c_message_pack(m2, b2) == n2);
    CHECK(memcmp(b1, b2, n) == 0);
    free(b1);
    free(b2);
    arena_reset(g_again);
}

/* Decodes as the runtime does (into g_msg), plus the limit paths; NULL when
 * the bytes are not a valid message of `d`. */
static const ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                                      size_t size)
{
    ProtobufCMessage *m = NULL;
    rpc_unpack_res r = rpc_codec_unpack(data, size, d, MAX_MSG, g_msg, &m);
    CHECK(r == RPC_UNPACK_OK || r == RPC_UNPACK_MALFORMED); /* far below both limits */
    CHECK((r == RPC_UNPACK_OK) == (m != NULL));
    if (m) check_fixed_point(m);

    /* over the size limit: refused before decoding */
    ProtobufCMessage *t = NULL;
    if (size > 0) CHECK(rpc_codec_unpack(data, size, d, size - 1, g_again, &t) ==
                            RPC_UNPACK_TOO_LARGE && t == NULL);
    /* a tight arena: an exhausted arena is TOO_LARGE, never a crash or a
     * different verdict */
    arena *small = NULL;
    CHECK(mid_is_ok(arena_new(1 + size / 2, &small)));
    rpc_unpack_res rs = rpc_codec_unpack(data, size, d, MAX_MSG, small, &t);
    CHECK((rs == RPC_UNPACK_OK) == (t != NULL));
    if (r == RPC_UNPACK_OK) CHECK(rs == RPC_UNPACK_OK || rs == RPC_UNPACK_TOO_LARGE);
    else CHECK(rs == RPC_UNPACK_MALFORMED || rs == RPC_UNPACK_TOO_LARGE);
    CHECK((rs == RPC_UNPACK_TOO_LARGE) == arena_exhausted(small));
    arena_free(small);
    arena_reset(g_again);
    return m;
}

#endif
