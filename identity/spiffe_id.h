/* SPIFFE IDs and trust domain names, exactly per the SPIFFE ID specification
 * (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md):
 *
 *   spiffe://<trust-domain>[/<segment>...]
 *   trust domain: [a-z0-9._-]+, at most 255 bytes; no upper case, no
 *                 percent-encoding, no userinfo, no port, no IPv6 literal
 *                 (an IPv4 dotted quad is just such a name and is accepted)
 *   segments:     [a-zA-Z0-9._-]+, not "." or "..", no empty segment, no
 *                 trailing "/", no percent-encoding
 *   no query, no fragment; the whole ID at most SPIFFE_ID_MAX bytes.
 * The scheme must be written "spiffe://" in lower case. Nothing is normalised:
 * an ID is accepted only in its canonical form, so spiffe_id_str() returns
 * exactly the bytes that were parsed.
 *
 * Errors: MID_E_TOO_LARGE for an ID over SPIFFE_ID_MAX or a trust domain over
 * SPIFFE_TD_MAX bytes, MID_E_INVALID for every other broken rule, MID_E_NOMEM.
 * The message reads "invalid <what> '<input>': <rule>", names the rule (see
 * docs/identity.md for the list), quotes at most ~80 bytes of the input and
 * escapes non-printable bytes as \xHH.
 */
#ifndef MESHID_IDENTITY_SPIFFE_ID_H
#define MESHID_IDENTITY_SPIFFE_ID_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/result.h"

#define SPIFFE_TD_MAX 255   /* bytes in a trust domain name */
#define SPIFFE_ID_MAX 2048  /* bytes in a whole SPIFFE ID */

typedef struct spiffe_id spiffe_id;

/* Parses and validates `len` bytes at `s` (need not be NUL-terminated; no
 * byte past `len` is read; an embedded NUL is invalid). On success *out is a
 * new ID owned by the caller (spiffe_id_free); on failure *out is NULL.
 * MID_E_INVALID with a message naming the broken rule, MID_E_TOO_LARGE over
 * SPIFFE_ID_MAX (or a trust domain over SPIFFE_TD_MAX). */
MID_RESULT spiffe_id_parse(const char *s, size_t len, spiffe_id **out);

/* Builds an ID from a bare trust domain name (no scheme, no '/') and a path
 * ("", NULL or "/a/b"), with the same rules and errors as spiffe_id_parse.
 * On success *out is owned by the caller; on failure it is NULL. */
MID_RESULT spiffe_id_from_parts(const char *trust_domain, const char *path, spiffe_id **out);

/* Frees an ID; NULL is fine. */
void spiffe_id_free(spiffe_id *id);

/* Views into the ID, valid while it lives. */
const char *spiffe_id_str(const spiffe_id *id);          /* "spiffe://td/path" */
const char *spiffe_id_trust_domain(const spiffe_id *id); /* "td" */
const char *spiffe_id_path(const spiffe_id *id);         /* "/path", or "" for a bare domain */

/* True when the ID has a non-empty path (a workload ID, as an X.509-SVID
 * leaf must carry); false for the bare trust domain ID. */
bool spiffe_id_is_workload(const spiffe_id *id);

/* True when `id` belongs to trust domain `td` (a validated bare name; the
 * comparison is exact, so "example.org" never matches "example.org.evil").
 * False when either is NULL. */
bool spiffe_id_member_of(const spiffe_id *id, const char *td);

/* Validates a trust domain name given either bare ("example.org") or as
 * "spiffe://example.org" (no path, not even a trailing "/"); writes the bare
 * name to `out`, or "" on failure. Same rules and errors as spiffe_id_parse. */
MID_RESULT spiffe_trust_domain_parse(const char *s, char out[SPIFFE_TD_MAX + 1]);

#endif
