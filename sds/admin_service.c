/* meshid.admin.v1.Admin, server side. See sds/admin_service.h.
 *
 * Reads answer at once on the loop thread. Writes become an admin_op run on
 * the workpool; as in the node service, the op is shared by the call and
 * its job, and freed by whichever of the two finishes last. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/rotation.h"
#include "identity/entry.h"
#include "identity/join_token.h"
#include "identity/spiffe_id.h"
#include "lib/admin_peer.h"
#include "lib/log.h"
#include "lib/timeutil.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/admin_service.h"

#define A_PREFIX "/meshid.admin.v1.Admin/"
#define MSG_MAX 512
#define OP_ARENA_LIMIT (1u << 20)

#define AUTH_WAIT_STEP_MS 200
#define AUTH_TIMEOUT_DEFAULT 30
#define AUTH_TIMEOUT_MAX 3600
#define AUTH_PENDING_MAX 1024

typedef enum { AU_PREPARE, AU_ACTIVATE, AU_ROTATE, AU_TAINT, AU_REVOKE } auth_kind;
typedef enum { PH_PREPARE, PH_PROBE, PH_WAIT, PH_ACTIVATE, PH_SIMPLE } auth_phase;

typedef struct auth_op {
    struct auth_op *prev, *next; /* as->auth_ops, for shutdown */
    struct admin_service *as;
    rpc_call *call; /* NULL once the call is over */
    bool job;       /* a workpool job is outstanding */
    rpc_timer *timer;
    auth_kind kind;
    auth_phase phase;
    char actor[64];
    /* request */
    ca_prepare_opts popts;
    char upstream_dir[4096];
    char id[CA_AUTHORITY_ID_MAX];
    bool force;
    int64_t timeout_ms, deadline_ms;
    /* progress and results */
    ca_prepared prepared;
    char root_id[CA_AUTHORITY_ID_MAX], inter_id[CA_AUTHORITY_ID_MAX];
    bool probed, forced;
    char pending[AUTH_PENDING_MAX];
    size_t n_pending;
    uint64_t root_seq;
    rpc_code code;
    char msg[MSG_MAX];
} auth_op;

struct admin_service {
    admin_service_opts o;
    char td[SPIFFE_TD_MAX + 1];
    char data_dir[4096];
    auth_op auth_ops; /* list head of the authority calls in progress */
    bool shutting_down;
};

typedef enum { A_TOKEN, A_CREATE_ENTRY, A_DELETE_ENTRY, A_EVICT } admin_kind;

typedef struct {
    admin_service *as;
    rpc_call *call; /* NULL once the call is over */
    bool job;       /* a workpool job is outstanding */
    admin_kind kind;
    char actor[64];
    rpc_code code;
    char msg[MSG_MAX];
    arena *a; /* request copies */
    /* A_TOKEN */
    char token[JOIN_TOKEN_LEN + 1];
    char hash[JOIN_TOKEN_HASH_LEN + 1];
    const char *agent_id;
    int64_t expires_at;
    bool agent_id_given;
    /* A_CREATE_ENTRY */
    store_entry e;
    /* A_DELETE_ENTRY, A_EVICT */
    const char *id;
    /* results */
    store_entry_row row;
    store_agent_row agent;
} admin_op;

/* ---- plumbing ----------------------------------------------------------- */

static void op_free(admin_op *op)
{
    OPENSSL_cleanse(op->token, sizeof op->token);
    store_entry_row_clear(&op->row);
    store_agent_row_clear(&op->agent);
    arena_free(op->a);
    free(op);
}

static void finish(rpc_call *call, rpc_code code, const char *msg)
{
    if (!mid_is_ok(rpc_call_finish(call, code, msg)))
        LOG_DEBUG("admin API: finish %s: %s", rpc_call_method(call), mid_errmsg());
}

static void reply(rpc_call *call, const ProtobufCMessage *m)
{
    if (!mid_is_ok(rpc_call_send(call, m))) {
        LOG_WARN("admin API: cannot answer %s: %s", rpc_call_method(call), mid_errmsg());
        rpc_call_abort(call, RPC_INTERNAL, "cannot send the response");
        return;
    }
    finish(call, RPC_OK, NULL);
}

static void fail_result(rpc_call *call, mid_result r, const char *what)
{
    rpc_code code = node_rpc_code(r.err);
    if (code == RPC_INTERNAL) {
        LOG_ERROR("admin API: %s: %s", what, mid_errmsg());
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "internal error during %s: %s", what, mid_errmsg());
        finish(call, code, msg);
        return;
    }
    finish(call, code, mid_errmsg());
}

/* See lib/admin_peer.h. */
static bool authorised(rpc_call *call, char actor[ADMIN_ACTOR_MAX])
{
    return admin_peer_check(call, "admin API", actor, ADMIN_ACTOR_MAX);
}

static void op_call_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    (void)ctx;
    admin_op *op = rpc_call_user(call);
    if (!op) return;
    op->call = NULL;
    if (!op->job) op_free(op);
}

