/* meshid xds dump --node ID [--type cds|eds|lds|rds] [--spiffe-id ID]
 *                 [--proxyless] [--cert-provider NAME]
 *
 * Prints, as JSON, what the proxy `ID` would receive over ADS right now
 * (like `istioctl proxy-config`): the registry is read from the store and
 * the snapshot built by the same generator the server uses
 * (meshcore/xds_gen.h), so the output equals what the server sends for the
 * same revision. The identity is --spiffe-id, else the node ID when it is a
 * SPIFFE ID (the plaintext port's rule). Every resource is shown with its
 * "@type" and nested Anys expanded (meshcore/xds_json.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "meshcore/registry_store.h"
#include "meshcore/xds_gen.h"
#include "meshcore/xds_json.h"
#include "meshcore/xds_snapshot.h"

#define DUMP_USAGE                                                                          \
    "meshid xds dump --node ID [--type cds|eds|lds|rds] [--spiffe-id ID] [--proxyless] " \
    "[--cert-provider NAME]"

#define META_MAX 3

/* A decoded-looking Node for xds_proxy_from_node, built from the flags. */
typedef struct {
    Envoy__Config__Core__V3__Node node;
    Google__Protobuf__Struct meta;
    Google__Protobuf__Struct__FieldsEntry entries[META_MAX];
    Google__Protobuf__Struct__FieldsEntry *entry_ptrs[META_MAX];
    Google__Protobuf__Value values[META_MAX];
} dump_node;

static void node_meta(dump_node *d, const char *key, const char *value)
{
    size_t i = d->meta.n_fields;
    google__protobuf__struct__fields_entry__init(&d->entries[i]);
    google__protobuf__value__init(&d->values[i]);
    d->values[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    d->values[i].string_value = (char *)value;
    d->entries[i].key = (char *)key;
    d->entries[i].value = &d->values[i];
    d->entry_ptrs[i] = &d->entries[i];
    d->meta.n_fields = i + 1;
}

static void node_init(dump_node *d, const char *id, const char *spiffe_id, int proxyless,
                      const char *cert_provider)
{
    memset(d, 0, sizeof *d);
    envoy__config__core__v3__node__init(&d->node);
    google__protobuf__struct__init(&d->meta);
    d->meta.fields = d->entry_ptrs;
    d->node.id = (char *)id;
    d->node.cluster = (char *)"xds-dump";
    d->node.user_agent_name = (char *)(proxyless ? "gRPC (meshid xds dump)" : "envoy");
    if (spiffe_id) node_meta(d, XDS_META_SPIFFE_ID, spiffe_id);
    if (proxyless) node_meta(d, XDS_META_GENERATOR, "grpc");
    if (cert_provider) node_meta(d, XDS_META_CERT_PROVIDER, cert_provider);
    d->node.metadata = &d->meta;
}

/* {"version": V, "resources": [...]} for one type. */
static mid_result dump_type(const xds_snapshot *snap, xds_type t, json_t *top)
{
    json_t *obj = json_object(), *arr = json_array();
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, obj && arr, MID_E_NOMEM, "out of memory");
    for (size_t i = 0; i < xds_snapshot_count(snap, t); i++) {
        const xds_resource *res = xds_snapshot_at(snap, t, i);
        json_t *j = NULL;
        MID_TRY(r, xds_json_resource(xds_type_url(t), res->bytes, res->len, &j));
        MID_CHECK(r, json_array_append_new(arr, j) == 0, MID_E_NOMEM, "out of memory");
    }
    MID_CHECK(r, json_object_set_new(obj, "version",
                                         json_string(xds_snapshot_version(snap, t))) == 0, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, json_object_set(obj, "resources", arr) == 0, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, json_object_set(top, xds_type_short(t), obj) == 0, MID_E_NOMEM, "out of memory");
out:
    json_decref(arr);
    json_decref(obj);
    return r;
}

static int xds_dump_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"node", required_argument, NULL, 'n'},
                                         {"type", required_argument, NULL, 't'},
                                         {"spiffe-id", required_argument, NULL, 's'},
                                         {"proxyless", no_argument, NULL, 'p'},
                                         {"cert-provider", required_argument, NULL, 'c'},
                                         {NULL, 0, NULL, 0}};
    const char *node_id = NULL, *type = NULL, *spiffe_id = NULL, *cert_provider = NULL;
    int proxyless = 0;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'n': node_id = optarg; break;
        case 't': type = optarg; break;
        case 's': spiffe_id = optarg; break;
        case 'p': proxyless = 1; break;
        case 'c': cert_provider = optarg; break;
        default: return cli_usage(DUMP_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(DUMP_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!node_id) return cli_usage(DUMP_USAGE, "--node is required");
    if (cert_provider && !proxyless) return cli_usage(DUMP_USAGE, "--cert-provider needs --proxyless");
    xds_type only = XDS_TYPE_COUNT;
    mid_result r;
    if (type && !mid_is_ok(r = xds_type_from_short(type, &only)))
        return cli_usage(DUMP_USAGE, "%s", mid_errmsg());

    store *st = NULL;
    ca *c = NULL;
    mesh_registry *reg = NULL;
    xds_gen *gen = NULL;
    xds_snapshot *snap = NULL;
    xds_proxy proxy = {0};
    json_t *top = NULL;
    dump_node dn;
    node_init(&dn, node_id, spiffe_id, proxyless, cert_provider);
    r = MID_OK_RESULT;
    MID_TRY(r, cli_open_store(ctx, &st));
    MID_TRY(r, ca_open(st, ctx->data_dir, &c));
    MID_TRY(r, mesh_registry_load(st, ca_trust_domain(c), &reg));
    MID_TRY(r, xds_proxy_from_node(&dn.node, NULL, &proxy));
    MID_TRY(r, xds_gen_new(&gen));
    MID_TRY(r, xds_gen_snapshot(gen, reg, &proxy, &snap));
    top = json_object();
    MID_CHECK_MEM(r, top);
    MID_CHECK(r, json_object_set_new(top, "node", json_string(node_id)) == 0, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, json_object_set_new(top, "identity", json_string(proxy.spiffe_id)) == 0, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, json_object_set_new(top, "proxyless", json_boolean(proxy.proxyless)) == 0, MID_E_NOMEM, "out of memory");
    MID_CHECK(r, json_object_set_new(top, "revision",
                                         json_integer(mesh_registry_revision(reg))) == 0, MID_E_NOMEM, "out of memory");
    for (int t = 0; t < XDS_TYPE_COUNT; t++) {
        if (only != XDS_TYPE_COUNT && (xds_type)t != only) continue;
        MID_TRY(r, dump_type(snap, (xds_type)t, top));
    }
    char *text = json_dumps(top, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    MID_CHECK_MEM(r, text);
    puts(text);
    free(text);
out:
    json_decref(top);
    xds_snapshot_unref(snap);
    xds_gen_free(gen);
    xds_proxy_clear(&proxy);
    mesh_registry_unref(reg);
    ca_close(c);
    store_close(st);
    return mid_is_ok(r) ? CLI_EXIT_OK : cli_fail(r);
}

int cmd_xds(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "dump") == 0) return xds_dump_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'xds %s' (dump)", argv[0]);
}
