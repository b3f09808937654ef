/* meshid agent --server HOST:PORT [--join-token T] [--trust-bundle FILE] ...
 * Runs the node agent until SIGINT / SIGTERM. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lib/fsutil.h"
#include "lib/sigstop.h"
#include "lib/log.h"
#include "lib/rpc.h"
#include "sds/agent.h"

#define AGENT_USAGE                                                                           \
    "meshid agent --server HOST:PORT [--join-token T] [--trust-bundle FILE] [--socket PATH]\n" \
    "             [--server-name NAME] [--trust-domain TD]"

#define TRUST_FILE_MAX (1024 * 1024)

typedef struct {
    rpc_loop *loop;
    int fatal;
} run_state;

static void on_fatal(void *arg, const char *msg)
{
    run_state *rs = arg;
    fprintf(stderr, "meshid: error: %s\n", msg);
    rs->fatal = 1;
    rpc_loop_stop(rs->loop);
}

int cmd_agent_run(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"join-token", required_argument, NULL, 'j'},
                                         {"trust-bundle", required_argument, NULL, 'b'},
                                         {"socket", required_argument, NULL, 'u'},
                                         {"server-name", required_argument, NULL, 'n'},
                                         {"trust-domain", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    agent_opts ao = {.data_dir = ctx->data_dir};
    const char *bundle_path = NULL;
    char sock[4096];
    /* cmd_agent hands us the words after "agent", so argv[0] is already a
     * flag; getopt skips argv[0], so put a program name in front. */
    char *args[64];
    if (argc + 1 >= (int)(sizeof args / sizeof args[0]))
        return cli_usage(AGENT_USAGE, "too many arguments");
    args[0] = (char *)"agent";
    for (int i = 0; i < argc; i++) args[i + 1] = argv[i];
    args[argc + 1] = NULL;
    argc++;
    argv = args;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 's': ao.server_addr = optarg; break;
        case 'j': ao.join_token = optarg; break;
        case 'b': bundle_path = optarg; break;
        case 'u': ao.socket_path = optarg; break;
        case 'n': ao.server_name = optarg; break;
        case 't': ao.trust_domain = optarg; break;
        default: return cli_usage(AGENT_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(AGENT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!ao.server_addr) return cli_usage(AGENT_USAGE, "--server HOST:PORT is required");
    if (!ao.join_token) ao.join_token = getenv("MESHID_JOIN_TOKEN");
    if (!ao.socket_path) {
        char run[4096];
        mid_result r = fs_join(run, sizeof run, ctx->data_dir, "run");
        if (mid_is_ok(r)) r = fs_join(sock, sizeof sock, run, "agent.sock");
        if (!mid_is_ok(r)) return cli_fail(r);
        ao.socket_path = sock;
    }

    char *bundle = NULL;
    if (bundle_path) {
        size_t len = 0;
        mid_result r = fs_read_file(bundle_path, TRUST_FILE_MAX, &bundle, &len);
        if (!mid_is_ok(r)) return cli_fail(r);
        ao.trust_bundle_pem = bundle;
    }

    run_state rs = {0};
    rpc_loop *loop = NULL;
    agent *a = NULL;
    sigstop *stop = NULL;
    int rc = CLI_EXIT_OK;
    /* block before any thread exists, so only the signal thread takes them */
    mid_result r = sigstop_block();
    if (mid_is_ok(r)) r = rpc_loop_new(&loop);
    if (!mid_is_ok(r)) goto fail;
    rs.loop = loop;
    ao.on_fatal = on_fatal;
    ao.on_fatal_arg = &rs;
    r = agent_start(&ao, loop, &a);
    if (!mid_is_ok(r)) goto fail;
    r = sigstop_start(loop, &stop);
    if (!mid_is_ok(r)) goto fail;
    fprintf(stderr, "meshid agent: node API %s, socket %s\n", ao.server_addr, ao.socket_path);
    r = rpc_loop_run(loop);
    if (!mid_is_ok(r)) goto fail;
    if (rs.fatal) rc = CLI_EXIT_ERROR;
    goto out;
fail:
    rc = cli_fail(r);
out:;
    int sig = sigstop_end(stop);
    if (sig) fprintf(stderr, "meshid agent: stopping (signal %d)\n", sig);
    agent_stop(a);
    rpc_loop_free(loop);
    agent_free(a);
    free(bundle);
    return rc;
}
