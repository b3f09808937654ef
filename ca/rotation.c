/* The authority lifecycle (ca/rotation.h): prepare, activate, taint, revoke,
 * retire and the automatic rotation tick. Every operation reads the whole
 * authorities table once, checks everything against that snapshot, and then
 * writes its transitions with their audit events in one store transaction.
 * Rules and their reasons: docs/ca.md "Rotation". */
#include "ca/rotation.h"

#include <ctype.h>
#include <ftw.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/ca_int.h"
#include "ca/keys.h"
#include "ca/x509.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/timeutil.h"

_Static_assert(CA_AUTHORITY_ID_MAX == CA_KEY_ID_HEX_MAX, "authority id sizes differ");

/* How far the clock may be behind the newest recorded time before lifecycle
 * changes that depend on it are refused (NTP-synced hosts sharing a store). */
#define CLOCK_SLACK 60

#define ID_SHORT 16 /* hex digits shown in messages, as `ca status` does */

/* ---- the authorities snapshot ------------------------------------------------ */

typedef struct {
    store_authority_row *rows;
    size_t n;
} auth_table;

static mid_result table_load(store *st, auth_table *t)
{
    t->rows = NULL;
    t->n = 0;
    return store_authority_list(st, &t->rows, &t->n);
}

static void table_free(auth_table *t)
{
    store_authority_list_free(t->rows, t->n);
    t->rows = NULL;
    t->n = 0;
}

static const store_authority *table_get(const auth_table *t, const char *id)
{
    if (id == NULL) return NULL;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rows[i].a.id, id) == 0) return &t->rows[i].a;
    return NULL;
}

static int is_state(const store_authority *a, const char *state)
{
    return strcmp(a->state, state) == 0;
}

static int is_root(const store_authority *a) { return strcmp(a->kind, "root") == 0; }

/* The newest authority of `kind` in `state` (the table is oldest first). */
static const store_authority *table_find(const auth_table *t, const char *kind, const char *state)
{
    const store_authority *found = NULL;
    for (size_t i = 0; i < t->n; i++) {
        const store_authority *a = &t->rows[i].a;
        if (strcmp(a->kind, kind) == 0 && is_state(a, state)) found = a;
    }
    return found;
}

/* The first 16 hex digits of an id, for messages. */
static const char *short_id(const char *id, char buf[ID_SHORT + 1])
{
    snprintf(buf, ID_SHORT + 1, "%s", id);
    return buf;
}

static mid_result resolve_in(const auth_table *t, const char *id, const store_authority **out)
{
    char want[CA_AUTHORITY_ID_MAX];
    size_t len = id != NULL ? strlen(id) : 0;
    MID_ENSURE(len >= 1 && len < sizeof want, MID_E_INVALID,
               "authority id must be 1 to 128 hex digits");
    for (size_t i = 0; i < len; i++) {
        MID_ENSURE(isxdigit((unsigned char)id[i]), MID_E_INVALID,
                   "authority id '%.140s' is not hexadecimal", id);
        want[i] = (char)tolower((unsigned char)id[i]);
    }
    want[len] = '\0';
    const store_authority *exact = table_get(t, want);
    if (exact != NULL) {
        *out = exact;
        return mid_ok();
    }
    const store_authority *match = NULL;
    size_t hits = 0;
    char names[512] = "";
    for (size_t i = 0; i < t->n; i++) {
        const store_authority *a = &t->rows[i].a;
        if (strncmp(a->id, want, len) != 0) continue;
        char s[ID_SHORT + 1];
        size_t used = strlen(names);
        if (used + 64 < sizeof names)
            snprintf(names + used, sizeof names - used, "%s%s (%s %s)", hits ? ", " : "",
                     short_id(a->id, s), a->kind, a->state);
        match = a;
        hits++;
    }
    MID_ENSURE(hits > 0, MID_E_NOT_FOUND, "no authority with id %s (see meshid ca status)", want);
    MID_ENSURE(hits == 1, MID_E_INVALID,
               "authority id prefix %s is ambiguous: it matches %zu authorities: %s; give more "
               "digits", want, hits, names);
    *out = match;
    return mid_ok();
}

/* The first certificate of a stored PEM; caller frees. */
static mid_result stored_cert(const store_authority *a, X509 **out)
{
    STACK_OF(X509) *sk = NULL;
    MID_GUARD(ca_x509_stack_from_pem(a->cert_pem, strlen(a->cert_pem), "stored authority", &sk));
    *out = sk_X509_shift(sk);
    sk_X509_pop_free(sk, X509_free);
    return mid_ok();
}

/* Loads an authority's key file and checks it is the certificate's key. */
static mid_result load_authority_key(const store_authority *a, const char *data_dir, X509 *cert,
                                     EVP_PKEY **out)
{
    char path[4096], what[4300], s[ID_SHORT + 1];
    MID_ENSURE(a->key_ref != NULL && a->key_ref[0] != '\0', MID_E_STATE,
               "%s %s is held by an upstream CA: its key is not here", a->kind,
               short_id(a->id, s));
    MID_GUARD(ca_key_ref_path(data_dir, a->key_ref, path, sizeof path));
    mid_result r = ca_key_load(path, out);
    if (!mid_is_ok(r)) {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", mid_errmsg());
        return mid_fail(r.err, __FILE__, __LINE__, "key of %s %s: %s", a->kind,
                        short_id(a->id, s), saved);
    }
    snprintf(what, sizeof what, "key file %s and the certificate of %s %s", path, a->kind,
             short_id(a->id, s));
    r = ca_key_matches_cert(*out, cert, what);
    if (!mid_is_ok(r)) {
        EVP_PKEY_free(*out);
        *out = NULL;
    }
    return r;
}

/* Live SVIDs signed by `a` and, for a root, by every intermediate under it,
 * counted as live when notAfter > at. */
