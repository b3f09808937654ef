/* Entry point of the sds unit test binary (build/asan/tests/unit_sds). */
#include "tests/unit/sds/sds_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_attest_unix_tests();
    failed += run_view_tests();
    failed += run_secrets_tests();
    failed += run_sds_service_tests();
    failed += run_workload_api_tests();
    return failed == 0 ? 0 : 1;
}
