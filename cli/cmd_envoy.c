/* meshid envoy bootstrap --node ID [--service NAME] [--spiffe-id ID] [--out FILE] ...
 * Writes an Envoy bootstrap (meshcore/bootstrap.h) whose SDS cluster is the
 * local agent's socket and whose ADS cluster is the server's TLS port. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "identity/spiffe_id.h"
#include "lib/fsutil.h"
#include "meshcore/bootstrap.h"
#include "meshcore/model.h"
#include "meshcore/registry_store.h"
#include "sds/server.h"

#define BOOTSTRAP_USAGE                                                                        \
    "meshid envoy bootstrap --node ID [--service NAME] [--spiffe-id ID] [--out FILE]\n"        \
    "                       [--xds-address HOST:PORT] [--agent-socket PATH] [--delta]\n"       \
    "                       [--trust-domain TD] [--cluster NAME] [--admin-port N]"

#define PATH_CAP 4096

/* "host:port" or "[v6]:port" into host (cap bytes) and port. */
static int split_host_port(const char *s, char *host, size_t cap, uint32_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':') return -1;
        h = s + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) return -1;
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl) != NULL) return -1; /* a bare IPv6 literal needs brackets */
    }
    if (hl == 0 || hl >= cap) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535) return -1;
    *port = (uint32_t)p;
    return 0;
}

static int parse_port(const char *s, uint32_t *out)
{
    char *end = NULL;
    long p = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || p < 1 || p > 65535) return -1;
    *out = (uint32_t)p;
    return 0;
}

/* `p` made absolute against the working directory (Envoy runs elsewhere). */
static mid_result absolute(const char *p, char *out, size_t cap)
{
    if (p[0] == '/') {
        MID_ENSURE(strlen(p) < cap, MID_E_TOO_LARGE, "path '%s' is too long", p);
        snprintf(out, cap, "%s", p);
        return mid_ok();
    }
    char cwd[PATH_CAP];
    MID_ENSURE(getcwd(cwd, sizeof cwd) != NULL, MID_E_IO, "cannot read the working directory");
    const char *rel = p;
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    return fs_join(out, cap, cwd, rel);
}

/* The trust domain from the data directory's CA; never creates a store.
 * On success *st is the open store (caller closes). */
static mid_result trust_domain_from_store(cli_ctx *ctx, store **st, char td[SPIFFE_TD_MAX + 1])
{
    MID_ENSURE(fs_exists(ctx->db_path), MID_E_NOT_FOUND,
               "no meshid database at %s: pass --trust-domain, or --data-dir of a server "
               "(after 'meshid ca init')",
               ctx->db_path);
    ca *c = NULL;
    mid_result r = cli_open_store(ctx, st);
    if (mid_is_ok(r)) r = ca_open(*st, ctx->data_dir, &c);
    if (mid_is_ok(r)) snprintf(td, SPIFFE_TD_MAX + 1, "%s", ca_trust_domain(c));
    ca_close(c);
    if (!mid_is_ok(r)) {
        store_close(*st);
        *st = NULL;
    }
    return r;
}

/* The identity the endpoints of registered service `name` run as, into `out`
 * (when `given` is NULL), or a check that `given` is one of them. Refused
 * when the service is unknown, or has no identity or several and none was
 * given. */
static mid_result service_identity(store *st, const char *td, const char *name, const char *given,
                                   char *out, size_t cap)
{
    mesh_registry *reg = NULL;
    MID_GUARD(mesh_registry_load(st, td, &reg));
    mid_result r = MID_OK_RESULT;
    const mesh_service *svc = mesh_registry_find_service(reg, name);
    MID_CHECK(r, svc != NULL, MID_E_NOT_FOUND,
              "no service '%s' in the registry (see 'meshid service list')", name);
    const char *first = NULL;
    int several = 0, found_given = 0;
    for (size_t i = 0; i < svc->n_endpoints; i++) {
        const char *id = svc->endpoints[i].spiffe_id;
        if (id == NULL) continue;
        if (first == NULL) first = id;
        else if (strcmp(first, id) != 0) several = 1;
        if (given != NULL && strcmp(given, id) == 0) found_given = 1;
    }
    if (given != NULL) {
        if (!found_given)
            fprintf(stderr, "meshid: warning: no endpoint of service %s/%s runs as %s\n",
                    svc->namespace_, svc->name, given);
        goto out;
    }
    MID_CHECK(r, first != NULL, MID_E_INVALID,
              "service %s/%s has no endpoint with an identity: pass --spiffe-id", svc->namespace_,
              svc->name);
    MID_CHECK(r, !several, MID_E_INVALID,
              "the endpoints of service %s/%s run as several identities (e.g. %s): pass --spiffe-id",
              svc->namespace_, svc->name, first);
    MID_CHECK(r, strlen(first) < cap, MID_E_TOO_LARGE, "SPIFFE ID too long");
    snprintf(out, cap, "%s", first);
out:
    mesh_registry_unref(reg);
    return r;
}

