/* The registry from the store, and planned writes. See meshcore/registry_store.h.
 *
 * A plan is a table of slots, one per (kind, namespace, name) it knows: the
 * snapshot's resources first, then resources new in the plan. Each slot
 * holds the current record (as amended by the plan) and, for a put, its new
 * canonical JSON; a hash index finds slots by key. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meshcore/registry_store.h"
#include "storage/store_mesh.h"

#define SOURCE_MAX 1024
#define MSG_MAX 1024

const char *mesh_store_kind(mesh_kind k)
{
    return k == MESH_KIND_POLICY ? STORE_MESH_KIND_POLICY : STORE_MESH_KIND_SERVICE;
}

mid_result mesh_store_kind_parse(const char *s, mesh_kind *out)
{
    MID_ENSURE(s != NULL, MID_E_INVALID, "a kind is required (service or policy)");
    if (strcmp(s, STORE_MESH_KIND_SERVICE) == 0) {
        *out = MESH_KIND_SERVICE;
        return mid_ok();
    }
    if (strcmp(s, STORE_MESH_KIND_POLICY) == 0) {
        *out = MESH_KIND_POLICY;
        return mid_ok();
    }
    MID_BAIL(MID_E_INVALID, "unknown kind \"%.64s\" (service or policy)", s);
}

const char *mesh_plan_action_name(mesh_plan_action a)
{
    switch (a) {
    case MESH_PLAN_CREATED: return "created";
    case MESH_PLAN_UPDATED: return "updated";
    case MESH_PLAN_UNCHANGED: return "unchanged";
    case MESH_PLAN_DELETED: return "deleted";
    }
    return "?";
}

/* ---- decoding stored rows ------------------------------------------------------ */

/* Decodes one row into a service or a policy whose key must match the row's. */
static mid_result decode_row(const store_mesh_row *row, mesh_kind *kind, mesh_service **svc,
                             mesh_policy **pol)
{
    *svc = NULL;
    *pol = NULL;
    mesh_kind k;
    mid_result r = mesh_store_kind_parse(row->kind, &k);
    const char *ns = NULL, *name = NULL;
    if (mid_is_ok(r) && k == MESH_KIND_SERVICE) {
        r = mesh_service_from_json(row->spec_json, svc);
        if (mid_is_ok(r)) ns = (*svc)->namespace_, name = (*svc)->name;
    } else if (mid_is_ok(r)) {
        r = mesh_policy_from_json(row->spec_json, pol);
        if (mid_is_ok(r)) ns = (*pol)->namespace_, name = (*pol)->name;
    }
    if (mid_is_ok(r) && (strcmp(ns, row->namespace_) != 0 || strcmp(name, row->name) != 0))
        r = mid_fail(MID_E_INVALID, __FILE__, __LINE__, "it names %s/%s", ns, name);
    if (!mid_is_ok(r)) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "%s", mid_errmsg());
        mesh_service_free(*svc);
        mesh_policy_free(*pol);
        *svc = NULL;
        *pol = NULL;
        if (r.err == MID_E_NOMEM) return r;
        MID_BAIL(MID_E_CORRUPT, "stored %s %s/%s does not decode: %s", row->kind,
                 row->namespace_, row->name, msg);
    }
    *kind = k;
    return mid_ok();
}

mid_result mesh_registry_load(store *st, const char *trust_domain, mesh_registry **out)
{
    *out = NULL;
    store_mesh_row *rows = NULL;
    size_t n = 0, ns = 0, np = 0;
    int64_t rev = 0;
    MID_GUARD(store_mesh_list(st, NULL, &rows, &n, &rev));
    mesh_service **svcs = calloc(n ? n : 1, sizeof *svcs);
    mesh_policy **pols = calloc(n ? n : 1, sizeof *pols);
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, svcs);
    MID_CHECK_MEM(r, pols);
    for (size_t i = 0; i < n; i++) {
        mesh_kind k;
        mesh_service *s = NULL;
        mesh_policy *p = NULL;
        MID_TRY(r, decode_row(&rows[i], &k, &s, &p));
        if (k == MESH_KIND_SERVICE) svcs[ns++] = s;
        else pols[np++] = p;
    }
    r = mesh_registry_new(trust_domain, rev, svcs, ns, pols, np, out);
    svcs = NULL; /* taken, also on failure */
    pols = NULL;
    ns = np = 0;
