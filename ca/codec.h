/* Text encodings the CA needs for keys, certificates and signed statements:
 * lowercase hex, standard base64 (RFC 4648 section 4, padded) and base64url
 * without padding (RFC 7515, for JWK members). Decoders are strict and
 * length-checked: they never read past `len` and never write past `cap`. */
#ifndef MESHID_CA_CODEC_H
#define MESHID_CA_CODEC_H

#include <stddef.h>

#include "lib/result.h"

/* Writes 2*len lowercase hex digits and a NUL to `out` (room for 2*len+1). */
void ca_hex_encode(const unsigned char *in, size_t len, char *out);

/* Standard padded base64 of `len` bytes as a new NUL-terminated string owned
 * by the caller (free()). MID_E_NOMEM or MID_E_TOO_LARGE. */
MID_RESULT ca_b64_encode(const unsigned char *in, size_t len, char **out);

/* base64url without padding, otherwise as ca_b64_encode. */
MID_RESULT ca_b64url_encode(const unsigned char *in, size_t len, char **out);

/* Decodes standard padded base64 (no whitespace, no other alphabet, exact
 * padding, zero trailing bits) into a new buffer owned by the caller.
 * MID_E_INVALID naming `what` on any deviation, MID_E_TOO_LARGE when the
 * decoded size would exceed `max`. */
MID_RESULT ca_b64_decode(const char *in, size_t len, size_t max, const char *what,
                         unsigned char **out, size_t *out_len);

#endif
