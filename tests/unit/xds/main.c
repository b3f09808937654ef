/* Entry point of the xds unit test binary (build/asan/tests/unit_xds). */
#include "tests/unit/xds/xds_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_xds_proxy_tests();
    failed += run_xds_sidecar_tests();
    failed += run_xds_proxyless_tests();
    failed += run_xds_cache_tests();
    return failed == 0 ? 0 : 1;
}
