/* Entry point of the mesh admin unit tests. */
#include "tests/unit/meshadmin/meshadmin_tests.h"

int main(void)
{
    int failed = 0;
    failed += run_registry_store_tests();
    failed += run_mesh_admin_tests();
    return failed == 0 ? 0 : 1;
}
