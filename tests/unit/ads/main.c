/* Entry point of the ads unit test binary (build/asan/tests/unit_ads). */
#include "tests/unit/ads/ads_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_snapshot_tests();
    failed += run_ads_tests();
    return failed == 0 ? 0 : 1;
}
