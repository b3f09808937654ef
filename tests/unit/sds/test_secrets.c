/* sds/secrets.c: Secrets per resource name and Workload API responses, each
 * packed and decoded again as a client would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/x509.h>

#include "envoy/config/core/v3/extension.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.pb-c.h"
#include "lib/arena.h"
#include "sds/secrets.h"
#include "tests/unit/sds/sds_tests.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__SPIFFECertValidatorConfig spiffe_cfg;

typedef struct {
    sdsfx_ca *ca, *other;
    sds_view *v;
    arena *a;
} sfx;

static int setup(void **state)
{
    sfx *f = calloc(1, sizeof *f);
    f->ca = sdsfx_ca_new("example.org");
    f->other = sdsfx_ca_new("other.org");
    f->v = sdsfx_view(f->ca, "spiffe://example.org/web", f->other);
    assert_true(mid_is_ok(arena_new(0, &f->a)));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    sfx *f = *state;
    sds_view_unref(f->v);
    sdsfx_ca_free(f->ca);
    sdsfx_ca_free(f->other);
    arena_free(f->a);
    free(f);
    return 0;
}

/* Packs `name` as a client receives it and decodes it again. */
static sds_secret_msg *roundtrip(sfx *f, const char *name)
{
    Google__Protobuf__Any *any;
    assert_true(mid_is_ok(sds_secret_any(f->v, name, f->a, &any)));
    assert_string_equal(any->type_url, SDS_SECRET_TYPE_URL);
    sds_secret_msg *s = envoy__extensions__transport_sockets__tls__v3__secret__unpack(
        arena_allocator(f->a), any->value.len, any->value.data);
    assert_non_null(s);
    assert_string_equal(s->name, name);
    return s;
}

static void assert_pem_bytes(const Envoy__Config__Core__V3__DataSource *d, const char *pem)
{
    assert_non_null(d);
    assert_int_equal(d->specifier_case, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES);
    assert_int_equal(d->inline_bytes.len, strlen(pem));
    assert_memory_equal(d->inline_bytes.data, pem, strlen(pem));
}

