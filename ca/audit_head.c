/* Signed audit heads: a statement "the audit log had N events ending in hash
 * H at time T", signed by the signing authority, that lets anyone holding the
 * trust bundle later detect a truncated or rewritten log (docs/ca.md). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/ca_int.h"
#include "ca/codec.h"
#include "ca/x509.h"
#include "lib/timeutil.h"

#define HEAD_JSON_MAX (64 * 1024)
#define HEAD_MAX_CERTS 8
#define HEAD_CERT_MAX (16 * 1024)
#define HEAD_SIG_MAX 1024
#define HEAD_CANON_MAX (64 + 2 * STORE_HASH_LEN + TIME_RFC3339_LEN + SPIFFE_TD_MAX)
#define HEAD_DOMAIN "meshid-audit-head-v1"

/* The bytes that are signed. The leading label keeps a head signature from
 * being valid as anything else the authority signs. */
static mid_result canonical(int64_t seq, const char *hash_hex, const char *time,
                            const char *td, char out[HEAD_CANON_MAX], size_t *len)
{
    int n = snprintf(out, HEAD_CANON_MAX, "%s|%lld|%s|%s|%s", HEAD_DOMAIN, (long long)seq,
                     hash_hex, time, td);
    MID_ENSURE(n > 0 && n < HEAD_CANON_MAX, MID_E_INVALID, "audit head fields too long");
    *len = (size_t)n;
    return mid_ok();
}

/* Signature algorithm names as in X.509 (the signature bytes are what
 * EVP_DigestSign produces: DER ECDSA-Sig-Value, or PKCS#1 v1.5). */
static const char *alg_for(const EVP_PKEY *k)
{
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC: return "ecdsa-with-SHA256";
    case EVP_PKEY_RSA: return "sha256WithRSAEncryption";
    default: return NULL;
    }
}

MID_RESULT ca_audit_head_sign(ca *c, char **out)
{
    mid_result r = MID_OK_RESULT;
    uint8_t hash[STORE_HASH_LEN];
    char hash_hex[2 * STORE_HASH_LEN + 1], now[TIME_RFC3339_LEN], canon[HEAD_CANON_MAX];
    int64_t seq = 0;
    size_t canon_len = 0, sig_len = 0;
    unsigned char *sig = NULL, *der = NULL;
    char *sig_b64 = NULL, *cert_b64 = NULL;
    EVP_MD_CTX *md = NULL;
    json_t *x5c = NULL, *doc = NULL;
    const char *alg = NULL;
    MID_CHECK(r, c != NULL && out != NULL, MID_E_INVALID, "missing arguments");
    alg = alg_for(c->key);
    MID_CHECK(r, alg != NULL, MID_E_STATE, "the signing key type cannot sign audit heads");

    MID_TRY(r, store_audit_head(c->st, &seq, hash));
    ca_hex_encode(hash, sizeof hash, hash_hex);
    time_format_rfc3339(time_now(), now);
    MID_TRY(r, canonical(seq, hash_hex, now, c->trust_domain, canon, &canon_len));

    md = EVP_MD_CTX_new();
    MID_CHECK_MEM(r, md);
    MID_CHECK_OSSL(r, EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, c->key), MID_E_CRYPTO,
                   "cannot start signing");
    MID_CHECK_OSSL(r, EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)canon, canon_len),
                   MID_E_CRYPTO, "signing failed");
    sig = OPENSSL_malloc(sig_len);
    MID_CHECK_MEM(r, sig);
    MID_CHECK_OSSL(r, EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)canon, canon_len),
                   MID_E_CRYPTO, "signing failed");
    MID_TRY(r, ca_b64_encode(sig, sig_len, &sig_b64));

    x5c = json_array();
    MID_CHECK_MEM(r, x5c);
    for (int i = -1; i < sk_X509_num(c->chain); i++) {
        X509 *x = i < 0 ? c->cert : sk_X509_value(c->chain, i);
        int n = i2d_X509(x, &der);
        MID_CHECK(r, n > 0, MID_E_CRYPTO, "cannot encode certificate");
        MID_TRY(r, ca_b64_encode(der, (size_t)n, &cert_b64));
        MID_CHECK(r, json_array_append_new(x5c, json_string(cert_b64)) == 0, MID_E_NOMEM,
                  "out of memory");
        OPENSSL_free(der);
        free(cert_b64);
        der = NULL;
        cert_b64 = NULL;
    }
    doc = json_pack("{s:I, s:s, s:s, s:s, s:s, s:O, s:s}", "seq", (json_int_t)seq, "hash",
                    hash_hex, "time", now, "trust_domain", c->trust_domain, "alg", alg, "x5c",
                    x5c, "sig", sig_b64);
    MID_CHECK(r, doc != NULL, MID_E_NOMEM, "out of memory");
    *out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    MID_CHECK(r, *out != NULL, MID_E_NOMEM, "out of memory");
