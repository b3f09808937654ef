/* meshid dev: server and agent in one process on one loop, with a throwaway
 * trust domain under the data directory and a registration entry for the
 * invoking user, so that `meshid svid fetch` works straight away. */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "identity/join_token.h"
#include "identity/spiffe_id.h"
#include "lib/fsutil.h"
#include "lib/rpc.h"
#include "lib/sigstop.h"
#include "lib/timeutil.h"
#include "sds/agent.h"
#include "sds/server.h"

#define DEV_USAGE "meshid dev [--trust-domain TD] [--listen HOST:PORT] [--svid-ttl D] [--xds-listen HOST:PORT|off]"
#define DEV_TD_DEFAULT "dev.meshid.test"
#define DEV_AGENT_PATH "/meshid/agent/dev"
#define DEV_TOKEN_TTL 600

/* Creates the trust domain when the data directory has none. */
static mid_result ensure_trust_domain(cli_ctx *ctx, store *st, const char *td)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    MID_GUARD(store_authority_list(st, &rows, &n));
    store_authority_list_free(rows, n);
    if (n > 0) return mid_ok();
    ca_init_opts o = {.trust_domain = td, .key_type = CA_KEY_EC_P256, .actor = ctx->actor};
    MID_GUARD(ca_init(st, ctx->data_dir, &o));
    printf("meshid dev: created trust domain %s in %s\n", td, ctx->data_dir);
    return mid_ok();
}

/* A one-time join token bound to the dev agent's SPIFFE ID. */
static mid_result dev_token(cli_ctx *ctx, store *st, const char *agent_id,
                            char token[JOIN_TOKEN_LEN + 1])
{
    char hash[JOIN_TOKEN_HASH_LEN + 1];
    MID_GUARD(join_token_generate(token, hash));
    int64_t now = time_now();
    store_join_token t = {.token_hash = hash, .agent_spiffe_id = agent_id,
                          .expires_at = now + DEV_TOKEN_TTL, .created_at = now};
    store_audit_event ev = {.actor = ctx->actor, .event = "token.create", .spiffe_id = agent_id,
                            .outcome = "ok", .reason = "join token for the dev agent"};
    return store_join_token_create(st, &t, &ev);
}

/* The invoking user's entry: spiffe://TD/user/<name>, selector unix:uid:<uid>.
 * An existing identical entry is fine. */
