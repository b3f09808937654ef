/* The SPIFFE Workload API (service SpiffeWorkloadAPI, no package), served on
 * an rpc_server the caller owns (the agent's Unix socket server):
 *
 *   /SpiffeWorkloadAPI/FetchX509SVID     server stream: SVIDs + bundles, pushed on change
 *   /SpiffeWorkloadAPI/FetchX509Bundles  server stream: every bundle, pushed on change
 *   /SpiffeWorkloadAPI/FetchJWTBundles   server stream: empty map (no JWT authorities yet)
 *   /SpiffeWorkloadAPI/FetchJWTSVID      UNIMPLEMENTED (JWT-SVIDs are a later issue)
 *   /SpiffeWorkloadAPI/ValidateJWTSVID   UNIMPLEMENTED
 *
 * Every call must carry the metadata "workload.spiffe.io: true", otherwise
 * INVALID_ARGUMENT "security header missing from request". A caller without
 * an identity gets PERMISSION_DENIED "no identity issued: <reason>"; one that
 * is attested but not issued yet waits for workload_api_notify. See
 * docs/sds.md.
 *
 * Threading and lifetime as for sds_service.h: loop thread only; create
 * before rpc_server_start; free after rpc_loop_free. */
#ifndef MESHID_SDS_WORKLOAD_API_H
#define MESHID_SDS_WORKLOAD_API_H

#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "sds/source.h"

#define WL_M_FETCH_X509_SVID "/SpiffeWorkloadAPI/FetchX509SVID"
#define WL_M_FETCH_X509_BUNDLES "/SpiffeWorkloadAPI/FetchX509Bundles"
#define WL_M_FETCH_JWT_SVID "/SpiffeWorkloadAPI/FetchJWTSVID"
#define WL_M_FETCH_JWT_BUNDLES "/SpiffeWorkloadAPI/FetchJWTBundles"
#define WL_M_VALIDATE_JWT_SVID "/SpiffeWorkloadAPI/ValidateJWTSVID"

#define WL_SECURITY_HEADER "workload.spiffe.io"

typedef struct workload_api workload_api;

typedef struct {
    uint64_t streams;     /* open streams */
    uint64_t responses;   /* messages sent */
    uint64_t pushes;      /* of which caused by notify */
    uint64_t no_header;   /* calls refused for the missing security header */
    uint64_t denied;      /* calls ended with PERMISSION_DENIED */
    uint64_t aborted;     /* streams ended by us for other reasons (slow reader, ...) */
} workload_api_stats;

/* Registers the five methods on `srv` (before rpc_server_start). `src` is
 * copied; its ctx must outlive the service. MID_E_INVALID, MID_E_NOMEM, or
 * the errors of rpc_server_register (then the server may hold some of
 * the registrations: do not start it). */
MID_RESULT workload_api_new(rpc_server *srv, sds_source src, workload_api **out);

/* The source changed: re-evaluates every open stream; a stream gets a new
 * message only when the content it carries changed (and its first one if it
 * was waiting for an identity). A workload that lost its identity has its
 * streams ended with PERMISSION_DENIED. Loop thread only. */
void workload_api_notify(workload_api *w);

/* Bundle delivery, for safe CA activation: every open FetchX509SVID /
 * FetchX509Bundles stream that has been sent a message counts (one still
 * waiting for its identity does not); for each we keep the bundle sequence
 * (of the view's first bundle) of the newest content written out to the
 * client in full (the send queue drained). Returns the number of such
 * streams and sets *min_seq to the smallest sequence among them,
 * UINT64_MAX when there are none. Loop thread. */
size_t workload_api_bundle_sent(const workload_api *api, uint64_t *min_seq);

/* fn(arg) is called on the loop thread whenever that value may have changed
 * (a stream started counting, newer content written, a counted stream ended);
 * it may be called from inside service callbacks, so it should only
 * schedule work. NULL removes. */
void workload_api_on_bundle_sent(workload_api *api, void (*fn)(void *arg), void *arg);

void workload_api_stats_get(const workload_api *w, workload_api_stats *out);

/* Frees the service; NULL is a no-op. Only after rpc_loop_free. */
void workload_api_free(workload_api *w);

#endif
