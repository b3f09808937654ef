/* ca/rotation.h: prepare -> active -> old -> removed for intermediates and
 * roots, bundle contents at each step, issuance after activation, taint and
 * revoke, upstream and back, the rotation tick with a fake clock, and that
 * every refusal leaves the authorities table exactly as it was. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "ca/rotation.h"
#include "ca/x509.h"
#include "lib/timeutil.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/ca/ca_tests.h"

/* ---- helpers ------------------------------------------------------------------- */

/* The whole authorities table as text, to compare before and after. */
static char *snapshot(store *st)
{
    store_authority_row *rows = NULL;
    size_t n = 0, cap = 1, len = 0;
    assert_ok(store_authority_list(st, &rows, &n));
    for (size_t i = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        cap += strlen(a->id) + strlen(a->kind) + strlen(a->state) + strlen(a->trust_domain) +
               (a->parent_id ? strlen(a->parent_id) : 4) + strlen(a->cert_pem) +
               strlen(a->chain_pem) + strlen(a->key_ref) + 128;
    }
    char *s = calloc(1, cap);
    for (size_t i = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        len += (size_t)snprintf(s + len, cap - len, "%s|%s|%s|%s|%s|%s|%s|%s|%lld|%lld|%d|%lld\n",
                                a->id, a->kind, a->state, a->trust_domain,
                                a->parent_id ? a->parent_id : "NULL", a->cert_pem, a->chain_pem,
                                a->key_ref, (long long)a->not_before, (long long)a->not_after,
                                a->upstream, (long long)a->created_at);
    }
    store_authority_list_free(rows, n);
    return s;
}

/* Asserts `r` fails with `code` / `needle` and the table is unchanged. */
#define assert_refused(e, expr, code, needle)                                                   \
    do {                                                                                        \
        char *before_ = snapshot((e)->st);                                                      \
        assert_fails_with((expr), (code), (needle));                                            \
        char *after_ = snapshot((e)->st);                                                       \
        assert_string_equal(before_, after_);                                                   \
        free(before_);                                                                          \
        free(after_);                                                                           \
    } while (0)

/* The state of authority `id` (full id), copied into `out`. */
static const char *state_of(store *st, const char *id, char out[16])
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(st, &rows, &n));
    snprintf(out, 16, "%s", "absent");
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].a.id, id) == 0) snprintf(out, 16, "%s", rows[i].a.state);
    store_authority_list_free(rows, n);
    return out;
}

#define assert_state(st, id, want)                                                              \
    do {                                                                                        \
        char s_[16];                                                                            \
        assert_string_equal(state_of((st), (id), s_), (want));                                  \
    } while (0)

/* The id of the newest authority of `kind` in `state` (must exist). */
static void find_id(store *st, const char *kind, const char *state, char out[CA_AUTHORITY_ID_MAX])
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(st, &rows, &n));
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].a.kind, kind) == 0 && strcmp(rows[i].a.state, state) == 0)
            snprintf(out, CA_AUTHORITY_ID_MAX, "%s", rows[i].a.id);
    store_authority_list_free(rows, n);
    assert_true(out[0] != '\0');
}

static size_t count_state(store *st, const char *state)
{
    store_authority_row *rows = NULL;
    size_t n = 0, k = 0;
    assert_ok(store_authority_list(st, &rows, &n));
    for (size_t i = 0; i < n; i++) k += strcmp(rows[i].a.state, state) == 0;
    store_authority_list_free(rows, n);
    return k;
}

/* Bundle anchors from ca_bundle_pem (an open handle reads the store). */
static STACK_OF(X509) *bundle(ca *c)
{
    char *pem = NULL;
    assert_ok(ca_bundle_pem(c, &pem));
    STACK_OF(X509) *sk = pem[0] != '\0' ? cafx_pem_certs(pem) : sk_X509_new_null();
    free(pem);
    return sk;
}

static int bundle_roots(ca *c)
{
    STACK_OF(X509) *sk = bundle(c);
    int n = sk_X509_num(sk);
    sk_X509_pop_free(sk, X509_free);
    return n;
}

/* Issues an SVID from a freshly opened handle (the way the CLI does). */
static ca_svid *issue(ca_env *e, const char *path, int64_t ttl)
{
    ca *c = NULL;
    assert_ok(ca_open(e->st, e->dir, &c));
    char id[256];
    snprintf(id, sizeof id, "spiffe://example.org/%s", path);
    ca_issue_req req = {.spiffe_id = id, .ttl = ttl, .actor = "test:unit"};
    ca_svid *s = NULL;
    assert_ok(ca_issue(c, &req, &s));
    ca_close(c);
    return s;
}