static mid_result dev_user_entry(cli_ctx *ctx, store *st, const char *td, const char *agent_id,
                                 char *id_out, size_t cap)
{
    uid_t uid = getuid();
    struct passwd *pw = getpwuid(uid);
    char name[64];
    size_t k = 0;
    for (const char *p = pw != NULL ? pw->pw_name : ""; *p && k + 1 < sizeof name; p++) {
        char c = *p;
        int okc = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_';
        name[k++] = okc ? c : '_';
    }
    name[k] = '\0';
    if (k == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        snprintf(name, sizeof name, "uid-%ld", (long)uid);
    int n = snprintf(id_out, cap, "spiffe://%s/user/%s", td, name);
    MID_ENSURE(n > 0 && (size_t)n < cap, MID_E_TOO_LARGE, "SPIFFE ID too long");
    char uidv[32];
    snprintf(uidv, sizeof uidv, "uid:%ld", (long)uid);
    store_selector sel = {.type = "unix", .value = uidv};
    store_entry e = {.spiffe_id = id_out, .parent_id = agent_id, .selectors = &sel,
                     .n_selectors = 1};
    store_audit_event ev = {.actor = ctx->actor, .event = "entry.create", .spiffe_id = id_out,
                            .outcome = "ok", .reason = "dev entry for the invoking user"};
    mid_result r = store_entry_create(st, &e, &ev, NULL);
    if (r.err == MID_E_EXISTS) return mid_ok();
    return r;
}

int cmd_dev(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"trust-domain", required_argument, NULL, 't'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"svid-ttl", required_argument, NULL, 's'},
                                         {"xds-listen", required_argument, NULL, 'x'},
                                         {NULL, 0, NULL, 0}};
    char td[SPIFFE_TD_MAX + 1] = DEV_TD_DEFAULT;
    server_opts so = {.data_dir = ctx->data_dir};
    /* the mesh control plane rides on the server */
    cli_mesh_plane mp = {0};
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 't':
            if (!mid_is_ok(r = spiffe_trust_domain_parse(optarg, td))) return cli_fail(r);
            break;
        case 'l': so.listen = optarg; break;
        case 's':
            if (!mid_is_ok(r = time_parse_duration(optarg, &so.agent_svid_ttl))) return cli_fail(r);
            break;
        case 'x': mp.xds_listen = optarg; break;
        default: return cli_usage(DEV_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(DEV_USAGE, "unexpected argument '%s'", argv[optind]);
    server_ext ext[SERVER_EXT_MAX];
    so.ext = ext;
    so.n_ext = cli_mesh_plane_exts(&mp, ext, SERVER_EXT_MAX);

    store *st = NULL;
    rpc_loop *loop = NULL;
    server *srv = NULL;
    agent *ag = NULL;
    sigstop *stop = NULL;
    char token[JOIN_TOKEN_LEN + 1] = "";
    char agent_id[sizeof "spiffe://" + SPIFFE_TD_MAX + sizeof DEV_AGENT_PATH];
    char user_id[SPIFFE_ID_MAX + 1], run_dir[4096], sock[4096], addr[64];
    int rc = CLI_EXIT_OK;

    /* Signals first: every thread created below inherits the mask. */
    if (!mid_is_ok(r = sigstop_block())) goto fail;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) goto fail;
    if (!mid_is_ok(r = ensure_trust_domain(ctx, st, td))) goto fail;
    {
        store_authority_row *rows = NULL;
        size_t n = 0;
        if (!mid_is_ok(r = store_authority_list(st, &rows, &n))) goto fail;
        snprintf(td, sizeof td, "%s", rows[0].a.trust_domain);
        store_authority_list_free(rows, n);
    }
    snprintf(agent_id, sizeof agent_id, "spiffe://%s%s", td, DEV_AGENT_PATH);
    if (!mid_is_ok(r = dev_token(ctx, st, agent_id, token))) goto fail;
    if (!mid_is_ok(r = dev_user_entry(ctx, st, td, agent_id, user_id, sizeof user_id))) goto fail;
    store_close(st);
    st = NULL;

    if (!mid_is_ok(r = fs_join(run_dir, sizeof run_dir, ctx->data_dir, "run"))) goto fail;
    if (!mid_is_ok(r = fs_mkdir_p(run_dir, 0755))) goto fail;
    if (!mid_is_ok(r = fs_join(sock, sizeof sock, run_dir, "agent.sock"))) goto fail;
    if (!mid_is_ok(r = rpc_loop_new(&loop))) goto fail;
    if (!mid_is_ok(r = server_start(&so, loop, &srv))) goto fail;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", server_port(srv));
    agent_opts ao = {.server_addr = addr, .server_name = "localhost",
                     .trust_bundle_pem = server_bundle_pem(srv), .trust_domain = td,
                     .join_token = token, .data_dir = ctx->data_dir, .socket_path = sock};
    if (!mid_is_ok(r = agent_start(&ao, loop, &ag))) goto fail;
    if (!mid_is_ok(r = sigstop_start(loop, &stop))) goto fail;
    printf("meshid dev: trust domain %s\n"
           "  node API     %s (mutual TLS)\n"
           "  admin API    %s\n"
           "  agent socket %s (SDS + SPIFFE Workload API)\n"
           "  your entry   %s  (selector unix:uid:%ld)\n"
           "try: bin/meshid svid fetch --socket %s\n"
           "Ctrl-C stops.\n",
           td, addr, server_admin_path(srv), sock, user_id, (long)getuid(), sock);
    fflush(stdout);
    r = rpc_loop_run(loop);
    if (!mid_is_ok(r)) goto fail;
    goto out;
fail:
    rc = cli_fail(r);
out:;
    int sig = sigstop_end(stop);
    if (sig) printf("meshid dev: stopping (signal %d)\n", sig);
    agent_stop(ag);
    server_stop(srv);
    rpc_loop_free(loop);
    agent_free(ag);
    server_free(srv);
    store_close(st);
    return rc;
}
