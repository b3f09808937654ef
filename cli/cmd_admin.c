/* Admin commands, talking to a running server's admin socket:
 *   meshid token generate [--ttl D] [--spiffe-id ID]
 *   meshid entry create --spiffe-id ID --parent-id ID --selector T:V [--selector ...] [--ttl D] [--dns N]...
 *   meshid entry list [--parent-id ID] | entry show ID | entry delete ID
 *   meshid agent list | agent evict SPIFFE_ID
 * (`meshid agent --server ...`, running the node agent, is cmd_agent_run.) */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "identity/entry.h"
#include "lib/timeutil.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/admin_client.h"

#define TOKEN_USAGE "meshid token generate [--ttl D] [--spiffe-id ID]"
#define ENTRY_CREATE_USAGE                                                                      \
    "meshid entry create --spiffe-id ID --parent-id ID --selector TYPE:VALUE [--selector ...] " \
    "[--ttl D] [--dns NAME]..."
#define ENTRY_USAGE "meshid entry (create ... | list [--parent-id ID] | show ID | delete ID)"
#define AGENT_USAGE "meshid agent (list | evict SPIFFE_ID | --server ... to run the agent)"

/* Until the node agent's command is linked in. */
__attribute__((weak)) int cmd_agent_run(cli_ctx *ctx, int argc, char **argv)
{
    (void)ctx;
    (void)argc;
    (void)argv;
    fprintf(stderr, "agent: not built yet\n");
    return CLI_EXIT_ERROR;
}

static mid_result call(cli_ctx *ctx, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp)
{
    char sock[4096];
    MID_GUARD(admin_default_socket(ctx->data_dir, sock, sizeof sock));
    return admin_call(sock, method, req, desc, resp);
}

static void fmt_time(int64_t t, char out[TIME_RFC3339_LEN])
{
    if (t <= 0) snprintf(out, TIME_RFC3339_LEN, "-");
    else time_format_rfc3339(t, out);
}

/* ---- token ------------------------------------------------------------------ */

