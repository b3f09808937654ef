#include <stdio.h>
#include <string.h>

#include "tests/unit/ca/ca_tests.h"

int main(void)
{
    int failed = 0;
    failed += ca_test_keys();
    failed += ca_test_csr();
    failed += ca_test_x509();
    failed += ca_test_x509_der();
    failed += ca_test_issue();
    failed += ca_test_batch();
    failed += ca_test_bundle();
    failed += ca_test_upstream();
    failed += ca_test_audit_head();
    failed += ca_test_rotation();
    if (failed) fprintf(stderr, "unit_ca: %d test(s) failed\n", failed);
    return failed ? 1 : 0;
}
