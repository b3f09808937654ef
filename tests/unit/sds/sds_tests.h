/* The sds unit test binary: one group per sds concern, run by main.c.
 * To add a group: declare its runner here and call it from main(). */
#ifndef MESHID_TESTS_UNIT_SDS_SDS_TESTS_H
#define MESHID_TESTS_UNIT_SDS_SDS_TESTS_H

/* Each runs its cmocka group and returns the number of failed tests. */
int run_attest_unix_tests(void);

#endif