static mid_result live_chained(store *st, const auth_table *t, const store_authority *a,
                               int64_t at, int64_t *out)
{
    int64_t total = 0, n = 0;
    MID_GUARD(store_cert_count_live(st, a->id, at, &n));
    total += n;
    if (is_root(a)) {
        for (size_t i = 0; i < t->n; i++) {
            const store_authority *c = &t->rows[i].a;
            if (c->parent_id == NULL || strcmp(c->parent_id, a->id) != 0 || c == a) continue;
            MID_GUARD(store_cert_count_live(st, c->id, at, &n));
            total += n;
        }
    }
    *out = total;
    return mid_ok();
}

/* Refuses time-derived changes when the clock is behind the newest time the
 * store recorded (authority created_at, the newest audit event). */
static mid_result clock_check(store *st, const auth_table *t, int64_t now)
{
    int64_t mark = 0, seq = 0;
    uint8_t hash[STORE_HASH_LEN];
    for (size_t i = 0; i < t->n; i++)
        if (t->rows[i].a.created_at > mark) mark = t->rows[i].a.created_at;
    MID_GUARD(store_audit_head(st, &seq, hash));
    if (seq > 0) {
        store_audit_row row = {0};
        MID_GUARD(store_audit_get(st, seq, &row));
        if (row.ev.ts_ms / 1000 > mark) mark = row.ev.ts_ms / 1000;
        store_audit_row_clear(&row);
    }
    if (now + CLOCK_SLACK >= mark) return mid_ok();
    char a[TIME_RFC3339_LEN], b[TIME_RFC3339_LEN];
    time_format_rfc3339(now, a);
    time_format_rfc3339(mark, b);
    MID_BAIL(MID_E_STATE,
             "the clock (%s) is behind the last recorded change (%s): it went backwards, so no "
             "authority state is changed from it; fix the clock and retry", a, b);
}

/* created_at for new rows: now, but always after every existing row, so the
 * bundle's spiffe_sequence grows with each new root. */
static int64_t next_created_at(const auth_table *t)
{
    int64_t at = time_now();
    for (size_t i = 0; i < t->n; i++)
        if (t->rows[i].a.created_at >= at) at = t->rows[i].a.created_at + 1;
    return at;
}

/* ---- audit events -------------------------------------------------------------- */

/* One lifecycle audit event and the text it points to. */
typedef struct {
    store_audit_event ev;
    char *details;
    char reason[256];
    char serial[CA_KEY_ID_HEX_MAX];
    char sid[sizeof "spiffe://" + SPIFFE_TD_MAX];
} lc_event;

static void lc_event_clear(lc_event *e)
{
    free(e->details);
    e->details = NULL;
}

/* Fills `e` for authority `a` moving from -> to. `extra` (may be NULL) is a
 * JSON object merged into the details; it is not consumed. */
__attribute__((format(printf, 8, 9))) static mid_result
lc_event_make(lc_event *e, const char *event, const char *actor, const store_authority *a,
              const char *from, const char *to, json_t *extra, const char *fmt, ...)
{
    X509 *cert = NULL;
    MID_GUARD(stored_cert(a, &cert));
    mid_result r = ca_x509_serial_hex(cert, e->serial, sizeof e->serial);
    X509_free(cert);
    MID_GUARD(r);
    snprintf(e->sid, sizeof e->sid, "spiffe://%s", a->trust_domain);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->reason, sizeof e->reason, fmt, ap);
    va_end(ap);
    char na[TIME_RFC3339_LEN];
    time_format_rfc3339(a->not_after, na);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "id", a->id, "kind", a->kind, "from",
                          from, "to", to, "not_after", na, "upstream", a->upstream);
    MID_ENSURE(o != NULL, MID_E_NOMEM, "cannot build audit details");
    if (a->parent_id != NULL) json_object_set_new(o, "parent_id", json_string(a->parent_id));
    if (extra != NULL) json_object_update(o, extra);
    e->details = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    MID_ENSURE(e->details != NULL, MID_E_NOMEM, "cannot build audit details");
    e->ev = (store_audit_event){
        .actor = actor != NULL ? actor : "system", .event = event, .spiffe_id = e->sid,
        .serial = e->serial, .outcome = "ok", .reason = e->reason, .details = e->details,
    };
    return mid_ok();
}

/* ---- prepare ------------------------------------------------------------------- */

/* The signer and its root; MID_E_STATE unless both are active. */
static mid_result active_pair(const auth_table *t, const store_authority **inter,
                              const store_authority **root)
{
    char s[ID_SHORT + 1];
    *inter = table_find(t, "intermediate", "active");
    MID_ENSURE(*inter != NULL, MID_E_STATE, "no active intermediate (signing) authority");
    *root = table_get(t, (*inter)->parent_id);
    MID_ENSURE(*root != NULL && is_root(*root) && is_state(*root, "active"), MID_E_STATE,
               "the active intermediate %s does not chain to an active root",
               short_id((*inter)->id, s));
    return mid_ok();
}

static ca_key_type key_type_of(const store_authority *a, ca_key_type want)
{
    if (want != 0) return want;
    X509 *cert = NULL;
    ca_key_type kt = CA_KEY_EC_P256;
    if (!mid_is_ok(stored_cert(a, &cert))) {
        mid_errclear();
        return kt;
    }
    char desc[64];
    ca_key_describe(X509_get0_pubkey(cert), desc, sizeof desc);
    if (!mid_is_ok(ca_key_type_parse(desc, &kt))) {
        mid_errclear();
        kt = CA_KEY_EC_P256;
    }
    X509_free(cert);
    return kt;
}

static mid_result check_ttl(int64_t ttl, const char *what)
{
    MID_ENSURE(ttl >= 0, MID_E_INVALID, "%s lifetime must not be negative", what);
    MID_ENSURE(ttl <= 100LL * 366 * 86400, MID_E_INVALID, "%s lifetime is over 100 years", what);
    return mid_ok();
}

/* An intermediate adopted from a plug-in CA directory: the rows
 * ca_init_upstream recorded in a scratch store (root with key_ref "", the
 * intermediate whose key_ref is replaced) and the intermediate's key. */
typedef struct {
    auth_table t;
    const store_authority *root, *inter; /* point into t */
    EVP_PKEY *key;
} adopted;

