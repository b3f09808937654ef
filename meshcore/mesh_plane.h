/* The mesh plane: everything of the mesh control plane that runs inside
 * `meshid server` (and `meshid dev`), composed on the server's rpc loop:
 *
 *   - the registry admin API (meshcore/mesh_admin.h) on the admin socket;
 *   - the current registry (meshcore/model.h), loaded from the store and
 *     reloaded after every admin write, every change another process made
 *     (the store's mesh revision is polled) and every change of a watched
 *     directory of YAML files (re-applied as `meshid apply -f DIR` would);
 *   - the xDS generator (meshcore/xds_gen.h) and the ADS server
 *     (meshcore/ads.h) on the server's mutual-TLS port (the proxy's SVID is
 *     its identity; a call without a client certificate is refused) and on
 *     a plaintext port for local tests (127.0.0.1:15010 by default; the
 *     node's metadata or id names the identity there).
 *
 * It does not know about the server it runs in: cli/ adapts the server's
 * extension hook (sds/server.h) to mesh_plane_start/stop/free.
 *
 * Threading: every function runs on the loop thread (or before the loop
 * runs); registry loads and watched-directory applies run on the worker
 * pool and report back on the loop.
 */
#ifndef MESHID_MESHCORE_MESH_PLANE_H
#define MESHID_MESHCORE_MESH_PLANE_H

#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "meshcore/ads.h"
#include "storage/store.h"

typedef struct mesh_plane mesh_plane;

#define MESH_XDS_PLAINTEXT_DEFAULT "127.0.0.1:15010"
#define MESH_POLL_MS_DEFAULT 1000       /* store revision poll */
#define MESH_WATCH_MS_DEFAULT 1000      /* watched directory scan */
/* gRPC resource quota of the plaintext ADS server (rpc_server_opts.
 * memory_quota_bytes): caps what gRPC keeps per connection (mostly each
 * sidecar's TCP read buffer, ~64 KB, kept while it waits for its next
 * request) once 1000s of sidecars are connected. Soft: over it gRPC first
 * drops idle read buffers, but as a last resort it cancels live streams
 * (RESOURCE_EXHAUSTED, the sidecar reconnects), so it is sized well above
 * what cannot be reclaimed (~12 KB of call arena per stream) and far above
 * the largest request it accepts (MESH_XDS_MAX_RECV), so that one client's
 * request cannot push it over and get other sidecars' streams cancelled. */
#define MESH_XDS_MEMORY_QUOTA ((size_t)32 << 20)
/* Largest response (a CDS or EDS response for a big mesh) and largest
 * request (a subscription to every cluster: ~40 bytes per name, 4 MiB is
 * ~100,000 names, the ADS per-type name limit). */
#define MESH_XDS_MAX_MSG ((size_t)16 << 20)
#define MESH_XDS_MAX_RECV ((size_t)4 << 20)

typedef struct {
    /* Plaintext ADS "host:port" (port 0 picks one); NULL:
     * MESH_XDS_PLAINTEXT_DEFAULT; "off": no plaintext port. Copied. */
    const char *xds_listen;
    const char *watch_dir;  /* a directory of *.yaml / *.yml to apply and watch; NULL: none. Copied. */
    int64_t poll_ms;        /* 0: MESH_POLL_MS_DEFAULT */
    int64_t watch_ms;       /* 0: MESH_WATCH_MS_DEFAULT */
    int64_t debounce_ms;    /* ADS push debounce; 0: the ADS default (100 ms) */
} mesh_plane_opts;

/* What the plane gets from its host server; all borrowed, living until
 * mesh_plane_free. */
typedef struct {
    rpc_loop *loop;
    rpc_server *admin_srv; /* the admin Unix socket (not started yet) */
    rpc_server *tls_srv;   /* the mutual-TLS port (not started yet); NULL: none */
    store *st;
    workpool *wp;
    const char *trust_domain;
} mesh_plane_env;

/* MID_E_INVALID for bad options, MID_E_NOMEM. */
MID_RESULT mesh_plane_new(const mesh_plane_opts *o, mesh_plane **out);

/* Loads the registry (a stored set that does not load fails the start: the
 * message says why), applies the watched directory once (its errors are
 * logged, not fatal), registers the admin and ADS methods, opens and starts
 * the plaintext port, arms the timers. Before the host's servers start.
 * MID_E_IO when the plaintext port cannot be bound, store errors, MID_E_NOMEM. */
MID_RESULT mesh_plane_start(mesh_plane *mp, const mesh_plane_env *env);

/* The bound plaintext ADS port (0 when off or not started). */
int mesh_plane_xds_port(const mesh_plane *mp);

/* The ADS server (tests and benchmarks: stats, ACK hook). NULL before start. */
ads_server *mesh_plane_ads(mesh_plane *mp);

/* The registry's current revision (-1 before the first load). */
int64_t mesh_plane_revision(const mesh_plane *mp);

/* Cancels timers, ends ADS streams, refuses new admin calls. Loop thread,
 * before the worker pool is freed. Idempotent. */
void mesh_plane_stop(mesh_plane *mp);

/* After rpc_loop_free and workpool_free. NULL is a no-op. */
void mesh_plane_free(mesh_plane *mp);

#endif