out:
    for (size_t i = 0; svcs && i < ns; i++) mesh_service_free(svcs[i]);
    for (size_t i = 0; pols && i < np; i++) mesh_policy_free(pols[i]);
    free(svcs);
    free(pols);
    store_mesh_list_free(rows, n);
    return r;
}

/* ---- the plan ------------------------------------------------------------------ */

typedef enum { SLOT_SNAPSHOT = 0, SLOT_PUT, SLOT_DELETED } slot_state;

typedef struct {
    mesh_kind kind;
    char *ns, *name;
    char *stored_json;   /* NULL: not in the snapshot */
    int64_t stored_rev;
    mesh_service *svc;   /* current record (kind service); NULL once deleted */
    mesh_policy *pol;    /* current record (kind policy) */
    char *new_json;      /* SLOT_PUT: canonical JSON of the new record */
    char *source;        /* of the put or delete */
    slot_state state;
} slot;

struct mesh_plan {
    char *td;
    int64_t revision;
    slot *slots;
    size_t n_slots, cap_slots;
    size_t *index; /* open addressing: slot number + 1, 0 = empty */
    size_t index_cap;
    mesh_plan_item *items;
    size_t n_items, cap_items;
    size_t n_changes;
    bool checked;
};

static uint64_t key_hash(mesh_kind kind, const char *ns, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (const char *s = ns; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull; /* separator: "a/bc" != "ab/c" */
    for (const char *s = name; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static slot *find_slot(const mesh_plan *p, mesh_kind kind, const char *ns, const char *name)
{
    if (p->index_cap == 0) return NULL;
    size_t mask = p->index_cap - 1;
    for (size_t i = key_hash(kind, ns, name) & mask;; i = (i + 1) & mask) {
        size_t v = p->index[i];
        if (v == 0) return NULL;
        slot *s = &p->slots[v - 1];
        if (s->kind == kind && strcmp(s->ns, ns) == 0 && strcmp(s->name, name) == 0) return s;
    }
}

static void index_insert(mesh_plan *p, size_t slot_no)
{
    const slot *s = &p->slots[slot_no];
    size_t mask = p->index_cap - 1;
    size_t i = key_hash(s->kind, s->ns, s->name) & mask;
    while (p->index[i] != 0) i = (i + 1) & mask;
    p->index[i] = slot_no + 1;
}

/* Room for one more slot, keeping the index under half full. */
static mid_result reserve_slot(mesh_plan *p)
{
    if (p->n_slots == p->cap_slots) {
        size_t cap = p->cap_slots ? p->cap_slots * 2 : 16;
        slot *ns = realloc(p->slots, cap * sizeof *ns);
        MID_ENSURE_MEM(ns);
        p->slots = ns;
        p->cap_slots = cap;
    }
    if ((p->n_slots + 1) * 2 > p->index_cap) {
        size_t cap = p->index_cap ? p->index_cap * 2 : 32;
        size_t *idx = calloc(cap, sizeof *idx);
        MID_ENSURE_MEM(idx);
        free(p->index);
        p->index = idx;
        p->index_cap = cap;
        for (size_t i = 0; i < p->n_slots; i++) index_insert(p, i);
    }
    return mid_ok();
}

/* Adds a slot (its strings already owned by *s). */
static mid_result add_slot(mesh_plan *p, slot *s, slot **out)
{
    MID_GUARD(reserve_slot(p));
    p->slots[p->n_slots] = *s;
    index_insert(p, p->n_slots);
    *out = &p->slots[p->n_slots++];
    return mid_ok();
}

static void slot_clear(slot *s)
{
    free(s->ns);
    free(s->name);
    free(s->stored_json);
    free(s->new_json);
    free(s->source);
    mesh_service_free(s->svc);
    mesh_policy_free(s->pol);
}

void mesh_plan_free(mesh_plan *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_slots; i++) slot_clear(&p->slots[i]);
    free(p->slots);
    free(p->index);
    free(p->items);
    free(p->td);
    free(p);
}

mid_result mesh_plan_new(store *st, const char *trust_domain, mesh_plan **out)
{
    *out = NULL;
    MID_ENSURE(st && trust_domain, MID_E_INVALID, "a plan needs a store and a trust domain");
    mesh_plan *p = calloc(1, sizeof *p);
    MID_ENSURE_MEM(p);
    store_mesh_row *rows = NULL;
    size_t n = 0;
    mid_result r = MID_OK_RESULT;
    p->td = strdup(trust_domain);
    MID_CHECK_MEM(r, p->td);
    MID_TRY(r, store_mesh_list(st, NULL, &rows, &n, &p->revision));
    for (size_t i = 0; i < n; i++) {
        slot s = {.stored_rev = rows[i].revision, .state = SLOT_SNAPSHOT};
        MID_TRY(r, decode_row(&rows[i], &s.kind, &s.svc, &s.pol));
        /* the row's strings move into the slot */
        s.ns = rows[i].namespace_;
        s.name = rows[i].name;
        s.stored_json = rows[i].spec_json;
        rows[i].namespace_ = rows[i].name = rows[i].spec_json = NULL;
        slot *added;
        r = add_slot(p, &s, &added);
        if (!mid_is_ok(r)) {
            slot_clear(&s);
            goto out;
        }
    }
    *out = p;
    p = NULL;
out:
    store_mesh_list_free(rows, n);
    mesh_plan_free(p);
    return r;
}

int64_t mesh_plan_revision(const mesh_plan *p) { return p->revision; }

/* Splits "ns/name" or "name" (default namespace) into buf. */
static bool split_name(const char *in, char *ns, char *name)
{
    const char *slash = strchr(in, '/');
    if (slash == NULL) {
        if (strlen(in) > MESH_NAME_MAX) return false;
        snprintf(ns, MESH_NAME_MAX + 1, "%s", MESH_DEFAULT_NAMESPACE);
        snprintf(name, MESH_NAME_MAX + 1, "%s", in);
        return true;
    }
    size_t nl = (size_t)(slash - in);
    if (nl == 0 || nl > MESH_NAME_MAX || strlen(slash + 1) > MESH_NAME_MAX) return false;
    memcpy(ns, in, nl);
    ns[nl] = '\0';
    snprintf(name, MESH_NAME_MAX + 1, "%s", slash + 1);
    return strchr(name, '/') == NULL;
}

const mesh_service *mesh_plan_find_service(const mesh_plan *p, const char *name_or_host)
{
    if (!p || !name_or_host || !*name_or_host) return NULL;
    char ns[MESH_NAME_MAX + 1], name[MESH_NAME_MAX + 1];
    if (split_name(name_or_host, ns, name)) {
        const slot *s = find_slot(p, MESH_KIND_SERVICE, ns, name);
        if (s && s->svc) return s->svc;
        if (strchr(name_or_host, '/')) return NULL;
    }
    for (size_t i = 0; i < p->n_slots; i++) {
        const mesh_service *svc = p->slots[i].svc;
        for (size_t h = 0; svc && h < svc->n_hosts; h++)
            if (strcasecmp(svc->hosts[h], name_or_host) == 0) return svc;
    }
    return NULL;
}

const mesh_policy *mesh_plan_find_policy(const mesh_plan *p, const char *ns_name)
{
    if (!p || !ns_name || !*ns_name) return NULL;
    char ns[MESH_NAME_MAX + 1], name[MESH_NAME_MAX + 1];
    if (!split_name(ns_name, ns, name)) return NULL;
    const slot *s = find_slot(p, MESH_KIND_POLICY, ns, name);
    return s ? s->pol : NULL;
}

static mid_result add_item(mesh_plan *p, const slot *s, mesh_plan_action a)
{
    MID_ENSURE(p->n_items < MESH_PLAN_ITEMS_MAX, MID_E_TOO_LARGE,
               "more than %d resources in one apply", MESH_PLAN_ITEMS_MAX);
    if (p->n_items == p->cap_items) {
        size_t cap = p->cap_items ? p->cap_items * 2 : 16;
        mesh_plan_item *ni = realloc(p->items, cap * sizeof *ni);
        MID_ENSURE_MEM(ni);
        p->items = ni;
        p->cap_items = cap;
    }
    p->items[p->n_items++] = (mesh_plan_item){.kind = s->kind, .namespace_ = s->ns,
                                              .name = s->name, .source = s->source, .action = a};
    if (a != MESH_PLAN_UNCHANGED) p->n_changes++;
    return mid_ok();
}

/* "SOURCE: " or "" for messages. */
static void src_prefix(const char *source, char *buf, size_t cap)
{
    if (source && *source) snprintf(buf, cap, "%s: ", source);
    else buf[0] = '\0';
}

/* Refuses a second put/delete of one resource in a plan. */
static mid_result check_untouched(const slot *s, const char *source)
{
    if (!s || s->state == SLOT_SNAPSHOT) return mid_ok();
    char pre[SOURCE_MAX + 2];
    src_prefix(source, pre, sizeof pre);
    MID_BAIL(MID_E_INVALID, "%s%s %s/%s is also %s%s%s", pre, mesh_store_kind(s->kind), s->ns,
             s->name, s->state == SLOT_DELETED ? "deleted" : "given",
             s->source ? " at " : " in this apply", s->source ? s->source : "");
}

/* Common part of the puts: takes ownership of svc or pol (freed on failure). */
static mid_result put_record(mesh_plan *p, mesh_kind kind, mesh_service *svc, mesh_policy *pol,
                             const char *source)
{
    const char *ns = kind == MESH_KIND_SERVICE ? svc->namespace_ : pol->namespace_;
    const char *name = kind == MESH_KIND_SERVICE ? svc->name : pol->name;
    char *json = NULL, *src = NULL;
    mid_result r = MID_OK_RESULT;
    slot *s = find_slot(p, kind, ns, name);
    MID_TRY(r, check_untouched(s, source));
    if (source) {
        MID_CHECK(r, strlen(source) < SOURCE_MAX, MID_E_TOO_LARGE, "source name too long");
        src = strdup(source);
        MID_CHECK_MEM(r, src);
    }
    MID_TRY(r, kind == MESH_KIND_SERVICE ? mesh_service_to_json(svc, &json)
                                         : mesh_policy_to_json(pol, &json));
    mesh_plan_action a;
    if (s == NULL) {
        slot ns_slot = {.kind = kind, .ns = strdup(ns), .name = strdup(name)};
        if (!ns_slot.ns || !ns_slot.name) {
            free(ns_slot.ns);
            free(ns_slot.name);
            MID_CHECK_MEM(r, NULL);
        }
        r = add_slot(p, &ns_slot, &s);
        if (!mid_is_ok(r)) {
            free(ns_slot.ns);
            free(ns_slot.name);
            goto out;
        }
        a = MESH_PLAN_CREATED;
    } else {
        a = s->stored_json && strcmp(s->stored_json, json) == 0 ? MESH_PLAN_UNCHANGED
                                                                : MESH_PLAN_UPDATED;
    }
    mesh_service_free(s->svc);
    mesh_policy_free(s->pol);
    s->svc = svc;
    s->pol = pol;
    svc = NULL;
    pol = NULL;
    s->new_json = json;
    json = NULL;
    s->source = src;
    src = NULL;
    s->state = SLOT_PUT;
    p->checked = false;
    r = add_item(p, s, a);
out:
    mesh_service_free(svc);
    mesh_policy_free(pol);
    free(json);
    free(src);
    return r;
}

/* Re-raises the last error with the source in front. */
static mid_result with_source(mid_result r, const char *source)
{
    if (mid_is_ok(r) || !source || !*source || r.err == MID_E_NOMEM) return r;
    /* the YAML loader's messages already start with the file name */
    size_t sl = strcspn(source, ":");
    if (strncmp(mid_errmsg(), source, sl) == 0 && mid_errmsg()[sl] == ':') return r;
    char msg[MSG_MAX];
    snprintf(msg, sizeof msg, "%s", mid_errmsg());
    return mid_fail(r.err, __FILE__, __LINE__, "%s: %s", source, msg);
}

mid_result mesh_plan_put_service(mesh_plan *p, const mesh_service *s, const char *source)
{
    MID_ENSURE(p && s, MID_E_INVALID, "no plan or service");
    MID_GUARD(with_source(mesh_service_validate(s), source));
    mesh_service *c = NULL;
    MID_GUARD(mesh_service_clone(s, &c));
    return put_record(p, MESH_KIND_SERVICE, c, NULL, source);
}

mid_result mesh_plan_put_policy(mesh_plan *p, const mesh_policy *pol, const char *source)
{
    MID_ENSURE(p && pol, MID_E_INVALID, "no plan or policy");
    MID_GUARD(with_source(mesh_policy_validate(pol), source));
    mesh_policy *c = NULL;
    MID_GUARD(mesh_policy_clone(pol, &c));
    return put_record(p, MESH_KIND_POLICY, NULL, c, source);
}

mid_result mesh_plan_put_docs(mesh_plan *p, const mesh_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind == MESH_KIND_SERVICE)
            MID_GUARD(mesh_plan_put_service(p, docs[i].u.service, docs[i].source));
        else
            MID_GUARD(mesh_plan_put_policy(p, docs[i].u.policy, docs[i].source));
    }
    return mid_ok();
}

