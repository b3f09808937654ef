/* meshid server [--listen HOST:PORT] [--svid-ttl D] [--admin-socket PATH] */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "lib/timeutil.h"
#include "sds/server.h"

#define SERVER_USAGE "meshid server [--listen HOST:PORT] [--svid-ttl D] [--admin-socket PATH]"

int cmd_server(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"svid-ttl", required_argument, NULL, 't'},
                                         {"admin-socket", required_argument, NULL, 'a'},
                                         {NULL, 0, NULL, 0}};
    server_opts o = {.data_dir = ctx->data_dir};
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'l': o.listen = optarg; break;
        case 't':
            if (!mid_is_ok(r = time_parse_duration(optarg, &o.agent_svid_ttl))) return cli_fail(r);
            break;
        case 'a': o.admin_sock = optarg; break;
        default: return cli_usage(SERVER_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(SERVER_USAGE, "unexpected argument '%s'", argv[optind]);
    r = server_run(&o);
    return mid_is_ok(r) ? CLI_EXIT_OK : cli_fail(r);
}
