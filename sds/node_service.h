/* The server side of the node API (meshid.agent.v1.Node): join-token
 * attestation, agent SVID renewal, batched signing of workload CSRs for the
 * entries an agent serves, and the Sync stream that pushes the trust bundle
 * and the agent's entries, and ReportDenials, which audits the workloads an
 * agent refused (docs/server.md).
 *
 * Threading: every function here runs on the rpc loop thread (except
 * node_ca_pin_ca). Blocking work (token consumption, signing, durable
 * writes) runs on the workpool; the store and CA are only read on the loop
 * thread.
 *
 * The CA handle can be replaced while jobs sign with the old one (the server
 * reopens it when the active intermediate changes): each job pins the
 * handle it started with, and the old handle is closed when its last pin
 * is released.
 *
 * Identity: AttestAgent needs no client certificate; every other method
 * takes the caller's identity from its TLS client certificate (the port must
 * be set up with client_cert_optional) and requires it to be a known agent
 * that is not banned.
 */
#ifndef MESHID_SDS_NODE_SERVICE_H
#define MESHID_SDS_NODE_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "ca/ca.h"
#include "lib/arena.h"
#include "lib/result.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "meshid/agent/v1/agent.pb-c.h"
#include "storage/store.h"

typedef struct node_service node_service;

#define NODE_BATCH_MAX 256          /* requests per BatchSignX509SVID */
#define NODE_JOIN_TOKEN_MAX 256     /* bytes of a presented join token */
#define NODE_HOSTNAME_MAX 255       /* bytes of a reported hostname */
#define NODE_SYNC_POLL_MS 1000      /* how often Sync looks for changes */
/* ReportDenials limits (a call beyond them is INVALID_ARGUMENT); they keep
 * one denial's audit details well under STORE_AUDIT_DETAILS_MAX. */
#define NODE_DENIALS_MAX 100               /* denials per call */
#define NODE_DENIAL_SELECTORS_MAX 32       /* selectors per denial */
#define NODE_DENIAL_SELECTOR_TYPE_MAX 64   /* bytes of a selector type */
#define NODE_DENIAL_SELECTOR_VALUE_MAX 1024 /* bytes of a selector value */
#define NODE_DENIAL_REASON_MAX 1024        /* bytes of a reason */
#define NODE_DENIAL_API_MAX 32             /* bytes of the api name */

#define NODE_GATE_LIST_MAX 10      /* agents named in a gate refusal */

typedef struct {
    store *st;            /* borrowed; outlives the service */
    ca *ca;               /* owned by the service once node_service_new succeeded */
    workpool *wp;         /* borrowed */
    rpc_loop *loop;       /* borrowed */
    int64_t agent_svid_ttl; /* seconds; 0: CA_SVID_TTL_DEFAULT */
    int64_t sync_poll_ms; /* 0: NODE_SYNC_POLL_MS */
    void (*on_poll)(void *ctx); /* optional: called on the loop after every poll */
    void *on_poll_ctx;
} node_service_opts;

/* What the service knows of one agent that opened a Sync stream since this
 * process started (entries live until the service is freed). */
typedef struct {
    char *agent;           /* SPIFFE ID */
    bool acked;            /* it sent at least one AgentSyncRequest */
    uint64_t bundle_ack;   /* AgentSyncRequest.bundle_sequence_ack, newest */
    uint64_t rev_ack;      /* .entries_revision_ack */
    uint64_t sds_ack;      /* .sds_bundle_sequence_ack */
    unsigned streams;      /* open Sync streams: connected when > 0 */
    int64_t last_seen_ms;  /* last stream start, message or end (Unix ms) */
} node_agent_state;

/* A pinned CA handle (see the threading note above). */
typedef struct node_ca_pin node_ca_pin;

/* Creates the service and loads the trust bundle; takes ownership of o->ca
 * on success only. MID_E_NOMEM, or the CA's error when the bundle cannot be
 * read. */
MID_RESULT node_service_new(const node_service_opts *o, node_service **out);

