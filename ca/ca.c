/* Creating the hierarchy (ca_init), loading the signing authority (ca_open)
 * and the helpers the other ca/ files share. Issuance is in issue.c, the
 * plug-in CA in upstream.c, bundles in bundle.c, audit heads in
 * audit_head.c, the authority lifecycle (prepare, activate, ...) in
 * rotation.c. */
#include "ca/ca.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/ca_int.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "lib/fsutil.h"
#include "lib/timeutil.h"

int ca_state_is_trusted(const char *state)
{
    return state != NULL && strcmp(state, "revoked") != 0 && strcmp(state, "removed") != 0;
}

MID_RESULT ca_keys_dir(const char *data_dir, int create, char *out, size_t cap)
{
    MID_GUARD(fs_join(out, cap, data_dir, "keys"));
    if (create) MID_GUARD(fs_mkdir_p(out, 0700));
    return mid_ok();
}

MID_RESULT ca_authority_details(const store_authority *a, const char *key_desc, int upstream,
                                char **out)
{
    char na[TIME_RFC3339_LEN];
    time_format_rfc3339(a->not_after, na);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", a->id, "kind", a->kind, "key_type",
                          key_desc, "not_after", na, "upstream", upstream);
    MID_ENSURE(o != NULL, MID_E_NOMEM, "cannot build audit details");
    if (a->parent_id != NULL) json_object_set_new(o, "parent_id", json_string(a->parent_id));
    *out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    MID_ENSURE(*out != NULL, MID_E_NOMEM, "cannot build audit details");
    return mid_ok();
}

/* ---- ca_init ------------------------------------------------------------------ */

static mid_result ensure_no_authorities(store *st)
{
    store_authority_row *rows = NULL;
    size_t n = 0;
    MID_GUARD(store_authority_list(st, &rows, &n));
    store_authority_list_free(rows, n);
    MID_ENSURE(n == 0, MID_E_EXISTS,
               "the store already has %zu certificate authorit%s; refusing to create another "
               "hierarchy", n, n == 1 ? "y" : "ies");
    return mid_ok();
}

void ca_new_authority_clear(ca_new_authority *a, int remove_key)
{
    if (remove_key && a->key_written) (void)unlink(a->key_path);
    EVP_PKEY_free(a->key);
    X509_free(a->cert);
    free(a->pem);
    memset(a, 0, sizeof *a);
}

MID_RESULT ca_new_authority_save(ca_new_authority *a, const char *data_dir)
{
    char dir[4096], name[CA_KEY_ID_HEX_MAX + 8];
    MID_GUARD(ca_x509_key_id_hex(a->cert, a->id));
    MID_GUARD(ca_keys_dir(data_dir, 1, dir, sizeof dir));
    snprintf(name, sizeof name, "%s.key", a->id);
    snprintf(a->key_ref, sizeof a->key_ref, "keys/%s", name);
    MID_GUARD(fs_join(a->key_path, sizeof a->key_path, dir, name));
    MID_GUARD(ca_key_save(a->key_path, a->key));
    a->key_written = 1;
    MID_GUARD(ca_x509_append_pem(a->cert, &a->pem));
    return mid_ok();
}

/* A stored authority row and its audit event, with the text they point to. */
typedef struct {
    store_authority row;
    store_audit_event ev;
    char *details;
    char desc[64], serial[CA_KEY_ID_HEX_MAX], sid[sizeof "spiffe://" + SPIFFE_TD_MAX];
} authority_record;

