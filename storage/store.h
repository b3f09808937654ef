/* The store: meshid's durable state behind one backend-neutral interface.
 *
 * A `store` is opened from a location string: a path (or "sqlite:PATH") for
 * the embedded SQLite backend; "postgres:..." is reserved for the PostgreSQL
 * backend of a later issue. No SQLite or libpq type ever appears here.
 *
 * Writes go through one writer thread per store that batches concurrent
 * requests into one transaction (group commit): every write call below blocks
 * until its transaction is durable on disk, or fails as a whole. A write that
 * carries an audit event commits the event in the same transaction, chained
 * to the previous one (see storage/audit.h), so a row never exists without
 * its event and vice versa (a write's `ev` may be NULL only in tests).
 * Times in records are Unix seconds; audit ts_ms is Unix milliseconds.
 *
 * Writes of entries, join tokens and agents follow the same rules.
 *
 * Strings in records read back are heap copies owned by the record; free
 * them with the matching *_clear / *_free function. Thread-safe: any thread
 * may call any function on one store.
 */
#ifndef MESHID_STORAGE_STORE_H
#define MESHID_STORAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"

typedef struct store store;

#define STORE_HASH_LEN 32

/* Size limits (bytes, excluding the NUL); longer input is MID_E_TOO_LARGE. */
#define STORE_AUDIT_DETAILS_MAX (64 * 1024) /* audit details JSON */
#define STORE_AUDIT_TEXT_MAX (4 * 1024)     /* every other audit text field */
#define STORE_PEM_MAX (256 * 1024)          /* authority cert_pem, chain_pem */
#define STORE_CERT_DER_MAX (64 * 1024)      /* an issued certificate's DER */
#define STORE_TEXT_MAX (4 * 1024)           /* every other record text field */

/* ---- audit events ---------------------------------------------------------- */

typedef struct {
    int64_t seq;       /* assigned by the store on append, 1-based, gap-free */
    int64_t ts_ms;     /* Unix ms; 0 on append means "now" */
    const char *actor; /* who acted: "cli:uid=1000", "agent:spiffe://...", "system" */
    const char *event; /* type, e.g. "ca.init", "svid.issue", "svid.refuse" */
    const char *spiffe_id; /* subject, may be NULL */
    const char *serial;    /* certificate serial (hex), may be NULL */
    const char *outcome;   /* "ok" | "denied" | "error" */
    const char *reason;    /* human text, may be NULL (stored as "") */
    const char *details;   /* JSON object text, may be NULL (stored as "{}") */
    uint8_t prev_hash[STORE_HASH_LEN]; /* filled by the store */
    uint8_t hash[STORE_HASH_LEN];      /* filled by the store */
} store_audit_event;

/* An audit event read back: same fields, owned strings. */
typedef struct {
    store_audit_event ev; /* its const char * fields point into owned memory */
    char *owned_;         /* backing storage; free with store_audit_row_clear */
} store_audit_row;

void store_audit_row_clear(store_audit_row *row);

typedef struct {
    int64_t since_ms;      /* ts_ms >= since_ms; 0: no lower bound */
    int64_t until_ms;      /* ts_ms < until_ms; 0: no upper bound */
    const char *spiffe_id; /* NULL: any */
    const char *event;     /* NULL: any */
    const char *outcome;   /* NULL: any */
    int64_t limit;         /* 0: no limit; newest `limit` rows, returned in seq order */
    int64_t after_seq;     /* only rows with seq > after_seq (0: all) */
} store_audit_filter;

/* Called once per row in ascending seq order; `row` is only valid during the
 * call. Return non-zero to stop early (not an error). The rows come from
 * one consistent snapshot; the callback may call other store functions. */
typedef int (*store_audit_cb)(void *ctx, const store_audit_event *row);

/* Appends one event (no other write). Blocks until durable. On success, if
 * ev_out is non-NULL, *ev_out is a copy of *ev (its strings are ev's, reason
 * and details with their stored defaults) with the assigned seq, ts_ms and
 * hashes. MID_E_INVALID / MID_E_TOO_LARGE for an event storage/audit.h
 * refuses (nothing written). */
MID_RESULT store_audit_append(store *st, const store_audit_event *ev, store_audit_event *ev_out);

