/* ca_init_upstream: adopting an intermediate from an Istio plug-in CA
 * directory (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem). */
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/ca.h"
#include "ca/ca_int.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "lib/fsutil.h"
#include "lib/timeutil.h"

/* Everything read from the upstream directory. */
typedef struct {
    X509 *cert;                /* ca-cert.pem */
    EVP_PKEY *key;             /* ca-key.pem */
    STACK_OF(X509) *chain;     /* cert-chain.pem as given */
    STACK_OF(X509) *roots;     /* root-cert.pem */
    STACK_OF(X509) *verified;  /* ca-cert ... root, as X509_verify_cert built it */
} upstream;

static void upstream_clear(upstream *u)
{
    X509_free(u->cert);
    EVP_PKEY_free(u->key);
    sk_X509_pop_free(u->chain, X509_free);
    sk_X509_pop_free(u->roots, X509_free);
    sk_X509_pop_free(u->verified, X509_free);
}

/* Re-raises the current error with a prefix (the message is copied first:
 * mid_fail must not read the buffer it writes). */
__attribute__((format(printf, 2, 3))) static mid_result upstream_fail(mid_err err,
                                                                      const char *fmt, ...)
{
    char saved[1024], prefix[512];
    snprintf(saved, sizeof saved, "%s", mid_errmsg());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    return mid_fail(err, __FILE__, __LINE__, "%s%s", prefix, saved);
}

/* Reads <dir>/<name>; errors keep fs_read_file's code and name the file. */
static mid_result read_upstream_file(const char *dir, const char *name, size_t max, char **buf,
                                     size_t *len)
{
    char path[4096];
    MID_GUARD(fs_join(path, sizeof path, dir, name));
    mid_result r = fs_read_file(path, max, buf, len);
    if (!mid_is_ok(r))
        return upstream_fail(r.err, "upstream CA: cannot read %s: ", name);
    return mid_ok();
}

static mid_result read_certs(const char *dir, const char *name, STACK_OF(X509) **out)
{
    char *buf = NULL;
    size_t len = 0;
    MID_GUARD(read_upstream_file(dir, name, CA_CERT_FILE_MAX, &buf, &len));
    mid_result r = ca_x509_stack_from_pem(buf, len, name, out);
    free(buf);
    if (!mid_is_ok(r)) return upstream_fail(r.err, "upstream CA: ");
    return mid_ok();
}

static mid_result read_key(const char *dir, EVP_PKEY **out)
{
    char *buf = NULL;
    size_t len = 0;
    MID_GUARD(read_upstream_file(dir, "ca-key.pem", CA_KEY_FILE_MAX, &buf, &len));
    mid_result r = ca_key_from_pem(buf, len, "ca-key.pem", out);
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (!mid_is_ok(r)) return upstream_fail(r.err, "upstream CA: ");
    return mid_ok();
}

/* Reads and cross-checks the four files; fills u and the trust domain. */
static mid_result load_and_check(const char *dir, upstream *u, char td[SPIFFE_TD_MAX + 1])
{
    STACK_OF(X509) *certs = NULL;
    MID_GUARD(read_certs(dir, "ca-cert.pem", &certs));
    u->cert = sk_X509_shift(certs);
    int extra = sk_X509_num(certs);
    sk_X509_pop_free(certs, X509_free);
    MID_ENSURE(extra == 0, MID_E_INVALID,
               "upstream CA: ca-cert.pem must hold exactly one certificate (found %d)", extra + 1);
    MID_GUARD(read_key(dir, &u->key));
    MID_GUARD(read_certs(dir, "cert-chain.pem", &u->chain));
    MID_GUARD(read_certs(dir, "root-cert.pem", &u->roots));

    MID_ENSURE(EVP_PKEY_get_base_id(u->key) == EVP_PKEY_EC ||
                   EVP_PKEY_get_base_id(u->key) == EVP_PKEY_RSA,
               MID_E_INVALID, "upstream CA: ca-key.pem must be an EC or RSA key");
    mid_result r = ca_key_matches_cert(u->key, u->cert, "upstream CA: ca-key.pem and ca-cert.pem");
    if (!mid_is_ok(r)) return r;
    MID_GUARD(ca_x509_check_signing_ca(u->cert, "upstream CA: ca-cert.pem"));

    r = ca_x509_signing_trust_domain(u->cert, td);
    if (r.err == MID_E_NOT_FOUND)
        MID_BAIL(MID_E_INVALID,
                 "upstream CA: ca-cert.pem has no spiffe://<trust-domain> URI SAN, so the trust "
                 "domain it may issue for is unknown; ask the upstream CA for one");
    if (!mid_is_ok(r)) return upstream_fail(r.err, "upstream CA: ca-cert.pem: ");

    /* cert-chain.pem runs from ca-cert.pem up to the root; Istio writes it
     * either with or without ca-cert.pem itself, so both are accepted. */
    if (sk_X509_num(u->chain) > 0 && X509_cmp(sk_X509_value(u->chain, 0), u->cert) == 0)
        X509_free(sk_X509_shift(u->chain));
    r = ca_x509_verify(u->cert, u->chain, u->roots, 0, &u->verified);
    if (!mid_is_ok(r))
        return upstream_fail(MID_E_VERIFY, "upstream CA: ca-cert.pem with cert-chain.pem does "
                             "not verify to root-cert.pem: ");
    MID_ENSURE(sk_X509_num(u->verified) >= 2, MID_E_INVALID,
               "upstream CA: ca-cert.pem is itself a root of root-cert.pem; adopt an "
               "intermediate (or run `meshid ca init` for a self-signed hierarchy)");
    return mid_ok();
}