/* X509_V_OK when the SVID's chain verifies against the current bundle. */
static int verify_svid(ca_env *e, const ca_svid *s)
{
    STACK_OF(X509) *chain = cafx_pem_certs(ca_svid_chain_pem(s));
    STACK_OF(X509) *anchors = bundle(e->c);
    X509 *leaf = sk_X509_shift(chain);
    int rc = cafx_verify(leaf, chain, anchors);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(anchors, X509_free);
    return rc;
}

/* The key id of the SVID chain's first intermediate. */
static void issuer_of(const ca_svid *s, char out[CA_AUTHORITY_ID_MAX])
{
    STACK_OF(X509) *chain = cafx_pem_certs(ca_svid_chain_pem(s));
    assert_true(sk_X509_num(chain) >= 2);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(sk_X509_value(chain, 1));
    assert_non_null(ski);
    size_t k = 0;
    for (int i = 0; i < ASN1_STRING_length(ski); i++)
        k += (size_t)snprintf(out + k, CA_AUTHORITY_ID_MAX - k, "%02x",
                              ASN1_STRING_get0_data(ski)[i]);
    sk_X509_pop_free(chain, X509_free);
}

/* The first `n` digits of `id` (n < the buffer) into out. */
static void prefix_of(char *out, const char *id, size_t n)
{
    memcpy(out, id, n);
    out[n] = '\0';
}

static ca_prepared prepare(ca_env *e, int new_root)
{
    ca_prepare_opts o = {.new_root = new_root, .actor = "test:unit"};
    ca_prepared p = {0};
    assert_ok(ca_prepare(e->st, e->dir, &o, &p));
    return p;
}

static void key_path(ca_env *e, const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/keys/%s.key", e->dir, id);
}

/* ---- intermediate rotation ----------------------------------------------------- */

static void t_intermediate_rotation(void **state)
{
    ca_env *e = *state;
    char old_i[CA_AUTHORITY_ID_MAX], root[CA_AUTHORITY_ID_MAX], got[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "intermediate", "active", old_i);
    find_id(e->st, "root", "active", root);
    ca_svid *s1 = issue(e, "before", 0);

    ca_prepared p = prepare(e, 0);
    assert_string_equal(p.root_id, root);
    assert_false(p.root_is_new);
    assert_state(e->st, p.intermediate_id, "prepared");
    assert_state(e->st, old_i, "active");
    assert_int_equal(bundle_roots(e->c), 1);
    /* the key file is 0600 */
    char path[1024];
    struct stat sb;
    key_path(e, p.intermediate_id, path, sizeof path);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* still signing with the old one */
    ca_svid *s = issue(e, "still-old", 0);
    issuer_of(s, got);
    assert_string_equal(got, old_i);
    ca_svid_free(s);

    char prefix[9];
    prefix_of(prefix, p.intermediate_id, sizeof prefix - 1);
    assert_ok(ca_activate(e->st, e->dir, prefix, NULL, "test:unit"));
    assert_state(e->st, p.intermediate_id, "active");
    assert_state(e->st, old_i, "old");
    assert_state(e->st, root, "active");
    assert_int_equal(bundle_roots(e->c), 1);

    ca *c = NULL;
    assert_ok(ca_open(e->st, e->dir, &c));
    assert_string_equal(ca_signer_id(c), p.intermediate_id);
    ca_close(c);
    ca_svid *s2 = issue(e, "after", 0);
    issuer_of(s2, got);
    assert_string_equal(got, p.intermediate_id);
    assert_int_equal(verify_svid(e, s2), X509_V_OK);
    assert_int_equal(verify_svid(e, s1), X509_V_OK); /* the old one still verifies */

    assert_int_equal(cafx_count_events(e->st, "ca.prepare", "ok"), 1);
    assert_int_equal(cafx_count_events(e->st, "ca.activate", "ok"), 2);
    ca_svid_free(s1);
    ca_svid_free(s2);
}

/* ---- root rotation, retire ---------------------------------------------------- */

