/* Entry point of the meshcore unit test binary (build/asan/tests/unit_meshcore). */
#include "tests/unit/meshcore/meshcore_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_model_tests();
    failed += run_yaml_tests();
    failed += run_registry_tests();
    return failed == 0 ? 0 : 1;
}