mid_result mesh_plan_delete(mesh_plan *p, mesh_kind kind, const char *namespace_, const char *name)
{
    MID_ENSURE(p && namespace_ && name, MID_E_INVALID, "no plan or name");
    slot *s = find_slot(p, kind, namespace_, name);
    MID_ENSURE(s != NULL && s->stored_json != NULL, MID_E_NOT_FOUND, "no %s %.253s/%.253s",
               mesh_store_kind(kind), namespace_, name);
    MID_GUARD(check_untouched(s, NULL));
    mesh_service_free(s->svc);
    mesh_policy_free(s->pol);
    s->svc = NULL;
    s->pol = NULL;
    s->state = SLOT_DELETED;
    p->checked = false;
    return add_item(p, s, MESH_PLAN_DELETED);
}

/* Two live services claiming one host: named with the planned side's source. */
static mid_result check_hosts(const mesh_plan *p)
{
    size_t total = 0;
    for (size_t i = 0; i < p->n_slots; i++)
        if (p->slots[i].svc) total += p->slots[i].svc->n_hosts;
    size_t cap = 16;
    while (cap < total * 2) cap *= 2;
    /* entries: (slot + 1, host index) */
    size_t *ent_slot = calloc(cap, sizeof *ent_slot), *ent_host = calloc(cap, sizeof *ent_host);
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, ent_slot);
    MID_CHECK_MEM(r, ent_host);
    for (size_t i = 0; i < p->n_slots; i++) {
        const mesh_service *svc = p->slots[i].svc;
        for (size_t h = 0; svc && h < svc->n_hosts; h++) {
            uint64_t hash = 1469598103934665603ull;
            for (const char *c = svc->hosts[h]; *c; c++)
                hash = (hash ^ (unsigned char)(*c | 0x20)) * 1099511628211ull;
            size_t k = hash & (cap - 1);
            for (; ent_slot[k]; k = (k + 1) & (cap - 1)) {
                const slot *o = &p->slots[ent_slot[k] - 1];
                if (strcasecmp(o->svc->hosts[ent_host[k]], svc->hosts[h]) != 0) continue;
                /* report from the point of view of a planned service */
                const slot *mine = &p->slots[i], *other = o;
                size_t mh = h;
                if (mine->state != SLOT_PUT && o->state == SLOT_PUT) {
                    mine = o;
                    other = &p->slots[i];
                    mh = ent_host[k];
                }
                char pre[SOURCE_MAX + 2];
                src_prefix(mine->source, pre, sizeof pre);
                r = mid_fail(MID_E_INVALID, __FILE__, __LINE__,
                             "%sspec.hosts[%zu]: host \"%s\" of service %s/%s is already used by "
                             "service %s/%s%s%s",
                             pre, mh, mine->svc->hosts[mh], mine->ns, mine->name, other->ns,
                             other->name, other->source ? " at " : "",
                             other->source ? other->source : "");
                goto out;
            }
            ent_slot[k] = i + 1;
            ent_host[k] = h;
        }
    }
