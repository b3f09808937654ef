/* xDS snapshot tests: resource sets, versions, parts, duplicate detection,
 * lookups and reference counting (meshcore/xds_snapshot.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meshcore/xds_snapshot.h"
#include "tests/unit/ads/ads_tests.h"

#define OK(expr) assert_true(mid_is_ok(expr))
#define FAILS(expr, code)                                 \
    do {                                                  \
        mid_result r_ = (expr);                           \
        assert_int_equal(r_.err, (code));                 \
    } while (0)

static const uint8_t *B(const char *s)
{
    return (const uint8_t *)s;
}

static void test_type_names(void **state)
{
    (void)state;
    xds_type t;
    for (int i = 0; i < XDS_TYPE_COUNT; i++) {
        OK(xds_type_from_url(xds_type_url((xds_type)i), &t));
        assert_int_equal(t, i);
        OK(xds_type_from_short(xds_type_short((xds_type)i), &t));
        assert_int_equal(t, i);
    }
    OK(xds_type_from_short("EdS", &t));
    assert_int_equal(t, XDS_EDS);
    assert_string_equal(xds_type_url(XDS_CDS), XDS_TYPE_URL_CDS);
    assert_string_equal(xds_type_short(XDS_RDS), "rds");
    FAILS(xds_type_from_url("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", &t),
          MID_E_INVALID);
    assert_non_null(strstr(mid_errmsg(), "transport_sockets.tls.v3.Secret"));
    FAILS(xds_type_from_url(XDS_TYPE_URL_CDS "x", &t), MID_E_INVALID);
    FAILS(xds_type_from_url("", &t), MID_E_INVALID);
    FAILS(xds_type_from_url(NULL, &t), MID_E_INVALID);
    FAILS(xds_type_from_short("sds", &t), MID_E_INVALID);
    FAILS(xds_type_from_short("", &t), MID_E_INVALID);
}

static void test_resource_version_is_sha256_prefix(void **state)
{
    (void)state;
    xds_rset *r;
    OK(xds_rset_new(&r));
    OK(xds_rset_add(r, "abc", B("abc"), 3));
    OK(xds_rset_add(r, "empty", NULL, 0));
    OK(xds_rset_add(r, "abc2", B("abc"), 3));
    xds_rset_seal(r);
    const xds_resource *a = xds_rset_find(r, "abc");
    assert_non_null(a);
    /* SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223... */
    assert_string_equal(a->version, "ba7816bf8f01cfea");
    assert_int_equal(strlen(a->version), XDS_VERSION_LEN);
    assert_int_equal(a->len, 3);
    assert_memory_equal(a->bytes, "abc", 3);
    /* SHA-256("") = e3b0c44298fc1c149afbf4c8996fb924... */
    assert_string_equal(xds_rset_find(r, "empty")->version, "e3b0c44298fc1c14");
    assert_int_equal(xds_rset_find(r, "empty")->len, 0);
    assert_string_equal(xds_rset_find(r, "abc2")->version, a->version);
    xds_rset_unref(r);
}

static void test_rset_sorted_find_and_errors(void **state)
{
    (void)state;
    xds_rset *r;
    OK(xds_rset_new(&r));
    const char *names[] = {"outbound|80||b", "outbound|80||a", "z", "inbound|8080||", "m"};
    char buf[32];
    for (size_t i = 0; i < 5; i++) {
        snprintf(buf, sizeof buf, "bytes-%zu", i);
        OK(xds_rset_add(r, names[i], B(buf), strlen(buf)));
    }
    /* Unsealed: lookups work through the build index; duplicates rejected. */
    assert_non_null(xds_rset_find(r, "z"));
    assert_null(xds_rset_find(r, "y"));
    FAILS(xds_rset_add(r, "z", B("other"), 5), MID_E_EXISTS);
    assert_non_null(strstr(mid_errmsg(), "\"z\""));
    FAILS(xds_rset_add(r, "", B("x"), 1), MID_E_INVALID);
    FAILS(xds_rset_add(r, NULL, B("x"), 1), MID_E_INVALID);
    FAILS(xds_rset_add(r, "big", B("x"), (size_t)XDS_RESOURCE_MAX + 1), MID_E_TOO_LARGE);
    char *longname = malloc(5000);
    assert_non_null(longname);
    memset(longname, 'n', 4999);
    longname[4999] = '\0';
    FAILS(xds_rset_add(r, longname, B("x"), 1), MID_E_TOO_LARGE);
    free(longname);
    assert_int_equal(xds_rset_count(r), 5);

    xds_rset_seal(r);
    xds_rset_seal(r); /* idempotent */
    FAILS(xds_rset_add(r, "late", B("x"), 1), MID_E_STATE);
    assert_int_equal(xds_rset_count(r), 5);
    for (size_t i = 1; i < 5; i++)
        assert_true(strcmp(xds_rset_at(r, i - 1)->name, xds_rset_at(r, i)->name) < 0);
    assert_null(xds_rset_at(r, 5));
    const xds_resource *b = xds_rset_find(r, "outbound|80||b");
    assert_non_null(b);
    assert_memory_equal(b->bytes, "bytes-0", 7);
    assert_null(xds_rset_find(r, "outbound|80||c"));
    assert_null(xds_rset_find(r, NULL));
    xds_rset_unref(r);
    xds_rset_unref(NULL);
}

