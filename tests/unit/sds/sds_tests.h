/* The sds unit test binary: one group per sds concern, run by main.c.
 * To add a group: declare its runner here and call it from main(). */
#ifndef MESHID_TESTS_UNIT_SDS_SDS_TESTS_H
#define MESHID_TESTS_UNIT_SDS_SDS_TESTS_H

/* Each runs its cmocka group and returns the number of failed tests. */
int run_attest_unix_tests(void);

/* sds services (view, secrets, SDS, Workload API). */
int run_view_tests(void);
int run_secrets_tests(void);
int run_sds_service_tests(void);
int run_workload_api_tests(void);

/* Fixtures shared by the sds service tests (defined in test_view.c); they
 * abort the test on failure. */
#include "sds/source.h"
#include "sds/view.h"
typedef struct sdsfx_ca sdsfx_ca;
/* A self-signed EC CA for trust domain `td` (URI SAN spiffe://td). */
sdsfx_ca *sdsfx_ca_new(const char *td);
const char *sdsfx_ca_pem(const sdsfx_ca *ca);
const char *sdsfx_ca_td(const sdsfx_ca *ca);
/* A fresh key and leaf for `spiffe_id` signed by `ca`; malloc()ed PEM. */
void sdsfx_issue(sdsfx_ca *ca, const char *spiffe_id, char **chain_pem, char **key_pem);
void sdsfx_ca_free(sdsfx_ca *ca);
/* A view with a new SVID for `id` (NULL: none) from `own`, own's bundle
 * first and `fed`'s (may be NULL) second. */
sds_view *sdsfx_view(sdsfx_ca *own, const char *id, sdsfx_ca *fed);
/* A fake sds_source: view NULL means "not issued yet" (MID_E_NOT_FOUND). */
typedef struct {
    sds_view *view;
    int deny_attest, deny_view;
    int attests, views, live; /* live: workloads not freed yet */
} sdsfx_source;
extern const sds_source_ops sdsfx_source_ops;
/* Replaces the source's view (takes the reference; NULL allowed). */
void sdsfx_set_view(sdsfx_source *s, sds_view *v);

#endif
