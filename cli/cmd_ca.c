/* meshid ca init | status | prepare | activate | rotate | taint | revoke | retire */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/rotation.h"
#include "cli/cli.h"
#include "cli/cmd_ca_remote.h"
#include "identity/spiffe_id.h"
#include "lib/timeutil.h"

#define CA_INIT_USAGE                                                                   \
    "meshid ca init (--trust-domain TD [--key-type ec-p256|rsa-2048] [--root-ttl D] "   \
    "[--intermediate-ttl D] | --upstream-dir DIR)"

static int ca_init_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"trust-domain", required_argument, NULL, 't'},
        {"key-type", required_argument, NULL, 'k'},
        {"root-ttl", required_argument, NULL, 'r'},
        {"intermediate-ttl", required_argument, NULL, 'i'},
        {"upstream-dir", required_argument, NULL, 'u'},
        {NULL, 0, NULL, 0}};
    char td[SPIFFE_TD_MAX + 1] = "";
    const char *upstream = NULL;
    ca_init_opts o = {.key_type = CA_KEY_EC_P256, .actor = ctx->actor};
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 't':
            if (!mid_is_ok(r = spiffe_trust_domain_parse(optarg, td))) return cli_fail(r);
            break;
        case 'k':
            if (!mid_is_ok(r = ca_key_type_parse(optarg, &o.key_type))) return cli_fail(r);
            break;
        case 'r':
            if (!mid_is_ok(r = time_parse_duration(optarg, &o.root_ttl))) return cli_fail(r);
            break;
        case 'i':
            if (!mid_is_ok(r = time_parse_duration(optarg, &o.intermediate_ttl)))
                return cli_fail(r);
            break;
        case 'u': upstream = optarg; break;
        default: return cli_usage(CA_INIT_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(CA_INIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if ((td[0] == '\0') == (upstream == NULL))
        return cli_usage(CA_INIT_USAGE, "give exactly one of --trust-domain or --upstream-dir");
    if (upstream != NULL && o.root_ttl + o.intermediate_ttl != 0)
        return cli_usage(CA_INIT_USAGE, "--root-ttl/--intermediate-ttl do not apply to --upstream-dir");
    o.trust_domain = td;

    store *st = NULL;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (upstream != NULL)
        r = ca_init_upstream(st, ctx->data_dir, upstream, ctx->actor);
    else
        r = ca_init(st, ctx->data_dir, &o);
    int rc = CLI_EXIT_OK;
    if (!mid_is_ok(r)) {
        rc = cli_fail(r);
    } else {
        ca *c = NULL;
        if (mid_is_ok(r = ca_open(st, ctx->data_dir, &c))) {
            printf("initialised trust domain %s in %s\n", ca_trust_domain(c), ctx->data_dir);
            ca_close(c);
        } else {
            rc = cli_fail(r);
        }
    }
    store_close(st);
    return rc;
}

static void short_id(const char *id, char out[17])
{
    size_t n = strnlen(id, 16);
    memcpy(out, id, n);
    out[n] = '\0';
}

static const char *short_id_of(const char *id, char out[17])
{
    short_id(id, out);
    return out;
}

/* Keeps the two largest units of a duration: 364d23h rather than 364d23h59m59s. */
static int64_t coarse(int64_t secs)
{
    int64_t unit = secs >= 86400 ? 3600 : secs >= 3600 ? 60 : 1;
    return secs - secs % unit;
}

static int ca_status_cmd(cli_ctx *ctx, int argc, char **argv)
{
    if (argc != 1) return cli_usage("meshid ca status", "unexpected argument '%s'", argv[1]);
    store *st = NULL;
    store_authority_row *rows = NULL;
    size_t n = 0;
    mid_result r;
    int rc = CLI_EXIT_OK;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (!mid_is_ok(r = store_authority_list(st, &rows, &n))) {
        rc = cli_fail(r);
        goto out;
    }
    if (n == 0) {
        fprintf(stderr, "meshid: error: no trust domain in %s (run 'meshid ca init "
                        "--trust-domain TD')\n", ctx->data_dir);
        rc = CLI_EXIT_ERROR;
        goto out;
    }
    int64_t now = time_now();
    printf("trust domain: %s\ndata dir:     %s\n\n", rows[0].a.trust_domain, ctx->data_dir);
    printf("%-16s  %-12s  %-8s  %-20s  %-10s  %9s  %-8s  %s\n", "ID", "KIND", "STATE",
           "NOT AFTER", "EXPIRES IN", "LIVE SVID", "SOURCE", "ROOT");
    for (size_t i = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        char id[17], na[TIME_RFC3339_LEN], left[32];
        int64_t live = 0;
        short_id(a->id, id);
        time_format_rfc3339(a->not_after, na);
        if (a->not_after > now)
            time_format_duration(coarse(a->not_after - now), left, sizeof left);
        else
            snprintf(left, sizeof left, "expired");
        if (!mid_is_ok(r = store_cert_count_live(st, a->id, now, &live))) {
            rc = cli_fail(r);
            goto out;
        }
        char parent[17] = "-";
        if (a->parent_id != NULL) short_id(a->parent_id, parent);
        printf("%-16s  %-12s  %-8s  %-20s  %-10s  %9lld  %-8s  %s\n", id, a->kind, a->state, na,
               left, (long long)live, a->upstream ? "upstream" : "self", parent);
    }
    {
        char sock[4096];
        if (ca_remote_socket(ctx, sock, sizeof sock)) ca_remote_print_spread(sock);
    }
out:
    store_authority_list_free(rows, n);
    store_close(st);
    return rc;
}

/* ---- the lifecycle ------------------------------------------------------------ */

#define CA_PREPARE_FLAGS \
    "[--root | --upstream-dir DIR] [--replace] [--key-type ec-p256|rsa-2048] [--root-ttl D] " \
    "[--intermediate-ttl D]"
#define CA_PREPARE_USAGE "meshid ca prepare " CA_PREPARE_FLAGS
#define CA_ROTATE_USAGE "meshid ca rotate " CA_PREPARE_FLAGS

/* Parses the flags prepare and rotate share; returns -1 when parsed, else an
 * exit code. */
static int parse_prepare(int argc, char **argv, const char *usage, ca_prepare_opts *o,
                         int *force, int64_t *timeout_s)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 'T'},
        {"root", no_argument, NULL, 'R'},
        {"upstream-dir", required_argument, NULL, 'u'},
        {"replace", no_argument, NULL, 'x'},
        {"key-type", required_argument, NULL, 'k'},
        {"root-ttl", required_argument, NULL, 'r'},
        {"intermediate-ttl", required_argument, NULL, 'i'},
        {NULL, 0, NULL, 0}};
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'f':
        case 'T':
            if (force == NULL) return cli_usage(usage, "bad option '%s'", argv[optind - 1]);
            if (c == 'f') *force = 1;
            else if (!mid_is_ok(r = time_parse_duration(optarg, timeout_s))) return cli_fail(r);
            break;
        case 'R': o->new_root = 1; break;
        case 'u': o->upstream_dir = optarg; break;
        case 'x': o->replace = 1; break;
        case 'k':
            if (!mid_is_ok(r = ca_key_type_parse(optarg, &o->key_type))) return cli_fail(r);
            break;
        case 'r':
            if (!mid_is_ok(r = time_parse_duration(optarg, &o->root_ttl))) return cli_fail(r);
            break;
        case 'i':
            if (!mid_is_ok(r = time_parse_duration(optarg, &o->intermediate_ttl)))
                return cli_fail(r);
            break;
        default: return cli_usage(usage, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(usage, "unexpected argument '%s'", argv[optind]);
    if (o->new_root && o->upstream_dir != NULL)
        return cli_usage(usage, "give at most one of --root and --upstream-dir");
    if (o->upstream_dir != NULL && (o->key_type != 0 || o->root_ttl + o->intermediate_ttl != 0))
        return cli_usage(usage, "--key-type/--root-ttl/--intermediate-ttl do not apply to "
                                "--upstream-dir");
    if (!o->new_root && o->root_ttl != 0)
        return cli_usage(usage, "--root-ttl needs --root");
    return -1;
}

