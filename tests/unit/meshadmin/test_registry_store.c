/* meshcore/registry_store: loading the registry from a real store, planning
 * applies (created / updated / unchanged / deleted), whole-registry checks
 * before anything is written, all-or-nothing commits with optimistic
 * revision checks, and the audit events. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "meshcore/registry_store.h"
#include "storage/store_mesh.h"
#include "tests/unit/meshadmin/meshadmin_tests.h"

#define TD "cluster.local"

static const char *const SVC_A =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata:\n"
    "  name: a\n"
    "  namespace: default\n"
    "spec:\n"
    "  hosts: [a.default.svc]\n"
    "  ports:\n"
    "  - {number: 80, name: http, protocol: HTTP}\n"
    "  resolution: STATIC\n"
    "  endpoints:\n"
    "  - address: 10.0.0.1\n"
    "    labels: {app: a}\n"
    "    serviceAccount: sa-a\n";

static const char *const SVC_A_CHANGED =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata:\n"
    "  name: a\n"
    "  namespace: default\n"
    "spec:\n"
    "  hosts: [a.default.svc]\n"
    "  ports:\n"
    "  - {number: 8080, name: http, protocol: HTTP}\n"
    "  resolution: STATIC\n";

static const char *const SVC_B =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata:\n"
    "  name: b\n"
    "  namespace: other\n"
    "spec:\n"
    "  hosts: [b.other.svc]\n"
    "  ports:\n"
    "  - {number: 9000, name: grpc, protocol: GRPC}\n"
    "  resolution: STATIC\n";

/* claims a's host */
static const char *const SVC_THIEF =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata:\n"
    "  name: thief\n"
    "  namespace: other\n"
    "spec:\n"
    "  hosts: [x.other.svc, a.default.svc]\n"
    "  ports:\n"
    "  - {number: 80, name: http, protocol: HTTP}\n"
    "  resolution: STATIC\n";

static const char *const POL_P =
    "apiVersion: security.istio.io/v1\n"
    "kind: AuthorizationPolicy\n"
    "metadata:\n"
    "  name: p\n"
    "  namespace: default\n"
    "spec:\n"
    "  selector:\n"
    "    matchLabels: {app: a}\n"
    "  action: ALLOW\n"
    "  rules:\n"
    "  - from:\n"
    "    - source:\n"
    "        principals: [\"cluster.local/ns/default/sa/client\"]\n";

typedef struct {
    ma_tmp t;
    store *st;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    ma_tmp_init(&f->t);
    f->st = ma_open_store(&f->t);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    store_close(f->st);
    ma_tmp_cleanup(&f->t);
    free(f);
    return 0;
}

/* Plans `yaml`, checks, commits as "test"; returns the new revision. */
static int64_t apply_yaml(fx *f, const char *yaml, const char *src)
{
    mesh_doc *docs = NULL;
    size_t n = 0;
    ma_parse(yaml, src, &docs, &n);
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_mid_ok(mesh_plan_check(p, NULL));
    mesh_commit_opts co = {.actor = "test:unit"};
    int64_t rev = -1;
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, &rev));
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);
    return rev;
}

static int64_t mesh_rev(fx *f)
{
    int64_t r = -1;
    assert_mid_ok(store_mesh_revision(f->st, &r));
    return r;
}

/* ---- kinds and names ------------------------------------------------------------ */

static void test_kind_names(void **state)
{
    (void)state;
    mesh_kind k;
    assert_string_equal(mesh_store_kind(MESH_KIND_SERVICE), "service");
    assert_string_equal(mesh_store_kind(MESH_KIND_POLICY), "policy");
    assert_mid_ok(mesh_store_kind_parse("policy", &k));
    assert_int_equal(k, MESH_KIND_POLICY);
    assert_mid_err(mesh_store_kind_parse("Service", &k), MID_E_INVALID);
    assert_mid_err(mesh_store_kind_parse("", &k), MID_E_INVALID);
    assert_mid_err(mesh_store_kind_parse(NULL, &k), MID_E_INVALID);
    assert_string_equal(mesh_plan_action_name(MESH_PLAN_UNCHANGED), "unchanged");
    assert_string_equal(mesh_plan_action_name(MESH_PLAN_DELETED), "deleted");
}

