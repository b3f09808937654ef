/* libFuzzer target for meshcore/yaml_load.c and the model codec of
 * meshcore/model.c.
 *
 * Feeds the raw bytes to mesh_yaml_parse (not NUL-terminated: libFuzzer's
 * buffer is exactly `size` bytes, so ASan catches any over-read) and checks,
 * aborting on any violation:
 *   - a rejection is MID_E_INVALID or MID_E_TOO_LARGE, returns nothing, and
 *     its message starts with "fuzz.yaml:LINE:COL: ", is bounded and
 *     printable (hostile keys and values are quoted, never echoed raw);
 *   - every accepted document validates, has a "fuzz.yaml:LINE" source, and
 *     its canonical JSON is a fixed point (to_json, from_json, to_json gives
 *     the same bytes), as is the JSON of a deep clone;
 *   - a registry built from clones of the services and policies either is
 *     refused as MID_E_INVALID (two services claiming one host) or finds
 *     every service by each of its hosts and by namespace/name, and every
 *     endpoint with an identity among the workloads of that identity.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/result.h"
#include "meshcore/model.h"
#include "meshcore/yaml_load.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                \
        }                                                                           \
    } while (0)

static void check_failure(mid_result r, const mesh_doc *docs, size_t n)
{
    CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE);
    CHECK(docs == NULL && n == 0);
    const char *msg = mid_errmsg();
    size_t len = strlen(msg);
    CHECK(strncmp(msg, "fuzz.yaml:", 10) == 0);
    unsigned line = 0, col = 0;
    int used = 0;
    CHECK(sscanf(msg, "fuzz.yaml:%u:%u: %n", &line, &col, &used) == 2 && used > 0);
    CHECK(line >= 1 && col >= 1);
    CHECK(len < 1024);
    for (size_t i = 0; i < len; i++) CHECK(msg[i] >= 0x20 && msg[i] < 0x7f);
}

static void check_service(const mesh_service *s)
{
    CHECK(mid_is_ok(mesh_service_validate(s)));
    char *a = NULL, *b = NULL, *c = NULL;
    CHECK(mid_is_ok(mesh_service_to_json(s, &a)));
    mesh_service *back = NULL;
    CHECK(mid_is_ok(mesh_service_from_json(a, &back)));
    CHECK(mid_is_ok(mesh_service_to_json(back, &b)));
    CHECK(strcmp(a, b) == 0);
    mesh_service *clone = NULL;
    CHECK(mid_is_ok(mesh_service_clone(s, &clone)));
    CHECK(mid_is_ok(mesh_service_to_json(clone, &c)));
    CHECK(strcmp(a, c) == 0);
    mesh_service_free(back);
    mesh_service_free(clone);
    free(a);
    free(b);
    free(c);
}

static void check_policy(const mesh_policy *p)
{
    CHECK(mid_is_ok(mesh_policy_validate(p)));
    char *a = NULL, *b = NULL, *c = NULL;
    CHECK(mid_is_ok(mesh_policy_to_json(p, &a)));
    mesh_policy *back = NULL;
    CHECK(mid_is_ok(mesh_policy_from_json(a, &back)));
    CHECK(mid_is_ok(mesh_policy_to_json(back, &b)));
    CHECK(strcmp(a, b) == 0);
    mesh_policy *clone = NULL;
    CHECK(mid_is_ok(mesh_policy_clone(p, &clone)));
    CHECK(mid_is_ok(mesh_policy_to_json(clone, &c)));
    CHECK(strcmp(a, c) == 0);
    mesh_policy_free(back);
    mesh_policy_free(clone);
    free(a);
    free(b);
    free(c);
}

static void check_registry(const mesh_doc *docs, size_t n)
{
    mesh_service **svcs = calloc(n + 1, sizeof *svcs);
    mesh_policy **pols = calloc(n + 1, sizeof *pols);
    CHECK(svcs != NULL && pols != NULL);
    size_t ns = 0, np = 0;
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind == MESH_KIND_SERVICE)
            CHECK(mid_is_ok(mesh_service_clone(docs[i].u.service, &svcs[ns++])));
        else
            CHECK(mid_is_ok(mesh_policy_clone(docs[i].u.policy, &pols[np++])));
    }
    mesh_registry *r = NULL;
    mid_result res = mesh_registry_new("example.org", 1, svcs, ns, pols, np, &r);
    if (!mid_is_ok(res)) {
        CHECK(res.err == MID_E_INVALID);
        CHECK(r == NULL);
        return;
    }
    CHECK(mesh_registry_n_services(r) == ns && mesh_registry_n_policies(r) == np);
    for (size_t i = 0; i < ns; i++) {
        const mesh_service *s = mesh_registry_service(r, i);
        for (size_t h = 0; h < s->n_hosts; h++) CHECK(mesh_registry_find_service(r, s->hosts[h]) == s);
        char nsname[2 * MESH_NAME_MAX + 2];
        snprintf(nsname, sizeof nsname, "%s/%s", s->namespace_, s->name);
        const mesh_service *found = mesh_registry_find_service(r, nsname);
        /* A host may look like "ns/name" of another service only if it had a
         * '/', which hosts cannot have. */
        CHECK(found == s);
        for (size_t e = 0; e < s->n_endpoints; e++) {
            const mesh_endpoint *ep = &s->endpoints[e];
            CHECK(ep->service_account == NULL || ep->spiffe_id != NULL);
            if (ep->spiffe_id == NULL) continue;
            mesh_workload_ref refs[4];
            size_t k = mesh_registry_workloads(r, ep->spiffe_id, refs, 4);
            CHECK(k >= 1);
            bool seen = k > 4;
            for (size_t j = 0; j < k && j < 4; j++) seen |= refs[j].endpoint == ep;
            CHECK(seen);
        }
        if (i > 0) {
            const mesh_service *prev = mesh_registry_service(r, i - 1);
            int c = strcmp(prev->namespace_, s->namespace_);
            CHECK(c < 0 || (c == 0 && strcmp(prev->name, s->name) < 0));
        }
    }
    mesh_registry_unref(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_errclear();
    mid_result r = mesh_yaml_parse((const char *)data, size, "fuzz.yaml", &docs, &n);
    if (!mid_is_ok(r)) {
        check_failure(r, docs, n);
        if (size > MESH_DOC_BYTES_MAX) CHECK(r.err == MID_E_TOO_LARGE);
        return 0;
    }
    CHECK(n == 0 || docs != NULL);
    for (size_t i = 0; i < n; i++) {
        CHECK(docs[i].source != NULL && strncmp(docs[i].source, "fuzz.yaml:", 10) == 0);
        if (docs[i].kind == MESH_KIND_SERVICE)
            check_service(docs[i].u.service);
        else
            check_policy(docs[i].u.policy);
    }
    check_registry(docs, n);
    mesh_doc_list_free(docs, n);
    return 0;
}
