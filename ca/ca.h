/* The certificate authority: creating or adopting the signing hierarchy,
 * issuing X.509-SVIDs, publishing the trust bundle, signing audit heads.
 *
 * Authorities live in the store (storage/store.h) with their private keys in
 * files under the data directory (0600). A `ca` handle holds the active
 * signing authority loaded in memory; ca_issue is safe to call from many
 * threads at once on one handle.
 */
#ifndef MESHID_CA_CA_H
#define MESHID_CA_CA_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"
#include "storage/store.h"

typedef struct ca ca;

typedef enum { CA_KEY_EC_P256 = 1, CA_KEY_RSA_2048 = 2 } ca_key_type;

#define CA_SVID_TTL_DEFAULT (3600)           /* 1 hour */
#define CA_SVID_TTL_MAX (7 * 24 * 3600)      /* longer requests are capped to this */
#define CA_ROOT_TTL_DEFAULT (365 * 24 * 3600)
#define CA_INTERMEDIATE_TTL_DEFAULT (90 * 24 * 3600)
#define CA_CSR_MAX (64 * 1024)               /* bytes, PEM or DER */
#define CA_MAX_DNS 32                        /* DNS SANs per SVID */

/* "ec-p256" | "rsa-2048" -> type; MID_E_INVALID otherwise. */
MID_RESULT ca_key_type_parse(const char *s, ca_key_type *out);

typedef struct {
    const char *trust_domain;  /* bare name, validated */
    ca_key_type key_type;
    int64_t root_ttl;          /* seconds; 0 = default */
    int64_t intermediate_ttl;  /* seconds; 0 = default */
    const char *actor;         /* for the audit log */
} ca_init_opts;

/* Creates a self-signed root and an intermediate signing authority under it,
 * keys in <data_dir>/keys/ (0600), both recorded in the store as active, with
 * audit events. MID_E_EXISTS if the store already has authorities. */
MID_RESULT ca_init(store *st, const char *data_dir, const ca_init_opts *o);

/* Adopts an intermediate from an Istio plug-in CA directory (ca-cert.pem,
 * ca-key.pem, cert-chain.pem, root-cert.pem): checks that the key matches the
 * certificate, that it is a CA for the trust domain and that the chain
 * verifies to the root; copies the key to <data_dir>/keys/ (0600) and records
 * it (upstream=1) with the root as a trust anchor. Clear MID_E_* errors for
 * unreadable, malformed or mismatched files. MID_E_EXISTS as for ca_init. */
MID_RESULT ca_init_upstream(store *st, const char *data_dir, const char *upstream_dir,
                            const char *actor);

/* Loads the active signing authority. MID_E_NOT_FOUND when the store has no
 * trust domain yet (run `meshid ca init`). The handle borrows `st`. */
MID_RESULT ca_open(store *st, const char *data_dir, ca **out);
void ca_close(ca *c);
const char *ca_trust_domain(const ca *c);
/* The stored chain_pem of the signing intermediate's root: cross-certificates
 * of that root by the previous root (PEM, "" when none). Not part of workload
 * SVID chains; the server appends it to its own TLS chain so that agents that
 * still trust only the previous root can verify it. */
const char *ca_root_cross_pem(const ca *c);

typedef struct {
    const char *spiffe_id;      /* requested identity; the CA validates it */
    const unsigned char *csr;   /* PEM or DER PKCS#10; NULL: generate a key here */
    size_t csr_len;
    ca_key_type key_type;       /* for a generated key */
    int64_t ttl;                /* seconds; 0 = CA_SVID_TTL_DEFAULT; capped */
    const char *const *dns;     /* optional DNS SANs */
    size_t n_dns;
    const char *actor;          /* for the audit log */
} ca_issue_req;

typedef struct ca_svid ca_svid;

/* Issues one X.509-SVID. The returned certificate has been recorded in the
 * store together with its audit event before this returns. Refusals (bad
 * SPIFFE ID, foreign trust domain, malformed/oversized CSR, bad CSR signature,
 * unsupported key, CSR asking for another URI SAN) return MID_E_INVALID,
 * MID_E_TOO_LARGE or MID_E_DENIED and are audited as "svid.refuse". */
MID_RESULT ca_issue(ca *c, const ca_issue_req *req, ca_svid **out);

const char *ca_svid_chain_pem(const ca_svid *s); /* leaf, then intermediates */
const char *ca_svid_key_pem(const ca_svid *s);   /* PKCS#8 PEM, NULL for a CSR */
const char *ca_svid_serial(const ca_svid *s);    /* lowercase hex */
const char *ca_svid_spiffe_id(const ca_svid *s);
int64_t ca_svid_not_after(const ca_svid *s);
void ca_svid_free(ca_svid *s);

/* Trust anchors (root certificates) as concatenated PEM; caller frees. */
MID_RESULT ca_bundle_pem(ca *c, char **out);

/* The SPIFFE bundle (RFC 7517 JWK Set with use "x509-svid", x5c, and
 * spiffe_sequence) as JSON text; caller frees. */
MID_RESULT ca_bundle_spiffe(ca *c, char **out);

/* A signed statement of the audit log's head (seq, hash, time) as JSON text,
 * signed by the active signing authority with its chain embedded. */
MID_RESULT ca_audit_head_sign(ca *c, char **out);

/* Checks a head produced by ca_audit_head_sign: its signature chains to one
 * of the store's trust anchors (or of `anchors_pem` when non-NULL), and the
 * log still holds that head: the event at its seq exists, has its hash, and
 * the whole chain verifies. Tampering is reported in *v (v->ok == 0), errors
 * only for unreadable input (MID_E_INVALID for a malformed head,
 * MID_E_VERIFY for a bad signature). */
MID_RESULT ca_audit_head_verify(store *st, const char *head_json, const char *anchors_pem,
                                store_audit_verdict *v);

#endif