/* ---- load ------------------------------------------------------------------------- */

static void test_load_empty_and_full(void **state)
{
    fx *f = *state;
    mesh_registry *reg = NULL;
    assert_mid_ok(mesh_registry_load(f->st, TD, &reg));
    assert_int_equal(mesh_registry_n_services(reg), 0);
    assert_int_equal(mesh_registry_revision(reg), 0);
    mesh_registry_unref(reg);

    int64_t rev = apply_yaml(f, SVC_A, "a.yaml");
    apply_yaml(f, POL_P, "p.yaml");
    assert_int_equal(rev, 1);
    assert_mid_ok(mesh_registry_load(f->st, TD, &reg));
    assert_int_equal(mesh_registry_revision(reg), 2);
    assert_int_equal(mesh_registry_n_services(reg), 1);
    assert_int_equal(mesh_registry_n_policies(reg), 1);
    const mesh_service *s = mesh_registry_service(reg, 0);
    assert_string_equal(s->name, "a");
    /* the service account became a SPIFFE ID of the trust domain */
    assert_string_equal(s->endpoints[0].spiffe_id, "spiffe://" TD "/ns/default/sa/sa-a");
    mesh_registry_unref(reg);

    /* a bad trust domain */
    assert_mid_err(mesh_registry_load(f->st, "Not A Domain", &reg), MID_E_INVALID);
    assert_null(reg);
}

static void test_load_corrupt_row(void **state)
{
    fx *f = *state;
    /* a JSON object the store accepts but the model does not */
    store_mesh_change ch = {.op = STORE_MESH_PUT, .kind = "service", .namespace_ = "default",
                            .name = "junk", .spec_json = "{\"hosts\": 7}"};
    store_audit_event ev = {.actor = "test", .event = "mesh.apply", .outcome = "ok"};
    assert_mid_ok(store_mesh_apply(f->st, &ch, 1, &ev, NULL));
    mesh_registry *reg = NULL;
    assert_mid_err(mesh_registry_load(f->st, TD, &reg), MID_E_CORRUPT);
    assert_contains(mid_errmsg(), "service default/junk");
    mesh_plan *p = NULL;
    assert_mid_err(mesh_plan_new(f->st, TD, &p), MID_E_CORRUPT);
    assert_null(p);

    /* a row whose JSON names another resource */
    mesh_doc *docs = NULL;
    size_t n = 0;
    ma_parse(SVC_B, "b.yaml", &docs, &n);
    char *json = NULL;
    assert_mid_ok(mesh_service_to_json(docs[0].u.service, &json));
    store_mesh_change ch2 = {.op = STORE_MESH_PUT, .kind = "service", .namespace_ = "default",
                             .name = "junk", .spec_json = json};
    assert_mid_ok(store_mesh_apply(f->st, &ch2, 1, &ev, NULL));
    assert_mid_err(mesh_registry_load(f->st, TD, &reg), MID_E_CORRUPT);
    assert_contains(mid_errmsg(), "other/b");
    free(json);
    mesh_doc_list_free(docs, n);
}

/* ---- plans ------------------------------------------------------------------------ */