static void test_tls_certificate_names(void **state)
{
    sfx *f = *state;
    const sds_svid *svid = sds_view_svid(f->v, 0);
    const char *names[] = {SDS_NAME_DEFAULT, "spiffe://example.org/web"};
    for (size_t i = 0; i < 2; i++) {
        sds_secret_msg *s = roundtrip(f, names[i]);
        assert_int_equal(s->type_case, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
        assert_pem_bytes(s->tls_certificate->certificate_chain, svid->chain_pem);
        assert_pem_bytes(s->tls_certificate->private_key, svid->key_pem);
    }
    sds_digest d1, d2;
    assert_true(mid_is_ok(sds_secret_digest(f->v, "default", &d1)));
    assert_true(mid_is_ok(sds_secret_digest(f->v, "spiffe://example.org/web", &d2)));
    assert_string_equal(d1.hex, d2.hex);
    assert_int_equal(strlen(d1.hex), SDS_DIGEST_HEX);
}

static void test_validation_context_names(void **state)
{
    sfx *f = *state;
    sds_secret_msg *s = roundtrip(f, SDS_NAME_ROOTCA);
    assert_int_equal(s->type_case, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    assert_pem_bytes(s->validation_context->trusted_ca, sds_view_bundle(f->v, 0)->roots_pem);
    assert_null(s->validation_context->custom_validator_config);

    s = roundtrip(f, "spiffe://other.org");
    assert_pem_bytes(s->validation_context->trusted_ca, sds_view_bundle(f->v, 1)->roots_pem);
    s = roundtrip(f, "spiffe://example.org");
    assert_pem_bytes(s->validation_context->trusted_ca, sds_view_bundle(f->v, 0)->roots_pem);

    sds_digest a, b, c;
    assert_true(mid_is_ok(sds_secret_digest(f->v, "ROOTCA", &a)));
    assert_true(mid_is_ok(sds_secret_digest(f->v, "spiffe://example.org", &b)));
    assert_true(mid_is_ok(sds_secret_digest(f->v, "spiffe://other.org", &c)));
    assert_string_equal(a.hex, b.hex);
    assert_string_not_equal(a.hex, c.hex);
}

static void test_all_is_spiffe_validator(void **state)
{
    sfx *f = *state;
    sds_secret_msg *s = roundtrip(f, SDS_NAME_ALL);
    assert_int_equal(s->type_case, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    assert_null(s->validation_context->trusted_ca);
    Envoy__Config__Core__V3__TypedExtensionConfig *ext = s->validation_context->custom_validator_config;
    assert_non_null(ext);
    assert_string_equal(ext->name, "envoy.tls.cert_validator.spiffe");
    assert_string_equal(ext->typed_config->type_url,
                        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig");
    spiffe_cfg *cfg = envoy__extensions__transport_sockets__tls__v3__spiffecert_validator_config__unpack(
        arena_allocator(f->a), ext->typed_config->value.len, ext->typed_config->value.data);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_trust_domains, 2);
    assert_string_equal(cfg->trust_domains[0]->name, "example.org");
    assert_string_equal(cfg->trust_domains[1]->name, "other.org");
    assert_pem_bytes(cfg->trust_domains[1]->trust_bundle, sds_view_bundle(f->v, 1)->roots_pem);
    assert_null(cfg->trust_bundles);
}

static void test_unknown_names(void **state)
{
    sfx *f = *state;
    const char *bad[] = {"", "nope", "spiffe://example.org/db", "spiffe://nope.org",
                         "spiffe://example.org/", "spiffe://", "Default", "rootca", "file-root:system"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sds_digest d;
        sds_secret_msg *s;
        assert_false(mid_is_ok(sds_secret_digest(f->v, bad[i], &d)));
        assert_int_equal(mid_errcode(), MID_E_NOT_FOUND);
        assert_false(mid_is_ok(sds_secret_build(f->v, bad[i], f->a, &s)));
        assert_int_equal(mid_errcode(), MID_E_NOT_FOUND);
    }
    /* a name over the limit */
    char *longname = malloc(SDS_NAME_MAX + 2);
    memset(longname, 'a', SDS_NAME_MAX + 1);
    longname[SDS_NAME_MAX + 1] = '\0';
    sds_digest d;
    assert_false(mid_is_ok(sds_secret_digest(f->v, longname, &d)));
    free(longname);
    /* a view with bundles but no SVID: no "default", ROOTCA still works */
    sds_view *v = sdsfx_view(f->ca, NULL, NULL);
    assert_false(mid_is_ok(sds_secret_digest(v, "default", &d)));
    assert_true(mid_is_ok(sds_secret_digest(v, "ROOTCA", &d)));
    assert_true(mid_is_ok(sds_secret_digest(v, "ALL", &d)));
    sds_view_unref(v);
    /* an empty view serves nothing */
    assert_true(mid_is_ok(sds_view_new(&v)));
    assert_false(mid_is_ok(sds_secret_digest(v, "ROOTCA", &d)));
    assert_false(mid_is_ok(sds_secret_digest(v, "ALL", &d)));
    X509SVIDResponse *r;
    assert_false(mid_is_ok(sds_x509_svid_response(v, f->a, &r)));
    assert_int_equal(mid_errcode(), MID_E_NOT_FOUND);
    sds_view_unref(v);
}

static void test_digests_follow_content(void **state)
{
    sfx *f = *state;
    sds_view *v2 = sdsfx_view(f->ca, "spiffe://example.org/web", f->other); /* new SVID, same bundles */
    sds_digest a, b;
    assert_true(mid_is_ok(sds_secret_digest(f->v, "default", &a)));
    assert_true(mid_is_ok(sds_secret_digest(v2, "default", &b)));
    assert_string_not_equal(a.hex, b.hex);
    const char *same[] = {"ROOTCA", "ALL", "spiffe://other.org"};
    for (size_t i = 0; i < 3; i++) {
        assert_true(mid_is_ok(sds_secret_digest(f->v, same[i], &a)));
        assert_true(mid_is_ok(sds_secret_digest(v2, same[i], &b)));
        assert_string_equal(a.hex, b.hex);
    }
    assert_true(mid_is_ok(sds_x509_bundles_digest(f->v, &a)));
    assert_true(mid_is_ok(sds_x509_bundles_digest(v2, &b)));
    assert_string_equal(a.hex, b.hex);
    assert_true(mid_is_ok(sds_x509_svid_digest(f->v, &a)));
    assert_true(mid_is_ok(sds_x509_svid_digest(v2, &b)));
    assert_string_not_equal(a.hex, b.hex);
    /* without the federated bundle, ALL changes */
    sds_view *v3 = sdsfx_view(f->ca, "spiffe://example.org/web", NULL);
    assert_true(mid_is_ok(sds_secret_digest(f->v, "ALL", &a)));
    assert_true(mid_is_ok(sds_secret_digest(v3, "ALL", &b)));
    assert_string_not_equal(a.hex, b.hex);
    sds_view_unref(v3);
    sds_view_unref(v2);
}

static void test_workload_api_responses(void **state)
{
    sfx *f = *state;
    X509SVIDResponse *r;
    assert_true(mid_is_ok(sds_x509_svid_response(f->v, f->a, &r)));
    size_t n = x509_svidresponse__get_packed_size(r);
    uint8_t *buf = malloc(n);
    x509_svidresponse__pack(r, buf);
    X509SVIDResponse *d = x509_svidresponse__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(d);
    const sds_svid *svid = sds_view_svid(f->v, 0);
    assert_int_equal(d->n_svids, 1);
    assert_string_equal(d->svids[0]->spiffe_id, "spiffe://example.org/web");
    assert_int_equal(d->svids[0]->x509_svid.len, svid->chain_der_len);
    assert_memory_equal(d->svids[0]->x509_svid.data, svid->chain_der, svid->chain_der_len);
    assert_memory_equal(d->svids[0]->x509_svid_key.data, svid->key_der, svid->key_der_len);
    const sds_bundle *own = sds_view_bundle(f->v, 0), *fed = sds_view_bundle(f->v, 1);
    assert_int_equal(d->svids[0]->bundle.len, own->roots_der_len);
    assert_memory_equal(d->svids[0]->bundle.data, own->roots_der, own->roots_der_len);
    assert_int_equal(d->n_federated_bundles, 1);
    assert_string_equal(d->federated_bundles[0]->key, "spiffe://other.org");
    assert_memory_equal(d->federated_bundles[0]->value.data, fed->roots_der, fed->roots_der_len);
    x509_svidresponse__free_unpacked(d, NULL);

    X509BundlesResponse *b;
    assert_true(mid_is_ok(sds_x509_bundles_response(f->v, f->a, &b)));
    assert_int_equal(b->n_bundles, 2);
    assert_string_equal(b->bundles[0]->key, "spiffe://example.org");
    assert_string_equal(b->bundles[1]->key, "spiffe://other.org");
    assert_int_equal(b->bundles[0]->value.len, own->roots_der_len);
}

int run_secrets_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_certificate_names),
        cmocka_unit_test(test_validation_context_names),
        cmocka_unit_test(test_all_is_spiffe_validator),
        cmocka_unit_test(test_unknown_names),
        cmocka_unit_test(test_digests_follow_content),
        cmocka_unit_test(test_workload_api_responses),
    };
    return cmocka_run_group_tests_name("sds_secrets", tests, setup, teardown);
}
