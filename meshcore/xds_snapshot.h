/* An xDS snapshot: everything one proxy should hold, per resource type, as
 * named, versioned, serialized resources.
 *
 * Built by the xDS generator (meshcore/xds_gen.h) and served by the ADS server
 * (meshcore/ads.h). Once xds_snapshot_seal() has run a snapshot is immutable
 * and may be shared between threads and streams; it is reference-counted.
 *
 * Resource bytes are the serialized resource message itself (a Listener,
 * RouteConfiguration, Cluster or ClusterLoadAssignment), not wrapped in an
 * Any: the server wraps them with xds_type_url(type) when sending.
 * A resource's version is derived from its bytes (so equal bytes give equal
 * versions on every build and every server); a type's version is derived from
 * the names and versions of all its resources, through one digest per sealed
 * set (computed once when the set is sealed, so sharing a sealed part costs a
 * snapshot nothing per resource).
 */
#ifndef MESHID_MESHCORE_XDS_SNAPSHOT_H
#define MESHID_MESHCORE_XDS_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"

/* In ADS push order (make before break: CDS, EDS, LDS, RDS). */
typedef enum {
    XDS_CDS = 0,
    XDS_EDS,
    XDS_LDS,
    XDS_RDS,
    XDS_TYPE_COUNT
} xds_type;

#define XDS_TYPE_URL_CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define XDS_TYPE_URL_EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define XDS_TYPE_URL_LDS "type.googleapis.com/envoy.config.listener.v3.Listener"
#define XDS_TYPE_URL_RDS "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

#define XDS_VERSION_LEN 16 /* hex chars of a version string */
#define XDS_RESOURCE_MAX (4u << 20) /* bytes of one serialized resource */

const char *xds_type_url(xds_type t);
const char *xds_type_short(xds_type t); /* "cds", "eds", "lds", "rds" */
/* MID_E_INVALID for a type URL meshid does not serve (the message names it). */
MID_RESULT xds_type_from_url(const char *type_url, xds_type *out);
/* "cds"|"eds"|"lds"|"rds" (case-insensitive). MID_E_INVALID otherwise. */
MID_RESULT xds_type_from_short(const char *s, xds_type *out);

typedef struct {
    const char *name;
    const char *version;      /* XDS_VERSION_LEN hex chars */
    const uint8_t *bytes;
    size_t len;
} xds_resource;

/* A sealed, immutable, reference-counted set of resources of one type,
 * shareable between many snapshots (the outbound clusters, endpoints and
 * routes are the same for every proxy of a kind: build them once per
 * registry revision, not once per proxy). */
typedef struct xds_rset xds_rset;

/* An empty, unsealed set with refcount 1. MID_E_NOMEM. */
MID_RESULT xds_rset_new(xds_rset **out);
/* Adds a resource (copies name and bytes). MID_E_EXISTS for a name already
 * in the set, MID_E_TOO_LARGE over XDS_RESOURCE_MAX, MID_E_STATE once
 * sealed, MID_E_NOMEM. */
MID_RESULT xds_rset_add(xds_rset *r, const char *name, const uint8_t *bytes, size_t len);
/* Sorts by name and computes versions; read-only afterwards. */
void xds_rset_seal(xds_rset *r);
xds_rset *xds_rset_ref(xds_rset *r);
void xds_rset_unref(xds_rset *r); /* NULL ok */
size_t xds_rset_count(const xds_rset *r);
const xds_resource *xds_rset_at(const xds_rset *r, size_t i);
const xds_resource *xds_rset_find(const xds_rset *r, const char *name); /* NULL if absent */

/* A snapshot: per type, an ordered list of parts (sealed rsets) plus the
 * snapshot's own resources. */
typedef struct xds_snapshot xds_snapshot;

/* An empty, unsealed snapshot with refcount 1. MID_E_NOMEM. */
MID_RESULT xds_snapshot_new(xds_snapshot **out);

/* Adds one resource of the snapshot's own (copies name and bytes). Unsealed
 * snapshots only. Errors as xds_rset_add. */
MID_RESULT xds_snapshot_add(xds_snapshot *s, xds_type t, const char *name,
                            const uint8_t *bytes, size_t len);

/* Appends a sealed shared set to type t (takes a new reference). MID_E_STATE
 * when s is sealed or `set` is not, MID_E_NOMEM. */
MID_RESULT xds_snapshot_add_set(xds_snapshot *s, xds_type t, xds_rset *set);

/* Seals the own resources and computes the type versions. MID_E_EXISTS when
 * one name occurs twice within a type across parts (the message names it);
 * the snapshot is then unusable (unref it). After success it is read-only. */
MID_RESULT xds_snapshot_seal(xds_snapshot *s);

xds_snapshot *xds_snapshot_ref(xds_snapshot *s);
void xds_snapshot_unref(xds_snapshot *s); /* NULL ok */

/* Sealed snapshots only. Index i runs over the parts in order (each sorted
 * by name), then the own resources (sorted by name). O(parts) per call. */
size_t xds_snapshot_count(const xds_snapshot *s, xds_type t);
const xds_resource *xds_snapshot_at(const xds_snapshot *s, xds_type t, size_t i);
/* NULL when absent. O(parts x log n). */
const xds_resource *xds_snapshot_find(const xds_snapshot *s, xds_type t, const char *name);
/* The type's resource sets, sealed snapshots only: the shared parts in the
 * order they were added, then the snapshot's own resources (always there,
 * possibly empty), so the count is >= 1 (0 for an unsealed snapshot or a bad
 * type). xds_snapshot_set returns NULL out of range. The snapshot keeps its
 * reference; a caller that keeps a set beyond the snapshot's life takes its
 * own (xds_rset_ref) and never changes it. Sets are immutable: two snapshots
 * holding the same set object hold the same resources in it, which lets a
 * caller comparing two snapshots skip the sets they share. */
size_t xds_snapshot_set_count(const xds_snapshot *s, xds_type t);
xds_rset *xds_snapshot_set(const xds_snapshot *s, xds_type t, size_t i);
/* The type's version (XDS_VERSION_LEN hex chars), derived from the names and
 * versions of all its resources and from how they are split into sets (a
 * digest per set): equal sets give an equal version, any change of a name
 * or a resource's version a different one. The same for an empty type on
 * every snapshot. */
const char *xds_snapshot_version(const xds_snapshot *s, xds_type t);

#endif
