/* Test-only helpers for unit tests that run servers and their clients on
 * one rpc_loop (lib/rpc.h): running the loop with a time limit and making
 * a unary call synchronously. They fail the running cmocka test (fail_msg /
 * assertions) on a runtime error or a timeout; they are not what is under
 * test. */
#ifndef MESHID_TESTS_TESTLIB_RPC_WAIT_H
#define MESHID_TESTS_TESTLIB_RPC_WAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/rpc.h"

/* Runs `loop` until a callback stops it (rpc_loop_stop) or `ms` pass;
 * returns true when the time ran out. For "nothing more arrives" checks as
 * well as waits. */
bool tl_run_for(rpc_loop *loop, int64_t ms);

/* Stream waits, on the message count and end flag a test's stream
 * callbacks keep (each callback stops the loop). tl_wait_count runs `loop`
 * until *count reaches `want` or *ended is set, then fails the test unless
 * *count reached want; tl_wait_end runs it until *ended is set. Both fail
 * the test when a run takes `ms` with nothing stopping the loop. tl_quiet
 * runs it for `ms` and fails the test if *count or *ended changed: nothing
 * more arrived. */
void tl_wait_count(rpc_loop *loop, const size_t *count, size_t want, const bool *ended, int64_t ms);
void tl_wait_end(rpc_loop *loop, const bool *ended, int64_t ms);
void tl_quiet(rpc_loop *loop, const size_t *count, const bool *ended, int64_t ms);

/* Runs `loop` as long as *waiting holds (callbacks clear it and stop the
 * loop); fails the test with "timed out" after `ms`. */
void tl_run_while(rpc_loop *loop, const bool *waiting, int64_t ms);

/* One unary call of `method` (full path) on ch with a 10 s deadline, run to
 * its end on `loop` (fails the test after `wait_ms`). Returns the status
 * code; the status message (or "") goes into msg (cap bytes). When resp is
 * non-NULL it must point at a ProtobufCMessage pointer, which receives a
 * heap copy of the response, or NULL when there was none (free with
 * protobuf_c_message_free_unpacked(m, NULL)); otherwise the response is
 * dropped. */
rpc_code tl_unary(rpc_loop *loop, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc, int64_t wait_ms, char *msg, size_t cap,
                  void *resp);

#endif