static void test_rset_many(void **state)
{
    (void)state;
    xds_rset *r;
    OK(xds_rset_new(&r));
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "c%05d", (i * 7919) % 5000);
        OK(xds_rset_add(r, name, B(name), strlen(name)));
    }
    FAILS(xds_rset_add(r, "c00042", B("x"), 1), MID_E_EXISTS);
    xds_rset_seal(r);
    assert_int_equal(xds_rset_count(r), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "c%05d", i);
        assert_string_equal(xds_rset_at(r, (size_t)i)->name, name);
        assert_ptr_equal(xds_rset_find(r, name), xds_rset_at(r, (size_t)i));
    }
    xds_rset_unref(r);
}

/* A sealed set of name=bytes pairs. */
static xds_rset *mkset(const char *const *kv, size_t n)
{
    xds_rset *r;
    OK(xds_rset_new(&r));
    for (size_t i = 0; i < n; i++) OK(xds_rset_add(r, kv[2 * i], B(kv[2 * i + 1]), strlen(kv[2 * i + 1])));
    xds_rset_seal(r);
    return r;
}

static void test_snapshot_parts_order_find(void **state)
{
    (void)state;
    const char *p1[] = {"b", "B1", "a", "A1"};
    const char *p2[] = {"d", "D1", "c", "C1"};
    xds_rset *s1 = mkset(p1, 2), *s2 = mkset(p2, 2);
    xds_snapshot *s;
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add_set(s, XDS_CDS, s2));
    OK(xds_snapshot_add_set(s, XDS_CDS, s1));
    OK(xds_snapshot_add(s, XDS_CDS, "f", B("F1"), 2));
    OK(xds_snapshot_add(s, XDS_CDS, "e", B("E1"), 2));
    OK(xds_snapshot_add(s, XDS_LDS, "virtualInbound", B("L"), 1));
    /* Not sealed yet: nothing readable. */
    assert_int_equal(xds_snapshot_count(s, XDS_CDS), 0);
    assert_null(xds_snapshot_find(s, XDS_CDS, "a"));
    assert_string_equal(xds_snapshot_version(s, XDS_CDS), "");
    OK(xds_snapshot_seal(s));
    FAILS(xds_snapshot_seal(s), MID_E_STATE);
    FAILS(xds_snapshot_add(s, XDS_CDS, "g", B("G"), 1), MID_E_STATE);
    FAILS(xds_snapshot_add_set(s, XDS_CDS, s1), MID_E_STATE);

    assert_int_equal(xds_snapshot_count(s, XDS_CDS), 6);
    assert_int_equal(xds_snapshot_count(s, XDS_EDS), 0);
    assert_int_equal(xds_snapshot_count(s, XDS_LDS), 1);
    /* Parts in order (each sorted), then own resources sorted. */
    const char *want[] = {"c", "d", "a", "b", "e", "f"};
    for (size_t i = 0; i < 6; i++) assert_string_equal(xds_snapshot_at(s, XDS_CDS, i)->name, want[i]);
    assert_null(xds_snapshot_at(s, XDS_CDS, 6));
    assert_null(xds_snapshot_at(s, XDS_EDS, 0));
    for (size_t i = 0; i < 6; i++) {
        const xds_resource *r = xds_snapshot_find(s, XDS_CDS, want[i]);
        assert_non_null(r);
        assert_ptr_equal(r, xds_snapshot_at(s, XDS_CDS, i));
    }
    assert_memory_equal(xds_snapshot_find(s, XDS_CDS, "e")->bytes, "E1", 2);
    assert_null(xds_snapshot_find(s, XDS_CDS, "virtualInbound"));
    assert_null(xds_snapshot_find(s, XDS_EDS, "a"));
    assert_null(xds_snapshot_find(s, XDS_CDS, "zz"));
    assert_null(xds_snapshot_find(s, XDS_CDS, NULL));
    for (int t = 0; t < XDS_TYPE_COUNT; t++)
        assert_int_equal(strlen(xds_snapshot_version(s, (xds_type)t)), XDS_VERSION_LEN);

    /* The snapshot holds its own references to the shared sets. */
    xds_rset_unref(s1);
    xds_rset_unref(s2);
    assert_string_equal(xds_snapshot_find(s, XDS_CDS, "a")->name, "a");
    xds_snapshot *s_ref = xds_snapshot_ref(s);
    xds_snapshot_unref(s);
    assert_int_equal(xds_snapshot_count(s_ref, XDS_CDS), 6);
    xds_snapshot_unref(s_ref);
    xds_snapshot_unref(NULL);
}

