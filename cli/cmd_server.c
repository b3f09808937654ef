/* meshid server [--listen HOST:PORT] [--svid-ttl D] [--admin-socket PATH]
 *               [--auto-rotate] [--auto-rotate-root] [--retire-grace D]
 *               [--xds-listen HOST:PORT|off] [--watch-dir DIR] */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "lib/timeutil.h"
#include "sds/server.h"

#define SERVER_USAGE                                                                          \
    "meshid server [--listen HOST:PORT] [--svid-ttl D] [--admin-socket PATH] [--auto-rotate] " \
    "[--auto-rotate-root] [--retire-grace D] [--xds-listen HOST:PORT|off] [--watch-dir DIR]"

int cmd_server(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"svid-ttl", required_argument, NULL, 't'},
                                         {"admin-socket", required_argument, NULL, 'a'},
                                         {"auto-rotate", no_argument, NULL, 'r'},
                                         {"auto-rotate-root", no_argument, NULL, 'R'},
                                         {"retire-grace", required_argument, NULL, 'g'},
                                         {"xds-listen", required_argument, NULL, 'x'},
                                         {"watch-dir", required_argument, NULL, 'w'},
                                         {NULL, 0, NULL, 0}};
    server_opts o = {.data_dir = ctx->data_dir};
    /* the mesh control plane rides on the server; its plaintext xDS port
     * trusts the node's own claim of identity, so it is only opened on request */
    cli_mesh_plane mp = {.xds_listen = "off"};
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'l': o.listen = optarg; break;
        case 't':
            /* The control plane's own SVIDs: the agents' and the server's. */
            if (!mid_is_ok(r = time_parse_duration(optarg, &o.agent_svid_ttl))) return cli_fail(r);
            o.server_svid_ttl = o.agent_svid_ttl;
            break;
        case 'a': o.admin_sock = optarg; break;
        case 'r': o.auto_rotate = 1; break;
        case 'R': o.auto_rotate_root = 1; break;
        case 'g':
            if (!mid_is_ok(r = time_parse_duration(optarg, &o.retire_grace))) return cli_fail(r);
            break;
        case 'x': mp.xds_listen = optarg; break;
        case 'w': mp.watch_dir = optarg; break;
        default: return cli_usage(SERVER_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(SERVER_USAGE, "unexpected argument '%s'", argv[optind]);
    server_ext ext[SERVER_EXT_MAX];
    o.ext = ext;
    o.n_ext = cli_mesh_plane_exts(&mp, ext, SERVER_EXT_MAX);
    r = server_run(&o);
    return mid_is_ok(r) ? CLI_EXIT_OK : cli_fail(r);
}
