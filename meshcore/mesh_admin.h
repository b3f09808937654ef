/* The mesh registry's admin API: the meshid.admin.v1.Admin methods for
 * services, policies and endpoints (ApplyResources, DeleteResource,
 * ListResources, GetResource, AddEndpoint, RemoveEndpoint, ListEndpoints,
 * CheckPolicy; proto/meshid/admin/v1/admin.proto), registered on the
 * server's admin Unix socket next to sds/admin_service.c's methods.
 *
 * Access: as the rest of the admin API, every call is refused with
 * PERMISSION_DENIED unless the caller's uid is the server's effective uid
 * or 0; writes are audited with actor "admin:uid=N".
 *
 * Every call runs on the worker pool (writes, and reads that decode the
 * registry); its answer is sent on the loop thread. Writes are serialised
 * by one lock, planned and checked as a whole with meshcore/registry_store.h
 * and committed in one store transaction (all or nothing). YAML is parsed
 * on the server (meshcore/yaml_load.h) whatever the client checked.
 *
 * All functions except mesh_admin_apply run on the loop thread.
 */
#ifndef MESHID_MESHCORE_MESH_ADMIN_H
#define MESHID_MESHCORE_MESH_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "meshcore/model.h"
#include "meshcore/registry_store.h"
#include "storage/store.h"

typedef struct mesh_admin mesh_admin;

/* Retries of a read-modify-write (endpoint changes, applies) that lost a
 * race with another writer of the same resource (MID_E_STATE). */
#define MESH_ADMIN_RETRIES 5
/* Files of one ApplyResources call, and the length of a file name. */
#define MESH_ADMIN_FILES_MAX 1000
#define MESH_ADMIN_FILE_NAME_MAX 1024

typedef struct {
    store *st;                /* borrowed */
    workpool *wp;             /* borrowed */
    const char *trust_domain; /* copied */
    /* Optional: called on the loop thread after every successful write
     * that changed something (apply, delete, endpoint add/remove) with the
     * new mesh revision, so the mesh plane can reload and push at once. */
    void (*changed)(void *ctx, int64_t revision);
    void *changed_ctx;
} mesh_admin_opts;

/* MID_E_INVALID for missing options, MID_E_NOMEM. */
MID_RESULT mesh_admin_new(const mesh_admin_opts *o, mesh_admin **out);

/* Registers the mesh methods on `admin_srv` (before rpc_server_start). */
MID_RESULT mesh_admin_register(mesh_admin *ma, rpc_server *admin_srv);

/* Refuses new calls with UNAVAILABLE (loop thread; before the worker pool
 * is freed). NULL is a no-op. */
void mesh_admin_shutdown(mesh_admin *ma);

/* After the worker pool and the rpc loop were freed. NULL is a no-op. */
void mesh_admin_free(mesh_admin *ma);

/* The apply of ApplyResources for in-process callers (e.g. a watched
 * directory), on any thread but the loop's (it blocks on the store): plans
 * `docs` (borrowed) against the store, checks the whole registry and, unless
 * dry_run, commits with audit actor `actor` ("mesh.apply" events), holding
 * the admin's write lock. On success *plan (may be NULL) receives the plan
 * for its item list (mesh_plan_free) and *revision (may be NULL) the mesh
 * revision after it. Does NOT call the `changed` callback: the caller tells
 * its loop. Errors as mesh_plan_* (MID_E_INVALID with "FILE:LINE...: field:
 * message" for bad documents; nothing written). */
MID_RESULT mesh_admin_apply(mesh_admin *ma, const mesh_doc *docs, size_t n, const char *actor,
                            bool dry_run, mesh_plan **plan, int64_t *revision);

#endif