static void adopted_clear(adopted *u)
{
    table_free(&u->t);
    EVP_PKEY_free(u->key);
    memset(u, 0, sizeof *u);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Runs ca_init_upstream (every check it makes, unchanged) against a scratch
 * store in a private directory under data_dir, and takes what it recorded.
 * The scratch directory is removed whatever happens. */
static mid_result adopt_upstream(const char *data_dir, const char *dir, adopted *u)
{
    mid_result r = MID_OK_RESULT;
    char tmp[4096], db[4200], path[4400];
    store *scratch = NULL;
    int made = 0;
    MID_CHECK(r, snprintf(tmp, sizeof tmp, "%s/.upstream-XXXXXX", data_dir) < (int)sizeof tmp,
              MID_E_INVALID, "data directory path too long");
    MID_CHECK(r, mkdtemp(tmp) != NULL, MID_E_IO, "cannot create a scratch directory in %s",
              data_dir);
    made = 1;
    snprintf(db, sizeof db, "%s/meshid.db", tmp);
    MID_TRY(r, store_open(db, NULL, &scratch));
    MID_TRY(r, ca_init_upstream(scratch, tmp, dir, "system"));
    MID_TRY(r, table_load(scratch, &u->t));
    u->root = table_find(&u->t, "root", "active");
    u->inter = table_find(&u->t, "intermediate", "active");
    MID_CHECK(r, u->root != NULL && u->inter != NULL, MID_E_INTERNAL,
              "upstream adoption recorded no root and intermediate");
    snprintf(path, sizeof path, "%s/%s", tmp, u->inter->key_ref);
    MID_TRY(r, ca_key_load(path, &u->key));
out:
    store_close(scratch);
    if (made) (void)nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return r;
}

#define PREPARE_ROWS_MAX STORE_PUT_ALL_MAX

/* The rows and events one prepare writes, with what they point to. */
typedef struct {
    store_authority rows[PREPARE_ROWS_MAX];
    lc_event evs[PREPARE_ROWS_MAX];
    const char *from[PREPARE_ROWS_MAX]; /* the state read; NULL for a new authority */
    size_t n;
} change_set;

static void change_set_clear(change_set *cs)
{
    for (size_t i = 0; i < cs->n; i++) lc_event_clear(&cs->evs[i]);
    cs->n = 0;
}

static mid_result change_set_room(const change_set *cs)
{
    MID_ENSURE(cs->n < PREPARE_ROWS_MAX, MID_E_TOO_LARGE,
               "more than %d authorities would change in one transaction; run `meshid ca "
               "status` and retire or revoke some first", PREPARE_ROWS_MAX);
    return mid_ok();
}

/* Adds `a` moving to `to` (row copied with the new state; strings borrowed). */
__attribute__((format(printf, 6, 7))) static mid_result
change_add(change_set *cs, const char *event, const char *actor, const store_authority *a,
           const char *to, const char *fmt, ...)
{
    MID_GUARD(change_set_room(cs));
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    MID_GUARD(lc_event_make(&cs->evs[cs->n], event, actor, a, a->state, to, NULL, "%s", reason));
    cs->rows[cs->n] = *a;
    cs->rows[cs->n].state = to;
    cs->from[cs->n] = a->state;
    cs->n++;
    return mid_ok();
}

/* Adds a new authority (state prepared) with its ca.prepare event. */
static mid_result change_add_new(change_set *cs, const char *actor, const store_authority *a,
                                 const char *key_desc, const char *reason)
{
    MID_GUARD(change_set_room(cs));
    lc_event *e = &cs->evs[cs->n];
    json_t *extra = json_pack("{s:s}", "key_type", key_desc);
    MID_ENSURE(extra != NULL, MID_E_NOMEM, "out of memory");
    mid_result r = lc_event_make(e, "ca.prepare", actor, a, "none", a->state, extra, "%s", reason);
    json_decref(extra);
    MID_GUARD(r);
    cs->rows[cs->n] = *a;
    cs->from[cs->n] = NULL;
    cs->n++;
    return mid_ok();
}

/* Takes authority `id` out of the set again. */
static void change_set_drop(change_set *cs, const char *id)
{
    for (size_t i = 0; i < cs->n; i++) {
        if (strcmp(cs->rows[i].id, id) != 0) continue;
        lc_event_clear(&cs->evs[i]);
        memmove(&cs->rows[i], &cs->rows[i + 1], (cs->n - i - 1) * sizeof cs->rows[0]);
        memmove(&cs->evs[i], &cs->evs[i + 1], (cs->n - i - 1) * sizeof cs->evs[0]);
        memmove(&cs->from[i], &cs->from[i + 1], (cs->n - i - 1) * sizeof cs->from[0]);
        cs->n--;
        /* the moved events point into themselves: rebuild those pointers */
        for (size_t j = i; j < cs->n; j++) {
            cs->evs[j].ev.reason = cs->evs[j].reason;
            cs->evs[j].ev.serial = cs->evs[j].serial;
            cs->evs[j].ev.spiffe_id = cs->evs[j].sid;
        }
        return;
    }
}

/* Writes the set in one transaction: every state change is checked against
 * the state this process read (a concurrent change by another process makes
 * the whole set fail with MID_E_STATE, nothing written), new authorities are
 * inserted (MID_E_EXISTS if another process recorded the same id). Events:
 * the state changes first, then the new authorities, each in set order. */
static mid_result change_commit(store *st, change_set *cs)
{
    store_authority put[PREPARE_ROWS_MAX];
    store_audit_event put_ev[PREPARE_ROWS_MAX], tr_ev[PREPARE_ROWS_MAX];
    store_authority_transition tr[PREPARE_ROWS_MAX];
    size_t n_put = 0, n_tr = 0;
    for (size_t i = 0; i < cs->n; i++) {
        if (cs->from[i] == NULL) {
            put[n_put] = cs->rows[i];
            put_ev[n_put++] = cs->evs[i].ev;
        } else {
            tr[n_tr] = (store_authority_transition){.id = cs->rows[i].id,
                                                    .from_state = cs->from[i],
                                                    .to_state = cs->rows[i].state};
            tr_ev[n_tr++] = cs->evs[i].ev;
        }
    }
    return store_authority_apply(st, put, put_ev, n_put, tr, tr_ev, n_tr);
}

static mid_result refuse_if_prepared(const auth_table *t, int replace, change_set *cs,
                                     const char *actor)
{
    for (size_t i = 0; i < t->n; i++) {
        const store_authority *a = &t->rows[i].a;
        if (!is_state(a, "prepared")) continue;
        char s[ID_SHORT + 1];
        short_id(a->id, s);
        MID_ENSURE(replace, MID_E_EXISTS,
                   "%s %s is already prepared; activate it (meshid ca activate %s) or pass "
                   "--replace to discard it", a->kind, s, s);
        MID_GUARD(change_add(cs, "ca.retire", actor, a, "removed",
                             "prepared %s replaced before activation", a->kind));
    }
    return mid_ok();
}

static void fill_new_row(store_authority *row, const ca_new_authority *na, const char *kind,
                         const char *td, const char *parent_id, int64_t created_at)
{
    int64_t nb = 0, nafter = 0;
    if (!mid_is_ok(ca_x509_validity(na->cert, &nb, &nafter))) mid_errclear();
    *row = (store_authority){
        .id = na->id, .kind = kind, .state = "prepared", .trust_domain = td,
        .parent_id = parent_id, .cert_pem = na->pem, .chain_pem = "", .key_ref = na->key_ref,
        .not_before = nb, .not_after = nafter, .upstream = 0, .created_at = created_at,
    };
}

MID_RESULT ca_prepare(store *st, const char *data_dir, const ca_prepare_opts *o,
                      ca_prepared *out)
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    change_set cs = {0};
    ca_new_authority root = {0}, inter = {0};
    adopted up = {0};
    X509 *issuer = NULL;
    EVP_PKEY *issuer_key = NULL;
    char up_key_path[4096] = "";
    int up_key_written = 0;
    X509 *old_root = NULL, *cross = NULL;
    EVP_PKEY *old_root_key = NULL;
    char *cross_pem = NULL;
    store_authority root_row, inter_row;
    MID_CHECK(r, st != NULL && data_dir != NULL && o != NULL, MID_E_INVALID, "missing arguments");
    MID_CHECK(r, !(o->new_root && o->upstream_dir != NULL), MID_E_INVALID,
              "a new self-signed root (--root) and an upstream CA (--upstream-dir) exclude each "
              "other");
    MID_TRY(r, check_ttl(o->root_ttl, "root"));
    MID_TRY(r, check_ttl(o->intermediate_ttl, "intermediate"));
    int64_t now = o->now != 0 ? o->now : time_now();
    const char *actor = o->actor != NULL ? o->actor : "system";

    MID_TRY(r, table_load(st, &t));
    MID_CHECK(r, t.n > 0, MID_E_NOT_FOUND,
              "no certificate authority in the store yet (run `meshid ca init`)");
    MID_TRY(r, clock_check(st, &t, now));
    const store_authority *ai = NULL, *ar = NULL;
    MID_TRY(r, active_pair(&t, &ai, &ar));
    MID_TRY(r, refuse_if_prepared(&t, o->replace, &cs, actor));
    const char *td = ai->trust_domain;
    ca_key_type kt = key_type_of(ai, o->key_type);
    int64_t created_at = next_created_at(&t);
    char desc[64];

    if (o->upstream_dir != NULL) {
        MID_TRY(r, adopt_upstream(data_dir, o->upstream_dir, &up));
        char s[ID_SHORT + 1];
        MID_CHECK(r, strcmp(up.inter->trust_domain, td) == 0, MID_E_INVALID,
                  "upstream CA: ca-cert.pem is for trust domain %s, this store is %s",
                  up.inter->trust_domain, td);
        const store_authority *known = table_get(&t, up.inter->id);
        MID_CHECK(r, known == NULL, MID_E_EXISTS,
                  "upstream CA: ca-cert.pem is intermediate %s, already known here (%s)",
                  short_id(up.inter->id, s), known != NULL ? known->state : "");
        const store_authority *kr = table_get(&t, up.root->id);
        root_row = *up.root;
        root_row.state = "prepared";
        root_row.created_at = created_at;
        if (kr != NULL) {
            MID_CHECK(r, !is_state(kr, "tainted") && !is_state(kr, "revoked"), MID_E_STATE,
                      "upstream CA: its root %s is %s here; it cannot be trusted again",
                      short_id(kr->id, s), kr->state);
            if (is_state(kr, "old") || is_state(kr, "removed")) {
                MID_TRY(r, change_add(&cs, "ca.prepare", actor, kr, "prepared",
                                      "upstream root trusted again for a new intermediate"));
                /* A state change keeps the root's created_at; the new
                 * intermediate's comes one later instead, so
                 * spiffe_sequence still grows although a removed root
                 * coming back lowers the dropped count. */
                created_at++;
            }
            /* a prepared root being replaced (--replace) stays: it is this one */
            if (is_state(kr, "prepared")) change_set_drop(&cs, kr->id);
        } else {
            X509 *rc = NULL;
            MID_TRY(r, stored_cert(up.root, &rc));
            ca_key_describe(X509_get0_pubkey(rc), desc, sizeof desc);
            X509_free(rc);
            MID_TRY(r, change_add_new(&cs, actor, &root_row, desc,
                                      "adopted upstream root as trust anchor (prepared)"));
        }
        char dir[4096], name[CA_KEY_ID_HEX_MAX + 8];
        MID_TRY(r, ca_keys_dir(data_dir, 1, dir, sizeof dir));
        snprintf(name, sizeof name, "%s.key", up.inter->id);
        snprintf(inter.key_ref, sizeof inter.key_ref, "keys/%s", name);
        MID_TRY(r, fs_join(up_key_path, sizeof up_key_path, dir, name));
        MID_TRY(r, ca_key_save(up_key_path, up.key));
        up_key_written = 1;
        inter_row = *up.inter;
        inter_row.state = "prepared";
        inter_row.key_ref = inter.key_ref;
        inter_row.created_at = created_at;
        ca_key_describe(up.key, desc, sizeof desc);
        MID_TRY(r, change_add_new(&cs, actor, &inter_row, desc,
                                  "adopted upstream intermediate authority (prepared)"));
        if (out != NULL) {
            snprintf(out->intermediate_id, sizeof out->intermediate_id, "%s", inter_row.id);
            snprintf(out->root_id, sizeof out->root_id, "%s", root_row.id);
            out->root_is_new = kr == NULL || !is_state(kr, "active");
        }
    } else {
        const char *parent = NULL;
        if (o->new_root) {
            int64_t ttl = o->root_ttl;
            if (ttl == 0 && !ar->upstream) ttl = ar->not_after - ar->not_before - CA_CLOCK_SKEW;
            if (ttl <= 0) ttl = CA_ROOT_TTL_DEFAULT;
            MID_TRY(r, ca_key_generate(kt, &root.key));
            ca_x509_authority_params rp = {.trust_domain = td, .key = root.key,
                                           .not_before = now - CA_CLOCK_SKEW,
                                           .not_after = now + ttl};
            MID_TRY(r, ca_x509_build_root(&rp, &root.cert));
            MID_TRY(r, ca_new_authority_save(&root, data_dir));
            MID_CHECK(r, table_get(&t, root.id) == NULL, MID_E_EXISTS,
                      "new root id %s collides with a stored authority", root.id);
            fill_new_row(&root_row, &root, "root", td, NULL, created_at);
            if (ar->key_ref != NULL && ar->key_ref[0] != '\0' && !ar->upstream &&
                ar->not_after > now) {
                /* Cross-sign the new root with the active one, so that a
                 * peer still trusting only the active root verifies
                 * certificates under the new one (docs/ca.md). */
                MID_TRY(r, stored_cert(ar, &old_root));
                MID_TRY(r, load_authority_key(ar, data_dir, old_root, &old_root_key));
                ca_x509_authority_params xp = {.trust_domain = td, .key = root.key,
                                               .not_before = now - CA_CLOCK_SKEW,
                                               .not_after = now + ttl, /* clamped */
                                               .issuer = old_root, .issuer_key = old_root_key};
                MID_TRY(r, ca_x509_build_cross(&xp, &cross));
                MID_TRY(r, ca_x509_append_pem(cross, &cross_pem));
                root_row.chain_pem = cross_pem;
            }
            ca_key_describe(root.key, desc, sizeof desc);
            MID_TRY(r, change_add_new(&cs, actor, &root_row, desc,
                                      "created self-signed root (prepared)"));
            issuer = root.cert;
            issuer_key = root.key;
            X509_up_ref(issuer);
            EVP_PKEY_up_ref(issuer_key);
            parent = root.id;
        } else {
            char s[ID_SHORT + 1];
            MID_CHECK(r, ar->key_ref != NULL && ar->key_ref[0] != '\0', MID_E_STATE,
                      "the active root %s belongs to an upstream CA (its key is not here): "
                      "prepare with --upstream-dir DIR holding a new intermediate from it, or "
                      "with --root for a new self-signed root", short_id(ar->id, s));
            MID_CHECK(r, ar->not_after > now, MID_E_STATE,
                      "the active root %s has expired; prepare a new root (--root)",
                      short_id(ar->id, s));
            MID_TRY(r, stored_cert(ar, &issuer));
            MID_TRY(r, load_authority_key(ar, data_dir, issuer, &issuer_key));
            parent = ar->id;
        }
        int64_t ttl = o->intermediate_ttl != 0 ? o->intermediate_ttl : CA_INTERMEDIATE_TTL_DEFAULT;
        MID_TRY(r, ca_key_generate(kt, &inter.key));
        ca_x509_authority_params ip = {.trust_domain = td, .key = inter.key,
                                       .not_before = now - CA_CLOCK_SKEW,
                                       .not_after = now + ttl, /* clamped to the root's */
                                       .issuer = issuer, .issuer_key = issuer_key};
        MID_TRY(r, ca_x509_build_intermediate(&ip, &inter.cert));
        MID_TRY(r, ca_new_authority_save(&inter, data_dir));
        MID_CHECK(r, table_get(&t, inter.id) == NULL, MID_E_EXISTS,
                  "new intermediate id %s collides with a stored authority", inter.id);
        fill_new_row(&inter_row, &inter, "intermediate", td, parent, created_at);
        ca_key_describe(inter.key, desc, sizeof desc);
        MID_TRY(r, change_add_new(&cs, actor, &inter_row, desc,
                                  "created intermediate authority (prepared)"));
        if (out != NULL) {
            snprintf(out->intermediate_id, sizeof out->intermediate_id, "%s", inter.id);
            snprintf(out->root_id, sizeof out->root_id, "%s", parent);
            out->root_is_new = o->new_root;
        }
    }
    MID_TRY(r, change_commit(st, &cs));
out:
    if (!mid_is_ok(r) && up_key_written) (void)unlink(up_key_path);
    ca_new_authority_clear(&inter, !mid_is_ok(r));
    ca_new_authority_clear(&root, !mid_is_ok(r));
    X509_free(issuer);
    EVP_PKEY_free(issuer_key);
    X509_free(old_root);
    X509_free(cross);
    EVP_PKEY_free(old_root_key);
    free(cross_pem);
    adopted_clear(&up);
    change_set_clear(&cs);
    table_free(&t);
    return r;
}

