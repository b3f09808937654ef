/* The mesh registry as the store keeps it, and planned changes to it.
 *
 * The store (storage/store_mesh.h) holds each service and policy as the
 * canonical JSON of meshcore/model.h under (kind, namespace, name). This
 * module reads those rows back into a mesh_registry, and plans writes:
 *
 *   mesh_plan_new(st, td, &p);              // one snapshot of the store
 *   mesh_plan_put_service(p, svc, src) ...  // / put_policy / put_docs / delete
 *   mesh_plan_check(p);                     // the whole resulting registry
 *   mesh_plan_commit(st, p, &opts, &rev);   // one store_mesh_apply
 *
 * Each put is reported as created, updated (its canonical JSON differs from
 * the stored one) or unchanged; only created, updated and deleted resources
 * are written. mesh_plan_check builds the registry that would result
 * (mesh_registry_new: the one the server serves from), so e.g. a host
 * claimed by two services is refused before anything is written. The
 * commit is all or nothing, each write conditional on the resource's
 * revision in the snapshot (if_revision), one audit event per change.
 *
 * Concurrency: a plan belongs to one thread. The revision checks catch two
 * writers changing the same resource, not two new services claiming one
 * host: callers serialise their mesh writes (mesh_admin holds one lock).
 */
#ifndef MESHID_MESHCORE_REGISTRY_STORE_H
#define MESHID_MESHCORE_REGISTRY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "meshcore/model.h"
#include "storage/store.h"

/* "service" / "policy": the store's kind names (STORE_MESH_KIND_*). */
const char *mesh_store_kind(mesh_kind k);
/* The reverse; MID_E_INVALID naming the kind for anything else. */
MID_RESULT mesh_store_kind_parse(const char *s, mesh_kind *out);

/* Reads every service and policy from one snapshot of the store and builds
 * the registry at that revision for `trust_domain`. *out is the caller's
 * reference (mesh_registry_unref). MID_E_CORRUPT when a stored row does not
 * decode (the message names it), MID_E_INVALID when the stored set is not a
 * valid registry, store errors, MID_E_NOMEM. */
MID_RESULT mesh_registry_load(store *st, const char *trust_domain, mesh_registry **out);

typedef enum {
    MESH_PLAN_CREATED = 0,
    MESH_PLAN_UPDATED,
    MESH_PLAN_UNCHANGED,
    MESH_PLAN_DELETED,
} mesh_plan_action;

/* "created", "updated", "unchanged", "deleted". */
const char *mesh_plan_action_name(mesh_plan_action a);

/* One put or delete of a plan, in the order they were added. Strings are
 * owned by the plan. */
typedef struct {
    mesh_kind kind;
    const char *namespace_;
    const char *name;
    const char *source; /* "FILE:LINE" of the document, or NULL */
    mesh_plan_action action;
} mesh_plan_item;

typedef struct mesh_plan mesh_plan;

/* Limits of one plan (beyond them MID_E_TOO_LARGE). */
#define MESH_PLAN_ITEMS_MAX 10000 /* puts and deletes (= STORE_MESH_APPLY_MAX) */

/* A plan over one snapshot of the store: every stored service and policy is
 * read and decoded. MID_E_CORRUPT for a stored row that does not decode,
 * store errors, MID_E_NOMEM. Free with mesh_plan_free. */
MID_RESULT mesh_plan_new(store *st, const char *trust_domain, mesh_plan **out);
void mesh_plan_free(mesh_plan *p); /* NULL ok */

/* The snapshot's mesh revision. */
int64_t mesh_plan_revision(const mesh_plan *p);

/* Looks up a service of the snapshot as amended so far (deleted ones are
 * gone): "ns/name"; "name" in MESH_DEFAULT_NAMESPACE; else a host (exact,
 * ASCII case-insensitive). NULL if none. Valid until the plan changes. */
const mesh_service *mesh_plan_find_service(const mesh_plan *p, const char *name_or_host);

/* The same for a policy: "ns/name" or "name" in MESH_DEFAULT_NAMESPACE. */
const mesh_policy *mesh_plan_find_policy(const mesh_plan *p, const char *ns_name);

/* Every live service / policy of the snapshot as amended, in (namespace,
 * name) order of the snapshot followed by new ones in put order. */
size_t mesh_plan_n_services(const mesh_plan *p);
const mesh_service *mesh_plan_service(const mesh_plan *p, size_t i);
size_t mesh_plan_n_policies(const mesh_plan *p);
const mesh_policy *mesh_plan_policy(const mesh_plan *p, size_t i);

/* Puts a copy of `s` / `pol` (validated: mesh_service_validate /
 * mesh_policy_validate; the caller keeps its record) with `source` (may be
 * NULL; copied) for messages. MID_E_INVALID when the plan already has a put
 * or delete of the same (kind, namespace, name) (the message names both
 * sources) or the record is invalid (message prefixed with the source),
 * MID_E_TOO_LARGE beyond MESH_PLAN_ITEMS_MAX, MID_E_NOMEM. */
MID_RESULT mesh_plan_put_service(mesh_plan *p, const mesh_service *s, const char *source);
MID_RESULT mesh_plan_put_policy(mesh_plan *p, const mesh_policy *pol, const char *source);

/* Puts every document in order (each doc's `source` is used). Stops at the
 * first error (the plan then holds the puts before it; discard it). */
MID_RESULT mesh_plan_put_docs(mesh_plan *p, const mesh_doc *docs, size_t n);

/* Deletes a stored resource. MID_E_NOT_FOUND "no service ns/name" when the
 * snapshot has none (or it was already deleted by this plan: MID_E_INVALID),
 * MID_E_INVALID for a put of it in this plan. */
MID_RESULT mesh_plan_delete(mesh_plan *p, mesh_kind kind, const char *namespace_,
                            const char *name);

/* Checks the registry that would result: builds it with mesh_registry_new
 * (services whose hosts collide are refused with a message naming the
 * source of the planned one and the service already holding the host).
 * MID_E_INVALID / MID_E_TOO_LARGE, MID_E_NOMEM. On success, if `reg` is
 * non-NULL, *reg is a reference to that registry (at the snapshot's revision;
 * mesh_registry_unref). */
MID_RESULT mesh_plan_check(mesh_plan *p, mesh_registry **reg);

size_t mesh_plan_n_items(const mesh_plan *p);
const mesh_plan_item *mesh_plan_item_at(const mesh_plan *p, size_t i);
/* Items that write (created, updated, deleted). */
size_t mesh_plan_n_changes(const mesh_plan *p);

typedef struct {
    const char *actor;   /* required: the audit actor, e.g. "admin:uid=0" */
    const char *event;   /* NULL: "mesh.apply" for puts, "mesh.delete" for deletes */
    const char *address; /* optional: "address" in every event's details (endpoints) */
    const char *reason;  /* optional: the events' reason text */
} mesh_commit_opts;

/* Writes every change of a checked plan in one store_mesh_apply, each
 * conditional on the snapshot (created: must not exist; updated/deleted:
 * the snapshot's revision), with one audit event per change: outcome "ok",
 * details {"kind","namespace","name","action"[,"address"]}. Nothing to
 * write: no store call, *revision = the snapshot's revision. *revision (may
 * be NULL) gets the new mesh revision. MID_E_STATE when the plan was not
 * checked or when a resource changed since the snapshot (nothing written;
 * plan again), the store's errors (nothing written), MID_E_NOMEM. */
MID_RESULT mesh_plan_commit(store *st, const mesh_plan *p, const mesh_commit_opts *o,
                            int64_t *revision);

#endif
