/* Synchronous admin API client. See sds/admin_client.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/fsutil.h"
#include "lib/rpc.h"
#include "sds/admin_client.h"

typedef struct {
    rpc_loop *loop;
    const ProtobufCMessageDescriptor *desc;
    rpc_code code;
    char msg[1024];
    uint8_t *buf; /* the response, re-packed to outlive the callback */
    size_t len;
    bool nomem;
} admin_wait;

static void on_reply(const rpc_status *st, const ProtobufCMessage *resp, void *arg)
{
    admin_wait *w = arg;
    w->code = st->code;
    snprintf(w->msg, sizeof w->msg, "%s", st->message ? st->message : "");
    if (resp) {
        w->len = protobuf_c_message_get_packed_size(resp);
        w->buf = malloc(w->len ? w->len : 1);
        if (w->buf) protobuf_c_message_pack(resp, w->buf);
        else w->nomem = true;
    }
    rpc_loop_stop(w->loop);
}

static mid_err err_for(rpc_code c)
{
    switch (c) {
    case RPC_INVALID_ARGUMENT:
    case RPC_OUT_OF_RANGE: return MID_E_INVALID;
    case RPC_NOT_FOUND: return MID_E_NOT_FOUND;
    case RPC_ALREADY_EXISTS: return MID_E_EXISTS;
    case RPC_PERMISSION_DENIED:
    case RPC_UNAUTHENTICATED: return MID_E_DENIED;
    case RPC_FAILED_PRECONDITION: return MID_E_STATE;
    case RPC_RESOURCE_EXHAUSTED: return MID_E_TOO_LARGE;
    case RPC_UNAVAILABLE:
    case RPC_DEADLINE_EXCEEDED: return MID_E_IO;
    default: return MID_E_INTERNAL;
    }
}

mid_result admin_default_socket(const char *data_dir, char *out, size_t cap)
{
    char run[4096];
    MID_GUARD(fs_join(run, sizeof run, data_dir, "run"));
    return fs_join(out, cap, run, "admin.sock");
}

mid_result admin_call(const char *sock_path, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
    return admin_call_timeout(sock_path, method, req, resp_desc, ADMIN_CLIENT_TIMEOUT_MS, resp);
}

mid_result admin_call_timeout(const char *sock_path, const char *method,
                              const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                              ProtobufCMessage **resp)
{
    *resp = NULL;
    MID_ENSURE(fs_exists(sock_path), MID_E_IO,
               "no admin socket at %s: is 'meshid server' running with this --data-dir?",
               sock_path);
    char target[4200], path[256];
    snprintf(target, sizeof target, "unix:%s", sock_path);
    snprintf(path, sizeof path, "/meshid.admin.v1.Admin/%s", method);
    admin_wait w = {.desc = resp_desc};
    rpc_channel *ch = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, rpc_loop_new(&w.loop));
    MID_TRY(r, rpc_channel_new(w.loop, target, NULL, 0, &ch));
    rpc_call_opts o = {.timeout_ms = timeout_ms};
    MID_TRY(r, rpc_unary(ch, path, req, resp_desc, &o, on_reply, &w));
    MID_TRY(r, rpc_loop_run(w.loop));
    MID_CHECK(r, !w.nomem, MID_E_NOMEM, "out of memory");
    if (w.code != RPC_OK) {
        if (w.code == RPC_UNAVAILABLE)
            r = mid_fail(MID_E_IO, __FILE__, __LINE__,
                         "cannot reach the server on %s (%s): is 'meshid server' running?",
                         sock_path, w.msg);
        else
            r = mid_fail(err_for(w.code), __FILE__, __LINE__, "%s", w.msg);
        goto out;
    }
    *resp = protobuf_c_message_unpack(resp_desc, NULL, w.len, w.buf);
    MID_CHECK(r, *resp != NULL, MID_E_INTERNAL, "cannot decode the server's answer");
out:
    rpc_loop_free(w.loop);
    free(w.buf);
    return r;
}