out:
    EVP_MD_CTX_free(md);
    OPENSSL_free(sig);
    OPENSSL_free(der);
    free(sig_b64);
    free(cert_b64);
    json_decref(x5c);
    json_decref(doc);
    return r;
}

/* ---- verification ----------------------------------------------------------- */

typedef struct {
    int64_t seq;
    const char *hash_hex;
    uint8_t hash[STORE_HASH_LEN];
    const char *time;
    int64_t when;
    const char *td;
    const char *alg;
    STACK_OF(X509) *certs; /* signer first */
    unsigned char *sig;
    size_t sig_len;
} head;

static void head_clear(head *h)
{
    sk_X509_pop_free(h->certs, X509_free);
    free(h->sig);
}

static const char *get_string(json_t *doc, const char *name)
{
    return json_string_value(json_object_get(doc, name));
}

static mid_result decode_hash(const char *hex, uint8_t out[STORE_HASH_LEN])
{
    MID_ENSURE(hex != NULL && strlen(hex) == 2 * STORE_HASH_LEN, MID_E_INVALID,
               "audit head: \"hash\" must be %d hex digits", 2 * STORE_HASH_LEN);
    for (size_t i = 0; i < STORE_HASH_LEN; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char ch = hex[2 * i + (size_t)k];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            MID_ENSURE(d >= 0, MID_E_INVALID, "audit head: \"hash\" must be lowercase hex");
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return mid_ok();
}

static mid_result parse_certs(json_t *arr, STACK_OF(X509) **out)
{
    size_t n = json_array_size(arr);
    MID_ENSURE(json_is_array(arr) && n >= 1 && n <= HEAD_MAX_CERTS, MID_E_INVALID,
               "audit head: \"x5c\" must be an array of 1 to %d certificates", HEAD_MAX_CERTS);
    STACK_OF(X509) *sk = sk_X509_new_null();
    MID_ENSURE_MEM(sk);
    for (size_t i = 0; i < n; i++) {
        const char *b64 = json_string_value(json_array_get(arr, i));
        unsigned char *der = NULL;
        size_t der_len = 0;
        mid_result r = b64 == NULL ? mid_fail(MID_E_INVALID, __FILE__, __LINE__,
                                              "audit head: x5c[%zu] is not a string", i)
                                   : ca_b64_decode(b64, strlen(b64), HEAD_CERT_MAX,
                                                   "audit head: x5c", &der, &der_len);
        X509 *x = NULL;
        if (mid_is_ok(r)) {
            const unsigned char *p = der;
            x = d2i_X509(NULL, &p, (long)der_len);
            if (x == NULL || p != der + der_len)
                r = mid_fail_ossl(MID_E_INVALID, __FILE__, __LINE__,
                                  "audit head: x5c[%zu] is not a DER certificate", i);
            else if (sk_X509_push(sk, x) <= 0)
                r = mid_fail(MID_E_NOMEM, __FILE__, __LINE__, "out of memory");
            else
                x = NULL;
        }
        X509_free(x);
        free(der);
        if (!mid_is_ok(r)) {
            sk_X509_pop_free(sk, X509_free);
            return r;
        }
    }
    *out = sk;
    return mid_ok();
}

static mid_result parse_head(const char *text, head *h, json_t **doc_out)
{
    MID_ENSURE(text != NULL, MID_E_INVALID, "audit head: missing");
    size_t len = strnlen(text, HEAD_JSON_MAX + 1);
    MID_ENSURE(len <= HEAD_JSON_MAX, MID_E_TOO_LARGE, "audit head: over %d bytes", HEAD_JSON_MAX);
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    MID_ENSURE(doc != NULL, MID_E_INVALID, "audit head: not valid JSON: %s (line %d, column %d)",
               jerr.text, jerr.line, jerr.column);
    *doc_out = doc;
    MID_ENSURE(json_is_object(doc), MID_E_INVALID, "audit head: not a JSON object");
    json_t *seq = json_object_get(doc, "seq");
    MID_ENSURE(json_is_integer(seq) && json_integer_value(seq) >= 0, MID_E_INVALID,
               "audit head: \"seq\" must be a non-negative integer");
    h->seq = json_integer_value(seq);
    h->hash_hex = get_string(doc, "hash");
    MID_GUARD(decode_hash(h->hash_hex, h->hash));
    h->time = get_string(doc, "time");
    MID_ENSURE(h->time != NULL && strlen(h->time) >= 20 && h->time[4] == '-', MID_E_INVALID,
               "audit head: \"time\" must be an RFC 3339 time");
    MID_GUARD(time_parse_when(h->time, 0, &h->when));
    MID_ENSURE(h->when > 0, MID_E_INVALID, "audit head: \"time\" is before 1970");
    h->td = get_string(doc, "trust_domain");
    char td[SPIFFE_TD_MAX + 1];
    MID_ENSURE(h->td != NULL, MID_E_INVALID, "audit head: \"trust_domain\" is missing");
    MID_GUARD(spiffe_trust_domain_parse(h->td, td));
    MID_ENSURE(strcmp(td, h->td) == 0, MID_E_INVALID,
               "audit head: \"trust_domain\" must be a bare trust domain name");
    h->alg = get_string(doc, "alg");
    MID_ENSURE(h->alg != NULL, MID_E_INVALID, "audit head: \"alg\" is missing");
    MID_GUARD(parse_certs(json_object_get(doc, "x5c"), &h->certs));
    const char *sig = get_string(doc, "sig");
    MID_ENSURE(sig != NULL, MID_E_INVALID, "audit head: \"sig\" is missing");
    MID_GUARD(ca_b64_decode(sig, strlen(sig), HEAD_SIG_MAX, "audit head: sig", &h->sig,
                            &h->sig_len));
    return mid_ok();
}

/* The signer chains to an anchor (as of the head's time), is an authority of
 * the head's trust domain, and signed exactly these fields. */
static mid_result check_signature(const head *h, STACK_OF(X509) *anchors)
{
    mid_result r = MID_OK_RESULT;
    EVP_MD_CTX *md = NULL;
    STACK_OF(X509) *untrusted = NULL;
    char canon[HEAD_CANON_MAX], td[SPIFFE_TD_MAX + 1];
    size_t canon_len = 0;
    X509 *signer = sk_X509_value(h->certs, 0);

    untrusted = sk_X509_dup(h->certs);
    MID_CHECK_MEM(r, untrusted);
    (void)sk_X509_shift(untrusted);
    mid_result vr = ca_x509_verify(signer, untrusted, anchors, h->when, NULL);
    if (!mid_is_ok(vr)) {
        char why[512];
        snprintf(why, sizeof why, "%s", mid_errmsg());
        MID_CHECK(r, 0, MID_E_VERIFY, "audit head: the signer does not chain to a trust anchor: %s",
                  why);
    }
    mid_result tr = ca_x509_signing_trust_domain(signer, td);
    MID_CHECK(r, mid_is_ok(tr) && strcmp(td, h->td) == 0, MID_E_VERIFY,
              "audit head: the signer is not an authority of trust domain %s", h->td);
    EVP_PKEY *pk = X509_get0_pubkey(signer);
    const char *alg = pk != NULL ? alg_for(pk) : NULL;
    MID_CHECK(r, alg != NULL && strcmp(alg, h->alg) == 0, MID_E_VERIFY,
              "audit head: algorithm \"%.40s\" does not match the signer's key", h->alg);
    MID_TRY(r, canonical(h->seq, h->hash_hex, h->time, h->td, canon, &canon_len));
    md = EVP_MD_CTX_new();
    MID_CHECK_MEM(r, md);
    MID_CHECK_OSSL(r, EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk), MID_E_CRYPTO,
                   "cannot start verification");
    if (EVP_DigestVerify(md, h->sig, h->sig_len, (const unsigned char *)canon, canon_len) != 1)
        r = mid_fail_ossl(MID_E_VERIFY, __FILE__, __LINE__,
                          "audit head: the signature does not verify");
out:
    EVP_MD_CTX_free(md);
    sk_X509_free(untrusted);
    return r;
}