/* ---- activate ------------------------------------------------------------------ */

static mid_result check_valid_at(const store_authority *a, X509 *cert, int64_t now)
{
    int64_t nb = 0, na = 0;
    char s[ID_SHORT + 1], when[TIME_RFC3339_LEN];
    MID_GUARD(ca_x509_validity(cert, &nb, &na));
    short_id(a->id, s);
    if (nb > now) {
        time_format_rfc3339(nb, when);
        MID_BAIL(MID_E_STATE, "%s %s is not valid before %s", a->kind, s, when);
    }
    if (na <= now) {
        time_format_rfc3339(na, when);
        MID_BAIL(MID_E_STATE, "%s %s expired at %s", a->kind, s, when);
    }
    return mid_ok();
}

/* The intermediate an activation of `c` means: c itself, or for a prepared
 * root the one prepared intermediate under it. */
static mid_result activation_target(const auth_table *t, const store_authority *c,
                                    const store_authority **inter)
{
    char s[ID_SHORT + 1];
    short_id(c->id, s);
    if (is_state(c, "active")) MID_BAIL(MID_E_STATE, "%s %s is already active", c->kind, s);
    MID_ENSURE(is_state(c, "prepared"), MID_E_STATE,
               "%s %s is %s; only a prepared authority can be activated (meshid ca prepare)",
               c->kind, s, c->state);
    if (!is_root(c)) {
        *inter = c;
        return mid_ok();
    }
    const store_authority *found = NULL;
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        const store_authority *a = &t->rows[i].a;
        if (!is_root(a) && is_state(a, "prepared") && a->parent_id != NULL &&
            strcmp(a->parent_id, c->id) == 0) {
            found = a;
            n++;
        }
    }
    MID_ENSURE(n > 0, MID_E_STATE,
               "root %s has no prepared intermediate under it to sign with (meshid ca prepare "
               "--root)", s);
    MID_ENSURE(n == 1, MID_E_INVALID,
               "root %s has %zu prepared intermediates; activate one of them by its id", s, n);
    *inter = found;
    return mid_ok();
}

