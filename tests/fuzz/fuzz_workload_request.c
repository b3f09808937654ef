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
#include "tests/fuzz/fuzz_decode.h"
#include "spiffe/workload.pb-c.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);




int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_OFF);
    fuzz_decode_init();
    return 0;
}

/* ---- decoding: tests/fuzz/fuzz_decode.h -------------------------------------- */



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