static void test_plan_actions(void **state)
{
    fx *f = *state;
    mesh_doc *docs = NULL;
    size_t n = 0;
    char both[4096];
    snprintf(both, sizeof both, "%s---\n%s---\n%s", SVC_A, SVC_B, POL_P);
    ma_parse(both, "all.yaml", &docs, &n);
    assert_int_equal(n, 3);

    /* first time: all created */
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_int_equal(mesh_plan_revision(p), 0);
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_int_equal(mesh_plan_n_items(p), 3);
    assert_int_equal(mesh_plan_n_changes(p), 3);
    for (size_t i = 0; i < 3; i++) assert_int_equal(mesh_plan_item_at(p, i)->action, MESH_PLAN_CREATED);
    assert_null(mesh_plan_item_at(p, 3));
    const mesh_plan_item *it = mesh_plan_item_at(p, 1);
    assert_int_equal(it->kind, MESH_KIND_SERVICE);
    assert_string_equal(it->namespace_, "other");
    assert_string_equal(it->name, "b");
    assert_non_null(it->source);
    assert_contains(it->source, "all.yaml:");
    mesh_commit_opts co = {.actor = "admin:uid=7"};
    int64_t rev = 0;
    /* not checked yet */
    assert_mid_err(mesh_plan_commit(f->st, p, &co, &rev), MID_E_STATE);
    mesh_registry *reg = NULL;
    assert_mid_ok(mesh_plan_check(p, &reg));
    assert_int_equal(mesh_registry_n_services(reg), 2);
    mesh_registry_unref(reg);
    int64_t before = ma_count_events(f->st, "mesh.apply");
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, &rev));
    assert_int_equal(rev, 1);
    assert_int_equal(ma_count_events(f->st, "mesh.apply"), before + 3);
    mesh_plan_free(p);

    /* the same again: unchanged, nothing written */
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_int_equal(mesh_plan_revision(p), 1);
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_int_equal(mesh_plan_n_changes(p), 0);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(mesh_plan_item_at(p, i)->action, MESH_PLAN_UNCHANGED);
    assert_mid_ok(mesh_plan_check(p, NULL));
    rev = 0;
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, &rev));
    assert_int_equal(rev, 1);
    assert_int_equal(mesh_rev(f), 1);
    assert_int_equal(ma_count_events(f->st, "mesh.apply"), before + 3);
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);

    /* one changed: updated, the others untouched */
    ma_parse(SVC_A_CHANGED, "a2.yaml", &docs, &n);
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_int_equal(mesh_plan_item_at(p, 0)->action, MESH_PLAN_UPDATED);
    assert_mid_ok(mesh_plan_check(p, NULL));
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, &rev));
    assert_int_equal(rev, 2);
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);
    store_mesh_row row = {0};
    assert_mid_ok(store_mesh_get(f->st, "service", "default", "a", &row));
    assert_int_equal(row.revision, 2);
    assert_contains(row.spec_json, "8080");
    store_mesh_row_clear(&row);
    assert_mid_ok(store_mesh_get(f->st, "service", "other", "b", &row));
    assert_int_equal(row.revision, 1);
    store_mesh_row_clear(&row);

    /* the last event's details */
    store_audit_row ar = {0};
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    assert_mid_ok(store_audit_head(f->st, &seq, h));
    assert_mid_ok(store_audit_get(f->st, seq, &ar));
    assert_string_equal(ar.ev.event, "mesh.apply");
    assert_string_equal(ar.ev.actor, "admin:uid=7");
    json_t *d = json_loads(ar.ev.details, 0, NULL);
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d, "kind")), "service");
    assert_string_equal(json_string_value(json_object_get(d, "namespace")), "default");
    assert_string_equal(json_string_value(json_object_get(d, "name")), "a");
    assert_string_equal(json_string_value(json_object_get(d, "action")), "updated");
    json_decref(d);
    store_audit_row_clear(&ar);
}

