/* The agent unit test binary: a fake node API server (TLS on 127.0.0.1,
 * with its own throwaway CA) and the agent / cache tests that drive it. */
#ifndef MESHID_TESTS_UNIT_AGENT_AGENT_TESTS_H
#define MESHID_TESTS_UNIT_AGENT_AGENT_TESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "lib/rpc.h"

#define FAKE_TD "test.example"
#define FAKE_AGENT_ID "spiffe://test.example/agent/node1"
#define FAKE_MAX_ENTRIES 16
#define FAKE_MAX_CSRS 1024
#define FAKE_MAX_ROOTS 4

typedef struct fake_entry {
    char id[32];
    char spiffe_id[128];
    char selector[64];  /* one "unix" selector value, e.g. "uid:1000" */
    int64_t ttl;
    char dns[64];       /* "" for none */
    uint64_t revision;
    int fail_code;      /* BatchSign answers this code for the entry (0: sign) */
    int root;           /* the authority that signs its SVIDs (fake_add_root; 0: the CA) */
} fake_entry;

typedef struct fake_server fake_server;

/* Starts the fake server on `loop` (127.0.0.1, port picked). */
fake_server *fake_new(rpc_loop *loop);
void fake_free(fake_server *f); /* after rpc_loop_free */

int fake_port(const fake_server *f);
const char *fake_root_pem(const fake_server *f); /* the trust bundle (PEM) */

/* A join token accepted once. */
void fake_add_token(fake_server *f, const char *token);

/* The entry table; changes are pushed with fake_push. */
fake_entry *fake_entries(fake_server *f, size_t *n);
fake_entry *fake_add_entry(fake_server *f, const char *id, const char *spiffe_id,
                           const char *selector, int64_t ttl);
void fake_remove_entry(fake_server *f, const char *id);
/* Bumps the entries revision and sends the complete state on open streams. */
void fake_push(fake_server *f);

/* Down: every call fails with UNAVAILABLE and open Sync streams are ended. */
void fake_set_down(fake_server *f, bool down);

/* New handshakes get an expired server certificate (the agent's TLS
 * verification fails, as with a server serving an SVID it did not renew in
 * time) or the valid one again; open connections keep theirs. */
void fake_set_tls_expired(fake_server *f, bool expired);

/* Another self-signed root for FAKE_TD (index for fake_entry.root), in the
 * Sync bundle or not; adding it to the bundle bumps the bundle sequence.
 * Changes reach the agent with fake_push. */
int fake_add_root(fake_server *f, bool in_bundle);
void fake_set_root_in_bundle(fake_server *f, int root, bool in_bundle);
uint64_t fake_bundle_sequence(const fake_server *f);
/* The root's authority id (lowercase hex SKI). */
void fake_root_id(const fake_server *f, int root, char *hex, size_t cap);
/* Sync states carry this one tainted authority id from now on (NULL: none). */
void fake_set_tainted(fake_server *f, const char *id);

/* Agent SVID lifetime (seconds) for AttestAgent / RenewAgent. */
void fake_set_agent_ttl(fake_server *f, int64_t ttl);

/* Writes a persisted agent identity for FAKE_AGENT_ID into <data_dir>/agent/
 * (as a previous AttestAgent would have), valid for ttl seconds. */
void fake_seed_identity(fake_server *f, const char *data_dir, int64_t ttl);

/* One denial ReportDenials received (the first FAKE_MAX_DENIALS are kept). */
#define FAKE_MAX_DENIALS 64
typedef struct {
    uint32_t uid, gid, count;
    int32_t pid;
    int64_t time_ms;
    char api[16];
    char reason[256];
    char selectors[256]; /* "type:value" joined by ' ' */
} fake_denial;

/* The denials received, in order (at most FAKE_MAX_DENIALS kept). */
const fake_denial *fake_denials(const fake_server *f, size_t *n);

/* ReportDenials accepts at most `limit` denials per call from now on
 * (answers accepted = min(n, limit)); negative: all (the default). */
void fake_set_denial_accept_limit(fake_server *f, int limit);

typedef struct {
    int attests, attest_refused, renews, batches, signs, syncs_open, syncs_total;
    int reports;         /* ReportDenials calls answered OK */
    int report_failures; /* ReportDenials calls refused (down, no agent cert) */
    int denials;         /* denials accepted, all calls */
    int drop_notes;      /* accepted denials whose reason names dropped ones */
    uint64_t last_bundle_ack, last_rev_ack;
    int acks;
    int sync_reqs;            /* every AgentSyncRequest */
    uint64_t last_sds_ack;    /* sds_bundle_sequence_ack of the last one */
    int sds_ack_above;        /* requests whose sds ack exceeded the bundle ack */
    int unauthenticated; /* calls without a valid agent certificate */
} fake_counts;
const fake_counts *fake_get_counts(const fake_server *f);

/* DER SubjectPublicKeyInfo of every CSR BatchSign received, and every
 * serialised request body received (to search for private keys). */
size_t fake_csr_count(const fake_server *f);
const unsigned char *fake_csr_spki(const fake_server *f, size_t i, size_t *len);
bool fake_requests_contain(const fake_server *f, const unsigned char *needle, size_t len);

/* Runs the loop until pred(arg) is true or timeout_ms passed; returns pred. */
bool run_until(rpc_loop *loop, bool (*pred)(void *), void *arg, int64_t timeout_ms);
/* Runs the loop for ms milliseconds. */
void run_for(rpc_loop *loop, int64_t ms);

char *test_tmpdir(void);
void test_rmtree(const char *dir);

int run_agent_tests(void);

#endif
