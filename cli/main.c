/* meshid: entry point. Picks the data directory and log level, then hands the
 * remaining words to the noun's command. */
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "lib/fsutil.h"
#include "lib/log.h"

#define MESHID_VERSION "0.1.0"

static const char *usage_text =
    "usage: meshid [--data-dir DIR] [--log-level LEVEL] <command> ...\n"
    "\n"
    "commands:\n"
    "  ca init --trust-domain TD [--key-type ec-p256|rsa-2048] [--root-ttl D] [--intermediate-ttl D]\n"
    "  ca init --upstream-dir DIR      adopt an Istio plug-in CA (ca-cert.pem, ca-key.pem, ...)\n"
    "  ca status                       authorities, states, expiry, live SVIDs\n"
    "  ca prepare [--root | --upstream-dir DIR] [--replace]   a new authority, trusted but not signing\n"
    "  ca activate ID | ca rotate [--root]   make the prepared authority sign (old one: old)\n"
    "  ca taint ID | ca revoke ID | ca retire   compromise handling and clean-up\n"
    "  svid mint --spiffe-id ID (--csr FILE | --write DIR) [--ttl D] [--dns NAME]... [--key-type T]\n"
    "  bundle show [--format pem|spiffe]\n"
    "  audit query [--since T] [--until T] [--spiffe-id ID] [--event TYPE] [--outcome ok|denied|error]\n"
    "              [--limit N] [--json]\n"
    "  audit verify [--head FILE] [--bundle FILE]\n"
    "  audit head [--out FILE]\n"
    "  dev [--trust-domain TD] [--listen HOST:PORT]  server + agent in one process (make run)\n"
    "  server [--listen HOST:PORT] [--svid-ttl D]   run the server (node API, admin API)\n"
    "  token generate [--ttl D] [--spiffe-id ID]     a one-time join token for an agent\n"
    "  entry create --spiffe-id ID --parent-id ID --selector T:V [--selector ...] [--ttl D] [--dns N]...\n"
    "  entry list [--parent-id ID] | entry show ID | entry delete ID\n"
    "  agent list | agent evict SPIFFE_ID\n"
    "  apply -f FILE_OR_DIR [--dry-run]     ServiceEntry and AuthorizationPolicy YAML, all or nothing\n"
    "  service apply -f FILE [--dry-run] | service list | service show NAME | service delete NAME\n"
    "  endpoint add --service S --address IP [--port NAME=N]... [--label K=V]...\n"
    "               [--spiffe-id ID | --service-account SA] [--health HEALTHY|UNHEALTHY|DRAINING]\n"
    "  endpoint remove --service S --address IP | endpoint list [--service S]\n"
    "  policy list | policy show NAME | policy delete NAME\n"
    "  policy check [--from SPIFFE_ID] --to SERVICE [--method M] [--path P] [--port N] [--host H]\n"
    "                                  exit 0: allowed, 3: denied\n"
    "  envoy bootstrap --node ID [--service NAME] [--out FILE] ...   an Envoy bootstrap (JSON)\n"
    "  xds dump --node ID [--type cds|eds|lds|rds]   what a proxy would receive over ADS (JSON)\n"
    "  version\n"
    "\n"
    "--data-dir defaults to $MESHID_DATA_DIR, else ./var. Times: RFC 3339 or a duration (1h = one\n"
    "hour ago). Durations: 90s, 15m, 1h30m, 2d.\n";

static const struct {
    const char *noun;
    cli_cmd_fn fn;
} commands[] = {
    {"ca", cmd_ca},
    {"svid", cmd_svid},
    {"bundle", cmd_bundle},
    {"audit", cmd_audit},
    {"token", cmd_token},
    {"entry", cmd_entry},
    {"agent", cmd_agent},
    {"service", cmd_service},
    {"endpoint", cmd_endpoint},
    {"policy", cmd_policy},
    {"envoy", cmd_envoy},
    {"xds", cmd_xds},
};

int cli_fail(mid_result r)
{
    fprintf(stderr, "meshid: error: %s\n", mid_errmsg());
    return r.err == MID_E_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
}

int cli_usage(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("meshid: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (usage != NULL) fprintf(stderr, "usage: %s\n", usage);
    return CLI_EXIT_USAGE;
}

MID_RESULT cli_open_store(cli_ctx *ctx, store **out)
{
    MID_GUARD(fs_mkdir_p(ctx->data_dir, 0711));
    return store_open(ctx->db_path, NULL, out);
}

/* Removes "--name VALUE" / "--name=VALUE" from anywhere in argv; returns the
 * value or NULL. Sets *bad when the flag is present without a value. */
static const char *take_global(int *argc, char **argv, const char *name, int *bad)
{
    size_t nl = strlen(name);
    const char *val = NULL;
    int w = 0;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            while (i < *argc) argv[w++] = argv[i++];
            break;
        }
        if (strncmp(argv[i], name, nl) == 0 && argv[i][nl] == '=') {
            val = argv[i] + nl + 1;
            continue;
        }
        if (strcmp(argv[i], name) == 0) {
            if (i + 1 >= *argc) {
                *bad = 1;
                continue;
            }
            val = argv[++i];
            continue;
        }
        argv[w++] = argv[i];
    }
    *argc = w;
    argv[w] = NULL;
    return val;
}

static void make_actor(cli_ctx *ctx)
{
    uid_t uid = getuid();
    struct passwd *pw = getpwuid(uid);
    snprintf(ctx->actor, sizeof ctx->actor, "cli:uid=%ld(%s)", (long)uid,
             pw != NULL ? pw->pw_name : "?");
}

int main(int argc, char **argv)
{
    int bad = 0;
    const char *dir = take_global(&argc, argv, "--data-dir", &bad);
    const char *lvl = take_global(&argc, argv, "--log-level", &bad);
    if (bad) return cli_usage(NULL, "--data-dir and --log-level need a value");
    if (lvl != NULL) {
        int l = log_level_parse(lvl);
        if (l < 0) return cli_usage(NULL, "unknown log level '%s' (debug, info, warn, error, off)", lvl);
        log_set_level((log_level)l);
    }
    if (dir == NULL) dir = getenv("MESHID_DATA_DIR");
    if (dir == NULL || *dir == '\0') dir = "./var";

    cli_ctx ctx = {.data_dir = dir};
    if (fs_join(ctx.db_path, sizeof ctx.db_path, dir, "meshid.db").err != MID_E_OK)
        return cli_fail((mid_result){MID_E_TOO_LARGE});
    make_actor(&ctx);

    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("meshid %s\n", MESHID_VERSION);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "server") == 0) return cmd_server(&ctx, argc - 1, argv + 1); /* no verb */
    if (strcmp(argv[1], "dev") == 0) return cmd_dev(&ctx, argc - 1, argv + 1);       /* no verb */
    if (strcmp(argv[1], "apply") == 0) return cmd_apply(&ctx, argc - 1, argv + 1);   /* no verb */
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].noun) == 0) {
            if (argc < 3) return cli_usage(NULL, "'%s' needs a verb; see 'meshid help'", argv[1]);
            return commands[i].fn(&ctx, argc - 2, argv + 2);
        }
    }
    return cli_usage(NULL, "unknown command '%s'; see 'meshid help'", argv[1]);
}