static admin_op *op_new(admin_service *as, rpc_call *call, admin_kind kind, const char *actor)
{
    admin_op *op = calloc(1, sizeof *op);
    if (!op || !mid_is_ok(arena_new(OP_ARENA_LIMIT, &op->a))) {
        free(op);
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    op->as = as;
    op->call = call;
    op->kind = kind;
    op->code = RPC_OK;
    snprintf(op->actor, sizeof op->actor, "%s", actor);
    rpc_call_set_user(call, op);
    return op;
}

static char *op_strdup(admin_op *op, const char *s) { return arena_strndup(op->a, s, strlen(s)); }

static void set_failure(admin_op *op, mid_err err, const char *what)
{
    op->code = node_rpc_code(err);
    if (op->code == RPC_INTERNAL) LOG_ERROR("admin API: %s: %s", what, mid_errmsg());
    snprintf(op->msg, MSG_MAX, "%s", mid_errmsg());
}

static char *json_details(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return s;
}

/* ---- the writes, on a worker thread --------------------------------------- */

static void token_work(admin_op *op)
{
    char exp[TIME_RFC3339_LEN];
    time_format_rfc3339(op->expires_at, exp);
    char tid[17];
    snprintf(tid, sizeof tid, "%.16s", op->hash); /* as in the node API's audit actor */
    char *d = json_details(json_pack("{s:s, s:s, s:b}", "expires_at", exp, "token_id", tid,
                                     "agent_id_given", op->agent_id_given));
    store_join_token t = {.token_hash = op->hash,
                          .agent_spiffe_id = op->agent_id_given ? op->agent_id : NULL,
                          .expires_at = op->expires_at};
    store_audit_event ev = {.actor = op->actor, .event = "join_token.create",
                            .spiffe_id = op->agent_id, .outcome = "ok", .details = d};
    mid_result r = store_join_token_create(op->as->o.st, &t, &ev);
    if (!mid_is_ok(r)) set_failure(op, r.err, "creating the join token");
    free(d);
}

static void entry_details_json(const store_entry *e, json_t **out)
{
    json_t *sels = json_array(), *dns = json_array();
    for (size_t i = 0; sels && i < e->n_selectors; i++) {
        char buf[ENTRY_SELECTOR_TEXT_MAX + 1];
        snprintf(buf, sizeof buf, "%s:%s", e->selectors[i].type, e->selectors[i].value);
        json_array_append_new(sels, json_string(buf));
    }
    for (size_t i = 0; dns && i < e->n_dns_names; i++)
        json_array_append_new(dns, json_string(e->dns_names[i]));
    *out = json_pack("{s:s?, s:s, s:o?, s:o?, s:I}", "entry_id", e->id, "parent_id",
                     e->parent_id, "selectors", sels, "dns", dns, "ttl",
                     (json_int_t)e->ttl_seconds);
}

static void create_entry_work(admin_op *op)
{
    json_t *o = NULL;
    entry_details_json(&op->e, &o);
    char *d = json_details(o);
    store_audit_event ev = {.actor = op->actor, .event = "entry.create",
                            .spiffe_id = op->e.spiffe_id, .outcome = "ok", .details = d};
    mid_result r = store_entry_create(op->as->o.st, &op->e, &ev, &op->row);
    if (!mid_is_ok(r)) set_failure(op, r.err, "creating the entry");
    free(d);
}

static void delete_entry_work(admin_op *op)
{
    store_entry_row cur = {0};
    mid_result r = store_entry_get(op->as->o.st, op->id, &cur);
    char *d = NULL;
    if (mid_is_ok(r)) {
        json_t *o = NULL;
        entry_details_json(&cur.e, &o);
        d = json_details(o);
    }
    store_audit_event ev = {.actor = op->actor, .event = "entry.delete",
                            .spiffe_id = mid_is_ok(r) ? cur.e.spiffe_id : NULL, .outcome = "ok",
                            .details = d};
    r = store_entry_delete(op->as->o.st, op->id, &ev, &op->row);
    if (r.err == MID_E_NOT_FOUND) {
        op->code = RPC_NOT_FOUND;
        snprintf(op->msg, MSG_MAX, "no entry with id %s", op->id);
    } else if (!mid_is_ok(r)) {
        set_failure(op, r.err, "deleting the entry");
    }
    free(d);
    store_entry_row_clear(&cur);
}

static void evict_work(admin_op *op)
{
    store_audit_event ev = {.actor = op->actor, .event = "agent.evict", .spiffe_id = op->id,
                            .outcome = "ok"};
    mid_result r = store_agent_set_banned(op->as->o.st, op->id, 1, &ev);
    if (r.err == MID_E_NOT_FOUND) {
        op->code = RPC_NOT_FOUND;
        snprintf(op->msg, MSG_MAX, "no attested agent %s", op->id);
        return;
    }
    if (!mid_is_ok(r)) {
        set_failure(op, r.err, "evicting the agent");
        return;
    }
    r = store_agent_get(op->as->o.st, op->id, &op->agent);
    if (!mid_is_ok(r)) set_failure(op, r.err, "reading the agent");
}

static void op_work(void *arg)
{
    admin_op *op = arg;
    switch (op->kind) {
    case A_TOKEN: token_work(op); break;
    case A_CREATE_ENTRY: create_entry_work(op); break;
    case A_DELETE_ENTRY: delete_entry_work(op); break;
    case A_EVICT: evict_work(op); break;
    }
}

static void agent_to_proto(arena *a, const store_agent *s, Meshid__Admin__V1__Agent *out)
{
    meshid__admin__v1__agent__init(out);
    out->spiffe_id = arena_strndup(a, s->spiffe_id, strlen(s->spiffe_id));
    out->serial = arena_strndup(a, s->serial, strlen(s->serial));
    out->hostname = arena_strndup(a, s->hostname ? s->hostname : "",
                                  s->hostname ? strlen(s->hostname) : 0);
    if (!out->spiffe_id) out->spiffe_id = (char *)"";
    if (!out->serial) out->serial = (char *)"";
    if (!out->hostname) out->hostname = (char *)"";
    out->not_after = s->not_after;
    out->last_seen = s->last_seen;
    out->banned = s->banned != 0;
}

/* ---- answers, on the loop thread ---------------------------------------- */

static void op_done(void *arg, bool ran)
{
    admin_op *op = arg;
    op->job = false;
    rpc_call *call = op->call;
    if (!call) {
        op_free(op);
        return;
    }
    if (!ran) {
        finish(call, RPC_UNAVAILABLE, "server shutting down");
        return;
    }
    if (op->code != RPC_OK) {
        finish(call, op->code, op->msg);
        return;
    }
    arena *a = rpc_call_arena(call);
    switch (op->kind) {
    case A_TOKEN: {
        Meshid__Admin__V1__CreateJoinTokenResponse resp =
            MESHID__ADMIN__V1__CREATE_JOIN_TOKEN_RESPONSE__INIT;
        resp.token = op->token;
        resp.expires_at = op->expires_at;
        resp.agent_spiffe_id = (char *)op->agent_id;
        reply(call, &resp.base); /* serialised at once: the token can go */
        OPENSSL_cleanse(op->token, sizeof op->token);
        break;
    }
    case A_CREATE_ENTRY:
    case A_DELETE_ENTRY: {
        Meshid__Agent__V1__Entry e;
        if (!mid_is_ok(node_entry_to_proto(a, &op->row.e, &e))) {
            finish(call, RPC_RESOURCE_EXHAUSTED, "response too large");
            break;
        }
        if (op->kind == A_CREATE_ENTRY) {
            Meshid__Admin__V1__CreateEntryResponse resp =
                MESHID__ADMIN__V1__CREATE_ENTRY_RESPONSE__INIT;
            resp.entry = &e;
            reply(call, &resp.base);
        } else {
            Meshid__Admin__V1__DeleteEntryResponse resp =
                MESHID__ADMIN__V1__DELETE_ENTRY_RESPONSE__INIT;
            resp.entry = &e;
            reply(call, &resp.base);
        }
        break;
    }
    case A_EVICT: {
        if (op->as->o.node) node_service_agent_evicted(op->as->o.node, op->id);
        Meshid__Admin__V1__Agent ag;
        agent_to_proto(a, &op->agent.a, &ag);
        Meshid__Admin__V1__EvictAgentResponse resp = MESHID__ADMIN__V1__EVICT_AGENT_RESPONSE__INIT;
        resp.agent = &ag;
        reply(call, &resp.base);
        break;
    }
    }
}

static void run_op(admin_op *op)
{
    if (!mid_is_ok(workpool_submit(op->as->o.wp, op_work, op_done, op))) {
        finish(op->call, RPC_UNAVAILABLE, "server busy, retry later");
        return;
    }
    op->job = true;
}

/* ---- handlers ------------------------------------------------------------ */

static void create_token_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__CreateJoinTokenRequest *req =
        (const Meshid__Admin__V1__CreateJoinTokenRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    int64_t ttl = req->ttl_seconds ? req->ttl_seconds : as->o.token_ttl;
    if (ttl <= 0 || ttl > ADMIN_TOKEN_TTL_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "token TTL must be 1s..%ds", ADMIN_TOKEN_TTL_MAX);
        finish(call, RPC_INVALID_ARGUMENT, msg);
        return;
    }
    spiffe_id *sid = NULL;
    mid_result r = MID_OK_RESULT;
    if (req->spiffe_id[0] != '\0') {
        r = spiffe_id_parse(req->spiffe_id, strlen(req->spiffe_id), &sid);
        if (mid_is_ok(r) && (!spiffe_id_member_of(sid, as->td) || !spiffe_id_is_workload(sid)))
            r = mid_fail(MID_E_INVALID, __FILE__, __LINE__,
                         "agent SPIFFE ID %s must be in trust domain %s and have a path",
                         req->spiffe_id, as->td);
        if (!mid_is_ok(r)) {
            spiffe_id_free(sid);
            fail_result(call, r, "checking the SPIFFE ID");
            return;
        }
    }
    admin_op *op = op_new(as, call, A_TOKEN, actor);
    if (!op) {
        spiffe_id_free(sid);
        return;
    }
    r = join_token_generate(op->token, op->hash);
    if (mid_is_ok(r) && !sid) r = join_token_agent_id(as->td, op->hash, &sid);
    if (!mid_is_ok(r)) {
        spiffe_id_free(sid);
        fail_result(call, r, "making a token");
        return;
    }
    op->agent_id_given = req->spiffe_id[0] != '\0';
    op->agent_id = op_strdup(op, spiffe_id_str(sid));
    spiffe_id_free(sid);
    op->expires_at = time_now() + ttl;
    if (!op->agent_id) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    run_op(op);
}