/* Streams rows matching the filter. */
MID_RESULT store_audit_query(store *st, const store_audit_filter *f, store_audit_cb cb, void *ctx);

/* The newest event's seq and hash; seq 0 and an all-zero hash when empty. */
MID_RESULT store_audit_head(store *st, int64_t *seq, uint8_t hash[STORE_HASH_LEN]);

/* Reads one event by seq; MID_E_NOT_FOUND if absent. */
MID_RESULT store_audit_get(store *st, int64_t seq, store_audit_row *out);

/* Result of recomputing the chain. */
typedef struct {
    int ok;                /* 1 when every link holds */
    int64_t events;        /* rows examined */
    int64_t head_seq;      /* last seq seen */
    uint8_t head_hash[STORE_HASH_LEN];
    int64_t broken_seq;    /* first bad event (or the seq where one is missing) */
    char reason[256];      /* what is wrong with it */
} store_audit_verdict;

/* Recomputes every hash in seq order and reports the first broken link:
 * a changed row, a missing or inserted seq, a reordered row. Returns an
 * error only when the database cannot be read; tampering is reported in
 * the verdict. */
MID_RESULT store_audit_verify(store *st, store_audit_verdict *out);

/* ---- authorities --------------------------------------------------------------- */

typedef struct {
    const char *id;        /* lowercase hex subject key identifier */
    const char *kind;      /* "root" | "intermediate" */
    const char *state;     /* "prepared" | "active" | "old" | "tainted" | "revoked" | "removed" */
    const char *trust_domain;
    const char *parent_id; /* issuing authority id, NULL for a self-signed root or upstream */
    const char *cert_pem;  /* the authority's certificate */
    const char *chain_pem; /* certificates above it up to (excluding) the root, may be "" */
    const char *key_ref;   /* where the private key lives: a path relative to the data dir */
    int64_t not_before;
    int64_t not_after;
    int upstream;          /* 1 when adopted from an upstream (plug-in) CA */
    int64_t created_at;
} store_authority;

typedef struct {
    store_authority a; /* fields point into owned memory */
    char *owned_;
} store_authority_row;

void store_authority_row_clear(store_authority_row *row);

/* Inserts or replaces (by id) an authority together with its audit event
 * (ev may be NULL only in tests). Blocks until durable. A parent_id must
 * name an authority already stored (MID_E_INVALID otherwise). */
MID_RESULT store_authority_put(store *st, const store_authority *a, const store_audit_event *ev);

#define STORE_PUT_ALL_MAX 8

/* Inserts or replaces n (1..STORE_PUT_ALL_MAX) authorities, a[i] with its
 * audit event ev[i] (ev may be NULL only in tests), in one transaction: all
 * are written or none. Blocks until durable. */
MID_RESULT store_authority_put_all(store *st, const store_authority *a,
                                   const store_audit_event *ev, size_t n);

/* Changes one authority's state, checking it is still `from_state`
 * (MID_E_STATE otherwise, nothing written), with its audit event. */
MID_RESULT store_authority_set_state(store *st, const char *id, const char *from_state,
                                     const char *to_state, const store_audit_event *ev);

/* One checked state change of store_authority_apply. */
typedef struct {
    const char *id;         /* full lowercase hex id */
    const char *from_state; /* the state the caller saw */
    const char *to_state;
} store_authority_transition;

/* One lifecycle step as ONE transaction: first the transitions, each an
 * update of tr[i].id from tr[i].from_state to tr[i].to_state with its audit
 * event tr_ev[i]; then the new authorities put[i] with put_ev[i] (insert
 * only). Events are chained in that order. All or nothing: a transition
 * whose row is not in from_state any more (another process changed it since
 * the caller read it) rolls everything back with MID_E_STATE "authority X
 * is S, not F", an unknown id with MID_E_NOT_FOUND, a put whose id exists
 * with MID_E_EXISTS; a put's parent_id must be stored (MID_E_INVALID). So
 * two processes that read the same snapshot cannot both apply a change:
 * the second fails and nothing of it is written. 1 <= n_put + n_tr <=
 * STORE_PUT_ALL_MAX (MID_E_INVALID otherwise); the event arrays may be NULL
 * only in tests. Blocks until durable. */
MID_RESULT store_authority_apply(store *st, const store_authority *put,
                                 const store_audit_event *put_ev, size_t n_put,
                                 const store_authority_transition *tr,
                                 const store_audit_event *tr_ev, size_t n_tr);

