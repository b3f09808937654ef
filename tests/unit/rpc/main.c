/* Entry point of the rpc unit test binary (build/asan/tests/unit_rpc). */
#include "tests/unit/rpc/rpc_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_arena_tests();
    failed += run_rpc_tests();
    return failed == 0 ? 0 : 1;
}
