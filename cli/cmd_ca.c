/* meshid ca init | status */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ca/ca.h"
#include "cli/cli.h"
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
    snprintf(out, 17, "%s", id);
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
    printf("%-16s  %-12s  %-8s  %-20s  %-10s  %9s  %s\n", "ID", "KIND", "STATE", "NOT AFTER",
           "EXPIRES IN", "LIVE SVID", "SOURCE");
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
        printf("%-16s  %-12s  %-8s  %-20s  %-10s  %9lld  %s\n", id, a->kind, a->state, na, left,
               (long long)live, a->upstream ? "upstream" : "self");
    }
out:
    store_authority_list_free(rows, n);
    store_close(st);
    return rc;
}

int cmd_ca(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "init") == 0) return ca_init_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "status") == 0) return ca_status_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'ca %s' (init, status)", argv[0]);
}
