/* xDS push latency: how long a registry change takes to reach every
 * connected sidecar, with 1,000 services x 10 endpoints and 1,000 ADS
 * clients (issue 5: "time from a registry change until every client has
 * received and ACKed it (p50, p99), server CPU time and peak memory";
 * targets < 1 s at p99 and < 150 MB).
 *
 * Two processes:
 *
 *   server  this process: a temporary data directory whose store holds the
 *           registry (written once, by a short-lived child, in one
 *           mesh_plan commit), then the mesh plane exactly as `meshid server`
 *           runs it (meshcore/mesh_plane.h: registry loads on the worker
 *           pool, the mesh admin API on an admin Unix socket, ADS on a
 *           plaintext TCP port) on one rpc loop driven by the main thread.
 *           An ACK hook on the ADS server records, per stream and type, the
 *           version each client ACKed and when.
 *   clients a child forked before anything else exists (no gRPC, no SQLite
 *           in it), on its own rpc loop: BENCH_CLIENTS SotW (or delta) ADS
 *           streams behaving like Envoy sidecars. Client i is the node
 *           spiffe://bench.local/ns/bench/sa/sa-(i mod services), so its
 *           identity runs registered endpoints. It asks for CDS (wildcard),
 *           then EDS for every EDS cluster it received, LDS (wildcard), then
 *           RDS for the route names of its listeners' HTTP connection
 *           managers, and ACKs every response with its version and nonce.
 *
 * The driver thread of the server process waits until every stream has
 * ACKed its initial state, then makes BENCH_CHANGES registry changes, one
 * at a time: an AddEndpoint through the admin API (admin_call on the admin
 * socket, as `meshid endpoint add` does) adding one endpoint to one service
 * (a different service each time). Per change and per stream: the time from
 * just before the admin call until the stream ACKed an EDS version other
 * than the one it held. p50/p99/max over all (stream, change) samples, the
 * stages of a change (admin call, registry reload installed, pushes queued),
 * server CPU time (process and loop thread), peak RSS (VmHWM) and malloc's
 * view (in use / held) before the clients, after the initial sync and at
 * the end.
 *
 * Environment:
 *   BENCH_SERVICES            services (default 1000)
 *   BENCH_ENDPOINTS           endpoints per service (default 10)
 *   BENCH_CLIENTS             ADS streams (default 1000)
 *   BENCH_CHANGES             registry changes measured (default 20)
 *   BENCH_STREAMS_PER_CHANNEL streams sharing one client connection
 *                             (default 1: one connection per sidecar)
 *   BENCH_SERVICE_PORT        the services' port (default 80; the endpoints
 *                             listen on 9080, see docs/bench.md for why)
 *   BENCH_DEBOUNCE_MS         the ADS push debounce (default: the server's, 100)
 *   BENCH_SYNC_TIMEOUT_S      limit for the initial sync (default 600)
 *   BENCH_DELTA               1: the clients use DeltaAggregatedResources
 *                             (incremental xDS) instead of SotW (default 0)
 *   BENCH_VERBOSE             1: one line per change (stages, CPU, RSS)
 *
 * Exit status: 0 whatever the figures (timing is never asserted); 1 on a
 * functional failure: set-up failed, a client stream ended, was refused or
 * received something it could not decode, the server counted a NACK or
 * ended a stream, the client process died, the initial sync did not
 * complete within BENCH_SYNC_TIMEOUT_S or a change did not reach every
 * stream within 120 s. See docs/bench.md, "xDS push latency".
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "lib/log.h"
#include "lib/result.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "meshcore/ads.h"
#include "meshcore/mesh_plane.h"
#include "meshcore/model.h"
#include "meshcore/registry_store.h"
#include "meshcore/xds_snapshot.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/admin_client.h"
#include "storage/store.h"

#define BENCH_TD "bench.local"
#define BENCH_NS "bench"
#define ENDPOINT_PORT 9080
#define MAX_SERVICES 32768 /* addresses 10.A.B.C with A < 128: 128 x 256 services */
#define MAX_ENDPOINTS 250
#define MAX_CLIENTS 20000
#define MAX_CHANGES 250
#define MAX_CHANNELS 20000
#define CHANGE_TIMEOUT_S 120 /* a change not everywhere after this: functional failure */
#define SETTLE_MS 250        /* after a change reached every stream (> the debounce) */
#define SAMPLE_FAST_MS 1     /* loop sampler while a change is in flight */
#define SAMPLE_SLOW_MS 50
#define NONCE_MAX 64
#define VER_MAX 64
#define LINE_MAX_B 1024        /* one status line child -> parent (< PIPE_BUF) */
#define NAMESETS_MAX 1000000   /* distinct decoded name sets in the client process */
#define CLIENT_MSG_MAX (64u << 20) /* client channel message cap */

#define HCM_TYPE_URL                                                                      \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
    "HttpConnectionManager"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest disc_req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse disc_resp;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_resp;
typedef Envoy__Config__Cluster__V3__Cluster cluster_msg;
typedef Envoy__Config__Listener__V3__Listener listener_msg;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_msg;
#define hcm_unpack \
    envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack
#define hcm_free_unpacked                                                                       \
    envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__free_unpacked
#define HCM_RDS \
    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS
#define CLUSTER_HAS_TYPE ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE
#define CLUSTER_EDS ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS
#define FILTER_TYPED ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG

typedef struct {
    long services, endpoints, clients, changes, per_channel, service_port, debounce_ms, sync_s;
    long nch;
    bool delta;   /* DeltaAggregatedResources instead of SotW */
    bool verbose; /* one line per change */
} cfg;

/* ---- small helpers ------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double ms(int64_t ns) { return (double)ns / 1e6; }

static void sleep_ms(long n)
{
    struct timespec d = {n / 1000, (n % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0 && errno == EINTR) {
    }
}

/* A positive integer from the environment (def when unset); -1 when
 * malformed or outside 1..max. */
static long env_long(const char *name, long def, long max)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0') return def;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0 || v > max) return -1;
    return v;
}

static void report_err(const char *what, mid_result r)
{
    fprintf(stderr, "bench_xds: %s: %s: %s (%s:%d)\n", what, mid_errname(r.err), mid_errmsg(),
            mid_errfile(), mid_errline());
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "bench_xds: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *dir)
{
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "bench_xds: cannot walk %s: %s\n", dir, strerror(errno));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Nearest-rank percentile of a sorted array. */
static int64_t pct(const int64_t *v, size_t n, double p)
{
    size_t k = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

/* Raises the soft RLIMIT_NOFILE to `need` (up to the hard limit); returns
 * the resulting soft limit (-1 when unknown). */
static long raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need) {
        rlim_t want = (rlim_t)need;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "bench_xds: setrlimit(NOFILE): %s\n", strerror(errno));
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}

/* A "Vm...:  N kB" line of /proc/self/status in KiB; -1 when unreadable. */
static long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, kl) != 0 || line[kl] != ':') continue;
        char *end = NULL;
        errno = 0;
        long x = strtol(line + kl + 1, &end, 10);
        if (errno == 0 && end != line + kl + 1) v = x;
        break;
    }
    fclose(f);
    return v;
}

/* Bytes malloc has handed out and not got back (every arena), and bytes it
 * holds from the system: a leak grows the first, fragmentation the second. */
static void heap_use(double *in_use_mib, double *held_mib)
{
    struct mallinfo2 mi = mallinfo2();
    *in_use_mib = (double)(mi.uordblks + mi.hblkhd) / 1048576.0;
    *held_mib = (double)(mi.arena + mi.hblkhd) / 1048576.0;
}

/* How long thread `tid` of this process has waited on a run queue for a
 * CPU (ns; the second field of its schedstat), -1 when unknown: a change
 * whose loop thread waited long was slowed by other load on the machine. */
static int64_t runq_wait_ns(long tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", tid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    long long run = 0, wait = -1;
    if (fscanf(f, "%lld %lld", &run, &wait) != 2) wait = -1;
    fclose(f);
    return (int64_t)wait;
}

/* The first field of /proc/loadavg (the 1-minute load); -1 when unreadable. */
static double loadavg1(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double v = -1;
    if (f != NULL) {
        if (fscanf(f, "%lf", &v) != 1) v = -1;
        fclose(f);
    }
    return v;
}

