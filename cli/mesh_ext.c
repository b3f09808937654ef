/* The mesh control plane as an extension of `meshid server` / `meshid dev`
 * (cli/cli.h "the mesh plane"): adapts sds/server.h's extension hook to
 * meshcore/mesh_plane.h, so that neither module includes the other. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "meshcore/mesh_plane.h"

static mid_result mesh_ext_start(void *ctx, const server_ext_env *env)
{
    cli_mesh_plane *cm = ctx;
    mesh_plane_opts o = {.xds_listen = cm->xds_listen, .watch_dir = cm->watch_dir};
    MID_GUARD(mesh_plane_new(&o, &cm->plane));
    mesh_plane_env pe = {.loop = env->loop, .admin_srv = env->admin_srv, .tls_srv = env->tls_srv,
                         .st = env->st, .wp = env->wp, .trust_domain = env->trust_domain};
    mid_result r = mesh_plane_start(cm->plane, &pe);
    if (!mid_is_ok(r)) { /* the server calls free only after a successful start */
        mesh_plane_stop(cm->plane);
        mesh_plane_free(cm->plane);
        cm->plane = NULL;
        return r;
    }
    int port = mesh_plane_xds_port(cm->plane);
    if (port > 0) {
        const char *listen = cm->xds_listen ? cm->xds_listen : MESH_XDS_PLAINTEXT_DEFAULT;
        const char *colon = strrchr(listen, ':');
        int hostlen = colon ? (int)(colon - listen) : 0;
        printf("xDS (plaintext ADS) on %.*s:%d\n", hostlen, listen, port);
        fflush(stdout);
    }
    return MID_OK_RESULT;
}

static void mesh_ext_stop(void *ctx) { mesh_plane_stop(((cli_mesh_plane *)ctx)->plane); }

static void mesh_ext_free(void *ctx)
{
    cli_mesh_plane *cm = ctx;
    mesh_plane_free(cm->plane);
    cm->plane = NULL;
}

size_t cli_mesh_plane_exts(cli_mesh_plane *mp, server_ext *ext, size_t cap)
{
    if (cap < 1) return 0;
    ext[0] = (server_ext){.name = "mesh plane", .start = mesh_ext_start, .stop = mesh_ext_stop,
                          .free = mesh_ext_free, .ctx = mp};
    return 1;
}
