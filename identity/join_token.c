/* Join tokens: generation, hashing, constant-time verification. */
#include "identity/join_token.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static const char hexdig[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

static bool is_lower_hex(const char *s, size_t n)
{
    if (s == NULL || strnlen(s, n + 1) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static MID_RESULT sha256_hex(const char *s, size_t n, char hash[JOIN_TOKEN_HASH_LEN + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    MID_GUARD_OSSL(EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL), MID_E_CRYPTO,
                   "cannot hash the join token");
    MID_ENSURE(mdlen == sizeof md, MID_E_INTERNAL, "sha256 gave %u bytes", mdlen);
    to_hex(md, sizeof md, hash);
    return MID_OK_RESULT;
}

MID_RESULT join_token_generate(char token[JOIN_TOKEN_LEN + 1], char hash[JOIN_TOKEN_HASH_LEN + 1])
{
    unsigned char raw[JOIN_TOKEN_BYTES];
    token[0] = hash[0] = '\0';
    MID_GUARD_OSSL(RAND_bytes(raw, sizeof raw), MID_E_CRYPTO, "cannot draw a join token");
    to_hex(raw, sizeof raw, token);
    OPENSSL_cleanse(raw, sizeof raw);
    mid_result r = sha256_hex(token, JOIN_TOKEN_LEN, hash);
    if (!mid_is_ok(r)) OPENSSL_cleanse(token, JOIN_TOKEN_LEN + 1);
    return r;
}

MID_RESULT join_token_hash(const char *token, char hash[JOIN_TOKEN_HASH_LEN + 1])
{
    hash[0] = '\0';
    MID_ENSURE(is_lower_hex(token, JOIN_TOKEN_LEN), MID_E_INVALID,
               "malformed join token (expected %d lowercase hex digits)", JOIN_TOKEN_LEN);
    return sha256_hex(token, JOIN_TOKEN_LEN, hash);
}

bool join_token_verify(const char *token, const char *stored_hash)
{
    char h[JOIN_TOKEN_HASH_LEN + 1];
    if (!is_lower_hex(stored_hash, JOIN_TOKEN_HASH_LEN)) return false;
    if (!is_lower_hex(token, JOIN_TOKEN_LEN)) return false;
    if (!mid_is_ok(sha256_hex(token, JOIN_TOKEN_LEN, h))) return false;
    return CRYPTO_memcmp(h, stored_hash, JOIN_TOKEN_HASH_LEN) == 0;
}

MID_RESULT join_token_agent_id(const char *trust_domain, const char *hash, spiffe_id **out)
{
    char path[64];
    *out = NULL;
    MID_ENSURE(is_lower_hex(hash, JOIN_TOKEN_HASH_LEN), MID_E_INVALID,
               "join token hash must be %d lowercase hex digits", JOIN_TOKEN_HASH_LEN);
    snprintf(path, sizeof path, "/meshid/agent/join_token/%.32s", hash);
    return spiffe_id_from_parts(trust_domain, path, out);
}
