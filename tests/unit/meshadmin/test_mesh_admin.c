/* meshcore/mesh_admin over a real admin Unix socket (one rpc loop plays the
 * server and the client), and the sds/server.c extension hook that plugs
 * it into `meshid server`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "meshcore/mesh_admin.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/server.h"
#include "storage/store_mesh.h"
#include "tests/testlib/rpc_wait.h"
#include "tests/unit/meshadmin/meshadmin_tests.h"

#define TD "cluster.local"
#define ADMIN "/meshid.admin.v1.Admin/"
#define TIMEOUT_MS 20000

static const char *const SVC =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata:\n"
    "  name: details\n"
    "spec:\n"
    "  hosts: [details.default.svc]\n"
    "  ports:\n"
    "  - {number: 9080, name: http, protocol: HTTP}\n"
    "  - {number: 9090, name: raw, protocol: TCP}\n"
    "  resolution: STATIC\n"
    "  endpoints:\n"
    "  - address: 10.1.0.1\n"
    "    labels: {app: details, version: v1}\n"
    "    serviceAccount: bookinfo-details\n"
    "  - address: 10.1.0.2\n"
    "    labels: {app: details, version: v1}\n";

static const char *const POL =
    "apiVersion: security.istio.io/v1beta1\n"
    "kind: AuthorizationPolicy\n"
    "metadata:\n"
    "  name: details-viewer\n"
    "  namespace: default\n"
    "spec:\n"
    "  selector:\n"
    "    matchLabels:\n"
    "      app: details\n"
    "      version: v1\n"
    "  action: ALLOW\n"
    "  rules:\n"
    "  - from:\n"
    "    - source:\n"
    "        principals: [\"cluster.local/ns/default/sa/bookinfo-productpage\"]\n"
    "    to:\n"
    "    - operation:\n"
    "        methods: [\"GET\"]\n";

/* the second document has a field outside meshid's subset */
static const char *const BAD_SECOND =
    "apiVersion: networking.istio.io/v1\n"
    "kind: ServiceEntry\n"
    "metadata:\n"
    "  name: fine\n"
    "spec:\n"
    "  hosts: [fine.default.svc]\n"
    "  ports:\n"
    "  - {number: 80, name: http, protocol: HTTP}\n"
    "  resolution: STATIC\n"
    "---\n"
    "apiVersion: security.istio.io/v1\n"
    "kind: AuthorizationPolicy\n"
    "metadata:\n"
    "  name: jwt\n"
    "spec:\n"
    "  rules:\n"
    "  - when:\n"
    "    - key: request.auth.claims[iss]\n"
    "      values: [\"x\"]\n";

typedef struct {
    ma_tmp t;
    store *st;
    rpc_loop *loop;
    workpool *wp;
    mesh_admin *ma;
    rpc_server *srv;
    rpc_channel *ch;
    char sock[400];
    /* the changed callback */
    int changed;
    int64_t changed_rev;
    char msg[2048]; /* status message of the last unary call */
} fx;

static void on_changed(void *ctx, int64_t rev)
{
    fx *f = ctx;
    f->changed++;
    f->changed_rev = rev;
}

/* One unary call on ch; returns the code, *resp (may be NULL) owned by the caller. */
static rpc_code unary_on(fx *f, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *desc, void *resp)
{
    char path[128];
    snprintf(path, sizeof path, ADMIN "%s", method);
    return tl_unary(f->loop, ch, path, req, desc, TIMEOUT_MS, f->msg, sizeof f->msg, resp);
}

static rpc_code unary(fx *f, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *desc, void *resp)
{
    return unary_on(f, f->ch, method, req, desc, resp);
}

static void free_msg(void *m)
{
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    ma_tmp_init(&f->t);
    f->st = ma_open_store(&f->t);
    snprintf(f->sock, sizeof f->sock, "%s/admin.sock", f->t.dir);
    assert_mid_ok(rpc_loop_new(&f->loop));
    assert_mid_ok(workpool_new(f->loop, 2, 0, &f->wp));
    mesh_admin_opts o = {.st = f->st, .wp = f->wp, .trust_domain = TD, .changed = on_changed,
                         .changed_ctx = f};
    assert_mid_ok(mesh_admin_new(&o, &f->ma));
    assert_mid_ok(rpc_server_new(f->loop, NULL, &f->srv));
    assert_mid_ok(mesh_admin_register(f->ma, f->srv));
    assert_mid_ok(rpc_server_add_unix(f->srv, f->sock, 0600));
    assert_mid_ok(rpc_server_start(f->srv));
    char target[420];
    snprintf(target, sizeof target, "unix:%s", f->sock);
    assert_mid_ok(rpc_channel_new(f->loop, target, NULL, 0, &f->ch));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    mesh_admin_shutdown(f->ma);
    workpool_free(f->wp);
    rpc_loop_free(f->loop);
    mesh_admin_free(f->ma);
    store_close(f->st);
    ma_tmp_cleanup(&f->t);
    free(f);
    return 0;
}