static double tv_s(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

static double ru_cpu_s(const struct rusage *r) { return tv_s(r->ru_utime) + tv_s(r->ru_stime); }

static int64_t thread_cpu_ns(clockid_t cid)
{
    struct timespec ts;
    if (clock_gettime(cid, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Writes a whole line (one write: < PIPE_BUF bytes are atomic on a pipe). */
static void write_line(int fd, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t w = write(fd, s + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += (size_t)w;
    }
}

/* Exactly 16 hex digits -> number; false otherwise. */
static bool ver_parse(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < XDS_VERSION_LEN; i++) {
        char c = s[i];
        int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                               : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (h < 0) return false;
        v = (v << 4) | (uint64_t)h;
    }
    if (s[XDS_VERSION_LEN] != '\0') return false;
    *out = v;
    return true;
}

/* =========================================================================================
 * The registry (written by a short-lived child so that the server's peak RSS is that of a
 * server starting on an existing registry)
 * ========================================================================================= */

static char *xstrdup(const char *s, bool *ok)
{
    char *d = strdup(s);
    if (d == NULL) *ok = false;
    return d;
}

/* Service n: svc-n.bench.svc, port `service_port` (HTTP, name "http"),
 * endpoints 10.A.B.(e+1) with A.B = n listening on 9080 (a port override
 * when the service port differs), label app=svc-n, service account sa-n.
 * Owned by the caller (mesh_service_free). */
static mid_result build_service(const cfg *c, long n, mesh_service **out)
{
    char buf[128];
    bool ok = true;
    mesh_service *s = calloc(1, sizeof *s);
    MID_ENSURE_MEM(s);
    s->namespace_ = xstrdup(BENCH_NS, &ok);
    snprintf(buf, sizeof buf, "svc-%ld", n);
    s->name = xstrdup(buf, &ok);
    s->hosts = calloc(1, sizeof *s->hosts);
    s->ports = calloc(1, sizeof *s->ports);
    s->endpoints = calloc((size_t)c->endpoints, sizeof *s->endpoints);
    if (s->hosts == NULL || s->ports == NULL || s->endpoints == NULL) ok = false;
    if (ok) {
        snprintf(buf, sizeof buf, "svc-%ld." BENCH_NS ".svc", n);
        s->hosts[0] = xstrdup(buf, &ok);
        s->n_hosts = 1;
        s->ports[0].name = xstrdup("http", &ok);
        s->ports[0].number = (uint32_t)c->service_port;
        s->ports[0].protocol = MESH_PROTO_HTTP;
        s->n_ports = 1;
        s->mesh_internal = 1;
    }
    for (long e = 0; ok && e < c->endpoints; e++) {
        mesh_endpoint *ep = &s->endpoints[e];
        s->n_endpoints = (size_t)e + 1;
        snprintf(buf, sizeof buf, "10.%ld.%ld.%ld", n >> 8, n & 255, e + 1);
        ep->address = xstrdup(buf, &ok);
        ep->labels = calloc(1, sizeof *ep->labels);
        if (ep->labels == NULL) {
            ok = false;
            break;
        }
        if (c->service_port != ENDPOINT_PORT) { /* the workload listens on 9080 */
            ep->ports = calloc(1, sizeof *ep->ports);
            if (ep->ports == NULL) {
                ok = false;
                break;
            }
            ep->ports[0].name = xstrdup("http", &ok);
            ep->ports[0].number = ENDPOINT_PORT;
            ep->n_ports = 1;
        }
        ep->labels[0].key = xstrdup("app", &ok);
        snprintf(buf, sizeof buf, "svc-%ld", n);
        ep->labels[0].value = xstrdup(buf, &ok);
        ep->n_labels = 1;
        snprintf(buf, sizeof buf, "sa-%ld", n);
        ep->service_account = xstrdup(buf, &ok);
        ep->health = MESH_HEALTH_HEALTHY;
    }
    if (!ok) {
        mesh_service_free(s);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    *out = s;
    return mid_ok();
}

/* Every service in one plan, checked and committed at once. */
static mid_result seed_registry(const char *db, const cfg *c, int64_t *rev)
{
    store *st = NULL;
    mesh_plan *p = NULL;
    mesh_service *svc = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, store_open(db, NULL, &st));
    MID_TRY(r, mesh_plan_new(st, BENCH_TD, &p));
    for (long n = 0; n < c->services; n++) {
        MID_TRY(r, build_service(c, n, &svc));
        MID_TRY(r, mesh_plan_put_service(p, svc, NULL));
        mesh_service_free(svc);
        svc = NULL;
    }
    MID_TRY(r, mesh_plan_check(p, NULL));
    mesh_commit_opts co = {.actor = "bench", .reason = "bench_xds registry"};
    MID_TRY(r, mesh_plan_commit(st, p, &co, rev));
out:
    mesh_service_free(svc);
    mesh_plan_free(p);
    store_close(st);
    return r;
}

/* Runs seed_registry in a child process; true on success. */
static bool seed_in_child(const char *db, const cfg *c, double *secs)
{
    int64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "bench_xds: fork: %s\n", strerror(errno));
        return false;
    }
    if (pid == 0) {
        int64_t rev = 0;
        mid_result r = seed_registry(db, c, &rev);
        if (!mid_is_ok(r)) report_err("writing the registry", r);
        exit(mid_is_ok(r) ? 0 : 1); /* nothing but this ran in the child: exit() is safe */
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    *secs = (double)(now_ns() - t0) / 1e9;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* =========================================================================================
 * The client process
 * ========================================================================================= */

/* A sorted, distinct set of resource names decoded from one response
 * (cluster names for EDS, route names for RDS); shared by every client that
 * received the same type version (a type version is derived from the names
 * and versions of all its resources: xds_snapshot.h), so each distinct
 * response is decoded once in the client process. */
typedef struct nameset {
    struct nameset *next;
    xds_type t;
    char ver[VER_MAX];
    size_t n_res;
    size_t n;
    char **names;
} nameset;

typedef struct cproc cproc;

typedef struct {
    cproc *cp;
    int idx;
    rpc_stream *s;
    char node_id[128];
    const nameset *eds; /* current EDS subscription (NULL: none yet) */
    const nameset *rds; /* current RDS subscription */
    bool lds_requested, complete;
    unsigned acked; /* bit per type: an ACK was sent */
    char nonce[XDS_TYPE_COUNT][NONCE_MAX];
    char ver[XDS_TYPE_COUNT][VER_MAX];
} cclient;

struct cproc {
    const cfg *c;
    rpc_loop *loop;
    rpc_channel **ch;
    cclient *cl;
    int status_fd;
    int n_complete, n_rds;
    bool failed;
    atomic_bool stopping;
    nameset *sets;
    size_t n_sets;
    uint64_t resp[XDS_TYPE_COUNT], res[XDS_TYPE_COUNT], bytes[XDS_TYPE_COUNT];
    uint64_t decodes[XDS_TYPE_COUNT];
    int64_t handler_ns;
};

static void cp_fail(cproc *cp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cp_fail(cproc *cp, const char *fmt, ...)
{
    if (cp->failed) return; /* the first error is the one reported */
    cp->failed = true;
    char line[LINE_MAX_B];
    int o = snprintf(line, sizeof line, "ERR ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + o, sizeof line - (size_t)o - 1, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++)
        if (*p == '\n') *p = ' ';
    size_t l = strlen(line);
    line[l] = '\n';
    line[l + 1] = '\0';
    write_line(cp->status_fd, line);
}

static void nameset_free(nameset *ns)
{
    if (ns == NULL) return;
    for (size_t i = 0; i < ns->n; i++) free(ns->names[i]);
    free(ns->names);
    free(ns);
}

/* Adds a copy of `name` to ns (capacity `cap` preallocated). */
static bool nameset_add(nameset *ns, const char *name)
{
    char *d = strdup(name);
    if (d == NULL) return false;
    ns->names[ns->n++] = d;
    return true;
}

static void nameset_finish(nameset *ns)
{
    if (ns->n > 1) qsort(ns->names, ns->n, sizeof *ns->names, cmp_strp);
    size_t m = 0;
    for (size_t i = 0; i < ns->n; i++) {
        if (m > 0 && strcmp(ns->names[m - 1], ns->names[i]) == 0) {
            free(ns->names[i]);
            continue;
        }
        ns->names[m++] = ns->names[i];
    }
    ns->n = m;
}

/* A SotW or a delta response, seen the same way. */
typedef struct {
    const disc_resp *sotw;
    const delta_resp *delta;
    const char *type_url, *version, *nonce;
    size_t n;         /* resources */
    size_t n_removed; /* delta only */
} rview;

/* The i-th resource's Any (NULL for a delta Resource without one). */
static const Google__Protobuf__Any *rv_any(const rview *v, size_t i)
{
    if (v->sotw) return v->sotw->resources[i];
    return v->delta->resources[i] ? v->delta->resources[i]->resource : NULL;
}

/* EDS cluster names of a CDS response (service_name when set, as Envoy). */
static bool decode_clusters(cproc *cp, const rview *r, nameset *ns)
{
    for (size_t i = 0; i < r->n; i++) {
        const Google__Protobuf__Any *a = rv_any(r, i);
        cluster_msg *c = envoy__config__cluster__v3__cluster__unpack(NULL, a->value.len, a->value.data);
        if (c == NULL) {
            cp_fail(cp, "cannot decode Cluster %zu of CDS version %s", i, r->version);
            return false;
        }
        bool ok = true;
        if (c->cluster_discovery_type_case == CLUSTER_HAS_TYPE && c->type == CLUSTER_EDS) {
            const char *sn = c->eds_cluster_config && c->eds_cluster_config->service_name &&
                                     c->eds_cluster_config->service_name[0]
                                 ? c->eds_cluster_config->service_name
                                 : c->name;
            ok = nameset_add(ns, sn);
        }
        envoy__config__cluster__v3__cluster__free_unpacked(c, NULL);
        if (!ok) {
            cp_fail(cp, "out of memory");
            return false;
        }
    }
    return true;
}

/* RDS route names of an LDS response: every HTTP connection manager's rds. */
static bool decode_listeners(cproc *cp, const rview *r, nameset *ns, size_t *cap)
{
    for (size_t i = 0; i < r->n; i++) {
        const Google__Protobuf__Any *a = rv_any(r, i);
        listener_msg *l = envoy__config__listener__v3__listener__unpack(NULL, a->value.len, a->value.data);
        if (l == NULL) {
            cp_fail(cp, "cannot decode Listener %zu of LDS version %s", i, r->version);
            return false;
        }
        bool ok = true;
        for (size_t c = 0; ok && c < l->n_filter_chains; c++) {
            const Envoy__Config__Listener__V3__FilterChain *fc = l->filter_chains[c];
            for (size_t f = 0; ok && f < fc->n_filters; f++) {
                const Envoy__Config__Listener__V3__Filter *flt = fc->filters[f];
                if (flt->config_type_case != FILTER_TYPED ||
                    flt->typed_config == NULL || strcmp(flt->typed_config->type_url, HCM_TYPE_URL) != 0)
                    continue;
                hcm_msg *h = hcm_unpack(NULL, flt->typed_config->value.len, flt->typed_config->value.data);
                if (h == NULL) {
                    cp_fail(cp, "cannot decode the HttpConnectionManager of listener %s", l->name);
                    ok = false;
                    break;
                }
                if (h->route_specifier_case == HCM_RDS && h->rds && h->rds->route_config_name &&
                    h->rds->route_config_name[0]) {
                    if (ns->n == *cap) {
                        size_t nc = *cap ? 2 * *cap : 8;
                        char **g = realloc(ns->names, nc * sizeof *g);
                        if (g == NULL) ok = false;
                        else {
                            ns->names = g;
                            *cap = nc;
                        }
                    }
                    if (ok) ok = nameset_add(ns, h->rds->route_config_name);
                    if (!ok) cp_fail(cp, "out of memory");
                }
                hcm_free_unpacked(h, NULL);
            }
        }
        envoy__config__listener__v3__listener__free_unpacked(l, NULL);
        if (!ok) return false;
    }
    return true;
}

/* The names a CDS or LDS response leads to, decoded once per distinct
 * (type, version, count). NULL after cp_fail. */
static const nameset *names_for(cproc *cp, xds_type t, const rview *r)
{
    for (nameset *s = cp->sets; s; s = s->next)
        if (s->t == t && s->n_res == r->n && strcmp(s->ver, r->version) == 0) return s;
    if (cp->n_sets >= NAMESETS_MAX) {
        cp_fail(cp, "more than %d distinct responses to decode", NAMESETS_MAX);
        return NULL;
    }
    nameset *ns = calloc(1, sizeof *ns);
    size_t cap = t == XDS_CDS ? r->n : 0;
    if (ns == NULL || (cap > 0 && (ns->names = calloc(cap, sizeof *ns->names)) == NULL)) {
        free(ns);
        cp_fail(cp, "out of memory");
        return NULL;
    }
    ns->t = t;
    ns->n_res = r->n;
    snprintf(ns->ver, sizeof ns->ver, "%s", r->version);
    bool ok = t == XDS_CDS ? decode_clusters(cp, r, ns) : decode_listeners(cp, r, ns, &cap);
    if (!ok) {
        nameset_free(ns);
        return NULL;
    }
    nameset_finish(ns);
    cp->decodes[t]++;
    ns->next = cp->sets;
    cp->sets = ns;
    cp->n_sets++;
    return ns;
}

static bool same_names(const nameset *a, const nameset *b)
{
    if (a == b) return true;
    if (a == NULL || b == NULL || a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->names[i], b->names[i]) != 0) return false;
    return true;
}

/* A SotW request for type t: subscription `ns` (NULL: wildcard), with the
 * last version and nonce received for t (an ACK, or a subscription change
 * the server will not take as stale). */
static bool send_req(cclient *k, xds_type t, const nameset *ns)
{
    disc_req r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    r.type_url = (char *)xds_type_url(t);
    if (ns != NULL) {
        r.resource_names = ns->names;
        r.n_resource_names = ns->n;
    }
    if (k->ver[t][0]) r.version_info = k->ver[t];
    if (k->nonce[t][0]) r.response_nonce = k->nonce[t];
    if (!mid_is_ok(rpc_stream_send(k->s, &r.base))) {
        cp_fail(k->cp, "client %d: cannot send a %s request: %s", k->idx, xds_type_short(t),
                mid_errmsg());
        return false;
    }
    return true;
}

/* A delta request for type t: an ACK of the last response (ack), or the
 * type's first request subscribing `ns` (NULL: wildcard). */
static bool send_delta(cclient *k, xds_type t, const nameset *ns, bool ack)
{
    delta_req r = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    r.type_url = (char *)xds_type_url(t);
    if (ns != NULL) {
        r.resource_names_subscribe = ns->names;
        r.n_resource_names_subscribe = ns->n;
    }
    if (ack) r.response_nonce = k->nonce[t];
    if (!mid_is_ok(rpc_stream_send(k->s, &r.base))) {
        cp_fail(k->cp, "client %d: cannot send a delta %s request: %s", k->idx, xds_type_short(t),
                mid_errmsg());
        return false;
    }
    return true;
}

static void check_complete(cclient *k)
{
    cproc *cp = k->cp;
    if (k->complete) return;
    unsigned need = 1u << XDS_CDS | 1u << XDS_LDS;
    if (k->eds == NULL || k->rds == NULL) return;
    if (k->eds->n > 0) need |= 1u << XDS_EDS;
    if (k->rds->n > 0) need |= 1u << XDS_RDS;
    if ((k->acked & need) != need) return;
    k->complete = true;
    if (k->rds->n > 0) cp->n_rds++;
    if (++cp->n_complete == cp->c->clients) {
        char line[128];
        snprintf(line, sizeof line, "SYNCED %" PRId64 " %d\n", now_ns(), cp->n_rds);
        write_line(cp->status_fd, line);
    }
}

/* SotW, as Envoy: new clusters -> EDS for them, then the CDS ACK; the first
 * EDS answer -> LDS; new route names -> RDS, then the LDS ACK. Every
 * response is ACKed with the whole subscription. */
static bool sotw_step(cclient *k, xds_type t, const rview *r)
{
    const nameset *ns;
    switch (t) {
    case XDS_CDS:
        if ((ns = names_for(k->cp, XDS_CDS, r)) == NULL) return false;
        if (!same_names(k->eds, ns)) {
            k->eds = ns;
            if (!send_req(k, XDS_EDS, ns)) return false;
        }
        return send_req(k, XDS_CDS, NULL);
    case XDS_EDS:
        if (!send_req(k, XDS_EDS, k->eds)) return false;
        if (!k->lds_requested) {
            k->lds_requested = true;
            return send_req(k, XDS_LDS, NULL);
        }
        return true;
    case XDS_LDS:
        if ((ns = names_for(k->cp, XDS_LDS, r)) == NULL) return false;
        if (!same_names(k->rds, ns)) {
            bool had = k->rds != NULL && k->rds->n > 0;
            k->rds = ns;
            if ((ns->n > 0 || had) && !send_req(k, XDS_RDS, ns)) return false;
        }
        return send_req(k, XDS_LDS, NULL);
    case XDS_RDS:
        return send_req(k, XDS_RDS, k->rds);
    default:
        return true;
    }
}

/* Delta: the same order; an ACK carries only the nonce. The bench's
 * clusters and listeners do not change after the initial state, and this
 * client does not follow such changes: one is a functional failure. */
static bool delta_step(cclient *k, xds_type t, const rview *r)
{
    const nameset *ns;
    switch (t) {
    case XDS_CDS:
    case XDS_LDS: {
        const nameset **cur = t == XDS_CDS ? &k->eds : &k->rds;
        xds_type sub = t == XDS_CDS ? XDS_EDS : XDS_RDS;
        if (*cur == NULL) {
            if ((ns = names_for(k->cp, t, r)) == NULL) return false;
            *cur = ns;
            if (ns->n > 0 && !send_delta(k, sub, ns, false)) return false;
        } else if (r->n > 0 || r->n_removed > 0) {
            cp_fail(k->cp, "client %d: %s changed after the initial state (the delta client does "
                           "not follow that)", k->idx, xds_type_short(t));
            return false;
        }
        if (!send_delta(k, t, NULL, true)) return false;
        if (t == XDS_CDS && k->eds->n == 0 && !k->lds_requested) {
            k->lds_requested = true;
            return send_delta(k, XDS_LDS, NULL, false);
        }
        return true;
    }
    case XDS_EDS:
        if (!send_delta(k, XDS_EDS, NULL, true)) return false;
        if (!k->lds_requested) {
            k->lds_requested = true;
            return send_delta(k, XDS_LDS, NULL, false);
        }
        return true;
    case XDS_RDS:
        return send_delta(k, XDS_RDS, NULL, true);
    default:
        return true;
    }
}

static void handle_response(cclient *k, const rview *r)
{
    cproc *cp = k->cp;
    int64_t t_in = now_ns();
    xds_type t;
    if (!mid_is_ok(xds_type_from_url(r->type_url, &t))) {
        cp_fail(cp, "client %d: response of type %.100s", k->idx, r->type_url);
        return;
    }
    if (strlen(r->nonce) >= NONCE_MAX || strlen(r->version) >= VER_MAX || r->nonce[0] == '\0') {
        cp_fail(cp, "client %d: %s response with a bad nonce or version", k->idx, xds_type_short(t));
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        const Google__Protobuf__Any *a = rv_any(r, i);
        if (a == NULL || strcmp(a->type_url, r->type_url) != 0) {
            cp_fail(cp, "client %d: %s response carries a resource of another type", k->idx,
                    xds_type_short(t));
            return;
        }
        cp->bytes[t] += a->value.len;
    }
    cp->resp[t]++;
    cp->res[t] += r->n;
    snprintf(k->ver[t], VER_MAX, "%s", r->version);
    snprintf(k->nonce[t], NONCE_MAX, "%s", r->nonce);
    if (!(cp->c->delta ? delta_step(k, t, r) : sotw_step(k, t, r))) return;
    k->acked |= 1u << t;
    check_complete(k);
    cp->handler_ns += now_ns() - t_in;
}

static void on_client_message(rpc_stream *rs, const ProtobufCMessage *m, void *arg)
{
    (void)rs;
    cclient *k = arg;
    rview v = {0};
    if (k->cp->c->delta) {
        const delta_resp *r = (const delta_resp *)m;
        v = (rview){.delta = r, .type_url = r->type_url, .version = r->system_version_info,
                    .nonce = r->nonce, .n = r->n_resources, .n_removed = r->n_removed_resources};
    } else {
        const disc_resp *r = (const disc_resp *)m;
        v = (rview){.sotw = r, .type_url = r->type_url, .version = r->version_info,
                    .nonce = r->nonce, .n = r->n_resources};
    }
    handle_response(k, &v);
}

static void on_client_done(rpc_stream *rs, const rpc_status *st, void *arg)
{
    (void)rs;
    cclient *k = arg;
    k->s = NULL;
    if (atomic_load(&k->cp->stopping)) return;
    cp_fail(k->cp, "client %d (%s): stream ended: code %d %.300s", k->idx, k->node_id, (int)st->code,
            st->message ? st->message : "");
}

static const rpc_stream_handler client_h = {on_client_message, on_client_done};

static void client_stop_fn(rpc_loop *loop, void *arg)
{
    cproc *cp = arg;
    atomic_store(&cp->stopping, true);
    rpc_loop_stop(loop);
}

typedef struct {
    cproc *cp;
    int ctl_fd;
} ctl_arg;

/* Waits for EOF on the control pipe (the server is done), then stops the loop. */
static void *client_ctl_main(void *arg)
{
    ctl_arg *ca = arg;
    char buf[64];
    for (;;) {
        ssize_t n = read(ca->ctl_fd, buf, sizeof buf);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    for (int i = 0; i < 10000; i++) {
        mid_result r = rpc_loop_wake_post(ca->cp->loop, client_stop_fn, ca->cp);
        if (r.err != MID_E_BUSY) break;
        sleep_ms(1);
    }
    return NULL;
}

/* Reads the "PORT n" line from the control pipe; -1 on EOF or garbage. */
static long read_port(int fd)
{
    char line[64];
    size_t o = 0;
    while (o + 1 < sizeof line) {
        ssize_t n = read(fd, line + o, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        if (line[o] == '\n') break;
        o++;
    }
    line[o] = '\0';
    if (strncmp(line, "PORT ", 5) != 0) return -1;
    char *end = NULL;
    errno = 0;
    long p = strtol(line + 5, &end, 10);
    if (errno != 0 || *end != '\0' || p <= 0 || p > 65535) return -1;
    return p;
}

/* The client process: returns its exit status. */
static int client_main(const cfg *c, int ctl_fd, int status_fd)
{
    cproc cp = {.c = c, .status_fd = status_fd};
    char target[64], line[LINE_MAX_B];
    pthread_t tid;
    bool have_thread = false;
    mid_result r;
    signal(SIGPIPE, SIG_IGN);
    long port = read_port(ctl_fd);
    if (port < 0) return 1; /* the server gave up before starting */
    snprintf(target, sizeof target, "127.0.0.1:%ld", port);
    cp.cl = calloc((size_t)c->clients, sizeof *cp.cl);
    cp.ch = calloc((size_t)c->nch, sizeof *cp.ch);
    if (cp.cl == NULL || cp.ch == NULL) {
        cp_fail(&cp, "client process: out of memory");
        goto out;
    }
    if (!mid_is_ok(r = rpc_loop_new(&cp.loop))) {
        cp_fail(&cp, "client rpc_loop_new: %s", mid_errmsg());
        goto out;
    }
    for (long i = 0; i < c->nch; i++) {
        if (!mid_is_ok(r = rpc_channel_new(cp.loop, target, NULL, CLIENT_MSG_MAX, &cp.ch[i]))) {
            cp_fail(&cp, "client rpc_channel_new: %s", mid_errmsg());
            goto out;
        }
    }
    rpc_call_opts copts = {.wait_for_ready = true};
    for (long i = 0; i < c->clients; i++) {
        cclient *k = &cp.cl[i];
        k->cp = &cp;
        k->idx = (int)i;
        snprintf(k->node_id, sizeof k->node_id, "spiffe://" BENCH_TD "/ns/" BENCH_NS "/sa/sa-%ld",
                 i % c->services);
        Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
        node.id = k->node_id;
        node.user_agent_name = (char *)"envoy";
        /* CDS wildcard: no names */
        disc_req first = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
        first.node = &node;
        first.type_url = (char *)XDS_TYPE_URL_CDS;
        delta_req dfirst = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
        dfirst.node = &node;
        dfirst.type_url = (char *)XDS_TYPE_URL_CDS;
        r = rpc_stream_open(cp.ch[i / c->per_channel], c->delta ? ADS_M_DELTA : ADS_M_STREAM, RPC_BIDI,
                            c->delta ? &dfirst.base : &first.base,
                            c->delta ? &envoy__service__discovery__v3__delta_discovery_response__descriptor
                                     : &envoy__service__discovery__v3__discovery_response__descriptor,
                            &copts, &client_h, k, &k->s);
        if (!mid_is_ok(r)) {
            cp_fail(&cp, "client %ld: rpc_stream_open: %s", i, mid_errmsg());
            goto out;
        }
    }
    ctl_arg ca = {.cp = &cp, .ctl_fd = ctl_fd};
    if (pthread_create(&tid, NULL, client_ctl_main, &ca) != 0) {
        cp_fail(&cp, "client: cannot start the control thread");
        goto out;
    }
    have_thread = true;
    if (!mid_is_ok(r = rpc_loop_run(cp.loop))) cp_fail(&cp, "client rpc_loop_run: %s", mid_errmsg());
out:
    atomic_store(&cp.stopping, true);
    rpc_loop_free(cp.loop); /* ends the streams */
    if (have_thread) pthread_join(tid, NULL);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    snprintf(line, sizeof line,
             "STATS cpu_user=%.2f cpu_sys=%.2f maxrss_kb=%ld handler_ms=%.0f "
             "resp=%" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 " res=%" PRIu64 "/%" PRIu64 "/%" PRIu64
             "/%" PRIu64 " mbytes=%.1f/%.1f/%.1f/%.1f decodes=%" PRIu64 "/%" PRIu64 " complete=%d\n",
             tv_s(ru.ru_utime), tv_s(ru.ru_stime), ru.ru_maxrss, ms(cp.handler_ns), cp.resp[0],
             cp.resp[1], cp.resp[2], cp.resp[3], cp.res[0], cp.res[1], cp.res[2], cp.res[3],
             (double)cp.bytes[0] / 1048576.0, (double)cp.bytes[1] / 1048576.0,
             (double)cp.bytes[2] / 1048576.0, (double)cp.bytes[3] / 1048576.0, cp.decodes[XDS_CDS],
             cp.decodes[XDS_LDS], cp.n_complete);
    write_line(status_fd, line);
    while (cp.sets) {
        nameset *n = cp.sets->next;
        nameset_free(cp.sets);
        cp.sets = n;
    }
    free(cp.cl);
    free(cp.ch);
    return cp.failed ? 1 : 0;
}

/* =========================================================================================
 * The server process
 * ========================================================================================= */

/* One ADS stream as the ACK hook sees it (index = stream id - 1). Written on
 * the loop thread, read by the driver: atomics. */
typedef struct {
    atomic_uint acked;               /* bit per type: ACKed at least once */
    _Atomic uint64_t ver[XDS_TYPE_COUNT];
    _Atomic int64_t last_initial_ns; /* the last ACK before the first change */
    _Atomic uint64_t base_eds;       /* the EDS version held before the current change */
    atomic_int done;                 /* the last change (1-based) this stream ACKed */
    _Atomic int64_t done_ns;
} sstream;

typedef struct {
    const cfg *c;
    rpc_loop *loop;
    mesh_plane *mp;
    ads_server *ads;
    sstream *ss;
    size_t n_ss;
    atomic_int n_acked[XDS_TYPE_COUNT]; /* streams that ACKed the type at least once */
    atomic_int cur_change;              /* 0 before the first change */
    atomic_int n_done;
    atomic_int other_updates;           /* CDS/LDS/RDS ACKs of a new version during changes */
    atomic_int bad_versions;
    /* loop sampler */
    rpc_timer *sampler;
    atomic_bool in_flight, stopping;
    _Atomic int64_t cur_rev;
    _Atomic uint64_t cur_pushes, cur_streams;
    _Atomic int64_t base_rev, rev_ns;
    _Atomic uint64_t base_pushes;
    _Atomic int64_t pushed_ns;
    ads_stats final;                    /* copied on the loop at shutdown */
    /* fatal */
    atomic_int fatal_claim, fatal;
    char fatal_msg[LINE_MAX_B];
    /* the client process */
    int ctl_fd, status_fd;
    pid_t child;
    atomic_int child_synced, child_rds, child_eof, child_stopping;
    _Atomic int64_t child_sync_ns;
    char child_stats[LINE_MAX_B];       /* written by the reader before child_eof */
} bench;

static void set_fatal(bench *b, const char *msg)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&b->fatal_claim, &expected, 1)) {
        snprintf(b->fatal_msg, sizeof b->fatal_msg, "%.1000s", msg);
        atomic_store_explicit(&b->fatal, 1, memory_order_release);
    }
}

/* ---- loop thread: ACK hook and sampler ---------------------------------------------------- */

static void on_ack(void *ctx, uint64_t id, xds_type t, const char *version)
{
    bench *b = ctx;
    if (id == 0 || id > b->n_ss) {
        char msg[128];
        snprintf(msg, sizeof msg, "ACK on stream id %" PRIu64 ": more streams than clients (reconnects?)",
                 id);
        set_fatal(b, msg);
        return;
    }
    sstream *s = &b->ss[id - 1];
    uint64_t v = 0;
    if (!ver_parse(version, &v)) {
        atomic_fetch_add(&b->bad_versions, 1);
        return;
    }
    int64_t now = now_ns();
    uint64_t prev = atomic_exchange(&s->ver[t], v);
    unsigned bit = 1u << t;
    bool first = (atomic_fetch_or(&s->acked, bit) & bit) == 0;
    if (first) atomic_fetch_add(&b->n_acked[t], 1);
    int c = atomic_load_explicit(&b->cur_change, memory_order_acquire);
    if (c == 0) {
        atomic_store(&s->last_initial_ns, now);
        return;
    }
    if (t != XDS_EDS) {
        if (!first && prev != v) atomic_fetch_add(&b->other_updates, 1);
        return;
    }
    if (atomic_load(&s->done) < c && v != atomic_load(&s->base_eds)) {
        atomic_store(&s->done_ns, now);
        atomic_store(&s->done, c);
        atomic_fetch_add(&b->n_done, 1);
    }
}

static void sample(bench *b)
{
    int64_t rev = mesh_plane_revision(b->mp);
    ads_stats st;
    ads_server_stats(b->ads, &st);
    atomic_store(&b->cur_rev, rev);
    atomic_store(&b->cur_pushes, st.pushes);
    atomic_store(&b->cur_streams, st.streams);
    if (!atomic_load_explicit(&b->in_flight, memory_order_acquire)) return;
    int64_t now = now_ns();
    if (atomic_load(&b->rev_ns) == 0 && rev != atomic_load(&b->base_rev)) atomic_store(&b->rev_ns, now);
    if (atomic_load(&b->pushed_ns) == 0 && st.pushes > atomic_load(&b->base_pushes))
        atomic_store(&b->pushed_ns, now);
}

static void sampler_tick(rpc_loop *loop, void *arg)
{
    bench *b = arg;
    b->sampler = NULL;
    if (atomic_load(&b->stopping)) return;
    sample(b);
    int64_t next = atomic_load(&b->in_flight) ? SAMPLE_FAST_MS : SAMPLE_SLOW_MS;
    if (!mid_is_ok(rpc_timer_add(loop, next, sampler_tick, b, &b->sampler)))
        set_fatal(b, "cannot re-arm the sampler timer");
}

/* Posted by the driver when it is done. */
static void shutdown_fn(rpc_loop *loop, void *arg)
{
    bench *b = arg;
    atomic_store(&b->stopping, true);
    if (b->sampler) rpc_timer_cancel(loop, b->sampler);
    b->sampler = NULL;
    if (b->ads) ads_server_stats(b->ads, &b->final);
    mesh_plane_stop(b->mp);
    rpc_loop_stop(loop);
}

/* ---- the client's status pipe (reader thread) --------------------------------------------- */

static void *status_reader_main(void *arg)
{
    bench *b = arg;
    char buf[LINE_MAX_B * 4];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(b->status_fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        have += (size_t)n;
        buf[have] = '\0';
        char *nl;
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            *nl = '\0';
            if (strncmp(buf, "SYNCED ", 7) == 0) {
                long long t = 0;
                int nr = 0;
                if (sscanf(buf + 7, "%lld %d", &t, &nr) == 2) {
                    atomic_store(&b->child_sync_ns, (int64_t)t);
                    atomic_store(&b->child_rds, nr);
                    atomic_store(&b->child_synced, 1);
                }
            } else if (strncmp(buf, "ERR ", 4) == 0) {
                char msg[LINE_MAX_B + 16];
                snprintf(msg, sizeof msg, "client process: %.900s", buf + 4);
                set_fatal(b, msg);
            } else if (strncmp(buf, "STATS ", 6) == 0) {
                snprintf(b->child_stats, sizeof b->child_stats, "%.1000s", buf + 6);
            }
            size_t used = (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, have - used);
            have -= used;
        }
        if (have >= sizeof buf - 1) have = 0; /* an overlong line: drop it */
    }
    if (!atomic_load(&b->child_stopping)) set_fatal(b, "the client process ended unexpectedly");
    atomic_store(&b->child_eof, 1);
    return NULL;
}

/* ---- the driver (its own thread) --------------------------------------------------------- */

typedef struct {
    size_t svc;
    int64_t t_call, t_rev, t_pushed, t_first, t_last; /* from t0 (ns); -1 not seen */
    uint64_t pushes;
    double cpu_s, loop_cpu_s;
    int64_t loop_wait; /* the loop thread's run-queue wait during the change (ns; -1 unknown) */
} change_rec;

typedef struct {
    bench *b;
    const char *admin_sock;
    clockid_t loop_clock;
    long loop_tid;
    int ok;
    int64_t t_start, t_synced, t_sync_last;
    long hwm_before, hwm_sync, hwm_end, rss_sync, rss_end;
    long anon_sync, anon_end, file_sync, file_end; /* RssAnon / RssFile+RssShmem (KiB) */
    double heap_before, heap_sync, heap_end, held_before, held_sync, held_end;
    struct rusage ru_start, ru_sync, ru_end;
    int64_t loop_cpu_start, loop_cpu_sync, loop_cpu_end;
    change_rec *ch;
    int n_changes_done;
    int64_t *lat; /* [change][stream] ns from t0 */
    size_t n_lat;
    int64_t t_child_stop;
    double load_start, load_end; /* 1-minute load average of the machine */
} driver;

static bool fatal_now(bench *b) { return atomic_load_explicit(&b->fatal, memory_order_acquire) != 0; }

/* The streams known to the ACK hook (ids 1..n with at least one ACK). */
static size_t active_streams(const bench *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n_ss; i++)
        if (atomic_load(&b->ss[i].acked) != 0) n++;
    return n;
}

static bool wait_sync(driver *d)
{
    bench *b = d->b;
    const cfg *c = b->c;
    int64_t limit = d->t_start + (int64_t)c->sync_s * 1000000000;
    int64_t last_print = now_ns();
    for (;;) {
        if (fatal_now(b)) return false;
        if (atomic_load(&b->child_eof)) {
            set_fatal(b, "the client process ended");
            return false;
        }
        bool child = atomic_load(&b->child_synced) != 0;
        int need_rds = atomic_load(&b->child_rds);
        if (child && atomic_load(&b->n_acked[XDS_CDS]) >= c->clients &&
            atomic_load(&b->n_acked[XDS_EDS]) >= c->clients &&
            atomic_load(&b->n_acked[XDS_LDS]) >= c->clients &&
            atomic_load(&b->n_acked[XDS_RDS]) >= need_rds)
            return true;
        int64_t now = now_ns();
        if (now > limit) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "initial sync not complete after %ld s: streams that ACKed CDS %d, EDS %d, "
                     "LDS %d, RDS %d of %ld",
                     c->sync_s, atomic_load(&b->n_acked[0]), atomic_load(&b->n_acked[1]),
                     atomic_load(&b->n_acked[2]), atomic_load(&b->n_acked[3]), c->clients);
            set_fatal(b, msg);
            return false;
        }
        if (now - last_print > 10 * 1000000000LL) {
            last_print = now;
            printf("bench_xds: syncing... %.0f s: ACKed CDS %d, EDS %d, LDS %d, RDS %d of %ld\n",
                   (double)(now - d->t_start) / 1e9, atomic_load(&b->n_acked[0]),
                   atomic_load(&b->n_acked[1]), atomic_load(&b->n_acked[2]),
                   atomic_load(&b->n_acked[3]), c->clients);
            fflush(stdout);
        }
        sleep_ms(2);
    }
}