/* Registers the five Node methods on `srv` (before rpc_server_start) and
 * starts the Sync poll timer. */
MID_RESULT node_service_register(node_service *ns, rpc_server *srv);

/* Closes every open Sync stream of agent `spiffe_id` with PERMISSION_DENIED
 * (called by the admin service right after an eviction is durable; the poll
 * catches evictions made by other processes). */
void node_service_agent_evicted(node_service *ns, const char *agent_id);

/* The newest acks agent `spiffe_id` sent on a Sync stream since this
 * process started; false when it sent none. */
bool node_service_agent_acks(const node_service *ns, const char *agent_id,
                             uint64_t *bundle_seq_ack, uint64_t *entries_rev_ack);

/* Every agent seen on a Sync stream (array owned by the service, valid until
 * the next Sync event on the loop); returns the count. */
size_t node_service_agents(const node_service *ns, const node_agent_state **out);

/* Reloads the bundle, the authorities and the entries revision now and
 * pushes to every stream that is behind (what the poll does), e.g. right
 * after an authority changed. */
void node_service_refresh(node_service *ns);

/* The bundle sequence at which this process first served root `root_id`
 * (roots in the bundle at start count as served at that sequence); 0 when
 * it is not in the bundle. */
uint64_t node_service_root_sequence(const node_service *ns, const char *root_id);

/* The activation gate: refreshes, then OK when every connected agent (one
 * with an open Sync stream; evicted agents' streams are closed) has sent a
 * sds_bundle_sequence_ack >= the first bundle sequence containing root_id.
 * Otherwise MID_E_STATE "not acknowledged by: a, b (+N more): ...", also
 * for a root not in the bundle. `pending` (may be NULL) receives the agent
 * list (up to NODE_GATE_LIST_MAX ids), n_pending (may be NULL) the count. */
MID_RESULT node_service_gate_check(node_service *ns, const char *root_id, char *pending,
                                   size_t cap, size_t *n_pending);

/* The current CA handle (borrowed; valid on the loop thread until the next
 * node_service_set_ca). */
ca *node_service_ca(const node_service *ns);

/* Pins the current handle for a job: it stays open until the pin is
 * released (on the loop thread), even if replaced meanwhile. Never NULL. */
node_ca_pin *node_service_ca_pin(node_service *ns);
/* The pinned handle; any thread. */
ca *node_ca_pin_ca(const node_ca_pin *p);
/* NULL is a no-op. */
void node_ca_pin_release(node_ca_pin *p);

/* Makes `c` (ownership taken, also on failure) the handle new jobs use; the
 * old one is closed once no job pins it. MID_E_NOMEM. */
MID_RESULT node_service_set_ca(node_service *ns, ca *c);

/* The trust bundle as last loaded: PEM (owned by the service, valid until
 * the next poll) and its sequence number. */
const char *node_service_bundle_pem(const node_service *ns, uint64_t *seq);

/* Stops the poll timer; call before rpc_loop_free. Open streams are ended
 * by rpc_loop_free. */
void node_service_shutdown(node_service *ns);

/* Frees the service; after rpc_loop_free (handlers may run until then).
 * NULL is a no-op. */
void node_service_free(node_service *ns);

/* ---- helpers shared with the admin service --------------------------------- */

/* The gRPC code for a meshid error: INVALID/TOO_LARGE -> INVALID_ARGUMENT,
 * NOT_FOUND, EXISTS -> ALREADY_EXISTS, DENIED -> PERMISSION_DENIED, STATE ->
 * FAILED_PRECONDITION, BUSY -> UNAVAILABLE, the rest INTERNAL. */
rpc_code node_rpc_code(mid_err err);

/* Fills `out` (initialised here) from a stored entry; strings and arrays are
 * copied into `a`. MID_E_NOMEM when the arena is exhausted. */
MID_RESULT node_entry_to_proto(arena *a, const store_entry *e, Meshid__Agent__V1__Entry *out);

#endif
