/* The bootstrap unit test binary (build/asan/tests/unit_bootstrap). */
#ifndef MESHID_TESTS_UNIT_BOOTSTRAP_BOOTSTRAP_TESTS_H
#define MESHID_TESTS_UNIT_BOOTSTRAP_BOOTSTRAP_TESTS_H

/* Runs the cmocka group for meshcore/bootstrap.c; returns the failures. */
int run_bootstrap_tests(void);

#endif
