/* Entry point of the identity unit test binary (build/asan/tests/unit_identity). */
#include "tests/unit/identity/identity_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_spiffe_id_tests();
    failed += run_entry_tests();
    failed += run_join_token_tests();
    return failed == 0 ? 0 : 1;
}
