/* The meshcore unit test binary (build/asan/tests/unit_meshcore): one group
 * per meshcore source file, run by main.c, plus shared test helpers
 * (helpers.c). Tests run from the repository root (make test and
 * scripts/run-tests.sh cd there), so data files are read from tests/data/. */
#ifndef MESHID_TESTS_UNIT_MESHCORE_MESHCORE_TESTS_H
#define MESHID_TESTS_UNIT_MESHCORE_MESHCORE_TESTS_H

#include <stddef.h>

#include "lib/result.h"
#include "meshcore/model.h"

#define ISTIO_WITHIN "tests/data/istio-examples/within/"
#define ISTIO_OUTSIDE "tests/data/istio-examples/outside/"

/* Each runs its cmocka group and returns the number of failed tests. */
int run_model_tests(void);
int run_yaml_tests(void);
int run_registry_tests(void);

/* ---- helpers (helpers.c) ---- */

/* Fails the test unless the last error message contains `needle`. */
void assert_msg_has(const char *needle);

/* mesh_yaml_parse of a NUL-terminated string named "t.yaml" (from a heap
 * copy of exactly its length, so ASan sees over-reads). */
mid_result parse_yaml_str(const char *yaml, mesh_doc **docs, size_t *n);

/* Parses `yaml`, which must fail with `want`; the message must contain
 * every non-NULL needle. Checks nothing is returned. */
void expect_yaml_error(const char *yaml, mid_err want, const char *needle1, const char *needle2);

/* Parses `yaml`, which must hold exactly one document (failing the test
 * otherwise); returns it (caller: mesh_doc_list_free(doc, 1)). */
mesh_doc *parse_one(const char *yaml);

/* Loads one example file, which must hold exactly one document. */
mesh_doc *load_one(const char *path);

/* Moves the records out of `docs` (then freed) into malloc'd pointer arrays
 * as mesh_registry_new takes them. */
void split_docs(mesh_doc *docs, size_t n, mesh_service ***svcs, size_t *n_svcs,
                mesh_policy ***pols, size_t *n_pols);

#endif
