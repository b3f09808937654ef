/* The xdsjson unit test binary (build/asan/tests/unit_xdsjson): xDS
 * resources as JSON (meshcore/xds_json.h over lib/pbjson.h). */
#ifndef MESHID_TESTS_UNIT_XDSJSON_XDSJSON_TESTS_H
#define MESHID_TESTS_UNIT_XDSJSON_XDSJSON_TESTS_H

/* Runs the cmocka group; returns the number of failed tests. */
int run_xds_json_tests(void);

#endif