static void t_root_rotation_and_retire(void **state)
{
    ca_env *e = *state;
    char old_i[CA_AUTHORITY_ID_MAX], old_r[CA_AUTHORITY_ID_MAX], got[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "intermediate", "active", old_i);
    find_id(e->st, "root", "active", old_r);
    ca_svid *s1 = issue(e, "before", 600);

    ca_prepared p = prepare(e, 1);
    assert_true(p.root_is_new);
    assert_state(e->st, p.root_id, "prepared");
    assert_state(e->st, p.intermediate_id, "prepared");
    assert_int_equal(bundle_roots(e->c), 2); /* trust spreads before anything is signed */

    /* activation may name the root: its one prepared intermediate comes along */
    char prefix[11];
    prefix_of(prefix, p.root_id, sizeof prefix - 1);
    assert_ok(ca_activate(e->st, e->dir, prefix, NULL, "test:unit"));
    assert_state(e->st, p.root_id, "active");
    assert_state(e->st, p.intermediate_id, "active");
    assert_state(e->st, old_r, "old");
    assert_state(e->st, old_i, "old");
    assert_int_equal(bundle_roots(e->c), 2);
    assert_int_equal(cafx_count_events(e->st, "ca.activate", "ok"), 4);

    ca_svid *s2 = issue(e, "after", 0);
    issuer_of(s2, got);
    assert_string_equal(got, p.intermediate_id);
    assert_int_equal(verify_svid(e, s2), X509_V_OK);
    assert_int_equal(verify_svid(e, s1), X509_V_OK);

    /* s1 is live: nothing retires yet */
    size_t n = 99;
    int64_t now = time_now();
    assert_ok(ca_retire_expired(e->st, now, "test:unit", &n));
    assert_int_equal(n, 0);
    /* within the grace period after s1 expired: still nothing */
    assert_ok(ca_retire_expired(e->st, ca_svid_not_after(s1) + CA_RETIRE_GRACE - 5, "t", &n));
    assert_int_equal(n, 0);
    /* then the old intermediate and the old root go, and the root leaves the bundle */
    assert_ok(ca_retire_expired(e->st, ca_svid_not_after(s1) + CA_RETIRE_GRACE + 1, "t", &n));
    assert_int_equal(n, 2);
    assert_state(e->st, old_i, "removed");
    assert_state(e->st, old_r, "removed");
    assert_int_equal(bundle_roots(e->c), 1);
    assert_int_equal(cafx_count_events(e->st, "ca.retire", "ok"), 2);
    assert_int_equal(verify_svid(e, s2), X509_V_OK);
    ca_svid_free(s1);
    ca_svid_free(s2);
}

/* The PEM columns of authority `id`: cert_pem and chain_pem (caller frees). */
static void pems_of(store *st, const char *id, char **cert, char **chain)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    assert_ok(store_authority_list(st, &rows, &n));
    *cert = *chain = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].a.id, id) == 0) {
            *cert = strdup(rows[i].a.cert_pem);
            *chain = strdup(rows[i].a.chain_pem ? rows[i].a.chain_pem : "");
        }
    store_authority_list_free(rows, n);
    assert_non_null(*cert);
    assert_non_null(*chain);
}

/* prepare --root cross-signs the new root with the active one: the new root's
 * chain_pem certifies the new root's key under the old root, so the new
 * intermediate verifies with only the old root trusted. */
static void t_root_cross_signed(void **state)
{
    ca_env *e = *state;
    char old_r[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "root", "active", old_r);
    char *old_pem = NULL, *old_chain = NULL;
    pems_of(e->st, old_r, &old_pem, &old_chain);
    assert_string_equal(old_chain, ""); /* the first root has nothing to cross to */
    ca_prepared p = prepare(e, 1);
    char *new_pem = NULL, *cross_pem = NULL, *inter_pem = NULL, *inter_chain = NULL;
    pems_of(e->st, p.root_id, &new_pem, &cross_pem);
    pems_of(e->st, p.intermediate_id, &inter_pem, &inter_chain);
    assert_true(cross_pem[0] != '\0');

    STACK_OF(X509) *olds = cafx_pem_certs(old_pem), *news = cafx_pem_certs(new_pem),
                   *xs = cafx_pem_certs(cross_pem), *is = cafx_pem_certs(inter_pem);
    assert_int_equal(sk_X509_num(xs), 1);
    X509 *r1 = sk_X509_value(olds, 0), *r2 = sk_X509_value(news, 0), *x = sk_X509_value(xs, 0),
         *i2 = sk_X509_value(is, 0);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(x), X509_get0_pubkey(r2)), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_subject_name(r2)), 0);
    assert_int_equal(X509_check_issued(r1, x), X509_V_OK);
    assert_int_equal(X509_verify(x, X509_get0_pubkey(r1)), 1);
    assert_int_equal(X509_get_pathlen(x), -1);
    assert_true(X509_check_ca(x) > 0);
    char ski_x[CA_KEY_ID_HEX_MAX], ski_r2[CA_KEY_ID_HEX_MAX];
    assert_ok(ca_x509_key_id_hex(x, ski_x));
    assert_ok(ca_x509_key_id_hex(r2, ski_r2));
    assert_string_equal(ski_x, ski_r2);

    /* only the old root trusted: X verifies, and I2 through X */
    STACK_OF(X509) *anchors = sk_X509_new_null();
    assert_non_null(anchors);
    assert_true(sk_X509_push(anchors, r1) > 0);
    STACK_OF(X509) *chain = NULL;
    assert_ok(ca_x509_verify(x, NULL, anchors, 0, NULL));
    assert_ok(ca_x509_verify(i2, xs, anchors, 0, &chain));
    assert_int_equal(sk_X509_num(chain), 3);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 2), r1), 0);
    sk_X509_pop_free(chain, X509_free);
    /* only the new root trusted: I2 still verifies directly (X is not needed) */
    sk_X509_zero(anchors);
    assert_true(sk_X509_push(anchors, r2) > 0);
    assert_ok(ca_x509_verify(i2, xs, anchors, 0, &chain));
    assert_int_equal(X509_cmp(sk_X509_value(chain, sk_X509_num(chain) - 1), r2), 0);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_free(anchors);

    sk_X509_pop_free(olds, X509_free);
    sk_X509_pop_free(news, X509_free);
    sk_X509_pop_free(xs, X509_free);
    sk_X509_pop_free(is, X509_free);
    free(old_pem);
    free(old_chain);
    free(new_pem);
    free(cross_pem);
    free(inter_pem);
    free(inter_chain);
}