/* All authorities, oldest first. *rows is an array the caller frees with
 * store_authority_list_free. */
MID_RESULT store_authority_list(store *st, store_authority_row **rows, size_t *n);
void store_authority_list_free(store_authority_row *rows, size_t n);

/* ---- issued certificates ------------------------------------------------------- */

typedef struct {
    const char *serial;       /* lowercase hex, unique */
    const char *spiffe_id;
    const char *key_fp;       /* lowercase hex SHA-256 of the SubjectPublicKeyInfo DER */
    int64_t not_before;
    int64_t not_after;
    const char *authority_id; /* signing authority */
    const char *status;       /* "valid" | "revoked" */
    int64_t issued_at;
    const unsigned char *cert_der; /* the certificate, DER: 1..STORE_CERT_DER_MAX bytes */
    size_t cert_der_len;
} store_cert;

typedef struct {
    store_cert c;
    char *owned_;
    unsigned char *der_owned_;
} store_cert_row;

void store_cert_row_clear(store_cert_row *row);

/* Records an issued certificate and its audit event in one transaction;
 * returns only when both are durable. MID_E_EXISTS on a duplicate serial,
 * MID_E_INVALID for an unknown authority_id or a malformed field. */
MID_RESULT store_cert_insert(store *st, const store_cert *c, const store_audit_event *ev);

#define STORE_CERT_MANY_MAX 256

/* Records n (1..STORE_CERT_MANY_MAX) certificates, certs[i] with its audit
 * event evs[i] (evs may be NULL only in tests), as ONE writer request: one
 * queue entry, one transaction, one wake-up. Each certificate is applied in
 * its own savepoint, so one that is refused (duplicate serial, unknown
 * authority) does not fail the others. Returns only when every certificate
 * that succeeded is durable. results[i] is certificate i's outcome, exactly
 * what store_cert_insert would have returned for it (a certificate whose
 * input is malformed is refused on the caller's thread and never queued).
 * The return value is MID_E_OK when all n were recorded, otherwise the
 * first failed certificate's error, which this thread's last error then
 * describes. MID_E_INVALID, with nothing written and `results` untouched,
 * for missing arguments or n out of range. */
MID_RESULT store_cert_insert_many(store *st, const store_cert *certs, const store_audit_event *evs,
                                  size_t n, mid_result *results);

/* store_cert_insert_many in two halves, so that the caller can go on
 * working while the certificates are written (ca_issue_batch signs other
 * requests meanwhile). _start validates exactly as store_cert_insert_many
 * does, filling results[i] for every certificate refused on this thread,
 * queues the rest as one writer request without waiting for it, and
 * returns MID_E_OK with *out set; MID_E_INVALID with nothing queued and
 * *out untouched for missing arguments or n out of range, MID_E_NOMEM
 * likewise. Until the matching store_cert_batch_wait, `certs`, `evs`, the
 * strings and bytes they point to and `results` must stay valid and
 * unchanged, and nothing of the request is durable: no certificate may be
 * handed out yet. `notify`, if not NULL, is called once with `arg` on the
 * store's writer thread when the request is finished (committed or failed),
 * just before store_cert_batch_wait stops blocking; it must be quick and
 * must not call the store. store_cert_batch_wait(b) blocks until the
 * request is finished, fills the remaining results[i], frees b and returns
 * what store_cert_insert_many would have returned (this thread's last
 * error then describes the first failed certificate). It must be called
 * exactly once for every successful _start, before store_close. */
typedef struct store_cert_batch store_cert_batch;
MID_RESULT store_cert_insert_many_start(store *st, const store_cert *certs,
                                        const store_audit_event *evs, size_t n,
                                        mid_result *results, void (*notify)(void *arg),
                                        void *arg, store_cert_batch **out);
MID_RESULT store_cert_batch_wait(store_cert_batch *b);

/* Reads one certificate by serial; MID_E_NOT_FOUND if absent. */
MID_RESULT store_cert_get(store *st, const char *serial, store_cert_row *out);

/* Counts certificates signed by `authority_id` with status valid and
 * not_after > now. */
MID_RESULT store_cert_count_live(store *st, const char *authority_id, int64_t now, int64_t *n);

