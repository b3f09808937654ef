/* Shared plumbing for the meshid command line (the composition root). */
#ifndef MESHID_CLI_CLI_H
#define MESHID_CLI_CLI_H

#include "lib/result.h"
#include "storage/store.h"

/* Exit codes, documented in docs/cli.md. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,    /* the command failed (bad input, I/O, database, refusal) */
    CLI_EXIT_USAGE = 2,    /* wrong flags or arguments */
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

#endif