/* AddEndpoint svc-n: a new address 10.(128+A).B.(k+1), same port, labels
 * and service account as the service's other endpoints (so only EDS
 * changes). */
static mid_result add_endpoint(const char *sock, long service_port, long n, int k,
                               int64_t *revision)
{
    char svc[64], addr[64], app[64], sa[64];
    snprintf(svc, sizeof svc, BENCH_NS "/svc-%ld", n);
    snprintf(addr, sizeof addr, "10.%ld.%ld.%d", 128 + (n >> 8), n & 255, k + 1);
    snprintf(app, sizeof app, "svc-%ld", n);
    snprintf(sa, sizeof sa, "sa-%ld", n);
    Meshid__Admin__V1__AddEndpointRequest__LabelsEntry le =
        MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__LABELS_ENTRY__INIT;
    le.key = (char *)"app";
    le.value = app;
    Meshid__Admin__V1__AddEndpointRequest__LabelsEntry *lp = &le;
    Meshid__Admin__V1__AddEndpointRequest req = MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__INIT;
    req.service = svc;
    req.address = addr;
    req.labels = &lp;
    req.n_labels = 1;
    req.service_account = sa;
    Meshid__Admin__V1__AddEndpointRequest__PortsEntry pe =
        MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__PORTS_ENTRY__INIT;
    pe.key = (char *)"http";
    pe.value = ENDPOINT_PORT;
    Meshid__Admin__V1__AddEndpointRequest__PortsEntry *pp = &pe;
    if (service_port != ENDPOINT_PORT) {
        req.ports = &pp;
        req.n_ports = 1;
    }
    ProtobufCMessage *resp = NULL;
    MID_GUARD(admin_call(sock, "AddEndpoint", &req.base,
                         &meshid__admin__v1__add_endpoint_response__descriptor, &resp));
    const Meshid__Admin__V1__AddEndpointResponse *ar = (const Meshid__Admin__V1__AddEndpointResponse *)resp;
    *revision = ar->revision;
    bool replaced = ar->replaced;
    protobuf_c_message_free_unpacked(resp, NULL);
    MID_ENSURE(!replaced, MID_E_STATE, "AddEndpoint %s %s replaced an endpoint", svc, addr);
    return mid_ok();
}

