/* The server unit test binary (build/asan/tests/unit_server). */
#ifndef MESHID_TESTS_UNIT_SERVER_SERVER_TESTS_H
#define MESHID_TESTS_UNIT_SERVER_SERVER_TESTS_H

/* Each runs its cmocka group and returns the number of failed tests. */
int run_workpool_tests(void);
int run_server_tests(void);
int run_tls_renewal_tests(void);

/* Child mode: calls ListAgents on the admin socket and exits with the gRPC
 * status code (the test runs it as another uid). */
int server_tests_admin_child(const char *sock);

#endif