static void create_entry_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__CreateEntryRequest *req =
        (const Meshid__Admin__V1__CreateEntryRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    const Meshid__Agent__V1__Entry *in = req->entry;
    if (!in) {
        finish(call, RPC_INVALID_ARGUMENT, "an entry is required");
        return;
    }
    if (in->n_selectors > ENTRY_SELECTORS_MAX || in->n_dns_names > ENTRY_DNS_NAMES_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "too many selectors or DNS names");
        return;
    }
    admin_op *op = op_new(as, call, A_CREATE_ENTRY, actor);
    if (!op) return;
    entry_selector *sel = arena_calloc(op->a, (in->n_selectors + 1) * sizeof *sel);
    store_selector *ssel = arena_calloc(op->a, (in->n_selectors + 1) * sizeof *ssel);
    const char **dns = arena_calloc(op->a, (in->n_dns_names + 1) * sizeof *dns);
    op->e.spiffe_id = op_strdup(op, in->spiffe_id);
    op->e.parent_id = op_strdup(op, in->parent_id);
    bool ok = sel && ssel && dns && op->e.spiffe_id && op->e.parent_id;
    for (size_t i = 0; ok && i < in->n_selectors; i++) {
        sel[i].type = ssel[i].type = op_strdup(op, in->selectors[i]->type);
        sel[i].value = ssel[i].value = op_strdup(op, in->selectors[i]->value);
        ok = sel[i].type && sel[i].value;
    }
    for (size_t i = 0; ok && i < in->n_dns_names; i++) ok = (dns[i] = op_strdup(op, in->dns_names[i]));
    if (!ok) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "entry too large");
        return;
    }
    entry ent = {.spiffe_id = op->e.spiffe_id, .parent_id = op->e.parent_id, .selectors = sel,
                 .n_selectors = in->n_selectors, .dns_names = dns,
                 .n_dns_names = in->n_dns_names, .ttl_seconds = in->ttl_seconds};
    mid_result r = entry_validate(&ent);
    spiffe_id *sid = NULL;
    if (mid_is_ok(r)) r = spiffe_id_parse(in->spiffe_id, strlen(in->spiffe_id), &sid);
    if (mid_is_ok(r) && !spiffe_id_member_of(sid, as->td))
        r = mid_fail(MID_E_INVALID, __FILE__, __LINE__, "%s is not in trust domain %s",
                     in->spiffe_id, as->td);
    spiffe_id_free(sid);
    if (!mid_is_ok(r)) {
        fail_result(call, r, "checking the entry");
        return;
    }
    op->e.selectors = ssel;
    op->e.n_selectors = in->n_selectors;
    op->e.dns_names = dns;
    op->e.n_dns_names = in->n_dns_names;
    op->e.ttl_seconds = in->ttl_seconds;
    run_op(op);
}