static bool run_change(driver *d, int k)
{
    bench *b = d->b;
    const cfg *c = b->c;
    change_rec *cr = &d->ch[k];
    long step = c->services / c->changes > 0 ? c->services / c->changes : 1;
    long n = ((long)k * step) % c->services;
    cr->svc = (size_t)n;
    /* baselines: nothing is pushed between changes */
    for (size_t i = 0; i < b->n_ss; i++)
        atomic_store(&b->ss[i].base_eds, atomic_load(&b->ss[i].ver[XDS_EDS]));
    atomic_store(&b->n_done, 0);
    atomic_store(&b->base_rev, atomic_load(&b->cur_rev));
    atomic_store(&b->base_pushes, atomic_load(&b->cur_pushes));
    atomic_store(&b->rev_ns, 0);
    atomic_store(&b->pushed_ns, 0);
    atomic_store_explicit(&b->in_flight, true, memory_order_release);
    sleep_ms(5); /* the sampler switches to its fast rate */
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t lc0 = thread_cpu_ns(d->loop_clock);
    int64_t w0 = runq_wait_ns(d->loop_tid);
    atomic_store_explicit(&b->cur_change, k + 1, memory_order_release);
    int64_t rev = 0;
    int64_t t0 = now_ns();
    mid_result r = add_endpoint(d->admin_sock, c->service_port, n, k, &rev);
    int64_t t1 = now_ns();
    if (!mid_is_ok(r)) {
        report_err("AddEndpoint", r);
        set_fatal(b, "AddEndpoint failed");
        return false;
    }
    cr->t_call = t1 - t0;
    size_t want = (size_t)c->clients;
    while ((size_t)atomic_load(&b->n_done) < want) {
        if (fatal_now(b)) return false;
        if (now_ns() - t0 > (int64_t)CHANGE_TIMEOUT_S * 1000000000) {
            char msg[256];
            snprintf(msg, sizeof msg, "change %d (svc-%ld): only %d of %zu streams ACKed it in %d s", k + 1,
                     n, atomic_load(&b->n_done), want, CHANGE_TIMEOUT_S);
            set_fatal(b, msg);
            return false;
        }
        sleep_ms(1);
    }
    sleep_ms(SETTLE_MS);
    atomic_store_explicit(&b->in_flight, false, memory_order_release);
    getrusage(RUSAGE_SELF, &ru1);
    int64_t lc1 = thread_cpu_ns(d->loop_clock);
    int64_t w1 = runq_wait_ns(d->loop_tid);
    cr->loop_wait = w0 >= 0 && w1 >= 0 ? w1 - w0 : -1;
    cr->cpu_s = ru_cpu_s(&ru1) - ru_cpu_s(&ru0);
    cr->loop_cpu_s = (double)(lc1 - lc0) / 1e9;
    int64_t rv = atomic_load(&b->rev_ns), pu = atomic_load(&b->pushed_ns);
    cr->t_rev = rv ? rv - t0 : -1;
    cr->t_pushed = pu ? pu - t0 : -1;
    cr->pushes = atomic_load(&b->cur_pushes) - atomic_load(&b->base_pushes);
    int64_t first = INT64_MAX, last = 0;
    size_t j = 0;
    for (size_t i = 0; i < b->n_ss && j < want; i++) {
        if (atomic_load(&b->ss[i].done) != k + 1) continue;
        int64_t dt = atomic_load(&b->ss[i].done_ns) - t0;
        d->lat[(size_t)k * want + j++] = dt;
        if (dt < first) first = dt;
        if (dt > last) last = dt;
    }
    d->n_lat += j;
    cr->t_first = first;
    cr->t_last = last;
    return true;
}

