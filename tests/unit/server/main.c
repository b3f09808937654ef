/* Entry point of the server unit tests. */
#include <string.h>

#include "tests/unit/server/server_tests.h"

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--admin-child") == 0) return server_tests_admin_child(argv[2]);
    int failed = 0;
    failed += run_workpool_tests();
    failed += run_server_tests();
    failed += run_tls_renewal_tests();
    return failed == 0 ? 0 : 1;
}