/* Loads and checks everything the candidate pair needs to sign. */
static mid_result check_candidate(const store_authority *inter, const store_authority *root,
                                  const char *data_dir, int64_t now)
{
    mid_result r = MID_OK_RESULT;
    X509 *icert = NULL, *rcert = NULL;
    EVP_PKEY *ikey = NULL, *rkey = NULL;
    STACK_OF(X509) *chain = NULL, *anchors = NULL;
    char s[ID_SHORT + 1], td[SPIFFE_TD_MAX + 1];
    MID_TRY(r, stored_cert(inter, &icert));
    MID_TRY(r, stored_cert(root, &rcert));
    MID_TRY(r, load_authority_key(inter, data_dir, icert, &ikey));
    if (root->key_ref != NULL && root->key_ref[0] != '\0')
        MID_TRY(r, load_authority_key(root, data_dir, rcert, &rkey));
    MID_TRY(r, ca_x509_check_signing_ca(icert, "intermediate"));
    MID_TRY(r, ca_x509_signing_trust_domain(icert, td));
    MID_CHECK(r, strcmp(td, inter->trust_domain) == 0, MID_E_CORRUPT,
              "intermediate %s is for trust domain %s but the store says %s",
              short_id(inter->id, s), td, inter->trust_domain);
    MID_TRY(r, check_valid_at(inter, icert, now));
    MID_TRY(r, check_valid_at(root, rcert, now));
    if (inter->chain_pem != NULL && inter->chain_pem[0] != '\0')
        MID_TRY(r, ca_x509_stack_from_pem(inter->chain_pem, strlen(inter->chain_pem),
                                          "stored chain", &chain));
    MID_CHECK_MEM(r, anchors = sk_X509_new_null());
    MID_CHECK(r, sk_X509_push(anchors, rcert) > 0, MID_E_NOMEM, "out of memory");
    rcert = NULL; /* owned by anchors now */
    MID_TRY(r, ca_x509_verify(icert, chain, anchors, now, NULL));
out:
    X509_free(icert);
    X509_free(rcert);
    EVP_PKEY_free(ikey);
    EVP_PKEY_free(rkey);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(anchors, X509_free);
    return r;
}