static void list_entries_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__ListEntriesRequest *req =
        (const Meshid__Admin__V1__ListEntriesRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    store_entry_row *rows = NULL;
    size_t n = 0;
    mid_result r = store_entry_list(as->o.st, req->parent_id[0] ? req->parent_id : NULL, &rows,
                                    &n, NULL);
    if (!mid_is_ok(r)) {
        fail_result(call, r, "listing entries");
        return;
    }
    arena *a = rpc_call_arena(call);
    Meshid__Admin__V1__ListEntriesResponse resp = MESHID__ADMIN__V1__LIST_ENTRIES_RESPONSE__INIT;
    Meshid__Agent__V1__Entry *ev = n ? arena_calloc(a, n * sizeof *ev) : NULL;
    resp.entries = n ? arena_calloc(a, n * sizeof *resp.entries) : NULL;
    bool ok = n == 0 || (ev && resp.entries);
    for (size_t i = 0; ok && i < n; i++) {
        ok = mid_is_ok(node_entry_to_proto(a, &rows[i].e, &ev[i]));
        resp.entries[i] = &ev[i];
    }
    resp.n_entries = n;
    store_entry_list_free(rows, n);
    if (!ok) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "too many entries for one response");
        return;
    }
    reply(call, &resp.base);
}

static void get_entry_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__GetEntryRequest *req = (const Meshid__Admin__V1__GetEntryRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    store_entry_row row = {0};
    mid_result r = store_entry_get(as->o.st, req->id, &row);
    if (r.err == MID_E_NOT_FOUND || r.err == MID_E_INVALID) {
        char msg[128];
        snprintf(msg, sizeof msg, "no entry with id %.64s", req->id);
        finish(call, RPC_NOT_FOUND, msg);
        return;
    }
    if (!mid_is_ok(r)) {
        fail_result(call, r, "reading the entry");
        return;
    }
    Meshid__Agent__V1__Entry e;
    Meshid__Admin__V1__GetEntryResponse resp = MESHID__ADMIN__V1__GET_ENTRY_RESPONSE__INIT;
    resp.entry = &e;
    r = node_entry_to_proto(rpc_call_arena(call), &row.e, &e);
    store_entry_row_clear(&row);
    if (!mid_is_ok(r)) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "response too large");
        return;
    }
    reply(call, &resp.base);
}

static void delete_entry_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__DeleteEntryRequest *req =
        (const Meshid__Admin__V1__DeleteEntryRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    if (req->id[0] == '\0' || strlen(req->id) > STORE_ENTRY_ID_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "an entry id is required");
        return;
    }
    admin_op *op = op_new(as, call, A_DELETE_ENTRY, actor);
    if (!op) return;
    op->id = op_strdup(op, req->id);
    if (!op->id) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    run_op(op);
}

static void list_agents_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    (void)m;
    admin_service *as = ctx;
    char actor[64];
    if (!authorised(call, actor)) return;
    store_agent_row *rows = NULL;
    size_t n = 0;
    mid_result r = store_agent_list(as->o.st, &rows, &n);
    if (!mid_is_ok(r)) {
        fail_result(call, r, "listing agents");
        return;
    }
    arena *a = rpc_call_arena(call);
    Meshid__Admin__V1__ListAgentsResponse resp = MESHID__ADMIN__V1__LIST_AGENTS_RESPONSE__INIT;
    Meshid__Admin__V1__Agent *av = n ? arena_calloc(a, n * sizeof *av) : NULL;
    resp.agents = n ? arena_calloc(a, n * sizeof *resp.agents) : NULL;
    if (n && (!av || !resp.agents)) {
        store_agent_list_free(rows, n);
        finish(call, RPC_RESOURCE_EXHAUSTED, "too many agents for one response");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        agent_to_proto(a, &rows[i].a, &av[i]);
        resp.agents[i] = &av[i];
    }
    resp.n_agents = n;
    store_agent_list_free(rows, n);
    reply(call, &resp.base);
}

static void evict_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__EvictAgentRequest *req =
        (const Meshid__Admin__V1__EvictAgentRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    if (req->spiffe_id[0] == '\0' || strlen(req->spiffe_id) > SPIFFE_ID_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "the agent's SPIFFE ID is required");
        return;
    }
    admin_op *op = op_new(as, call, A_EVICT, actor);
    if (!op) return;
    op->id = op_strdup(op, req->spiffe_id);
    if (!op->id) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    run_op(op);
}

/* ---- authorities (docs/ca.md "Rotation") ---------------------------------- *
 *
 * Every step that writes runs ca/rotation.c on the workpool. Activation is
 * split so that the wait for the agents never blocks a thread: a probe job
 * runs ca_activate_at with a gate that records the candidate and refuses
 * (so every other check is made, nothing written); the loop then re-checks
 * node_service_gate_check every AUTH_WAIT_STEP_MS until it passes or the
 * deadline; then a second job activates with a gate that only lets that
 * root through. An agent that connects in between gets the bundle first
 * (Sync), so it cannot be handed an SVID it does not trust. */


