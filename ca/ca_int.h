/* Private to ca/: the loaded signing authority behind the opaque `ca`, and
 * helpers shared by ca.c, upstream.c, bundle.c, audit_head.c and rotation.c. */
#ifndef MESHID_CA_CA_INT_H
#define MESHID_CA_CA_INT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>

#include "ca/ca.h"
#include "ca/x509.h"
#include "identity/spiffe_id.h"

typedef struct ca_batch_call ca_batch_call; /* ca/batch.c */

/* Everything here is written once by ca_open and only read afterwards, which
 * is what makes concurrent ca_issue calls safe; except the help list of
 * ca_issue_batch, which is guarded by help_mu. */
struct ca {
    store *st;                                /* borrowed */
    char trust_domain[SPIFFE_TD_MAX + 1];
    char authority_id[CA_KEY_ID_HEX_MAX];
    EVP_PKEY *key;                            /* the signing key */
    X509 *cert;                               /* the signing certificate */
    STACK_OF(X509) *chain;                    /* above `cert`, up to (excluding) the root */
    STACK_OF(X509) *anchors;                  /* trust anchors when the handle was opened */
    ca_x509_issuer issuer;                    /* cert's name, key id and key, encoded
                                                 once for every SVID */
    int64_t sign_not_before;                  /* cert's notBefore */
    int64_t sign_not_after;                   /* earliest notAfter of cert, chain and root */
    char *chain_pem;                          /* cert then chain, appended to every leaf */
    char *root_cross_pem;                     /* the root's chain_pem: cross-certificate(s)
                                                 to the previous root, "" if none */
    pthread_mutex_t help_mu;                  /* guards help_head and the calls on it */
    pthread_cond_t help_cv;                   /* work listed, a call's work finished */
    ca_batch_call *help_head;                 /* ca_issue_batch calls with unstarted requests */
    int help_init;                            /* help_mu and help_cv are initialised */
};

/* Authority states that keep a root in the trust bundle. */
int ca_state_is_trusted(const char *state);

/* The trust anchors: every root authority of the store that is not revoked
 * or removed, as certificates (new stack owned by the caller), and the
 * bundle sequence number derived from the authority table (see docs/ca.md).
 * `seq` may be NULL. The stack is empty (not an error) when every root has
 * been revoked or removed. */
MID_RESULT ca_anchors_load(store *st, STACK_OF(X509) **anchors, int64_t *seq);

/* <data_dir>/keys (created 0700 when `create`), and a key file path in it. */
MID_RESULT ca_keys_dir(const char *data_dir, int create, char *out, size_t cap);

/* One generated authority on its way to the store (ca_init, ca_prepare). */
typedef struct {
    EVP_PKEY *key;
    X509 *cert;
    char id[CA_KEY_ID_HEX_MAX];
    char key_ref[CA_KEY_ID_HEX_MAX + 16]; /* "keys/<id>.key" */
    char key_path[4096];
    int key_written;
    char *pem;                            /* cert as PEM */
} ca_new_authority;

/* Fills id, key_ref, key_path and pem from a->cert and writes a->key to
 * <data_dir>/keys/<id>.key (0600). */
MID_RESULT ca_new_authority_save(ca_new_authority *a, const char *data_dir);

/* Frees what `a` holds; with `remove_key`, also unlinks the key file written
 * by ca_new_authority_save (for a failure before anything was stored). */
void ca_new_authority_clear(ca_new_authority *a, int remove_key);

/* The path of a stored key_ref: relative to the data directory and staying
 * inside it (MID_E_CORRUPT for an absolute path or one with ".."). */
MID_RESULT ca_key_ref_path(const char *data_dir, const char *key_ref, char *out, size_t cap);

/* Builds the audit details JSON for an authority record. Caller frees. */
MID_RESULT ca_authority_details(const store_authority *a, const char *key_desc, int upstream,
                                char **out);

#endif
