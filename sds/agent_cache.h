/* The node agent's cache: the trust bundle and registration entries it got
 * from the server, one X.509-SVID per entry for a key generated here (the
 * private key never leaves the node), and the rotation of those SVIDs. It
 * implements sds_source_ops for the SDS and Workload API services.
 *
 * All functions run on the rpc loop thread. The cache never talks to the
 * network itself: it asks an agent_signer to sign batches of CSRs and to
 * report the workloads it refused (the node client in production, fakes in
 * tests) and calls on_change after every change of what workloads may
 * receive. See docs/agent.md.
 */
#ifndef MESHID_SDS_AGENT_CACHE_H
#define MESHID_SDS_AGENT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "meshid/agent/v1/agent.pb-c.h"
#include "sds/attest_unix.h"
#include "sds/source.h"
#include "sds/view.h"

typedef struct agent_cache agent_cache;

#define AGENT_BATCH_MAX 256          /* CSRs per BatchSignX509SVID call */
#define AGENT_BATCH_DELAY_MS 50      /* coalescing window for (re)issues */
#define AGENT_ENTRIES_MAX 65536      /* entries accepted from one Sync message */
#define AGENT_BUNDLE_CERTS_MAX 256   /* certificates in one trust bundle */
#define AGENT_DENIALS_QUEUE_MAX 1000 /* refusals held for reporting; more are dropped */
#define AGENT_DENIALS_BATCH_MAX 100  /* denials per ReportDenials call */
#define AGENT_DENIALS_REPORT_MS 1000 /* report interval while the queue is non-empty */
#define AGENT_DENIAL_COALESCE_MS 1000 /* same uid/pid refused again within: one report */
#define AGENT_TAINTED_MAX 1024       /* tainted authority ids accepted from one Sync message */

/* Result of a batch: `resp` is non-NULL iff st->code == RPC_OK; both live
 * during the callback only. */
typedef void (*agent_sign_cb)(const rpc_status *st,
                              const Meshid__Agent__V1__BatchSignResponse *resp, void *arg);

/* Result of a denial report: `resp` is non-NULL iff st->code == RPC_OK;
 * both live during the callback only. */
typedef void (*agent_report_cb)(const rpc_status *st,
                                const Meshid__Agent__V1__ReportDenialsResponse *resp, void *arg);

/* Who signs the cache's CSRs and hears about its refusals. Each call must
 * call cb exactly once (also on failure after returning OK, and at
 * shutdown); an error return means cb will not be called. report_denials
 * is optional: without it refusals are only logged and counted. */
typedef struct {
    mid_result (*batch_sign)(void *ctx, const Meshid__Agent__V1__BatchSignRequest *req,
                             agent_sign_cb cb, void *arg);
    mid_result (*report_denials)(void *ctx, const Meshid__Agent__V1__ReportDenialsRequest *req,
                                 agent_report_cb cb, void *arg);
} agent_signer_ops;

/* Which local API a source serves; recorded with each refusal. */
typedef enum { AGENT_API_UNKNOWN, AGENT_API_SDS, AGENT_API_WORKLOAD } agent_api;

typedef struct {
    rpc_loop *loop;                 /* timers; required */
    const char *trust_domain;       /* bare name of our trust domain; required */
    const agent_signer_ops *signer; /* required */
    void *signer_ctx;
    /* Called (on the loop) after the cache changed what it serves: new
     * SVIDs, a new bundle, entries added or removed. Optional. */
    void (*on_change)(void *arg);
    void *on_change_arg;
    /* Attestor for sds_source attest(); NULL: the cache creates its own. */
    attest_unix_ctx *attestor;
    /* Test hooks: rotation point as a fraction of the lifetime (0: 0.5) and
     * jitter as a fraction (<0: none, 0: 0.1). */
    double rotate_fraction;
    double rotate_jitter;
    /* Test hook: denial report interval, also the first retry delay
     * (doubling to 30 s while reports fail); 0: AGENT_DENIALS_REPORT_MS. */
    int64_t report_interval_ms;
} agent_cache_opts;

/* Creates an empty cache. The opts strings are copied. MID_E_INVALID for a
 * missing required field, MID_E_NOMEM. */
MID_RESULT agent_cache_new(const agent_cache_opts *o, agent_cache **out);

/* Cancels the cache's timers, detaches it from batches in flight (their
 * callbacks then only free their own state) and frees everything. NULL ok. */
void agent_cache_free(agent_cache *c);

/* Stops rotation and issuing: cancels the timers, detaches batches in
 * flight and ignores later changes' issuing needs. Views keep working on
 * what is held. Idempotent. */
void agent_cache_stop(agent_cache *c);

