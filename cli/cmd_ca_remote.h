/* ca lifecycle verbs through a running server's admin API (cmd_ca_remote.c). */
#ifndef MESHID_CLI_CMD_CA_REMOTE_H
#define MESHID_CLI_CMD_CA_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "ca/rotation.h"
#include "cli/cli.h"

/* 1 when a server's admin socket exists for ctx's data directory (path in out). */
int ca_remote_socket(const cli_ctx *ctx, char *out, size_t cap);

/* Each prints the outcome like the local verbs and returns an exit code. */
int ca_remote_prepare(const char *sock, const ca_prepare_opts *o);
int ca_remote_activate(const char *sock, const char *id, int force, int64_t timeout_s);
int ca_remote_rotate(const char *sock, int root, int force, int64_t timeout_s);
int ca_remote_taint_revoke(const char *sock, const char *id, int revoke);
/* Appends the per-agent bundle spread to `ca status` (silent if unavailable). */
void ca_remote_print_spread(const char *sock);

#endif
