/* The ads unit test binary: xDS snapshots and the ADS server, run by main.c.
 * To add a group: declare its runner here and call it from main(). */
#ifndef MESHID_TESTS_UNIT_ADS_ADS_TESTS_H
#define MESHID_TESTS_UNIT_ADS_ADS_TESTS_H

/* Each runs its cmocka group and returns the number of failed tests. */
int run_snapshot_tests(void);
int run_ads_tests(void);

#endif
