/* Who may call an admin API: the caller check shared by the CA admin API
 * (sds/admin_service.c) and the mesh admin API (meshcore/mesh_admin.c),
 * both served on the server's admin Unix socket. */
#ifndef MESHID_LIB_ADMIN_PEER_H
#define MESHID_LIB_ADMIN_PEER_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/rpc.h"

/* Bytes for the audit actor written by admin_peer_check, with the NUL. */
#define ADMIN_ACTOR_MAX 64

/* Only the server's own effective uid and root may administer it. The
 * socket's mode (0600) already says so; this holds even if the mode is
 * loosened, and refuses the call if it ever reaches another port.
 *
 * Allowed: writes the audit actor "admin:uid=UID" into actor (cap bytes,
 * truncated to fit) and returns true. Refused: logs a warning starting with
 * `service` (e.g. "admin API"), finishes the call with PERMISSION_DENIED and
 * a message saying why, and returns false; the caller must not answer the
 * call again. Loop thread only (as every rpc_call function). */
bool admin_peer_check(rpc_call *call, const char *service, char *actor, size_t cap);

#endif