static void print_prepared(const ca_prepared *p)
{
    char i[17], r[17];
    short_id(p->intermediate_id, i);
    short_id(p->root_id, r);
    printf("prepared intermediate %s under %sroot %s%s\n", i, p->root_is_new ? "new " : "", r,
           p->root_is_new ? " (in the trust bundle from now on)" : "");
}

static int ca_prepare_cmd(cli_ctx *ctx, int argc, char **argv)
{
    ca_prepare_opts o = {.actor = ctx->actor};
    int rc = parse_prepare(argc, argv, CA_PREPARE_USAGE, &o, NULL, NULL);
    if (rc >= 0) return rc;
    char sock[4096];
    if (ca_remote_socket(ctx, sock, sizeof sock)) return ca_remote_prepare(sock, &o);
    store *st = NULL;
    ca_prepared p = {0};
    mid_result r;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (!mid_is_ok(r = ca_prepare(st, ctx->data_dir, &o, &p))) {
        rc = cli_fail(r);
    } else {
        char i[17];
        print_prepared(&p);
        printf("activate it with: meshid ca activate %s\n", short_id_of(p.intermediate_id, i));
        rc = CLI_EXIT_OK;
    }
    store_close(st);
    return rc;
}

static int ca_rotate_cmd(cli_ctx *ctx, int argc, char **argv)
{
    ca_prepare_opts o = {.actor = ctx->actor};
    int force = 0;
    int64_t timeout_s = 0;
    int rc = parse_prepare(argc, argv, CA_ROTATE_USAGE, &o, &force, &timeout_s);
    if (rc >= 0) return rc;
    char sock[4096];
    if (ca_remote_socket(ctx, sock, sizeof sock)) {
        if (o.upstream_dir != NULL || o.replace || o.key_type != 0 || o.root_ttl != 0 ||
            o.intermediate_ttl != 0)
            return cli_usage(CA_ROTATE_USAGE, "with a server running, rotate takes only --root, "
                             "--force and --timeout; use ca prepare, then ca activate");
        return ca_remote_rotate(sock, o.new_root, force, timeout_s);
    }
    store *st = NULL;
    ca_prepared p = {0};
    char i[17];
    mid_result r;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    rc = CLI_EXIT_OK;
    if (!mid_is_ok(r = ca_prepare(st, ctx->data_dir, &o, &p))) {
        rc = cli_fail(r);
    } else if (!mid_is_ok(r = ca_activate_at(st, ctx->data_dir, p.intermediate_id, NULL,
                                             ctx->actor, time_now(), NULL))) {
        /* What was prepared stays prepared (and trusted): say so on the one line. */
        fprintf(stderr, "meshid: error: prepared intermediate %s but could not activate it: %s\n",
                short_id_of(p.intermediate_id, i), mid_errmsg());
        rc = CLI_EXIT_ERROR;
    } else {
        print_prepared(&p);
        printf("activated intermediate %s: it signs from now on\n",
               short_id_of(p.intermediate_id, i));
        printf("(no server running: acted on the store directly; no agent was consulted)\n");
    }
    store_close(st);
    return rc;
}

