/* The mesh plane: registry holder, reloads, watched directory, ADS wiring
 * (meshcore/mesh_plane.h). */
#include "meshcore/mesh_plane.h"

#include <dirent.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/log.h"
#include "lib/quote.h"
#include "lib/timeutil.h"
#include "meshcore/mesh_admin.h"
#include "meshcore/registry_store.h"
#include "meshcore/xds_gen.h"
#include "meshcore/yaml_load.h"
#include "storage/store_mesh.h"

#define WATCH_FILES_MAX 10000
#define REFUSE_SLOTS 64          /* distinct refused (peer, node, reason) remembered */
#define REFUSE_WINDOW_MS 60000   /* at most one audit event per refusal per window */
#define REFUSE_NODE_MAX 256      /* bytes of the node id kept in the event's details */

/* One refusal recently audited: identical ones within the window are counted
 * instead and the count goes into the next event that is written. */
typedef struct {
    unsigned char key[32]; /* SHA-256 of peer, node id and reason (no chosen collisions) */
    int64_t last_ms;
    uint32_t suppressed;
} refuse_slot;

struct mesh_plane {
    char *xds_listen;  /* NULL: off */
    char *watch_dir;   /* NULL: none */
    int64_t poll_ms, watch_ms, debounce_ms;

    mesh_plane_env env;
    char *trust_domain;
    bool started, stopping;

    mesh_admin *admin;
    ads_server *ads;
    ads_opts ads_o;
    xds_gen *gen;
    mesh_registry *reg; /* current, our reference */
    rpc_server *plain_srv;
    int xds_port;

    /* reloads: one load job at a time; `again` when a change came meanwhile */
    bool load_running, load_again;
    rpc_timer *poll_timer;

    /* watched directory */
    uint64_t watch_fp;
    bool watch_fp_valid, watch_running;
    rpc_timer *watch_timer;

    refuse_slot refused[REFUSE_SLOTS]; /* loop thread only */
};

/* ---- registry loads ------------------------------------------------------------ */

typedef struct {
    mesh_plane *mp;
    mesh_registry *reg;
    mid_err err;
    char msg[512];
} load_job;

static void load_work(void *arg)
{
    load_job *j = arg;
    mid_result r = mesh_registry_load(j->mp->env.st, j->mp->trust_domain, &j->reg);
    if (!mid_is_ok(r)) {
        j->err = r.err;
        snprintf(j->msg, sizeof j->msg, "%s", mid_errmsg());
    }
}

static void start_load(mesh_plane *mp);

/* Installs a newer registry and tells the ADS server. Takes `reg`. */
static void install(mesh_plane *mp, mesh_registry *reg)
{
    if (mp->reg && mesh_registry_revision(reg) <= mesh_registry_revision(mp->reg)) {
        mesh_registry_unref(reg);
        return;
    }
    LOG_INFO("mesh: registry revision %lld (%zu services, %zu policies)",
             (long long)mesh_registry_revision(reg), mesh_registry_n_services(reg),
             mesh_registry_n_policies(reg));
    mesh_registry_unref(mp->reg);
    mp->reg = reg;
    if (mp->ads) ads_server_notify(mp->ads);
}

static void load_done(void *arg, bool ran)
{
    load_job *j = arg;
    mesh_plane *mp = j->mp;
    mp->load_running = false;
    if (ran && j->err == MID_E_OK) install(mp, j->reg);
    else if (ran) LOG_WARN("mesh: registry reload failed (%s); serving revision %lld", j->msg,
                           (long long)(mp->reg ? mesh_registry_revision(mp->reg) : -1));
    else mesh_registry_unref(j->reg);
    free(j);
    if (mp->load_again && !mp->stopping) {
        mp->load_again = false;
        start_load(mp);
    }
}

static void start_load(mesh_plane *mp)
{
    if (mp->stopping) return;
    if (mp->load_running) {
        mp->load_again = true;
        return;
    }
    load_job *j = calloc(1, sizeof *j);
    if (!j) {
        LOG_ERROR("mesh: out of memory for a registry reload");
        return;
    }
    j->mp = mp;
    if (!mid_is_ok(workpool_submit(mp->env.wp, load_work, load_done, j))) {
        LOG_WARN("mesh: registry reload not queued (%s); retrying on the next poll", mid_errmsg());
        free(j);
        return;
    }
    mp->load_running = true;
}