static void test_plan_delete(void **state)
{
    fx *f = *state;
    apply_yaml(f, SVC_A, "a.yaml");
    apply_yaml(f, POL_P, "p.yaml");
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_err(mesh_plan_delete(p, MESH_KIND_SERVICE, "default", "nope"), MID_E_NOT_FOUND);
    assert_contains(mid_errmsg(), "no service default/nope");
    /* a policy is not a service */
    assert_mid_err(mesh_plan_delete(p, MESH_KIND_SERVICE, "default", "p"), MID_E_NOT_FOUND);
    assert_mid_ok(mesh_plan_delete(p, MESH_KIND_POLICY, "default", "p"));
    assert_mid_err(mesh_plan_delete(p, MESH_KIND_POLICY, "default", "p"), MID_E_INVALID);
    assert_null(mesh_plan_find_policy(p, "default/p"));
    assert_int_equal(mesh_plan_item_at(p, 0)->action, MESH_PLAN_DELETED);
    assert_mid_ok(mesh_plan_check(p, NULL));
    mesh_commit_opts co = {.actor = "test"};
    int64_t rev = 0;
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, &rev));
    assert_int_equal(rev, 3);
    mesh_plan_free(p);
    assert_int_equal(ma_stored_count(f->st), 1);
    assert_int_equal(ma_count_events(f->st, "mesh.delete"), 1);
}

static void test_find(void **state)
{
    fx *f = *state;
    apply_yaml(f, SVC_A, "a.yaml");
    apply_yaml(f, SVC_B, "b.yaml");
    apply_yaml(f, POL_P, "p.yaml");
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    const mesh_service *a = mesh_plan_find_service(p, "default/a");
    assert_non_null(a);
    assert_ptr_equal(mesh_plan_find_service(p, "a"), a);
    assert_ptr_equal(mesh_plan_find_service(p, "a.default.svc"), a);
    assert_ptr_equal(mesh_plan_find_service(p, "A.Default.SVC"), a);
    const mesh_service *b = mesh_plan_find_service(p, "b.other.svc");
    assert_non_null(b);
    assert_string_equal(b->name, "b");
    assert_ptr_equal(mesh_plan_find_service(p, "other/b"), b);
    assert_null(mesh_plan_find_service(p, "b")); /* not in the default namespace */
    assert_null(mesh_plan_find_service(p, "default/a.default.svc"));
    assert_null(mesh_plan_find_service(p, ""));
    assert_null(mesh_plan_find_service(p, "/"));
    assert_null(mesh_plan_find_service(p, "a/b/c"));
    assert_non_null(mesh_plan_find_policy(p, "p"));
    assert_non_null(mesh_plan_find_policy(p, "default/p"));
    assert_null(mesh_plan_find_policy(p, "other/p"));
    /* an over-long name is simply not found */
    char big[1024];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_null(mesh_plan_find_service(p, big));
    mesh_plan_free(p);
}

static void test_host_conflict_refused_before_writing(void **state)
{
    fx *f = *state;
    apply_yaml(f, SVC_A, "a.yaml");
    int64_t events = ma_count_events(f->st, NULL);
    mesh_doc *docs = NULL;
    size_t n = 0;
    char two[4096];
    snprintf(two, sizeof two, "%s---\n%s", SVC_B, SVC_THIEF);
    ma_parse(two, "two.yaml", &docs, &n);
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_mid_err(mesh_plan_check(p, NULL), MID_E_INVALID);
    /* names the file and line, the field, the host and both services */
    assert_contains(mid_errmsg(), "two.yaml:");
    assert_contains(mid_errmsg(), "spec.hosts[1]");
    assert_contains(mid_errmsg(), "a.default.svc");
    assert_contains(mid_errmsg(), "other/thief");
    assert_contains(mid_errmsg(), "default/a");
    mesh_commit_opts co = {.actor = "test"};
    assert_mid_err(mesh_plan_commit(f->st, p, &co, NULL), MID_E_STATE);
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);
    /* nothing of the two (b was fine on its own) was written */
    assert_int_equal(ma_stored_count(f->st), 1);
    assert_int_equal(mesh_rev(f), 1);
    assert_int_equal(ma_count_events(f->st, NULL), events);

    /* moving the host in one apply is fine: a gives it up, thief takes it */
    snprintf(two, sizeof two, "%s---\n%s", SVC_THIEF, SVC_A_CHANGED);
    char *moved = strdup(two);
    /* a keeps only a host of its own */
    char *h = strstr(moved + strlen(SVC_THIEF), "a.default.svc");
    assert_non_null(h);
    memcpy(h, "z", 1);
    ma_parse(moved, "move.yaml", &docs, &n);
    free(moved);
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_mid_ok(mesh_plan_check(p, NULL));
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, NULL));
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);
    assert_int_equal(ma_stored_count(f->st), 2);

    /* two new services in one plan claiming one host */
    ma_parse(SVC_A, "again.yaml", &docs, &n); /* a wants a.default.svc back */
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_mid_err(mesh_plan_check(p, NULL), MID_E_INVALID);
    assert_contains(mid_errmsg(), "again.yaml:");
    assert_contains(mid_errmsg(), "other/thief");
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);
}

