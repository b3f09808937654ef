/* The mesh registry's admin methods. See meshcore/mesh_admin.h.
 *
 * Every call becomes a mop: the request is copied into the op's own arena
 * on the loop thread, the work (store reads and writes, decoding, building
 * the response in the same arena) runs on a worker, and the answer is sent
 * from the loop. As in sds/admin_service.c, the op is shared by the call
 * and its job and freed by whichever of the two finishes last. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "identity/spiffe_id.h"
#include "lib/admin_peer.h"
#include "lib/log.h"
#include "lib/quote.h"
#include "meshcore/mesh_admin.h"
#include "meshcore/policy.h"
#include "meshcore/yaml_load.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "storage/store_mesh.h"

#define A_PREFIX "/meshid.admin.v1.Admin/"
#define MSG_MAX 1280
#define OP_ARENA_LIMIT ((size_t)64 << 20)
#define ADMIN_QUOTE_MAX 128   /* bytes of a caller's string echoed in a message */
#define DECISION_TEXT_MAX 512

typedef struct mop mop;
typedef void (*mop_work_fn)(mop *op);

typedef struct {
    const char *path;
    const ProtobufCMessageDescriptor *req_desc;
    mop_work_fn work;
    const char *refused_event; /* writes: the audit event type of a refusal; NULL for reads */
} mop_method;

typedef struct {
    mesh_admin *ma;
    const mop_method *m;
} method_ctx;

#define N_METHODS 8

struct mesh_admin {
    mesh_admin_opts o;
    char td[SPIFFE_TD_MAX + 1];
    pthread_mutex_t lock; /* serialises writes (plan, check, commit) */
    method_ctx ctx[N_METHODS];
    bool shutting_down;
};

struct mop {
    mesh_admin *ma;
    rpc_call *call; /* NULL once the call is over */
    bool job;       /* a workpool job is outstanding */
    mop_work_fn work;
    const char *refused_event; /* see mop_method */
    bool refused;              /* op_fail / op_refuse: nothing was written */
    bool dry_run;              /* nothing was to be written: a refusal is not audited */
    char actor[64];
    arena *a;                    /* request copy and response */
    const ProtobufCMessage *req; /* in a */
    ProtobufCMessage *resp;      /* in a, built by the worker */
    rpc_code code;
    char msg[MSG_MAX];
    int64_t changed_rev; /* > 0: the registry changed to this revision */
};

/* ---- plumbing (loop thread) ------------------------------------------------------- */

static rpc_code code_for(mid_err err)
{
    switch (err) {
    case MID_E_OK: return RPC_OK;
    case MID_E_INVALID:
    case MID_E_TOO_LARGE:
    case MID_E_USAGE: return RPC_INVALID_ARGUMENT;
    case MID_E_NOT_FOUND: return RPC_NOT_FOUND;
    case MID_E_EXISTS: return RPC_ALREADY_EXISTS;
    case MID_E_DENIED: return RPC_PERMISSION_DENIED;
    case MID_E_STATE: return RPC_FAILED_PRECONDITION;
    case MID_E_BUSY: return RPC_UNAVAILABLE;
    case MID_E_NOMEM: return RPC_RESOURCE_EXHAUSTED;
    default: return RPC_INTERNAL;
    }
}

static void finish(rpc_call *call, rpc_code code, const char *msg)
{
    if (!mid_is_ok(rpc_call_finish(call, code, msg)))
        LOG_DEBUG("mesh admin: finish %s: %s", rpc_call_method(call), mid_errmsg());
}

/* See lib/admin_peer.h. */
static bool authorised(rpc_call *call, char actor[ADMIN_ACTOR_MAX])
{
    return admin_peer_check(call, "mesh admin", actor, ADMIN_ACTOR_MAX);
}

static void op_free(mop *op)
{
    arena_free(op->a);
    free(op);
}

static void op_call_done(rpc_call *call, bool cancelled, void *ctx)
{
    (void)cancelled;
    (void)ctx;
    mop *op = rpc_call_user(call);
    if (!op) return;
    op->call = NULL;
    if (!op->job) op_free(op);
}

/* A write refused or failed before anything was written is audited like a
 * committed one (same event type): outcome "denied" for what the caller
 * asked (invalid documents, conflicts, unknown resources), "error" for the
 * server's own failures; the reason is the message the caller got. */
static void audit_refusal(mop *op)
{
    char reason[STORE_AUDIT_TEXT_MAX]; /* what the store takes; a longer one is cut */
    quote_printable(op->msg, sizeof reason, reason, sizeof reason);
    bool server_side = op->code == RPC_INTERNAL || op->code == RPC_UNAVAILABLE ||
                       op->code == RPC_RESOURCE_EXHAUSTED;
    store_audit_event ev = {.actor = op->actor, .event = op->refused_event,
                            .outcome = server_side ? "error" : "denied", .reason = reason};
    if (!mid_is_ok(store_audit_append(op->ma->o.st, &ev, NULL)))
        LOG_ERROR("mesh admin: cannot audit a refused %s: %s", op->refused_event, mid_errmsg());
}

static void op_work(void *arg)
{
    mop *op = arg;
    op->work(op);
    if (op->refused && op->refused_event && !op->dry_run) audit_refusal(op);
}

static void op_done(void *arg, bool ran)
{
    mop *op = arg;
    mesh_admin *ma = op->ma;
    op->job = false;
    if (ran && op->changed_rev > 0 && ma->o.changed && !ma->shutting_down)
        ma->o.changed(ma->o.changed_ctx, op->changed_rev);
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
    if (!op->resp || !mid_is_ok(rpc_call_send(call, op->resp))) {
        LOG_WARN("mesh admin: cannot answer %s: %s", rpc_call_method(call),
                 op->resp ? mid_errmsg() : "no response");
        rpc_call_abort(call, RPC_INTERNAL, "cannot send the response");
        return;
    }
    finish(call, RPC_OK, NULL);
}

/* Copies the request into the op's arena: it must outlive a cancelled call. */
static bool copy_request(mop *op, const ProtobufCMessage *req)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return false;
    protobuf_c_message_pack(req, buf);
    op->req = protobuf_c_message_unpack(req->descriptor, arena_allocator(op->a), len, buf);
    free(buf);
    return op->req != NULL;
}