static void test_snapshot_errors(void **state)
{
    (void)state;
    xds_snapshot *s;
    xds_rset *unsealed;
    OK(xds_rset_new(&unsealed));
    OK(xds_rset_add(unsealed, "a", B("x"), 1));
    OK(xds_snapshot_new(&s));
    FAILS(xds_snapshot_add_set(s, XDS_CDS, unsealed), MID_E_STATE);
    FAILS(xds_snapshot_add_set(s, XDS_CDS, NULL), MID_E_STATE);
    FAILS(xds_snapshot_add(s, (xds_type)7, "a", B("x"), 1), MID_E_INVALID);
    FAILS(xds_snapshot_add(s, XDS_CDS, "big", B("x"), (size_t)XDS_RESOURCE_MAX + 1), MID_E_TOO_LARGE);
    OK(xds_snapshot_add(s, XDS_EDS, "a", B("x"), 1));
    FAILS(xds_snapshot_add(s, XDS_EDS, "a", B("y"), 1), MID_E_EXISTS);
    OK(xds_snapshot_add(s, XDS_CDS, "a", B("x"), 1)); /* same name, other type: fine */
    xds_rset_seal(unsealed);
    /* Too many parts. */
    for (int i = 0; i < 64; i++) OK(xds_snapshot_add_set(s, XDS_RDS, unsealed));
    FAILS(xds_snapshot_add_set(s, XDS_RDS, unsealed), MID_E_TOO_LARGE);
    xds_rset_unref(unsealed);
    xds_snapshot_unref(s);
}

static void test_snapshot_duplicates_across_parts(void **state)
{
    (void)state;
    const char *p1[] = {"a", "1", "m", "2", "x", "3"};
    const char *p2[] = {"b", "1", "n", "2"};
    const char *p3[] = {"c", "1", "m", "other"};
    xds_rset *s1 = mkset(p1, 3), *s2 = mkset(p2, 2), *s3 = mkset(p3, 2);
    xds_snapshot *s;

    /* part vs part */
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add_set(s, XDS_RDS, s1));
    OK(xds_snapshot_add_set(s, XDS_RDS, s2));
    OK(xds_snapshot_add_set(s, XDS_RDS, s3));
    FAILS(xds_snapshot_seal(s), MID_E_EXISTS);
    assert_non_null(strstr(mid_errmsg(), "\"m\""));
    assert_non_null(strstr(mid_errmsg(), "rds"));
    xds_snapshot_unref(s);

    /* part vs own */
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add_set(s, XDS_EDS, s2));
    OK(xds_snapshot_add(s, XDS_EDS, "n", B("mine"), 4));
    FAILS(xds_snapshot_seal(s), MID_E_EXISTS);
    assert_non_null(strstr(mid_errmsg(), "\"n\""));
    xds_snapshot_unref(s);

    /* the same set twice */
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add_set(s, XDS_CDS, s2));
    OK(xds_snapshot_add_set(s, XDS_CDS, s2));
    FAILS(xds_snapshot_seal(s), MID_E_EXISTS);
    xds_snapshot_unref(s);

    /* disjoint: fine; the same names in different types are fine */
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add_set(s, XDS_CDS, s1));
    OK(xds_snapshot_add_set(s, XDS_CDS, s2));
    OK(xds_snapshot_add_set(s, XDS_EDS, s3));
    OK(xds_snapshot_add(s, XDS_EDS, "a", B("1"), 1));
    OK(xds_snapshot_seal(s));
    assert_int_equal(xds_snapshot_count(s, XDS_CDS), 5);
    xds_snapshot_unref(s);
    xds_rset_unref(s1);
    xds_rset_unref(s2);
    xds_rset_unref(s3);
}

