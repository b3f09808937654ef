/* ca_issue: one X.509-SVID from a SPIFFE ID and a CSR (or a key generated
 * here), recorded in the store with its audit event before it is returned.
 * The per-certificate part (ca_issue_prepare, ca_issue_refused; see
 * ca/issue_int.h) is shared with ca_issue_batch (ca/batch.c).
 * Reads the `ca` handle only, so any number of threads may issue at once. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca.h"
#include "ca/ca_int.h"
#include "ca/csr.h"
#include "ca/issue_int.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "identity/spiffe_id.h"
#include "lib/log.h"
#include "lib/timeutil.h"

struct ca_svid {
    char *chain_pem;
    char *key_pem;   /* NULL when the requester holds the key */
    size_t key_len;
    char serial[CA_SERIAL_HEX_LEN + 1];
    char *spiffe_id;
    int64_t not_after;
};

const char *ca_svid_chain_pem(const ca_svid *s) { return s->chain_pem; }
const char *ca_svid_key_pem(const ca_svid *s) { return s->key_pem; }
const char *ca_svid_serial(const ca_svid *s) { return s->serial; }
const char *ca_svid_spiffe_id(const ca_svid *s) { return s->spiffe_id; }
int64_t ca_svid_not_after(const ca_svid *s) { return s->not_after; }

void ca_svid_free(ca_svid *s)
{
    if (s == NULL) return;
    ca_key_pem_free(s->key_pem, s->key_len);
    free(s->chain_pem);
    free(s->spiffe_id);
    free(s);
}

void ca_issue_prep_clear(ca_issue_prep *s)
{
    if (s == NULL) return;
    spiffe_id_free(s->id);
    ca_csr_free(s->csr);
    EVP_PKEY_free(s->generated);
    OPENSSL_free(s->gen_spki);
    free(s->leaf_der);
    free(s->leaf_pem);
    free(s->details);
    ca_svid_free(s->svid);
    memset(s, 0, sizeof *s);
}

ca_svid *ca_issue_prep_take(ca_issue_prep *p)
{
    ca_svid *s = p->svid;
    p->svid = NULL;
    return s;
}

static mid_result check_dns(const ca_issue_req *req)
{
    MID_ENSURE(req->n_dns <= CA_MAX_DNS, MID_E_TOO_LARGE, "%zu DNS names is over the limit of %d",
               req->n_dns, CA_MAX_DNS);
    MID_ENSURE(req->n_dns == 0 || req->dns != NULL, MID_E_INVALID, "DNS name list is missing");
    for (size_t i = 0; i < req->n_dns; i++) MID_GUARD(ca_x509_check_dns_name(req->dns[i]));
    return mid_ok();
}

/* The audit details, {"authority_id","csr","dns","key_fp","not_after","ttl"}
 * exactly as json_dumps(JSON_COMPACT | JSON_SORT_KEYS) would write them, but
 * printed directly: every value is hex, an RFC 3339 time, a number or a DNS
 * name that check_dns has limited to letters, digits, '-', '.' and a leading
 * '*', so nothing needs escaping. */
static mid_result build_details(const ca *c, const ca_issue_req *req, int64_t not_after,
                                int64_t ttl, const char *fp, char **out)
{
    char na[TIME_RFC3339_LEN];
    time_format_rfc3339(not_after, na);
    size_t cap = 256 + strlen(c->authority_id) + strlen(fp) + strlen(na);
    for (size_t i = 0; i < req->n_dns; i++) cap += strlen(req->dns[i]) + 3;
    char *s = malloc(cap);
    MID_ENSURE(s != NULL, MID_E_NOMEM, "out of memory");
    size_t o = 0;
    o += (size_t)snprintf(s + o, cap - o, "{\"authority_id\":\"%s\",\"csr\":%s,\"dns\":[",
                          c->authority_id, req->csr != NULL ? "true" : "false");
    for (size_t i = 0; i < req->n_dns && o < cap; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s\"%s\"", i > 0 ? "," : "", req->dns[i]);
    if (o < cap)
        o += (size_t)snprintf(s + o, cap - o,
                              "],\"key_fp\":\"%s\",\"not_after\":\"%s\",\"ttl\":%lld}", fp, na,
                              (long long)ttl);
    if (o >= cap) {
        free(s);
        MID_BAIL(MID_E_INTERNAL, "audit details longer than expected");
    }
    *out = s;
    return mid_ok();
}

