/* The identity unit test binary: one group per identity source file, run by main.c. */
#ifndef MESHID_TESTS_UNIT_IDENTITY_IDENTITY_TESTS_H
#define MESHID_TESTS_UNIT_IDENTITY_IDENTITY_TESTS_H

/* Each runs its cmocka group and returns the number of failed tests. */
int run_spiffe_id_tests(void);
int run_entry_tests(void);
int run_join_token_tests(void);

#endif
