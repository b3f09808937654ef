/* Where the SDS and Workload API services get identities from: the agent
 * cache implements this table; tests implement it with fixtures. All calls
 * happen on the rpc loop thread. */
#ifndef MESHID_SDS_SOURCE_H
#define MESHID_SDS_SOURCE_H

#include "lib/result.h"
#include "lib/rpc.h"
#include "sds/view.h"

/* An attested workload (opaque to the services). */
typedef struct sds_workload sds_workload;

typedef struct {
    /* Attests the caller of a new call or stream. On success *out identifies
     * the workload for later view() calls and is freed with workload_free.
     * MID_E_DENIED (with a message for the client) when the peer cannot be
     * attested; the source audits the refusal itself. */
    mid_result (*attest)(void *ctx, const rpc_peer *peer, sds_workload **out);
    /* The workload's current view, as a new reference. MID_E_DENIED when no
     * registration entry matches it (audited by the source), MID_E_NOT_FOUND
     * while matched but not yet issued (the services wait for a notify). */
    mid_result (*view)(void *ctx, const sds_workload *w, sds_view **out);
    void (*workload_free)(void *ctx, sds_workload *w);
} sds_source_ops;

typedef struct {
    const sds_source_ops *ops;
    void *ctx;
} sds_source;

#endif