MID_RESULT ca_activate_at(store *st, const char *data_dir, const char *id,
                          const ca_activate_gate *gate, const char *actor, int64_t now,
                          char activated[CA_AUTHORITY_ID_MAX])
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    change_set cs = {0};
    char s[ID_SHORT + 1], rs[ID_SHORT + 1];
    MID_CHECK(r, st != NULL && data_dir != NULL, MID_E_INVALID, "missing arguments");
    if (actor == NULL) actor = "system";
    MID_TRY(r, table_load(st, &t));
    const store_authority *c = NULL, *inter = NULL;
    MID_TRY(r, resolve_in(&t, id, &c));
    MID_TRY(r, activation_target(&t, c, &inter));
    short_id(inter->id, s);
    const store_authority *root = table_get(&t, inter->parent_id);
    MID_CHECK(r, root != NULL && is_root(root), MID_E_CORRUPT,
              "intermediate %s names no root authority in the store", s);
    short_id(root->id, rs);
    MID_CHECK(r, is_state(root, "prepared") || is_state(root, "active"), MID_E_STATE,
              "the root %s of intermediate %s is %s%s; only an intermediate under a prepared "
              "or active root can be activated", rs, s, root->state,
              ca_state_is_trusted(root->state) ? "" : " (not in the trust bundle)");
    MID_TRY(r, clock_check(st, &t, now));
    MID_TRY(r, check_candidate(inter, root, data_dir, now));
    if (gate != NULL && gate->ready != NULL) MID_TRY(r, gate->ready(gate->ctx, root->id, inter->id));

    int new_root = is_state(root, "prepared");
    MID_TRY(r, change_add(&cs, "ca.activate", actor, inter, "active", "intermediate %s now signs",
                          s));
    if (new_root)
        MID_TRY(r, change_add(&cs, "ca.activate", actor, root, "active",
                              "root %s now anchors the signing chain", rs));
    for (size_t i = 0; i < t.n; i++) {
        const store_authority *a = &t.rows[i].a;
        if (a == inter || a == root || !is_state(a, "active")) continue;
        if (is_root(a) && !new_root) continue;
        MID_TRY(r, change_add(&cs, "ca.activate", actor, a, "old", "superseded by %s %s",
                              a->kind, is_root(a) ? rs : s));
    }
    MID_TRY(r, change_commit(st, &cs));
    if (activated != NULL) snprintf(activated, CA_AUTHORITY_ID_MAX, "%s", inter->id);
out:
    change_set_clear(&cs);
    table_free(&t);
    return r;
}

MID_RESULT ca_activate(store *st, const char *data_dir, const char *id,
                       const ca_activate_gate *gate, const char *actor)
{
    return ca_activate_at(st, data_dir, id, gate, actor, time_now(), NULL);
}