/* ApplyResources of (name, text) pairs; returns the code. */
static rpc_code apply(fx *f, const char *const *names, const char *const *texts, size_t n,
                      bool dry_run, const char *only, Meshid__Admin__V1__ApplyResourcesResponse **resp)
{
    Meshid__Admin__V1__SourceFile files[8], *fp[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        meshid__admin__v1__source_file__init(&files[i]);
        files[i].name = (char *)names[i];
        files[i].content.data = (uint8_t *)texts[i];
        files[i].content.len = strlen(texts[i]);
        fp[i] = &files[i];
    }
    Meshid__Admin__V1__ApplyResourcesRequest req = MESHID__ADMIN__V1__APPLY_RESOURCES_REQUEST__INIT;
    req.files = fp;
    req.n_files = n;
    req.dry_run = dry_run;
    if (only) req.only_kind = (char *)only;
    return unary(f, "ApplyResources", &req.base,
                 &meshid__admin__v1__apply_resources_response__descriptor, resp);
}

static void apply_ok(fx *f)
{
    const char *names[] = {"svc.yaml", "pol.yaml"};
    const char *texts[] = {SVC, POL};
    assert_int_equal(apply(f, names, texts, 2, false, NULL, NULL), RPC_OK);
}

/* ---- apply ----------------------------------------------------------------------- */

static void test_apply_actions_and_changed(void **state)
{
    fx *f = *state;
    const char *names[] = {"svc.yaml", "pol.yaml"};
    const char *texts[] = {SVC, POL};
    Meshid__Admin__V1__ApplyResourcesResponse *resp = NULL;

    /* a dry run reports, writes nothing, tells nobody */
    assert_int_equal(apply(f, names, texts, 2, true, NULL, &resp), RPC_OK);
    assert_true(resp->dry_run);
    assert_int_equal(resp->n_resources, 2);
    assert_string_equal(resp->resources[0]->action, "created");
    free_msg(resp);
    assert_int_equal(ma_stored_count(f->st), 0);
    assert_int_equal(f->changed, 0);

    assert_int_equal(apply(f, names, texts, 2, false, NULL, &resp), RPC_OK);
    assert_int_equal(resp->n_resources, 2);
    assert_string_equal(resp->resources[0]->kind, "service");
    assert_string_equal(resp->resources[0]->namespace_, "default");
    assert_string_equal(resp->resources[0]->name, "details");
    assert_string_equal(resp->resources[0]->action, "created");
    assert_string_equal(resp->resources[0]->source, "svc.yaml:1");
    assert_string_equal(resp->resources[1]->kind, "policy");
    assert_string_equal(resp->resources[1]->action, "created");
    assert_int_equal(resp->revision, 1);
    free_msg(resp);
    assert_int_equal(f->changed, 1);
    assert_int_equal(f->changed_rev, 1);
    assert_int_equal(ma_count_events(f->st, "mesh.apply"), 2);

    /* again: unchanged, no write, no callback */
    assert_int_equal(apply(f, names, texts, 2, false, NULL, &resp), RPC_OK);
    assert_string_equal(resp->resources[0]->action, "unchanged");
    assert_string_equal(resp->resources[1]->action, "unchanged");
    assert_int_equal(resp->revision, 1);
    free_msg(resp);
    assert_int_equal(f->changed, 1);
    assert_int_equal(ma_count_events(f->st, "mesh.apply"), 2);
}