static void t_retire_intermediate_short_ttl(void **state)
{
    ca_env *e = *state;
    char old_i[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "intermediate", "active", old_i);
    ca_svid *s1 = issue(e, "short", 60);
    ca_prepared p = prepare(e, 0);
    assert_ok(ca_activate(e->st, e->dir, p.intermediate_id, NULL, "test:unit"));
    size_t n = 0;
    assert_ok(ca_retire_expired(e->st, time_now(), "t", &n));
    assert_int_equal(n, 0);
    assert_state(e->st, old_i, "old");
    assert_ok(ca_retire_expired(e->st, time_now() + 60 + CA_RETIRE_GRACE + 5, "t", &n));
    assert_int_equal(n, 1);
    assert_state(e->st, old_i, "removed");
    assert_int_equal(bundle_roots(e->c), 1); /* the root stays: it is active */
    ca_svid_free(s1);
}

/* ---- refusals ------------------------------------------------------------------ */

static mid_result gate_says_no(void *ctx, const char *root_id, const char *inter_id)
{
    (void)inter_id;
    snprintf(ctx, CA_AUTHORITY_ID_MAX, "%s", root_id);
    return mid_fail(MID_E_STATE, __FILE__, __LINE__,
                    "2 agents have not acknowledged the bundle with root %.16s", root_id);
}

static mid_result gate_says_yes(void *ctx, const char *root_id, const char *inter_id)
{
    (void)root_id;
    snprintf(ctx, CA_AUTHORITY_ID_MAX, "%s", inter_id);
    return mid_ok();
}

static void t_activate_refusals(void **state)
{
    ca_env *e = *state;
    char act_i[CA_AUTHORITY_ID_MAX], act_r[CA_AUTHORITY_ID_MAX], seen[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "intermediate", "active", act_i);
    find_id(e->st, "root", "active", act_r);
    int64_t now = time_now();

    assert_refused(e, ca_activate(e->st, e->dir, "0123456789abcdef0123", NULL, "t"),
                   MID_E_NOT_FOUND, "no authority with id");
    assert_refused(e, ca_activate(e->st, e->dir, "xyz", NULL, "t"), MID_E_INVALID,
                   "not hexadecimal");
    assert_refused(e, ca_activate(e->st, e->dir, "", NULL, "t"), MID_E_INVALID, "hex digits");
    assert_refused(e, ca_activate(e->st, e->dir, act_i, NULL, "t"), MID_E_STATE,
                   "already active");
    assert_refused(e, ca_activate(e->st, e->dir, act_r, NULL, "t"), MID_E_STATE,
                   "already active");

    ca_prepared p = prepare(e, 0);
    /* the gate is asked about the root the candidate chains to */
    ca_activate_gate no = {.ready = gate_says_no, .ctx = seen};
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, &no, "t"), MID_E_STATE,
                   "have not acknowledged");
    assert_string_equal(seen, act_r);
    /* a clock behind the last recorded change */
    assert_refused(e, ca_activate_at(e->st, e->dir, p.intermediate_id, NULL, "t", now - 3600, NULL),
                   MID_E_STATE, "behind the last recorded change");
    /* candidate expired (a fake clock after its end) */
    assert_refused(e, ca_activate_at(e->st, e->dir, p.intermediate_id, NULL, "t",
                                     now + 400LL * 86400, NULL),
                   MID_E_STATE, "expired at");

    /* key file missing, garbage, another valid key */
    char path[1024], saved[1100];
    key_path(e, p.intermediate_id, path, sizeof path);
    snprintf(saved, sizeof saved, "%s.saved", path);
    assert_int_equal(rename(path, saved), 0);
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"), MID_E_NOT_FOUND,
                   "key of intermediate");
    cafx_write_text(path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"), MID_E_INVALID,
                   "key of intermediate");
    EVP_PKEY *other = cafx_key("ec-p256");
    unlink(path);
    cafx_write_key(path, other);
    EVP_PKEY_free(other);
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"), MID_E_INVALID,
                   "match");
    unlink(path);
    assert_int_equal(rename(saved, path), 0);
    /* the root's key file is checked too */
    key_path(e, act_r, path, sizeof path);
    snprintf(saved, sizeof saved, "%s.saved", path);
    assert_int_equal(rename(path, saved), 0);
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"), MID_E_NOT_FOUND,
                   "key of root");
    assert_int_equal(rename(saved, path), 0);

    /* and with everything in order (and a willing gate) it goes */
    ca_activate_gate yes = {.ready = gate_says_yes, .ctx = seen};
    assert_ok(ca_activate(e->st, e->dir, p.intermediate_id, &yes, "t"));
    assert_string_equal(seen, p.intermediate_id);
    /* the one it replaced is old now and cannot come back */
    assert_refused(e, ca_activate(e->st, e->dir, act_i, NULL, "t"), MID_E_STATE,
                   "is old; only a prepared authority");
}