out:
    free(ent_slot);
    free(ent_host);
    return r;
}

mid_result mesh_plan_check(mesh_plan *p, mesh_registry **reg)
{
    if (reg) *reg = NULL;
    MID_ENSURE(p != NULL, MID_E_INVALID, "no plan");
    MID_GUARD(check_hosts(p));
    size_t ns = 0, np = 0;
    mesh_service **svcs = calloc(p->n_slots ? p->n_slots : 1, sizeof *svcs);
    mesh_policy **pols = calloc(p->n_slots ? p->n_slots : 1, sizeof *pols);
    mesh_registry *rg = NULL;
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, svcs);
    MID_CHECK_MEM(r, pols);
    for (size_t i = 0; i < p->n_slots; i++) {
        const slot *s = &p->slots[i];
        if (s->svc) MID_TRY(r, mesh_service_clone(s->svc, &svcs[ns++]));
        if (s->pol) MID_TRY(r, mesh_policy_clone(s->pol, &pols[np++]));
    }
    r = mesh_registry_new(p->td, p->revision, svcs, ns, pols, np, &rg);
    svcs = NULL; /* taken, also on failure */
    pols = NULL;
    MID_TRY(r, r);
    p->checked = true;
    if (reg) *reg = rg;
    else mesh_registry_unref(rg);