static void on_start(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    const method_ctx *mc = ctx;
    mesh_admin *ma = mc->ma;
    char actor[64];
    if (ma->shutting_down) {
        finish(call, RPC_UNAVAILABLE, "server shutting down");
        return;
    }
    if (!authorised(call, actor)) return;
    mop *op = calloc(1, sizeof *op);
    if (!op || !mid_is_ok(arena_new(OP_ARENA_LIMIT, &op->a)) || !copy_request(op, req)) {
        if (op) op_free(op);
        finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->ma = ma;
    op->call = call;
    op->work = mc->m->work;
    op->refused_event = mc->m->refused_event;
    op->code = RPC_OK;
    snprintf(op->actor, sizeof op->actor, "%s", actor);
    rpc_call_set_user(call, op);
    if (!mid_is_ok(workpool_submit(ma->o.wp, op_work, op_done, op))) {
        finish(call, RPC_UNAVAILABLE, "server busy, retry later");
        return; /* freed by op_call_done */
    }
    op->job = true;
}

/* ---- helpers for the workers ----------------------------------------------------- */

/* Records the thread's last error as the op's outcome. */
static void op_fail(mop *op, mid_result r, const char *what)
{
    op->refused = true;
    op->code = code_for(r.err);
    if (op->code == RPC_INTERNAL) {
        LOG_ERROR("mesh admin: %s: %s", what, mid_errmsg());
        snprintf(op->msg, sizeof op->msg, "internal error during %s: %s", what, mid_errmsg());
    } else {
        snprintf(op->msg, sizeof op->msg, "%s", mid_errmsg());
    }
}

static void op_refuse(mop *op, rpc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void op_refuse(mop *op, rpc_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->msg, sizeof op->msg, fmt, ap);
    va_end(ap);
    op->code = code;
    op->refused = true;
}

/* The answer could not be built (the write, if any, is done: not a refusal). */
static void op_nomem(mop *op)
{
    snprintf(op->msg, sizeof op->msg, "response too large");
    op->code = RPC_RESOURCE_EXHAUSTED;
}

static char *adup(arena *a, const char *s)
{
    return arena_strndup(a, s ? s : "", s ? strlen(s) : 0);
}

/* A caller's string fit for a message: at most ADMIN_QUOTE_MAX bytes, control
 * bytes as '?'. */
static void quote(const char *in, char out[ADMIN_QUOTE_MAX + 4])
{
    size_t o = 0;
    for (; in && *in && o < ADMIN_QUOTE_MAX; in++) out[o++] = ((unsigned char)*in < 0x20 || *in == 0x7f) ? '?' : *in;
    if (in && *in) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* A service of a registry by "ns/name", "name" (default namespace) or host. */
static const mesh_service *reg_find(const mesh_registry *reg, const char *q)
{
    size_t n = mesh_registry_n_services(reg);
    const char *slash = strchr(q, '/');
    for (size_t i = 0; i < n; i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        if (slash) {
            size_t nl = (size_t)(slash - q);
            if (strlen(s->namespace_) == nl && strncmp(s->namespace_, q, nl) == 0 &&
                strcmp(s->name, slash + 1) == 0)
                return s;
        } else if (strcmp(s->namespace_, MESH_DEFAULT_NAMESPACE) == 0 && strcmp(s->name, q) == 0) {
            return s;
        }
    }
    if (slash) return NULL;
    for (size_t i = 0; i < n; i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        for (size_t h = 0; h < s->n_hosts; h++)
            if (strcasecmp(s->hosts[h], q) == 0) return s;
    }
    return NULL;
}

static Meshid__Admin__V1__Resource *row_to_proto(arena *a, const store_mesh_row *row)
{
    Meshid__Admin__V1__Resource *m = arena_alloc(a, sizeof *m);
    if (!m) return NULL;
    meshid__admin__v1__resource__init(m);
    m->kind = adup(a, row->kind);
    m->namespace_ = adup(a, row->namespace_);
    m->name = adup(a, row->name);
    m->spec_json = adup(a, row->spec_json);
    m->revision = row->revision;
    m->created_at = row->created_at;
    m->updated_at = row->updated_at;
    if (!m->kind || !m->namespace_ || !m->name || !m->spec_json) return NULL;
    return m;
}

/* Canonical text of an IP literal into out; false when it is none. */
static bool canon_address(const char *in, char out[INET6_ADDRSTRLEN])
{
    unsigned char bin[16];
    int family = strchr(in, ':') ? AF_INET6 : AF_INET;
    if (strlen(in) >= INET6_ADDRSTRLEN || inet_pton(family, in, bin) != 1) return false;
    return inet_ntop(family, bin, out, INET6_ADDRSTRLEN) != NULL;
}

/* ---- apply ------------------------------------------------------------------------- */

mid_result mesh_admin_apply(mesh_admin *ma, const mesh_doc *docs, size_t n, const char *actor,
                            bool dry_run, mesh_plan **plan, int64_t *revision)
{
    if (plan) *plan = NULL;
    MID_ENSURE(ma && (docs || n == 0) && actor, MID_E_INVALID, "apply needs documents and an actor");
    mesh_plan *p = NULL;
    mid_result r = MID_OK_RESULT;
    int64_t rev = 0;
    pthread_mutex_lock(&ma->lock);
    for (int attempt = 0; attempt < MESH_ADMIN_RETRIES; attempt++) {
        mesh_plan_free(p);
        p = NULL;
        r = mesh_plan_new(ma->o.st, ma->td, &p);
        if (mid_is_ok(r)) r = mesh_plan_put_docs(p, docs, n);
        if (mid_is_ok(r)) r = mesh_plan_check(p, NULL);
        if (mid_is_ok(r) && dry_run) rev = mesh_plan_revision(p);
        if (mid_is_ok(r) && !dry_run) {
            mesh_commit_opts co = {.actor = actor};
            r = mesh_plan_commit(ma->o.st, p, &co, &rev);
        }
        if (r.err != MID_E_STATE) break;
    }
    pthread_mutex_unlock(&ma->lock);
    if (!mid_is_ok(r)) {
        mesh_plan_free(p);
        return r;
    }
    if (revision) *revision = rev;
    if (plan) *plan = p;
    else mesh_plan_free(p);
    return mid_ok();
}

static const char *kind_noun(mesh_kind k)
{
    return k == MESH_KIND_SERVICE ? "a ServiceEntry" : "an AuthorizationPolicy";
}

/* Parses every file into one document list (all or nothing). */
static mid_result parse_files(const Meshid__Admin__V1__ApplyResourcesRequest *req,
                              mesh_doc **docs, size_t *n)
{
    *docs = NULL;
    *n = 0;
    MID_ENSURE(req->n_files > 0, MID_E_INVALID, "no files to apply");
    MID_ENSURE(req->n_files <= MESH_ADMIN_FILES_MAX, MID_E_TOO_LARGE,
               "%zu files is over the limit of %d", req->n_files, MESH_ADMIN_FILES_MAX);
    mesh_doc *all = NULL;
    size_t total = 0;
    mid_result r = MID_OK_RESULT;
    for (size_t i = 0; i < req->n_files; i++) {
        const Meshid__Admin__V1__SourceFile *f = req->files[i];
        char q[ADMIN_QUOTE_MAX + 4];
        quote(f->name, q);
        size_t nl = strlen(f->name);
        MID_CHECK(r, nl > 0 && nl <= MESH_ADMIN_FILE_NAME_MAX, MID_E_INVALID,
                  "file %zu: a name of 1 to %d bytes is required", i, MESH_ADMIN_FILE_NAME_MAX);
        for (size_t k = 0; k < nl; k++)
            MID_CHECK(r, (unsigned char)f->name[k] >= 0x20 && f->name[k] != 0x7f, MID_E_INVALID,
                      "file name \"%s\" has control characters", q);
        mesh_doc *d = NULL;
        size_t dn = 0;
        MID_TRY(r, mesh_yaml_parse((const char *)f->content.data, f->content.len, f->name, &d, &dn));
        if (dn == 0) {
            free(d);
            continue;
        }
        mesh_doc *grown = realloc(all, (total + dn) * sizeof *grown);
        if (!grown) {
            mesh_doc_list_free(d, dn);
            MID_CHECK_MEM(r, NULL);
        }
        all = grown;
        memcpy(all + total, d, dn * sizeof *d);
        total += dn;
        free(d); /* the records moved into `all` */
    }
    *docs = all;
    *n = total;
    all = NULL;
    total = 0;
out:
    mesh_doc_list_free(all, total);
    return r;
}

static void apply_work(mop *op)
{
    const Meshid__Admin__V1__ApplyResourcesRequest *req =
        (const Meshid__Admin__V1__ApplyResourcesRequest *)op->req;
    bool only = req->only_kind[0] != '\0';
    mesh_kind only_kind = MESH_KIND_SERVICE;
    mesh_doc *docs = NULL;
    size_t n = 0;
    mesh_plan *plan = NULL;
    int64_t rev = 0;
    mid_result r = MID_OK_RESULT;
    op->dry_run = req->dry_run;
    if (only) MID_TRY(r, mesh_store_kind_parse(req->only_kind, &only_kind));
    MID_TRY(r, parse_files(req, &docs, &n));
    MID_CHECK(r, n > 0, MID_E_INVALID,
              "no ServiceEntry or AuthorizationPolicy documents in the %zu file(s) given",
              req->n_files);
    for (size_t i = 0; only && i < n; i++)
        MID_CHECK(r, docs[i].kind == only_kind, MID_E_INVALID,
                  "%s: %s is refused here: only %s documents are accepted (use 'meshid apply' "
                  "for both kinds)",
                  docs[i].source ? docs[i].source : "document", kind_noun(docs[i].kind),
                  only_kind == MESH_KIND_SERVICE ? "ServiceEntry" : "AuthorizationPolicy");
    MID_TRY(r, mesh_admin_apply(op->ma, docs, n, op->actor, req->dry_run, &plan, &rev));

    arena *a = op->a;
    Meshid__Admin__V1__ApplyResourcesResponse *resp = arena_alloc(a, sizeof *resp);
    size_t ni = mesh_plan_n_items(plan);
    Meshid__Admin__V1__AppliedResource *items = arena_calloc(a, (ni ? ni : 1) * sizeof *items);
    Meshid__Admin__V1__AppliedResource **ptrs = arena_calloc(a, (ni ? ni : 1) * sizeof *ptrs);
    if (!resp || !items || !ptrs) {
        op_nomem(op);
        goto done;
    }
    meshid__admin__v1__apply_resources_response__init(resp);
    for (size_t i = 0; i < ni; i++) {
        const mesh_plan_item *it = mesh_plan_item_at(plan, i);
        meshid__admin__v1__applied_resource__init(&items[i]);
        items[i].kind = adup(a, mesh_store_kind(it->kind));
        items[i].namespace_ = adup(a, it->namespace_);
        items[i].name = adup(a, it->name);
        items[i].action = adup(a, mesh_plan_action_name(it->action));
        items[i].source = adup(a, it->source);
        if (!items[i].kind || !items[i].namespace_ || !items[i].name || !items[i].action ||
            !items[i].source) {
            op_nomem(op);
            goto done;
        }
        ptrs[i] = &items[i];
    }
    resp->resources = ptrs;
    resp->n_resources = ni;
    resp->revision = rev;
    resp->dry_run = req->dry_run;
    op->resp = &resp->base;
    if (!req->dry_run && mesh_plan_n_changes(plan) > 0) op->changed_rev = rev;
    goto done;
out:
    op_fail(op, r, "applying resources");
done:
    mesh_plan_free(plan);
    mesh_doc_list_free(docs, n);
}

/* ---- resources ---------------------------------------------------------------------- */

/* Finds (kind, query) in a plan: services also by host. Copies the key. */
static mid_result resolve(const mesh_plan *p, mesh_kind kind, const char *q, char ns[MESH_NAME_MAX + 1],
                          char name[MESH_NAME_MAX + 1])
{
    char qq[ADMIN_QUOTE_MAX + 4];
    quote(q, qq);
    MID_ENSURE(q[0] != '\0', MID_E_INVALID, "a %s name is required", mesh_store_kind(kind));
    const char *fns = NULL, *fname = NULL;
    if (kind == MESH_KIND_SERVICE) {
        const mesh_service *s = mesh_plan_find_service(p, q);
        if (s) fns = s->namespace_, fname = s->name;
    } else {
        const mesh_policy *pol = mesh_plan_find_policy(p, q);
        if (pol) fns = pol->namespace_, fname = pol->name;
    }
    MID_ENSURE(fns != NULL, MID_E_NOT_FOUND, "no %s \"%s\"%s", mesh_store_kind(kind), qq,
               kind == MESH_KIND_SERVICE ? " (by namespace/name, name or host)" : "");
    snprintf(ns, MESH_NAME_MAX + 1, "%s", fns);
    snprintf(name, MESH_NAME_MAX + 1, "%s", fname);
    return mid_ok();
}

static void delete_work(mop *op)
{
    const Meshid__Admin__V1__DeleteResourceRequest *req =
        (const Meshid__Admin__V1__DeleteResourceRequest *)op->req;
    mesh_admin *ma = op->ma;
    mesh_kind kind;
    mesh_plan *p = NULL;
    store_mesh_row row = {0};
    char ns[MESH_NAME_MAX + 1], name[MESH_NAME_MAX + 1];
    int64_t rev = 0;
    mid_result r = mesh_store_kind_parse(req->kind, &kind);
    if (!mid_is_ok(r)) {
        op_fail(op, r, "deleting");
        return;
    }
    pthread_mutex_lock(&ma->lock);
    for (int attempt = 0; attempt < MESH_ADMIN_RETRIES; attempt++) {
        mesh_plan_free(p);
        p = NULL;
        store_mesh_row_clear(&row);
        r = mesh_plan_new(ma->o.st, ma->td, &p);
        if (mid_is_ok(r)) r = resolve(p, kind, req->name, ns, name);
        if (mid_is_ok(r)) r = store_mesh_get(ma->o.st, mesh_store_kind(kind), ns, name, &row);
        if (mid_is_ok(r)) r = mesh_plan_delete(p, kind, ns, name);
        if (mid_is_ok(r)) r = mesh_plan_check(p, NULL);
        if (mid_is_ok(r)) {
            mesh_commit_opts co = {.actor = op->actor};
            r = mesh_plan_commit(ma->o.st, p, &co, &rev);
        }
        if (r.err != MID_E_STATE) break;
    }
    pthread_mutex_unlock(&ma->lock);
    if (!mid_is_ok(r)) {
        op_fail(op, r, "deleting");
        goto out;
    }
    Meshid__Admin__V1__DeleteResourceResponse *resp = arena_alloc(op->a, sizeof *resp);
    if (!resp) {
        op_nomem(op);
        goto out;
    }
    meshid__admin__v1__delete_resource_response__init(resp);
    resp->resource = row_to_proto(op->a, &row);
    resp->revision = rev;
    if (!resp->resource) {
        op_nomem(op);
        goto out;
    }
    op->resp = &resp->base;
    op->changed_rev = rev;
out:
    store_mesh_row_clear(&row);
    mesh_plan_free(p);
}

static void list_work(mop *op)
{
    const Meshid__Admin__V1__ListResourcesRequest *req =
        (const Meshid__Admin__V1__ListResourcesRequest *)op->req;
    mesh_kind kind;
    store_mesh_row *rows = NULL;
    size_t n = 0;
    int64_t rev = 0;
    mid_result r = MID_OK_RESULT;
    if (req->kind[0] != '\0') MID_TRY(r, mesh_store_kind_parse(req->kind, &kind));
    MID_TRY(r, store_mesh_list(op->ma->o.st, req->kind[0] ? mesh_store_kind(kind) : NULL, &rows, &n,
                               &rev));
    Meshid__Admin__V1__ListResourcesResponse *resp = arena_alloc(op->a, sizeof *resp);
    Meshid__Admin__V1__Resource **v = arena_calloc(op->a, (n ? n : 1) * sizeof *v);
    bool ok = resp && v;
    for (size_t i = 0; ok && i < n; i++) ok = (v[i] = row_to_proto(op->a, &rows[i])) != NULL;
    if (!ok) {
        op_nomem(op);
        goto done;
    }
    meshid__admin__v1__list_resources_response__init(resp);
    resp->resources = v;
    resp->n_resources = n;
    resp->revision = rev;
    op->resp = &resp->base;
    goto done;
out:
    op_fail(op, r, "listing resources");
done:
    store_mesh_list_free(rows, n);
}

static void get_work(mop *op)
{
    const Meshid__Admin__V1__GetResourceRequest *req =
        (const Meshid__Admin__V1__GetResourceRequest *)op->req;
    mesh_kind kind;
    mesh_plan *p = NULL;
    store_mesh_row row = {0};
    char ns[MESH_NAME_MAX + 1], name[MESH_NAME_MAX + 1];
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, mesh_store_kind_parse(req->kind, &kind));
    MID_TRY(r, mesh_plan_new(op->ma->o.st, op->ma->td, &p));
    MID_TRY(r, resolve(p, kind, req->name, ns, name));
    MID_TRY(r, store_mesh_get(op->ma->o.st, mesh_store_kind(kind), ns, name, &row));
    Meshid__Admin__V1__GetResourceResponse *resp = arena_alloc(op->a, sizeof *resp);
    if (resp) {
        meshid__admin__v1__get_resource_response__init(resp);
        resp->resource = row_to_proto(op->a, &row);
    }
    if (!resp || !resp->resource) op_nomem(op);
    else op->resp = &resp->base;
    goto done;
out:
    op_fail(op, r, "reading the resource");
done:
    store_mesh_row_clear(&row);
    mesh_plan_free(p);
}

/* ---- endpoints ------------------------------------------------------------------------- */

static void endpoint_clear(mesh_endpoint *e)
{
    free(e->address);
    for (size_t i = 0; e->ports && i < e->n_ports; i++) free(e->ports[i].name);
    free(e->ports);
    for (size_t i = 0; e->labels && i < e->n_labels; i++) {
        free(e->labels[i].key);
        free(e->labels[i].value);
    }
    free(e->labels);
    free(e->spiffe_id);
    free(e->service_account);
    memset(e, 0, sizeof *e);
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const mesh_label *)a)->key, ((const mesh_label *)b)->key);
}