/* mesh_admin's `changed`: an admin write committed revision `rev`. */
static void admin_changed(void *ctx, int64_t rev)
{
    mesh_plane *mp = ctx;
    if (mp->reg && rev <= mesh_registry_revision(mp->reg)) return;
    start_load(mp);
}

static void poll_tick(rpc_loop *loop, void *arg)
{
    mesh_plane *mp = arg;
    mp->poll_timer = NULL;
    if (mp->stopping) return;
    int64_t rev = 0;
    if (mid_is_ok(store_mesh_revision(mp->env.st, &rev))) {
        if (!mp->reg || rev != mesh_registry_revision(mp->reg)) start_load(mp);
    } else {
        LOG_WARN("mesh: reading the mesh revision failed: %s", mid_errmsg());
    }
    if (!mid_is_ok(rpc_timer_add(loop, mp->poll_ms, poll_tick, mp, &mp->poll_timer)))
        LOG_ERROR("mesh: cannot re-arm the store poll: %s", mid_errmsg());
}

/* ---- watched directory ------------------------------------------------------------ */

static bool is_yaml_name(const char *n)
{
    size_t len = strlen(n);
    if (n[0] == '.') return false;
    return (len > 5 && strcmp(n + len - 5, ".yaml") == 0) ||
           (len > 4 && strcmp(n + len - 4, ".yml") == 0);
}

/* A fingerprint of the directory's YAML files (names, sizes, mtimes),
 * independent of readdir order. MID_E_IO when it cannot be read. */
static mid_result watch_fingerprint(const char *dir, uint64_t *out)
{
    DIR *d = opendir(dir);
    MID_ENSURE(d != NULL, MID_E_IO, "cannot read %s: %s", dir, strerror(errno));
    uint64_t sum = 0, x = 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < WATCH_FILES_MAX) {
        if (!is_yaml_name(e->d_name)) continue;
        struct stat stt;
        if (fstatat(dirfd(d), e->d_name, &stt, 0) != 0) continue;
        /* FNV-1a of the entry, combined order-independently */
        uint64_t h = 1469598103934665603ULL;
        for (const char *c = e->d_name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        uint64_t parts[3] = {(uint64_t)stt.st_size, (uint64_t)stt.st_mtim.tv_sec,
                             (uint64_t)stt.st_mtim.tv_nsec};
        for (int i = 0; i < 3; i++) h = (h ^ parts[i]) * 1099511628211ULL;
        sum += h;
        x ^= h * 31;
        n++;
    }
    closedir(d);
    *out = sum ^ (x << 1) ^ n;
    return MID_OK_RESULT;
}

typedef struct {
    mesh_plane *mp;
    mid_err err;
    char msg[1024];
    size_t changes, items;
    int64_t revision;
} watch_job;

static void watch_work(void *arg)
{
    watch_job *j = arg;
    mesh_doc *docs = NULL;
    size_t n = 0;
    mesh_plan *plan = NULL;
    char actor[64 + 1024];
    snprintf(actor, sizeof actor, "watch:%s", j->mp->watch_dir);
    mid_result r = mesh_yaml_load_path(j->mp->watch_dir, &docs, &n);
    if (mid_is_ok(r)) r = mesh_admin_apply(j->mp->admin, docs, n, actor, false, &plan, &j->revision);
    if (mid_is_ok(r)) {
        j->changes = mesh_plan_n_changes(plan);
        j->items = mesh_plan_n_items(plan);
    } else {
        j->err = r.err;
        snprintf(j->msg, sizeof j->msg, "%s", mid_errmsg());
    }
    mesh_plan_free(plan);
    mesh_doc_list_free(docs, n);
}

static void watch_done(void *arg, bool ran)
{
    watch_job *j = arg;
    mesh_plane *mp = j->mp;
    mp->watch_running = false;
    if (ran && j->err == MID_E_OK) {
        LOG_INFO("mesh: applied %s: %zu resources, %zu changed (revision %lld)", mp->watch_dir,
                 j->items, j->changes, (long long)j->revision);
        if (j->changes > 0) start_load(mp);
    } else if (ran) {
        LOG_WARN("mesh: %s not applied (nothing changed): %s", mp->watch_dir, j->msg);
    }
    free(j);
}

