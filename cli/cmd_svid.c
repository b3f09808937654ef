/* meshid svid mint */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "lib/fsutil.h"
#include "lib/timeutil.h"

#define MINT_USAGE                                                                      \
    "meshid svid mint --spiffe-id ID (--csr FILE | --write DIR) [--ttl D] [--dns NAME]... " \
    "[--key-type ec-p256|rsa-2048]"

/* Writes the SVID chain, its key (if generated here) and the bundle to dir. */
static mid_result write_svid(ca *c, const ca_svid *s, const char *dir)
{
    char path[4096];
    char *bundle = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, fs_mkdir_p(dir, 0700));
    MID_TRY(r, fs_join(path, sizeof path, dir, "svid.pem"));
    MID_TRY(r, fs_write_file(path, ca_svid_chain_pem(s), strlen(ca_svid_chain_pem(s)), 0644));
    if (ca_svid_key_pem(s) != NULL) {
        MID_TRY(r, fs_join(path, sizeof path, dir, "svid.key"));
        MID_TRY(r, fs_write_file(path, ca_svid_key_pem(s), strlen(ca_svid_key_pem(s)), 0600));
    }
    MID_TRY(r, ca_bundle_pem(c, &bundle));
    MID_TRY(r, fs_join(path, sizeof path, dir, "bundle.pem"));
    MID_TRY(r, fs_write_file(path, bundle, strlen(bundle), 0644));
out:
    free(bundle);
    return r;
}

static int svid_mint_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"spiffe-id", required_argument, NULL, 's'}, {"csr", required_argument, NULL, 'c'},
        {"write", required_argument, NULL, 'w'},     {"ttl", required_argument, NULL, 't'},
        {"dns", required_argument, NULL, 'd'},       {"key-type", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0}};
    const char *dns[CA_MAX_DNS + 1];
    const char *csr_path = NULL, *out_dir = NULL;
    ca_issue_req req = {.key_type = CA_KEY_EC_P256, .dns = dns, .actor = ctx->actor};
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 's': req.spiffe_id = optarg; break;
        case 'c': csr_path = optarg; break;
        case 'w': out_dir = optarg; break;
        case 't':
            if (!mid_is_ok(r = time_parse_duration(optarg, &req.ttl))) return cli_fail(r);
            break;
        case 'd':
            if (req.n_dns >= CA_MAX_DNS)
                return cli_usage(MINT_USAGE, "at most %d --dns names", CA_MAX_DNS);
            dns[req.n_dns++] = optarg;
            break;
        case 'k':
            if (!mid_is_ok(r = ca_key_type_parse(optarg, &req.key_type))) return cli_fail(r);
            break;
        default: return cli_usage(MINT_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(MINT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (req.spiffe_id == NULL) return cli_usage(MINT_USAGE, "--spiffe-id is required");
    if (csr_path == NULL && out_dir == NULL)
        return cli_usage(MINT_USAGE, "give --csr FILE, --write DIR, or both");

    char *csr = NULL;
    size_t csr_len = 0;
    store *st = NULL;
    ca *c = NULL;
    ca_svid *s = NULL;
    int rc = CLI_EXIT_OK;
    if (csr_path != NULL) {
        /* Read one byte past the limit so the CA reports the size itself. */
        r = fs_read_file(csr_path, CA_CSR_MAX + 1, &csr, &csr_len);
        if (r.err == MID_E_TOO_LARGE) {
            r = fs_read_file(csr_path, (size_t)1 << 26, &csr, &csr_len);
        }
        if (!mid_is_ok(r)) return cli_fail(r);
        req.csr = (const unsigned char *)csr;
        req.csr_len = csr_len;
    }
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) goto fail;
    if (!mid_is_ok(r = ca_open(st, ctx->data_dir, &c))) goto fail;
    if (!mid_is_ok(r = ca_issue(c, &req, &s))) goto fail;
    if (out_dir != NULL) {
        if (!mid_is_ok(r = write_svid(c, s, out_dir))) goto fail;
        char na[TIME_RFC3339_LEN];
        time_format_rfc3339(ca_svid_not_after(s), na);
        printf("minted %s serial %s valid until %s into %s/\n", ca_svid_spiffe_id(s),
               ca_svid_serial(s), na, out_dir);
    } else {
        fputs(ca_svid_chain_pem(s), stdout);
    }
    goto out;
fail:
    rc = cli_fail(r);
out:
    ca_svid_free(s);
    ca_close(c);
    store_close(st);
    free(csr);
    return rc;
}

int cmd_svid(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "mint") == 0) return svid_mint_cmd(ctx, argc, argv);
    int svid_fetch_cmd(cli_ctx *, int, char **); /* cmd_svid_fetch.c; until cli.h declares it */
    if (strcmp(argv[0], "fetch") == 0) return svid_fetch_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'svid %s' (mint)", argv[0]);
}
