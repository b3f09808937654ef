/* The mesh registry's commands, talking to a running server's admin socket:
 *   meshid apply -f FILE_OR_DIR [-f ...] [--dry-run]
 *   meshid service apply -f FILE [--dry-run] | list | show NAME | delete NAME
 *   meshid endpoint add --service S --address IP [--port NAME=N]... [--label K=V]...
 *                       [--spiffe-id ID | --service-account SA] [--health H]
 *   meshid endpoint remove --service S --address IP | list [--service S]
 *   meshid policy list | show NAME | delete NAME
 *   meshid policy check [--from SPIFFE_ID] --to SERVICE [--method M] [--path P] [--port N] [--host H]
 * and the mesh plane's server extensions for `meshid server` / `meshid dev`.
 *
 * Files are parsed here first (the same loader as the server's), so a
 * mistake is reported with its file and line without a server round trip;
 * the server parses and validates again and is the authority. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "meshcore/mesh_admin.h"
#include "meshcore/registry_store.h"
#include "meshcore/yaml_load.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/admin_client.h"
#include "storage/store_mesh.h"

#define APPLY_USAGE "meshid apply -f FILE_OR_DIR [-f ...] [--dry-run]"
#define SERVICE_USAGE \
    "meshid service (apply -f FILE [--dry-run] | list | show NAME | delete NAME)"
#define ENDPOINT_ADD_USAGE                                                                   \
    "meshid endpoint add --service S --address IP [--port NAME=N]... [--label K=V]...\n"     \
    "                    [--spiffe-id ID | --service-account SA] [--health HEALTHY|UNHEALTHY|DRAINING]"
#define ENDPOINT_USAGE                                                                        \
    "meshid endpoint (add ... | remove --service S --address IP | list [--service S])"
#define POLICY_USAGE "meshid policy (list | show NAME | delete NAME | check ...)"
#define CHECK_USAGE                                                                          \
    "meshid policy check [--from SPIFFE_ID] --to SERVICE [--method M] [--path P] [--port N] " \
    "[--host H]"

#define PATH_CAP 4096
#define APPLY_PATHS_MAX 64
/* What fits in one admin call (4 MiB messages) with room for the framing. */
#define APPLY_BYTES_MAX ((size_t)(4u << 20) - (64u << 10))

static mid_result call(cli_ctx *ctx, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp)
{
    char sock[PATH_CAP];
    MID_GUARD(admin_default_socket(ctx->data_dir, sock, sizeof sock));
    return admin_call(sock, method, req, desc, resp);
}

/* ---- reading the files ------------------------------------------------------------- */

typedef struct {
    Meshid__Admin__V1__SourceFile *files; /* names and contents malloc'd */
    Meshid__Admin__V1__SourceFile **ptrs;
    size_t n, cap;
    size_t bytes;
} file_set;

static void file_set_free(file_set *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        free(fs->files[i].name);
        free(fs->files[i].content.data);
    }
    free(fs->files);
    free(fs->ptrs);
    memset(fs, 0, sizeof *fs);
}

static mid_result file_set_add(file_set *fs, const char *path)
{
    MID_ENSURE(fs->n < MESH_ADMIN_FILES_MAX, MID_E_TOO_LARGE, "more than %d files in one apply",
               MESH_ADMIN_FILES_MAX);
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 16;
        Meshid__Admin__V1__SourceFile *nf = realloc(fs->files, cap * sizeof *nf);
        MID_ENSURE_MEM(nf);
        fs->files = nf;
        fs->cap = cap;
    }
    char *text = NULL;
    size_t len = 0;
    MID_GUARD(fs_read_file(path, MESH_DOC_BYTES_MAX, &text, &len));
    char *name = strdup(path);
    if (!name) {
        free(text);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    Meshid__Admin__V1__SourceFile *f = &fs->files[fs->n++];
    meshid__admin__v1__source_file__init(f);
    f->name = name;
    f->content.data = (uint8_t *)text;
    f->content.len = len;
    fs->bytes += len + strlen(name);
    MID_ENSURE(fs->bytes <= APPLY_BYTES_MAX, MID_E_TOO_LARGE,
               "the files add up to more than %zu bytes: apply them in parts", APPLY_BYTES_MAX);
    return mid_ok();
}

