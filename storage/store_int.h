/* The store's private interface: what a backend implements, plus test hooks.
 *
 * A backend (storage/sqlite/, later storage/postgres/) provides one const
 * `store_backend` table. storage/store.c reaches it only through thin
 * wrappers (fault injection lives there) and owns everything above the
 * database: validation, the writer thread, group commit, the audit chain.
 * No database library type appears here.
 *
 * A backend connection is a struct whose first member is a `store_conn`
 * (the sqlite3_file pattern). The front end opens one WRITER per store,
 * used only by the writer thread, and READERs on demand (a few are kept
 * idle in a pool). One connection is never used by two threads at once.
 */
#ifndef MESHID_STORAGE_STORE_INT_H
#define MESHID_STORAGE_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "storage/store.h"
#include "storage/store_mesh.h"

typedef struct store_backend store_backend;

typedef struct store_conn {
    const store_backend *vt; /* set by the backend's open */
} store_conn;

typedef enum { STORE_CONN_WRITER = 0, STORE_CONN_READER = 1 } store_conn_role;

/* Row callback used between front end and backend: like store_audit_cb, plus
 * `hashes_ok` = 0 when the row's stored hash columns do not decode (the
 * hashes are then zero). Return non-zero to stop. */
typedef int (*store_audit_row_fn)(void *ctx, const store_audit_event *row, int hashes_ok);

/* Every function returns MID_E_OK or a mid_result whose message names the
 * database and carries the driver's own error text. Common mappings: locked
 * beyond the timeout -> MID_E_BUSY, damaged -> MID_E_CORRUPT, unique/primary
 * key violation -> MID_E_EXISTS, CHECK/NOT NULL/foreign key -> MID_E_INVALID,
 * anything else -> MID_E_DB. */
struct store_backend {
    const char *name;   /* "sqlite" */
    const char *prefix; /* location prefix selecting it, e.g. "sqlite:" */

    /* ---- lifecycle ---- */
    /* Opens `target` (the location without its prefix). WRITER: creates the
     * database if needed (file mode 0600), refuses a foreign or damaged one
     * (MID_E_CORRUPT), sets durable settings. READER: an existing, migrated
     * database; read-only use. *out is freed with close. */
    MID_RESULT (*open)(const char *target, const store_options *opts, store_conn_role role,
                       store_conn **out);
    void (*close)(store_conn *c); /* NULL ok */
    /* WRITER only: applies pending migrations, each in its own transaction,
     * and reports the resulting version. MID_E_STATE for a newer schema. */
    MID_RESULT (*migrate)(store_conn *c, int *version);

    /* ---- transactions (WRITER) ---- */
    MID_RESULT (*begin_immediate)(store_conn *c); /* takes the write lock now */
    MID_RESULT (*commit)(store_conn *c);
    MID_RESULT (*rollback)(store_conn *c);        /* no-op outside a transaction */
    MID_RESULT (*savepoint)(store_conn *c);       /* one level, per request */
    MID_RESULT (*release)(store_conn *c);         /* keep the savepoint's work */
    MID_RESULT (*rollback_to)(store_conn *c);     /* undo it and end the savepoint */

    /* ---- audit events ---- */
    /* Newest row's seq and hash (0 and zeros when empty); MID_E_CORRUPT if
     * the stored hash does not decode. Any connection. */
    MID_RESULT (*audit_head)(store_conn *c, int64_t *seq, uint8_t hash[STORE_HASH_LEN]);
    /* Inserts a complete row (seq, ts_ms, hashes filled, reason/details
     * normalized). WRITER, inside a transaction. */
    MID_RESULT (*audit_insert)(store_conn *c, const store_audit_event *ev);
    MID_RESULT (*audit_get)(store_conn *c, int64_t seq, store_audit_row *out);
    /* Every row with seq > after_seq in ascending order, in one snapshot. */
    MID_RESULT (*audit_iterate)(store_conn *c, int64_t after_seq, store_audit_row_fn fn,
                                void *ctx);
    /* Rows matching a (validated) filter, ascending, in one snapshot. */
    MID_RESULT (*audit_query)(store_conn *c, const store_audit_filter *f, store_audit_row_fn fn,
                              void *ctx);

