/* The server process composition. See sds/server.h and docs/server.md. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "ca/ca.h"
#include "ca/rotation.h"
#include "identity/spiffe_id.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/sigstop.h"
#include "lib/timeutil.h"
#include "lib/workpool.h"
#include "sds/admin_service.h"
#include "sds/node_service.h"
#include "sds/server.h"
#include "sds/server_int.h"
#include "storage/store.h"

#define PATH_CAP 4096
#define TLS_RETRY_FLOOR_MS 100 /* retries of a failed renewal, at least this far apart */

/* One root's gate answer, computed on the loop for a rotation tick job. */
typedef struct {
    char id[CA_AUTHORITY_ID_MAX];
    bool ok;
    char msg[512];
} gate_answer;

struct server {
    rpc_loop *loop;
    store *st;
    ca *ca; /* until node_service_new takes it; then node_service_ca(ns) */
    workpool *wp;
    node_service *ns;
    admin_service *as;
    rpc_server *node_srv, *admin_srv;
    int port;
    char listen[256];
    char admin_path[PATH_CAP];
    char td[SPIFFE_TD_MAX + 1];
    char spiffe_id[SPIFFE_ID_MAX + 1];
    int64_t svid_ttl;
    /* the TLS material in use */
    char *chain_pem, *key_pem, *ca_pem;
    int64_t svid_got_ms;    /* when the SVID in use was taken into use */
    int64_t svid_not_after; /* its notAfter (s) */
    rpc_timer *tls_timer;   /* armed by tls_arm only */
    bool reissuing;         /* a job is renewing the server SVID */
    bool tls_renew_now;     /* renew without waiting for half life (new signer, retry) */
    int tls_fails;          /* renewals failed in a row */
    bool stopped;
    /* rotation */
    char data_dir[PATH_CAP];
    bool auto_rotate, auto_rotate_root;
    int64_t retire_grace;
    int64_t rotation_ms;
    rpc_timer *rot_timer;
    bool rotating;  /* a rotation job is running */
    bool reopening; /* a job is opening the CA for a new signer */
    /* extensions (server_opts.ext); the first n_ext_started were started */
    server_ext ext[SERVER_EXT_MAX];
    size_t n_ext, n_ext_started;
};

/* ---- the server's own SVID ---------------------------------------------------- */

typedef struct {
    server *s;
    node_ca_pin *pin; /* released by reissue_done */
    ca_svid *svid;
    char *cross; /* the signing root's cross-certificates, see issue_svid */
    mid_err err;
    char msg[256];
} reissue_job;

/* Also returns (*cross, malloc()ed) the cross-certificates of the signing
 * root by the previous root: the server sends them after its chain, so an
 * agent that missed a root rotation and trusts only the previous root still
 * verifies the server and learns the new bundle (docs/ca.md). */
static mid_result issue_svid(server *s, ca *c, ca_svid **out, char **cross)
{
    static const char *const dns[] = {"localhost"};
    ca_issue_req req = {.spiffe_id = s->spiffe_id, .key_type = CA_KEY_EC_P256, .ttl = s->svid_ttl,
                        .dns = dns, .n_dns = 1, .actor = "system:server"};
    *cross = strdup(ca_root_cross_pem(c));
    MID_ENSURE(*cross != NULL, MID_E_NOMEM, "out of memory");
    mid_result r = ca_issue(c, &req, out);
    if (!mid_is_ok(r)) {
        free(*cross);
        *cross = NULL;
    }
    return r;
}

static void free_pem(char **p)
{
    if (*p) OPENSSL_clear_free(*p, strlen(*p));
    *p = NULL;
}

/* Takes the new SVID's chain followed by `cross` (see issue_svid) and its key
 * (and the current bundle) into use for new handshakes. */
