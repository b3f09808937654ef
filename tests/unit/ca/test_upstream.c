/* ca_init_upstream: adopting an Istio plug-in CA directory, and each way it
 * is refused (nothing may be recorded or left behind on a refusal). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

#define TD_URI "spiffe://up.example"

/* An upstream PKI: root -> [mid ->] ca-cert, written to <dir>/upstream. */
typedef struct {
    char dir[600];
    EVP_PKEY *root_key, *mid_key, *ca_key;
    X509 *root, *mid, *ca_cert;
} pki;

static void path_of(const pki *p, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", p->dir, name);
}

static void write_certs(const pki *p, const char *name, X509 *const *c, size_t n)
{
    char path[700];
    path_of(p, name, path, sizeof path);
    cafx_write_certs(path, c, n);
}

/* three_tier: a middle CA between root and ca-cert. ca_opts tweaks ca-cert. */
static void pki_make(pki *p, const char *base, int three_tier, const cafx_cert_opts *ca_tweak)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "%s/upstream", base);
    assert_int_equal(mkdir(p->dir, 0700), 0);
    p->root_key = cafx_key("ec-p256");
    p->ca_key = cafx_key("ec-p256");
    p->root = cafx_cert(&(cafx_cert_opts){.cn = "Upstream Root", .key = p->root_key, .is_ca = 1,
                                          .not_after_off = 30 * 86400});
    X509 *issuer = p->root;
    EVP_PKEY *issuer_key = p->root_key;
    if (three_tier) {
        p->mid_key = cafx_key("ec-p256");
        p->mid = cafx_cert(&(cafx_cert_opts){.cn = "Upstream Mid", .key = p->mid_key,
                                             .issuer = p->root, .issuer_key = p->root_key,
                                             .is_ca = 1, .not_after_off = 20 * 86400});
        issuer = p->mid;
        issuer_key = p->mid_key;
    }
    cafx_cert_opts o = {.cn = "meshid plug-in", .key = p->ca_key, .issuer = issuer,
                        .issuer_key = issuer_key, .is_ca = 1, .uri = TD_URI,
                        .not_after_off = 10 * 86400};
    if (ca_tweak != NULL) {
        o.is_ca = ca_tweak->is_ca;
        o.uri = ca_tweak->uri;
        o.no_ext = ca_tweak->no_ext;
        if (ca_tweak->not_after_off) o.not_after_off = ca_tweak->not_after_off;
        if (ca_tweak->not_before_off) o.not_before_off = ca_tweak->not_before_off;
    }
    p->ca_cert = cafx_cert(&o);
    char path[700];
    path_of(p, "ca-key.pem", path, sizeof path);
    cafx_write_key(path, p->ca_key);
    write_certs(p, "ca-cert.pem", &p->ca_cert, 1);
    X509 *chain[3] = {p->ca_cert, three_tier ? p->mid : p->root, p->root};
    write_certs(p, "cert-chain.pem", chain, three_tier ? 3 : 2);
    write_certs(p, "root-cert.pem", &p->root, 1);
}

static void pki_free(pki *p)
{
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->mid_key);
    EVP_PKEY_free(p->ca_key);
    X509_free(p->root);
    X509_free(p->mid);
    X509_free(p->ca_cert);
}