/* The verbs that take exactly one authority id. */
static int one_id(int argc, char **argv, const char *usage)
{
    if (argc < 2) return cli_usage(usage, "missing authority ID");
    if (argc > 2) return cli_usage(usage, "unexpected argument '%s'", argv[2]);
    if (argv[1][0] == '-') return cli_usage(usage, "bad option '%s'", argv[1]);
    return -1;
}

#define CA_ACTIVATE_USAGE "meshid ca activate ID [--force] [--timeout D]"

static int ca_activate_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"force", no_argument, NULL, 'f'},
                                         {"timeout", required_argument, NULL, 'T'},
                                         {NULL, 0, NULL, 0}};
    int force = 0;
    int64_t timeout_s = 0;
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 'f') force = 1;
        else if (c == 'T') {
            if (!mid_is_ok(r = time_parse_duration(optarg, &timeout_s))) return cli_fail(r);
        } else return cli_usage(CA_ACTIVATE_USAGE, "bad option '%s'", argv[optind - 1]);
    }
    if (optind >= argc) return cli_usage(CA_ACTIVATE_USAGE, "missing authority ID");
    if (optind + 1 < argc)
        return cli_usage(CA_ACTIVATE_USAGE, "unexpected argument '%s'", argv[optind + 1]);
    const char *id = argv[optind];
    char sock[4096];
    if (ca_remote_socket(ctx, sock, sizeof sock))
        return ca_remote_activate(sock, id, force, timeout_s);
    store *st = NULL;
    char full[CA_AUTHORITY_ID_MAX], i[17];
    int rc;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    /* No server: no gate (see docs/ca.md "Rotation"). */
    if (!mid_is_ok(r = ca_activate_at(st, ctx->data_dir, id, NULL, ctx->actor, time_now(),
                                      full))) {
        rc = cli_fail(r);
    } else {
        printf("activated intermediate %s: it signs from now on\n", short_id_of(full, i));
        printf("(no server running: acted on the store directly; no agent was consulted)\n");
        rc = CLI_EXIT_OK;
    }
    store_close(st);
    return rc;
}