static mid_result adopt_svid(server *s, ca_svid *svid, const char *cross, bool apply)
{
    const char *sc = ca_svid_chain_pem(svid);
    if (cross == NULL) cross = "";
    size_t sl = strlen(sc), xl = strlen(cross);
    char *chain = malloc(sl + xl + 1), *key = strdup(ca_svid_key_pem(svid));
    if (chain) {
        memcpy(chain, sc, sl);
        memcpy(chain + sl, cross, xl + 1);
    }
    const char *bundle = node_service_bundle_pem(s->ns, NULL);
    char *cap = strdup(bundle ? bundle : "");
    if (!chain || !key || !cap) {
        free(chain);
        free_pem(&key);
        free(cap);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    if (apply) {
        rpc_tls tls = {.ca_pem = cap, .cert_pem = chain, .key_pem = key};
        mid_result r = rpc_server_set_tls(s->node_srv, &tls);
        if (!mid_is_ok(r)) {
            free(chain);
            free_pem(&key);
            free(cap);
            return r;
        }
    }
    free(s->chain_pem);
    free_pem(&s->key_pem);
    free(s->ca_pem);
    s->chain_pem = chain;
    s->key_pem = key;
    s->ca_pem = cap;
    s->svid_got_ms = time_now_ms();
    s->svid_not_after = ca_svid_not_after(svid);
    return mid_ok();
}

int64_t server_tls_renew_at_ms(int64_t got_ms, int64_t not_after_ms)
{
    if (not_after_ms <= got_ms) return got_ms;
    return got_ms + (not_after_ms - got_ms) / 2;
}

int64_t server_tls_next_ms(int64_t now_ms, int64_t got_ms, int64_t not_after_ms, int fails)
{
    int64_t d;
    if (fails > 0) {
        d = SERVER_TLS_RETRY_MS;
        for (int i = 1; i < fails && d < SERVER_TLS_CHECK_MS; i++) d *= 2;
        int64_t left = not_after_ms - now_ms;
        if (left > 0 && d > left / 2) d = left / 2;
        if (d < TLS_RETRY_FLOOR_MS) d = TLS_RETRY_FLOOR_MS;
    } else {
        d = server_tls_renew_at_ms(got_ms, not_after_ms) - now_ms;
        if (d < 0) d = 0;
    }
    return d > SERVER_TLS_CHECK_MS ? SERVER_TLS_CHECK_MS : d;
}

static void tls_tick(rpc_loop *loop, void *arg);

/* (Re-)arms the TLS timer for the SVID in use: at its renewal point (or
 * the retry after a failed renewal), at most SERVER_TLS_CHECK_MS away for
 * the bundle. While a renewal job runs only the bundle is due: reissue_done
 * re-arms from the new SVID. Every path that changes the SVID, the
 * failure count or tls_renew_now ends here, so the timer always matches the
 * SVID actually served: a fixed SERVER_TLS_CHECK_MS after a renewal would
 * let an SVID shorter than that expire while still served. */
static void tls_arm(server *s)
{
    if (s->tls_timer) rpc_timer_cancel(s->loop, s->tls_timer);
    s->tls_timer = NULL;
    if (s->stopped) return;
    int64_t d = SERVER_TLS_CHECK_MS;
    if (!s->reissuing) {
        d = server_tls_next_ms(time_now_ms(), s->svid_got_ms, s->svid_not_after * 1000,
                               s->tls_fails);
        if (s->tls_renew_now && s->tls_fails == 0) d = 0;
    }
    if (!mid_is_ok(rpc_timer_add(s->loop, d, tls_tick, s, &s->tls_timer))) {
        LOG_ERROR("server: cannot arm the TLS timer: %s", mid_errmsg());
        s->tls_timer = NULL;
    }
}

/* A renewal could not be started or failed: retry with backoff (tls_arm). */
static void tls_failed(server *s)
{
    s->tls_fails++;
    s->tls_renew_now = true;
}

static void reissue_work(void *arg)
{
    reissue_job *j = arg;
    mid_result r = issue_svid(j->s, node_ca_pin_ca(j->pin), &j->svid, &j->cross);
    j->err = r.err;
    if (!mid_is_ok(r)) snprintf(j->msg, sizeof j->msg, "%s", mid_errmsg());
}

static void reissue_done(void *arg, bool ran)
{
    reissue_job *j = arg;
    server *s = j->s;
    char signer[CA_AUTHORITY_ID_MAX];
    snprintf(signer, sizeof signer, "%s", ca_signer_id(node_ca_pin_ca(j->pin)));
    s->reissuing = false;
    node_ca_pin_release(j->pin);
    if (ran && j->err == MID_E_OK && !s->stopped) {
        if (mid_is_ok(adopt_svid(s, j->svid, j->cross, true))) {
            char na[TIME_RFC3339_LEN], at[TIME_RFC3339_LEN];
            int64_t at_ms = server_tls_renew_at_ms(s->svid_got_ms, s->svid_not_after * 1000);
            time_format_rfc3339(s->svid_not_after, na);
            time_format_rfc3339(at_ms / 1000, at);
            LOG_INFO("server: TLS SVID renewed by %.16s, valid until %s, renews at %s", signer, na,
                     at);
            s->tls_fails = 0;
        } else {
            LOG_ERROR("server: cannot use the renewed TLS SVID: %s", mid_errmsg());
            tls_failed(s);
        }
    } else if (!s->stopped) {
        LOG_ERROR("server: cannot renew the TLS SVID: %s", ran ? j->msg : "job refused");
        tls_failed(s);
    }
    ca_svid_free(j->svid);
    free(j->cross);
    free(j);
    /* from the new SVID; at once if the signer changed while the job ran */
    tls_arm(s);
}

/* Starts a renewal job with the CA handle in use now. */
static void tls_renew(server *s)
{
    reissue_job *j = calloc(1, sizeof *j);
    if (!j) {
        LOG_ERROR("server: cannot renew the TLS SVID: out of memory");
        tls_failed(s);
        return;
    }
    j->s = s;
    j->pin = node_service_ca_pin(s->ns);
    if (!mid_is_ok(workpool_submit(s->wp, reissue_work, reissue_done, j))) {
        LOG_ERROR("server: cannot renew the TLS SVID: %s", mid_errmsg());
        node_ca_pin_release(j->pin);
        free(j);
        tls_failed(s);
        return;
    }
    s->reissuing = true;
    s->tls_renew_now = false;
}

/* Renews the SVID past half its life (or at once, see tls_renew_now);
 * follows trust bundle changes. */
static void tls_tick(rpc_loop *loop, void *arg)
{
    (void)loop;
    server *s = arg;
    s->tls_timer = NULL;
    if (s->stopped) return;
    int64_t renew_at = server_tls_renew_at_ms(s->svid_got_ms, s->svid_not_after * 1000);
    if ((s->tls_renew_now || time_now_ms() >= renew_at) && !s->reissuing) tls_renew(s);
    const char *bundle = node_service_bundle_pem(s->ns, NULL);
    if (bundle && s->ca_pem && strcmp(bundle, s->ca_pem) != 0) {
        char *cap = strdup(bundle);
        rpc_tls tls = {.ca_pem = cap, .cert_pem = s->chain_pem, .key_pem = s->key_pem};
        if (cap && mid_is_ok(rpc_server_set_tls(s->node_srv, &tls))) {
            free(s->ca_pem);
            s->ca_pem = cap;
            LOG_INFO("server: trust bundle changed; new handshakes use it");
        } else {
            free(cap);
        }
    }
    tls_arm(s);
}

/* ---- following the active intermediate ---------------------------------------- */

typedef struct {
    server *s;
    ca *c;
    mid_err err;
    char msg[256];
} reopen_job;

static void reopen_work(void *arg)
{
    reopen_job *j = arg;
    mid_result r = ca_open(j->s->st, j->s->data_dir, &j->c);
    j->err = r.err;
    if (!mid_is_ok(r)) snprintf(j->msg, sizeof j->msg, "%s", mid_errmsg());
}

static void reopen_done(void *arg, bool ran)
{
    reopen_job *j = arg;
    server *s = j->s;
    s->reopening = false;
    if (ran && j->err == MID_E_OK && !s->stopped) {
        const char *was = ca_signer_id(node_service_ca(s->ns));
        if (strcmp(was, ca_signer_id(j->c)) == 0) {
            ca_close(j->c);
        } else {
            LOG_INFO("server: signing authority is now %.16s (was %.16s)", ca_signer_id(j->c),
                     was);
            if (!mid_is_ok(node_service_set_ca(s->ns, j->c)))
                LOG_ERROR("server: cannot switch the CA handle: %s", mid_errmsg());
            /* the server's own SVID follows at once: peers see the new chain
             * (a renewal running now with the old handle is followed by
             * another one, see reissue_done) */
            s->tls_fails = 0;
            s->tls_renew_now = true;
            tls_arm(s);
        }
    } else {
        if (ran && j->err != MID_E_OK) LOG_ERROR("server: cannot reopen the CA: %s", j->msg);
        ca_close(j->c);
    }
    free(j);
}

/* Reopens the CA when the store's active intermediate is not the one the
 * handle signs with (a rotation by this or another process). Loop thread. */
static void check_signer(server *s)
{
    if (s->stopped || s->reopening) return;
    store_authority_row *rows = NULL;
    size_t n = 0;
    if (!mid_is_ok(store_authority_list(s->st, &rows, &n))) {
        LOG_WARN("server: cannot read the authorities: %s", mid_errmsg());
        return;
    }
    const char *want = NULL;
    for (size_t i = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        if (strcmp(a->kind, "intermediate") == 0 && strcmp(a->state, "active") == 0 &&
            a->key_ref != NULL && a->key_ref[0] != '\0')
            want = a->id; /* oldest first: the newest wins, as ca_open picks */
    }
    bool differs = want != NULL && strcmp(want, ca_signer_id(node_service_ca(s->ns))) != 0;
    store_authority_list_free(rows, n);
    if (!differs) return;
    reopen_job *j = calloc(1, sizeof *j);
    if (!j) return;
    j->s = s;
    if (mid_is_ok(workpool_submit(s->wp, reopen_work, reopen_done, j)))
        s->reopening = true;
    else
        free(j);
}

static void on_poll(void *ctx) { check_signer(ctx); }

static void on_authorities_changed(void *ctx)
{
    server *s = ctx;
    node_service_refresh(s->ns);
    check_signer(s);
}

/* ---- the rotation timer ------------------------------------------------------------ */

typedef struct {
    server *s;
    gate_answer *answers;
    size_t n;
    ca_activate_gate gate;
    mid_err err;
    char msg[512];
} rotation_job;

/* The gate as the loop saw it just before the job started (a worker cannot
 * read the node service's state). */
static mid_result snapshot_gate(void *ctx, const char *root_id, const char *intermediate_id)
{
    (void)intermediate_id;
    const rotation_job *j = ctx;
    for (size_t i = 0; i < j->n; i++) {
        if (strcmp(j->answers[i].id, root_id) != 0) continue;
        if (j->answers[i].ok) return mid_ok();
        MID_BAIL(MID_E_STATE, "%s", j->answers[i].msg);
    }
    MID_BAIL(MID_E_STATE, "root %.16s is not in the served trust bundle yet", root_id);
}

static void rotation_work(void *arg)
{
    rotation_job *j = arg;
    server *s = j->s;
    mid_result r;
    if (s->auto_rotate) {
        ca_rotation_policy p = {.rotate_root = s->auto_rotate_root, .gate = &j->gate,
                                .retire_grace = s->retire_grace};
        ca_tick_action act = CA_TICK_NOTHING;
        r = ca_rotation_tick(s->st, s->data_dir, time_now(), &p, "system:rotation", &act);
    } else {
        r = ca_retire_expired_grace(s->st, time_now(), s->retire_grace, "system:rotation", NULL);
    }
    j->err = r.err;
    if (!mid_is_ok(r)) snprintf(j->msg, sizeof j->msg, "%s", mid_errmsg());
}

static void rotation_tick(rpc_loop *loop, void *arg);

static void rotation_done(void *arg, bool ran)
{
    rotation_job *j = arg;
    server *s = j->s;
    s->rotating = false;
    if (ran && j->err != MID_E_OK) LOG_WARN("server: rotation: %s", j->msg);
    free(j->answers);
    free(j);
    if (!s->stopped) on_authorities_changed(s);
}

/* Answers the gate for every root served now. */
static mid_result gate_snapshot(server *s, rotation_job *j)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    MID_GUARD(store_authority_list(s->st, &rows, &n));
    j->answers = calloc(n ? n : 1, sizeof *j->answers);
    if (!j->answers) {
        store_authority_list_free(rows, n);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].a.kind, "root") != 0) continue;
        gate_answer *g = &j->answers[j->n++];
        snprintf(g->id, sizeof g->id, "%s", rows[i].a.id);
        mid_result r = node_service_gate_check(s->ns, g->id, NULL, 0, NULL);
        g->ok = mid_is_ok(r);
        if (!g->ok) snprintf(g->msg, sizeof g->msg, "%s", mid_errmsg());
    }
    store_authority_list_free(rows, n);
    return mid_ok();
}