static mid_result prepare_record(authority_record *rec, const ca_new_authority *a, const char *kind,
                                 const char *td, const char *parent_id, const char *actor)
{
    int64_t nb = 0, na = 0;
    MID_GUARD(ca_x509_validity(a->cert, &nb, &na));
    MID_GUARD(ca_x509_serial_hex(a->cert, rec->serial, sizeof rec->serial));
    ca_key_describe(a->key, rec->desc, sizeof rec->desc);
    snprintf(rec->sid, sizeof rec->sid, "spiffe://%s", td);
    rec->row = (store_authority){
        .id = a->id, .kind = kind, .state = "active", .trust_domain = td,
        .parent_id = parent_id, .cert_pem = a->pem, .chain_pem = "", .key_ref = a->key_ref,
        .not_before = nb, .not_after = na, .upstream = 0, .created_at = time_now(),
    };
    MID_GUARD(ca_authority_details(&rec->row, rec->desc, 0, &rec->details));
    rec->ev = (store_audit_event){
        .actor = actor, .event = "ca.init", .spiffe_id = rec->sid, .serial = rec->serial,
        .outcome = "ok", .reason = strcmp(kind, "root") == 0 ? "created root authority"
                                                               : "created intermediate authority",
        .details = rec->details,
    };
    return mid_ok();
}

/* Records root and intermediate in one transaction: both or neither. */
static mid_result record_hierarchy(store *st, const ca_new_authority *root,
                                   const ca_new_authority *inter, const char *td, const char *actor)
{
    mid_result r = MID_OK_RESULT;
    authority_record rec[2] = {0};
    MID_TRY(r, prepare_record(&rec[0], root, "root", td, NULL, actor));
    MID_TRY(r, prepare_record(&rec[1], inter, "intermediate", td, root->id, actor));
    store_authority rows[2] = {rec[0].row, rec[1].row};
    store_audit_event evs[2] = {rec[0].ev, rec[1].ev};
    MID_TRY(r, store_authority_put_all(st, rows, evs, 2));
out:
    free(rec[0].details);
    free(rec[1].details);
    return r;
}

static mid_result resolve_ttl(int64_t ttl, int64_t dflt, const char *what, int64_t *out)
{
    MID_ENSURE(ttl >= 0, MID_E_INVALID, "%s lifetime must not be negative", what);
    MID_ENSURE(ttl <= 100LL * 366 * 86400, MID_E_INVALID, "%s lifetime is over 100 years", what);
    *out = ttl == 0 ? dflt : ttl;
    return mid_ok();
}

MID_RESULT ca_init(store *st, const char *data_dir, const ca_init_opts *o)
{
    mid_result r = MID_OK_RESULT;
    ca_new_authority root = {0}, inter = {0};
    char td[SPIFFE_TD_MAX + 1];
    int64_t root_ttl = 0, inter_ttl = 0;
    MID_CHECK(r, st != NULL && data_dir != NULL && o != NULL, MID_E_INVALID, "missing arguments");
    MID_TRY(r, spiffe_trust_domain_parse(o->trust_domain, td));
    ca_key_type kt = o->key_type == 0 ? CA_KEY_EC_P256 : o->key_type;
    MID_CHECK(r, kt == CA_KEY_EC_P256 || kt == CA_KEY_RSA_2048, MID_E_INVALID,
              "unknown key type %d", (int)o->key_type);
    MID_TRY(r, resolve_ttl(o->root_ttl, CA_ROOT_TTL_DEFAULT, "root", &root_ttl));
    MID_TRY(r, resolve_ttl(o->intermediate_ttl, CA_INTERMEDIATE_TTL_DEFAULT, "intermediate",
                           &inter_ttl));
    MID_TRY(r, ensure_no_authorities(st));
    const char *actor = o->actor != NULL ? o->actor : "system";

    int64_t now = time_now();
    MID_TRY(r, ca_key_generate(kt, &root.key));
    ca_x509_authority_params rp = {.trust_domain = td, .key = root.key,
                                   .not_before = now - CA_CLOCK_SKEW, .not_after = now + root_ttl};
    MID_TRY(r, ca_x509_build_root(&rp, &root.cert));
    MID_TRY(r, ca_new_authority_save(&root, data_dir));

    MID_TRY(r, ca_key_generate(kt, &inter.key));
    ca_x509_authority_params ip = {.trust_domain = td, .key = inter.key,
                                   .not_before = now - CA_CLOCK_SKEW,
                                   .not_after = now + inter_ttl, /* clamped to the root's */
                                   .issuer = root.cert, .issuer_key = root.key};
    MID_TRY(r, ca_x509_build_intermediate(&ip, &inter.cert));
    MID_TRY(r, ca_new_authority_save(&inter, data_dir));

    MID_TRY(r, record_hierarchy(st, &root, &inter, td, actor));
out:
    /* On failure nothing was recorded: remove the key files written. */
    ca_new_authority_clear(&inter, !mid_is_ok(r));
    ca_new_authority_clear(&root, !mid_is_ok(r));
    return r;
}

