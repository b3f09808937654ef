/* Protobuf (protobuf-c) messages as JSON, per the proto3 JSON mapping, for
 * people reading what meshid sends (`meshid xds dump`, like
 * `istioctl proxy-config`). Output only; there is no JSON -> protobuf.
 *
 * The mapping, driven by the messages' protobuf-c descriptors:
 *   - keys are the lowerCamelCase JSON names ("common_tls_context" ->
 *     "commonTlsContext"); protobuf-c keeps no json_name, so custom
 *     json_name options are not honoured;
 *   - a field appears exactly when protobuf-c would put it on the wire:
 *     proto3 scalars when not zero/empty, messages when present, oneof
 *     members when their case is set (pitfall §0.1-1 mirrored), optional
 *     fields when has_ is set, repeated fields when non-empty. So a message
 *     and its packed bytes give the same JSON;
 *   - enums by value name (unknown numbers as numbers), 64-bit integers as
 *     decimal strings, bytes as padded base64, NaN/Infinity as strings;
 *   - map fields (repeated nested "...Entry" messages of key=1/value=2) as
 *     objects, keys as strings;
 *   - well-known types by full name: Duration "1.500s", Timestamp RFC 3339
 *     ("...Z"), wrappers (google.protobuf.*Value) as their plain value,
 *     Struct / Value / ListValue / NullValue as JSON, Empty as {};
 *   - google.protobuf.Any as {"@type": URL, ...fields of the unpacked
 *     message} (a well-known inner type as {"@type": URL, "value": JSON}),
 *     the descriptor found through the caller's resolver. A type URL the
 *     resolver does not know gives {"@type": URL, "value": BASE64} (not
 *     part of the mapping, which would fail: a dump should show the rest).
 *
 * Limits: message nesting (Anys, Structs and lists included) deeper than
 * max_depth (at most 1000, whatever is asked: the conversion recurses) and
 * an output estimated over max_bytes fail with
 * MID_E_TOO_LARGE; packed input over max_bytes too. Packed input is
 * checked for nesting before protobuf-c decodes it, so a hostile deeply
 * nested message cannot exhaust the stack. Unknown fields are ignored.
 *
 * Errors name the JSON path: "pbjson: .resources[0].name: string is not
 * valid UTF-8".
 */
#ifndef MESHID_LIB_PBJSON_H
#define MESHID_LIB_PBJSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "lib/result.h"

#define PBJSON_MAX_DEPTH 64
#define PBJSON_MAX_BYTES ((size_t)32 << 20)

/* Maps an Any's type URL (e.g. "type.googleapis.com/envoy.config.cluster.v3.Cluster")
 * to the descriptor to decode its value with, or NULL when unknown. Called
 * on the converting thread; must not fail otherwise. */
typedef const ProtobufCMessageDescriptor *(*pbjson_resolve_fn)(void *ctx, const char *type_url);

typedef struct {
    pbjson_resolve_fn resolve; /* NULL: every Any is shown as base64 */
    void *resolve_ctx;
    unsigned max_depth;        /* 0: PBJSON_MAX_DEPTH */
    size_t max_bytes;          /* 0: PBJSON_MAX_BYTES */
} pbjson_opts;

/* Converts message `m` (any descriptor). On success *out is a new JSON value
 * owned by the caller (json_decref): an object, or for a well-known type at
 * the top its JSON form (Duration: a string, ...). On failure *out is NULL.
 * Errors: MID_E_INVALID (a string that is not UTF-8, an Any without a type
 * URL or whose value does not decode, a Duration/Timestamp out of range, a
 * google.protobuf.Value with no kind or a non-finite number),
 * MID_E_TOO_LARGE (the limits above), MID_E_NOMEM. `o` may be NULL
 * (defaults). */
MID_RESULT pbjson_from_message_opts(const ProtobufCMessage *m, const pbjson_opts *o, json_t **out);

/* Decodes `len` bytes at `buf` as a `d` message and converts it. Adds
 * MID_E_INVALID for bytes that do not decode (truncated, malformed, a
 * message field with the wrong wire type) and MID_E_TOO_LARGE for input
 * over max_bytes or nested deeper than max_depth. */
MID_RESULT pbjson_from_packed_opts(const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                                   size_t len, const pbjson_opts *o, json_t **out);

/* Shorthands with the default limits. */
MID_RESULT pbjson_from_message(const ProtobufCMessage *m, pbjson_resolve_fn fn, void *ctx,
                               json_t **out);
MID_RESULT pbjson_from_packed(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                              pbjson_resolve_fn fn, void *ctx, json_t **out);

/* A ready resolver over a fixed list of descriptors: pass
 * pbjson_table_resolve as the function and a pbjson_table as its ctx. A URL
 * matches a descriptor when the text after its last '/' equals the
 * descriptor's full name (any host prefix, as the mapping allows). */
typedef struct {
    const ProtobufCMessageDescriptor *const *descs;
    size_t n;
} pbjson_table;
const ProtobufCMessageDescriptor *pbjson_table_resolve(void *table, const char *type_url);

/* The lowerCamelCase JSON name of a proto field name, as protoc derives it
 * ("match_typed_subject_alt_names" -> "matchTypedSubjectAltNames"), into
 * `out` (cap bytes). MID_E_TOO_LARGE if it does not fit. */
MID_RESULT pbjson_json_name(const char *proto_name, char *out, size_t cap);

#endif
