/* A small synchronous client of the admin API for the CLI: each call runs a
 * private rpc loop, makes one unary call on the admin Unix socket and
 * returns the decoded response.
 *
 * Errors: MID_E_NOT_FOUND / MID_E_INVALID / MID_E_EXISTS / MID_E_DENIED /
 * MID_E_STATE from the matching gRPC status (the server's message is the
 * error message), MID_E_IO when the server cannot be reached ("is 'meshid
 * server' running?"), MID_E_NOMEM.
 */
#ifndef MESHID_SDS_ADMIN_CLIENT_H
#define MESHID_SDS_ADMIN_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "lib/result.h"

#define ADMIN_CLIENT_TIMEOUT_MS 15000

/* Calls "/meshid.admin.v1.Admin/<method>" on the socket at `sock_path` with
 * `req`; on success *resp is a new message of `resp_desc` owned by the
 * caller (protobuf_c_message_free_unpacked(*resp, NULL)). */
MID_RESULT admin_call(const char *sock_path, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp);

/* The same with a deadline of `timeout_ms` (for calls that wait on agents). */
MID_RESULT admin_call_timeout(const char *sock_path, const char *method,
                              const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                              ProtobufCMessage **resp);

/* <data_dir>/run/admin.sock into out. */
MID_RESULT admin_default_socket(const char *data_dir, char *out, size_t cap);

#endif