/* ---- registration entries ----------------------------------------------------- */

/* A selector as stored: opaque strings compared by exact equality, e.g.
 * {"unix", "uid:1000"}. The store checks only their shape (type non-empty
 * without ':', value non-empty, no control bytes); identity/entry.h knows the
 * rules of each type. */
typedef struct {
    const char *type;
    const char *value;
} store_selector;

#define STORE_ENTRY_ID_MAX 64        /* entry id: 1-64 of [0-9a-f-] (a UUID fits) */
#define STORE_ENTRY_SELECTORS_MAX 64 /* selectors per entry (at least 1) */
#define STORE_ENTRY_DNS_MAX 32       /* dns_names per entry */
#define STORE_SELECTOR_TYPE_MAX 64   /* bytes in a selector type */
#define STORE_SELECTOR_VALUE_MAX 4224 /* bytes in a selector value */

typedef struct {
    const char *id;        /* NULL on create: the store assigns 32 random lowercase hex */
    const char *spiffe_id; /* what matching workloads get */
    const char *parent_id; /* the agent's SPIFFE ID (or a node alias) */
    const store_selector *selectors; /* a set: no pair twice; read back sorted by (type, value) */
    size_t n_selectors;    /* 1..STORE_ENTRY_SELECTORS_MAX */
    const char *const *dns_names; /* extra DNS SANs, in order; may be NULL when n is 0 */
    size_t n_dns_names;    /* 0..STORE_ENTRY_DNS_MAX */
    int64_t ttl_seconds;   /* X.509-SVID lifetime; 0 = server default */
    int64_t created_at;    /* 0 on create: now */
    int64_t revision;      /* ignored on create; the entries revision its creation made */
} store_entry;

typedef struct {
    store_entry e; /* pointers (arrays and strings) point into owned memory */
    char *owned_;
} store_entry_row;

void store_entry_row_clear(store_entry_row *row);

/* Creates an entry with its audit event in one transaction and bumps the
 * store-wide entries revision; the entry's `revision` is the new value.
 * If out is non-NULL it receives the stored entry (id, created_at, revision
 * set, selectors sorted); free with store_entry_row_clear. MID_E_EXISTS when
 * the id is taken or an entry with the same spiffe_id, parent_id and selector
 * set exists; MID_E_INVALID / MID_E_TOO_LARGE for a malformed entry. */
MID_RESULT store_entry_create(store *st, const store_entry *e, const store_audit_event *ev,
                              store_entry_row *out);

/* Reads one entry by id; MID_E_NOT_FOUND if absent. */
MID_RESULT store_entry_get(store *st, const char *id, store_entry_row *out);

/* Deletes one entry with its audit event and bumps the entries revision. If
 * out is non-NULL it receives the entry as it was. MID_E_NOT_FOUND if absent
 * (nothing written). */
MID_RESULT store_entry_delete(store *st, const char *id, const store_audit_event *ev,
                              store_entry_row *out);

/* Entries whose parent_id is `parent_id` (NULL: all), in creation order,
 * and, if `revision` is non-NULL, the entries revision of the same snapshot
 * (so "these entries are revision N" is exact). Free with store_entry_list_free. */
MID_RESULT store_entry_list(store *st, const char *parent_id, store_entry_row **rows, size_t *n,
                            int64_t *revision);
void store_entry_list_free(store_entry_row *rows, size_t n);

/* The store-wide entries revision: 0 for a new store, +1 on every entry
 * create and delete (never reused, never goes down). */
MID_RESULT store_entries_revision(store *st, int64_t *revision);

/* ---- join tokens ------------------------------------------------------------------ */

typedef struct {
    const char *token_hash;      /* 64 lowercase hex: SHA-256 of the token (never the token) */
    const char *agent_spiffe_id; /* identity bound to the token; NULL: the server picks one */
    int64_t expires_at;          /* Unix s; must be >= created_at */
    int64_t created_at;          /* 0 on create: now */
    int64_t used_at;             /* 0 while unused; ignored on create */
} store_join_token;

typedef struct {
    store_join_token t;
    char *owned_;
} store_join_token_row;

void store_join_token_row_clear(store_join_token_row *row);

/* Records a new, unused token with its audit event. MID_E_EXISTS for a
 * duplicate hash. */