/* Marks the verdict broken at `seq` with `msg`, keeping an earlier finding. */
static void mark_broken(store_audit_verdict *v, int64_t seq, const char *msg)
{
    if (v->ok) {
        snprintf(v->reason, sizeof v->reason, "%s", msg);
        v->broken_seq = seq;
    } else {
        size_t used = strnlen(v->reason, sizeof v->reason);
        if (used + 3 < sizeof v->reason)
            snprintf(v->reason + used, sizeof v->reason - used, "; %s", msg);
        if (seq < v->broken_seq || v->broken_seq <= 0) v->broken_seq = seq;
    }
    v->ok = 0;
}

static mid_result compare_with_store(store *st, const head *h, store_audit_verdict *v)
{
    int64_t last = 0;
    uint8_t last_hash[STORE_HASH_LEN];
    char msg[200];
    MID_GUARD(store_audit_verify(st, v));
    MID_GUARD(store_audit_head(st, &last, last_hash));
    if (last < h->seq) {
        snprintf(msg, sizeof msg, "log truncated: head says seq %lld but the log ends at %lld",
                 (long long)h->seq, (long long)last);
        mark_broken(v, last + 1, msg);
        return mid_ok();
    }
    if (h->seq == 0) return mid_ok(); /* the head of an empty log */
    store_audit_row row;
    memset(&row, 0, sizeof row);
    mid_result r = store_audit_get(st, h->seq, &row);
    if (r.err == MID_E_NOT_FOUND) {
        snprintf(msg, sizeof msg, "event %lld of the signed head is missing", (long long)h->seq);
        mark_broken(v, h->seq, msg);
        return mid_ok();
    }
    MID_GUARD(r);
    int same = CRYPTO_memcmp(row.ev.hash, h->hash, STORE_HASH_LEN) == 0;
    store_audit_row_clear(&row);
    if (!same) {
        snprintf(msg, sizeof msg, "event %lld differs from the signed head (rewritten)",
                 (long long)h->seq);
        mark_broken(v, h->seq, msg);
    }
    return mid_ok();
}

MID_RESULT ca_audit_head_verify(store *st, const char *head_json, const char *anchors_pem,
                                store_audit_verdict *v)
{
    mid_result r = MID_OK_RESULT;
    head h = {0};
    json_t *doc = NULL;
    STACK_OF(X509) *anchors = NULL;
    MID_CHECK(r, st != NULL && v != NULL, MID_E_INVALID, "missing arguments");
    MID_TRY(r, parse_head(head_json, &h, &doc));
    if (anchors_pem != NULL)
        MID_TRY(r, ca_x509_stack_from_pem(anchors_pem, strlen(anchors_pem), "trust anchors",
                                          &anchors));
    else
        MID_TRY(r, ca_anchors_load(st, &anchors, NULL));
    MID_TRY(r, check_signature(&h, anchors));
    MID_TRY(r, compare_with_store(st, &h, v));
out:
    sk_X509_pop_free(anchors, X509_free);
    head_clear(&h);
    json_decref(doc);
    return r;
}