static bool yaml_file_name(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.') return false;
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) ||
           (n > 4 && strcmp(name + n - 4, ".yml") == 0);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file, or the *.yaml / *.yml files of a directory (sorted, not
 * recursive), as the YAML loader reads them. */
static mid_result file_set_add_path(file_set *fs, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        MID_BAIL(errno == ENOENT ? MID_E_NOT_FOUND : MID_E_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return file_set_add(fs, path);
    DIR *d = opendir(path);
    MID_ENSURE(d != NULL, MID_E_IO, "%s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    mid_result r = MID_OK_RESULT;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (!yaml_file_name(de->d_name)) continue;
        char full[PATH_CAP];
        MID_TRY(r, fs_join(full, sizeof full, path, de->d_name));
        struct stat fst;
        if (stat(full, &fst) != 0 || !S_ISREG(fst.st_mode)) continue;
        MID_CHECK(r, n < MESH_ADMIN_FILES_MAX, MID_E_TOO_LARGE, "%s: more than %d YAML files",
                  path, MESH_ADMIN_FILES_MAX);
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nn = realloc(names, cap * sizeof *nn);
            MID_CHECK_MEM(r, nn);
            names = nn;
        }
        names[n] = strdup(full);
        MID_CHECK_MEM(r, names[n]);
        n++;
    }
    if (n > 1) qsort(names, n, sizeof *names, str_cmp);
    for (size_t i = 0; i < n; i++) MID_TRY(r, file_set_add(fs, names[i]));
out:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    closedir(d);
    return r;
}

/* ---- apply ----------------------------------------------------------------------------- */