static void auth_free(auth_op *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    if (op->timer) rpc_timer_cancel(op->as->o.loop, op->timer);
    free(op);
}

static void auth_call_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    (void)ctx;
    auth_op *op = rpc_call_user(call);
    if (!op) return;
    op->call = NULL;
    if (!op->job) auth_free(op);
}

static auth_op *auth_new(admin_service *as, rpc_call *call, auth_kind kind, const char *actor)
{
    auth_op *op = calloc(1, sizeof *op);
    if (!op) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    op->as = as;
    op->call = call;
    op->kind = kind;
    op->code = RPC_OK;
    snprintf(op->actor, sizeof op->actor, "%s", actor);
    op->next = as->auth_ops.next;
    op->prev = &as->auth_ops;
    as->auth_ops.next->prev = op;
    as->auth_ops.next = op;
    rpc_call_set_user(call, op);
    return op;
}

static void auth_fail(auth_op *op, mid_result r, const char *what)
{
    op->code = node_rpc_code(r.err);
    if (op->code == RPC_INTERNAL) LOG_ERROR("admin API: %s: %s", what, mid_errmsg());
    snprintf(op->msg, MSG_MAX, "%s", mid_errmsg());
}

/* The probe gate: records the candidate and refuses. */
static mid_result probe_gate(void *ctx, const char *root_id, const char *intermediate_id)
{
    auth_op *op = ctx;
    snprintf(op->root_id, sizeof op->root_id, "%s", root_id);
    snprintf(op->inter_id, sizeof op->inter_id, "%s", intermediate_id);
    op->probed = true;
    MID_BAIL(MID_E_STATE, "probe");
}

/* The activation gate: only the root the loop checked (or forced). */
static mid_result approved_gate(void *ctx, const char *root_id, const char *intermediate_id)
{
    const auth_op *op = ctx;
    MID_ENSURE(strcmp(root_id, op->root_id) == 0 && strcmp(intermediate_id, op->inter_id) == 0,
               MID_E_STATE,
               "the authorities changed while waiting for the agents (now root %.16s, "
               "intermediate %.16s); retry", root_id, intermediate_id);
    return mid_ok();
}

static void force_audit(auth_op *op)
{
    json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:I}", "force", 1, "id", op->inter_id, "root_id",
                          op->root_id, "not_acknowledged", op->pending, "pending",
                          (json_int_t)op->n_pending);
    char *d = json_details(o);
    char reason[256];
    snprintf(reason, sizeof reason,
             "activated with --force: %zu connected agent(s) had not acknowledged the bundle "
             "with root %.16s", op->n_pending, op->root_id);
    store_audit_event ev = {.actor = op->actor, .event = "ca.activate.force",
                            .outcome = "ok", .reason = reason, .details = d};
    if (!mid_is_ok(store_audit_append(op->as->o.st, &ev, NULL)))
        LOG_ERROR("admin API: cannot audit a forced activation: %s", mid_errmsg());
    free(d);
}

static void auth_work(void *arg)
{
    auth_op *op = arg;
    store *st = op->as->o.st;
    const char *dd = op->as->o.data_dir;
    mid_result r = MID_OK_RESULT;
    switch (op->phase) {
    case PH_PREPARE:
        r = ca_prepare(st, dd, &op->popts, &op->prepared);
        if (mid_is_ok(r)) {
            snprintf(op->root_id, sizeof op->root_id, "%s", op->prepared.root_id);
            snprintf(op->inter_id, sizeof op->inter_id, "%s", op->prepared.intermediate_id);
        }
        break;
    case PH_PROBE: {
        ca_activate_gate g = {.ready = probe_gate, .ctx = op};
        r = ca_activate_at(st, dd, op->id, &g, op->actor, time_now(), NULL);
        if (op->probed) r = mid_ok(), mid_errclear();
        break;
    }
    case PH_ACTIVATE: {
        ca_activate_gate g = {.ready = approved_gate, .ctx = op};
        r = ca_activate_at(st, dd, op->inter_id, &g, op->actor, time_now(), NULL);
        if (mid_is_ok(r) && op->forced) force_audit(op);
        break;
    }
    case PH_SIMPLE:
        if (op->kind == AU_TAINT) r = ca_taint(st, op->id, op->actor, op->inter_id);
        else r = ca_revoke(st, op->id, op->actor, op->inter_id);
        break;
    case PH_WAIT: break;
    }
    if (!mid_is_ok(r)) auth_fail(op, r, "changing an authority");
}

static void auth_done(void *arg, bool ran);

static void auth_submit(auth_op *op, auth_phase ph)
{
    op->phase = ph;
    if (mid_is_ok(workpool_submit(op->as->o.wp, auth_work, auth_done, op))) {
        op->job = true;
        return;
    }
    finish(op->call, RPC_UNAVAILABLE, "server busy, retry later");
}

static void changed(admin_service *as)
{
    if (as->o.authorities_changed) as->o.authorities_changed(as->o.authorities_changed_ctx);
}

static void fill_activated(auth_op *op, Meshid__Admin__V1__ActivateAuthorityResponse *resp,
                           arena *a)
{
    resp->intermediate_id = op->inter_id;
    resp->root_id = op->root_id;
    resp->forced = op->forced;
    resp->bundle_sequence = op->root_seq;
    if (!op->forced || op->n_pending == 0) return;
    /* one entry per listed agent ("a, b (+N more)") */
    size_t cap = NODE_GATE_LIST_MAX + 1, n = 0;
    char **v = arena_calloc(a, cap * sizeof *v);
    char *copy = arena_strndup(a, op->pending, strlen(op->pending));
    if (!v || !copy) return;
    for (char *p = copy; p && *p && n < cap;) {
        char *sep = strstr(p, ", ");
        if (sep) *sep = '\0';
        v[n++] = p;
        p = sep ? sep + 2 : NULL;
    }
    resp->not_acknowledged = v;
    resp->n_not_acknowledged = n;
}

