/* xDS resources as JSON for people (`meshid xds dump`, like `istioctl
 * proxy-config`): the descriptor table that lets lib/pbjson.h open every
 * google.protobuf.Any meshid emits, down to the typed configs inside them
 * (HttpConnectionManager, RBAC, TLS contexts, ...).
 */
#ifndef MESHID_MESHCORE_XDS_JSON_H
#define MESHID_MESHCORE_XDS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "lib/result.h"

/* A pbjson_resolve_fn (ctx unused, pass NULL): the descriptor for a type URL
 * of one of the xDS resources, typed extension configs and secrets meshid
 * generates, or of a few well-known types; NULL for anything else (pbjson
 * then shows the bytes as base64). Thread-safe (a constant table). */
const ProtobufCMessageDescriptor *xds_json_resolve(void *ctx, const char *type_url);

/* The number of types xds_json_resolve knows, and the i-th one (its URL is
 * "type.googleapis.com/" + name), for tests and listings; NULL past the end. */
size_t xds_json_n_types(void);
const ProtobufCMessageDescriptor *xds_json_type(size_t i);

/* One resource (the bytes of an Any's value) as {"@type": type_url, ...its
 * fields...}, every nested Any opened through xds_json_resolve. *out is the
 * caller's (json_decref). Errors as pbjson_from_message: MID_E_INVALID (bytes
 * that do not decode as type_url, bad UTF-8), MID_E_TOO_LARGE (pbjson's
 * limits), MID_E_NOMEM. An unknown type_url is not an error: the value is
 * shown as base64. */
MID_RESULT xds_json_resource(const char *type_url, const uint8_t *value, size_t len,
                             json_t **out);

#endif
