/* The admin API (meshid.admin.v1.Admin), served on the admin Unix socket:
 * join tokens, registration entries, attested agents, and the authority
 * lifecycle with its activation gate (docs/server.md, docs/ca.md).
 *
 * Access: the socket is created 0600, and every call is refused with
 * PERMISSION_DENIED unless the caller's uid (SO_PEERCRED) is the server's
 * own effective uid or 0. Every state change is written with its audit
 * event, actor "admin:uid=N". Writes run on the workpool; reads on the loop
 * thread. All functions run on the loop thread.
 */
#ifndef MESHID_SDS_ADMIN_SERVICE_H
#define MESHID_SDS_ADMIN_SERVICE_H

#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "sds/node_service.h"
#include "storage/store.h"

typedef struct admin_service admin_service;

#define ADMIN_TOKEN_TTL_DEFAULT 3600            /* 1 hour */
#define ADMIN_TOKEN_TTL_MAX (30 * 24 * 3600)    /* 30 days */

typedef struct {
    store *st;                /* borrowed */
    workpool *wp;             /* borrowed */
    const char *trust_domain; /* copied */
    node_service *node;       /* optional: told about evictions at once */
    int64_t token_ttl;        /* default join token lifetime; 0: ADMIN_TOKEN_TTL_DEFAULT */
    /* Authority lifecycle (Prepare/Activate/Rotate/Taint/Revoke/AuthorityStatus) */
    rpc_loop *loop;           /* borrowed: activation waits re-check on timers */
    const char *data_dir;     /* copied: where the CA keys live */
    /* optional: called on the loop after an authority changed (the server
     * pushes the bundle and reopens its CA handle at once) */
    void (*authorities_changed)(void *ctx);
    void *authorities_changed_ctx;
} admin_service_opts;

/* MID_E_INVALID for missing options, MID_E_NOMEM. */
MID_RESULT admin_service_new(const admin_service_opts *o, admin_service **out);

/* Registers the Admin methods on `srv` (before rpc_server_start). */
MID_RESULT admin_service_register(admin_service *as, rpc_server *srv);

/* Cancels activation waits and refuses further ones (loop thread, before
 * rpc_loop_free). NULL is a no-op. */
void admin_service_shutdown(admin_service *as);

/* After rpc_loop_free. NULL is a no-op. */
void admin_service_free(admin_service *as);

#endif