/* Shared by `apply` and `service apply`: only_kind NULL for both kinds. */
static int apply_files(cli_ctx *ctx, int argc, char **argv, const char *only_kind,
                       const char *usage)
{
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"filename", required_argument, NULL, 'f'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    const char *paths[APPLY_PATHS_MAX];
    size_t n_paths = 0;
    bool dry_run = false;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "f:", opts, NULL)) != -1;) {
        switch (c) {
        case 'f':
            if (n_paths >= APPLY_PATHS_MAX) return cli_usage(usage, "at most %d -f paths", APPLY_PATHS_MAX);
            paths[n_paths++] = optarg;
            break;
        case 'n': dry_run = true; break;
        default: return cli_usage(usage, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(usage, "unexpected argument '%s'", argv[optind]);
    if (n_paths == 0) return cli_usage(usage, "-f FILE_OR_DIR is required");
    if (only_kind && n_paths != 1) return cli_usage(usage, "'service apply' takes one -f FILE");

    file_set fs = {0};
    mid_result r = MID_OK_RESULT;
    ProtobufCMessage *m = NULL;
    for (size_t i = 0; i < n_paths; i++) {
        /* a local check first: errors with file, line and field at once */
        mesh_doc *docs = NULL;
        size_t nd = 0;
        MID_TRY(r, mesh_yaml_load_path(paths[i], &docs, &nd));
        for (size_t k = 0; only_kind && k < nd; k++) {
            if (docs[k].kind == MESH_KIND_SERVICE) continue;
            r = mid_fail(MID_E_INVALID, __FILE__, __LINE__,
                         "%s: an AuthorizationPolicy is refused here: only ServiceEntry documents "
                         "are accepted (use 'meshid apply' for both kinds)",
                         docs[k].source ? docs[k].source : paths[i]);
            break;
        }
        mesh_doc_list_free(docs, nd);
        MID_TRY(r, r);
        MID_TRY(r, file_set_add_path(&fs, paths[i]));
    }
    MID_CHECK(r, fs.n > 0, MID_E_INVALID, "no *.yaml or *.yml files in %s", paths[0]);
    fs.ptrs = calloc(fs.n, sizeof *fs.ptrs);
    MID_CHECK_MEM(r, fs.ptrs);
    for (size_t i = 0; i < fs.n; i++) fs.ptrs[i] = &fs.files[i];
    Meshid__Admin__V1__ApplyResourcesRequest req = MESHID__ADMIN__V1__APPLY_RESOURCES_REQUEST__INIT;
    req.files = fs.ptrs;
    req.n_files = fs.n;
    req.dry_run = dry_run;
    req.only_kind = (char *)(only_kind ? only_kind : "");
    MID_TRY(r, call(ctx, "ApplyResources", &req.base,
                    &meshid__admin__v1__apply_resources_response__descriptor, &m));
    const Meshid__Admin__V1__ApplyResourcesResponse *resp =
        (const Meshid__Admin__V1__ApplyResourcesResponse *)m;
    for (size_t i = 0; i < resp->n_resources; i++) {
        const Meshid__Admin__V1__AppliedResource *it = resp->resources[i];
        printf("%s %s/%s %s%s\n", it->kind, it->namespace_, it->name, it->action,
               dry_run ? " (dry run)" : "");
    }
out:
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    file_set_free(&fs);
    return mid_is_ok(r) ? CLI_EXIT_OK : cli_fail(r);
}

int cmd_apply(cli_ctx *ctx, int argc, char **argv)
{
    return apply_files(ctx, argc, argv, NULL, APPLY_USAGE);
}

/* ---- resources: list, show, delete ------------------------------------------------------ */

static int show_resource(cli_ctx *ctx, const char *kind, const char *name)
{
    Meshid__Admin__V1__GetResourceRequest req = MESHID__ADMIN__V1__GET_RESOURCE_REQUEST__INIT;
    req.kind = (char *)kind;
    req.name = (char *)name;
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "GetResource", &req.base,
                        &meshid__admin__v1__get_resource_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    const Meshid__Admin__V1__Resource *res = ((Meshid__Admin__V1__GetResourceResponse *)m)->resource;
    json_t *j = res ? json_loads(res->spec_json, 0, NULL) : NULL;
    char *pretty = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    if (pretty) printf("%s\n", pretty);
    else if (res) printf("%s\n", res->spec_json);
    free(pretty);
    json_decref(j);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static int delete_resource(cli_ctx *ctx, const char *kind, const char *name)
{
    Meshid__Admin__V1__DeleteResourceRequest req =
        MESHID__ADMIN__V1__DELETE_RESOURCE_REQUEST__INIT;
    req.kind = (char *)kind;
    req.name = (char *)name;
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "DeleteResource", &req.base,
                        &meshid__admin__v1__delete_resource_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    const Meshid__Admin__V1__Resource *res =
        ((Meshid__Admin__V1__DeleteResourceResponse *)m)->resource;
    if (res) printf("%s %s/%s deleted\n", res->kind, res->namespace_, res->name);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static mid_result list_resources(cli_ctx *ctx, const char *kind,
                                 Meshid__Admin__V1__ListResourcesResponse **out)
{
    Meshid__Admin__V1__ListResourcesRequest req = MESHID__ADMIN__V1__LIST_RESOURCES_REQUEST__INIT;
    req.kind = (char *)kind;
    ProtobufCMessage *m = NULL;
    MID_GUARD(call(ctx, "ListResources", &req.base,
                   &meshid__admin__v1__list_resources_response__descriptor, &m));
    *out = (Meshid__Admin__V1__ListResourcesResponse *)m;
    return mid_ok();
}

/* Appends to a bounded line buffer (truncates with "..."). */
static void cat(char *buf, size_t cap, const char *sep, const char *s)
{
    size_t l = strlen(buf);
    if (l + 4 >= cap) return;
    int n = snprintf(buf + l, cap - l, "%s%s", l ? sep : "", s);
    if (n < 0 || (size_t)n >= cap - l) snprintf(buf + cap - 4, 4, "...");
}

static int service_list_cmd(cli_ctx *ctx, int argc, char **argv)
{
    if (argc != 1) return cli_usage(SERVICE_USAGE, "unexpected argument '%s'", argv[1]);
    Meshid__Admin__V1__ListResourcesResponse *resp = NULL;
    mid_result r = list_resources(ctx, STORE_MESH_KIND_SERVICE, &resp);
    if (!mid_is_ok(r)) return cli_fail(r);
    printf("%-20s  %-30s  %-40s  %-24s  %s\n", "NAMESPACE", "NAME", "HOSTS", "PORTS", "ENDPOINTS");
    for (size_t i = 0; i < resp->n_resources; i++) {
        const Meshid__Admin__V1__Resource *res = resp->resources[i];
        mesh_service *s = NULL;
        char hosts[512] = "", ports[512] = "";
        if (!mid_is_ok(mesh_service_from_json(res->spec_json, &s))) {
            printf("%-20s  %-30s  (cannot decode: %s)\n", res->namespace_, res->name, mid_errmsg());
            continue;
        }
        for (size_t h = 0; h < s->n_hosts; h++) cat(hosts, sizeof hosts, ",", s->hosts[h]);
        for (size_t p = 0; p < s->n_ports; p++) {
            char one[64];
            snprintf(one, sizeof one, "%u/%s", s->ports[p].number,
                     mesh_protocol_name(s->ports[p].protocol));
            cat(ports, sizeof ports, ",", one);
        }
        printf("%-20s  %-30s  %-40s  %-24s  %zu\n", s->namespace_, s->name, hosts, ports,
               s->n_endpoints);
        mesh_service_free(s);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_EXIT_OK;
}

int cmd_service(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "apply") == 0)
        return apply_files(ctx, argc, argv, STORE_MESH_KIND_SERVICE,
                           "meshid service apply -f FILE.yaml [--dry-run]");
    if (strcmp(argv[0], "list") == 0) return service_list_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "show") == 0 || strcmp(argv[0], "delete") == 0) {
        if (argc != 2)
            return cli_usage(SERVICE_USAGE, "'service %s' takes one NAME (ns/name, name or host)",
                             argv[0]);
        return argv[0][0] == 's' ? show_resource(ctx, STORE_MESH_KIND_SERVICE, argv[1])
                                 : delete_resource(ctx, STORE_MESH_KIND_SERVICE, argv[1]);
    }
    return cli_usage(SERVICE_USAGE, "unknown verb 'service %s' (apply, list, show, delete)",
                     argv[0]);
}

/* ---- endpoints ------------------------------------------------------------------------- */

/* "K=V" into its parts (k points into a copy in buf). */
static bool split_kv(const char *in, char *buf, size_t cap, char **k, char **v)
{
    if (strlen(in) >= cap) return false;
    snprintf(buf, cap, "%s", in);
    char *eq = strchr(buf, '=');
    if (!eq || eq == buf) return false;
    *eq = '\0';
    *k = buf;
    *v = eq + 1;
    return true;
}

static bool parse_u16(const char *s, uint32_t *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < 1 || v > 65535) return false;
    *out = (uint32_t)v;
    return true;
}