/* Builds the endpoint of an AddEndpoint request (heap, as model.h owns it). */
static mid_result endpoint_from_request(const Meshid__Admin__V1__AddEndpointRequest *req,
                                        const char *address, mesh_endpoint *e)
{
    memset(e, 0, sizeof *e);
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, req->n_ports <= MESH_PORTS_MAX, MID_E_TOO_LARGE,
              "%zu ports is over the limit of %d", req->n_ports, MESH_PORTS_MAX);
    MID_CHECK(r, req->n_labels <= MESH_LABELS_MAX, MID_E_TOO_LARGE,
              "%zu labels is over the limit of %d", req->n_labels, MESH_LABELS_MAX);
    if (req->health[0]) {
        r = mesh_health_parse(req->health, &e->health);
        if (!mid_is_ok(r)) {
            char q[ADMIN_QUOTE_MAX + 4];
            quote(req->health, q);
            MID_CHECK(r, false, MID_E_INVALID,
                      "health \"%s\" is not HEALTHY, UNHEALTHY or DRAINING", q);
        }
    }
    e->address = strdup(address);
    MID_CHECK_MEM(r, e->address);
    if (req->n_ports) {
        e->ports = calloc(req->n_ports, sizeof *e->ports);
        MID_CHECK_MEM(r, e->ports);
    }
    for (size_t i = 0; i < req->n_ports; i++) {
        e->ports[i].name = strdup(req->ports[i]->key);
        e->ports[i].number = req->ports[i]->value;
        MID_CHECK_MEM(r, e->ports[i].name);
        e->n_ports = i + 1;
    }
    if (req->n_labels) {
        e->labels = calloc(req->n_labels, sizeof *e->labels);
        MID_CHECK_MEM(r, e->labels);
    }
    for (size_t i = 0; i < req->n_labels; i++) {
        e->labels[i].key = strdup(req->labels[i]->key);
        e->labels[i].value = strdup(req->labels[i]->value);
        e->n_labels = i + 1;
        MID_CHECK_MEM(r, e->labels[i].key);
        MID_CHECK_MEM(r, e->labels[i].value);
    }
    if (e->n_labels > 1) qsort(e->labels, e->n_labels, sizeof *e->labels, label_cmp);
    if (req->spiffe_id[0]) {
        e->spiffe_id = strdup(req->spiffe_id);
        MID_CHECK_MEM(r, e->spiffe_id);
    }
    if (req->service_account[0]) {
        e->service_account = strdup(req->service_account);
        MID_CHECK_MEM(r, e->service_account);
    }
