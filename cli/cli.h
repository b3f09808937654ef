/* Shared plumbing for the meshid command line (the composition root). */
#ifndef MESHID_CLI_CLI_H
#define MESHID_CLI_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "sds/server.h"
#include "storage/store.h"

/* Exit codes, documented in docs/cli.md. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,    /* the command failed (bad input, I/O, database, refusal) */
    CLI_EXIT_USAGE = 2,    /* wrong flags or arguments */
    CLI_EXIT_DENIED = 3,   /* policy check: the request would be denied */
    CLI_EXIT_TAMPERED = 4  /* audit verify found the log altered */
};

typedef struct {
    const char *data_dir; /* --data-dir, MESHID_DATA_DIR, or ./var */
    char db_path[4096];
    char actor[128];      /* "cli:uid=1000(alice)" */
} cli_ctx;

typedef int (*cli_cmd_fn)(cli_ctx *ctx, int argc, char **argv);

/* Prints "meshid: error: <last error message>" and returns the exit code for
 * the failed result. */
int cli_fail(mid_result r);

/* Prints a usage error and returns CLI_EXIT_USAGE. */
int cli_usage(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Opens the store in the data directory, creating the directory (0700). */
MID_RESULT cli_open_store(cli_ctx *ctx, store **out);

/* Subcommands; argv[0] is the verb. */
int cmd_ca(cli_ctx *ctx, int argc, char **argv);
int cmd_svid(cli_ctx *ctx, int argc, char **argv);
int cmd_bundle(cli_ctx *ctx, int argc, char **argv);
int cmd_audit(cli_ctx *ctx, int argc, char **argv);
/* cmd_server: argv[0] is "server" (it has no verb). */
int cmd_server(cli_ctx *ctx, int argc, char **argv);
/* cmd_dev: argv[0] is "dev" (it has no verb). */
int cmd_dev(cli_ctx *ctx, int argc, char **argv);
int cmd_token(cli_ctx *ctx, int argc, char **argv);
int cmd_entry(cli_ctx *ctx, int argc, char **argv);
/* agent list | evict (cli/cmd_admin.c); anything else runs the node agent. */
int cmd_agent(cli_ctx *ctx, int argc, char **argv);
int cmd_agent_run(cli_ctx *ctx, int argc, char **argv);
/* The mesh registry (cli/cmd_mesh.c), over the admin socket. cmd_apply:
 * argv[0] is "apply" (no verb); the others: argv[0] is the verb. */
int cmd_apply(cli_ctx *ctx, int argc, char **argv);
int cmd_service(cli_ctx *ctx, int argc, char **argv);
int cmd_endpoint(cli_ctx *ctx, int argc, char **argv);
int cmd_policy(cli_ctx *ctx, int argc, char **argv);
/* envoy bootstrap (cli/cmd_envoy.c). */
int cmd_envoy(cli_ctx *ctx, int argc, char **argv);
/* xds dump (cli/cmd_xds.c). */
int cmd_xds(cli_ctx *ctx, int argc, char **argv);

/* ---- the mesh plane inside `meshid server` and `meshid dev` ---------------------
 * (cli/mesh_ext.c) A server extension (sds/server.h) that runs the mesh
 * control plane (meshcore/mesh_plane.h: registry admin API, registry
 * reloads, watched directory, ADS on the TLS port and a plaintext port).
 *
 *   cli_mesh_plane mp = {.xds_listen = ..., .watch_dir = ...};
 *   server_ext ext[SERVER_EXT_MAX];
 *   so.ext = ext;
 *   so.n_ext = cli_mesh_plane_exts(&mp, ext, SERVER_EXT_MAX);
 *   server_start(&so, loop, &srv) ... server_free(srv);
 *
 * `mp` must outlive server_free; the extension frees what it made. Once
 * started it prints "xDS (plaintext ADS) on HOST:PORT" on stdout. */
struct mesh_plane;
typedef struct {
    const char *xds_listen;   /* NULL: 127.0.0.1:15010; "off": none (meshid server's default) */
    const char *watch_dir;    /* NULL: none */
    struct mesh_plane *plane; /* set while the server runs */
} cli_mesh_plane;

/* Fills ext[0..) with the mesh plane's extension; returns how many
 * (at most cap). */
size_t cli_mesh_plane_exts(cli_mesh_plane *mp, server_ext *ext, size_t cap);

#endif