static void test_duplicates_in_one_plan(void **state)
{
    fx *f = *state;
    mesh_doc *d1 = NULL, *d2 = NULL;
    size_t n1 = 0, n2 = 0;
    ma_parse(SVC_A, "one.yaml", &d1, &n1);
    ma_parse(SVC_A_CHANGED, "two.yaml", &d2, &n2);
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, d1, n1));
    assert_mid_err(mesh_plan_put_docs(p, d2, n2), MID_E_INVALID);
    assert_contains(mid_errmsg(), "two.yaml:");
    assert_contains(mid_errmsg(), "one.yaml:");
    assert_contains(mid_errmsg(), "service default/a");
    mesh_plan_free(p);
    /* put then delete of a stored one */
    apply_yaml(f, SVC_A, "a.yaml");
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, d2, n2));
    assert_mid_err(mesh_plan_delete(p, MESH_KIND_SERVICE, "default", "a"), MID_E_INVALID);
    mesh_plan_free(p);
    mesh_doc_list_free(d1, n1);
    mesh_doc_list_free(d2, n2);
}

static void test_invalid_and_oversized_records(void **state)
{
    fx *f = *state;
    mesh_doc *docs = NULL;
    size_t n = 0;
    ma_parse(SVC_A, "a.yaml", &docs, &n);
    mesh_service *s = docs[0].u.service;
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));

    /* a bad address, as a hand-built record could have */
    char *saved = s->endpoints[0].address;
    s->endpoints[0].address = (char *)"10.0.0";
    assert_mid_err(mesh_plan_put_service(p, s, "hand.yaml:3"), MID_E_INVALID);
    assert_contains(mid_errmsg(), "hand.yaml:3: ");
    assert_contains(mid_errmsg(), "spec.endpoints[0].address");
    s->endpoints[0].address = saved;

    /* too many hosts */
    char **hosts = calloc(MESH_HOSTS_MAX + 1, sizeof *hosts);
    char names[MESH_HOSTS_MAX + 1][32];
    for (size_t i = 0; i <= MESH_HOSTS_MAX; i++) {
        snprintf(names[i], sizeof names[i], "h%zu.example", i);
        hosts[i] = names[i];
    }
    char **saved_hosts = s->hosts;
    size_t saved_n = s->n_hosts;
    s->hosts = hosts;
    s->n_hosts = MESH_HOSTS_MAX + 1;
    assert_mid_err(mesh_plan_put_service(p, s, NULL), MID_E_TOO_LARGE);
    s->hosts = saved_hosts;
    s->n_hosts = saved_n;
    free(hosts);

    /* nothing was put */
    assert_int_equal(mesh_plan_n_items(p), 0);
    assert_mid_ok(mesh_plan_put_service(p, s, NULL));
    assert_int_equal(mesh_plan_n_items(p), 1);
    assert_null(mesh_plan_item_at(p, 0)->source);
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);

    /* NULLs */
    assert_mid_err(mesh_plan_new(f->st, NULL, &p), MID_E_INVALID);
    assert_mid_err(mesh_plan_check(NULL, NULL), MID_E_INVALID);
}

/* Two writers: the second one's plan is stale, and its commit writes nothing
 * of its (otherwise fine) changes. */