/* The audit event for one adopted authority, with the text it points to. */
typedef struct {
    store_audit_event ev;
    char *details;
    char desc[64], serial[CA_KEY_ID_HEX_MAX], sid[sizeof "spiffe://" + SPIFFE_TD_MAX];
} upstream_event;

static mid_result prepare_event(upstream_event *e, const store_authority *a,
                                EVP_PKEY *key_or_null, X509 *cert, const char *actor)
{
    ca_key_describe(key_or_null != NULL ? key_or_null : X509_get0_pubkey(cert), e->desc,
                    sizeof e->desc);
    MID_GUARD(ca_x509_serial_hex(cert, e->serial, sizeof e->serial));
    MID_GUARD(ca_authority_details(a, e->desc, 1, &e->details));
    snprintf(e->sid, sizeof e->sid, "spiffe://%s", a->trust_domain);
    e->ev = (store_audit_event){
        .actor = actor, .event = "ca.init", .spiffe_id = e->sid, .serial = e->serial,
        .outcome = "ok",
        .reason = strcmp(a->kind, "root") == 0 ? "adopted upstream root as trust anchor"
                                               : "adopted upstream intermediate authority",
        .details = e->details,
    };
    return mid_ok();
}

MID_RESULT ca_init_upstream(store *st, const char *data_dir, const char *upstream_dir,
                            const char *actor)
{
    mid_result r = MID_OK_RESULT;
    upstream u = {0};
    char td[SPIFFE_TD_MAX + 1], root_id[CA_KEY_ID_HEX_MAX], id[CA_KEY_ID_HEX_MAX];
    char dir[4096], name[CA_KEY_ID_HEX_MAX + 8], key_ref[CA_KEY_ID_HEX_MAX + 16], path[4096];
    char *cert_pem = NULL, *root_pem = NULL, *chain_pem = NULL;
    int key_written = 0;
    upstream_event evs[2] = {0};
    store_authority_row *rows = NULL;
    size_t n = 0;
    MID_CHECK(r, st != NULL && data_dir != NULL && upstream_dir != NULL, MID_E_INVALID,
              "missing arguments");
    if (actor == NULL) actor = "system";
    MID_TRY(r, store_authority_list(st, &rows, &n));
    store_authority_list_free(rows, n);
    MID_CHECK(r, n == 0, MID_E_EXISTS,
              "the store already has certificate authorities; refusing to adopt another");

    MID_TRY(r, load_and_check(upstream_dir, &u, td));
    int depth = sk_X509_num(u.verified);
    X509 *root = sk_X509_value(u.verified, depth - 1);

    /* Everything between ca-cert and the root, as verified. */
    chain_pem = strdup("");
    MID_CHECK_MEM(r, chain_pem);
    for (int i = 1; i < depth - 1; i++)
        MID_TRY(r, ca_x509_append_pem(sk_X509_value(u.verified, i), &chain_pem));
    MID_TRY(r, ca_x509_append_pem(u.cert, &cert_pem));
    MID_TRY(r, ca_x509_append_pem(root, &root_pem));
    MID_TRY(r, ca_x509_key_id_hex(root, root_id));
    MID_TRY(r, ca_x509_key_id_hex(u.cert, id));

    MID_TRY(r, ca_keys_dir(data_dir, 1, dir, sizeof dir));
    snprintf(name, sizeof name, "%s.key", id);
    snprintf(key_ref, sizeof key_ref, "keys/%s", name);
    MID_TRY(r, fs_join(path, sizeof path, dir, name));
    MID_TRY(r, ca_key_save(path, u.key));
    key_written = 1;

    int64_t nb = 0, na = 0, now = time_now();
    MID_TRY(r, ca_x509_validity(root, &nb, &na));
    store_authority ra = {
        .id = root_id, .kind = "root", .state = "active", .trust_domain = td, .parent_id = NULL,
        .cert_pem = root_pem, .chain_pem = "", .key_ref = "", .not_before = nb, .not_after = na,
        .upstream = 1, .created_at = now,
    };
    MID_TRY(r, ca_x509_validity(u.cert, &nb, &na));
    store_authority ia = {
        .id = id, .kind = "intermediate", .state = "active", .trust_domain = td,
        .parent_id = root_id, .cert_pem = cert_pem, .chain_pem = chain_pem, .key_ref = key_ref,
        .not_before = nb, .not_after = na, .upstream = 1, .created_at = now,
    };
    MID_TRY(r, prepare_event(&evs[0], &ra, NULL, root, actor));
    MID_TRY(r, prepare_event(&evs[1], &ia, u.key, u.cert, actor));
    /* Root and intermediate in one transaction: both or neither. */
    store_authority both[2] = {ra, ia};
    store_audit_event ev2[2] = {evs[0].ev, evs[1].ev};
    MID_TRY(r, store_authority_put_all(st, both, ev2, 2));
out:
    free(evs[0].details);
    free(evs[1].details);
    if (!mid_is_ok(r) && key_written) (void)unlink(path);
    free(cert_pem);
    free(root_pem);
    free(chain_pem);
    upstream_clear(&u);
    return r;
}