/* A sealed snapshot with CDS = the given name=bytes pairs, all own. */
static xds_snapshot *mksnap(const char *const *kv, size_t n)
{
    xds_snapshot *s;
    OK(xds_snapshot_new(&s));
    for (size_t i = 0; i < n; i++) OK(xds_snapshot_add(s, XDS_CDS, kv[2 * i], B(kv[2 * i + 1]), strlen(kv[2 * i + 1])));
    OK(xds_snapshot_seal(s));
    return s;
}

static void test_type_versions(void **state)
{
    (void)state;
    const char *base[] = {"a", "1", "b", "2"};
    const char *same_other_order[] = {"b", "2", "a", "1"};
    const char *changed[] = {"a", "1", "b", "3"};
    const char *renamed[] = {"a", "1", "c", "2"};
    const char *fewer[] = {"a", "1"};
    xds_snapshot *s0 = mksnap(base, 2), *s1 = mksnap(same_other_order, 2), *s2 = mksnap(changed, 2),
                 *s3 = mksnap(renamed, 2), *s4 = mksnap(fewer, 1), *e1 = mksnap(NULL, 0),
                 *e2 = mksnap(NULL, 0);
    const char *v0 = xds_snapshot_version(s0, XDS_CDS);
    /* Own resources are sorted, so insertion order does not matter. */
    assert_string_equal(v0, xds_snapshot_version(s1, XDS_CDS));
    assert_string_not_equal(v0, xds_snapshot_version(s2, XDS_CDS));
    assert_string_not_equal(v0, xds_snapshot_version(s3, XDS_CDS));
    assert_string_not_equal(v0, xds_snapshot_version(s4, XDS_CDS));
    assert_string_not_equal(v0, xds_snapshot_version(e1, XDS_CDS));
    /* Empty types agree everywhere; other types unaffected by CDS. */
    assert_string_equal(xds_snapshot_version(e1, XDS_CDS), xds_snapshot_version(e2, XDS_CDS));
    assert_string_equal(xds_snapshot_version(e1, XDS_CDS), xds_snapshot_version(s0, XDS_EDS));
    assert_string_equal(xds_snapshot_version(s0, XDS_LDS), xds_snapshot_version(s2, XDS_LDS));
    /* The same content as a shared part gives the same version. */
    xds_rset *r = mkset(base, 2);
    xds_snapshot *sp;
    OK(xds_snapshot_new(&sp));
    OK(xds_snapshot_add_set(sp, XDS_CDS, r));
    OK(xds_snapshot_seal(sp));
    assert_string_equal(v0, xds_snapshot_version(sp, XDS_CDS));
    /* Length prefixes: name "ab" + version vs name "a" + ... cannot collide;
     * check a boundary shift gives a different version. */
    const char *k1[] = {"ab", "x"};
    const char *k2[] = {"a", "x"};
    xds_snapshot *t1 = mksnap(k1, 1), *t2 = mksnap(k2, 1);
    assert_string_not_equal(xds_snapshot_version(t1, XDS_CDS), xds_snapshot_version(t2, XDS_CDS));
    xds_snapshot *all[] = {s0, s1, s2, s3, s4, e1, e2, sp, t1, t2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) xds_snapshot_unref(all[i]);
    xds_rset_unref(r);
}

/* A sealed set of n names "<prefix>NNN" (bytes = the name). */
static xds_rset *numbered(const char *prefix, size_t n)
{
    xds_rset *r;
    OK(xds_rset_new(&r));
    for (size_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%03zu", prefix, i);
        OK(xds_rset_add(r, name, B(name), strlen(name)));
    }
    xds_rset_seal(r);
    return r;
}

/* Seals a snapshot of type RDS made of the given parts plus own names. */
static mid_result seal_parts(xds_rset *const *parts, size_t np, const char *const *own, size_t no,
                             xds_snapshot **out)
{
    OK(xds_snapshot_new(out));
    for (size_t i = 0; i < np; i++) OK(xds_snapshot_add_set(*out, XDS_RDS, parts[i]));
    for (size_t i = 0; i < no; i++) OK(xds_snapshot_add(*out, XDS_RDS, own[i], B("x"), 1));
    return xds_snapshot_seal(*out);
}