static void rotation_tick(rpc_loop *loop, void *arg)
{
    server *s = arg;
    s->rot_timer = NULL;
    if (s->stopped) return;
    if (!s->rotating) {
        rotation_job *j = calloc(1, sizeof *j);
        if (j) {
            j->s = s;
            j->gate = (ca_activate_gate){.ready = snapshot_gate, .ctx = j};
            mid_result r = s->auto_rotate ? gate_snapshot(s, j) : mid_ok();
            if (mid_is_ok(r) && mid_is_ok(workpool_submit(s->wp, rotation_work, rotation_done, j))) {
                s->rotating = true;
            } else {
                free(j->answers);
                free(j);
            }
        }
    }
    if (!mid_is_ok(rpc_timer_add(loop, s->rotation_ms, rotation_tick, s, &s->rot_timer)))
        LOG_ERROR("server: cannot re-arm the rotation timer: %s", mid_errmsg());
}

/* ---- start / stop ------------------------------------------------------------- */

/* Starts each extension in order; on a failure the ones started are undone
 * by server_stop / server_free (n_ext_started). */
static mid_result start_extensions(server *s)
{
    server_ext_env env = {.srv = s, .loop = s->loop, .admin_srv = s->admin_srv,
                          .tls_srv = s->node_srv, .st = s->st, .wp = s->wp,
                          .trust_domain = s->td, .data_dir = s->data_dir};
    for (size_t i = 0; i < s->n_ext; i++) {
        const server_ext *e = &s->ext[i];
        mid_result r = e->start(e->ctx, &env);
        if (!mid_is_ok(r)) {
            mid_err err = r.err;
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", mid_errmsg());
            MID_BAIL(err, "%s: %s", e->name ? e->name : "server extension", msg);
        }
        s->n_ext_started = i + 1;
    }
    return mid_ok();
}

