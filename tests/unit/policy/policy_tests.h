/* The policy unit test binary (build/asan/tests/unit_policy): the Istio
 * semantics of the evaluator (test_policy.c), the RBAC compiler and its
 * equivalence with the evaluator through an independent Envoy RBAC
 * interpreter (test_rbac.c, rbac_interp.c), and test-only builders for
 * policies (builders.c). */
#ifndef MESHID_TESTS_UNIT_POLICY_POLICY_TESTS_H
#define MESHID_TESTS_UNIT_POLICY_POLICY_TESTS_H

#include <stddef.h>

#include "lib/arena.h"
#include "meshcore/model.h"
#include "meshcore/policy.h"

/* Each runs its cmocka group and returns the number of failed tests. */
int run_policy_tests(void);
int run_rbac_tests(void);

/* cmocka group fixtures: *state is a fresh unbounded arena for the
 * builders, freed after the test. */
int tb_setup(void **state);
int tb_teardown(void **state);

/* ---- builders: everything lives in the arena `a`; they fail the running
 * cmocka test when it is exhausted. Lists are comma-separated. ---- */

/* A policy (action "ALLOW" or "DENY"), selector "k=v,k2=v2" or NULL. */
mesh_policy *tb_policy(arena *a, const char *ns, const char *name, const char *action,
                       const char *selector);
/* Appends an empty rule `{}` to p (at most 16). */
mesh_rule *tb_rule(arena *a, mesh_policy *p);
/* Appends a from[].source to r (at most 8); spec is ';'-separated fields
 * "principals=a,b;notPrincipals=*;namespaces=foo", "" for an empty source. */
void tb_source(arena *a, mesh_rule *r, const char *spec);
/* Appends a to[].operation to r (at most 8):
 * "methods=GET,HEAD;paths=/x*;ports=80,8080;hosts=a.com". */
void tb_operation(arena *a, mesh_rule *r, const char *spec);
/* A workload in ns with labels "k=v,..." (or NULL). */
mesh_workload tb_workload(arena *a, const char *ns, const char *labels);

/* The AuthorizationPolicy documents of the Istio examples
 * (/work/shared/reference/istio-examples/within/ap-*.yaml, copies in
 * tests/data/istio-examples/within/), built in C, one per file, in file
 * name order. Returns how many (<= max); names[i] is the file name. */
size_t tb_istio_examples(arena *a, mesh_policy **out, const char **names, size_t max);

#endif
