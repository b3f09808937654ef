/* The Aggregated Discovery Service (envoy.service.discovery.v3), served on
 * one or more rpc_servers the caller owns (the plaintext xDS port and the TLS
 * port):
 *
 *   StreamAggregatedResources  SotW, bidi
 *   DeltaAggregatedResources   delta (incremental), bidi
 *
 * Every stream belongs to one proxy. On the stream's first request the
 * server asks `resolve` for that proxy's snapshot (meshcore/xds_snapshot.h)
 * and serves CDS, EDS, LDS and RDS from it; after ads_server_notify (debounced)
 * it resolves every open stream again and pushes only what changed, types in
 * the order CDS, EDS, LDS, RDS. Versions, nonces, ACK/NACK, wildcard and
 * delta rules follow wire-contracts §6; docs/xds.md ("ADS protocol
 * behaviour") describes exactly what is sent when.
 *
 * Threading: everything runs on the rpc loop thread, except
 * ads_server_notify_async, which any thread may call.
 * Lifetime: ads_server_new and ads_server_register before rpc_server_start;
 * ads_server_shutdown on the loop thread before rpc_loop_free (or not at
 * all); ads_server_free only after rpc_loop_free, because the registered
 * handlers point at the server. */
#ifndef MESHID_MESHCORE_ADS_H
#define MESHID_MESHCORE_ADS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "lib/result.h"
#include "lib/rpc.h"
#include "meshcore/xds_snapshot.h"

#define ADS_M_STREAM "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define ADS_M_DELTA "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

#define ADS_NAME_MAX 1024 /* bytes of one requested resource name; longer: INVALID_ARGUMENT */

typedef struct ads_server ads_server;

typedef struct {
    /* Resolves a stream's proxy to its current snapshot. Called on the loop
     * thread when the first request of a stream arrives (node = that
     * request's node, decoded) and again for every open stream after
     * ads_server_notify (debounced; node = the stream's first node).
     * peer_spiffe_id: the TLS peer's SPIFFE ID (rpc_call_peer), NULL on a
     * plaintext server. Returns a new reference in *out (sealed). Should be
     * cheap: return the same snapshot object while nothing changed for the
     * proxy (the server then does no work for that stream).
     * Errors end the stream: MID_E_DENIED -> PERMISSION_DENIED,
     * MID_E_INVALID -> INVALID_ARGUMENT, MID_E_NOT_FOUND ->
     * FAILED_PRECONDITION (the status message is the error message);
     * MID_E_NOMEM -> RESOURCE_EXHAUSTED, others -> UNAVAILABLE (message
     * logged, not sent). Required. */
    MID_RESULT (*resolve)(void *ctx, const Envoy__Config__Core__V3__Node *node,
                          const char *peer_spiffe_id, xds_snapshot **out);
    void *ctx;
    int64_t debounce_ms;          /* 0: 100 */
    size_t max_names;             /* names per type per stream; 0: 100000 */
    const char *control_plane_id; /* DiscoveryResponse.control_plane.identifier
                                   * (e.g. "meshid"); NULL: none. Copied. */
    /* SotW EDS and RDS responses carry every subscribed resource whenever
     * one of them changed (true), or only the changed and newly subscribed
     * ones (false, the default: allowed by the protocol for these types and
     * much cheaper with many clusters). LDS and CDS responses are always
     * complete. */
    bool sotw_full_eds_rds;
    /* Bytes of responses queued for sending, over all streams. Beyond it,
     * streams wait (their updates merge) and resume in FIFO order as other
     * streams' queues drain, so a push to many proxies never holds a copy
     * per proxy at once. 0: 32 MiB. */
    size_t max_queued_bytes;
    /* While streams wait for the budget, a stream whose queue has not
     * drained for this long is ended as a slow reader (it would hold the
     * budget forever). 0: 30000. */
    int64_t stall_ms;
} ads_opts;

/* Creates the server (no streams yet). `o` and o->ctx must outlive it.
 * MID_E_INVALID without resolve, MID_E_NOMEM, MID_E_CRYPTO (nonce seed). */
MID_RESULT ads_server_new(rpc_loop *loop, const ads_opts *o, ads_server **out);

/* Registers both ADS methods on `srv` (before rpc_server_start); may be
 * called for several servers (plaintext and TLS). Errors of
 * rpc_server_register (the server may then hold one registration: do not
 * start it). */
MID_RESULT ads_server_register(ads_server *a, rpc_server *srv);

/* The registry changed: within debounce_ms every open stream is resolved
 * again and what changed is pushed. Repeated calls within the window are
 * merged. Loop thread. No-op after ads_server_shutdown. */
void ads_server_notify(ads_server *a);

/* ads_server_notify from any thread (posted to the loop; calls before the
 * post ran are merged). Safe until rpc_loop_free starts. */
void ads_server_notify_async(ads_server *a);

/* Counters since ads_server_new. */
typedef struct {
    uint64_t streams;   /* streams currently open (SotW + delta) */
    uint64_t responses; /* discovery responses sent */
    uint64_t pushes;    /* of which caused by a notify (not by a request) */
    uint64_t acks;
    uint64_t nacks;     /* error_detail for the latest nonce of a type */
    uint64_t stale;     /* requests with a nonce that is not the latest */
    uint64_t aborted;   /* streams ended by us (bad request, denied, slow reader) */
    uint64_t resolves;  /* calls of opts.resolve */
    uint64_t names;     /* distinct resource names subscribed by open streams
                         * (each stored once per server) */
    uint64_t queued_bytes; /* responses queued now (see max_queued_bytes) */
    uint64_t waiting;   /* streams waiting for the queue budget now */
    uint64_t waits;     /* times a stream had to wait for it */
} ads_stats;

void ads_server_stats(const ads_server *a, ads_stats *out);

/* Test/bench hook, called on the loop thread after each ACK: the stream's
 * id (unique per server, from 1), the type and the version ACKed (the
 * snapshot type version that went with the ACKed nonce). fn NULL removes it. */
void ads_server_set_ack_hook(ads_server *a,
                             void (*fn)(void *ctx, uint64_t stream_id, xds_type t, const char *version),
                             void *ctx);

/* Stops pushing: cancels the debounce timer and ends every open stream with
 * UNAVAILABLE. Loop thread, before rpc_loop_free. Idempotent. */
void ads_server_shutdown(ads_server *a);

/* Frees the server; after rpc_loop_free. NULL is a no-op. */
void ads_server_free(ads_server *a);

#endif