MID_RESULT ca_issue_prepare(ca *c, const ca_issue_req *req, ca_issue_prep *s)
{
    mid_result r = MID_OK_RESULT;
    char *serial = s->serial, *fp = s->fp;

    MID_CHECK(r, req->spiffe_id != NULL && req->spiffe_id[0] != '\0', MID_E_INVALID,
              "no SPIFFE ID requested");
    MID_TRY(r, spiffe_id_parse(req->spiffe_id, strnlen(req->spiffe_id, SPIFFE_ID_MAX + 1), &s->id));
    MID_CHECK(r, spiffe_id_is_workload(s->id), MID_E_INVALID,
              "%s has no path: an X.509-SVID needs a workload SPIFFE ID like "
              "spiffe://%s/service", spiffe_id_str(s->id), spiffe_id_trust_domain(s->id));
    MID_CHECK(r, spiffe_id_member_of(s->id, c->trust_domain), MID_E_DENIED,
              "%s is not in trust domain %s", spiffe_id_str(s->id), c->trust_domain);
    MID_CHECK(r, req->ttl >= 0, MID_E_INVALID, "negative TTL");
    int64_t ttl = req->ttl == 0 ? CA_SVID_TTL_DEFAULT : req->ttl;
    if (ttl > CA_SVID_TTL_MAX) ttl = CA_SVID_TTL_MAX;
    MID_TRY(r, check_dns(req));

    /* The key goes into the certificate as its raw SubjectPublicKeyInfo
     * (for a CSR: the bytes received, no EVP_PKEY encode/decode round trip)
     * and is fingerprinted from the same bytes. */
    const ca_spki *spki = NULL;
    if (req->csr != NULL) {
        MID_TRY(r, ca_csr_intake(req->csr, req->csr_len, spiffe_id_str(s->id), &s->csr));
        spki = ca_csr_spki(s->csr);
    } else {
        ca_key_type kt = req->key_type == 0 ? CA_KEY_EC_P256 : req->key_type;
        MID_TRY(r, ca_key_generate(kt, &s->generated));
        int n = i2d_PUBKEY(s->generated, &s->gen_spki);
        MID_CHECK_OSSL(r, n > 0 ? 1 : 0, MID_E_CRYPTO, "cannot encode the public key");
        MID_TRY(r, ca_key_from_spki(s->gen_spki, (size_t)n, &s->gen_info, NULL));
        spki = &s->gen_info;
    }
    MID_TRY(r, ca_key_fingerprint_spki(spki->der, spki->der_len, fp));

    /* Backdated for clock skew; never before the issuer's notBefore, never
     * after the earliest notAfter of the issuer's chain. */
    int64_t now = time_now();
    int64_t nb = now - CA_CLOCK_SKEW;
    if (nb < c->sign_not_before) nb = c->sign_not_before;
    int64_t na = now + ttl;
    if (na > c->sign_not_after) na = c->sign_not_after;
    MID_CHECK(r, na > now, MID_E_STATE, "signing authority %s has expired", c->authority_id);

    ca_x509_svid_params p = {
        .spki = spki, .spiffe_id = spiffe_id_str(s->id), .dns = req->dns, .n_dns = req->n_dns,
        .not_before = nb, .not_after = na, .issuer = &c->issuer,
    };
    MID_TRY(r, ca_x509_build_svid(&p, &s->leaf_der, &s->leaf_der_len, serial));
    MID_TRY(r, ca_x509_der_append_pem(s->leaf_der, s->leaf_der_len, &s->leaf_pem));
    MID_TRY(r, build_details(c, req, na, ttl, fp, &s->details));

    s->svid = calloc(1, sizeof *s->svid);
    MID_CHECK_MEM(r, s->svid);
    memcpy(s->svid->serial, serial, sizeof s->svid->serial);
    s->svid->not_after = na;
    s->svid->spiffe_id = strdup(spiffe_id_str(s->id));
    MID_CHECK_MEM(r, s->svid->spiffe_id);
    size_t leaf_len = strlen(s->leaf_pem), chain_len = strlen(c->chain_pem);
    s->svid->chain_pem = malloc(leaf_len + chain_len + 1);
    MID_CHECK_MEM(r, s->svid->chain_pem);
    memcpy(s->svid->chain_pem, s->leaf_pem, leaf_len);
    memcpy(s->svid->chain_pem + leaf_len, c->chain_pem, chain_len + 1);
    if (s->generated != NULL)
        MID_TRY(r, ca_key_to_pem(s->generated, &s->svid->key_pem, &s->svid->key_len));

    s->cert = (store_cert){
        .serial = serial, .spiffe_id = spiffe_id_str(s->id), .key_fp = fp, .not_before = nb,
        .not_after = na, .authority_id = c->authority_id, .status = "valid", .issued_at = now,
        .cert_der = s->leaf_der, .cert_der_len = s->leaf_der_len,
    };
    s->ev = (store_audit_event){
        .actor = req->actor != NULL ? req->actor : "system", .event = "svid.issue",
        .spiffe_id = spiffe_id_str(s->id), .serial = serial, .outcome = "ok",
        .details = s->details,
    };
out:
    return r;
}