static mid_result open_state(server *s, const server_opts *o)
{
    char db[PATH_CAP];
    MID_GUARD(fs_join(db, sizeof db, o->data_dir, "meshid.db"));
    MID_ENSURE(fs_exists(db), MID_E_NOT_FOUND,
               "no trust domain in %s: run 'meshid ca init --trust-domain TD --data-dir %s' first",
               o->data_dir, o->data_dir);
    MID_GUARD(store_open(db, NULL, &s->st));
    mid_result r = ca_open(s->st, o->data_dir, &s->ca);
    if (r.err == MID_E_NOT_FOUND)
        MID_BAIL(MID_E_NOT_FOUND,
                 "no trust domain in %s: run 'meshid ca init --trust-domain TD --data-dir %s' first",
                 o->data_dir, o->data_dir);
    return r;
}

mid_result server_start(const server_opts *o, rpc_loop *loop, server **out)
{
    *out = NULL;
    MID_ENSURE(o && o->data_dir && loop, MID_E_INVALID, "server needs a data directory and a loop");
    MID_ENSURE(o->agent_svid_ttl >= 0 && o->server_svid_ttl >= 0, MID_E_INVALID, "negative TTL");
    MID_ENSURE(o->retire_grace >= 0 && o->rotation_check_ms >= 0, MID_E_INVALID,
               "negative retire grace or rotation interval");
    MID_ENSURE(strlen(o->data_dir) < PATH_CAP, MID_E_TOO_LARGE, "data directory path too long");
    MID_ENSURE(o->n_ext <= SERVER_EXT_MAX && (o->n_ext == 0 || o->ext != NULL), MID_E_INVALID,
               "at most %d server extensions", SERVER_EXT_MAX);
    for (size_t i = 0; i < o->n_ext; i++)
        MID_ENSURE(o->ext[i].start != NULL, MID_E_INVALID, "server extension %zu has no start", i);
    server *s = calloc(1, sizeof *s);
    MID_ENSURE_MEM(s);
    for (size_t i = 0; i < o->n_ext; i++) s->ext[i] = o->ext[i];
    s->n_ext = o->n_ext;
    s->loop = loop;
    s->svid_ttl = o->server_svid_ttl;
    snprintf(s->data_dir, sizeof s->data_dir, "%s", o->data_dir);
    s->auto_rotate = o->auto_rotate || o->auto_rotate_root;
    s->auto_rotate_root = o->auto_rotate_root;
    s->retire_grace = o->retire_grace > 0 ? o->retire_grace : CA_RETIRE_GRACE;
    s->rotation_ms = o->rotation_check_ms > 0 ? o->rotation_check_ms : SERVER_ROTATION_CHECK_MS;
    /* A short grace (tests, small meshes) is pointless if retirement is only
     * looked at once a minute: check at least once per grace period. */
    if (o->rotation_check_ms == 0 && s->retire_grace * 1000 < s->rotation_ms)
        s->rotation_ms = s->retire_grace < 1 ? 1000 : s->retire_grace * 1000;
    mid_result r = MID_OK_RESULT;
    ca_svid *svid = NULL;
    char *cross = NULL;
    snprintf(s->listen, sizeof s->listen, "%s", o->listen ? o->listen : SERVER_LISTEN_DEFAULT);
    MID_TRY(r, open_state(s, o)); /* first: nothing is created without a trust domain */
    if (o->admin_sock) {
        MID_CHECK(r, strlen(o->admin_sock) < sizeof s->admin_path, MID_E_TOO_LARGE,
                  "admin socket path too long");
        snprintf(s->admin_path, sizeof s->admin_path, "%s", o->admin_sock);
    } else {
        char run[PATH_CAP];
        MID_TRY(r, fs_join(run, sizeof run, o->data_dir, "run"));
        MID_TRY(r, fs_mkdir_p(run, 0755));
        MID_TRY(r, fs_join(s->admin_path, sizeof s->admin_path, run, "admin.sock"));
    }

    snprintf(s->td, sizeof s->td, "%s", ca_trust_domain(s->ca));
    snprintf(s->spiffe_id, sizeof s->spiffe_id, "spiffe://%s%s", s->td, SERVER_SPIFFE_PATH);
    unsigned workers = o->workers;
    if (workers == 0) {
        unsigned cores = workpool_online_cores();
        workers = cores > WORKPOOL_THREADS_MAX / SERVER_WORKERS_PER_CORE
                      ? WORKPOOL_THREADS_MAX
                      : cores * SERVER_WORKERS_PER_CORE;
    }
    MID_TRY(r, workpool_new(loop, workers, 0, &s->wp));

    node_service_opts no = {.st = s->st, .ca = s->ca, .wp = s->wp, .loop = loop,
                            .agent_svid_ttl = o->agent_svid_ttl, .sync_poll_ms = o->sync_poll_ms,
                            .on_poll = on_poll, .on_poll_ctx = s};
    MID_TRY(r, node_service_new(&no, &s->ns));
    s->ca = NULL; /* the node service owns it now */
    admin_service_opts ao = {.st = s->st, .wp = s->wp, .trust_domain = s->td, .node = s->ns,
                             .loop = loop, .data_dir = s->data_dir,
                             .authorities_changed = on_authorities_changed,
                             .authorities_changed_ctx = s};
    MID_TRY(r, admin_service_new(&ao, &s->as));

    /* The server's own SVID; issued here, before the loop runs. */
    MID_TRY(r, issue_svid(s, node_service_ca(s->ns), &svid, &cross));
    MID_TRY(r, adopt_svid(s, svid, cross, false));

    /* Admin socket first: it refuses to start when another server answers. */
    MID_TRY(r, rpc_server_new(loop, NULL, &s->admin_srv));
    MID_TRY(r, admin_service_register(s->as, s->admin_srv));
    MID_TRY(r, rpc_server_add_unix(s->admin_srv, s->admin_path, 0600));

    MID_TRY(r, rpc_server_new(loop, NULL, &s->node_srv));
    MID_TRY(r, node_service_register(s->ns, s->node_srv));
    rpc_tls tls = {.ca_pem = s->ca_pem, .cert_pem = s->chain_pem, .key_pem = s->key_pem,
                   .client_cert_optional = true};
    /* extensions register their methods before the TCP port exists (lib/rpc.h) */
    MID_TRY(r, start_extensions(s));
    MID_TRY(r, rpc_server_add_tcp(s->node_srv, s->listen, &tls, &s->port));
    MID_TRY(r, rpc_server_start(s->admin_srv));
    MID_TRY(r, rpc_server_start(s->node_srv));
    MID_TRY(r, rpc_timer_add(loop,
                             server_tls_next_ms(time_now_ms(), s->svid_got_ms,
                                                s->svid_not_after * 1000, 0),
                             tls_tick, s, &s->tls_timer));
    MID_TRY(r, rpc_timer_add(loop, s->rotation_ms, rotation_tick, s, &s->rot_timer));
    *out = s;
out:
    ca_svid_free(svid);
    free(cross);
    if (!mid_is_ok(r)) {
        /* keep the error message through the cleanup */
        mid_err err = r.err;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mid_errmsg());
        server_stop(s);
        server_free(s);
        r = mid_fail(err, __FILE__, __LINE__, "%s", msg);
    }
    return r;
}