static void t_activate_not_yet_valid(void **state)
{
    ca_env *e = *state;
    ca_prepare_opts o = {.now = time_now() + 7200, .actor = "t"};
    ca_prepared p = {0};
    assert_ok(ca_prepare(e->st, e->dir, &o, &p));
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"), MID_E_STATE,
                   "is not valid before");
}

static void t_activate_root_not_in_bundle(void **state)
{
    ca_env *e = *state;
    ca_prepared p = prepare(e, 1);
    /* a prepared root can be tainted (compromised before use) and revoked */
    assert_ok(ca_taint(e->st, p.root_id, "t", NULL));
    assert_ok(ca_revoke(e->st, p.root_id, "t", NULL));
    assert_int_equal(bundle_roots(e->c), 1);
    assert_refused(e, ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"), MID_E_STATE,
                   "not in the trust bundle");
    assert_refused(e, ca_activate(e->st, e->dir, p.root_id, NULL, "t"), MID_E_STATE,
                   "is revoked");
}

static void t_ambiguous_prefix(void **state)
{
    ca_env *e = *state;
    /* add prepared-then-replaced intermediates until two ids share a first digit
     * (at most 17 authorities by pigeonhole) */
    char digit[2] = "";
    int rounds = 0;
    for (; rounds < 20 && digit[0] == '\0'; rounds++) {
        ca_prepare_opts o = {.replace = 1, .actor = "t"};
        assert_ok(ca_prepare(e->st, e->dir, &o, NULL));
        store_authority_row *rows = NULL;
        size_t n = 0;
        int seen[16] = {0};
        assert_ok(store_authority_list(e->st, &rows, &n));
        for (size_t i = 0; i < n && digit[0] == '\0'; i++) {
            const char *hex = "0123456789abcdef";
            int d = (int)(strchr(hex, rows[i].a.id[0]) - hex);
            if (seen[d]++) digit[0] = rows[i].a.id[0];
        }
        store_authority_list_free(rows, n);
    }
    assert_true(digit[0] != '\0');
    assert_refused(e, ca_activate(e->st, e->dir, digit, NULL, "t"), MID_E_INVALID, "ambiguous");
    assert_refused(e, ca_taint(e->st, digit, "t", NULL), MID_E_INVALID, "ambiguous");
    assert_refused(e, ca_revoke(e->st, digit, "t", NULL), MID_E_INVALID, "ambiguous");
    /* exactly one prepared after all those replacements; the others are removed */
    assert_int_equal(count_state(e->st, "prepared"), 1);
    assert_int_equal(cafx_count_events(e->st, "ca.retire", "ok"), rounds - 1);
}

/* ---- prepare ------------------------------------------------------------------- */

static void t_prepare_refusals(void **state)
{
    ca_env *e = *state;
    ca_prepared p = prepare(e, 0);
    char s16[17];
    prefix_of(s16, p.intermediate_id, sizeof s16 - 1);
    ca_prepare_opts o = {.actor = "t"};
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_EXISTS, s16);
    o.new_root = 1;
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_EXISTS, "--replace");
    o.upstream_dir = "/nonexistent";
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_INVALID, "exclude");
    o = (ca_prepare_opts){.intermediate_ttl = -1};
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_INVALID, "negative");
    /* replace: the prepared root-less intermediate is removed, a new root pair prepared */
    o = (ca_prepare_opts){.new_root = 1, .replace = 1, .actor = "t"};
    ca_prepared q = {0};
    assert_ok(ca_prepare(e->st, e->dir, &o, &q));
    assert_state(e->st, p.intermediate_id, "removed");
    assert_state(e->st, q.root_id, "prepared");
    assert_int_equal(bundle_roots(e->c), 2);
    /* replacing the prepared root drops it from the bundle again */
    o = (ca_prepare_opts){.replace = 1, .actor = "t"};
    assert_ok(ca_prepare(e->st, e->dir, &o, NULL));
    assert_state(e->st, q.root_id, "removed");
    assert_int_equal(bundle_roots(e->c), 1);
    /* no key files left behind by refusals: 2 (init) + 1 + 2 + 1 prepared */
    char keys[1024];
    snprintf(keys, sizeof keys, "%s/keys", e->dir);
    int nkeys = 0;
    DIR *d = opendir(keys);
    for (struct dirent *de; (de = readdir(d)) != NULL;) nkeys += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(nkeys, 6);
}

