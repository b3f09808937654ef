/* Entry point of the lib unit test binary (build/asan/tests/unit_lib). */
#include "tests/unit/lib/lib_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_result_tests();
    failed += run_timeutil_tests();
    failed += run_fsutil_tests();
    failed += run_pbjson_tests();
    failed += run_quote_tests();
    failed += run_hash_tests();
    return failed == 0 ? 0 : 1;
}