/* ---- taint, revoke ------------------------------------------------------------- */

/* One checked state change (store_authority_apply re-checks `from` in its
 * transaction) with its event. */
static mid_result set_state_audited(store *st, const store_authority *a, const char *event,
                                    const char *to, const char *actor, int64_t live,
                                    const char *reason)
{
    lc_event e = {0};
    json_t *extra = json_pack("{s:I}", "live_svids", (json_int_t)live);
    MID_ENSURE(extra != NULL, MID_E_NOMEM, "out of memory");
    mid_result r = lc_event_make(&e, event, actor, a, a->state, to, extra, "%s", reason);
    json_decref(extra);
    store_authority_transition tr = {.id = a->id, .from_state = a->state, .to_state = to};
    if (mid_is_ok(r)) r = store_authority_apply(st, NULL, NULL, 0, &tr, &e.ev, 1);
    lc_event_clear(&e);
    return r;
}

MID_RESULT ca_taint(store *st, const char *id, const char *actor,
                    char full_id[CA_AUTHORITY_ID_MAX])
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    char s[ID_SHORT + 1];
    MID_CHECK(r, st != NULL, MID_E_INVALID, "missing arguments");
    MID_TRY(r, table_load(st, &t));
    const store_authority *a = NULL;
    MID_TRY(r, resolve_in(&t, id, &a));
    short_id(a->id, s);
    MID_CHECK(r, !is_state(a, "active"), MID_E_STATE,
              "%s %s is the active %s%s: activate a replacement first (meshid ca rotate%s), "
              "then taint it", a->kind, s, a->kind,
              is_root(a) ? "" : " signing authority", is_root(a) ? " --root" : "");
    MID_CHECK(r, !is_state(a, "tainted"), MID_E_STATE, "%s %s is already tainted", a->kind, s);
    MID_CHECK(r, is_state(a, "prepared") || is_state(a, "old"), MID_E_STATE,
              "%s %s is %s; only a prepared or old authority can be tainted", a->kind, s,
              a->state);
    int64_t live = 0;
    MID_TRY(r, live_chained(st, &t, a, time_now(), &live));
    MID_TRY(r, set_state_audited(st, a, "ca.taint", "tainted", actor, live,
                                 "authority marked compromised: every SVID chained to it is "
                                 "to be re-issued"));
    if (full_id != NULL) snprintf(full_id, CA_AUTHORITY_ID_MAX, "%s", a->id);
out:
    table_free(&t);
    return r;
}

MID_RESULT ca_revoke(store *st, const char *id, const char *actor,
                     char full_id[CA_AUTHORITY_ID_MAX])
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    char s[ID_SHORT + 1], ps[ID_SHORT + 1] = "?";
    MID_CHECK(r, st != NULL, MID_E_INVALID, "missing arguments");
    MID_TRY(r, table_load(st, &t));
    const store_authority *a = NULL;
    MID_TRY(r, resolve_in(&t, id, &a));
    short_id(a->id, s);
    if (a->parent_id != NULL) short_id(a->parent_id, ps);
    MID_CHECK(r, is_root(a), MID_E_INVALID,
              "intermediate %s cannot be revoked on its own: peers trust roots, not "
              "intermediates, so they would still accept it; rotate the root (meshid ca rotate "
              "--root), then taint and revoke its root %s", s, ps);
    int64_t live = 0;
    MID_TRY(r, live_chained(st, &t, a, time_now(), &live));
    MID_CHECK(r, !is_state(a, "revoked"), MID_E_STATE, "root %s is already revoked", s);
    MID_CHECK(r, is_state(a, "tainted"), MID_E_STATE,
              "root %s is %s and %lld live SVID%s to it: taint it first (meshid ca taint %s) "
              "so agents re-issue them, then revoke", s, a->state, (long long)live,
              live == 1 ? " chains" : "s chain", s);
    MID_TRY(r, set_state_audited(st, a, "ca.revoke", "revoked", actor, live,
                                 "root removed from the trust bundle: peers refuse every "
                                 "certificate chained to it"));
    if (full_id != NULL) snprintf(full_id, CA_AUTHORITY_ID_MAX, "%s", a->id);
out:
    table_free(&t);
    return r;
}

/* ---- retire -------------------------------------------------------------------- */

/* Whether old authority `a` can go: nothing live chains to it. */
static mid_result retirable(store *st, const auth_table *t, const store_authority *a,
                            int64_t now, int64_t grace, int *yes)
{
    *yes = 0;
    if (is_root(a)) {
        for (size_t i = 0; i < t->n; i++) {
            const store_authority *c = &t->rows[i].a;
            if (c->parent_id != NULL && strcmp(c->parent_id, a->id) == 0 &&
                (is_state(c, "active") || is_state(c, "prepared")))
                return mid_ok();
        }
    }
    int64_t live = 0;
    MID_GUARD(live_chained(st, t, a, now - grace, &live));
    *yes = live == 0;
    return mid_ok();
}

MID_RESULT ca_retire_expired(store *st, int64_t now, const char *actor, size_t *retired)
{
    return ca_retire_expired_grace(st, now, CA_RETIRE_GRACE, actor, retired);
}

MID_RESULT ca_retire_expired_grace(store *st, int64_t now, int64_t grace, const char *actor,
                                   size_t *retired)
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    size_t done = 0;
    MID_CHECK(r, st != NULL, MID_E_INVALID, "missing arguments");
    MID_CHECK(r, grace >= 0, MID_E_INVALID, "the retire grace must not be negative");
    MID_TRY(r, table_load(st, &t));
    MID_TRY(r, clock_check(st, &t, now));
    /* Intermediates first: a root's own test looks at the ones under it. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < t.n; i++) {
            const store_authority *a = &t.rows[i].a;
            if (is_root(a) != (pass == 1) || !is_state(a, "old")) continue;
            int yes = 0;
            MID_TRY(r, retirable(st, &t, a, now, grace, &yes));
            if (!yes) continue;
            MID_TRY(r, set_state_audited(st, a, "ca.retire", "removed", actor, 0,
                                         is_root(a) ? "old root retired: no live SVID chains "
                                                      "to it any more"
                                                    : "old intermediate retired: no live "
                                                      "SVID it signed is left"));
            done++;
        }
    }
out:
    if (retired != NULL) *retired = done;
    table_free(&t);
    return r;
}

/* ---- the rotation tick --------------------------------------------------------- */