/* Tells the client process to stop and waits for it (at most 60 s). */
static void stop_child(bench *b)
{
    atomic_store(&b->child_stopping, 1);
    if (b->ctl_fd >= 0) {
        close(b->ctl_fd);
        b->ctl_fd = -1;
    }
    int64_t until = now_ns() + 60 * 1000000000LL;
    while (!atomic_load(&b->child_eof) && now_ns() < until) sleep_ms(5);
    if (b->child > 0) {
        int st = 0;
        if (!atomic_load(&b->child_eof)) kill(b->child, SIGKILL);
        while (waitpid(b->child, &st, 0) < 0 && errno == EINTR) {
        }
        b->child = 0;
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) set_fatal(b, "the client process failed");
    }
}

static void *driver_main(void *arg)
{
    driver *d = arg;
    bench *b = d->b;
    const cfg *c = b->c;
    if (!wait_sync(d)) goto out;
    d->t_synced = now_ns();
    getrusage(RUSAGE_SELF, &d->ru_sync);
    d->loop_cpu_sync = thread_cpu_ns(d->loop_clock);
    d->hwm_sync = proc_status_kb("VmHWM");
    d->rss_sync = proc_status_kb("VmRSS");
    d->anon_sync = proc_status_kb("RssAnon");
    d->file_sync = proc_status_kb("RssFile") + proc_status_kb("RssShmem");
    heap_use(&d->heap_sync, &d->held_sync);
    int64_t last = 0;
    for (size_t i = 0; i < b->n_ss; i++) {
        int64_t t = atomic_load(&b->ss[i].last_initial_ns);
        if (t > last) last = t;
    }
    d->t_sync_last = last;
    size_t act = active_streams(b);
    if (act != (size_t)c->clients) {
        char msg[128];
        snprintf(msg, sizeof msg, "%zu streams ACKed something, expected %ld", act, c->clients);
        set_fatal(b, msg);
        goto out;
    }
    printf("bench_xds: initial sync of %ld clients done in %.0f ms (server's last initial ACK at "
           "%.0f ms); measuring %ld changes\n",
           c->clients, ms(d->t_synced - d->t_start), ms(d->t_sync_last - d->t_start), c->changes);
    fflush(stdout);
    sleep_ms(500); /* let the initial work (and the first reload poll) settle */
    for (int k = 0; k < c->changes; k++) {
        if (!run_change(d, k)) goto out;
        d->n_changes_done = k + 1;
        if (c->verbose) {
            const change_rec *cr = &d->ch[k];
            printf("  change %2d svc-%-5zu call %6.1f  reload %6.1f  pushed %6.1f  first %6.1f  last "
                   "%6.1f ms  CPU %.3f s (loop %.3f s, loop waited for a CPU %.0f ms)  RSS %.1f MiB\n",
                   k + 1, cr->svc, ms(cr->t_call), ms(cr->t_rev), ms(cr->t_pushed), ms(cr->t_first),
                   ms(cr->t_last), cr->cpu_s, cr->loop_cpu_s, ms(cr->loop_wait),
                   (double)proc_status_kb("VmRSS") / 1024.0);
            fflush(stdout);
        }
    }
    d->ok = 1;
out:
    getrusage(RUSAGE_SELF, &d->ru_end);
    d->loop_cpu_end = thread_cpu_ns(d->loop_clock);
    d->hwm_end = proc_status_kb("VmHWM");
    d->rss_end = proc_status_kb("VmRSS");
    d->anon_end = proc_status_kb("RssAnon");
    d->file_end = proc_status_kb("RssFile") + proc_status_kb("RssShmem");
    heap_use(&d->heap_end, &d->held_end);
    d->t_child_stop = now_ns();
    d->load_end = loadavg1();
    stop_child(b);
    /* the server sees the streams end: wait for it, so the stats are final */
    for (int i = 0; i < 2000 && atomic_load(&b->cur_streams) > 0; i++) sleep_ms(5);
    mid_result pr = MID_OK_RESULT;
    for (int i = 0; i < 1000; i++) { /* the loop may be momentarily full of posts */
        pr = rpc_loop_wake_post(b->loop, shutdown_fn, b);
        if (pr.err != MID_E_BUSY) break;
        sleep_ms(1);
    }
    if (!mid_is_ok(pr)) report_err("cannot stop the loop", pr);
    return NULL;
}

