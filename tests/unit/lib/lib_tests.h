/* The lib unit test binary: one group per lib source file, run by main.c. */
#ifndef MESHID_TESTS_UNIT_LIB_LIB_TESTS_H
#define MESHID_TESTS_UNIT_LIB_LIB_TESTS_H

/* Each runs its cmocka group and returns the number of failed tests. */
int run_result_tests(void);
int run_timeutil_tests(void);
int run_fsutil_tests(void);
int run_pbjson_tests(void);
int run_quote_tests(void);
int run_hash_tests(void);

#endif