/* An upstream plug-in CA directory for example.org; `base` gets upstream/. */
typedef struct {
    char dir[600];
    EVP_PKEY *root_key, *mid_key, *ca_key;
    X509 *root, *mid, *ca_cert;
} pki;

static void pki_make(pki *p, const char *base, const char *name)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "%s/%s", base, name);
    assert_int_equal(mkdir(p->dir, 0700), 0);
    p->root_key = cafx_key("ec-p256");
    p->mid_key = cafx_key("ec-p256");
    p->ca_key = cafx_key("ec-p256");
    p->root = cafx_cert(&(cafx_cert_opts){.cn = "Corp Root", .key = p->root_key, .is_ca = 1,
                                          .not_after_off = 60 * 86400});
    p->mid = cafx_cert(&(cafx_cert_opts){.cn = "Corp Mid", .key = p->mid_key, .issuer = p->root,
                                         .issuer_key = p->root_key, .is_ca = 1,
                                         .not_after_off = 50 * 86400});
    p->ca_cert = cafx_cert(&(cafx_cert_opts){.cn = "meshid plug-in", .key = p->ca_key,
                                             .issuer = p->mid, .issuer_key = p->mid_key,
                                             .is_ca = 1, .uri = "spiffe://example.org",
                                             .not_after_off = 40 * 86400});
    char path[700];
    snprintf(path, sizeof path, "%s/ca-key.pem", p->dir);
    cafx_write_key(path, p->ca_key);
    snprintf(path, sizeof path, "%s/ca-cert.pem", p->dir);
    cafx_write_certs(path, &p->ca_cert, 1);
    X509 *chain[3] = {p->ca_cert, p->mid, p->root};
    snprintf(path, sizeof path, "%s/cert-chain.pem", p->dir);
    cafx_write_certs(path, chain, 3);
    snprintf(path, sizeof path, "%s/root-cert.pem", p->dir);
    cafx_write_certs(path, &p->root, 1);
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

static void t_upstream_and_back(void **state)
{
    ca_env *e = *state;
    char self_r[CA_AUTHORITY_ID_MAX], self_i[CA_AUTHORITY_ID_MAX], got[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "root", "active", self_r);
    find_id(e->st, "intermediate", "active", self_i);
    pki p;
    pki_make(&p, e->dir, "plugin");

    /* refusals from ca_init_upstream's checks, and a foreign trust domain */
    ca_prepare_opts o = {.upstream_dir = "/nonexistent/plugin", .actor = "t"};
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_NOT_FOUND, "ca-cert.pem");
    pki f;
    ca_env *other = ca_env_new();
    pki_make(&f, other->dir, "plugin");
    X509_free(f.ca_cert);
    f.ca_cert = cafx_cert(&(cafx_cert_opts){.cn = "foreign", .key = f.ca_key, .issuer = f.mid,
                                            .issuer_key = f.mid_key, .is_ca = 1,
                                            .uri = "spiffe://other.example",
                                            .not_after_off = 40 * 86400});
    char path[700];
    snprintf(path, sizeof path, "%s/ca-cert.pem", f.dir);
    unlink(path);
    cafx_write_certs(path, &f.ca_cert, 1);
    snprintf(path, sizeof path, "%s/cert-chain.pem", f.dir);
    unlink(path);
    X509 *fchain[2] = {f.mid, f.root};
    cafx_write_certs(path, fchain, 2);
    o.upstream_dir = f.dir;
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_INVALID, "trust domain");
    pki_free(&f);
    ca_env_free(other);
    /* no scratch directory left in the data dir */
    DIR *d = opendir(e->dir);
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        assert_null(strstr(de->d_name, ".upstream-"));
    closedir(d);

    o.upstream_dir = p.dir;
    ca_prepared up = {0};
    assert_ok(ca_prepare(e->st, e->dir, &o, &up));
    assert_true(up.root_is_new);
    assert_int_equal(bundle_roots(e->c), 2);
    assert_ok(ca_activate(e->st, e->dir, up.intermediate_id, NULL, "t"));
    assert_state(e->st, up.root_id, "active");
    assert_state(e->st, self_r, "old");
    ca_svid *s = issue(e, "via-upstream", 0);
    issuer_of(s, got);
    assert_string_equal(got, up.intermediate_id);
    STACK_OF(X509) *chain = cafx_pem_certs(ca_svid_chain_pem(s));
    assert_int_equal(sk_X509_num(chain), 3); /* leaf, plug-in intermediate, upstream mid */
    sk_X509_pop_free(chain, X509_free);
    assert_int_equal(verify_svid(e, s), X509_V_OK);

    /* under an upstream root there is no key here for a plain intermediate */
    o = (ca_prepare_opts){.actor = "t"};
    assert_refused(e, ca_prepare(e->st, e->dir, &o, NULL), MID_E_STATE, "--upstream-dir");
    /* and back to a self-signed root */
    o.new_root = 1;
    ca_prepared back = {0};
    assert_ok(ca_prepare(e->st, e->dir, &o, &back));
    assert_ok(ca_activate(e->st, e->dir, back.intermediate_id, NULL, "t"));
    assert_state(e->st, up.root_id, "old");
    assert_state(e->st, up.intermediate_id, "old");
    assert_int_equal(bundle_roots(e->c), 3); /* self (old), upstream (old), new */
    assert_int_equal(verify_svid(e, s), X509_V_OK);
    ca_svid_free(s);
    pki_free(&p);
}

