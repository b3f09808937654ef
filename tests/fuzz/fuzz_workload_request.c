/* libFuzzer target for the Workload API's request intake (sds/workload_api.c).
 *
 * The bytes are decoded as the runtime decodes a request (rpc_codec_unpack,
 * the server's size limit, an arena with its per-message limit) as each of
 * the five request types the service registers: X509SVIDRequest,
 * X509BundlesRequest and JWTBundlesRequest (empty messages whose content the
 * service ignores), JWTSVIDRequest and ValidateJWTSVIDRequest (answered
 * UNIMPLEMENTED). Trivial messages, but decoding must never crash, whatever
 * unknown fields the bytes carry.
 *
 * Aborts when decoding is not a fixed point (decode, pack, decode, pack:
 * equal bytes), when a message over the size limit is not TOO_LARGE, when a
 * tight arena turns a verdict into anything but TOO_LARGE, or when a
 * decoded JWT request holds a NULL string.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/arena.h"
#include "lib/log.h"
#include "lib/result.h"
#include "lib/rpc_int.h"
#include "spiffe/workload.pb-c.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

#define MAX_MSG RPC_DEFAULT_MAX_MSG
#define MAX_ARENA (4 * RPC_DEFAULT_MAX_MSG) /* rpc_server.c's default per message */

static arena *g_msg, *g_again;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_OFF);
    CHECK(mid_is_ok(arena_new(MAX_ARENA, &g_msg)));
    CHECK(mid_is_ok(arena_new(MAX_ARENA, &g_again)));
    return 0;
}

/* ---- decoding (as in every *_request target) --------------------------------- */

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

static const ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                                      size_t size)
{
    ProtobufCMessage *m = NULL;
    rpc_unpack_res r = rpc_codec_unpack(data, size, d, MAX_MSG, g_msg, &m);
    CHECK(r == RPC_UNPACK_OK || r == RPC_UNPACK_MALFORMED);
    CHECK((r == RPC_UNPACK_OK) == (m != NULL));
    if (m) check_fixed_point(m);
    ProtobufCMessage *t = NULL;
    if (size > 0)
        CHECK(rpc_codec_unpack(data, size, d, size - 1, g_again, &t) == RPC_UNPACK_TOO_LARGE);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)decode(&x509_svidrequest__descriptor, data, size);
    arena_reset(g_msg);
    (void)decode(&x509_bundles_request__descriptor, data, size);
    arena_reset(g_msg);
    (void)decode(&jwtbundles_request__descriptor, data, size);
    arena_reset(g_msg);
    const JWTSVIDRequest *j = (const JWTSVIDRequest *)decode(&jwtsvidrequest__descriptor, data, size);
    if (j) {
        CHECK(j->spiffe_id != NULL);
        for (size_t i = 0; i < j->n_audience; i++) CHECK(j->audience[i] != NULL);
    }
    arena_reset(g_msg);
    const ValidateJWTSVIDRequest *v =
        (const ValidateJWTSVIDRequest *)decode(&validate_jwtsvidrequest__descriptor, data, size);
    if (v) CHECK(v->audience != NULL && v->svid != NULL);
    arena_reset(g_msg);
    return 0;
}