/* Whether `a` has passed `permille` thousandths of its lifetime at `now`. */
static int passed(const store_authority *a, int64_t now, int permille)
{
    int64_t life = a->not_after - a->not_before;
    if (life <= 0) return 1;
    return (now - a->not_before) * 1000 >= (int64_t)permille * life;
}

MID_RESULT ca_rotation_tick(store *st, const char *data_dir, int64_t now,
                            const ca_rotation_policy *policy, const char *actor,
                            ca_tick_action *action)
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    ca_rotation_policy none = {0};
    const ca_rotation_policy *p = policy != NULL ? policy : &none;
    int prep = p->prepare_permille != 0 ? p->prepare_permille : CA_ROTATE_PREPARE_PERMILLE;
    int act = p->activate_permille != 0 ? p->activate_permille : CA_ROTATE_ACTIVATE_PERMILLE;
    char s[ID_SHORT + 1];
    if (action != NULL) *action = CA_TICK_NOTHING;
    MID_CHECK(r, st != NULL && data_dir != NULL, MID_E_INVALID, "missing arguments");
    MID_CHECK(r, prep > 0 && prep < act && act < 1000, MID_E_INVALID,
              "rotation thresholds must satisfy 0 < prepare (%d) < activate (%d) < 1000", prep,
              act);
    MID_TRY(r, table_load(st, &t));
    MID_CHECK(r, t.n > 0, MID_E_NOT_FOUND, "no certificate authority in the store yet");
    mid_result cr = clock_check(st, &t, now);
    if (cr.err == MID_E_STATE) {
        LOG_WARN("rotation: %s", mid_errmsg());
        mid_errclear();
        if (action != NULL) *action = CA_TICK_CLOCK_BEHIND;
        goto out;
    }
    MID_TRY(r, cr);
    MID_TRY(r, ca_retire_expired_grace(st, now,
                                       p->retire_grace > 0 ? p->retire_grace : CA_RETIRE_GRACE,
                                       actor, NULL));

    const store_authority *ai = NULL, *ar = NULL;
    MID_TRY(r, active_pair(&t, &ai, &ar));
    const store_authority *pi = table_find(&t, "intermediate", "prepared");
    if (pi != NULL) {
        const store_authority *pr = table_get(&t, pi->parent_id);
        int root_rotation = pr != NULL && is_state(pr, "prepared");
        if (passed(ai, now, act) || (root_rotation && passed(ar, now, act))) {
            MID_TRY(r, ca_activate_at(st, data_dir, pi->id, p->gate, actor, now, NULL));
            LOG_INFO("rotation: activated intermediate %s%s", short_id(pi->id, s),
                     root_rotation ? " and its new root" : "");
            if (action != NULL) *action = CA_TICK_ACTIVATED;
        }
        goto out;
    }
    ca_prepare_opts o = {.key_type = p->key_type, .root_ttl = p->root_ttl,
                         .intermediate_ttl = p->intermediate_ttl, .now = now, .actor = actor};
    if (p->rotate_root && passed(ar, now, prep)) {
        if (ar->upstream) {
            LOG_WARN("rotation: root %s belongs to an upstream CA and cannot be rotated here",
                     short_id(ar->id, s));
        } else {
            o.new_root = 1;
            MID_TRY(r, ca_prepare(st, data_dir, &o, NULL));
            if (action != NULL) *action = CA_TICK_PREPARED_ROOT;
            goto out;
        }
    }
    if (passed(ai, now, prep)) {
        if (ar->key_ref == NULL || ar->key_ref[0] == '\0') {
            LOG_WARN("rotation: intermediate %s is past %d/1000 of its lifetime and its root is "
                     "an upstream CA's: hand over a new one with `meshid ca prepare "
                     "--upstream-dir`", short_id(ai->id, s), prep);
            goto out;
        }
        if (!p->rotate_root && passed(ar, now, act))
            LOG_WARN("rotation: root %s is past %d/1000 of its lifetime; new intermediates are "
                     "cut to its expiry (rotate it: meshid ca rotate --root)",
                     short_id(ar->id, s), act);
        MID_TRY(r, ca_prepare(st, data_dir, &o, NULL));
        if (action != NULL) *action = CA_TICK_PREPARED_INTERMEDIATE;
    }
out:
    table_free(&t);
    return r;
}

/* ---- queries ------------------------------------------------------------------- */

MID_RESULT ca_chain_tainted(store *st, const char *id, int *tainted)
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    MID_CHECK(r, st != NULL && id != NULL && tainted != NULL, MID_E_INVALID, "missing arguments");
    *tainted = 0;
    MID_TRY(r, table_load(st, &t));
    const store_authority *a = table_get(&t, id);
    MID_CHECK(r, a != NULL, MID_E_NOT_FOUND, "no authority with id %.140s", id);
    for (int depth = 0; a != NULL && depth < 16; depth++) {
        if (is_state(a, "tainted") || is_state(a, "revoked")) {
            *tainted = 1;
            break;
        }
        a = table_get(&t, a->parent_id);
    }
out:
    table_free(&t);
    return r;
}

MID_RESULT ca_authority_resolve(store *st, const char *id, char full_id[CA_AUTHORITY_ID_MAX])
{
    mid_result r = MID_OK_RESULT;
    auth_table t = {0};
    MID_CHECK(r, st != NULL && full_id != NULL, MID_E_INVALID, "missing arguments");
    MID_TRY(r, table_load(st, &t));
    const store_authority *a = NULL;
    MID_TRY(r, resolve_in(&t, id, &a));
    snprintf(full_id, CA_AUTHORITY_ID_MAX, "%s", a->id);
out:
    table_free(&t);
    return r;
}

const char *ca_signer_id(const ca *c) { return c->authority_id; }
