/* Durable mesh resources: services and authorization policies.
 *
 * The store keeps each resource as JSON text validated elsewhere (meshcore
 * owns the model; the store never parses the spec beyond "is it a JSON
 * object") plus its key columns (kind, namespace, name). Every change
 * commits with its audit event in the same transaction, through the
 * store's writer thread (see storage/store.h), and moves one store-wide
 * mesh revision, so a reader can poll store_mesh_revision cheaply and
 * re-read only when it moved.
 *
 * Strings in rows read back are heap copies owned by the row; free them
 * with store_mesh_row_clear / store_mesh_list_free. Thread-safe.
 */
#ifndef MESHID_STORAGE_STORE_MESH_H
#define MESHID_STORAGE_STORE_MESH_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "storage/store.h"

#define STORE_MESH_SPEC_MAX (1u << 20) /* bytes of one resource's JSON (excluding the NUL) */
#define STORE_MESH_APPLY_MAX 10000     /* changes in one apply */
#define STORE_MESH_APPLY_BYTES_MAX (256u << 20) /* bytes of all specs of one apply */
#define STORE_MESH_NAME_MAX 253        /* bytes of a namespace or a name */

#define STORE_MESH_KIND_SERVICE "service"
#define STORE_MESH_KIND_POLICY "policy"

typedef enum { STORE_MESH_PUT = 0, STORE_MESH_DELETE } store_mesh_op;

typedef struct {
    store_mesh_op op;
    const char *kind;       /* "service" | "policy" */
    const char *namespace_; /* 1..STORE_MESH_NAME_MAX bytes, no control bytes */
    const char *name;       /* 1..STORE_MESH_NAME_MAX bytes, no control bytes */
    const char *spec_json;  /* PUT: the record's canonical JSON (a JSON object); DELETE: NULL
                               (ignored) */
    int64_t if_revision;    /* 0: unconditional; >0: the resource's stored revision must equal
                               it (a resource deleted meanwhile fails too); -1: the resource
                               must not exist (a PUT that creates; MID_E_INVALID on a DELETE).
                               Checked inside the write transaction; otherwise MID_E_STATE
                               "kind ns/name changed concurrently: ...". */
} store_mesh_change;

/* Applies every change ch[0..n) (1 <= n <= STORE_MESH_APPLY_MAX) in ONE
 * transaction, all or nothing, each with its audit event evs[i] (same
 * order; evs may be NULL only in tests), and bumps the mesh revision once.
 * Every written row gets the new revision (created_at is kept on a
 * replace, updated_at is now). A DELETE of a missing resource is
 * MID_E_NOT_FOUND naming it; a PUT identical to the stored JSON is still
 * written (the caller may skip it). *revision (may be NULL) receives the
 * new mesh revision. Blocks until durable.
 * Errors (nothing written): MID_E_INVALID (no changes, bad kind, bad
 * namespace or name, spec not a JSON object, a bad if_revision, duplicate
 * (kind, namespace, name) within the call, an invalid audit event),
 * MID_E_TOO_LARGE (n, a spec, the specs together, a name or an event
 * over its limit),
 * MID_E_STATE (an if_revision that does not hold), MID_E_NOT_FOUND, and
 * the store's database errors (an injected or real failure of the batch
 * writes nothing either). Messages name the offending resource as
 * "kind namespace/name"; those of input checks start "mesh change N: "
 * (1-based position in ch). */
MID_RESULT store_mesh_apply(store *st, const store_mesh_change *ch, size_t n,
                            const store_audit_event *evs, int64_t *revision);

typedef struct {
    char *kind, *namespace_, *name, *spec_json; /* owned */
    int64_t revision;   /* the mesh revision of the apply that last wrote it */
    int64_t created_at; /* Unix seconds */
    int64_t updated_at; /* Unix seconds */
} store_mesh_row;

/* All resources of `kind` (NULL: all) sorted by (kind, namespace, name),
 * and, if `revision` is non-NULL, the mesh revision, from one snapshot.
 * *rows (NULL when *n is 0) is freed with store_mesh_list_free.
 * MID_E_INVALID for an unknown kind. */
MID_RESULT store_mesh_list(store *st, const char *kind, store_mesh_row **rows, size_t *n,
                           int64_t *revision);

/* Reads one resource into *out (zeroed first; free with
 * store_mesh_row_clear). MID_E_NOT_FOUND if absent, MID_E_INVALID for a
 * bad kind, namespace or name. */
MID_RESULT store_mesh_get(store *st, const char *kind, const char *namespace_, const char *name,
                          store_mesh_row *out);

/* The mesh revision (0 before the first apply; +1 per successful apply,
 * never reused): cheap, for polling. */
MID_RESULT store_mesh_revision(store *st, int64_t *revision);

void store_mesh_row_clear(store_mesh_row *r);            /* NULL ok */
void store_mesh_list_free(store_mesh_row *rows, size_t n); /* NULL ok */

#endif
