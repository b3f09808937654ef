/* The node agent (`meshid agent`, and the agent half of `meshid dev`):
 * attests itself to the server with a join token once, keeps its own
 * X.509-SVID (persisted under <data_dir>/agent/, renewed at half life),
 * follows the server's Sync stream (trust bundle + entries) into the agent
 * cache, and serves SDS and the Workload API on one Unix socket, reporting
 * the workloads it refuses there to the server's audit log.
 *
 * Everything runs on the rpc loop the agent is started on; agent_start,
 * agent_stop and the accessors must be called on that loop's thread (or
 * before rpc_loop_run). Lifecycle:
 *
 *   agent_start(&opts, loop, &a);   ... rpc_loop_run(loop) ...
 *   agent_stop(a);                  // before rpc_loop_free
 *   rpc_loop_free(loop);
 *   agent_free(a);                  // the services' handlers are gone now
 *
 * See docs/agent.md.
 */
#ifndef MESHID_SDS_AGENT_H
#define MESHID_SDS_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "sds/agent_cache.h"
#include "sds/source.h"

typedef struct agent agent;

#define AGENT_BACKOFF_MIN_MS 500
#define AGENT_BACKOFF_MAX_MS 30000
#define AGENT_SOCKET_MODE 0666 /* attestation, not file modes, gates the socket */

typedef struct {
    const char *server_addr;      /* "host:port" of the node API; required */
    const char *server_name;      /* optional TLS name override (default: the host) */
    const char *trust_bundle_pem; /* PEM roots trusted to bootstrap; required unless
                                   * <data_dir>/agent/bundle.pem exists */
    const char *trust_domain;     /* optional: default from the bundle root's URI SAN */
    const char *join_token;       /* required when no identity is persisted */
    const char *data_dir;         /* required; identity in <data_dir>/agent/ */
    const char *socket_path;      /* SDS + Workload API socket; NULL: none (tests) */
    const char *hostname;         /* reported to the server; NULL: gethostname() */
    /* Called once on the loop when the agent cannot go on (bad join token,
     * expired identity without a token, ...); `msg` lives during the call.
     * The agent keeps serving what it has; the caller decides to stop. */
    void (*on_fatal)(void *arg, const char *msg);
    void *on_fatal_arg;
    /* Test hooks: 0 means the default. */
    int64_t backoff_min_ms;
    int64_t backoff_max_ms;
    double rotate_fraction;       /* workload SVIDs, see agent_cache_opts */
    double rotate_jitter;
    int64_t report_interval_ms;   /* denial reports, see agent_cache_opts */
} agent_opts;

/* Starts the agent on `loop`: loads or creates the data directory, reuses a
 * persisted identity or attests with the join token (asynchronously), and
 * when socket_path is set creates the Unix socket server with the SDS and
 * Workload API services. Strings in opts are copied. Errors (synchronous
 * only): MID_E_USAGE for missing options, MID_E_INVALID for an unreadable
 * bundle or persisted identity, MID_E_STATE for an expired persisted
 * identity without a join token, MID_E_EXISTS when the socket is in use,
 * MID_E_IO, MID_E_NOMEM. */
MID_RESULT agent_start(const agent_opts *opts, rpc_loop *loop, agent **out);

/* Stops timers, the Sync stream and the node client; the cache keeps
 * serving what it holds until rpc_loop_free. Idempotent; NULL ok. */
void agent_stop(agent *a);

/* Frees everything; only after rpc_loop_free (or, when socket_path was
 * NULL, after agent_stop). NULL ok. */
void agent_free(agent *a);

/* The agent's SPIFFE ID ("" before attestation). */
const char *agent_spiffe_id(const agent *a);

/* The cache (workload SVIDs, bundle, counters) and its sds_source. */
agent_cache *agent_get_cache(agent *a);
sds_source agent_source(agent *a);

/* True while the Sync stream is up and has delivered a state. */
bool agent_synced(const agent *a);

/* Counters for tests and status. */
typedef struct {
    uint64_t attests;      /* AttestAgent calls that succeeded */
    uint64_t renewals;     /* RenewAgent calls that succeeded */
    uint64_t syncs;        /* Sync streams opened */
    uint64_t sync_msgs;    /* Sync responses applied */
    uint64_t acks;         /* Sync acks sent */
    uint64_t last_sds_ack; /* sds_bundle_sequence_ack of the last ack sent */
    uint64_t reconnects;   /* Sync streams that ended and were retried */
} agent_stats;
void agent_get_stats(const agent *a, agent_stats *out);

#endif
