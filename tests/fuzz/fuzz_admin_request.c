/* libFuzzer target for the admin API's request intake (sds/admin_service.c).
 *
 * The bytes are decoded as the runtime decodes a request (rpc_codec_unpack,
 * the server's size limit, an arena with its per-message limit) as every
 * admin request type; then the checks the handlers make before any store
 * work run without a network: CreateJoinToken's TTL and agent SPIFFE ID
 * rules, CreateEntry's limits, entry_validate and trust domain check, and
 * the id checks of GetEntry / DeleteEntry / EvictAgent.
 *
 * Aborts when:
 *   - decoding is not a fixed point or a tight arena changes the verdict
 *     into anything but TOO_LARGE;
 *   - entry_validate accepts an entry that breaks a rule of identity/entry.h
 *     checked here independently: its SPIFFE ID and parent ID parse, share a
 *     trust domain and the SPIFFE ID has a path; 1..64 selectors each valid
 *     on its own and none twice; at most 32 DNS names of at most 253 bytes;
 *     0 <= ttl <= ENTRY_TTL_MAX;
 *   - a valid selector does not survive entry_selector_format and
 *     entry_selector_parse unchanged, or parse and validate disagree;
 *   - an accepted agent SPIFFE ID does not format back to itself.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity/entry.h"
#include "identity/join_token.h"
#include "identity/spiffe_id.h"
#include "lib/arena.h"
#include "lib/log.h"
#include "lib/result.h"
#include "lib/rpc_int.h"
#include "tests/fuzz/fuzz_decode.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/admin_service.h"
#include "storage/store.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define TD "example.org"


int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_OFF);
    fuzz_decode_init();
    return 0;
}

/* ---- decoding: tests/fuzz/fuzz_decode.h -------------------------------------- */



/* ---- the handlers' checks ----------------------------------------------------------- */

/* Parses an ID; NULL when it does not parse. */
static spiffe_id *parse_id(const char *s)
{
    spiffe_id *id = NULL;
    mid_result r = spiffe_id_parse(s, strlen(s), &id);
    if (!mid_is_ok(r)) {
        CHECK(id == NULL && (r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE));
        return NULL;
    }
    CHECK(id != NULL && strcmp(spiffe_id_str(id), s) == 0);
    return id;
}

static void create_token(const Meshid__Admin__V1__CreateJoinTokenRequest *req)
{
    int64_t ttl = req->ttl_seconds ? req->ttl_seconds : ADMIN_TOKEN_TTL_DEFAULT;
    if (ttl <= 0 || ttl > ADMIN_TOKEN_TTL_MAX) return;
    CHECK(req->spiffe_id != NULL);
    if (req->spiffe_id[0] == '\0') return; /* the ID comes from the token's hash */
    spiffe_id *sid = parse_id(req->spiffe_id);
    if (sid && spiffe_id_member_of(sid, TD) && spiffe_id_is_workload(sid)) {
        /* accepted: what is stored and shown is the ID as given */
        CHECK(strncmp(req->spiffe_id, "spiffe://" TD "/", strlen("spiffe://" TD "/")) == 0);
    }
    spiffe_id_free(sid);
}

static void check_selector(const entry_selector *s, bool valid)
{
    char text[ENTRY_SELECTOR_TEXT_MAX + 2];
    mid_result rf = entry_selector_format(s, text, sizeof text);
    if (!mid_is_ok(rf)) {
        CHECK(!valid && rf.err == MID_E_TOO_LARGE);
        return;
    }
    CHECK(strlen(text) == strlen(s->type) + 1 + strlen(s->value));
    char buf[ENTRY_SELECTOR_TEXT_MAX + 2];
    entry_selector back;
    mid_result rp = entry_selector_parse(text, buf, sizeof buf, &back);
    if (valid) {
        CHECK(mid_is_ok(rp));
        CHECK(entry_selector_equal(s, &back) == 1);
    } else if (mid_is_ok(rp)) {
        /* parse split elsewhere (a ':' in the type): a different selector */
        CHECK(strchr(s->type, ':') != NULL && entry_selector_equal(s, &back) == 0);
    }
}

static bool dns_name_ok(const char *n)
{
    size_t len = strlen(n);
    return len >= 1 && len <= ENTRY_DNS_NAME_MAX;
}

