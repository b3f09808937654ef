/* Compiles the authorization policies that select a workload into Envoy
 * RBAC filter configs, laid out as Istio does: a DENY filter first (if any
 * DENY policy selects the workload), then an ALLOW filter (if any ALLOW
 * policy does; none = allow all). Each policy rule becomes one entry of the
 * RBAC policies map named "ns[NS]-policy[NAME]-rule[I]". The decision the
 * filters give equals mesh_policy_evaluate's (tests/unit/policy proves it);
 * the translation table is in docs/policy.md.
 */
#ifndef MESHID_MESHCORE_RBAC_H
#define MESHID_MESHCORE_RBAC_H

#include <stddef.h>
#include <stdint.h>

#include "lib/arena.h"
#include "lib/result.h"
#include "meshcore/model.h"
#include "meshcore/policy.h"

#define MESH_RBAC_HTTP_FILTER "envoy.filters.http.rbac"
#define MESH_RBAC_NETWORK_FILTER "envoy.filters.network.rbac"
#define MESH_RBAC_HTTP_TYPE_URL "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
#define MESH_RBAC_NETWORK_TYPE_URL                                                                 \
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"

/* One filter: its name, the type URL of its typed_config and the packed
 * config message (envoy.extensions.filters.{http,network}.rbac.v3.RBAC). */
typedef struct {
    const char *name;     /* MESH_RBAC_HTTP_FILTER | MESH_RBAC_NETWORK_FILTER (static) */
    const char *type_url; /* MESH_RBAC_*_TYPE_URL (static) */
    uint8_t *bytes;       /* in the arena */
    size_t len;
} mesh_rbac_filter;

/* The HTTP RBAC filters for workload `w` (policies not selecting it are
 * skipped). Fills out[0..*n-1], *n in 0..2 (DENY filter first). All memory
 * comes from `a`. MID_E_INVALID for NULL arguments, MID_E_NOMEM when the
 * arena is exhausted (out and *n are then unspecified). */
MID_RESULT mesh_rbac_http_filters(const mesh_policy *const *pols, size_t n_pols,
                                  const mesh_workload *w, arena *a, mesh_rbac_filter out[2],
                                  size_t *n);

/* The same for a TCP filter chain (envoy.filters.network.rbac with
 * `stat_prefix`, required by Envoy, non-empty). HTTP-only fields follow the
 * TCP rule: an ALLOW rule using methods/paths/hosts is dropped (never
 * matches), in a DENY rule those fields are left out. */
MID_RESULT mesh_rbac_network_filters(const mesh_policy *const *pols, size_t n_pols,
                                     const mesh_workload *w, const char *stat_prefix, arena *a,
                                     mesh_rbac_filter out[2], size_t *n);

#endif