static int bootstrap_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"node", required_argument, NULL, 'n'},
                                         {"service", required_argument, NULL, 's'},
                                         {"spiffe-id", required_argument, NULL, 'i'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"xds-address", required_argument, NULL, 'x'},
                                         {"agent-socket", required_argument, NULL, 'a'},
                                         {"delta", no_argument, NULL, 'd'},
                                         {"trust-domain", required_argument, NULL, 't'},
                                         {"cluster", required_argument, NULL, 'c'},
                                         {"admin-port", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    mesh_bootstrap_opts bo = {0};
    const char *out_path = NULL;
    const char *xds_addr = NULL;
    const char *sock_arg = NULL;
    const char *td_arg = NULL;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'n': bo.node_id = optarg; break;
        case 's': bo.service = optarg; break;
        case 'i': bo.spiffe_id = optarg; break;
        case 'o': out_path = optarg; break;
        case 'x': xds_addr = optarg; break;
        case 'a': sock_arg = optarg; break;
        case 'd': bo.delta = 1; break;
        case 't': td_arg = optarg; break;
        case 'c': bo.node_cluster = optarg; break;
        case 'p':
            if (parse_port(optarg, &bo.admin_port) != 0)
                return cli_usage(BOOTSTRAP_USAGE, "bad --admin-port '%s' (1..65535)", optarg);
            break;
        default: return cli_usage(BOOTSTRAP_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(BOOTSTRAP_USAGE, "unexpected argument '%s'", argv[optind]);
    if (bo.node_id == NULL) return cli_usage(BOOTSTRAP_USAGE, "--node ID is required");

    char host[MESH_BOOTSTRAP_HOST_MAX + 1];
    if (xds_addr == NULL) xds_addr = SERVER_LISTEN_DEFAULT;
    if (split_host_port(xds_addr, host, sizeof host, &bo.xds_port) != 0)
        return cli_usage(BOOTSTRAP_USAGE, "bad --xds-address '%s' (HOST:PORT or [IPv6]:PORT)",
                         xds_addr);
    bo.xds_host = host;

    char sock[PATH_CAP];
    mid_result r;
    if (sock_arg == NULL) sock_arg = getenv("MESHID_AGENT_SOCKET");
    if (sock_arg != NULL && *sock_arg != '\0') {
        r = absolute(sock_arg, sock, sizeof sock);
    } else {
        char dir[PATH_CAP], run[PATH_CAP];
        r = absolute(ctx->data_dir, dir, sizeof dir);
        if (mid_is_ok(r)) r = fs_join(run, sizeof run, dir, "run");
        if (mid_is_ok(r)) r = fs_join(sock, sizeof sock, run, "agent.sock");
    }
    if (!mid_is_ok(r)) return cli_fail(r);
    bo.agent_socket = sock;

    char td[SPIFFE_TD_MAX + 1];
    store *st = NULL;
    if (td_arg != NULL) {
        r = spiffe_trust_domain_parse(td_arg, td);
        /* the registry, for --service, when this is a server's data dir */
        if (mid_is_ok(r) && bo.service != NULL && fs_exists(ctx->db_path))
            r = cli_open_store(ctx, &st);
    } else {
        r = trust_domain_from_store(ctx, &st, td);
    }
    char derived[SPIFFE_ID_MAX + 1];
    if (mid_is_ok(r) && bo.service != NULL && st != NULL) {
        r = service_identity(st, td, bo.service, bo.spiffe_id, derived, sizeof derived);
        if (mid_is_ok(r) && bo.spiffe_id == NULL) bo.spiffe_id = derived;
    }
    store_close(st);
    if (!mid_is_ok(r)) return cli_fail(r);
    char server_id[SPIFFE_TD_MAX + sizeof "spiffe://" + sizeof SERVER_SPIFFE_PATH];
    snprintf(server_id, sizeof server_id, "spiffe://%s%s", td, SERVER_SPIFFE_PATH);
    bo.server_spiffe_id = server_id;
    if (bo.spiffe_id != NULL) {
        spiffe_id *id = NULL;
        r = spiffe_id_parse(bo.spiffe_id, strlen(bo.spiffe_id), &id);
        int same_td = mid_is_ok(r) && spiffe_id_member_of(id, td);
        spiffe_id_free(id);
        if (!mid_is_ok(r)) return cli_fail(r);
        if (!same_td)
            fprintf(stderr, "meshid: warning: %s is not in trust domain %s\n", bo.spiffe_id, td);
    }

    char *json = NULL;
    r = mesh_bootstrap_json(&bo, &json);
    if (!mid_is_ok(r)) return cli_fail(r);
    int rc = CLI_EXIT_OK;
    if (out_path == NULL || strcmp(out_path, "-") == 0) {
        if (fputs(json, stdout) == EOF || fflush(stdout) != 0) {
            fprintf(stderr, "meshid: error: cannot write the bootstrap to stdout\n");
            rc = CLI_EXIT_ERROR;
        }
    } else {
        r = fs_write_file(out_path, json, strlen(json), 0644);
        if (!mid_is_ok(r)) rc = cli_fail(r);
        else fprintf(stderr, "meshid: wrote the Envoy bootstrap for node %s to %s\n", bo.node_id,
                     out_path);
    }
    free(json);
    return rc;
}

int cmd_envoy(cli_ctx *ctx, int argc, char **argv)
{
    if (strcmp(argv[0], "bootstrap") == 0) return bootstrap_cmd(ctx, argc, argv);
    return cli_usage(NULL, "unknown verb 'envoy %s' (bootstrap)", argv[0]);
}
