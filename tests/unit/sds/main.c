/* Entry point of the sds unit test binary (build/asan/tests/unit_sds). */
#include "tests/unit/sds/sds_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_attest_unix_tests();
    return failed == 0 ? 0 : 1;
}