static void auth_reply(auth_op *op)
{
    rpc_call *call = op->call;
    arena *a = rpc_call_arena(call);
    switch (op->kind) {
    case AU_PREPARE: {
        Meshid__Admin__V1__PrepareAuthorityResponse resp =
            MESHID__ADMIN__V1__PREPARE_AUTHORITY_RESPONSE__INIT;
        resp.intermediate_id = op->prepared.intermediate_id;
        resp.root_id = op->prepared.root_id;
        resp.root_is_new = op->prepared.root_is_new != 0;
        if (op->as->o.node) node_service_bundle_pem(op->as->o.node, &resp.bundle_sequence);
        reply(call, &resp.base);
        return;
    }
    case AU_ACTIVATE: {
        Meshid__Admin__V1__ActivateAuthorityResponse resp =
            MESHID__ADMIN__V1__ACTIVATE_AUTHORITY_RESPONSE__INIT;
        fill_activated(op, &resp, a);
        reply(call, &resp.base);
        return;
    }
    case AU_ROTATE: {
        Meshid__Admin__V1__RotateAuthorityResponse resp =
            MESHID__ADMIN__V1__ROTATE_AUTHORITY_RESPONSE__INIT;
        Meshid__Admin__V1__ActivateAuthorityResponse act =
            MESHID__ADMIN__V1__ACTIVATE_AUTHORITY_RESPONSE__INIT;
        fill_activated(op, &act, a);
        resp.activated = &act;
        reply(call, &resp.base);
        return;
    }
    case AU_TAINT: {
        Meshid__Admin__V1__TaintAuthorityResponse resp =
            MESHID__ADMIN__V1__TAINT_AUTHORITY_RESPONSE__INIT;
        resp.id = op->inter_id;
        reply(call, &resp.base);
        return;
    }
    case AU_REVOKE: {
        Meshid__Admin__V1__RevokeAuthorityResponse resp =
            MESHID__ADMIN__V1__REVOKE_AUTHORITY_RESPONSE__INIT;
        resp.id = op->inter_id;
        reply(call, &resp.base);
        return;
    }
    }
}

/* One look at the gate; activates, fails, or looks again later. */
static void auth_wait_step(auth_op *op);

static void auth_wait_timer(rpc_loop *loop, void *arg)
{
    (void)loop;
    auth_op *op = arg;
    op->timer = NULL;
    if (!op->call || op->as->shutting_down) return;
    auth_wait_step(op);
}

static void auth_wait_step(auth_op *op)
{
    admin_service *as = op->as;
    mid_result r = mid_ok();
    if (as->o.node) {
        r = node_service_gate_check(as->o.node, op->root_id, op->pending, sizeof op->pending,
                                    &op->n_pending);
        op->root_seq = node_service_root_sequence(as->o.node, op->root_id);
    }
    if (mid_is_ok(r)) {
        auth_submit(op, PH_ACTIVATE);
        return;
    }
    if (time_now_ms() < op->deadline_ms) {
        if (mid_is_ok(rpc_timer_add(as->o.loop, AUTH_WAIT_STEP_MS, auth_wait_timer, op,
                                    &op->timer)))
            return;
        LOG_ERROR("admin API: cannot arm the activation wait: %s", mid_errmsg());
    }
    if (op->force && op->n_pending > 0) {
        LOG_WARN("admin API: forcing activation of %.16s: %s", op->inter_id, mid_errmsg());
        op->forced = true;
        auth_submit(op, PH_ACTIVATE);
        return;
    }
    char msg[MSG_MAX + 64];
    snprintf(msg, sizeof msg, "%s (waited %llds; --force activates anyway)", mid_errmsg(),
             (long long)(op->timeout_ms / 1000));
    finish(op->call, RPC_FAILED_PRECONDITION, msg);
}

static void auth_done(void *arg, bool ran)
{
    auth_op *op = arg;
    op->job = false;
    rpc_call *call = op->call;
    admin_service *as = op->as;
    if (op->phase != PH_PROBE && op->code == RPC_OK && ran) changed(as);
    if (!call) {
        auth_free(op);
        return;
    }
    if (!ran || as->shutting_down) {
        finish(call, RPC_UNAVAILABLE, "server shutting down");
        return;
    }
    if (op->code != RPC_OK) {
        finish(call, op->code, op->msg);
        return;
    }
    if ((op->phase == PH_PREPARE && op->kind == AU_ROTATE) || op->phase == PH_PROBE) {
        op->phase = PH_WAIT;
        op->deadline_ms = time_now_ms() + op->timeout_ms;
        auth_wait_step(op);
        return;
    }
    auth_reply(op);
}

static bool auth_timeout(rpc_call *call, int64_t secs, int64_t *ms)
{
    if (secs < 0 || secs > AUTH_TIMEOUT_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "timeout_seconds must be 0..%d", AUTH_TIMEOUT_MAX);
        finish(call, RPC_INVALID_ARGUMENT, msg);
        return false;
    }
    *ms = (secs ? secs : AUTH_TIMEOUT_DEFAULT) * 1000;
    return true;
}

static bool copy_id(rpc_call *call, const char *in, char out[CA_AUTHORITY_ID_MAX])
{
    if (in[0] == '\0' || strlen(in) >= CA_AUTHORITY_ID_MAX) {
        finish(call, RPC_INVALID_ARGUMENT, "an authority id (1 to 128 hex digits) is required");
        return false;
    }
    snprintf(out, CA_AUTHORITY_ID_MAX, "%s", in);
    return true;
}

