/* meshid bundle show */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "cli/cli.h"

#define SHOW_USAGE "meshid bundle show [--format pem|spiffe]"

static int bundle_show_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'},
                                         {NULL, 0, NULL, 0}};
    const char *format = "pem";
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c != 'f') return cli_usage(SHOW_USAGE, "bad option '%s'", argv[optind - 1]);
        format = optarg;
    }
    if (optind != argc) return cli_usage(SHOW_USAGE, "unexpected argument '%s'", argv[optind]);
    int spiffe = strcmp(format, "spiffe") == 0;
    if (!spiffe && strcmp(format, "pem") != 0)
        return cli_usage(SHOW_USAGE, "unknown format '%s'", format);

    store *st = NULL;
    ca *c = NULL;
    char *text = NULL;
    mid_result r;
    int rc = CLI_EXIT_OK;
    if (!mid_is_ok(r = cli_open_store(ctx, &st)) || !mid_is_ok(r = ca_open(st, ctx->data_dir, &c)) ||
        !mid_is_ok(r = spiffe ? ca_bundle_spiffe(c, &text) : ca_bundle_pem(c, &text))) {
        rc = cli_fail(r);
    } else {
        fputs(text, stdout);
        if (text[0] != '\0' && text[strlen(text) - 1] != '\n') fputc('\n', stdout);
    }
    free(text);
    ca_close(c);
    store_close(st);
    return rc;
}

int cmd_bundle(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "show") == 0) return bundle_show_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'bundle %s' (show)", argv[0]);
}
