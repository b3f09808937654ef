/* What one workload may receive, as an immutable, reference-counted snapshot:
 * its X.509-SVIDs (the first is its "default" identity) and the trust
 * bundles it should trust (the first is its own trust domain's). Built by
 * the agent cache when something changes, then only read — by the SDS and
 * Workload API services, on the loop thread or any other — until the last
 * reference is dropped. */
#ifndef MESHID_SDS_VIEW_H
#define MESHID_SDS_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"

typedef struct sds_view sds_view;

typedef struct {
    const char *spiffe_id;
    const char *chain_pem;       /* leaf first, then intermediates */
    const char *key_pem;         /* PKCS#8 */
    const uint8_t *chain_der;    /* the same certificates, DER, concatenated */
    size_t chain_der_len;
    const uint8_t *key_der;      /* PKCS#8 DER */
    size_t key_der_len;
    int64_t not_after;
    const char *digest;          /* hex SHA-256 over chain and key: changes iff they do */
} sds_svid;

typedef struct {
    const char *trust_domain;    /* bare name */
    const char *roots_pem;       /* trust anchors, PEM, concatenated */
    const uint8_t *roots_der;    /* the same, DER, concatenated */
    size_t roots_der_len;
    uint64_t sequence;           /* the bundle's spiffe_sequence */
    const char *digest;          /* hex SHA-256 over the roots */
} sds_bundle;

/* An empty view under construction. MID_E_NOMEM. */
MID_RESULT sds_view_new(sds_view **out);

/* Adds an SVID (PEM in; DER and digest derived). MID_E_INVALID for PEM
 * that does not parse or a key that does not match the leaf. Only before
 * the view is shared. */
MID_RESULT sds_view_add_svid(sds_view *v, const char *spiffe_id, const char *chain_pem,
                             const char *key_pem, int64_t not_after);

/* Adds a trust domain's bundle (PEM in). MID_E_EXISTS for a second bundle
 * of the same trust domain. Only before the view is shared. */
MID_RESULT sds_view_add_bundle(sds_view *v, const char *trust_domain, const char *roots_pem,
                               uint64_t sequence);

/* Reference counting (atomic; any thread). A new view has one reference. */
sds_view *sds_view_ref(sds_view *v);
void sds_view_unref(sds_view *v);

size_t sds_view_svid_count(const sds_view *v);
const sds_svid *sds_view_svid(const sds_view *v, size_t i);
/* The SVID with that SPIFFE ID, or NULL. */
const sds_svid *sds_view_svid_by_id(const sds_view *v, const char *spiffe_id);

size_t sds_view_bundle_count(const sds_view *v);
const sds_bundle *sds_view_bundle(const sds_view *v, size_t i);
/* The bundle of trust domain `td` (bare name), or NULL. */
const sds_bundle *sds_view_bundle_for(const sds_view *v, const char *td);

#endif
