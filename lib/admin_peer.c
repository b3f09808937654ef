#include "lib/admin_peer.h"

#include <stdio.h>
#include <unistd.h>

#include "lib/log.h"

bool admin_peer_check(rpc_call *call, const char *service, char *actor, size_t cap)
{
    const rpc_peer *p = rpc_call_peer(call);
    if (p->kind != RPC_PEER_UNIX || (p->uid != geteuid() && p->uid != 0)) {
        char msg[128];
        if (p->kind == RPC_PEER_UNIX)
            snprintf(msg, sizeof msg, "uid %ld may not use the admin API", (long)p->uid);
        else
            snprintf(msg, sizeof msg, "the admin API is only served on its Unix socket");
        LOG_WARN("%s: %s refused: %s", service, rpc_call_method(call), msg);
        if (!mid_is_ok(rpc_call_finish(call, RPC_PERMISSION_DENIED, msg)))
            LOG_DEBUG("%s: finish %s: %s", service, rpc_call_method(call), mid_errmsg());
        return false;
    }
    snprintf(actor, cap, "admin:uid=%ld", (long)p->uid);
    return true;
}