/* ---- report ------------------------------------------------------------------------------- */

static void print_row(const char *label, const int64_t *v, size_t n)
{
    if (n == 0) {
        printf("| %-46s | %8s | %8s | %8s | %8s | %7s |\n", label, "-", "-", "-", "-", "0");
        return;
    }
    printf("| %-46s | %8.1f | %8.1f | %8.1f | %8.1f | %7zu |\n", label, ms(v[0]), ms(pct(v, n, 50)),
           ms(pct(v, n, 99)), ms(v[n - 1]), n);
}

/* min/p50/p99/max of one field of the change records (ns; -1 skipped). */
static void print_stage(const char *label, const driver *d, size_t off)
{
    int64_t v[MAX_CHANGES];
    size_t n = 0;
    for (int k = 0; k < d->n_changes_done; k++) {
        int64_t x = *(const int64_t *)((const char *)&d->ch[k] + off);
        if (x >= 0) v[n++] = x;
    }
    qsort(v, n, sizeof *v, cmp_i64);
    print_row(label, v, n);
}

static void print_report(const driver *d, const bench *b, long ncpu, long nofile, double seed_s)
{
    const cfg *c = b->c;
    printf("\n");
    if (d->t_synced) {
        printf("Initial sync: %ld clients held and ACKed CDS+EDS+LDS%s %.0f ms after the port was "
               "handed to the client process (server's last initial ACK: %.0f ms)\n",
               c->clients, atomic_load(&b->child_rds) ? "+RDS" : "", ms(d->t_synced - d->t_start),
               ms(d->t_sync_last - d->t_start));
        printf("  server CPU during the sync: %.2f s (loop thread %.2f s)\n",
               ru_cpu_s(&d->ru_sync) - ru_cpu_s(&d->ru_start),
               (double)(d->loop_cpu_sync - d->loop_cpu_start) / 1e9);
    }
    if (d->n_changes_done > 0) {
        size_t n = d->n_lat;
        int64_t *v = malloc((n ? n : 1) * sizeof *v);
        printf("\nRegistry changes: %d x AddEndpoint (admin API) to a different service each; "
               "times in ms from just before the call\n\n",
               d->n_changes_done);
        printf("| %-46s | %8s | %8s | %8s | %8s | %7s |\n", "measure", "min", "p50", "p99", "max",
               "samples");
        printf("|%s|%s|%s|%s|%s|%s|\n", "------------------------------------------------",
               "----------", "----------", "----------", "----------", "---------");
        print_stage("admin call returned (plan, check, commit)", d, offsetof(change_rec, t_call));
        print_stage("registry reload installed (sampled, 1 ms)", d, offsetof(change_rec, t_rev));
        print_stage("pushes queued to every stream (sampled)", d, offsetof(change_rec, t_pushed));
        print_stage("first stream ACKed the new EDS", d, offsetof(change_rec, t_first));
        print_stage("last stream ACKed the new EDS", d, offsetof(change_rec, t_last));
        if (v != NULL) {
            memcpy(v, d->lat, n * sizeof *v);
            qsort(v, n, sizeof *v, cmp_i64);
            print_row("every (stream, change): ACKed the new EDS", v, n);
            printf("\nchange -> ACKed by a client: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %zu samples"
                   "  [target p99 < 1000 ms: %s]\n",
                   ms(pct(v, n, 50)), ms(pct(v, n, 99)), ms(v[n - 1]), n,
                   ms(pct(v, n, 99)) < 1000.0 ? "MET" : "NOT MET");
            free(v);
        }
        double cpu = 0, lcpu = 0, cmax = 0;
        uint64_t pushes = 0;
        for (int k = 0; k < d->n_changes_done; k++) {
            cpu += d->ch[k].cpu_s;
            lcpu += d->ch[k].loop_cpu_s;
            pushes += d->ch[k].pushes;
            if (d->ch[k].cpu_s > cmax) cmax = d->ch[k].cpu_s;
        }
        printf("server CPU per change (call -> all ACKed + %d ms): mean %.3f s, max %.3f s; loop "
               "thread mean %.3f s\n",
               SETTLE_MS, cpu / d->n_changes_done, cmax, lcpu / d->n_changes_done);
        printf("pushes per change: %.1f (streams %ld); CDS/LDS/RDS re-ACKed with a new version "
               "during changes: %d\n",
               (double)pushes / d->n_changes_done, c->clients, atomic_load(&b->other_updates));
        int64_t wsum = 0, wmax = 0;
        int wslow = 0;
        for (int k = 0; k < d->n_changes_done; k++) {
            int64_t w = d->ch[k].loop_wait;
            if (w < 0) continue;
            wsum += w;
            if (w > wmax) wmax = w;
            if (w > 100 * 1000000LL) wslow++;
        }
        printf("the loop thread waited for a CPU (run queue, other load on the machine): %.0f ms per "
               "change on average, %.0f ms at most; %d change(s) over 100 ms%s\n",
               ms(wsum) / d->n_changes_done, ms(wmax), wslow,
               wslow ? "  [the machine was busy: those changes are slowed by it]" : "");
    }
    printf("\nserver peak RSS (VmHWM): %.1f MiB before clients, %.1f MiB after the sync, %.1f MiB at "
           "the end  [target < 150 MB: %s]\n",
           (double)d->hwm_before / 1024.0, (double)d->hwm_sync / 1024.0, (double)d->hwm_end / 1024.0,
           (double)d->hwm_end * 1024.0 < 150e6 ? "MET" : "NOT MET");
    printf("server RSS now: %.1f MiB after the sync (anonymous %.1f, files %.1f), %.1f MiB at the end "
           "(anonymous %.1f, files %.1f)\n",
           (double)d->rss_sync / 1024.0, (double)d->anon_sync / 1024.0, (double)d->file_sync / 1024.0,
           (double)d->rss_end / 1024.0, (double)d->anon_end / 1024.0, (double)d->file_end / 1024.0);
    printf("server malloc (all arenas): in use %.1f / %.1f / %.1f MiB, held from the system %.1f / "
           "%.1f / %.1f MiB (before clients / after the sync / at the end)\n",
           d->heap_before, d->heap_sync, d->heap_end, d->held_before, d->held_sync, d->held_end);
    printf("server CPU in total (start to the end of the changes): %.2f s user + %.2f s system; "
           "loop thread %.2f s\n",
           tv_s(d->ru_end.ru_utime) - tv_s(d->ru_start.ru_utime),
           tv_s(d->ru_end.ru_stime) - tv_s(d->ru_start.ru_stime),
           (double)(d->loop_cpu_end - d->loop_cpu_start) / 1e9);
    const ads_stats *s = &b->final;
    printf("ads_stats: streams %" PRIu64 " open at shutdown, responses %" PRIu64 ", pushes %" PRIu64
           ", acks %" PRIu64 ", nacks %" PRIu64 ", stale %" PRIu64 ", aborted %" PRIu64 ", resolves %" PRIu64
           "\n",
           s->streams, s->responses, s->pushes, s->acks, s->nacks, s->stale, s->aborted, s->resolves);
    if (b->child_stats[0])
        printf("client process (resp/res/MiB per type CDS/EDS/LDS/RDS): %s\n", b->child_stats);
    printf("setup: %ld services x %ld endpoints (registry written in %.1f s), %ld clients on %ld "
           "connection(s), %ld online CPUs, RLIMIT_NOFILE %ld; machine load average %.2f at the "
           "start, %.2f at the end (this bench itself keeps ~1-1.5 CPUs busy)\n",
           c->services, c->endpoints, seed_s, c->clients, c->nch, ncpu, nofile, d->load_start,
           d->load_end);
}