/* ---- ca_open ------------------------------------------------------------------ */

MID_RESULT ca_anchors_load(store *st, STACK_OF(X509) **anchors, int64_t *seq)
{
    mid_result r = MID_OK_RESULT;
    store_authority_row *rows = NULL;
    size_t n = 0;
    STACK_OF(X509) *sk = sk_X509_new_null();
    STACK_OF(X509) *one = NULL;
    int64_t newest = 0, dropped = 0;
    MID_CHECK_MEM(r, sk);
    MID_TRY(r, store_authority_list(st, &rows, &n));
    for (size_t i = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        if (a->created_at > newest) newest = a->created_at;
        if (strcmp(a->kind, "root") != 0) continue;
        if (!ca_state_is_trusted(a->state)) {
            dropped++;
            continue;
        }
        MID_TRY(r, ca_x509_stack_from_pem(a->cert_pem, strlen(a->cert_pem), "stored root", &one));
        X509 *x = sk_X509_shift(one);
        sk_X509_pop_free(one, X509_free);
        one = NULL;
        if (sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            MID_CHECK(r, 0, MID_E_NOMEM, "out of memory");
        }
    }
    /* Grows with every new authority (created_at) and with every root
     * leaving the bundle (revoked/removed are final states). */
    if (seq != NULL) *seq = newest + dropped;
    *anchors = sk;
    sk = NULL;
out:
    sk_X509_pop_free(one, X509_free);
    sk_X509_pop_free(sk, X509_free);
    store_authority_list_free(rows, n);
    return r;
}

/* The signer: the active intermediate (rotation.c keeps exactly one; with
 * several, the newest), else the newest active root we hold a key for. */
static const store_authority *pick_signer(const store_authority_row *rows, size_t n)
{
    const store_authority *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const store_authority *a = &rows[i].a;
        if (strcmp(a->state, "active") != 0 || a->key_ref == NULL || a->key_ref[0] == '\0')
            continue;
        int inter = strcmp(a->kind, "intermediate") == 0;
        int best_inter = best != NULL && strcmp(best->kind, "intermediate") == 0;
        if (best == NULL || inter || !best_inter) best = a;
    }
    return best;
}

MID_RESULT ca_key_ref_path(const char *data_dir, const char *key_ref, char *out, size_t cap)
{
    MID_ENSURE(key_ref[0] != '/' && strstr(key_ref, "..") == NULL, MID_E_CORRUPT,
               "stored key reference '%.200s' is not a path inside the data directory", key_ref);
    return fs_join(out, cap, data_dir, key_ref);
}

