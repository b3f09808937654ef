/* Envoy's Secret Discovery Service (envoy.service.secret.v3), served on an
 * rpc_server the caller owns (the agent's Unix socket server):
 *
 *   /envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets  SotW, bidi
 *   /envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets   delta, bidi
 *   /envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets   unary
 *
 * Resource names and their Secrets are described in sds/secrets.h; the
 * protocol behaviour (versions, nonces, ACK/NACK, push policy) in docs/sds.md.
 * Identities come from an sds_source (sds/source.h): every call is attested
 * when it starts and asks the source for the workload's current view each
 * time it evaluates.
 *
 * Threading: everything runs on the rpc loop thread.
 * Lifetime: create before rpc_server_start; free only after rpc_loop_free
 * (which ends every call and runs their on_done), because the registered
 * handlers point at the service. */
#ifndef MESHID_SDS_SDS_SERVICE_H
#define MESHID_SDS_SDS_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "sds/source.h"

#define SDS_M_STREAM "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
#define SDS_M_DELTA "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
#define SDS_M_FETCH "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"

typedef struct sds_service sds_service;

/* 0 in a field means its default. */
typedef struct {
    size_t max_names; /* resource names one stream or fetch may subscribe (128);
                       * more is INVALID_ARGUMENT */
} sds_service_opts;

/* Counters since sds_service_new (for tests, metrics and logs). */
typedef struct {
    uint64_t streams;       /* streams currently open (SotW + delta) */
    uint64_t responses;     /* discovery responses sent, all kinds */
    uint64_t pushes;        /* of which caused by sds_service_notify */
    uint64_t acks;
    uint64_t nacks;         /* requests with error_detail for our latest nonce */
    uint64_t stale;         /* requests carrying an old nonce (ignored in SotW) */
    uint64_t unknown_names; /* subscriptions to names the view cannot serve */
    uint64_t aborted;       /* streams ended by us (bad request, slow reader, denied) */
} sds_service_stats;

/* Registers the three methods on `srv` (before rpc_server_start). `src` is
 * copied; its ctx must outlive the service. opts may be NULL.
 * MID_E_NOMEM, or the errors of rpc_server_register (then the server may
 * hold some of the registrations: do not start it). */
MID_RESULT sds_service_new(rpc_server *srv, sds_source src, const sds_service_opts *opts,
                           sds_service **out);

/* The source changed: re-evaluates every open stream and pushes only the
 * subscribed secrets whose content changed (streams still waiting for a
 * first identity get their first response). Loop thread only. */
void sds_service_notify(sds_service *svc);

/* Bundle ACK tracking, for safe CA activation (docs/sds.md, "Bundle
 * acknowledgement"). A stream counts once a validation context it
 * subscribes (ROOTCA, ALL, spiffe://<td>) has been sent to its client; for
 * each we keep the newest bundle sequence (the sequence of the view's first
 * bundle) whose validation contexts the client has ACKed exactly, in every
 * name it subscribes. NACKed and superseded responses do not count.
 * Returns the number of such open streams and sets *min_seq to the smallest
 * sequence among them, UINT64_MAX when there are none. Loop thread. */
size_t sds_service_bundle_acked(const sds_service *svc, uint64_t *min_seq);

/* fn(arg) is called on the loop thread whenever the value above may have
 * changed (a stream started counting, ACKed a newer bundle, stopped counting
 * or ended); it may be called from inside service callbacks, so it should
 * only schedule work. fn NULL removes the hook. */
void sds_service_on_bundle_ack(sds_service *svc, void (*fn)(void *arg), void *arg);

/* Copies the counters. */
void sds_service_stats_get(const sds_service *svc, sds_service_stats *out);

/* Frees the service; NULL is a no-op. Only after rpc_loop_free (see above). */
void sds_service_free(sds_service *svc);

#endif