static void watch_apply(mesh_plane *mp)
{
    watch_job *j = calloc(1, sizeof *j);
    if (!j) return;
    j->mp = mp;
    if (!mid_is_ok(workpool_submit(mp->env.wp, watch_work, watch_done, j))) {
        free(j);
        mp->watch_fp_valid = false; /* try again on the next scan */
        return;
    }
    mp->watch_running = true;
}

static void watch_tick(rpc_loop *loop, void *arg)
{
    mesh_plane *mp = arg;
    mp->watch_timer = NULL;
    if (mp->stopping) return;
    if (!mp->watch_running) {
        uint64_t fp = 0;
        if (mid_is_ok(watch_fingerprint(mp->watch_dir, &fp))) {
            if (!mp->watch_fp_valid || fp != mp->watch_fp) {
                mp->watch_fp = fp;
                mp->watch_fp_valid = true;
                watch_apply(mp);
            }
        } else {
            LOG_WARN("mesh: watched directory: %s", mid_errmsg());
        }
    }
    if (!mid_is_ok(rpc_timer_add(loop, mp->watch_ms, watch_tick, mp, &mp->watch_timer)))
        LOG_ERROR("mesh: cannot re-arm the directory watch: %s", mid_errmsg());
}

/* ---- refused xDS streams in the audit log ----------------------------------------- */

/* The refusal's identity: SHA-256 over peer, node id and reason, each with
 * its NUL, so that a node id chosen by a client cannot collide with another
 * proxy's refusal and hide it. 0 if OpenSSL fails. */
