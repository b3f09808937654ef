/* Pure builders: protobuf messages from an sds_view, no I/O, no state.
 *
 * SDS resource names (each name yields exactly one Secret of that name):
 *   "default"         tls_certificate of the view's first SVID
 *   <SPIFFE ID>       tls_certificate of the SVID with that ID
 *   "ROOTCA"          validation_context{trusted_ca} of the workload's own
 *                     trust domain (the view's first bundle)
 *   "spiffe://<td>"   validation_context{trusted_ca} of that trust domain
 *   "ALL"             validation_context{custom_validator_config = the SPIFFE
 *                     validator with one trust_domains entry per bundle}
 * All PEM goes as DataSource.inline_bytes.
 *
 * Messages built here live in the caller's arena but BORROW strings and
 * bytes from the view: keep the view referenced until the message has been
 * serialised (rpc_call_send serialises at once).
 *
 * Errors: MID_E_NOT_FOUND when the view cannot produce the named resource
 * (unknown name, no SVID, no bundle), MID_E_NOMEM when the arena is
 * exhausted, MID_E_CRYPTO when hashing fails. */
#ifndef MESHID_SDS_SECRETS_H
#define MESHID_SDS_SECRETS_H

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "lib/arena.h"
#include "lib/result.h"
#include "sds/view.h"
#include "spiffe/workload.pb-c.h"

#define SDS_SECRET_TYPE_URL "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#define SDS_SPIFFE_VALIDATOR_TYPE_URL                                                    \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
#define SDS_SPIFFE_VALIDATOR_NAME "envoy.tls.cert_validator.spiffe"

#define SDS_NAME_DEFAULT "default"
#define SDS_NAME_ROOTCA "ROOTCA"
#define SDS_NAME_ALL "ALL"
/* Longest resource name we look at (a SPIFFE ID is at most 2048 bytes). */
#define SDS_NAME_MAX 2048

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret sds_secret_msg;

/* A content digest: lower-case hex SHA-256, NUL-terminated. Equal digests
 * mean equal content; it doubles as a resource version. */
#define SDS_DIGEST_HEX 64
typedef struct {
    char hex[SDS_DIGEST_HEX + 1];
} sds_digest;

/* The digest of what sds_secret_build(v, name) would produce (the name
 * itself is not part of it). MID_E_NOT_FOUND, MID_E_CRYPTO. */
MID_RESULT sds_secret_digest(const sds_view *v, const char *name, sds_digest *out);

/* Builds the Secret `name` in `a`. */
MID_RESULT sds_secret_build(const sds_view *v, const char *name, arena *a, sds_secret_msg **out);

/* Builds the Secret `name` and packs it as google.protobuf.Any with type URL
 * SDS_SECRET_TYPE_URL (the Any and its bytes live in `a`; the packed bytes
 * borrow nothing from the view). */
MID_RESULT sds_secret_any(const sds_view *v, const char *name, arena *a,
                          Google__Protobuf__Any **out);

/* Workload API: the X509SVIDResponse of the view: every SVID (first = the
 * default) with its chain (DER), PKCS#8 key (DER) and the DER roots of its
 * own trust domain (empty when the view has no bundle for it); every other
 * bundle in federated_bundles keyed "spiffe://<td>". MID_E_NOT_FOUND when
 * the view holds no SVID (the spec requires at least one). */
MID_RESULT sds_x509_svid_response(const sds_view *v, arena *a, X509SVIDResponse **out);

/* Workload API: X509BundlesResponse with every bundle, keyed "spiffe://<td>". */
MID_RESULT sds_x509_bundles_response(const sds_view *v, arena *a, X509BundlesResponse **out);

/* Digests of the two responses above, for "send only on change". */
MID_RESULT sds_x509_svid_digest(const sds_view *v, sds_digest *out);
MID_RESULT sds_x509_bundles_digest(const sds_view *v, sds_digest *out);

#endif