static int token_generate_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"ttl", required_argument, NULL, 't'},
                                         {"spiffe-id", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    Meshid__Admin__V1__CreateJoinTokenRequest req = MESHID__ADMIN__V1__CREATE_JOIN_TOKEN_REQUEST__INIT;
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 't':
            if (!mid_is_ok(r = time_parse_duration(optarg, &req.ttl_seconds))) return cli_fail(r);
            break;
        case 's': req.spiffe_id = optarg; break;
        default: return cli_usage(TOKEN_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(TOKEN_USAGE, "unexpected argument '%s'", argv[optind]);
    ProtobufCMessage *m = NULL;
    r = call(ctx, "CreateJoinToken", &req.base,
             &meshid__admin__v1__create_join_token_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    Meshid__Admin__V1__CreateJoinTokenResponse *resp = (Meshid__Admin__V1__CreateJoinTokenResponse *)m;
    char exp[TIME_RFC3339_LEN];
    fmt_time(resp->expires_at, exp);
    printf("%s\n", resp->token);
    fflush(stdout);
    fprintf(stderr, "join token for %s, single use, expires %s (it is not shown again)\n",
            resp->agent_spiffe_id, exp);
    OPENSSL_cleanse(resp->token, strlen(resp->token));
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int cmd_token(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "generate") == 0 || strcmp(argv[0], "create") == 0)
        return token_generate_cmd(ctx, argc, argv);
    return cli_usage(TOKEN_USAGE, "unknown verb 'token %s' (generate)", argv[0]);
}

/* ---- entry ------------------------------------------------------------------ */

static void print_entry(const Meshid__Agent__V1__Entry *e)
{
    printf("id:         %s\n", e->id);
    printf("spiffe_id:  %s\n", e->spiffe_id);
    printf("parent_id:  %s\n", e->parent_id);
    for (size_t i = 0; i < e->n_selectors; i++)
        printf("selector:   %s:%s\n", e->selectors[i]->type, e->selectors[i]->value);
    for (size_t i = 0; i < e->n_dns_names; i++) printf("dns:        %s\n", e->dns_names[i]);
    char ttl[32] = "default";
    if (e->ttl_seconds > 0) time_format_duration(e->ttl_seconds, ttl, sizeof ttl);
    printf("ttl:        %s\n", ttl);
    printf("revision:   %llu\n", (unsigned long long)e->revision);
}

static int entry_create_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"spiffe-id", required_argument, NULL, 's'}, {"parent-id", required_argument, NULL, 'p'},
        {"selector", required_argument, NULL, 'S'},  {"ttl", required_argument, NULL, 't'},
        {"dns", required_argument, NULL, 'd'},       {NULL, 0, NULL, 0}};
    static char sel_buf[ENTRY_SELECTORS_MAX][ENTRY_SELECTOR_TEXT_MAX + 1];
    Meshid__Agent__V1__Selector sels[ENTRY_SELECTORS_MAX];
    Meshid__Agent__V1__Selector *selp[ENTRY_SELECTORS_MAX];
    char *dns[ENTRY_DNS_NAMES_MAX];
    Meshid__Agent__V1__Entry e = MESHID__AGENT__V1__ENTRY__INIT;
    e.selectors = selp;
    e.dns_names = dns;
    mid_result r;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 's': e.spiffe_id = optarg; break;
        case 'p': e.parent_id = optarg; break;
        case 'S': {
            if (e.n_selectors >= ENTRY_SELECTORS_MAX)
                return cli_usage(ENTRY_CREATE_USAGE, "at most %d selectors", ENTRY_SELECTORS_MAX);
            entry_selector es;
            r = entry_selector_parse(optarg, sel_buf[e.n_selectors], sizeof sel_buf[0], &es);
            if (!mid_is_ok(r)) return cli_fail(r);
            meshid__agent__v1__selector__init(&sels[e.n_selectors]);
            sels[e.n_selectors].type = (char *)es.type;
            sels[e.n_selectors].value = (char *)es.value;
            selp[e.n_selectors] = &sels[e.n_selectors];
            e.n_selectors++;
            break;
        }
        case 't':
            if (!mid_is_ok(r = time_parse_duration(optarg, &e.ttl_seconds))) return cli_fail(r);
            break;
        case 'd':
            if (e.n_dns_names >= ENTRY_DNS_NAMES_MAX)
                return cli_usage(ENTRY_CREATE_USAGE, "at most %d --dns names", ENTRY_DNS_NAMES_MAX);
            dns[e.n_dns_names++] = optarg;
            break;
        default: return cli_usage(ENTRY_CREATE_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return cli_usage(ENTRY_CREATE_USAGE, "unexpected argument '%s'", argv[optind]);
    if (e.spiffe_id[0] == '\0' || e.parent_id[0] == '\0' || e.n_selectors == 0)
        return cli_usage(ENTRY_CREATE_USAGE, "--spiffe-id, --parent-id and a --selector are required");
    Meshid__Admin__V1__CreateEntryRequest req = MESHID__ADMIN__V1__CREATE_ENTRY_REQUEST__INIT;
    req.entry = &e;
    ProtobufCMessage *m = NULL;
    r = call(ctx, "CreateEntry", &req.base, &meshid__admin__v1__create_entry_response__descriptor,
             &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    Meshid__Admin__V1__CreateEntryResponse *resp = (Meshid__Admin__V1__CreateEntryResponse *)m;
    if (resp->entry) print_entry(resp->entry);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static int entry_list_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"parent-id", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    Meshid__Admin__V1__ListEntriesRequest req = MESHID__ADMIN__V1__LIST_ENTRIES_REQUEST__INIT;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 'p') req.parent_id = optarg;
        else return cli_usage(ENTRY_USAGE, "bad option '%s'", argv[optind - 1]);
    }
    if (optind != argc) return cli_usage(ENTRY_USAGE, "unexpected argument '%s'", argv[optind]);
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "ListEntries", &req.base,
                        &meshid__admin__v1__list_entries_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    Meshid__Admin__V1__ListEntriesResponse *resp = (Meshid__Admin__V1__ListEntriesResponse *)m;
    printf("%-32s  %-40s  %-40s  %s\n", "ID", "SPIFFE ID", "PARENT", "SELECTORS");
    for (size_t i = 0; i < resp->n_entries; i++) {
        const Meshid__Agent__V1__Entry *e = resp->entries[i];
        printf("%-32s  %-40s  %-40s  ", e->id, e->spiffe_id, e->parent_id);
        for (size_t k = 0; k < e->n_selectors; k++)
            printf("%s%s:%s", k ? "," : "", e->selectors[k]->type, e->selectors[k]->value);
        printf("\n");
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static int entry_by_id_cmd(cli_ctx *ctx, int argc, char **argv, bool del)
{
    if (argc != 2) return cli_usage(ENTRY_USAGE, "'entry %s' takes one entry ID", argv[0]);
    ProtobufCMessage *m = NULL;
    mid_result r;
    const Meshid__Agent__V1__Entry *e;
    if (del) {
        Meshid__Admin__V1__DeleteEntryRequest req = MESHID__ADMIN__V1__DELETE_ENTRY_REQUEST__INIT;
        req.id = argv[1];
        r = call(ctx, "DeleteEntry", &req.base,
                 &meshid__admin__v1__delete_entry_response__descriptor, &m);
        if (!mid_is_ok(r)) return cli_fail(r);
        e = ((Meshid__Admin__V1__DeleteEntryResponse *)m)->entry;
        if (e) printf("deleted entry %s (%s)\n", e->id, e->spiffe_id);
    } else {
        Meshid__Admin__V1__GetEntryRequest req = MESHID__ADMIN__V1__GET_ENTRY_REQUEST__INIT;
        req.id = argv[1];
        r = call(ctx, "GetEntry", &req.base, &meshid__admin__v1__get_entry_response__descriptor,
                 &m);
        if (!mid_is_ok(r)) return cli_fail(r);
        e = ((Meshid__Admin__V1__GetEntryResponse *)m)->entry;
        if (e) print_entry(e);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int cmd_entry(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "create") == 0) return entry_create_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "list") == 0) return entry_list_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "show") == 0) return entry_by_id_cmd(ctx, argc, argv, false);
    if (strcmp(argv[0], "delete") == 0) return entry_by_id_cmd(ctx, argc, argv, true);
    return cli_usage(ENTRY_USAGE, "unknown verb 'entry %s' (create, list, show, delete)", argv[0]);
}

