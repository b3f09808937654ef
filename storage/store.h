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
#define STORE_PEM_MAX (256 * 1024)          /* cert_pem, chain_pem */
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
    const char *cert_pem;
} store_cert;

typedef struct {
    store_cert c;
    char *owned_;
} store_cert_row;

void store_cert_row_clear(store_cert_row *row);

/* Records an issued certificate and its audit event in one transaction;
 * returns only when both are durable. MID_E_EXISTS on a duplicate serial,
 * MID_E_INVALID for an unknown authority_id or a malformed field. */
MID_RESULT store_cert_insert(store *st, const store_cert *c, const store_audit_event *ev);

/* Reads one certificate by serial; MID_E_NOT_FOUND if absent. */
MID_RESULT store_cert_get(store *st, const char *serial, store_cert_row *out);

/* Counts certificates signed by `authority_id` with status valid and
 * not_after > now. */
MID_RESULT store_cert_count_live(store *st, const char *authority_id, int64_t now, int64_t *n);

/* ---- lifecycle ------------------------------------------------------------------ */

typedef struct {
    int busy_timeout_ms; /* how long to wait on a locked database (0: default 5000) */
    int max_batch;       /* most writes per group commit (0: default 256; at most 4096) */
} store_options;

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