/* Audit text: printable ASCII only, so that a hostile SPIFFE ID or CSR SAN
 * cannot smuggle control characters or invalid UTF-8 into the log. */
static void sanitize(const char *in, size_t max, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in != NULL && in[i] != '\0' && i < max && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[o] = '\0';
}

static void audit_refusal(ca *c, const ca_issue_req *req, mid_err err, const char *msg)
{
    char sid[SPIFFE_ID_MAX + 1], reason[1024];
    int policy = err == MID_E_INVALID || err == MID_E_TOO_LARGE || err == MID_E_DENIED;
    sanitize(req->spiffe_id, SPIFFE_ID_MAX, sid, sizeof sid);
    sanitize(msg, sizeof reason, reason, sizeof reason);
    json_t *o = json_pack("{s:s, s:s, s:b}", "error", mid_errname(err), "authority_id",
                          c->authority_id, "csr", req->csr != NULL);
    char *details = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    store_audit_event ev = {
        .actor = req->actor != NULL ? req->actor : "system", .event = "svid.refuse",
        .spiffe_id = sid[0] != '\0' ? sid : NULL, .outcome = policy ? "denied" : "error",
        .reason = reason, .details = details,
    };
    mid_result ar = store_audit_append(c->st, &ev, NULL);
    if (!mid_is_ok(ar))
        LOG_ERROR("could not audit a refused SVID request (%s): %s", reason, mid_errmsg());
    free(details);
}

mid_result ca_issue_refused(ca *c, const ca_issue_req *req, mid_result r)
{
    /* Auditing may overwrite this thread's last error: keep the original. */
    mid_err err = r.err;
    const char *file = mid_errfile();
    int line = mid_errline();
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", mid_errmsg());
    audit_refusal(c, req, err, msg);
    return mid_fail(err, file, line, "%s", msg);
}



MID_RESULT ca_issue(ca *c, const ca_issue_req *req, ca_svid **out)
{
    MID_ENSURE(c != NULL && req != NULL && out != NULL, MID_E_INVALID, "missing arguments");
    ca_issue_prep p = {0};
    mid_result r = ca_issue_prepare(c, req, &p);
    /* The certificate leaves this function only once its row and its audit
     * event are durable. */
    if (mid_is_ok(r)) r = store_cert_insert(c->st, &p.cert, &p.ev);
    if (mid_is_ok(r)) *out = ca_issue_prep_take(&p);
    ca_issue_prep_clear(&p);
    return mid_is_ok(r) ? r : ca_issue_refused(c, req, r);
}
