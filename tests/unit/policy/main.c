/* Entry point of the policy unit test binary (build/asan/tests/unit_policy). */
#include "tests/unit/policy/policy_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_policy_tests();
    failed += run_rbac_tests();
    return failed == 0 ? 0 : 1;
}