out:
    if (!mid_is_ok(r)) endpoint_clear(e);
    return r;
}

/* Replaces (or appends) `e` in a copy of `cur`, or removes the endpoint at
 * `address` when e is NULL. *found: an endpoint had that address. */
static mid_result service_with_endpoint(const mesh_service *cur, const char *address,
                                        mesh_endpoint *e, mesh_service **out, bool *found)
{
    mesh_service *s = NULL;
    MID_GUARD(mesh_service_clone(cur, &s));
    *found = false;
    size_t at = s->n_endpoints;
    for (size_t i = 0; i < s->n_endpoints; i++) {
        char canon[INET6_ADDRSTRLEN];
        const char *have = canon_address(s->endpoints[i].address, canon) ? canon
                                                                          : s->endpoints[i].address;
        if (strcmp(have, address) == 0) {
            at = i;
            *found = true;
            break;
        }
    }
    if (e == NULL) {
        if (*found) {
            endpoint_clear(&s->endpoints[at]);
            memmove(&s->endpoints[at], &s->endpoints[at + 1],
                    (s->n_endpoints - at - 1) * sizeof *s->endpoints);
            s->n_endpoints--;
        }
    } else if (*found) {
        endpoint_clear(&s->endpoints[at]);
        s->endpoints[at] = *e;
        memset(e, 0, sizeof *e);
    } else {
        if (s->n_endpoints >= MESH_ENDPOINTS_MAX) {
            mesh_service_free(s);
            MID_BAIL(MID_E_TOO_LARGE, "service %s/%s already has %d endpoints", cur->namespace_,
                     cur->name, MESH_ENDPOINTS_MAX);
        }
        mesh_endpoint *grown = realloc(s->endpoints, (s->n_endpoints + 1) * sizeof *grown);
        if (!grown) {
            mesh_service_free(s);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
        s->endpoints = grown;
        s->endpoints[s->n_endpoints++] = *e;
        memset(e, 0, sizeof *e);
    }
    *out = s;
    return mid_ok();
}

/* One endpoint change: plan, check, commit; retried when it lost a race. */
static mid_result endpoint_change(mop *op, const char *service, const char *address,
                                  const Meshid__Admin__V1__AddEndpointRequest *add, char *svc_key,
                                  size_t key_cap, bool *replaced, int64_t *rev)
{
    mesh_admin *ma = op->ma;
    mesh_plan *p = NULL;
    mesh_service *next = NULL;
    mesh_endpoint e = {0};
    mid_result r = MID_OK_RESULT;
    char q[ADMIN_QUOTE_MAX + 4], aq[ADMIN_QUOTE_MAX + 4];
    quote(service, q);
    quote(address, aq);
    pthread_mutex_lock(&ma->lock);
    for (int attempt = 0; attempt < MESH_ADMIN_RETRIES; attempt++) {
        mesh_plan_free(p);
        mesh_service_free(next);
        endpoint_clear(&e);
        p = NULL;
        next = NULL;
        MID_TRY(r, mesh_plan_new(ma->o.st, ma->td, &p));
        const mesh_service *cur = mesh_plan_find_service(p, service);
        MID_CHECK(r, cur != NULL, MID_E_NOT_FOUND,
                  "no service \"%s\" (by namespace/name, name or host)", q);
        snprintf(svc_key, key_cap, "%s/%s", cur->namespace_, cur->name);
        if (add) MID_TRY(r, endpoint_from_request(add, address, &e));
        bool found = false;
        MID_TRY(r, service_with_endpoint(cur, address, add ? &e : NULL, &next, &found));
        MID_CHECK(r, add || found, MID_E_NOT_FOUND, "service %s has no endpoint %s", svc_key, aq);
        *replaced = found;
        r = mesh_plan_put_service(p, next, NULL);
        if (!mid_is_ok(r) && r.err != MID_E_NOMEM) {
            char msg[MSG_MAX];
            snprintf(msg, sizeof msg, "%s", mid_errmsg());
            r = mid_fail(r.err, __FILE__, __LINE__, "service %s: %s", svc_key, msg);
        }
        MID_TRY(r, r);
        MID_TRY(r, mesh_plan_check(p, NULL));
        mesh_commit_opts co = {.actor = op->actor,
                               .event = add ? "mesh.endpoint.add" : "mesh.endpoint.remove",
                               .address = address};
        r = mesh_plan_commit(ma->o.st, p, &co, rev);
        if (r.err != MID_E_STATE) break;
    }
    if (mid_is_ok(r) && mesh_plan_n_changes(p) > 0) op->changed_rev = *rev;
out:
    pthread_mutex_unlock(&ma->lock);
    endpoint_clear(&e);
    mesh_service_free(next);
    mesh_plan_free(p);
    return r;
}

static void ep_add_work(mop *op)
{
    const Meshid__Admin__V1__AddEndpointRequest *req =
        (const Meshid__Admin__V1__AddEndpointRequest *)op->req;
    char addr[INET6_ADDRSTRLEN], q[ADMIN_QUOTE_MAX + 4], key[2 * MESH_NAME_MAX + 2];
    quote(req->address, q);
    if (req->service[0] == '\0') {
        op_refuse(op, RPC_INVALID_ARGUMENT, "a service is required");
        return;
    }
    if (!canon_address(req->address, addr)) {
        op_refuse(op, RPC_INVALID_ARGUMENT,
                  "address: \"%s\" is not an IPv4 or IPv6 address (DNS names are not supported)", q);
        return;
    }
    if (req->spiffe_id[0] && req->service_account[0]) {
        op_refuse(op, RPC_INVALID_ARGUMENT,
                  "give the endpoint's SPIFFE ID or its service account, not both");
        return;
    }
    bool replaced = false;
    int64_t rev = 0;
    mid_result r = endpoint_change(op, req->service, addr, req, key, sizeof key, &replaced, &rev);
    if (!mid_is_ok(r)) {
        op_fail(op, r, "adding the endpoint");
        return;
    }
    Meshid__Admin__V1__AddEndpointResponse *resp = arena_alloc(op->a, sizeof *resp);
    if (resp) {
        meshid__admin__v1__add_endpoint_response__init(resp);
        resp->service = adup(op->a, key);
        resp->replaced = replaced;
        resp->revision = rev;
    }
    if (!resp || !resp->service) op_nomem(op);
    else op->resp = &resp->base;
}

static void ep_remove_work(mop *op)
{
    const Meshid__Admin__V1__RemoveEndpointRequest *req =
        (const Meshid__Admin__V1__RemoveEndpointRequest *)op->req;
    char addr[INET6_ADDRSTRLEN], key[2 * MESH_NAME_MAX + 2];
    if (req->service[0] == '\0' || req->address[0] == '\0') {
        op_refuse(op, RPC_INVALID_ARGUMENT, "a service and an address are required");
        return;
    }
    if (!canon_address(req->address, addr)) {
        char q[ADMIN_QUOTE_MAX + 4];
        quote(req->address, q);
        op_refuse(op, RPC_INVALID_ARGUMENT, "address: \"%s\" is not an IPv4 or IPv6 address", q);
        return;
    }
    bool found = false;
    int64_t rev = 0;
    mid_result r = endpoint_change(op, req->service, addr, NULL, key, sizeof key, &found, &rev);
    if (!mid_is_ok(r)) {
        op_fail(op, r, "removing the endpoint");
        return;
    }
    Meshid__Admin__V1__RemoveEndpointResponse *resp = arena_alloc(op->a, sizeof *resp);
    if (resp) {
        meshid__admin__v1__remove_endpoint_response__init(resp);
        resp->service = adup(op->a, key);
        resp->revision = rev;
    }
    if (!resp || !resp->service) op_nomem(op);
    else op->resp = &resp->base;
}

static Meshid__Admin__V1__Endpoint *endpoint_to_proto(arena *a, const mesh_service *s,
                                                      const mesh_endpoint *e)
{
    Meshid__Admin__V1__Endpoint *m = arena_alloc(a, sizeof *m);
    if (!m) return NULL;
    meshid__admin__v1__endpoint__init(m);
    char key[2 * MESH_NAME_MAX + 2];
    snprintf(key, sizeof key, "%s/%s", s->namespace_, s->name);
    m->service = adup(a, key);
    m->address = adup(a, e->address);
    m->spiffe_id = adup(a, e->spiffe_id);
    m->service_account = adup(a, e->service_account);
    m->health = adup(a, mesh_health_name(e->health));
    if (!m->service || !m->address || !m->spiffe_id || !m->service_account || !m->health)
        return NULL;
    if (e->n_ports) {
        Meshid__Admin__V1__Endpoint__PortsEntry *pe = arena_alloc(a, e->n_ports * sizeof *pe);
        m->ports = arena_alloc(a, e->n_ports * sizeof *m->ports);
        if (!pe || !m->ports) return NULL;
        for (size_t i = 0; i < e->n_ports; i++) {
            meshid__admin__v1__endpoint__ports_entry__init(&pe[i]);
            pe[i].key = adup(a, e->ports[i].name);
            pe[i].value = e->ports[i].number;
            if (!pe[i].key) return NULL;
            m->ports[i] = &pe[i];
        }
        m->n_ports = e->n_ports;
    }
    if (e->n_labels) {
        Meshid__Admin__V1__Endpoint__LabelsEntry *le = arena_alloc(a, e->n_labels * sizeof *le);
        m->labels = arena_alloc(a, e->n_labels * sizeof *m->labels);
        if (!le || !m->labels) return NULL;
        for (size_t i = 0; i < e->n_labels; i++) {
            meshid__admin__v1__endpoint__labels_entry__init(&le[i]);
            le[i].key = adup(a, e->labels[i].key);
            le[i].value = adup(a, e->labels[i].value);
            if (!le[i].key || !le[i].value) return NULL;
            m->labels[i] = &le[i];
        }
        m->n_labels = e->n_labels;
    }
    return m;
}

static void ep_list_work(mop *op)
{
    const Meshid__Admin__V1__ListEndpointsRequest *req =
        (const Meshid__Admin__V1__ListEndpointsRequest *)op->req;
    mesh_registry *reg = NULL;
    mid_result r = mesh_registry_load(op->ma->o.st, op->ma->td, &reg);
    if (!mid_is_ok(r)) {
        op_fail(op, r, "reading the registry");
        return;
    }
    const mesh_service *only = NULL;
    if (req->service[0]) {
        only = reg_find(reg, req->service);
        if (!only) {
            char q[ADMIN_QUOTE_MAX + 4];
            quote(req->service, q);
            op_refuse(op, RPC_NOT_FOUND, "no service \"%s\" (by namespace/name, name or host)", q);
            goto out;
        }
    }
    size_t ns = mesh_registry_n_services(reg), total = 0;
    for (size_t i = 0; i < ns; i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        if (!only || s == only) total += s->n_endpoints;
    }
    Meshid__Admin__V1__ListEndpointsResponse *resp = arena_alloc(op->a, sizeof *resp);
    Meshid__Admin__V1__Endpoint **v = arena_calloc(op->a, (total ? total : 1) * sizeof *v);
    if (!resp || !v) {
        op_nomem(op);
        goto out;
    }
    meshid__admin__v1__list_endpoints_response__init(resp);
    size_t k = 0;
    for (size_t i = 0; i < ns; i++) {
        const mesh_service *s = mesh_registry_service(reg, i);
        if (only && s != only) continue;
        for (size_t e = 0; e < s->n_endpoints; e++) {
            if (!(v[k++] = endpoint_to_proto(op->a, s, &s->endpoints[e]))) {
                op_nomem(op);
                goto out;
            }
        }
    }
    resp->endpoints = v;
    resp->n_endpoints = k;
    resp->revision = mesh_registry_revision(reg);
    op->resp = &resp->base;
out:
    mesh_registry_unref(reg);
}

/* ---- policy check ---------------------------------------------------------------------- */

static bool labels_equal(const mesh_endpoint *a, const mesh_endpoint *b)
{
    if (a->n_labels != b->n_labels) return false;
    for (size_t i = 0; i < a->n_labels; i++)
        if (strcmp(a->labels[i].key, b->labels[i].key) != 0 ||
            strcmp(a->labels[i].value, b->labels[i].value) != 0)
            return false;
    return true;
}

/* HTTP when an HTTP attribute is given, else by the protocol of the port
 * (a service port number, target port or endpoint port override), else by
 * the service's first port. */
static int request_is_http(const mesh_service *s, const Meshid__Admin__V1__CheckPolicyRequest *req)
{
    if (req->method[0] || req->path[0] || req->host[0]) return 1;
    if (req->port == 0) return mesh_protocol_is_http(s->ports[0].protocol);
    for (size_t i = 0; i < s->n_ports; i++)
        if (s->ports[i].number == req->port || s->ports[i].target_port == req->port)
            return mesh_protocol_is_http(s->ports[i].protocol);
    for (size_t e = 0; e < s->n_endpoints; e++)
        for (size_t k = 0; k < s->endpoints[e].n_ports; k++) {
            if (s->endpoints[e].ports[k].number != req->port) continue;
            for (size_t i = 0; i < s->n_ports; i++)
                if (strcmp(s->ports[i].name, s->endpoints[e].ports[k].name) == 0)
                    return mesh_protocol_is_http(s->ports[i].protocol);
        }
    return mesh_protocol_is_http(s->ports[0].protocol);
}

static mid_result fill_decision(arena *a, const mesh_service *s, const mesh_endpoint *rep,
                                const mesh_policy *const *pols, size_t np,
                                const mesh_request *rq, Meshid__Admin__V1__PolicyDecision *d)
{
    meshid__admin__v1__policy_decision__init(d);
    mesh_workload w = {.namespace_ = s->namespace_, .labels = rep ? rep->labels : NULL,
                       .n_labels = rep ? rep->n_labels : 0};
    mesh_decision dec;
    mesh_policy_evaluate(pols, np, &w, rq, &dec);
    char text[DECISION_TEXT_MAX];
    MID_GUARD(mesh_decision_format(&dec, text, sizeof text));
    d->allowed = dec.allowed != 0;
    d->rule = dec.rule;
    d->text = adup(a, text);
    d->policy_namespace = adup(a, dec.policy ? dec.policy->namespace_ : "");
    d->policy_name = adup(a, dec.policy ? dec.policy->name : "");
    MID_ENSURE(d->text && d->policy_namespace && d->policy_name, MID_E_NOMEM, "out of memory");
    size_t nl = w.n_labels, na = 0;
    for (size_t e = 0; rep && e < s->n_endpoints; e++) na += labels_equal(&s->endpoints[e], rep);
    if (nl) {
        Meshid__Admin__V1__PolicyDecision__WorkloadLabelsEntry *le =
            arena_alloc(a, nl * sizeof *le);
        d->workload_labels = arena_alloc(a, nl * sizeof *d->workload_labels);
        MID_ENSURE(le && d->workload_labels, MID_E_NOMEM, "out of memory");
        for (size_t i = 0; i < nl; i++) {
            meshid__admin__v1__policy_decision__workload_labels_entry__init(&le[i]);
            le[i].key = adup(a, w.labels[i].key);
            le[i].value = adup(a, w.labels[i].value);
            MID_ENSURE(le[i].key && le[i].value, MID_E_NOMEM, "out of memory");
            d->workload_labels[i] = &le[i];
        }
        d->n_workload_labels = nl;
    }
    if (na) {
        d->addresses = arena_alloc(a, na * sizeof *d->addresses);
        MID_ENSURE(d->addresses, MID_E_NOMEM, "out of memory");
        for (size_t e = 0; e < s->n_endpoints; e++) {
            if (!labels_equal(&s->endpoints[e], rep)) continue;
            d->addresses[d->n_addresses] = adup(a, s->endpoints[e].address);
            MID_ENSURE(d->addresses[d->n_addresses], MID_E_NOMEM, "out of memory");
            d->n_addresses++;
        }
    }
    return mid_ok();
}

static void check_work(mop *op)
{
    const Meshid__Admin__V1__CheckPolicyRequest *req =
        (const Meshid__Admin__V1__CheckPolicyRequest *)op->req;
    arena *a = op->a;
    mesh_registry *reg = NULL;
    const mesh_policy **pols = NULL;
    const mesh_endpoint **reps = NULL;
    char q[ADMIN_QUOTE_MAX + 4];
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, req->to[0] != '\0', MID_E_INVALID, "the destination service (to) is required");
    if (req->from[0]) {
        spiffe_id *id = NULL;
        r = spiffe_id_parse(req->from, strlen(req->from), &id);
        spiffe_id_free(id);
        if (!mid_is_ok(r)) {
            char msg[MSG_MAX];
            snprintf(msg, sizeof msg, "%s", mid_errmsg());
            MID_CHECK(r, false, MID_E_INVALID, "from: %s", msg);
        }
    }
    MID_CHECK(r, req->port <= 65535, MID_E_INVALID, "port %u is not in 1..65535", req->port);
    MID_TRY(r, mesh_registry_load(op->ma->o.st, op->ma->td, &reg));
    const mesh_service *s = reg_find(reg, req->to);
    quote(req->to, q);
    MID_CHECK(r, s != NULL, MID_E_NOT_FOUND, "no service \"%s\" (by namespace/name, name or host)",
              q);
    size_t np = mesh_registry_n_policies(reg);
    pols = calloc(np ? np : 1, sizeof *pols);
    reps = calloc(s->n_endpoints ? s->n_endpoints : 1, sizeof *reps);
    MID_CHECK_MEM(r, pols);
    MID_CHECK_MEM(r, reps);
    for (size_t i = 0; i < np; i++) pols[i] = mesh_registry_policy(reg, i);
    /* one representative endpoint per distinct label set */
    size_t ng = 0;
    for (size_t e = 0; e < s->n_endpoints; e++) {
        bool seen = false;
        for (size_t g = 0; g < ng && !seen; g++) seen = labels_equal(reps[g], &s->endpoints[e]);
        if (!seen) reps[ng++] = &s->endpoints[e];
    }
    int http = request_is_http(s, req);
    mesh_request rq = {.principal = req->from[0] ? req->from : NULL,
                       .method = http && req->method[0] ? req->method : NULL,
                       .path = http && req->path[0] ? req->path : NULL,
                       .port = req->port,
                       .host = http && req->host[0] ? req->host : NULL,
                       .http = http};
    size_t nd = ng ? ng : 1;
    Meshid__Admin__V1__CheckPolicyResponse *resp = arena_alloc(a, sizeof *resp);
    Meshid__Admin__V1__PolicyDecision *dv = arena_alloc(a, nd * sizeof *dv);
    Meshid__Admin__V1__PolicyDecision **dp = arena_alloc(a, nd * sizeof *dp);
    char key[2 * MESH_NAME_MAX + 2];
    snprintf(key, sizeof key, "%s/%s", s->namespace_, s->name);
    MID_CHECK(r, resp && dv && dp, MID_E_NOMEM, "out of memory");
    meshid__admin__v1__check_policy_response__init(resp);
    resp->service = adup(a, key);
    MID_CHECK_MEM(r, resp->service);
    resp->allowed = true;
    for (size_t g = 0; g < nd; g++) {
        MID_TRY(r, fill_decision(a, s, ng ? reps[g] : NULL, pols, np, &rq, &dv[g]));
        dp[g] = &dv[g];
        resp->allowed = resp->allowed && dv[g].allowed;
    }
    resp->decisions = dp;
    resp->n_decisions = nd;
    resp->http = http != 0;
    resp->revision = mesh_registry_revision(reg);
    op->resp = &resp->base;
out:
    if (!mid_is_ok(r)) op_fail(op, r, "checking the policy");
    free(pols);
    free(reps);
    mesh_registry_unref(reg);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static const mop_method methods[N_METHODS] = {
    {A_PREFIX "ApplyResources", &meshid__admin__v1__apply_resources_request__descriptor,
     apply_work, "mesh.apply"},
    {A_PREFIX "DeleteResource", &meshid__admin__v1__delete_resource_request__descriptor,
     delete_work, "mesh.delete"},
    {A_PREFIX "ListResources", &meshid__admin__v1__list_resources_request__descriptor, list_work},
    {A_PREFIX "GetResource", &meshid__admin__v1__get_resource_request__descriptor, get_work},
    {A_PREFIX "AddEndpoint", &meshid__admin__v1__add_endpoint_request__descriptor, ep_add_work,
     "mesh.endpoint.add"},
    {A_PREFIX "RemoveEndpoint", &meshid__admin__v1__remove_endpoint_request__descriptor,
     ep_remove_work, "mesh.endpoint.remove"},
    {A_PREFIX "ListEndpoints", &meshid__admin__v1__list_endpoints_request__descriptor,
     ep_list_work},
    {A_PREFIX "CheckPolicy", &meshid__admin__v1__check_policy_request__descriptor, check_work},
};

static const rpc_handler handler = {.on_start = on_start, .on_done = op_call_done};

mid_result mesh_admin_new(const mesh_admin_opts *o, mesh_admin **out)
{
    *out = NULL;
    MID_ENSURE(o && o->st && o->wp && o->trust_domain, MID_E_INVALID,
               "mesh admin needs a store, a workpool and a trust domain");
    MID_ENSURE(strlen(o->trust_domain) <= SPIFFE_TD_MAX, MID_E_INVALID, "trust domain too long");
    mesh_admin *ma = calloc(1, sizeof *ma);
    MID_ENSURE_MEM(ma);
    ma->o = *o;
    snprintf(ma->td, sizeof ma->td, "%s", o->trust_domain);
    ma->o.trust_domain = ma->td;
    if (pthread_mutex_init(&ma->lock, NULL) != 0) {
        free(ma);
        MID_BAIL(MID_E_NOMEM, "cannot create a mutex");
    }
    for (size_t i = 0; i < N_METHODS; i++) ma->ctx[i] = (method_ctx){.ma = ma, .m = &methods[i]};
    *out = ma;
    return mid_ok();
}

mid_result mesh_admin_register(mesh_admin *ma, rpc_server *admin_srv)
{
    MID_ENSURE(ma && admin_srv, MID_E_INVALID, "no mesh admin or server");
    for (size_t i = 0; i < N_METHODS; i++)
        MID_GUARD(rpc_server_register(admin_srv, methods[i].path, RPC_UNARY, methods[i].req_desc,
                                      &handler, &ma->ctx[i]));
    return mid_ok();
}

void mesh_admin_shutdown(mesh_admin *ma)
{
    if (ma) ma->shutting_down = true;
}

void mesh_admin_free(mesh_admin *ma)
{
    if (!ma) return;
    pthread_mutex_destroy(&ma->lock);
    free(ma);
}