/* ---- main --------------------------------------------------------------------------------- */

static bool load_cfg(cfg *c)
{
    c->services = env_long("BENCH_SERVICES", 1000, MAX_SERVICES);
    c->endpoints = env_long("BENCH_ENDPOINTS", 10, MAX_ENDPOINTS);
    c->clients = env_long("BENCH_CLIENTS", 1000, MAX_CLIENTS);
    c->changes = env_long("BENCH_CHANGES", 20, MAX_CHANGES);
    c->per_channel = env_long("BENCH_STREAMS_PER_CHANNEL", 1, MAX_CLIENTS);
    c->service_port = env_long("BENCH_SERVICE_PORT", 80, 65535);
    c->debounce_ms = getenv("BENCH_DEBOUNCE_MS") ? env_long("BENCH_DEBOUNCE_MS", 0, 60000) : 0;
    c->sync_s = env_long("BENCH_SYNC_TIMEOUT_S", 600, 86400);
    const char *vb = getenv("BENCH_VERBOSE");
    c->verbose = vb != NULL && strcmp(vb, "1") == 0;
    const char *dm = getenv("BENCH_DELTA");
    c->delta = dm != NULL && strcmp(dm, "1") == 0;
    if (dm != NULL && *dm != '\0' && strcmp(dm, "0") != 0 && strcmp(dm, "1") != 0) {
        fprintf(stderr, "bench_xds: BENCH_DELTA is 0 or 1\n");
        return false;
    }
    if (c->services < 1 || c->endpoints < 1 || c->clients < 1 || c->changes < 1 || c->per_channel < 1 ||
        c->service_port < 1 || c->debounce_ms < 0 || c->sync_s < 1) {
        fprintf(stderr,
                "bench_xds: BENCH_SERVICES 1..%d, BENCH_ENDPOINTS 1..%d, BENCH_CLIENTS 1..%d, "
                "BENCH_CHANGES 1..%d (and at most BENCH_SERVICES), BENCH_STREAMS_PER_CHANNEL >= 1, "
                "BENCH_SERVICE_PORT 1..65535, BENCH_DEBOUNCE_MS 1..60000, BENCH_SYNC_TIMEOUT_S >= 1\n",
                MAX_SERVICES, MAX_ENDPOINTS, MAX_CLIENTS, MAX_CHANGES);
        return false;
    }
    if (c->changes > c->services) {
        fprintf(stderr, "bench_xds: BENCH_CHANGES (%ld) must not exceed BENCH_SERVICES (%ld)\n",
                c->changes, c->services);
        return false;
    }
    c->nch = (c->clients + c->per_channel - 1) / c->per_channel;
    if (c->nch > MAX_CHANNELS) {
        fprintf(stderr, "bench_xds: at most %d client connections\n", MAX_CHANNELS);
        return false;
    }
    return true;
}