MID_RESULT store_join_token_create(store *st, const store_join_token *t,
                                   const store_audit_event *ev);

/* Marks the token used at `now` with its audit event, in the writer's
 * transaction by a conditional UPDATE, so across threads and processes
 * exactly one consumer wins. MID_E_DENIED, nothing written, when the token is
 * unknown ("join token is unknown"), already used ("join token was already
 * used") or expired ("join token expired"): a caller that wants the refusal
 * in the log appends its own event. If out is non-NULL it receives the token
 * as consumed. */
MID_RESULT store_join_token_consume(store *st, const char *token_hash, int64_t now,
                                    const store_audit_event *ev, store_join_token_row *out);

/* ---- agents (attested nodes) -------------------------------------------------------- */

typedef struct {
    const char *spiffe_id; /* primary key */
    const char *serial;    /* serial of its current SVID, lowercase hex */
    int64_t not_after;     /* expiry of that SVID */
    const char *hostname;  /* as reported at attestation; NULL stored as "" */
    int64_t attested_at;   /* 0 on upsert: now */
    int64_t last_seen;     /* 0 on upsert: attested_at */
    int banned;            /* 0 | 1 */
} store_agent;

typedef struct {
    store_agent a;
    char *owned_;
} store_agent_row;

void store_agent_row_clear(store_agent_row *row);

/* Inserts or replaces (by spiffe_id) an agent with its audit event: what a
 * successful attestation records. Replacing sets every field, `banned`
 * included, so a fresh attestation (a new join token) lifts a ban. */
MID_RESULT store_agent_upsert(store *st, const store_agent *a, const store_audit_event *ev);

/* Records a renewed SVID (serial, not_after; last_seen = max(last_seen, now))
 * with its audit event, only if the agent is not banned: checked in the
 * writer's transaction, so a ban that commits first always wins.
 * MID_E_NOT_FOUND for an unknown agent, MID_E_DENIED for a banned one. */
MID_RESULT store_agent_renew(store *st, const char *spiffe_id, const char *serial,
                             int64_t not_after, int64_t now, const store_audit_event *ev);

/* Reads one agent; MID_E_NOT_FOUND if absent. */
MID_RESULT store_agent_get(store *st, const char *spiffe_id, store_agent_row *out);

/* All agents ordered by spiffe_id. Free with store_agent_list_free. */
MID_RESULT store_agent_list(store *st, store_agent_row **rows, size_t *n);
void store_agent_list_free(store_agent_row *rows, size_t n);

/* Sets or lifts the ban (banned 0 | 1) with its audit event.
 * MID_E_NOT_FOUND for an unknown agent. */
MID_RESULT store_agent_set_banned(store *st, const char *spiffe_id, int banned,
                                  const store_audit_event *ev);

/* Moves last_seen forward to `now` (never back). Not audited: it is called
 * on every authenticated node API call; concurrent touches share a commit.
 * MID_E_NOT_FOUND for an unknown agent. */
MID_RESULT store_agent_touch(store *st, const char *spiffe_id, int64_t now);

/* ---- lifecycle ------------------------------------------------------------------ */

typedef struct {
    int busy_timeout_ms; /* how long to wait on a locked database (0: default 5000) */
    int max_batch;       /* most writes per group commit (0: default 256; at most 4096) */
    /* Audit events per bulk step of the audit log's SPIFFE-ID index (0:
     * default STORE_AUDIT_INDEX_CHUNK_DEFAULT). Queries by SPIFFE ID scan
     * at most this many newest events unindexed; tests use small values. */
    int audit_index_chunk;
} store_options;

#define STORE_AUDIT_INDEX_CHUNK_DEFAULT 4096
#define STORE_AUDIT_INDEX_CHUNK_MAX (1 << 20)

/* Opens (creating if needed) the store at `location` and runs any pending
 * migrations. `opts` may be NULL for defaults. MID_E_CORRUPT when the file
 * is not a meshid database or is damaged; MID_E_BUSY when locked beyond the
 * timeout; MID_E_STATE when the schema is newer than this binary. */
MID_RESULT store_open(const char *location, const store_options *opts, store **out);

/* Stops the writer after draining queued writes, closes the database. NULL ok. */
void store_close(store *st);

/* Schema version after migrations. */
int store_schema_version(store *st);

#endif
