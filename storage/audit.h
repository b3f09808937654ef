/* Audit events: validation, canonical content and the hash chain.
 *
 * Backend-neutral: the same bytes are hashed whichever database holds the
 * rows, so a log can be re-verified from any copy with any tool. The format
 * (documented in docs/storage.md, "Audit chain"):
 *
 *   canonical = str("meshid.audit.v1") || i64(seq) || i64(ts_ms)
 *               || str(actor) || str(event) || str(spiffe_id) || str(serial)
 *               || str(outcome) || str(reason) || str(details)
 *   i64(x)    = 8 bytes, big-endian two's complement
 *   str(NULL) = 0x00
 *   str(s)    = 0x01 || 4-byte big-endian byte length || the bytes (no NUL)
 *   hash      = SHA-256(prev_hash || canonical)   (prev_hash: 32 raw bytes;
 *                                                  32 zero bytes for seq 1)
 *
 * Fields are hashed as stored: a NULL reason is stored (and hashed) as "",
 * a NULL details as "{}" (see audit_normalize).
 */
#ifndef MESHID_STORAGE_AUDIT_H
#define MESHID_STORAGE_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "storage/store.h"

#define AUDIT_FORMAT_TAG "meshid.audit.v1"
#define AUDIT_HEX_LEN (2 * STORE_HASH_LEN) /* hex digits of a hash, without NUL */

/* Checks an event before it is queued: actor and event non-empty, outcome
 * one of ok|denied|error, ts_ms >= 0, details (if set) a JSON object.
 * MID_E_INVALID for a malformed event, MID_E_TOO_LARGE when a field exceeds
 * STORE_AUDIT_DETAILS_MAX (details) or STORE_AUDIT_TEXT_MAX (the others). */
MID_RESULT audit_validate(const store_audit_event *ev);

/* Copies *in to *out with the stored defaults applied: reason NULL -> "",
 * details NULL -> "{}" (static strings). Other pointers are shared. */
void audit_normalize(const store_audit_event *in, store_audit_event *out);

/* Computes SHA-256(prev || canonical(ev)) into out, using ev's seq, ts_ms and
 * string fields exactly as given (ev->prev_hash and ev->hash are ignored).
 * MID_E_CRYPTO if OpenSSL fails, MID_E_TOO_LARGE for a field over 4 GiB. */
MID_RESULT audit_hash(const store_audit_event *ev, const uint8_t prev[STORE_HASH_LEN],
                      uint8_t out[STORE_HASH_LEN]);

/* Serializes canonical(ev) into a fresh buffer the caller frees (free()).
 * For tests and tools; audit_hash streams the same bytes without a buffer. */
MID_RESULT audit_canonical(const store_audit_event *ev, unsigned char **out, size_t *len);

/* Lowercase hex of a hash into out (AUDIT_HEX_LEN digits and a NUL). */
void audit_hex_encode(const uint8_t in[STORE_HASH_LEN], char out[AUDIT_HEX_LEN + 1]);

/* Parses exactly AUDIT_HEX_LEN lowercase hex digits. Returns 1 on success,
 * 0 (out zeroed) for NULL, a wrong length or any other character. */
int audit_hex_decode(const char *hex, uint8_t out[STORE_HASH_LEN]);

/* Incremental chain check, fed rows in ascending seq order (store_audit_verify
 * uses it; so can a tool reading an export). */
typedef struct {
    store_audit_verdict *v;
    int64_t last_seq;
    uint8_t last_hash[STORE_HASH_LEN];
} audit_verifier;

/* Starts a check that writes into *v (cleared: ok = 1, nothing seen). */
void audit_verifier_init(audit_verifier *vf, store_audit_verdict *v);

/* Checks one row against the previous one and counts it. `hashes_ok` is 0
 * when the row's stored hash columns could not be decoded. Sets *more to 1
 * to continue, to 0 once a broken link has been recorded in the verdict
 * (v->ok = 0, broken_seq and reason set): only the first break is reported.
 * MID_E_CRYPTO only if hashing itself fails. */
MID_RESULT audit_verifier_step(audit_verifier *vf, const store_audit_event *row, int hashes_ok,
                               int *more);

#endif