/* The duplicate check looks only between sets, by ranges, lookups and
 * merges: every shape must still find a name given twice. */
static void test_duplicates_between_sets(void **state)
{
    (void)state;
    xds_rset *big = numbered("m", 200), *lo = numbered("a", 5), *hi = numbered("z", 5),
             *mid = numbered("m1", 20), *big2 = numbered("m", 150);
    xds_snapshot *s;
    /* own name found in a much larger part (lookup path), at both ends */
    const char *first[] = {"m000"}, *last[] = {"m199"}, *fresh[] = {"m0005", "n"};
    FAILS(seal_parts(&big, 1, first, 1, &s), MID_E_EXISTS);
    assert_non_null(strstr(mid_errmsg(), "\"m000\""));
    xds_snapshot_unref(s);
    FAILS(seal_parts(&big, 1, last, 1, &s), MID_E_EXISTS);
    xds_snapshot_unref(s);
    OK(seal_parts(&big, 1, fresh, 2, &s));
    assert_int_equal(xds_snapshot_count(s, XDS_RDS), 202);
    xds_snapshot_unref(s);
    /* parts with disjoint ranges, in any order: fine */
    xds_rset *order[] = {hi, big, lo};
    OK(seal_parts(order, 3, NULL, 0, &s));
    assert_int_equal(xds_snapshot_count(s, XDS_RDS), 210);
    xds_snapshot_unref(s);
    /* overlapping ranges without common names ("m1NNN" sorts between "m1.." names of big) */
    xds_rset *ov[] = {lo, big, hi, mid};
    OK(seal_parts(ov, 4, NULL, 0, &s));
    xds_snapshot_unref(s);
    /* overlapping parts sharing names (merge path), not adjacent in order */
    xds_rset *dup[] = {lo, big2, hi, big};
    FAILS(seal_parts(dup, 4, NULL, 0, &s), MID_E_EXISTS);
    xds_snapshot_unref(s);
    /* own resources against the last of several parts */
    const char *zz[] = {"z004"};
    FAILS(seal_parts(order, 3, zz, 1, &s), MID_E_EXISTS);
    xds_snapshot_unref(s);
    xds_rset *all[] = {big, lo, hi, mid, big2};
    for (size_t i = 0; i < 5; i++) xds_rset_unref(all[i]);
}

