/* Join tokens: one-time secrets with which a new agent proves it may attest.
 *
 * A token is 32 random bytes written as 64 lowercase hex digits. It is shown
 * once (CreateJoinToken) and never stored: the store keeps only its SHA-256
 * (storage/store.h, store_join_token), so a copy of the database cannot be
 * used to attest. The hash of a presented token is looked up and consumed by
 * store_join_token_consume; where a token must be compared with a stored hash
 * directly, join_token_verify does it in constant time.
 */
#ifndef MESHID_IDENTITY_JOIN_TOKEN_H
#define MESHID_IDENTITY_JOIN_TOKEN_H

#include <stdbool.h>

#include "identity/spiffe_id.h"
#include "lib/result.h"

#define JOIN_TOKEN_BYTES 32
#define JOIN_TOKEN_LEN (2 * JOIN_TOKEN_BYTES) /* hex digits, without NUL */
#define JOIN_TOKEN_HASH_LEN 64                /* hex digits of its SHA-256 */

/* Draws a new token into `token` and its hash into `hash`. The caller wipes
 * `token` (OPENSSL_cleanse) once it has been shown. MID_E_CRYPTO when the
 * random generator or SHA-256 fails. */
MID_RESULT join_token_generate(char token[JOIN_TOKEN_LEN + 1], char hash[JOIN_TOKEN_HASH_LEN + 1]);

/* Hashes a presented token. MID_E_INVALID (message "malformed join token",
 * never the token itself) unless it is exactly JOIN_TOKEN_LEN lowercase hex
 * digits; MID_E_CRYPTO if hashing fails. */
MID_RESULT join_token_hash(const char *token, char hash[JOIN_TOKEN_HASH_LEN + 1]);

/* True when `token` is well formed and hashes to `stored_hash`, compared in
 * constant time. False for anything malformed. */
bool join_token_verify(const char *token, const char *stored_hash);

/* The SPIFFE ID an agent gets when its token named none:
 * spiffe://<td>/meshid/agent/join_token/<first 32 hex digits of the hash>.
 * The hash, not the token, so the ID (which is public) reveals nothing of the
 * secret. *out is owned by the caller. MID_E_INVALID for a bad trust domain
 * or hash. */
MID_RESULT join_token_agent_id(const char *trust_domain, const char *hash, spiffe_id **out);

#endif