/* Replaces the trust bundle (DER certificates, the server's complete set).
 * SVIDs whose chain no longer verifies against the new roots are re-issued
 * at once, and so are entries whose last signed SVID was refused for not
 * verifying. Same roots with a new `sequence` only rebuild the views (they
 * carry the sequence). on_change runs before this returns. MID_E_INVALID
 * for a certificate that does not parse or an empty bundle,
 * MID_E_TOO_LARGE. The cache is unchanged on error. */
MID_RESULT agent_cache_set_bundle(agent_cache *c, const ProtobufCBinaryData *certs, size_t n,
                                  uint64_t sequence);

/* Replaces the list of tainted authorities (the server's complete list of
 * lowercase hex key ids; malformed ids are skipped with a warning) and
 * marks for immediate re-issue every SVID whose chain contains one: an
 * intermediate in the chain, or an issuer named by an authority key
 * identifier (so the root too). Apply the bundle first. An SVID signed
 * after the taint through a tainted authority is served with a warning,
 * never re-issued in a loop; one signed before it (a batch in flight) is
 * dropped and re-issued. *reissue (optional) gets the number marked.
 * MID_E_TOO_LARGE over AGENT_TAINTED_MAX (nothing changed). */
MID_RESULT agent_cache_set_tainted(agent_cache *c, char *const *ids, size_t n, size_t *reissue);

/* While held, nothing is sent for signing (what needs it waits); releasing
 * sends at once. The agent holds issuing from every (re)connect until it
 * has applied the server's first state, so a bundle always arrives before
 * SVIDs that may need it. A new cache is not held. */
void agent_cache_hold_issuing(agent_cache *c, bool hold);

/* Replaces the entry set (the server's complete list). New entries and
 * entries whose SPIFFE ID, TTL or DNS names changed are (re)issued; removed
 * entries drop their SVIDs. Entries with a bad SPIFFE ID or selector are
 * skipped with a warning. MID_E_TOO_LARGE over AGENT_ENTRIES_MAX. */
MID_RESULT agent_cache_set_entries(agent_cache *c, Meshid__Agent__V1__Entry *const *entries,
                                   size_t n, uint64_t revision);

/* Current bundle sequence / entries revision (0 before the first). */
uint64_t agent_cache_bundle_sequence(const agent_cache *c);
uint64_t agent_cache_entries_revision(const agent_cache *c);

/* Roots as concatenated PEM (NULL before the first bundle); valid until the
 * next agent_cache_set_bundle. */
const char *agent_cache_bundle_pem(const agent_cache *c);

/* Re-issues every SVID now (e.g. after the agent's own identity changed
 * trust domain material). */
void agent_cache_reissue_all(agent_cache *c);

/* Counters for tests and status output. */
typedef struct {
    size_t entries;        /* entries held */
    size_t issued;         /* entries with a current SVID */
    uint64_t batches;      /* BatchSign calls made */
    uint64_t signed_ok;    /* SVIDs received */
    uint64_t sign_errors;  /* failed items or calls */
    uint64_t unverified;   /* signed SVIDs refused: chain did not verify against the bundle */
    uint64_t taint_reissues; /* SVIDs marked for re-issue by a taint */
    uint64_t denials;      /* workloads refused (attest or no entry) */
    size_t denials_queued;     /* denial reports waiting or in flight */
    uint64_t denials_reported; /* denial reports the server accepted */
    uint64_t denials_dropped;  /* lost: queue full, or refused as invalid */
    uint64_t report_calls;     /* ReportDenials calls made */
    uint64_t report_errors;    /* ReportDenials calls that failed */
    uint64_t generation;   /* bumped on every change of what is served */
} agent_cache_stats;
void agent_cache_get_stats(const agent_cache *c, agent_cache_stats *out);

/* The SVID currently held for entry `entry_id`: its chain (PEM, leaf
 * first), serial (hex) and notAfter. MID_E_NOT_FOUND when the entry is
 * unknown or not issued yet. Pointers stay valid until the next change. */
MID_RESULT agent_cache_svid_info(const agent_cache *c, const char *entry_id,
                                 const char **chain_pem, const char **serial, int64_t *not_after);

/* The SDS / Workload API source backed by this cache. Refusals through it
 * are logged, counted and queued for ReportDenials (coalesced per uid and
 * pid within AGENT_DENIAL_COALESCE_MS, at most AGENT_DENIALS_QUEUE_MAX held,
 * sent every AGENT_DENIALS_REPORT_MS while any are held, retried with
 * backoff; drops are counted and named in the next report's reason).
 * agent_cache_source_for tags the refusals with the API that saw them. */
sds_source agent_cache_source(agent_cache *c);
sds_source agent_cache_source_for(agent_cache *c, agent_api api);

/* Views for a selector set ("type:value" strings, e.g. "unix:uid:1000"),
 * bypassing attestation: what the source's view() returns for a workload
 * with exactly these selectors. Errors as sds_source_ops.view. */
MID_RESULT agent_cache_view_for(agent_cache *c, const char *const *selectors, size_t n,
                                sds_view **out);

#endif