/* ---- taint, revoke -------------------------------------------------------------- */

static void t_taint_revoke(void **state)
{
    ca_env *e = *state;
    char old_i[CA_AUTHORITY_ID_MAX], old_r[CA_AUTHORITY_ID_MAX], full[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "intermediate", "active", old_i);
    find_id(e->st, "root", "active", old_r);
    ca_svid *s1 = issue(e, "old-chain", 0);

    /* the only signer cannot be tainted */
    assert_refused(e, ca_taint(e->st, old_i, "t", NULL), MID_E_STATE,
                   "activate a replacement first");
    assert_refused(e, ca_taint(e->st, old_r, "t", NULL), MID_E_STATE, "rotate --root");
    ca_prepared p = prepare(e, 1);
    assert_ok(ca_activate(e->st, e->dir, p.intermediate_id, NULL, "t"));
    ca_svid *s2 = issue(e, "new-chain", 0);

    /* revoke without taint: refused, naming the live SVIDs */
    assert_refused(e, ca_revoke(e->st, old_r, "t", NULL), MID_E_STATE, "taint it first");
    assert_refused(e, ca_revoke(e->st, old_r, "t", NULL), MID_E_STATE, "1 live SVID chains to it");
    /* intermediates are not revoked on their own */
    assert_refused(e, ca_revoke(e->st, old_i, "t", NULL), MID_E_INVALID, "revoke its root");

    int tainted = -1;
    assert_ok(ca_chain_tainted(e->st, old_i, &tainted));
    assert_int_equal(tainted, 0);
    char prefix[7];
    prefix_of(prefix, old_r, sizeof prefix - 1);
    assert_ok(ca_taint(e->st, prefix, "test:unit", full));
    assert_string_equal(full, old_r);
    assert_state(e->st, old_r, "tainted");
    assert_refused(e, ca_taint(e->st, old_r, "t", NULL), MID_E_STATE, "already tainted");
    assert_ok(ca_chain_tainted(e->st, old_i, &tainted));
    assert_int_equal(tainted, 1); /* chained to a tainted root */
    assert_ok(ca_chain_tainted(e->st, p.intermediate_id, &tainted));
    assert_int_equal(tainted, 0);
    assert_int_equal(bundle_roots(e->c), 2); /* a tainted root stays trusted until revoked */
    assert_int_equal(verify_svid(e, s1), X509_V_OK);
    /* a tainted root is not retired automatically */
    size_t n = 0;
    assert_ok(ca_retire_expired(e->st, ca_svid_not_after(s1) + CA_RETIRE_GRACE + 1, "t", &n));
    assert_int_equal(n, 1); /* only the old intermediate */
    assert_state(e->st, old_r, "tainted");

    assert_ok(ca_revoke(e->st, old_r, "test:unit", full));
    assert_state(e->st, old_r, "revoked");
    assert_int_equal(bundle_roots(e->c), 1);
    assert_int_not_equal(verify_svid(e, s1), X509_V_OK); /* peers refuse it now */
    assert_int_equal(verify_svid(e, s2), X509_V_OK);
    assert_refused(e, ca_revoke(e->st, old_r, "t", NULL), MID_E_STATE, "already revoked");
    assert_refused(e, ca_taint(e->st, old_r, "t", NULL), MID_E_STATE, "is revoked");
    assert_refused(e, ca_activate(e->st, e->dir, old_r, NULL, "t"), MID_E_STATE, "is revoked");
    assert_int_equal(cafx_count_events(e->st, "ca.taint", "ok"), 1);
    assert_int_equal(cafx_count_events(e->st, "ca.revoke", "ok"), 1);
    ca_svid_free(s1);
    ca_svid_free(s2);
}