static size_t count_key_files(const char *dir)
{
    char keys[700];
    snprintf(keys, sizeof keys, "%s/keys", dir);
    DIR *d = opendir(keys);
    if (d == NULL) return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* A refusal leaves no authority and no key file. */
static void expect_refused(ca_env *e, const pki *p, mid_err err, const char *needle)
{
    assert_fails_with(ca_init_upstream(e->st, e->dir, p->dir, "test"), err, needle);
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    assert_int_equal(n, 0);
    store_authority_list_free(rows, n);
    assert_int_equal(count_key_files(e->dir), 0);
}

static void adopt_and_issue(int three_tier, int chain_without_ca_cert)
{
    ca_env *e = ca_env_new();
    pki p;
    pki_make(&p, e->dir, three_tier, NULL);
    if (chain_without_ca_cert) {
        X509 *chain[2] = {three_tier ? p.mid : p.root, p.root};
        write_certs(&p, "cert-chain.pem", chain, three_tier ? 2 : 1);
    }
    assert_ok(ca_init_upstream(e->st, e->dir, p.dir, "test"));

    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(e->st, &rows, &n));
    assert_int_equal(n, 2);
    const store_authority *root = &rows[0].a, *inter = &rows[1].a;
    assert_string_equal(root->kind, "root");
    assert_int_equal(root->upstream, 1);
    assert_string_equal(root->key_ref, "");
    assert_string_equal(root->trust_domain, "up.example");
    assert_string_equal(inter->kind, "intermediate");
    assert_int_equal(inter->upstream, 1);
    assert_string_equal(inter->parent_id, root->id);
    assert_string_equal(inter->state, "active");
    if (three_tier) {
        STACK_OF(X509) *mid = cafx_pem_certs(inter->chain_pem);
        assert_int_equal(sk_X509_num(mid), 1);
        assert_int_equal(X509_cmp(sk_X509_value(mid, 0), p.mid), 0);
        sk_X509_pop_free(mid, X509_free);
    } else {
        assert_string_equal(inter->chain_pem, "");
    }
    char key_path[800];
    snprintf(key_path, sizeof key_path, "%s/%s", e->dir, inter->key_ref);
    struct stat st;
    assert_int_equal(stat(key_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    store_authority_list_free(rows, n);
    assert_int_equal(cafx_count_events(e->st, "ca.init", "ok"), 2);

    assert_ok(ca_open(e->st, e->dir, &e->c));
    assert_string_equal(ca_trust_domain(e->c), "up.example");
    ca_issue_req req = {.spiffe_id = "spiffe://up.example/ns/a/sa/b"};
    ca_svid *s = NULL;
    assert_ok(ca_issue(e->c, &req, &s));
    STACK_OF(X509) *chain = cafx_pem_certs(ca_svid_chain_pem(s));
    assert_int_equal(sk_X509_num(chain), three_tier ? 3 : 2);
    X509 *leaf = sk_X509_shift(chain);
    STACK_OF(X509) *anchors = sk_X509_new_null();
    sk_X509_push(anchors, p.root);
    assert_int_equal(cafx_verify(leaf, chain, anchors), X509_V_OK);
    /* The SVID never outlives ca-cert (10 days) and the trust bundle is the root. */
    char *bundle = NULL;
    assert_ok(ca_bundle_pem(e->c, &bundle));
    STACK_OF(X509) *b = cafx_pem_certs(bundle);
    assert_int_equal(X509_cmp(sk_X509_value(b, 0), p.root), 0);
    sk_X509_pop_free(b, X509_free);
    free(bundle);
    sk_X509_free(anchors);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    ca_svid_free(s);

    /* adopting twice is refused */
    assert_fails_with(ca_init_upstream(e->st, e->dir, p.dir, "test"), MID_E_EXISTS, "already");
    pki_free(&p);
    ca_env_free(e);
}

static void t_upstream_two_tier(void **state)
{
    (void)state;
    adopt_and_issue(0, 0);
}

static void t_upstream_three_tier(void **state)
{
    (void)state;
    adopt_and_issue(1, 0);
}

static void t_upstream_chain_without_ca_cert(void **state)
{
    (void)state;
    adopt_and_issue(1, 1);
}

static void t_upstream_missing_files(void **state)
{
    (void)state;
    static const char *files[] = {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
    for (size_t i = 0; i < 4; i++) {
        ca_env *e = ca_env_new();
        pki p;
        pki_make(&p, e->dir, 0, NULL);
        char path[700];
        path_of(&p, files[i], path, sizeof path);
        assert_int_equal(unlink(path), 0);
        expect_refused(e, &p, MID_E_NOT_FOUND, files[i]);
        cafx_write_text(path, "this is not PEM\n");
        expect_refused(e, &p, MID_E_INVALID, files[i]);
        pki_free(&p);
        ca_env_free(e);
    }
}

static void t_upstream_key_mismatch(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    pki p;
    pki_make(&p, e->dir, 0, NULL);
    char path[700];
    path_of(&p, "ca-key.pem", path, sizeof path);
    EVP_PKEY *other = cafx_key("ec-p256");
    cafx_write_key(path, other);
    EVP_PKEY_free(other);
    expect_refused(e, &p, MID_E_INVALID, "does not match");
    pki_free(&p);
    ca_env_free(e);
}

static void t_upstream_broken_chain(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    pki p;
    pki_make(&p, e->dir, 0, NULL);
    /* root-cert.pem holds some other root */
    EVP_PKEY *k = cafx_key("ec-p256");
    X509 *other = cafx_cert(&(cafx_cert_opts){.cn = "Upstream Root", .key = k, .is_ca = 1});
    write_certs(&p, "root-cert.pem", &other, 1);
    expect_refused(e, &p, MID_E_VERIFY, "does not verify to root-cert.pem");
    X509_free(other);
    EVP_PKEY_free(k);
    pki_free(&p);
    ca_env_free(e);

    /* three tiers with the middle CA missing from cert-chain.pem */
    e = ca_env_new();
    pki_make(&p, e->dir, 1, NULL);
    X509 *chain[2] = {p.ca_cert, p.root};
    write_certs(&p, "cert-chain.pem", chain, 2);
    expect_refused(e, &p, MID_E_VERIFY, "unable to get local issuer");
    pki_free(&p);
    ca_env_free(e);
}

static void t_upstream_not_ca(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    pki p;
    cafx_cert_opts leaf = {.is_ca = 0, .uri = TD_URI};
    pki_make(&p, e->dir, 0, &leaf);
    expect_refused(e, &p, MID_E_INVALID, "not a CA certificate");
    pki_free(&p);
    ca_env_free(e);

    e = ca_env_new();
    cafx_cert_opts v1ish = {.no_ext = 1};
    pki_make(&p, e->dir, 0, &v1ish);
    expect_refused(e, &p, MID_E_INVALID, "not a CA certificate");
    pki_free(&p);
    ca_env_free(e);
}

static void t_upstream_no_trust_domain(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    pki p;
    cafx_cert_opts no_uri = {.is_ca = 1, .uri = NULL};
    pki_make(&p, e->dir, 0, &no_uri);
    expect_refused(e, &p, MID_E_INVALID, "no spiffe://<trust-domain> URI SAN");
    pki_free(&p);
    ca_env_free(e);

    e = ca_env_new();
    cafx_cert_opts with_path = {.is_ca = 1, .uri = TD_URI "/not/a/ca"};
    pki_make(&p, e->dir, 0, &with_path);
    expect_refused(e, &p, MID_E_INVALID, "must not have a path");
    pki_free(&p);
    ca_env_free(e);
}

static void t_upstream_expired(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    pki p;
    cafx_cert_opts expired = {.is_ca = 1, .uri = TD_URI, .not_before_off = -7200,
                              .not_after_off = -3600};
    pki_make(&p, e->dir, 0, &expired);
    expect_refused(e, &p, MID_E_VERIFY, "expired");
    pki_free(&p);
    ca_env_free(e);
}

static void t_upstream_self_signed_ca_cert(void **state)
{
    (void)state;
    ca_env *e = ca_env_new();
    pki p;
    pki_make(&p, e->dir, 0, NULL);
    /* ca-cert.pem is itself the root: no intermediate to adopt */
    X509 *self = cafx_cert(&(cafx_cert_opts){.cn = "selfie", .key = p.ca_key, .is_ca = 1,
                                             .uri = TD_URI});
    write_certs(&p, "ca-cert.pem", &self, 1);
    write_certs(&p, "cert-chain.pem", &self, 1);
    write_certs(&p, "root-cert.pem", &self, 1);
    expect_refused(e, &p, MID_E_INVALID, "itself a root");
    X509_free(self);
    pki_free(&p);
    ca_env_free(e);
}

int ca_test_upstream(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_upstream_two_tier),
        cmocka_unit_test(t_upstream_three_tier),
        cmocka_unit_test(t_upstream_chain_without_ca_cert),
        cmocka_unit_test(t_upstream_missing_files),
        cmocka_unit_test(t_upstream_key_mismatch),
        cmocka_unit_test(t_upstream_broken_chain),
        cmocka_unit_test(t_upstream_not_ca),
        cmocka_unit_test(t_upstream_no_trust_domain),
        cmocka_unit_test(t_upstream_expired),
        cmocka_unit_test(t_upstream_self_signed_ca_cert),
    };
    return cmocka_run_group_tests_name("ca/upstream", tests, NULL, NULL);
}