    /* ---- authorities ---- */
    MID_RESULT (*authority_put)(store_conn *c, const store_authority *a); /* upsert by id */
    /* Inserts a new authority; MID_E_EXISTS when the id is taken. WRITER, in a
     * transaction. */
    MID_RESULT (*authority_insert)(store_conn *c, const store_authority *a);
    /* MID_E_NOT_FOUND for an unknown id, MID_E_STATE when its state is not
     * from_state (nothing written). WRITER, inside a transaction. */
    MID_RESULT (*authority_set_state)(store_conn *c, const char *id, const char *from_state,
                                      const char *to_state);
    MID_RESULT (*authority_list)(store_conn *c, store_authority_row **rows, size_t *n);

    /* ---- certificates ---- */
    MID_RESULT (*cert_insert)(store_conn *c, const store_cert *cert); /* MID_E_EXISTS on dup */
    MID_RESULT (*cert_get)(store_conn *c, const char *serial, store_cert_row *out);
    MID_RESULT (*cert_count_live)(store_conn *c, const char *authority_id, int64_t now,
                                  int64_t *n);

    /* ---- registration entries ---- */
    /* Adds 1 to the entries revision and returns the new value. WRITER,
     * inside a transaction. */
    MID_RESULT (*entries_revision_bump)(store_conn *c, int64_t *revision);
    MID_RESULT (*entries_revision)(store_conn *c, int64_t *revision);
    /* Inserts a validated entry (id, created_at and revision set, selectors
     * sorted and distinct) with `selectors_hash` (store_selectors_hash).
     * MID_E_EXISTS for a taken id or a duplicate (spiffe_id, parent_id,
     * selectors_hash); the message says which. */
    MID_RESULT (*entry_insert)(store_conn *c, const store_entry *e, const char *selectors_hash);
    MID_RESULT (*entry_get)(store_conn *c, const char *id, store_entry_row *out);
    /* Deletes an entry and its selectors and DNS names; *out is the entry as
     * it was (owned). MID_E_NOT_FOUND if absent. WRITER, in a transaction. */
    MID_RESULT (*entry_delete)(store_conn *c, const char *id, store_entry_row *out);
    /* Entries of one parent (NULL: all) in revision order, and the entries
     * revision, all from one snapshot. */
    MID_RESULT (*entry_list)(store_conn *c, const char *parent_id, store_entry_row **rows,
                             size_t *n, int64_t *revision);

    /* ---- join tokens ---- */
    MID_RESULT (*join_token_insert)(store_conn *c, const store_join_token *t); /* EXISTS on dup */
    /* Sets used_at = now where the token is unused and unexpired (expires_at
     * > now); otherwise MID_E_DENIED saying unknown, already used or expired.
     * *out is the consumed token (owned). WRITER, inside a transaction. */
    MID_RESULT (*join_token_consume)(store_conn *c, const char *token_hash, int64_t now,
                                     store_join_token_row *out);

    /* ---- agents ---- */
    MID_RESULT (*agent_upsert)(store_conn *c, const store_agent *a);
    /* MID_E_NOT_FOUND, or MID_E_DENIED when banned (nothing written). */
    MID_RESULT (*agent_renew)(store_conn *c, const char *spiffe_id, const char *serial,
                              int64_t not_after, int64_t now);
    MID_RESULT (*agent_get)(store_conn *c, const char *spiffe_id, store_agent_row *out);
    MID_RESULT (*agent_list)(store_conn *c, store_agent_row **rows, size_t *n);
    MID_RESULT (*agent_set_banned)(store_conn *c, const char *spiffe_id, int banned);
    MID_RESULT (*agent_touch)(store_conn *c, const char *spiffe_id, int64_t now);

    /* ---- mesh resources (storage/store_mesh.h) ---- */
    /* Adds 1 to the mesh revision and returns the new value. WRITER, inside
     * a transaction. */
    MID_RESULT (*mesh_revision_bump)(store_conn *c, int64_t *revision);
    MID_RESULT (*mesh_revision)(store_conn *c, int64_t *revision);
    /* The stored revision of one resource, 0 when it does not exist. */
    MID_RESULT (*mesh_revision_of)(store_conn *c, const char *kind, const char *namespace_,
                                   const char *name, int64_t *revision);
    /* Inserts or replaces one validated resource with `revision`: a new row
     * gets created_at = updated_at = now, a replaced one keeps created_at.
     * WRITER, inside a transaction. */
    MID_RESULT (*mesh_put)(store_conn *c, const char *kind, const char *namespace_,
                           const char *name, const char *spec_json, int64_t revision,
                           int64_t now);
    /* Deletes one resource; MID_E_NOT_FOUND if absent. WRITER, in a transaction. */
    MID_RESULT (*mesh_delete)(store_conn *c, const char *kind, const char *namespace_,
                              const char *name);
    /* One resource (owned copy); MID_E_NOT_FOUND if absent. */
    MID_RESULT (*mesh_get)(store_conn *c, const char *kind, const char *namespace_,
                           const char *name, store_mesh_row *out);
    /* Resources of one kind (NULL: all) sorted by (kind, namespace, name)
     * bytewise, and the mesh revision, from one snapshot. */
    MID_RESULT (*mesh_list)(store_conn *c, const char *kind, store_mesh_row **rows, size_t *n,
                            int64_t *revision);
};