static mid_result load_signer(ca *c, const store_authority *a, const char *data_dir)
{
    mid_result r = MID_OK_RESULT;
    STACK_OF(X509) *certs = NULL, *verified = NULL;
    char path[4096], td[SPIFFE_TD_MAX + 1];

    MID_TRY(r, spiffe_trust_domain_parse(a->trust_domain, c->trust_domain));
    snprintf(c->authority_id, sizeof c->authority_id, "%s", a->id);
    MID_TRY(r, ca_x509_stack_from_pem(a->cert_pem, strlen(a->cert_pem), "stored authority",
                                      &certs));
    c->cert = sk_X509_shift(certs);
    if (a->chain_pem != NULL && a->chain_pem[0] != '\0')
        MID_TRY(r, ca_x509_stack_from_pem(a->chain_pem, strlen(a->chain_pem), "stored chain",
                                          &c->chain));
    else
        MID_CHECK_MEM(r, c->chain = sk_X509_new_null());
    MID_TRY(r, ca_key_ref_path(data_dir, a->key_ref, path, sizeof path));
    MID_TRY(r, ca_key_load(path, &c->key));
    MID_TRY(r, ca_key_matches_cert(c->key, c->cert, path));
    MID_TRY(r, ca_x509_check_signing_ca(c->cert, "signing authority"));
    mid_result tdr = ca_x509_signing_trust_domain(c->cert, td);
    if (mid_is_ok(tdr))
        MID_CHECK(r, strcmp(td, c->trust_domain) == 0, MID_E_CORRUPT,
                  "signing certificate is for trust domain %s but the store says %s", td,
                  c->trust_domain);
    MID_TRY(r, ca_anchors_load(c->st, &c->anchors, NULL));
    /* Structure only: an expired authority still opens (bundles, audit), and
     * ca_issue refuses with a clear message. */
    MID_TRY(r, ca_x509_verify(c->cert, c->chain, c->anchors, -1, &verified));
    MID_TRY(r, ca_x509_validity(c->cert, &c->sign_not_before, &c->sign_not_after));
    for (int i = 1; i < sk_X509_num(verified); i++) {
        int64_t na = 0;
        MID_TRY(r, ca_x509_validity(sk_X509_value(verified, i), NULL, &na));
        if (na < c->sign_not_after) c->sign_not_after = na;
    }
    MID_TRY(r, ca_x509_issuer_init(&c->issuer, c->cert, c->key));
    MID_TRY(r, ca_x509_append_pem(c->cert, &c->chain_pem));
    for (int i = 0; i < sk_X509_num(c->chain); i++)
        MID_TRY(r, ca_x509_append_pem(sk_X509_value(c->chain, i), &c->chain_pem));
out:
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(verified, X509_free);
    return r;
}

MID_RESULT ca_open(store *st, const char *data_dir, ca **out)
{
    mid_result r = MID_OK_RESULT;
    store_authority_row *rows = NULL;
    size_t n = 0;
    ca *c = NULL;
    MID_CHECK(r, st != NULL && data_dir != NULL && out != NULL, MID_E_INVALID,
              "missing arguments");
    c = calloc(1, sizeof *c);
    MID_CHECK_MEM(r, c);
    c->st = st;
    MID_CHECK(r, pthread_mutex_init(&c->help_mu, NULL) == 0, MID_E_NOMEM, "cannot create a mutex");
    if (pthread_cond_init(&c->help_cv, NULL) != 0) {
        pthread_mutex_destroy(&c->help_mu);
        MID_CHECK(r, 0, MID_E_NOMEM, "cannot create a condition variable");
    }
    c->help_init = 1;
    MID_TRY(r, store_authority_list(st, &rows, &n));
    MID_CHECK(r, n > 0, MID_E_NOT_FOUND,
              "no certificate authority in the store yet (run `meshid ca init`)");
    const store_authority *a = pick_signer(rows, n);
    MID_CHECK(r, a != NULL, MID_E_STATE, "no active signing authority in the store");
    MID_TRY(r, load_signer(c, a, data_dir));
    const char *cross = "";
    for (size_t i = 0; a->parent_id != NULL && i < n; i++)
        if (strcmp(rows[i].a.id, a->parent_id) == 0 && rows[i].a.chain_pem != NULL)
            cross = rows[i].a.chain_pem;
    c->root_cross_pem = strdup(cross);
    MID_CHECK_MEM(r, c->root_cross_pem);
    *out = c;
    c = NULL;
out:
    store_authority_list_free(rows, n);
    ca_close(c);
    return r;
}

void ca_close(ca *c)
{
    if (c == NULL) return;
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    sk_X509_pop_free(c->chain, X509_free);
    sk_X509_pop_free(c->anchors, X509_free);
    ca_x509_issuer_clear(&c->issuer);
    if (c->help_init) {
        pthread_cond_destroy(&c->help_cv);
        pthread_mutex_destroy(&c->help_mu);
    }
    free(c->chain_pem);
    free(c->root_cross_pem);
    free(c);
}

const char *ca_root_cross_pem(const ca *c) { return c->root_cross_pem; }

const char *ca_trust_domain(const ca *c) { return c->trust_domain; }