static void create_entry(const Meshid__Admin__V1__CreateEntryRequest *req)
{
    const Meshid__Agent__V1__Entry *in = req->entry;
    if (!in) return;
    if (in->n_selectors > ENTRY_SELECTORS_MAX || in->n_dns_names > ENTRY_DNS_NAMES_MAX) return;
    entry_selector sels[ENTRY_SELECTORS_MAX + 1];
    const char *dns[ENTRY_DNS_NAMES_MAX + 1];
    bool sels_ok = in->n_selectors >= 1;
    for (size_t i = 0; i < in->n_selectors; i++) {
        CHECK(in->selectors[i]->type && in->selectors[i]->value);
        sels[i] = (entry_selector){.type = in->selectors[i]->type, .value = in->selectors[i]->value};
        mid_result r = entry_selector_validate(&sels[i]);
        check_selector(&sels[i], mid_is_ok(r));
        if (!mid_is_ok(r)) {
            CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE);
            sels_ok = false;
        }
        for (size_t k = 0; k < i; k++)
            if (entry_selector_equal(&sels[k], &sels[i])) sels_ok = false;
    }
    bool dns_ok = true;
    for (size_t i = 0; i < in->n_dns_names; i++) {
        dns[i] = in->dns_names[i];
        CHECK(dns[i] != NULL);
        dns_ok = dns_ok && dns_name_ok(dns[i]);
    }
    entry e = {.spiffe_id = in->spiffe_id, .parent_id = in->parent_id, .selectors = sels,
               .n_selectors = in->n_selectors, .dns_names = dns, .n_dns_names = in->n_dns_names,
               .ttl_seconds = in->ttl_seconds};
    mid_result r = entry_validate(&e);
    if (!mid_is_ok(r)) {
        CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE);
        return;
    }
    /* accepted: every rule holds */
    CHECK(sels_ok && dns_ok);
    CHECK(in->ttl_seconds >= 0 && in->ttl_seconds <= ENTRY_TTL_MAX);
    spiffe_id *sid = parse_id(in->spiffe_id), *pid = parse_id(in->parent_id);
    CHECK(sid != NULL && pid != NULL);
    CHECK(spiffe_id_is_workload(sid));
    CHECK(strcmp(spiffe_id_trust_domain(sid), spiffe_id_trust_domain(pid)) == 0);
    CHECK(entry_matches(&e, sels, in->n_selectors) == 1);
    if (in->n_selectors > 1) CHECK(entry_matches(&e, sels, in->n_selectors - 1) == 0);
    spiffe_id_free(sid);
    spiffe_id_free(pid);
}

static void id_request(const char *id, size_t max)
{
    CHECK(id != NULL);
    if (id[0] == '\0' || strlen(id) > max) return; /* INVALID_ARGUMENT */
    spiffe_id *sid = parse_id(id); /* EvictAgent's store lookup key */
    spiffe_id_free(sid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessage *m;
    if ((m = decode(&meshid__admin__v1__create_join_token_request__descriptor, data, size)))
        create_token((const Meshid__Admin__V1__CreateJoinTokenRequest *)m);
    arena_reset(g_msg);
    if ((m = decode(&meshid__admin__v1__create_entry_request__descriptor, data, size)))
        create_entry((const Meshid__Admin__V1__CreateEntryRequest *)m);
    arena_reset(g_msg);
    if ((m = decode(&meshid__admin__v1__list_entries_request__descriptor, data, size)))
        CHECK(((const Meshid__Admin__V1__ListEntriesRequest *)m)->parent_id != NULL);
    arena_reset(g_msg);
    if ((m = decode(&meshid__admin__v1__get_entry_request__descriptor, data, size)))
        id_request(((const Meshid__Admin__V1__GetEntryRequest *)m)->id, STORE_ENTRY_ID_MAX);
    arena_reset(g_msg);
    if ((m = decode(&meshid__admin__v1__delete_entry_request__descriptor, data, size)))
        id_request(((const Meshid__Admin__V1__DeleteEntryRequest *)m)->id, STORE_ENTRY_ID_MAX);
    arena_reset(g_msg);
    (void)decode(&meshid__admin__v1__list_agents_request__descriptor, data, size);
    arena_reset(g_msg);
    if ((m = decode(&meshid__admin__v1__evict_agent_request__descriptor, data, size)))
        id_request(((const Meshid__Admin__V1__EvictAgentRequest *)m)->spiffe_id, SPIFFE_ID_MAX);
    arena_reset(g_msg);
    mid_errclear();
    return 0;
}