/* ---- agent ------------------------------------------------------------------ */

static void print_agent_row(const Meshid__Admin__V1__Agent *a)
{
    char na[TIME_RFC3339_LEN], seen[TIME_RFC3339_LEN];
    fmt_time(a->not_after, na);
    fmt_time(a->last_seen, seen);
    printf("%-60s  %-20s  %-20s  %-20s  %-7s  %s\n", a->spiffe_id, na, seen,
           a->hostname[0] ? a->hostname : "-", a->banned ? "yes" : "no", a->serial);
}

static int agent_list_cmd(cli_ctx *ctx, int argc, char **argv)
{
    if (argc != 1) return cli_usage(AGENT_USAGE, "unexpected argument '%s'", argv[1]);
    Meshid__Admin__V1__ListAgentsRequest req = MESHID__ADMIN__V1__LIST_AGENTS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "ListAgents", &req.base,
                        &meshid__admin__v1__list_agents_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    Meshid__Admin__V1__ListAgentsResponse *resp = (Meshid__Admin__V1__ListAgentsResponse *)m;
    printf("%-60s  %-20s  %-20s  %-20s  %-7s  %s\n", "SPIFFE ID", "SVID EXPIRES", "LAST SEEN",
           "HOSTNAME", "EVICTED", "SERIAL");
    for (size_t i = 0; i < resp->n_agents; i++) print_agent_row(resp->agents[i]);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static int agent_evict_cmd(cli_ctx *ctx, int argc, char **argv)
{
    if (argc != 2) return cli_usage(AGENT_USAGE, "'agent evict' takes one SPIFFE ID");
    Meshid__Admin__V1__EvictAgentRequest req = MESHID__ADMIN__V1__EVICT_AGENT_REQUEST__INIT;
    req.spiffe_id = argv[1];
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "EvictAgent", &req.base,
                        &meshid__admin__v1__evict_agent_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    printf("evicted %s: its SVID is refused from now on; it must attest with a new join token\n",
           argv[1]);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int cmd_agent(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "list") == 0) return agent_list_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "evict") == 0) return agent_evict_cmd(ctx, argc, argv);
    return cmd_agent_run(ctx, argc, argv);
}