static int refuse_key(const char *peer, const char *node_id, const char *reason,
                      unsigned char key[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const char *parts[3] = {peer ? peer : "", node_id, reason};
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    for (size_t i = 0; ok && i < 3; i++)
        ok = EVP_DigestUpdate(md, parts[i], strlen(parts[i]) + 1) == 1;
    ok = ok && EVP_DigestFinal_ex(md, key, NULL) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

/* Whether a refusal with this key is audited now (loop thread). An
 * Envoy whose stream is refused reconnects every second or so: one event
 * per minute per (peer, node, reason) says the same, and *repeats is how
 * many identical refusals since the last event went unrecorded. */
static bool refuse_admit(mesh_plane *mp, const unsigned char key[32], int64_t now,
                         uint32_t *repeats)
{
    refuse_slot *lru = &mp->refused[0];
    for (size_t i = 0; i < REFUSE_SLOTS; i++) {
        refuse_slot *sl = &mp->refused[i];
        if (sl->last_ms != 0 && memcmp(sl->key, key, sizeof sl->key) == 0) {
            if (now - sl->last_ms < REFUSE_WINDOW_MS) {
                sl->suppressed++;
                return false;
            }
            *repeats = sl->suppressed;
            sl->suppressed = 0;
            sl->last_ms = now;
            return true;
        }
        if (sl->last_ms < lru->last_ms) lru = sl;
    }
    *lru = (refuse_slot){.last_ms = now};
    memcpy(lru->key, key, sizeof lru->key);
    *repeats = 0;
    return true;
}

typedef struct {
    store *st;
    char *actor, *spiffe_id, *reason, *details;
} refuse_job;

static void refuse_job_free(refuse_job *j)
{
    if (!j) return;
    free(j->actor);
    free(j->spiffe_id);
    free(j->reason);
    free(j->details);
    free(j);
}

static void refuse_work(void *arg)
{
    refuse_job *j = arg;
    store_audit_event ev = {.actor = j->actor, .event = "xds.refuse", .spiffe_id = j->spiffe_id,
                            .outcome = "denied", .reason = j->reason, .details = j->details};
    if (!mid_is_ok(store_audit_append(j->st, &ev, NULL)))
        LOG_ERROR("mesh: cannot audit a refused xDS stream: %s", mid_errmsg());
}

static void refuse_done(void *arg, bool ran)
{
    (void)ran;
    refuse_job_free(arg);
}

/* Audits a refused stream (event xds.refuse, outcome denied) on a worker:
 * the loop thread never waits for the disk. The subject is the peer's
 * SPIFFE ID (TLS), the details name the node. */
static void audit_refused_stream(mesh_plane *mp, const Envoy__Config__Core__V3__Node *node,
                                 const char *peer, const char *msg)
{
    char node_id[REFUSE_NODE_MAX * 4 + 8], reason[2048];
    unsigned char key[32];
    quote_printable(node ? node->id : NULL, REFUSE_NODE_MAX, node_id, sizeof node_id);
    quote_printable(msg, sizeof reason, reason, sizeof reason);
    uint32_t repeats = 0;
    if (refuse_key(peer, node_id, reason, key) && !refuse_admit(mp, key, time_now_ms(), &repeats))
        return;
    refuse_job *j = calloc(1, sizeof *j);
    json_t *d = json_pack("{s:s, s:I}", "node", node_id, "repeats", (json_int_t)repeats);
    if (j) {
        j->st = mp->env.st;
        size_t al = strlen("proxy:") + strlen(peer ? peer : "plaintext") + 1;
        j->actor = malloc(al);
        if (j->actor) snprintf(j->actor, al, "proxy:%s", peer ? peer : "plaintext");
        j->spiffe_id = peer ? strdup(peer) : NULL;
        j->reason = strdup(reason);
        j->details = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    }
    json_decref(d);
    if (!j || !j->actor || (peer && !j->spiffe_id) || !j->reason || !j->details) {
        LOG_ERROR("mesh: cannot audit a refused xDS stream: out of memory");
        refuse_job_free(j);
        return;
    }
    if (!mid_is_ok(workpool_submit(mp->env.wp, refuse_work, refuse_done, j))) {
        LOG_ERROR("mesh: cannot audit a refused xDS stream: %s", mid_errmsg());
        refuse_job_free(j);
    }
}

/* ---- ADS resolve -------------------------------------------------------------------- */

static mid_result resolve(void *ctx, const Envoy__Config__Core__V3__Node *node,
                          const char *peer_spiffe_id, xds_snapshot **out)
{
    mesh_plane *mp = ctx;
    MID_ENSURE(mp->reg != NULL, MID_E_STATE, "the registry is not loaded yet");
    xds_proxy p;
    mid_result r = xds_proxy_from_node(node, peer_spiffe_id, &p);
    if (mid_is_ok(r)) {
        r = xds_gen_snapshot(mp->gen, mp->reg, &p, out);
        xds_proxy_clear(&p);
    }
    /* the proxy's own doing (no or a conflicting identity, bad node data,
     * an identity without a workload) is a refusal worth a line in the
     * audit log; the server's own failures are logged by ads.c */
    if (r.err == MID_E_DENIED || r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE ||
        r.err == MID_E_NOT_FOUND) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mid_errmsg());
        audit_refused_stream(mp, node, peer_spiffe_id, msg);
        return mid_fail(r.err, __FILE__, __LINE__, "%s", msg); /* the caller's message */
    }
    return r;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

mid_result mesh_plane_new(const mesh_plane_opts *o, mesh_plane **out)
{
    MID_ENSURE(o != NULL && out != NULL, MID_E_INVALID, "mesh plane: no options");
    MID_ENSURE(o->poll_ms >= 0 && o->watch_ms >= 0 && o->debounce_ms >= 0, MID_E_INVALID,
               "mesh plane: negative interval");
    mesh_plane *mp = calloc(1, sizeof *mp);
    MID_ENSURE_MEM(mp);
    const char *listen = o->xds_listen ? o->xds_listen : MESH_XDS_PLAINTEXT_DEFAULT;
    mp->xds_listen = strcmp(listen, "off") == 0 ? NULL : strdup(listen);
    mp->watch_dir = dup_or_null(o->watch_dir);
    mp->poll_ms = o->poll_ms ? o->poll_ms : MESH_POLL_MS_DEFAULT;
    mp->watch_ms = o->watch_ms ? o->watch_ms : MESH_WATCH_MS_DEFAULT;
    mp->debounce_ms = o->debounce_ms;
    mp->xds_port = 0;
    if ((strcmp(listen, "off") != 0 && !mp->xds_listen) || (o->watch_dir && !mp->watch_dir)) {
        mesh_plane_free(mp);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    *out = mp;
    return MID_OK_RESULT;
}

mid_result mesh_plane_start(mesh_plane *mp, const mesh_plane_env *env)
{
    MID_ENSURE(mp && env && env->loop && env->admin_srv && env->st && env->wp && env->trust_domain,
               MID_E_INVALID, "mesh plane: incomplete environment");
    MID_ENSURE(!mp->started, MID_E_STATE, "mesh plane already started");
    mp->env = *env;
    mp->trust_domain = strdup(env->trust_domain);
    MID_ENSURE_MEM(mp->trust_domain);
    mp->env.trust_domain = mp->trust_domain;
    mp->started = true;

    MID_GUARD(mesh_registry_load(env->st, mp->trust_domain, &mp->reg));
    MID_GUARD(xds_gen_new(&mp->gen));

    mesh_admin_opts ao = {.st = env->st, .wp = env->wp, .trust_domain = mp->trust_domain,
                          .changed = admin_changed, .changed_ctx = mp};
    MID_GUARD(mesh_admin_new(&ao, &mp->admin));
    MID_GUARD(mesh_admin_register(mp->admin, env->admin_srv));

    mp->ads_o = (ads_opts){.resolve = resolve, .ctx = mp, .debounce_ms = mp->debounce_ms,
                           .control_plane_id = "meshid"};
    MID_GUARD(ads_server_new(env->loop, &mp->ads_o, &mp->ads));
    if (env->tls_srv) MID_GUARD(ads_server_register(mp->ads, env->tls_srv));
    if (mp->xds_listen) {
        rpc_server_opts so = {.max_msg_bytes = MESH_XDS_MAX_MSG,
                              .max_recv_bytes = MESH_XDS_MAX_RECV,
                              .memory_quota_bytes = MESH_XDS_MEMORY_QUOTA};
        MID_GUARD(rpc_server_new(env->loop, &so, &mp->plain_srv));
        MID_GUARD(ads_server_register(mp->ads, mp->plain_srv));
        MID_GUARD(rpc_server_add_tcp(mp->plain_srv, mp->xds_listen, NULL, &mp->xds_port));
        MID_GUARD(rpc_server_start(mp->plain_srv));
    }
    MID_GUARD(rpc_timer_add(env->loop, mp->poll_ms, poll_tick, mp, &mp->poll_timer));
    if (mp->watch_dir) {
        struct stat stt;
        MID_ENSURE(stat(mp->watch_dir, &stt) == 0 && S_ISDIR(stt.st_mode), MID_E_NOT_FOUND,
                   "--watch-dir %s is not a directory", mp->watch_dir);
        MID_GUARD(rpc_timer_add(env->loop, 0, watch_tick, mp, &mp->watch_timer));
    }
    return MID_OK_RESULT;
}

int mesh_plane_xds_port(const mesh_plane *mp) { return mp ? mp->xds_port : 0; }

ads_server *mesh_plane_ads(mesh_plane *mp) { return mp ? mp->ads : NULL; }

int64_t mesh_plane_revision(const mesh_plane *mp)
{
    return mp && mp->reg ? mesh_registry_revision(mp->reg) : -1;
}

void mesh_plane_stop(mesh_plane *mp)
{
    if (!mp || !mp->started || mp->stopping) return;
    mp->stopping = true;
    if (mp->poll_timer) rpc_timer_cancel(mp->env.loop, mp->poll_timer);
    if (mp->watch_timer) rpc_timer_cancel(mp->env.loop, mp->watch_timer);
    mp->poll_timer = mp->watch_timer = NULL;
    if (mp->ads) ads_server_shutdown(mp->ads);
    mesh_admin_shutdown(mp->admin);
}

void mesh_plane_free(mesh_plane *mp)
{
    if (!mp) return;
    ads_server_free(mp->ads);
    mesh_admin_free(mp->admin);
    xds_gen_free(mp->gen);
    mesh_registry_unref(mp->reg);
    free(mp->trust_domain);
    free(mp->xds_listen);
    free(mp->watch_dir);
    free(mp);
}
