/* meshid audit query | verify | head */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "lib/fsutil.h"
#include "lib/timeutil.h"

#define QUERY_USAGE                                                                     \
    "meshid audit query [--since T] [--until T] [--spiffe-id ID] [--event TYPE] "        \
    "[--outcome ok|denied|error] [--limit N] [--json]"
#define VERIFY_USAGE "meshid audit verify [--head FILE] [--bundle FILE]"
#define HEAD_USAGE "meshid audit head [--out FILE]"
#define HEAD_FILE_MAX (256 * 1024)

static void hex32(const uint8_t h[STORE_HASH_LEN], char out[2 * STORE_HASH_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < STORE_HASH_LEN; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[2 * STORE_HASH_LEN] = '\0';
}

typedef struct {
    int json;
    int64_t rows;
} query_state;

static int print_row_json(const store_audit_event *e)
{
    char ts[TIME_RFC3339_LEN], prev[2 * STORE_HASH_LEN + 1], hash[2 * STORE_HASH_LEN + 1];
    time_format_rfc3339_ms(e->ts_ms, ts);
    hex32(e->prev_hash, prev);
    hex32(e->hash, hash);
    json_t *details = json_loads(e->details ? e->details : "{}", 0, NULL);
    if (details == NULL) details = json_string(e->details);
    json_t *o = json_pack("{s:I,s:s,s:I,s:s,s:s,s:s?,s:s?,s:s,s:s,s:o,s:s,s:s}", "seq",
                          (json_int_t)e->seq, "time", ts, "ts_ms", (json_int_t)e->ts_ms,
                          "actor", e->actor, "event", e->event, "spiffe_id", e->spiffe_id,
                          "serial", e->serial, "outcome", e->outcome, "reason",
                          e->reason ? e->reason : "", "details", details, "prev_hash", prev,
                          "hash", hash);
    if (o == NULL) return -1;
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (line == NULL) return -1;
    puts(line);
    free(line);
    return 0;
}

static int print_row(void *vctx, const store_audit_event *e)
{
    query_state *q = vctx;
    q->rows++;
    if (q->json) return print_row_json(e);
    char ts[TIME_RFC3339_LEN];
    time_format_rfc3339(e->ts_ms / 1000, ts);
    printf("%6lld  %-20s  %-16s  %-7s  %-40s  %-32s  %s%s%s\n", (long long)e->seq, ts, e->event,
           e->outcome, e->spiffe_id ? e->spiffe_id : "-", e->serial ? e->serial : "-", e->actor,
           e->reason && e->reason[0] ? "  " : "", e->reason ? e->reason : "");
    return 0;
}

static int audit_query_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"since", required_argument, NULL, 's'},     {"until", required_argument, NULL, 'u'},
        {"spiffe-id", required_argument, NULL, 'i'}, {"event", required_argument, NULL, 'e'},
        {"outcome", required_argument, NULL, 'o'},   {"limit", required_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},            {NULL, 0, NULL, 0}};
    store_audit_filter f = {0};
    query_state q = {0};
    int64_t now = time_now(), t;
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 's':
        case 'u':
            if (!mid_is_ok(r = time_parse_when(optarg, now, &t))) return cli_fail(r);
            if (c == 's') f.since_ms = t * 1000;
            else f.until_ms = t * 1000 + 999;
            break;
        case 'i': f.spiffe_id = optarg; break;
        case 'e': f.event = optarg; break;
        case 'o':
            if (strcmp(optarg, "ok") != 0 && strcmp(optarg, "denied") != 0 &&
                strcmp(optarg, "error") != 0)
                return cli_usage(QUERY_USAGE, "--outcome is ok, denied or error, not '%s'", optarg);
            f.outcome = optarg;
            break;
        case 'l': {
            char *end = NULL;
            long long n = strtoll(optarg, &end, 10);
            if (end == optarg || *end != '\0' || n <= 0)
                return cli_usage(QUERY_USAGE, "--limit needs a positive number, not '%s'", optarg);
            f.limit = n;
            break;
        }
        case 'j': q.json = 1; break;
        default: return cli_usage(QUERY_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(QUERY_USAGE, "unexpected argument '%s'", argv[optind]);

    store *st = NULL;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) return cli_fail(r);
    if (!q.json)
        printf("%6s  %-20s  %-16s  %-7s  %-40s  %-32s  %s\n", "SEQ", "TIME", "EVENT", "OUTCOME",
               "SPIFFE ID", "SERIAL", "ACTOR  REASON");
    r = store_audit_query(st, &f, print_row, &q);
    store_close(st);
    if (!mid_is_ok(r)) return cli_fail(r);
    if (!q.json) printf("(%lld event%s)\n", (long long)q.rows, q.rows == 1 ? "" : "s");
    return CLI_EXIT_OK;
}

