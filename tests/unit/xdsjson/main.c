/* Entry point of the xdsjson unit test binary (build/asan/tests/unit_xdsjson).
 * With XDS_JSON_DUMP=FILE set, the generated resources are also written to
 * FILE as JSON lines for tests/interop/test_xds_json.sh. */
#include "tests/unit/xdsjson/xdsjson_tests.h"

int main(void)
{
    return run_xds_json_tests() == 0 ? 0 : 1;
}