/* ---- the tick ------------------------------------------------------------------- */

static void t_tick_intermediate(void **state)
{
    ca_env *e = *state;
    char first[CA_AUTHORITY_ID_MAX], second[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "intermediate", "active", first);
    const int64_t t0 = time_now(), day = 86400;
    ca_tick_action act = CA_TICK_CLOCK_BEHIND;

    /* clock behind the last recorded change: nothing, not an error */
    char *before = snapshot(e->st);
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 - 3600, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_CLOCK_BEHIND);
    char *after = snapshot(e->st);
    assert_string_equal(before, after);
    free(after);
    /* thresholds are checked */
    ca_rotation_policy bad = {.prepare_permille = 700, .activate_permille = 600};
    assert_refused(e, ca_rotation_tick(e->st, e->dir, t0, &bad, "t", &act), MID_E_INVALID,
                   "thresholds");

    assert_ok(ca_rotation_tick(e->st, e->dir, t0, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_NOTHING);
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 44 * day, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_NOTHING);
    after = snapshot(e->st);
    assert_string_equal(before, after);
    free(after);
    free(before);
    /* half of 90 days */
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 46 * day, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_PREPARED_INTERMEDIATE);
    find_id(e->st, "intermediate", "prepared", second);
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 50 * day, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_NOTHING);
    assert_state(e->st, second, "prepared");
    /* two thirds of 90 days: 60 days; a gate can hold it */
    char seen[CA_AUTHORITY_ID_MAX];
    ca_activate_gate no = {.ready = gate_says_no, .ctx = seen};
    ca_rotation_policy gated = {.gate = &no};
    assert_fails_with(ca_rotation_tick(e->st, e->dir, t0 + 61 * day, &gated, "t", &act),
                      MID_E_STATE, "acknowledged");
    assert_state(e->st, second, "prepared");
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 61 * day, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_ACTIVATED);
    assert_state(e->st, second, "active");
    assert_state(e->st, first, "old");
    /* nothing was signed by the first one: the next tick retires it */
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 61 * day + 60, NULL, "t", &act));
    assert_int_equal(act, CA_TICK_NOTHING);
    assert_state(e->st, first, "removed");
    assert_int_equal(cafx_count_events(e->st, "ca.retire", "ok"), 1);
}

static void t_tick_root(void **state)
{
    ca_env *e = *state;
    char r1[CA_AUTHORITY_ID_MAX], r2[CA_AUTHORITY_ID_MAX];
    find_id(e->st, "root", "active", r1);
    const int64_t t0 = time_now(), day = 86400;
    ca_tick_action act = CA_TICK_NOTHING;
    ca_rotation_policy pol = {.rotate_root = 1};
    /* the intermediate (90 d) rotates on its own schedule first */
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 46 * day, &pol, "t", &act));
    assert_int_equal(act, CA_TICK_PREPARED_INTERMEDIATE);
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 61 * day, &pol, "t", &act));
    assert_int_equal(act, CA_TICK_ACTIVATED);
    /* half of 365 days: a new root, in the bundle before it signs */
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 183 * day, &pol, "t", &act));
    assert_int_equal(act, CA_TICK_PREPARED_ROOT);
    find_id(e->st, "root", "prepared", r2);
    assert_int_equal(bundle_roots(e->c), 2);
    assert_state(e->st, r1, "active");
    /* the active intermediate (from day 46) is past two thirds by day 183: the
     * prepared pair is activated at once, root and all */
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 183 * day + 60, &pol, "t", &act));
    assert_int_equal(act, CA_TICK_ACTIVATED);
    assert_state(e->st, r2, "active");
    assert_state(e->st, r1, "old");
    /* nothing live chains to r1: retired on the next tick */
    assert_ok(ca_rotation_tick(e->st, e->dir, t0 + 183 * day + 120, &pol, "t", &act));
    assert_state(e->st, r1, "removed");
    assert_int_equal(bundle_roots(e->c), 1);
}

int ca_test_rotation(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_intermediate_rotation, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_root_rotation_and_retire, ca_env_setup,
                                        ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_root_cross_signed, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_retire_intermediate_short_ttl, ca_env_setup,
                                        ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_activate_refusals, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_activate_not_yet_valid, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_activate_root_not_in_bundle, ca_env_setup,
                                        ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_ambiguous_prefix, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_prepare_refusals, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_upstream_and_back, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_taint_revoke, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_tick_intermediate, ca_env_setup, ca_env_teardown),
        cmocka_unit_test_setup_teardown(t_tick_root, ca_env_setup, ca_env_teardown),
    };
    return cmocka_run_group_tests_name("ca/rotation", tests, NULL, NULL);
}