static void prepare_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__PrepareAuthorityRequest *req =
        (const Meshid__Admin__V1__PrepareAuthorityRequest *)m;
    char actor[64];
    if (!authorised(call, actor)) return;
    ca_key_type kt = 0;
    if (req->key_type[0] != '\0' && !mid_is_ok(ca_key_type_parse(req->key_type, &kt))) {
        finish(call, RPC_INVALID_ARGUMENT, mid_errmsg());
        return;
    }
    if (strlen(req->upstream_dir) >= sizeof((auth_op *)0)->upstream_dir) {
        finish(call, RPC_INVALID_ARGUMENT, "upstream_dir is too long");
        return;
    }
    auth_op *op = auth_new(as, call, AU_PREPARE, actor);
    if (!op) return;
    snprintf(op->upstream_dir, sizeof op->upstream_dir, "%s", req->upstream_dir);
    op->popts = (ca_prepare_opts){
        .new_root = req->root, .upstream_dir = op->upstream_dir[0] ? op->upstream_dir : NULL,
        .replace = req->replace, .key_type = kt, .root_ttl = req->root_ttl_seconds,
        .intermediate_ttl = req->intermediate_ttl_seconds, .actor = op->actor};
    auth_submit(op, PH_PREPARE);
}

static void activate_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__ActivateAuthorityRequest *req =
        (const Meshid__Admin__V1__ActivateAuthorityRequest *)m;
    char actor[64], id[CA_AUTHORITY_ID_MAX];
    int64_t ms;
    if (!authorised(call, actor) || !copy_id(call, req->id, id) ||
        !auth_timeout(call, req->timeout_seconds, &ms))
        return;
    auth_op *op = auth_new(as, call, AU_ACTIVATE, actor);
    if (!op) return;
    memcpy(op->id, id, sizeof id);
    op->force = req->force;
    op->timeout_ms = ms;
    auth_submit(op, PH_PROBE);
}

static void rotate_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    admin_service *as = ctx;
    const Meshid__Admin__V1__RotateAuthorityRequest *req =
        (const Meshid__Admin__V1__RotateAuthorityRequest *)m;
    char actor[64];
    int64_t ms;
    if (!authorised(call, actor) || !auth_timeout(call, req->timeout_seconds, &ms)) return;
    auth_op *op = auth_new(as, call, AU_ROTATE, actor);
    if (!op) return;
    op->force = req->force;
    op->timeout_ms = ms;
    op->popts = (ca_prepare_opts){.new_root = req->root, .actor = op->actor};
    auth_submit(op, PH_PREPARE);
}

static void taint_revoke_start(rpc_call *call, const char *id, void *ctx, auth_kind kind)
{
    admin_service *as = ctx;
    char actor[64], full[CA_AUTHORITY_ID_MAX];
    if (!authorised(call, actor) || !copy_id(call, id, full)) return;
    auth_op *op = auth_new(as, call, kind, actor);
    if (!op) return;
    memcpy(op->id, full, sizeof full);
    auth_submit(op, PH_SIMPLE);
}

static void taint_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    taint_revoke_start(call, ((const Meshid__Admin__V1__TaintAuthorityRequest *)m)->id, ctx,
                       AU_TAINT);
}

static void revoke_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    taint_revoke_start(call, ((const Meshid__Admin__V1__RevokeAuthorityRequest *)m)->id, ctx,
                       AU_REVOKE);
}

static char *adup(arena *a, const char *s) { return arena_strndup(a, s ? s : "", s ? strlen(s) : 0); }

static void status_start(rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    (void)m;
    admin_service *as = ctx;
    char actor[64];
    if (!authorised(call, actor)) return;
    store_authority_row *rows = NULL;
    size_t n = 0;
    mid_result r = store_authority_list(as->o.st, &rows, &n);
    if (!mid_is_ok(r)) {
        fail_result(call, r, "listing authorities");
        return;
    }
    arena *a = rpc_call_arena(call);
    Meshid__Admin__V1__AuthorityStatusResponse resp =
        MESHID__ADMIN__V1__AUTHORITY_STATUS_RESPONSE__INIT;
    const node_agent_state *ag = NULL;
    size_t na = 0;
    if (as->o.node) {
        node_service_refresh(as->o.node);
        na = node_service_agents(as->o.node, &ag);
        node_service_bundle_pem(as->o.node, &resp.bundle_sequence);
        resp.signer_id = adup(a, ca_signer_id(node_service_ca(as->o.node)));
    }
    Meshid__Admin__V1__Authority *av = n ? arena_calloc(a, n * sizeof *av) : NULL;
    Meshid__Admin__V1__AgentSpread *sv = na ? arena_calloc(a, na * sizeof *sv) : NULL;
    resp.authorities = n ? arena_calloc(a, n * sizeof *resp.authorities) : NULL;
    resp.agents = na ? arena_calloc(a, na * sizeof *resp.agents) : NULL;
    bool ok = (!n || (av && resp.authorities)) && (!na || (sv && resp.agents));
    for (size_t i = 0; ok && i < n; i++) {
        const store_authority *x = &rows[i].a;
        meshid__admin__v1__authority__init(&av[i]);
        av[i].id = adup(a, x->id);
        av[i].kind = adup(a, x->kind);
        av[i].state = adup(a, x->state);
        av[i].parent_id = adup(a, x->parent_id);
        av[i].not_before = x->not_before;
        av[i].not_after = x->not_after;
        av[i].upstream = x->upstream != 0;
        if (as->o.node) av[i].first_bundle_sequence = node_service_root_sequence(as->o.node, x->id);
        ok = av[i].id && av[i].kind && av[i].state && av[i].parent_id;
        resp.authorities[i] = &av[i];
    }
    resp.n_authorities = n;
    for (size_t i = 0; ok && i < na; i++) {
        meshid__admin__v1__agent_spread__init(&sv[i]);
        sv[i].spiffe_id = adup(a, ag[i].agent);
        sv[i].bundle_sequence_ack = ag[i].bundle_ack;
        sv[i].sds_bundle_sequence_ack = ag[i].sds_ack;
        sv[i].connected = ag[i].streams > 0;
        sv[i].last_seen_ms = ag[i].last_seen_ms;
        sv[i].acked = ag[i].acked;
        ok = sv[i].spiffe_id != NULL;
        resp.agents[i] = &sv[i];
    }
    resp.n_agents = na;
    store_authority_list_free(rows, n);
    if (!resp.signer_id) resp.signer_id = (char *)"";
    if (!ok) {
        finish(call, RPC_RESOURCE_EXHAUSTED, "response too large");
        return;
    }
    reply(call, &resp.base);
}

