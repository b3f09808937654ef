/* Entry point of the bootstrap unit test binary (build/asan/tests/unit_bootstrap). */
#include "tests/unit/bootstrap/bootstrap_tests.h"

int main(void)
{
    return run_bootstrap_tests() == 0 ? 0 : 1;
}