#define KV_MAX 512

static int endpoint_add_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'},   {"address", required_argument, NULL, 'a'},
        {"port", required_argument, NULL, 'p'},      {"label", required_argument, NULL, 'l'},
        {"spiffe-id", required_argument, NULL, 'i'}, {"service-account", required_argument, NULL, 'A'},
        {"health", required_argument, NULL, 'h'},    {NULL, 0, NULL, 0}};
    static char port_buf[MESH_PORTS_MAX][KV_MAX], label_buf[MESH_LABELS_MAX][KV_MAX];
    Meshid__Admin__V1__AddEndpointRequest__PortsEntry pe[MESH_PORTS_MAX], *pp[MESH_PORTS_MAX];
    Meshid__Admin__V1__AddEndpointRequest__LabelsEntry le[MESH_LABELS_MAX], *lp[MESH_LABELS_MAX];
    Meshid__Admin__V1__AddEndpointRequest req = MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__INIT;
    req.ports = pp;
    req.labels = lp;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *k, *v;
        switch (c) {
        case 's': req.service = optarg; break;
        case 'a': req.address = optarg; break;
        case 'p': {
            if (req.n_ports >= MESH_PORTS_MAX)
                return cli_usage(ENDPOINT_ADD_USAGE, "at most %d --port", MESH_PORTS_MAX);
            uint32_t num;
            if (!split_kv(optarg, port_buf[req.n_ports], KV_MAX, &k, &v) || !parse_u16(v, &num))
                return cli_usage(ENDPOINT_ADD_USAGE, "--port wants NAME=N (N in 1..65535), not '%s'",
                                 optarg);
            meshid__admin__v1__add_endpoint_request__ports_entry__init(&pe[req.n_ports]);
            pe[req.n_ports].key = k;
            pe[req.n_ports].value = num;
            pp[req.n_ports] = &pe[req.n_ports];
            req.n_ports++;
            break;
        }
        case 'l':
            if (req.n_labels >= MESH_LABELS_MAX)
                return cli_usage(ENDPOINT_ADD_USAGE, "at most %d --label", MESH_LABELS_MAX);
            if (!split_kv(optarg, label_buf[req.n_labels], KV_MAX, &k, &v))
                return cli_usage(ENDPOINT_ADD_USAGE, "--label wants KEY=VALUE, not '%s'", optarg);
            meshid__admin__v1__add_endpoint_request__labels_entry__init(&le[req.n_labels]);
            le[req.n_labels].key = k;
            le[req.n_labels].value = v;
            lp[req.n_labels] = &le[req.n_labels];
            req.n_labels++;
            break;
        case 'i': req.spiffe_id = optarg; break;
        case 'A': req.service_account = optarg; break;
        case 'h': req.health = optarg; break;
        default: return cli_usage(ENDPOINT_ADD_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(ENDPOINT_ADD_USAGE, "unexpected argument '%s'", argv[optind]);
    if (req.service[0] == '\0' || req.address[0] == '\0')
        return cli_usage(ENDPOINT_ADD_USAGE, "--service and --address are required");
    if (req.spiffe_id[0] && req.service_account[0])
        return cli_usage(ENDPOINT_ADD_USAGE, "give --spiffe-id or --service-account, not both");
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "AddEndpoint", &req.base,
                        &meshid__admin__v1__add_endpoint_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    const Meshid__Admin__V1__AddEndpointResponse *resp =
        (const Meshid__Admin__V1__AddEndpointResponse *)m;
    printf("endpoint %s %s service %s\n", req.address, resp->replaced ? "replaced in" : "added to",
           resp->service);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static int endpoint_remove_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"service", required_argument, NULL, 's'},
                                         {"address", required_argument, NULL, 'a'},
                                         {NULL, 0, NULL, 0}};
    Meshid__Admin__V1__RemoveEndpointRequest req = MESHID__ADMIN__V1__REMOVE_ENDPOINT_REQUEST__INIT;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 's') req.service = optarg;
        else if (c == 'a') req.address = optarg;
        else return cli_usage(ENDPOINT_USAGE, "bad option '%s'", argv[optind - 1]);
    }
    if (optind != argc) return cli_usage(ENDPOINT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (req.service[0] == '\0' || req.address[0] == '\0')
        return cli_usage(ENDPOINT_USAGE, "--service and --address are required");
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "RemoveEndpoint", &req.base,
                        &meshid__admin__v1__remove_endpoint_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    printf("endpoint %s removed from service %s\n", req.address,
           ((Meshid__Admin__V1__RemoveEndpointResponse *)m)->service);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

static int endpoint_list_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"service", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    Meshid__Admin__V1__ListEndpointsRequest req = MESHID__ADMIN__V1__LIST_ENDPOINTS_REQUEST__INIT;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 's') req.service = optarg;
        else return cli_usage(ENDPOINT_USAGE, "bad option '%s'", argv[optind - 1]);
    }
    if (optind != argc) return cli_usage(ENDPOINT_USAGE, "unexpected argument '%s'", argv[optind]);
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "ListEndpoints", &req.base,
                        &meshid__admin__v1__list_endpoints_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    const Meshid__Admin__V1__ListEndpointsResponse *resp =
        (const Meshid__Admin__V1__ListEndpointsResponse *)m;
    printf("%-30s  %-39s  %-20s  %-30s  %-9s  %s\n", "SERVICE", "ADDRESS", "PORTS", "LABELS",
           "HEALTH", "SPIFFE ID");
    for (size_t i = 0; i < resp->n_endpoints; i++) {
        const Meshid__Admin__V1__Endpoint *e = resp->endpoints[i];
        char ports[256] = "", labels[512] = "";
        for (size_t k = 0; k < e->n_ports; k++) {
            char one[96];
            snprintf(one, sizeof one, "%s=%u", e->ports[k]->key, e->ports[k]->value);
            cat(ports, sizeof ports, ",", one);
        }
        for (size_t k = 0; k < e->n_labels; k++) {
            char one[384];
            snprintf(one, sizeof one, "%s=%s", e->labels[k]->key, e->labels[k]->value);
            cat(labels, sizeof labels, ",", one);
        }
        printf("%-30s  %-39s  %-20s  %-30s  %-9s  %s\n", e->service, e->address,
               ports[0] ? ports : "-", labels[0] ? labels : "-", e->health,
               e->spiffe_id[0] ? e->spiffe_id : "-");
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int cmd_endpoint(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "add") == 0) return endpoint_add_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "remove") == 0) return endpoint_remove_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "list") == 0) return endpoint_list_cmd(ctx, argc, argv);
    return cli_usage(ENDPOINT_USAGE, "unknown verb 'endpoint %s' (add, remove, list)", argv[0]);
}