int server_port(const server *s) { return s->port; }

unsigned server_workers(const server *s) { return workpool_threads(s->wp); }
const char *server_admin_path(const server *s) { return s->admin_path; }
const char *server_trust_domain(const server *s) { return s->td; }
const char *server_bundle_pem(const server *s) { return node_service_bundle_pem(s->ns, NULL); }

void server_stop(server *s)
{
    if (!s || s->stopped) return;
    s->stopped = true;
    if (s->tls_timer) rpc_timer_cancel(s->loop, s->tls_timer);
    s->tls_timer = NULL;
    if (s->rot_timer) rpc_timer_cancel(s->loop, s->rot_timer);
    s->rot_timer = NULL;
    for (size_t i = s->n_ext_started; i-- > 0;)
        if (s->ext[i].stop) s->ext[i].stop(s->ext[i].ctx);
    admin_service_shutdown(s->as);
    node_service_shutdown(s->ns);
    workpool_free(s->wp);
    s->wp = NULL;
}

void server_free(server *s)
{
    if (!s) return;
    server_stop(s);
    for (size_t i = s->n_ext_started; i-- > 0;)
        if (s->ext[i].free) s->ext[i].free(s->ext[i].ctx);
    s->n_ext_started = 0;
    admin_service_free(s->as);
    node_service_free(s->ns);
    ca_close(s->ca);
    store_close(s->st);
    free(s->chain_pem);
    free_pem(&s->key_pem);
    free(s->ca_pem);
    free(s);
}

/* ---- the process ----------------------------------------------------------------- */

mid_result server_run(const server_opts *o)
{
    /* before any thread exists, so gRPC's and the pool's threads inherit it */
    MID_GUARD(sigstop_block());
    rpc_loop *loop = NULL;
    server *s = NULL;
    sigstop *stop = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, rpc_loop_new(&loop));
    MID_TRY(r, server_start(o, loop, &s));
    MID_TRY(r, sigstop_start(loop, &stop));
    printf("meshid server: trust domain %s, node API on %s (port %d), admin API on %s\n",
           server_trust_domain(s), o->listen ? o->listen : SERVER_LISTEN_DEFAULT,
           server_port(s), server_admin_path(s));
    fflush(stdout);
    r = rpc_loop_run(loop);
out:;
    int sig = sigstop_end(stop);
    if (sig) LOG_INFO("server: signal %d, shutting down", sig);
    server_stop(s);
    rpc_loop_free(loop);
    server_free(s);
    return r;
}