static void test_stale_plan_all_or_nothing(void **state)
{
    fx *f = *state;
    apply_yaml(f, SVC_A, "a.yaml");
    mesh_doc *docs = NULL;
    size_t n = 0;
    char two[4096];
    snprintf(two, sizeof two, "%s---\n%s", SVC_B, SVC_A_CHANGED);
    ma_parse(two, "two.yaml", &docs, &n);
    mesh_plan *stale = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &stale));
    assert_mid_ok(mesh_plan_put_docs(stale, docs, n));
    assert_int_equal(mesh_plan_item_at(stale, 0)->action, MESH_PLAN_CREATED);
    assert_int_equal(mesh_plan_item_at(stale, 1)->action, MESH_PLAN_UPDATED);
    assert_mid_ok(mesh_plan_check(stale, NULL));

    /* meanwhile someone else deletes a */
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_delete(p, MESH_KIND_SERVICE, "default", "a"));
    assert_mid_ok(mesh_plan_check(p, NULL));
    mesh_commit_opts co = {.actor = "other"};
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, NULL));
    mesh_plan_free(p);
    int64_t rev = mesh_rev(f);
    int64_t events = ma_count_events(f->st, NULL);

    co.actor = "stale";
    assert_mid_err(mesh_plan_commit(f->st, stale, &co, NULL), MID_E_STATE);
    mesh_plan_free(stale);
    assert_int_equal(ma_stored_count(f->st), 0); /* b was not created either */
    assert_int_equal(mesh_rev(f), rev);
    assert_int_equal(ma_count_events(f->st, NULL), events);

    /* a created resource that appeared meanwhile is a conflict too */
    assert_mid_ok(mesh_plan_new(f->st, TD, &stale));
    assert_mid_ok(mesh_plan_put_docs(stale, docs, 1)); /* b: created */
    assert_mid_ok(mesh_plan_check(stale, NULL));
    apply_yaml(f, SVC_B, "b.yaml");
    assert_mid_err(mesh_plan_commit(f->st, stale, &co, NULL), MID_E_STATE);
    mesh_plan_free(stale);
    mesh_doc_list_free(docs, n);
}

static void test_commit_address_detail(void **state)
{
    fx *f = *state;
    mesh_doc *docs = NULL;
    size_t n = 0;
    ma_parse(SVC_A, "a.yaml", &docs, &n);
    mesh_plan *p = NULL;
    assert_mid_ok(mesh_plan_new(f->st, TD, &p));
    assert_mid_ok(mesh_plan_put_docs(p, docs, n));
    assert_mid_ok(mesh_plan_check(p, NULL));
    mesh_commit_opts co = {.actor = "admin:uid=1", .event = "mesh.endpoint.add",
                           .address = "10.0.0.1", .reason = "why"};
    assert_mid_ok(mesh_plan_commit(f->st, p, &co, NULL));
    mesh_plan_free(p);
    mesh_doc_list_free(docs, n);
    int64_t seq = 0;
    uint8_t h[STORE_HASH_LEN];
    store_audit_row ar = {0};
    assert_mid_ok(store_audit_head(f->st, &seq, h));
    assert_mid_ok(store_audit_get(f->st, seq, &ar));
    assert_string_equal(ar.ev.event, "mesh.endpoint.add");
    assert_string_equal(ar.ev.reason, "why");
    assert_contains(ar.ev.details, "\"address\":\"10.0.0.1\"");
    store_audit_row_clear(&ar);
    assert_mid_err(mesh_plan_commit(f->st, p = NULL, &co, NULL), MID_E_INVALID);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(f->st, &v));
    assert_true(v.ok);
}

int run_registry_store_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test_setup_teardown(test_load_empty_and_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_corrupt_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_conflict_refused_before_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_in_one_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_and_oversized_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_plan_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_address_detail, setup, teardown),
    };
    return cmocka_run_group_tests_name("registry_store", tests, NULL, NULL);
}
