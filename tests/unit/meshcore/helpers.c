/* Shared helpers of the meshcore unit tests (see meshcore_tests.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "meshcore/yaml_load.h"
#include "tests/unit/meshcore/meshcore_tests.h"

void assert_msg_has(const char *needle)
{
    const char *msg = mid_errmsg();
    if (strstr(msg, needle) == NULL)
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, needle);
}

mid_result parse_yaml_str(const char *yaml, mesh_doc **docs, size_t *n)
{
    size_t len = strlen(yaml);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, yaml, len);
    mid_result r = mesh_yaml_parse(copy, len, "t.yaml", docs, n);
    free(copy);
    return r;
}

void expect_yaml_error(const char *yaml, mid_err want, const char *needle1, const char *needle2)
{
    mesh_doc *docs = (mesh_doc *)(uintptr_t)1;
    size_t n = 99;
    mid_errclear();
    mid_result r = parse_yaml_str(yaml, &docs, &n);
    if (mid_is_ok(r)) {
        mesh_doc_list_free(docs, n);
        fail_msg("accepted:\n%s", yaml);
    }
    assert_null(docs);
    assert_int_equal(n, 0);
    if (r.err != want) fail_msg("error %s, want %s: %s", mid_errname(r.err), mid_errname(want), mid_errmsg());
    assert_msg_has("t.yaml:");
    if (needle1) assert_msg_has(needle1);
    if (needle2) assert_msg_has(needle2);
}

mesh_doc *parse_one(const char *yaml)
{
    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_result r = parse_yaml_str(yaml, &docs, &n);
    if (!mid_is_ok(r)) fail_msg("rejected: %s\n%s", mid_errmsg(), yaml);
    if (n != 1) {
        mesh_doc_list_free(docs, n);
        fail_msg("%zu documents, want 1", n);
    }
    return docs;
}

mesh_doc *load_one(const char *path)
{
    mesh_doc *docs = NULL;
    size_t n = 0;
    mid_result r = mesh_yaml_load_path(path, &docs, &n);
    if (!mid_is_ok(r)) fail_msg("%s rejected: %s", path, mid_errmsg());
    if (n != 1) {
        mesh_doc_list_free(docs, n);
        fail_msg("%s: %zu documents, want 1", path, n);
    }
    return docs;
}

void split_docs(mesh_doc *docs, size_t n, mesh_service ***svcs, size_t *n_svcs,
                mesh_policy ***pols, size_t *n_pols)
{
    *svcs = calloc(n ? n : 1, sizeof **svcs);
    *pols = calloc(n ? n : 1, sizeof **pols);
    assert_non_null(*svcs);
    assert_non_null(*pols);
    *n_svcs = *n_pols = 0;
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind == MESH_KIND_SERVICE)
            (*svcs)[(*n_svcs)++] = docs[i].u.service;
        else
            (*pols)[(*n_pols)++] = docs[i].u.policy;
        free(docs[i].source);
    }
    free(docs);
}