/* The backends built into this library. */
extern const store_backend store_backend_sqlite;

/* ---- helpers for backends (storage/store.c) ------------------------------- */

/* Deep-copy a borrowed record into one owned allocation. MID_E_NOMEM. */
MID_RESULT store_audit_row_copy(const store_audit_event *src, store_audit_row *dst);
MID_RESULT store_authority_row_copy(const store_authority *src, store_authority_row *dst);
MID_RESULT store_cert_row_copy(const store_cert *src, store_cert_row *dst);
MID_RESULT store_entry_row_copy(const store_entry *src, store_entry_row *dst);
MID_RESULT store_join_token_row_copy(const store_join_token *src, store_join_token_row *dst);
MID_RESULT store_agent_row_copy(const store_agent *src, store_agent_row *dst);
/* Fills *dst with owned copies of the strings (NULL stays NULL) and the
 * times; on failure *dst is zeroed. */
MID_RESULT store_mesh_row_fill(store_mesh_row *dst, const char *kind, const char *namespace_,
                               const char *name, const char *spec_json, int64_t revision,
                               int64_t created_at, int64_t updated_at);

/* Appends one row to a growable array of `size`-byte rows (doubling from 8).
 * MID_E_NOMEM; on failure *v is unchanged. Returns a pointer to the new slot
 * (zeroed) in *slot and increments *len. */
MID_RESULT store_rows_grow(void **v, size_t size, size_t *len, size_t *cap, void **slot);

/* The identity of a selector set: lowercase hex SHA-256 over the selectors
 * sorted by (type, value), each as u32 length + bytes of type then value.
 * `sel` must already be sorted and distinct (store_entry_create does that). */
#define STORE_SELECTORS_HASH_HEX 64
MID_RESULT store_selectors_hash(const store_selector *sel, size_t n,
                                char out[STORE_SELECTORS_HASH_HEX + 1]);

/* The SQL of the SQLite backend's migration `version` (1-based), or NULL
 * past the last: lets a test build a database as an older meshid left it. */
const char *store_sqlite_migration_sql(int version);

/* ---- observability and test hooks ------------------------------------------ */

typedef struct {
    uint64_t writes;          /* records written: one per request, one per certificate
                                 of a store_cert_insert_many request, one per change
                                 of a store_mesh_apply request */
    uint64_t writes_failed;   /* of which failed (own error or failed batch) */
    uint64_t transactions;    /* batches committed */
    uint64_t commit_failures; /* batches whose BEGIN, head read or COMMIT failed */
    uint64_t max_batch_seen;  /* largest batch so far, in records */
    uint64_t queued;          /* requests waiting for the writer right now */
    uint64_t fast_batches;    /* certificate-only batches applied under one savepoint */
    uint64_t fast_fallbacks;  /* ... tried so and undone: applied request by request */
    uint64_t writer_cpu_ns;   /* CPU time of the writer thread in its batches (what a
                                 bench divides by records: the serial part of a write) */
} store_stats;

/* A consistent snapshot of the writer's counters. */
void store_stats_get(store *st, store_stats *out);

typedef enum {
    STORE_FAULT_BEGIN = 0, /* BEGIN IMMEDIATE of a batch */
    STORE_FAULT_APPLY,     /* applying one request, inside its savepoint */
    STORE_FAULT_COMMIT,    /* COMMIT of a batch (the batch is rolled back) */
    STORE_FAULT_COUNT_
} store_fault_point;

/* Makes the nth next pass through `p` fail with `err` (once); nth 0 disarms. */
void store_fault_set(store *st, store_fault_point p, int nth, mid_err err);

/* While paused the writer takes no requests, so a test can queue several and
 * have them land in one batch. store_close unpauses. */
void store_writer_pause(store *st, int paused);

#endif
