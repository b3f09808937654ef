/* Private to ca/: the per-certificate half of issuance, shared by ca_issue
 * (ca/issue.c) and ca_issue_batch (ca/batch.c) so that a certificate is
 * validated, CSR-verified, signed and audited the same way whichever entry
 * point asked for it. Only recording it in the store differs: one
 * store_cert_insert per certificate, or one store_cert_insert_many for a
 * batch. (A header of its own because ca_int.h describes the loaded
 * authority, which this does not change.) */
#ifndef MESHID_CA_ISSUE_INT_H
#define MESHID_CA_ISSUE_INT_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca/ca.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "identity/spiffe_id.h"
#include "storage/store.h"

/* One certificate on its way out: what it holds and the store records that
 * describe it. `cert` and `ev` point into the struct (and into the request
 * it was prepared from), so it must not move while they are in use.
 * Released by ca_issue_prep_clear. */
typedef struct {
    spiffe_id *id;
    ca_csr *csr;
    EVP_PKEY *generated;
    unsigned char *gen_spki;  /* generated key's SubjectPublicKeyInfo (OpenSSL-allocated) */
    ca_spki gen_info;         /* ... as ca_key_from_spki reads it */
    unsigned char *leaf_der;  /* the signed SVID */
    size_t leaf_der_len;
    char *leaf_pem;
    char *details;
    ca_svid *svid;
    char serial[CA_SERIAL_HEX_LEN + 1];
    char fp[CA_FP_HEX_LEN + 1];
    store_cert cert;       /* the certificate row */
    store_audit_event ev;  /* its "svid.issue" event */
} ca_issue_prep;

/* Validates `req` (SPIFFE ID, trust domain, TTL, DNS names), parses and
 * verifies its CSR or generates a key, builds and signs the SVID and fills
 * p->cert and p->ev, without writing anything. `p` must be zeroed; `req`
 * must outlive it. The errors of ca_issue (before the store write). On
 * failure `p` may hold partial state: clear it. */
MID_RESULT ca_issue_prepare(ca *c, const ca_issue_req *req, ca_issue_prep *p);

/* The prepared SVID, handed to the caller once its records are durable;
 * p keeps no reference to it. */
ca_svid *ca_issue_prep_take(ca_issue_prep *p);

void ca_issue_prep_clear(ca_issue_prep *p);

/* Audits the refusal of `req` as "svid.refuse" (outcome "denied" for
 * MID_E_INVALID, MID_E_TOO_LARGE and MID_E_DENIED, "error" otherwise) with
 * this thread's last error, which must describe `r`, as the reason; then
 * returns `r` with that same last error restored (auditing may overwrite it). */
mid_result ca_issue_refused(ca *c, const ca_issue_req *req, mid_result r);

#endif