/* The set view of a snapshot and the versions built from set digests. */
static void test_snapshot_sets_and_part_versions(void **state)
{
    (void)state;
    const char *kv[] = {"a", "1", "b", "2"}, *kv2[] = {"a", "1", "b", "3"}, *own[] = {"c", "x"};
    xds_rset *p = mkset(kv, 2), *same = mkset(kv, 2), *changed = mkset(kv2, 2), *q = numbered("q", 3);
    xds_snapshot *s, *u;
    OK(xds_snapshot_new(&s));
    assert_int_equal(xds_snapshot_set_count(s, XDS_CDS), 0); /* unsealed */
    assert_null(xds_snapshot_set(s, XDS_CDS, 0));
    OK(xds_snapshot_add_set(s, XDS_CDS, p));
    OK(xds_snapshot_add_set(s, XDS_CDS, q));
    OK(xds_snapshot_add(s, XDS_CDS, own[0], B(own[1]), 1));
    OK(xds_snapshot_seal(s));
    assert_int_equal(xds_snapshot_set_count(s, XDS_CDS), 3);
    assert_ptr_equal(xds_snapshot_set(s, XDS_CDS, 0), p);
    assert_ptr_equal(xds_snapshot_set(s, XDS_CDS, 1), q);
    assert_int_equal(xds_rset_count(xds_snapshot_set(s, XDS_CDS, 2)), 1); /* own */
    assert_string_equal(xds_rset_at(xds_snapshot_set(s, XDS_CDS, 2), 0)->name, "c");
    assert_null(xds_snapshot_set(s, XDS_CDS, 3));
    assert_int_equal(xds_snapshot_set_count(s, XDS_EDS), 1); /* just the (empty) own set */
    assert_int_equal(xds_snapshot_set_count(s, XDS_TYPE_COUNT), 0);
    assert_null(xds_snapshot_set(s, XDS_TYPE_COUNT, 0));

    /* another set object with the same content: the same version */
    OK(xds_snapshot_new(&u));
    OK(xds_snapshot_add_set(u, XDS_CDS, same));
    OK(xds_snapshot_add_set(u, XDS_CDS, q));
    OK(xds_snapshot_add(u, XDS_CDS, own[0], B(own[1]), 1));
    OK(xds_snapshot_seal(u));
    assert_string_equal(xds_snapshot_version(s, XDS_CDS), xds_snapshot_version(u, XDS_CDS));
    xds_snapshot_unref(u);
    /* one resource of a shared part changed: another version */
    OK(xds_snapshot_new(&u));
    OK(xds_snapshot_add_set(u, XDS_CDS, changed));
    OK(xds_snapshot_add_set(u, XDS_CDS, q));
    OK(xds_snapshot_add(u, XDS_CDS, own[0], B(own[1]), 1));
    OK(xds_snapshot_seal(u));
    assert_string_not_equal(xds_snapshot_version(s, XDS_CDS), xds_snapshot_version(u, XDS_CDS));
    xds_snapshot_unref(u);
    /* an own resource changed: another version */
    OK(xds_snapshot_new(&u));
    OK(xds_snapshot_add_set(u, XDS_CDS, p));
    OK(xds_snapshot_add_set(u, XDS_CDS, q));
    OK(xds_snapshot_add(u, XDS_CDS, own[0], B("y"), 1));
    OK(xds_snapshot_seal(u));
    assert_string_not_equal(xds_snapshot_version(s, XDS_CDS), xds_snapshot_version(u, XDS_CDS));
    xds_snapshot_unref(u);
    /* the parts in the other order: another version (snapshot order counts) */
    OK(xds_snapshot_new(&u));
    OK(xds_snapshot_add_set(u, XDS_CDS, q));
    OK(xds_snapshot_add_set(u, XDS_CDS, p));
    OK(xds_snapshot_add(u, XDS_CDS, own[0], B(own[1]), 1));
    OK(xds_snapshot_seal(u));
    assert_string_not_equal(xds_snapshot_version(s, XDS_CDS), xds_snapshot_version(u, XDS_CDS));
    xds_snapshot_unref(u);
    xds_snapshot_unref(s);
    xds_rset *all[] = {p, same, changed, q};
    for (size_t i = 0; i < 4; i++) xds_rset_unref(all[i]);
}

typedef struct {
    xds_snapshot *s;
    xds_rset *r;
} refs_arg;

static void *ref_worker(void *p)
{
    refs_arg *a = p;
    for (int i = 0; i < 20000; i++) {
        xds_snapshot *s = xds_snapshot_ref(a->s);
        xds_rset *r = xds_rset_ref(a->r);
        if (!xds_snapshot_find(s, XDS_CDS, "a")) abort();
        xds_rset_unref(r);
        xds_snapshot_unref(s);
    }
    /* Each worker was handed one reference of each and drops it. */
    xds_snapshot_unref(a->s);
    xds_rset_unref(a->r);
    return NULL;
}

static void test_refcount_threads(void **state)
{
    (void)state;
    const char *kv[] = {"a", "1"};
    xds_rset *r = mkset(kv, 1);
    xds_snapshot *s;
    OK(xds_snapshot_new(&s));
    OK(xds_snapshot_add_set(s, XDS_CDS, r));
    OK(xds_snapshot_seal(s));
    pthread_t th[4];
    refs_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (refs_arg){xds_snapshot_ref(s), xds_rset_ref(r)};
        assert_int_equal(pthread_create(&th[i], NULL, ref_worker, &args[i]), 0);
    }
    xds_snapshot_unref(s);
    xds_rset_unref(r);
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
    /* ASan's leak check proves the last unref freed everything. */
}

int run_snapshot_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_resource_version_is_sha256_prefix),
        cmocka_unit_test(test_rset_sorted_find_and_errors),
        cmocka_unit_test(test_rset_many),
        cmocka_unit_test(test_snapshot_parts_order_find),
        cmocka_unit_test(test_snapshot_errors),
        cmocka_unit_test(test_snapshot_duplicates_across_parts),
        cmocka_unit_test(test_type_versions),
        cmocka_unit_test(test_duplicates_between_sets),
        cmocka_unit_test(test_snapshot_sets_and_part_versions),
        cmocka_unit_test(test_refcount_threads),
    };
    return cmocka_run_group_tests_name("xds_snapshot", tests, NULL, NULL);
}