out:
    for (size_t i = 0; svcs && i < ns; i++) mesh_service_free(svcs[i]);
    for (size_t i = 0; pols && i < np; i++) mesh_policy_free(pols[i]);
    free(svcs);
    free(pols);
    return r;
}

size_t mesh_plan_n_items(const mesh_plan *p) { return p->n_items; }
const mesh_plan_item *mesh_plan_item_at(const mesh_plan *p, size_t i)
{
    return i < p->n_items ? &p->items[i] : NULL;
}
size_t mesh_plan_n_changes(const mesh_plan *p) { return p->n_changes; }

mid_result mesh_plan_commit(store *st, const mesh_plan *p, const mesh_commit_opts *o,
                            int64_t *revision)
{
    MID_ENSURE(st && p && o && o->actor, MID_E_INVALID, "commit needs a store, a plan and an actor");
    MID_ENSURE(p->checked, MID_E_STATE, "the plan was not checked");
    if (revision) *revision = p->revision;
    if (p->n_changes == 0) return mid_ok();
    size_t n = p->n_changes;
    store_mesh_change *ch = calloc(n, sizeof *ch);
    store_audit_event *evs = calloc(n, sizeof *evs);
    char **details = calloc(n, sizeof *details);
    mid_result r = MID_OK_RESULT;
    MID_CHECK_MEM(r, ch);
    MID_CHECK_MEM(r, evs);
    MID_CHECK_MEM(r, details);
    size_t k = 0;
    for (size_t i = 0; i < p->n_items && k < n; i++) {
        const mesh_plan_item *it = &p->items[i];
        if (it->action == MESH_PLAN_UNCHANGED) continue;
        const slot *s = find_slot(p, it->kind, it->namespace_, it->name);
        MID_CHECK(r, s != NULL, MID_E_INTERNAL, "plan item without a slot");
        bool del = it->action == MESH_PLAN_DELETED;
        ch[k] = (store_mesh_change){
            .op = del ? STORE_MESH_DELETE : STORE_MESH_PUT, .kind = mesh_store_kind(it->kind),
            .namespace_ = it->namespace_, .name = it->name, .spec_json = del ? NULL : s->new_json,
            .if_revision = it->action == MESH_PLAN_CREATED ? -1 : s->stored_rev};
        json_t *d = json_pack("{s:s, s:s, s:s, s:s}", "kind", mesh_store_kind(it->kind),
                              "namespace", it->namespace_, "name", it->name, "action",
                              mesh_plan_action_name(it->action));
        if (d && o->address) json_object_set_new(d, "address", json_string(o->address));
        details[k] = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(d);
        MID_CHECK_MEM(r, details[k]);
        evs[k] = (store_audit_event){
            .actor = o->actor, .event = o->event ? o->event : del ? "mesh.delete" : "mesh.apply",
            .outcome = "ok", .reason = o->reason, .details = details[k]};
        k++;
    }
    MID_CHECK(r, k == n, MID_E_INTERNAL, "plan change count is off");
    r = store_mesh_apply(st, ch, n, evs, revision);
out:
    for (size_t i = 0; details && i < n; i++) free(details[i]);
    free(details);
    free(evs);
    free(ch);
    return r;
}