/* ---- lifecycle ------------------------------------------------------------ */

static const rpc_handler token_h = {.on_start = create_token_start, .on_done = op_call_done};
static const rpc_handler create_h = {.on_start = create_entry_start, .on_done = op_call_done};
static const rpc_handler list_h = {.on_start = list_entries_start};
static const rpc_handler get_h = {.on_start = get_entry_start};
static const rpc_handler delete_h = {.on_start = delete_entry_start, .on_done = op_call_done};
static const rpc_handler agents_h = {.on_start = list_agents_start};
static const rpc_handler evict_h = {.on_start = evict_start, .on_done = op_call_done};
static const rpc_handler prepare_h = {.on_start = prepare_start, .on_done = auth_call_done};
static const rpc_handler activate_h = {.on_start = activate_start, .on_done = auth_call_done};
static const rpc_handler rotate_h = {.on_start = rotate_start, .on_done = auth_call_done};
static const rpc_handler taint_h = {.on_start = taint_start, .on_done = auth_call_done};
static const rpc_handler revoke_h = {.on_start = revoke_start, .on_done = auth_call_done};
static const rpc_handler status_h = {.on_start = status_start};

mid_result admin_service_new(const admin_service_opts *o, admin_service **out)
{
    *out = NULL;
    MID_ENSURE(o && o->st && o->wp && o->trust_domain, MID_E_INVALID,
               "admin service needs a store, a workpool and a trust domain");
    MID_ENSURE(o->token_ttl >= 0 && o->token_ttl <= ADMIN_TOKEN_TTL_MAX, MID_E_INVALID,
               "join token TTL out of range");
    admin_service *as = calloc(1, sizeof *as);
    MID_ENSURE_MEM(as);
    as->o = *o;
    if (!as->o.token_ttl) as->o.token_ttl = ADMIN_TOKEN_TTL_DEFAULT;
    snprintf(as->td, sizeof as->td, "%s", o->trust_domain);
    as->o.trust_domain = as->td;
    snprintf(as->data_dir, sizeof as->data_dir, "%s", o->data_dir ? o->data_dir : "");
    as->o.data_dir = as->data_dir;
    as->auth_ops.next = as->auth_ops.prev = &as->auth_ops;
    *out = as;
    return mid_ok();
}

mid_result admin_service_register(admin_service *as, rpc_server *srv)
{
    static const struct {
        const char *path;
        const ProtobufCMessageDescriptor *desc;
        const rpc_handler *h;
    } m[] = {
        {A_PREFIX "CreateJoinToken", &meshid__admin__v1__create_join_token_request__descriptor,
         &token_h},
        {A_PREFIX "CreateEntry", &meshid__admin__v1__create_entry_request__descriptor, &create_h},
        {A_PREFIX "ListEntries", &meshid__admin__v1__list_entries_request__descriptor, &list_h},
        {A_PREFIX "GetEntry", &meshid__admin__v1__get_entry_request__descriptor, &get_h},
        {A_PREFIX "DeleteEntry", &meshid__admin__v1__delete_entry_request__descriptor, &delete_h},
        {A_PREFIX "ListAgents", &meshid__admin__v1__list_agents_request__descriptor, &agents_h},
        {A_PREFIX "EvictAgent", &meshid__admin__v1__evict_agent_request__descriptor, &evict_h},
        {A_PREFIX "PrepareAuthority", &meshid__admin__v1__prepare_authority_request__descriptor,
         &prepare_h},
        {A_PREFIX "ActivateAuthority", &meshid__admin__v1__activate_authority_request__descriptor,
         &activate_h},
        {A_PREFIX "RotateAuthority", &meshid__admin__v1__rotate_authority_request__descriptor,
         &rotate_h},
        {A_PREFIX "TaintAuthority", &meshid__admin__v1__taint_authority_request__descriptor,
         &taint_h},
        {A_PREFIX "RevokeAuthority", &meshid__admin__v1__revoke_authority_request__descriptor,
         &revoke_h},
        {A_PREFIX "AuthorityStatus", &meshid__admin__v1__authority_status_request__descriptor,
         &status_h},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        MID_GUARD(rpc_server_register(srv, m[i].path, RPC_UNARY, m[i].desc, m[i].h, as));
    return mid_ok();
}

void admin_service_shutdown(admin_service *as)
{
    if (!as) return;
    as->shutting_down = true;
    for (auth_op *op = as->auth_ops.next; op != &as->auth_ops; op = op->next) {
        if (op->timer) rpc_timer_cancel(as->o.loop, op->timer);
        op->timer = NULL;
        if (op->call && !op->job && !rpc_call_is_closed(op->call))
            rpc_call_abort(op->call, RPC_UNAVAILABLE, "server shutting down");
    }
}

void admin_service_free(admin_service *as)
{
    if (!as) return;
    /* ops whose call never ended (the loop was not freed): drop them */
    while (as->auth_ops.next != &as->auth_ops) {
        auth_op *op = as->auth_ops.next;
        if (op->call) rpc_call_set_user(op->call, NULL);
        op->timer = NULL;
        auth_free(op);
    }
    free(as);
}