int main(void)
{
    cfg c;
    if (!load_cfg(&c)) return 2;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* both processes: one socket per connection, plus gRPC's, SQLite's, the pipes */
    long nofile = raise_nofile(c.nch + 256);
    if (nofile >= 0 && nofile < c.nch + 256) {
        /* the hard limit is too low for one connection per client: share them */
        if (nofile < 256 + 1) {
            fprintf(stderr, "bench_xds: RLIMIT_NOFILE %ld is too low\n", nofile);
            return 2;
        }
        long per = (c.clients + (nofile - 256) - 1) / (nofile - 256);
        printf("bench_xds: RLIMIT_NOFILE %ld (hard limit) is too low for %ld connections: %ld "
               "streams per connection instead of %ld\n", nofile, c.nch, per, c.per_channel);
        c.per_channel = per;
        c.nch = (c.clients + per - 1) / per;
    }
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LVL_WARN);

    int fail = 1;
    char dir[] = "/tmp/meshid-bench-xds-XXXXXX";
    char db[sizeof dir + 16], sock[sizeof dir + 32];
    int have_dir = 0, have_driver = 0, have_reader = 0;
    int ctl[2] = {-1, -1}, stp[2] = {-1, -1};
    double seed_s = 0;
    bench b = {.c = &c, .ctl_fd = -1, .status_fd = -1};
    driver d = {.b = &b, .admin_sock = sock};
    store *st = NULL;
    workpool *wp = NULL;
    rpc_server *admin_srv = NULL;
    pthread_t dtid, rtid;
    mid_result r;

    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "bench_xds: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    have_dir = 1;
    snprintf(db, sizeof db, "%s/meshid.db", dir);
    snprintf(sock, sizeof sock, "%s/admin.sock", dir);
    printf("bench_xds: %ld services x %ld endpoints, %ld %s ADS clients on %ld connection(s), %ld "
           "changes, %ld online CPUs, data dir %s\n",
           c.services, c.endpoints, c.clients, c.delta ? "delta" : "SotW", c.nch, c.changes, ncpu,
           dir);
    fflush(stdout);
    if (!seed_in_child(db, &c, &seed_s)) goto out;

    /* the client process: forked before this process has any gRPC or SQLite state */
    if (pipe2(ctl, O_CLOEXEC) != 0 || pipe2(stp, O_CLOEXEC) != 0) {
        fprintf(stderr, "bench_xds: pipe: %s\n", strerror(errno));
        goto out;
    }
    fflush(NULL);
    b.child = fork();
    if (b.child < 0) {
        fprintf(stderr, "bench_xds: fork: %s\n", strerror(errno));
        goto out;
    }
    if (b.child == 0) {
        close(ctl[1]);
        close(stp[0]);
        /* forked before this process had gRPC or SQLite state: exit() is
         * safe and lets sanitizer builds check the client for leaks */
        exit(client_main(&c, ctl[0], stp[1]));
    }
    close(ctl[0]);
    close(stp[1]);
    ctl[0] = stp[1] = -1;
    b.ctl_fd = ctl[1];
    b.status_fd = stp[0];
    ctl[1] = stp[0] = -1;
    if (pthread_create(&rtid, NULL, status_reader_main, &b) != 0) {
        fprintf(stderr, "bench_xds: cannot start the reader thread\n");
        goto out;
    }
    have_reader = 1;

    b.n_ss = (size_t)c.clients;
    b.ss = calloc(b.n_ss, sizeof *b.ss);
    d.ch = calloc((size_t)c.changes, sizeof *d.ch);
    d.lat = calloc((size_t)c.changes * (size_t)c.clients, sizeof *d.lat);
    if (b.ss == NULL || d.ch == NULL || d.lat == NULL) {
        fprintf(stderr, "bench_xds: out of memory\n");
        goto out;
    }

    /* the server: as `meshid server` runs the mesh plane */
    getrusage(RUSAGE_SELF, &d.ru_start);
    if (!mid_is_ok(r = store_open(db, NULL, &st))) {
        report_err("store_open", r);
        goto out;
    }
    if (!mid_is_ok(r = rpc_loop_new(&b.loop))) {
        report_err("rpc_loop_new", r);
        goto out;
    }
    if (!mid_is_ok(r = workpool_new(b.loop, 0, 0, &wp))) {
        report_err("workpool_new", r);
        goto out;
    }
    if (!mid_is_ok(r = rpc_server_new(b.loop, NULL, &admin_srv))) {
        report_err("rpc_server_new", r);
        goto out;
    }
    mesh_plane_opts mo = {.xds_listen = "127.0.0.1:0", .debounce_ms = c.debounce_ms};
    if (!mid_is_ok(r = mesh_plane_new(&mo, &b.mp))) {
        report_err("mesh_plane_new", r);
        goto out;
    }
    mesh_plane_env env = {.loop = b.loop, .admin_srv = admin_srv, .tls_srv = NULL, .st = st,
                          .wp = wp, .trust_domain = BENCH_TD};
    int64_t t_ps = now_ns();
    if (!mid_is_ok(r = mesh_plane_start(b.mp, &env))) {
        report_err("mesh_plane_start", r);
        goto out;
    }
    double start_ms = ms(now_ns() - t_ps);
    if (!mid_is_ok(r = rpc_server_add_unix(admin_srv, sock, 0600)) ||
        !mid_is_ok(r = rpc_server_start(admin_srv))) {
        report_err("admin socket", r);
        goto out;
    }
    b.ads = mesh_plane_ads(b.mp);
    ads_server_set_ack_hook(b.ads, on_ack, &b);
    if (!mid_is_ok(r = rpc_timer_add(b.loop, SAMPLE_SLOW_MS, sampler_tick, &b, &b.sampler))) {
        report_err("rpc_timer_add", r);
        goto out;
    }
    d.hwm_before = proc_status_kb("VmHWM");
    d.load_start = loadavg1();
    heap_use(&d.heap_before, &d.held_before);
    if (pthread_getcpuclockid(pthread_self(), &d.loop_clock) != 0) d.loop_clock = CLOCK_THREAD_CPUTIME_ID;
    d.loop_tid = (long)syscall(SYS_gettid);
    d.loop_cpu_start = thread_cpu_ns(d.loop_clock);
    printf("bench_xds: registry revision %" PRId64 " loaded, mesh plane started in %.0f ms, ADS on "
           "127.0.0.1:%d, peak RSS %.1f MiB before clients\n",
           mesh_plane_revision(b.mp), start_ms, mesh_plane_xds_port(b.mp), (double)d.hwm_before / 1024.0);
    fflush(stdout);

    char line[32];
    snprintf(line, sizeof line, "PORT %d\n", mesh_plane_xds_port(b.mp));
    d.t_start = now_ns();
    write_line(b.ctl_fd, line);
    if (pthread_create(&dtid, NULL, driver_main, &d) != 0) {
        fprintf(stderr, "bench_xds: cannot start the driver thread\n");
        goto out;
    }
    have_driver = 1;
    if (!mid_is_ok(r = rpc_loop_run(b.loop))) report_err("rpc_loop_run", r);
    pthread_join(dtid, NULL);
    have_driver = 0;
    if (b.final.nacks > 0 || b.final.aborted > 0 || atomic_load(&b.bad_versions) > 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "the ADS server counted %" PRIu64 " NACK(s) and ended %" PRIu64
                 " stream(s); %d ACK(s) carried a malformed version",
                 b.final.nacks, b.final.aborted, atomic_load(&b.bad_versions));
        set_fatal(&b, msg);
    }
    fail = !d.ok || fatal_now(&b);
    print_report(&d, &b, ncpu, nofile, seed_s);
    if (fail)
        fprintf(stderr, "bench_xds: FAILED%s%s\n", fatal_now(&b) ? ": " : "",
                fatal_now(&b) ? b.fatal_msg : "");
out:
    if (have_driver) pthread_join(dtid, NULL);
    if (b.child > 0) stop_child(&b); /* failed before the driver ran */
    if (b.ctl_fd >= 0) close(b.ctl_fd);
    if (have_reader) pthread_join(rtid, NULL);
    if (b.status_fd >= 0) close(b.status_fd);
    for (int i = 0; i < 2; i++) {
        if (ctl[i] >= 0) close(ctl[i]);
        if (stp[i] >= 0) close(stp[i]);
    }
    if (b.loop != NULL && !atomic_load(&b.stopping)) { /* failed before the loop ran */
        atomic_store(&b.stopping, true);
        mesh_plane_stop(b.mp);
    }
    workpool_free(wp);
    rpc_loop_free(b.loop);
    mesh_plane_free(b.mp);
    store_close(st);
    free(b.ss);
    free(d.ch);
    free(d.lat);
    if (have_dir) rm_tree(dir);
    return fail ? 1 : 0;
}