/* ---- policies -------------------------------------------------------------------------- */

static int policy_list_cmd(cli_ctx *ctx, int argc, char **argv)
{
    if (argc != 1) return cli_usage(POLICY_USAGE, "unexpected argument '%s'", argv[1]);
    Meshid__Admin__V1__ListResourcesResponse *resp = NULL;
    mid_result r = list_resources(ctx, STORE_MESH_KIND_POLICY, &resp);
    if (!mid_is_ok(r)) return cli_fail(r);
    printf("%-20s  %-30s  %-6s  %-30s  %s\n", "NAMESPACE", "NAME", "ACTION", "SELECTOR", "RULES");
    for (size_t i = 0; i < resp->n_resources; i++) {
        const Meshid__Admin__V1__Resource *res = resp->resources[i];
        mesh_policy *p = NULL;
        if (!mid_is_ok(mesh_policy_from_json(res->spec_json, &p))) {
            printf("%-20s  %-30s  (cannot decode: %s)\n", res->namespace_, res->name, mid_errmsg());
            continue;
        }
        char sel[512] = "";
        for (size_t k = 0; k < p->n_selector; k++) {
            char one[384];
            snprintf(one, sizeof one, "%s=%s", p->selector[k].key, p->selector[k].value);
            cat(sel, sizeof sel, ",", one);
        }
        printf("%-20s  %-30s  %-6s  %-30s  %zu\n", p->namespace_, p->name,
               p->action == MESH_ACTION_DENY ? "DENY" : "ALLOW", sel[0] ? sel : "(all)",
               p->n_rules);
        mesh_policy_free(p);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_EXIT_OK;
}

static bool same_decision(const Meshid__Admin__V1__PolicyDecision *a,
                          const Meshid__Admin__V1__PolicyDecision *b)
{
    return a->allowed == b->allowed && a->rule == b->rule &&
           strcmp(a->policy_namespace, b->policy_namespace) == 0 &&
           strcmp(a->policy_name, b->policy_name) == 0 && strcmp(a->text, b->text) == 0;
}

static int policy_check_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'}, {"to", required_argument, NULL, 't'},
        {"method", required_argument, NULL, 'm'}, {"path", required_argument, NULL, 'p'},
        {"port", required_argument, NULL, 'P'}, {"host", required_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    Meshid__Admin__V1__CheckPolicyRequest req = MESHID__ADMIN__V1__CHECK_POLICY_REQUEST__INIT;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'f': req.from = optarg; break;
        case 't': req.to = optarg; break;
        case 'm': req.method = optarg; break;
        case 'p': req.path = optarg; break;
        case 'P':
            if (!parse_u16(optarg, &req.port))
                return cli_usage(CHECK_USAGE, "--port wants a number in 1..65535, not '%s'", optarg);
            break;
        case 'h': req.host = optarg; break;
        default: return cli_usage(CHECK_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(CHECK_USAGE, "unexpected argument '%s'", argv[optind]);
    if (req.to[0] == '\0') return cli_usage(CHECK_USAGE, "--to SERVICE is required");
    ProtobufCMessage *m = NULL;
    mid_result r = call(ctx, "CheckPolicy", &req.base,
                        &meshid__admin__v1__check_policy_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    const Meshid__Admin__V1__CheckPolicyResponse *resp =
        (const Meshid__Admin__V1__CheckPolicyResponse *)m;
    bool agree = true;
    for (size_t i = 1; i < resp->n_decisions; i++)
        agree = agree && same_decision(resp->decisions[0], resp->decisions[i]);
    const char *what = resp->http ? "HTTP" : "TCP";
    if (agree && resp->n_decisions > 0) {
        printf("%s: %s (%s)\n", resp->service, resp->decisions[0]->text, what);
    } else {
        for (size_t i = 0; i < resp->n_decisions; i++) {
            const Meshid__Admin__V1__PolicyDecision *d = resp->decisions[i];
            char labels[512] = "", addrs[512] = "";
            for (size_t k = 0; k < d->n_workload_labels; k++) {
                char one[384];
                snprintf(one, sizeof one, "%s=%s", d->workload_labels[k]->key,
                         d->workload_labels[k]->value);
                cat(labels, sizeof labels, ",", one);
            }
            for (size_t k = 0; k < d->n_addresses; k++) cat(addrs, sizeof addrs, " ", d->addresses[k]);
            printf("%s {%s} [%s]: %s (%s)\n", resp->service, labels, addrs, d->text, what);
        }
    }
    int rc = resp->allowed ? CLI_EXIT_OK : CLI_EXIT_DENIED;
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int cmd_policy(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "list") == 0) return policy_list_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "check") == 0) return policy_check_cmd(ctx, argc, argv);
    if (strcmp(argv[0], "show") == 0 || strcmp(argv[0], "delete") == 0) {
        if (argc != 2) return cli_usage(POLICY_USAGE, "'policy %s' takes one NAME (ns/name or name)", argv[0]);
        return argv[0][0] == 's' ? show_resource(ctx, STORE_MESH_KIND_POLICY, argv[1])
                                 : delete_resource(ctx, STORE_MESH_KIND_POLICY, argv[1]);
    }
    return cli_usage(POLICY_USAGE, "unknown verb 'policy %s' (list, show, delete, check)", argv[0]);
}
