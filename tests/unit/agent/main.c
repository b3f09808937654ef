/* Entry point of the agent unit test binary (build/asan/tests/unit_agent). */
#include "tests/unit/agent/agent_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_agent_tests();
    return failed == 0 ? 0 : 1;
}