static void test_apply_all_or_nothing(void **state)
{
    fx *f = *state;
    const char *names[] = {"bad.yaml"};
    const char *texts[] = {BAD_SECOND};
    assert_int_equal(apply(f, names, texts, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "bad.yaml:17:");
    assert_contains(f->msg, "spec.rules[0].when");
    assert_int_equal(ma_stored_count(f->st), 0);
    assert_int_equal(f->changed, 0);

    /* a good file and a bad one: neither */
    const char *names2[] = {"good.yaml", "worse.yaml"};
    const char *texts2[] = {SVC, "kind: ServiceEntry\nspec: [\n"};
    assert_int_equal(apply(f, names2, texts2, 2, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "worse.yaml:");
    assert_int_equal(ma_stored_count(f->st), 0);

    /* the same resource in two files */
    const char *names3[] = {"one.yaml", "two.yaml"};
    const char *texts3[] = {SVC, SVC};
    assert_int_equal(apply(f, names3, texts3, 2, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "two.yaml:1");
    assert_contains(f->msg, "one.yaml:1");
    assert_int_equal(ma_stored_count(f->st), 0);

    /* a host conflict with what is stored */
    apply_ok(f);
    char thief[2048];
    snprintf(thief, sizeof thief, "%s", SVC);
    char *m = strstr(thief, "name: details");
    memcpy(m, "name: thiefss", 13);
    const char *names4[] = {"thief.yaml"};
    const char *texts4[] = {thief};
    assert_int_equal(apply(f, names4, texts4, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "thief.yaml:1: spec.hosts[0]");
    assert_contains(f->msg, "default/details");
    assert_int_equal(ma_stored_count(f->st), 2);
    assert_int_equal(f->changed, 1);

    /* each refusal is audited with the caller's message as its reason */
    assert_int_equal(ma_count_refusals(f->st, "mesh.apply", NULL), 4);
    assert_int_equal(ma_count_refusals(f->st, "mesh.apply", "bad.yaml:17:"), 1);
    assert_int_equal(ma_count_refusals(f->st, "mesh.apply", "thief.yaml:1: spec.hosts[0]"), 1);
    /* a dry run writes nothing, so its refusal is not an audited change */
    assert_int_equal(apply(f, names, texts, 1, true, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_int_equal(ma_count_refusals(f->st, "mesh.apply", NULL), 4);
}

static void test_apply_bad_requests(void **state)
{
    fx *f = *state;
    /* no files */
    assert_int_equal(apply(f, NULL, NULL, 0, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "no files");
    /* invalid YAML: file, line and column */
    const char *n1[] = {"x.yaml"};
    const char *t1[] = {"apiVersion: v1\nkind: [\n"};
    assert_int_equal(apply(f, n1, t1, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "x.yaml:");
    /* an unknown kind */
    const char *t2[] = {"apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n"};
    assert_int_equal(apply(f, n1, t2, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "Deployment");
    /* nothing but a comment */
    const char *t3[] = {"# nothing\n"};
    assert_int_equal(apply(f, n1, t3, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "no ServiceEntry or AuthorizationPolicy documents");
    /* bad names */
    const char *n4[] = {""};
    const char *t4[] = {SVC};
    assert_int_equal(apply(f, n4, t4, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    const char *n5[] = {"evil\n.yaml"};
    assert_int_equal(apply(f, n5, t4, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "control characters");
    char longname[MESH_ADMIN_FILE_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *n6[] = {longname};
    assert_int_equal(apply(f, n6, t4, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    /* too many files */
    size_t nf = MESH_ADMIN_FILES_MAX + 1;
    Meshid__Admin__V1__SourceFile *many = calloc(nf, sizeof *many);
    Meshid__Admin__V1__SourceFile **mp = calloc(nf, sizeof *mp);
    for (size_t i = 0; i < nf; i++) {
        meshid__admin__v1__source_file__init(&many[i]);
        many[i].name = (char *)"f.yaml";
        many[i].content.data = (uint8_t *)"# x\n";
        many[i].content.len = 4;
        mp[i] = &many[i];
    }
    Meshid__Admin__V1__ApplyResourcesRequest mreq = MESHID__ADMIN__V1__APPLY_RESOURCES_REQUEST__INIT;
    mreq.files = mp;
    mreq.n_files = nf;
    assert_int_equal(unary(f, "ApplyResources", &mreq.base,
                           &meshid__admin__v1__apply_resources_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "over the limit");
    free(many);
    free(mp);
    /* a document over a model limit (too many hosts) */
    char hosts[8192] = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: "
                       "big}\nspec:\n  resolution: STATIC\n  ports: [{number: 80, name: http, "
                       "protocol: HTTP}]\n  hosts:\n";
    for (int i = 0; i <= MESH_HOSTS_MAX; i++) {
        size_t used = strlen(hosts);
        snprintf(hosts + used, sizeof hosts - used, "  - h%d.example\n", i);
    }
    const char *t7[] = {hosts};
    assert_int_equal(apply(f, n1, t7, 1, false, NULL, NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "spec.hosts");
    assert_int_equal(ma_stored_count(f->st), 0);
    /* only_kind */
    const char *n8[] = {"p.yaml"};
    const char *t8[] = {POL};
    assert_int_equal(apply(f, n8, t8, 1, false, "service", NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "p.yaml:1: an AuthorizationPolicy is refused here");
    assert_int_equal(apply(f, n8, t8, 1, false, "bogus", NULL), RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "unknown kind");
    assert_int_equal(apply(f, n8, t8, 1, false, "policy", NULL), RPC_OK);
    assert_int_equal(ma_stored_count(f->st), 1);
}

/* ---- resources ------------------------------------------------------------------- */

static void test_list_get_delete(void **state)
{
    fx *f = *state;
    apply_ok(f);
    Meshid__Admin__V1__ListResourcesRequest lr = MESHID__ADMIN__V1__LIST_RESOURCES_REQUEST__INIT;
    Meshid__Admin__V1__ListResourcesResponse *list = NULL;
    assert_int_equal(unary(f, "ListResources", &lr.base,
                           &meshid__admin__v1__list_resources_response__descriptor, &list),
                     RPC_OK);
    assert_int_equal(list->n_resources, 2);
    assert_int_equal(list->revision, 1);
    free_msg(list);
    lr.kind = (char *)"service";
    assert_int_equal(unary(f, "ListResources", &lr.base,
                           &meshid__admin__v1__list_resources_response__descriptor, &list),
                     RPC_OK);
    assert_int_equal(list->n_resources, 1);
    assert_contains(list->resources[0]->spec_json, "details.default.svc");
    free_msg(list);
    lr.kind = (char *)"pods";
    assert_int_equal(unary(f, "ListResources", &lr.base,
                           &meshid__admin__v1__list_resources_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);

    Meshid__Admin__V1__GetResourceRequest gr = MESHID__ADMIN__V1__GET_RESOURCE_REQUEST__INIT;
    Meshid__Admin__V1__GetResourceResponse *got = NULL;
    gr.kind = (char *)"service";
    const char *names[] = {"details", "default/details", "details.default.svc"};
    for (size_t i = 0; i < 3; i++) {
        gr.name = (char *)names[i];
        assert_int_equal(unary(f, "GetResource", &gr.base,
                               &meshid__admin__v1__get_resource_response__descriptor, &got),
                         RPC_OK);
        assert_string_equal(got->resource->name, "details");
        free_msg(got);
    }
    gr.name = (char *)"nope";
    assert_int_equal(unary(f, "GetResource", &gr.base,
                           &meshid__admin__v1__get_resource_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    assert_contains(f->msg, "no service \"nope\"");
    gr.kind = (char *)"policy";
    gr.name = (char *)"details.default.svc"; /* policies have no hosts */
    assert_int_equal(unary(f, "GetResource", &gr.base,
                           &meshid__admin__v1__get_resource_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    gr.name = (char *)"";
    assert_int_equal(unary(f, "GetResource", &gr.base,
                           &meshid__admin__v1__get_resource_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);

    Meshid__Admin__V1__DeleteResourceRequest dr = MESHID__ADMIN__V1__DELETE_RESOURCE_REQUEST__INIT;
    Meshid__Admin__V1__DeleteResourceResponse *del = NULL;
    dr.kind = (char *)"policy";
    dr.name = (char *)"nope";
    assert_int_equal(unary(f, "DeleteResource", &dr.base,
                           &meshid__admin__v1__delete_resource_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    dr.name = (char *)"default/details-viewer";
    assert_int_equal(unary(f, "DeleteResource", &dr.base,
                           &meshid__admin__v1__delete_resource_response__descriptor, &del),
                     RPC_OK);
    assert_string_equal(del->resource->name, "details-viewer");
    assert_int_equal(del->revision, 2);
    free_msg(del);
    assert_int_equal(f->changed, 2);
    assert_int_equal(f->changed_rev, 2);
    /* the refused delete is audited too */
    assert_int_equal(ma_count_events(f->st, "mesh.delete"), 2);
    assert_int_equal(ma_count_refusals(f->st, "mesh.delete", "nope"), 1);
    assert_int_equal(ma_stored_count(f->st), 1);
    dr.kind = (char *)"service";
    dr.name = (char *)"details.default.svc";
    assert_int_equal(unary(f, "DeleteResource", &dr.base,
                           &meshid__admin__v1__delete_resource_response__descriptor, NULL),
                     RPC_OK);
    assert_int_equal(ma_stored_count(f->st), 0);
}

/* ---- endpoints -------------------------------------------------------------------- */

static rpc_code add_ep(fx *f, const char *svc, const char *addr, const char *label,
                       const char *port, uint32_t num, const char *sa, const char *id,
                       const char *health, Meshid__Admin__V1__AddEndpointResponse **resp)
{
    Meshid__Admin__V1__AddEndpointRequest req = MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__INIT;
    Meshid__Admin__V1__AddEndpointRequest__LabelsEntry le =
        MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__LABELS_ENTRY__INIT;
    Meshid__Admin__V1__AddEndpointRequest__LabelsEntry le2 =
        MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__LABELS_ENTRY__INIT;
    Meshid__Admin__V1__AddEndpointRequest__LabelsEntry *lp[2] = {&le, &le2};
    Meshid__Admin__V1__AddEndpointRequest__PortsEntry pe =
        MESHID__ADMIN__V1__ADD_ENDPOINT_REQUEST__PORTS_ENTRY__INIT;
    Meshid__Admin__V1__AddEndpointRequest__PortsEntry *pp[1] = {&pe};
    req.service = (char *)svc;
    req.address = (char *)addr;
    if (label) {
        /* "zz" first: the server sorts */
        le.key = (char *)"zz";
        le.value = (char *)"1";
        le2.key = (char *)"app";
        le2.value = (char *)label;
        req.labels = lp;
        req.n_labels = 2;
    }
    if (port) {
        pe.key = (char *)port;
        pe.value = num;
        req.ports = pp;
        req.n_ports = 1;
    }
    if (sa) req.service_account = (char *)sa;
    if (id) req.spiffe_id = (char *)id;
    if (health) req.health = (char *)health;
    return unary(f, "AddEndpoint", &req.base, &meshid__admin__v1__add_endpoint_response__descriptor,
                 resp);
}

static Meshid__Admin__V1__ListEndpointsResponse *list_eps(fx *f, const char *svc)
{
    Meshid__Admin__V1__ListEndpointsRequest req = MESHID__ADMIN__V1__LIST_ENDPOINTS_REQUEST__INIT;
    if (svc) req.service = (char *)svc;
    Meshid__Admin__V1__ListEndpointsResponse *resp = NULL;
    assert_int_equal(unary(f, "ListEndpoints", &req.base,
                           &meshid__admin__v1__list_endpoints_response__descriptor, &resp),
                     RPC_OK);
    return resp;
}

static void test_endpoints(void **state)
{
    fx *f = *state;
    apply_ok(f);
    Meshid__Admin__V1__AddEndpointResponse *ar = NULL;

    /* refusals, nothing written */
    assert_int_equal(add_ep(f, "details", "10.1.0", NULL, NULL, 0, NULL, NULL, NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "address: \"10.1.0\" is not an IPv4 or IPv6 address");
    assert_int_equal(ma_count_refusals(f->st, "mesh.endpoint.add", "\"10.1.0\" is not"), 1);
    assert_int_equal(add_ep(f, "details", "details.example", NULL, NULL, 0, NULL, NULL, NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_int_equal(add_ep(f, "nope", "10.1.0.9", NULL, NULL, 0, NULL, NULL, NULL, NULL),
                     RPC_NOT_FOUND);
    assert_int_equal(add_ep(f, "", "10.1.0.9", NULL, NULL, 0, NULL, NULL, NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_int_equal(add_ep(f, "details", "10.1.0.9", NULL, NULL, 0, "sa",
                            "spiffe://" TD "/x", NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_int_equal(add_ep(f, "details", "10.1.0.9", NULL, NULL, 0, NULL, NULL, "SICK", NULL),
                     RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "SICK");
    assert_int_equal(add_ep(f, "details", "10.1.0.9", NULL, "nope", 80, NULL, NULL, NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "service default/details: spec.endpoints[2].ports");
    assert_int_equal(add_ep(f, "details", "10.1.0.9", NULL, "http", 70000, NULL, NULL, NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_int_equal(add_ep(f, "details", "10.1.0.9", NULL, NULL, 0, NULL, "not-a-spiffe-id", NULL,
                            NULL),
                     RPC_INVALID_ARGUMENT);
    assert_int_equal(add_ep(f, "details", "10.1.0.9", NULL, NULL, 0, "Bad_SA", NULL, NULL, NULL),
                     RPC_INVALID_ARGUMENT);
    assert_int_equal(ma_count_ok(f->st, "mesh.endpoint.add"), 0);
    assert_int_equal(ma_count_refusals(f->st, "mesh.endpoint.add", NULL), 10); /* each audited */
    assert_int_equal(f->changed, 1);

    /* a new one (by host), labels sorted, address canonicalised */
    assert_int_equal(add_ep(f, "details.default.svc", "fd00:0::1", "details", "http", 19080,
                            "bookinfo-details", NULL, "DRAINING", &ar),
                     RPC_OK);
    assert_string_equal(ar->service, "default/details");
    assert_false(ar->replaced);
    assert_int_equal(ar->revision, 2);
    free_msg(ar);
    assert_int_equal(f->changed, 2);
    assert_int_equal(f->changed_rev, 2);
    Meshid__Admin__V1__ListEndpointsResponse *l = list_eps(f, "default/details");
    assert_int_equal(l->n_endpoints, 3);
    const Meshid__Admin__V1__Endpoint *e = l->endpoints[2];
    assert_string_equal(e->address, "fd00::1");
    assert_string_equal(e->service, "default/details");
    assert_int_equal(e->n_labels, 2);
    assert_string_equal(e->labels[0]->key, "app");
    assert_string_equal(e->labels[1]->key, "zz");
    assert_int_equal(e->n_ports, 1);
    assert_int_equal(e->ports[0]->value, 19080);
    assert_string_equal(e->health, "DRAINING");
    assert_string_equal(e->spiffe_id, "spiffe://" TD "/ns/default/sa/bookinfo-details");
    free_msg(l);

    /* the same address again: replaced */
    assert_int_equal(add_ep(f, "details", "fd00::1", NULL, NULL, 0, NULL,
                            "spiffe://" TD "/custom", NULL, &ar),
                     RPC_OK);
    assert_true(ar->replaced);
    free_msg(ar);
    l = list_eps(f, "details");
    assert_int_equal(l->n_endpoints, 3);
    assert_string_equal(l->endpoints[2]->spiffe_id, "spiffe://" TD "/custom");
    assert_int_equal(l->endpoints[2]->n_labels, 0);
    assert_string_equal(l->endpoints[2]->health, "HEALTHY");
    free_msg(l);
    /* identical again: nothing changes, no event, no callback */
    int changed = f->changed;
    assert_int_equal(add_ep(f, "details", "fd00::1", NULL, NULL, 0, NULL,
                            "spiffe://" TD "/custom", NULL, &ar),
                     RPC_OK);
    assert_true(ar->replaced);
    free_msg(ar);
    assert_int_equal(f->changed, changed);
    assert_int_equal(ma_count_ok(f->st, "mesh.endpoint.add"), 2);

    /* every service's endpoints; unknown service */
    l = list_eps(f, NULL);
    assert_int_equal(l->n_endpoints, 3);
    free_msg(l);
    Meshid__Admin__V1__ListEndpointsRequest lreq = MESHID__ADMIN__V1__LIST_ENDPOINTS_REQUEST__INIT;
    lreq.service = (char *)"nope";
    assert_int_equal(unary(f, "ListEndpoints", &lreq.base,
                           &meshid__admin__v1__list_endpoints_response__descriptor, NULL),
                     RPC_NOT_FOUND);

    /* remove */
    Meshid__Admin__V1__RemoveEndpointRequest rr = MESHID__ADMIN__V1__REMOVE_ENDPOINT_REQUEST__INIT;
    rr.service = (char *)"details";
    rr.address = (char *)"10.9.9.9";
    assert_int_equal(unary(f, "RemoveEndpoint", &rr.base,
                           &meshid__admin__v1__remove_endpoint_response__descriptor, NULL),
                     RPC_NOT_FOUND);
    assert_contains(f->msg, "has no endpoint 10.9.9.9");
    rr.address = (char *)"bogus";
    assert_int_equal(unary(f, "RemoveEndpoint", &rr.base,
                           &meshid__admin__v1__remove_endpoint_response__descriptor, NULL),
                     RPC_INVALID_ARGUMENT);
    rr.address = (char *)"fd00:0:0::1";
    assert_int_equal(unary(f, "RemoveEndpoint", &rr.base,
                           &meshid__admin__v1__remove_endpoint_response__descriptor, NULL),
                     RPC_OK);
    assert_int_equal(ma_count_ok(f->st, "mesh.endpoint.remove"), 1);
    assert_int_equal(ma_count_refusals(f->st, "mesh.endpoint.remove", NULL), 2);
    assert_int_equal(ma_count_refusals(f->st, "mesh.endpoint.remove", "has no endpoint 10.9.9.9"),
                     1);
    l = list_eps(f, "details");
    assert_int_equal(l->n_endpoints, 2);
    free_msg(l);
    store_audit_verdict v;
    assert_mid_ok(store_audit_verify(f->st, &v));
    assert_true(v.ok);
}

/* ---- policy check ------------------------------------------------------------------ */

static Meshid__Admin__V1__CheckPolicyResponse *check(fx *f, const char *from, const char *to,
                                                     const char *method, uint32_t port,
                                                     rpc_code want)
{
    Meshid__Admin__V1__CheckPolicyRequest req = MESHID__ADMIN__V1__CHECK_POLICY_REQUEST__INIT;
    if (from) req.from = (char *)from;
    req.to = (char *)to;
    if (method) req.method = (char *)method;
    req.port = port;
    Meshid__Admin__V1__CheckPolicyResponse *resp = NULL;
    assert_int_equal(unary(f, "CheckPolicy", &req.base,
                           &meshid__admin__v1__check_policy_response__descriptor, &resp),
                     want);
    return resp;
}

static void test_check_policy(void **state)
{
    fx *f = *state;
    apply_ok(f);
    const char *pp = "spiffe://" TD "/ns/default/sa/bookinfo-productpage";
    Meshid__Admin__V1__CheckPolicyResponse *c = check(f, pp, "details", "GET", 0, RPC_OK);
    assert_true(c->allowed);
    assert_true(c->http);
    assert_string_equal(c->service, "default/details");
    assert_int_equal(c->n_decisions, 1); /* both endpoints have the same labels */
    assert_int_equal(c->decisions[0]->n_addresses, 2);
    assert_string_equal(c->decisions[0]->policy_namespace, "default");
    assert_string_equal(c->decisions[0]->policy_name, "details-viewer");
    assert_int_equal(c->decisions[0]->rule, 0);
    assert_contains(c->decisions[0]->text, "ALLOW by default/details-viewer rule 0");
    free_msg(c);

    c = check(f, pp, "details.default.svc", "POST", 0, RPC_OK);
    assert_false(c->allowed);
    assert_string_equal(c->decisions[0]->policy_name, "");
    assert_int_equal(c->decisions[0]->rule, -1);
    free_msg(c);

    /* another caller; no caller at all */
    c = check(f, "spiffe://" TD "/ns/default/sa/other", "details", "GET", 0, RPC_OK);
    assert_false(c->allowed);
    free_msg(c);
    c = check(f, NULL, "details", "GET", 0, RPC_OK);
    assert_false(c->allowed);
    free_msg(c);

    /* a label set the policy does not select: one decision per label set */
    assert_int_equal(add_ep(f, "details", "10.1.0.3", "other", NULL, 0, NULL, NULL, NULL, NULL),
                     RPC_OK);
    c = check(f, pp, "details", "POST", 0, RPC_OK);
    assert_int_equal(c->n_decisions, 2);
    assert_false(c->allowed);
    int allowed = c->decisions[0]->allowed + c->decisions[1]->allowed;
    assert_int_equal(allowed, 1); /* the unselected workload has no ALLOW policy: allowed */
    free_msg(c);

    /* the TCP port: HTTP-only rule fields cannot match */
    c = check(f, pp, "details", NULL, 9090, RPC_OK);
    assert_false(c->http);
    free_msg(c);
    c = check(f, pp, "details", NULL, 9080, RPC_OK);
    assert_true(c->http);
    free_msg(c);

    /* bad input */
    check(f, "not-a-spiffe-id", "details", "GET", 0, RPC_INVALID_ARGUMENT);
    assert_contains(f->msg, "from: ");
    check(f, pp, "", "GET", 0, RPC_INVALID_ARGUMENT);
    check(f, pp, "nope", "GET", 0, RPC_NOT_FOUND);
    check(f, pp, "details", "GET", 70000, RPC_INVALID_ARGUMENT);
}

/* ---- the server hook -------------------------------------------------------------- */

typedef struct {
    const char *name;
    int started, stopped, freed;
    bool fail;
    mesh_admin *ma;
    bool env_ok, tls_registered;
    char path[64]; /* must outlive the server */
} test_ext;

static void ping_start(rpc_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    (void)ctx;
    if (!mid_is_ok(rpc_call_finish(call, RPC_OK, NULL))) fail_msg("ping: %s", mid_errmsg());
}

static const rpc_handler ping_h = {.on_start = ping_start};

static mid_result ext_start(void *ctx, const server_ext_env *env)
{
    test_ext *e = ctx;
    e->started++;
    e->env_ok = env->srv && env->loop && env->admin_srv && env->tls_srv && env->st && env->wp &&
                env->trust_domain && strcmp(env->trust_domain, TD) == 0 && env->data_dir;
    if (e->fail) MID_BAIL(MID_E_INVALID, "refusing on purpose");
    /* the TLS server still takes methods */
    snprintf(e->path, sizeof e->path, "/test.Ext%s/Ping", e->name);
    e->tls_registered = mid_is_ok(rpc_server_register(
        env->tls_srv, e->path, RPC_UNARY, &meshid__admin__v1__list_agents_request__descriptor,
        &ping_h, e));
    mesh_admin_opts o = {.st = env->st, .wp = env->wp, .trust_domain = env->trust_domain};
    MID_GUARD(mesh_admin_new(&o, &e->ma));
    return mesh_admin_register(e->ma, env->admin_srv);
}

static void ext_stop(void *ctx)
{
    test_ext *e = ctx;
    e->stopped++;
    mesh_admin_shutdown(e->ma);
}

static void ext_free(void *ctx)
{
    test_ext *e = ctx;
    e->freed++;
    mesh_admin_free(e->ma);
    e->ma = NULL;
}

static void init_ca(const char *dir)
{
    char db[400];
    snprintf(db, sizeof db, "%s/meshid.db", dir);
    store *st = NULL;
    assert_mid_ok(store_open(db, NULL, &st));
    ca_init_opts o = {.trust_domain = TD, .key_type = CA_KEY_EC_P256, .actor = "test"};
    assert_mid_ok(ca_init(st, dir, &o));
    store_close(st);
}

static void test_server_extension(void **state)
{
    (void)state;
    fx f = {0};
    ma_tmp_init(&f.t);
    init_ca(f.t.dir);
    assert_mid_ok(rpc_loop_new(&f.loop));
    test_ext e = {.name = "mesh"};
    server_ext ext[] = {{.name = "mesh", .start = ext_start, .stop = ext_stop, .free = ext_free,
                         .ctx = &e}};
    server_opts so = {.data_dir = f.t.dir, .listen = "127.0.0.1:0", .workers = 2, .ext = ext,
                      .n_ext = 1};
    server *srv = NULL;
    assert_mid_ok(server_start(&so, f.loop, &srv));
    assert_int_equal(e.started, 1);
    assert_true(e.env_ok);
    assert_true(e.tls_registered);
    assert_true(server_port(srv) > 0);
    char target[4200];
    snprintf(target, sizeof target, "unix:%s", server_admin_path(srv));
    rpc_channel *ch = NULL;
    assert_mid_ok(rpc_channel_new(f.loop, target, NULL, 0, &ch));
    Meshid__Admin__V1__SourceFile file = MESHID__ADMIN__V1__SOURCE_FILE__INIT, *fp = &file;
    file.name = (char *)"svc.yaml";
    file.content.data = (uint8_t *)SVC;
    file.content.len = strlen(SVC);
    Meshid__Admin__V1__ApplyResourcesRequest req = MESHID__ADMIN__V1__APPLY_RESOURCES_REQUEST__INIT;
    req.files = &fp;
    req.n_files = 1;
    assert_int_equal(unary_on(&f, ch, "ApplyResources", &req.base,
                              &meshid__admin__v1__apply_resources_response__descriptor, NULL),
                     RPC_OK);
    /* the existing admin methods still answer on the same socket */
    Meshid__Admin__V1__ListAgentsRequest la = MESHID__ADMIN__V1__LIST_AGENTS_REQUEST__INIT;
    assert_int_equal(unary_on(&f, ch, "ListAgents", &la.base,
                              &meshid__admin__v1__list_agents_response__descriptor, NULL),
                     RPC_OK);
    server_stop(srv);
    assert_int_equal(e.stopped, 1);
    assert_int_equal(e.freed, 0);
    rpc_loop_free(f.loop);
    server_free(srv);
    assert_int_equal(e.freed, 1);
    assert_int_equal(e.stopped, 1);

    /* a failing extension fails the start; the ones before it are undone,
     * the ones after it never start */
    assert_mid_ok(rpc_loop_new(&f.loop));
    test_ext a = {.name = "a"}, b = {.name = "b", .fail = true}, c = {.name = "c"};
    server_ext three[] = {
        {.name = "a", .start = ext_start, .stop = ext_stop, .free = ext_free, .ctx = &a},
        {.name = "b", .start = ext_start, .stop = ext_stop, .free = ext_free, .ctx = &b},
        {.name = "c", .start = ext_start, .stop = ext_stop, .free = ext_free, .ctx = &c}};
    so.ext = three;
    so.n_ext = 3;
    srv = NULL;
    assert_mid_err(server_start(&so, f.loop, &srv), MID_E_INVALID);
    assert_contains(mid_errmsg(), "b: refusing on purpose");
    assert_null(srv);
    assert_int_equal(a.started, 1);
    assert_int_equal(a.stopped, 1);
    assert_int_equal(a.freed, 1);
    assert_int_equal(b.started, 1);
    assert_int_equal(b.stopped + b.freed, 0);
    assert_int_equal(c.started + c.stopped + c.freed, 0);

    /* bad extension tables */
    server_ext nostart[] = {{.name = "x"}};
    so.ext = nostart;
    so.n_ext = 1;
    assert_mid_err(server_start(&so, f.loop, &srv), MID_E_INVALID);
    so.ext = NULL;
    so.n_ext = 2;
    assert_mid_err(server_start(&so, f.loop, &srv), MID_E_INVALID);
    so.ext = ext;
    so.n_ext = SERVER_EXT_MAX + 1;
    assert_mid_err(server_start(&so, f.loop, &srv), MID_E_INVALID);
    rpc_loop_free(f.loop);
    ma_tmp_cleanup(&f.t);
}

int run_mesh_admin_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_apply_actions_and_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_policy, setup, teardown),
        cmocka_unit_test(test_server_extension),
    };
    return cmocka_run_group_tests_name("mesh_admin", tests, NULL, NULL);
}
