/* The storage unit test binary: runs every group, fails if any test failed. */
#include "storage_test.h"

int main(void)
{
    int failed = 0;
    failed += run_audit_tests();
    failed += run_store_tests();
    failed += run_batch_tests();
    failed += run_cert_many_tests();
    failed += run_tamper_tests();
    failed += run_registry_tests();
    failed += run_migration_tests();
    failed += run_authority_apply_tests();
    failed += run_mesh_store_tests();
    return failed == 0 ? 0 : 1;
}
