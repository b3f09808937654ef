/* The rpc unit test binary: arena tests, runtime tests and a test-only
 * certificate factory. */
#ifndef MESHID_TESTS_UNIT_RPC_RPC_TESTS_H
#define MESHID_TESTS_UNIT_RPC_RPC_TESTS_H

#include <stdbool.h>

/* Each runs its cmocka group and returns the number of failed tests. */
int run_arena_tests(void);
int run_rpc_tests(void);

/* Throwaway PKI for TLS tests (heap strings, free with test_pki_free). */
typedef struct {
    char *ca_pem;
    char *server_cert, *server_key;        /* DNS:localhost, IP:127.0.0.1 */
    char *client_cert, *client_key;        /* URI:spiffe://test.example/client */
    char *nouri_cert, *nouri_key;          /* no URI SAN */
} test_pki;

bool test_pki_make(test_pki *p);
void test_pki_free(test_pki *p);

#endif