static int ca_taint_cmd(cli_ctx *ctx, int argc, char **argv)
{
    int rc = one_id(argc, argv, "meshid ca taint ID");
    if (rc >= 0) return rc;
    char sock[4096];
    if (ca_remote_socket(ctx, sock, sizeof sock)) return ca_remote_taint_revoke(sock, argv[1], 0);
    store *st = NULL;
    char full[CA_AUTHORITY_ID_MAX], i[17];
    mid_result r;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (!mid_is_ok(r = ca_taint(st, argv[1], ctx->actor, full))) {
        rc = cli_fail(r);
    } else {
        printf("tainted %s: every SVID chained to it is to be re-issued\n", short_id_of(full, i));
        rc = CLI_EXIT_OK;
    }
    store_close(st);
    return rc;
}

static int ca_revoke_cmd(cli_ctx *ctx, int argc, char **argv)
{
    int rc = one_id(argc, argv, "meshid ca revoke ID");
    if (rc >= 0) return rc;
    char sock[4096];
    if (ca_remote_socket(ctx, sock, sizeof sock)) return ca_remote_taint_revoke(sock, argv[1], 1);
    store *st = NULL;
    char full[CA_AUTHORITY_ID_MAX], i[17];
    mid_result r;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (!mid_is_ok(r = ca_revoke(st, argv[1], ctx->actor, full))) {
        rc = cli_fail(r);
    } else {
        printf("revoked root %s: it has left the trust bundle\n", short_id_of(full, i));
        rc = CLI_EXIT_OK;
    }
    store_close(st);
    return rc;
}

static int ca_retire_cmd(cli_ctx *ctx, int argc, char **argv)
{
    if (argc != 1) return cli_usage("meshid ca retire", "unexpected argument '%s'", argv[1]);
    store *st = NULL;
    size_t n = 0;
    mid_result r;
    int rc = CLI_EXIT_OK;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (!mid_is_ok(r = ca_retire_expired(st, time_now(), ctx->actor, &n)))
        rc = cli_fail(r);
    else
        printf("retired %zu old authorit%s\n", n, n == 1 ? "y" : "ies");
    store_close(st);
    return rc;
}

int cmd_ca(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "init") == 0) return ca_init_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "status") == 0) return ca_status_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "prepare") == 0) return ca_prepare_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "activate") == 0) return ca_activate_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "rotate") == 0) return ca_rotate_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "taint") == 0) return ca_taint_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "revoke") == 0) return ca_revoke_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "retire") == 0) return ca_retire_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'ca %s' (init, status, prepare, activate, rotate, "
                           "taint, revoke, retire)", argv[0]);
}