static int audit_verify_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"head", required_argument, NULL, 'h'},
                                         {"bundle", required_argument, NULL, 'b'},
                                         {NULL, 0, NULL, 0}};
    const char *head_path = NULL, *bundle_path = NULL;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 'h') head_path = optarg;
        else if (c == 'b') bundle_path = optarg;
        else return cli_usage(VERIFY_USAGE, "bad option '%s'", argv[optind - 1]);
    }
    if (optind != argc) return cli_usage(VERIFY_USAGE, "unexpected argument '%s'", argv[optind]);
    if (bundle_path != NULL && head_path == NULL)
        return cli_usage(VERIFY_USAGE, "--bundle only applies with --head");

    char *head = NULL, *anchors = NULL;
    size_t len;
    store *st = NULL;
    store_audit_verdict v = {0};
    mid_result r;
    int rc;
    if (head_path != NULL && !mid_is_ok(r = fs_read_file(head_path, HEAD_FILE_MAX, &head, &len)))
        goto fail;
    if (bundle_path != NULL &&
        !mid_is_ok(r = fs_read_file(bundle_path, HEAD_FILE_MAX, &anchors, &len)))
        goto fail;
    if (!mid_is_ok(r = cli_open_store(ctx, &st))) goto fail;
    r = head != NULL ? ca_audit_head_verify(st, head, anchors, &v) : store_audit_verify(st, &v);
    if (!mid_is_ok(r)) goto fail;
    if (v.ok) {
        char hash[2 * STORE_HASH_LEN + 1];
        hex32(v.head_hash, hash);
        printf("audit log intact: %lld events, head seq %lld hash %s%s\n", (long long)v.events,
               (long long)v.head_seq, hash, head != NULL ? "; extends the signed head" : "");
        rc = CLI_EXIT_OK;
    } else {
        printf("audit log BROKEN at event %lld: %s\n", (long long)v.broken_seq, v.reason);
        rc = CLI_EXIT_TAMPERED;
    }
    goto out;
fail:
    rc = cli_fail(r);
out:
    store_close(st);
    free(head);
    free(anchors);
    return rc;
}

static int audit_head_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const char *out_path = NULL;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c != 'o') return cli_usage(HEAD_USAGE, "bad option '%s'", argv[optind - 1]);
        out_path = optarg;
    }
    if (optind != argc) return cli_usage(HEAD_USAGE, "unexpected argument '%s'", argv[optind]);
    store *st = NULL;
    ca *c = NULL;
    char *json = NULL;
    mid_result r;
    int rc = CLI_EXIT_OK;
    if (!mid_is_ok(r = cli_open_store(ctx, &st)) || !mid_is_ok(r = ca_open(st, ctx->data_dir, &c)) ||
        !mid_is_ok(r = ca_audit_head_sign(c, &json))) {
        rc = cli_fail(r);
    } else if (out_path != NULL) {
        if (!mid_is_ok(r = fs_write_file(out_path, json, strlen(json), 0644))) rc = cli_fail(r);
    } else {
        puts(json);
    }
    free(json);
    ca_close(c);
    store_close(st);
    return rc;
}

int cmd_audit(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "query") == 0) return audit_query_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "verify") == 0) return audit_verify_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "head") == 0) return audit_head_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'audit %s' (query, verify, head)", argv[0]);
}
