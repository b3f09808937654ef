/* The ca lifecycle verbs through a running server's admin API. With a server,
 * activation waits until every connected agent (and its SDS clients) has
 * acknowledged a bundle containing the new root; without one, cmd_ca.c acts
 * on the store directly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmd_ca_remote.h"
#include "lib/fsutil.h"
#include "meshid/admin/v1/admin.pb-c.h"
#include "sds/admin_client.h"

#define REMOTE_SLACK_MS 15000 /* on top of the activation wait */

int ca_remote_socket(const cli_ctx *ctx, char *out, size_t cap)
{
    if (!mid_is_ok(admin_default_socket(ctx->data_dir, out, cap))) return 0;
    return fs_exists(out);
}

static void short16(const char *id, char out[17]) { snprintf(out, 17, "%s", id ? id : ""); }

static void print_activated(const Meshid__Admin__V1__ActivateAuthorityResponse *a)
{
    char i[17];
    short16(a->intermediate_id, i);
    printf("activated intermediate %s: it signs from now on\n", i);
    if (a->forced) {
        printf("FORCED: not acknowledged by %zu agent(s):", a->n_not_acknowledged);
        for (size_t k = 0; k < a->n_not_acknowledged; k++) printf(" %s", a->not_acknowledged[k]);
        printf("\n");
    }
}

static int64_t call_ms(int64_t timeout_s) { return (timeout_s > 0 ? timeout_s : 30) * 1000 + REMOTE_SLACK_MS; }

int ca_remote_prepare(const char *sock, const ca_prepare_opts *o)
{
    Meshid__Admin__V1__PrepareAuthorityRequest req = MESHID__ADMIN__V1__PREPARE_AUTHORITY_REQUEST__INIT;
    req.root = o->new_root != 0;
    req.upstream_dir = (char *)(o->upstream_dir ? o->upstream_dir : "");
    req.replace = o->replace != 0;
    req.key_type = (char *)(o->key_type == CA_KEY_RSA_2048 ? "rsa-2048"
                            : o->key_type == CA_KEY_EC_P256 ? "ec-p256" : "");
    req.root_ttl_seconds = o->root_ttl;
    req.intermediate_ttl_seconds = o->intermediate_ttl;
    ProtobufCMessage *m = NULL;
    mid_result r = admin_call(sock, "PrepareAuthority", &req.base,
                              &meshid__admin__v1__prepare_authority_response__descriptor, &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    Meshid__Admin__V1__PrepareAuthorityResponse *p = (void *)m;
    char i[17], rt[17];
    short16(p->intermediate_id, i);
    short16(p->root_id, rt);
    printf("prepared intermediate %s under %sroot %s%s\n", i, p->root_is_new ? "new " : "", rt,
           p->root_is_new ? " (in the trust bundle from now on)" : "");
    printf("activate it with: meshid ca activate %s\n", i);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int ca_remote_activate(const char *sock, const char *id, int force, int64_t timeout_s)
{
    Meshid__Admin__V1__ActivateAuthorityRequest req = MESHID__ADMIN__V1__ACTIVATE_AUTHORITY_REQUEST__INIT;
    req.id = (char *)id;
    req.force = force != 0;
    req.timeout_seconds = timeout_s;
    ProtobufCMessage *m = NULL;
    mid_result r = admin_call_timeout(sock, "ActivateAuthority", &req.base,
                                      &meshid__admin__v1__activate_authority_response__descriptor,
                                      call_ms(timeout_s), &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    print_activated((void *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int ca_remote_rotate(const char *sock, int root, int force, int64_t timeout_s)
{
    Meshid__Admin__V1__RotateAuthorityRequest req = MESHID__ADMIN__V1__ROTATE_AUTHORITY_REQUEST__INIT;
    req.root = root != 0;
    req.force = force != 0;
    req.timeout_seconds = timeout_s;
    ProtobufCMessage *m = NULL;
    mid_result r = admin_call_timeout(sock, "RotateAuthority", &req.base,
                                      &meshid__admin__v1__rotate_authority_response__descriptor,
                                      call_ms(timeout_s), &m);
    if (!mid_is_ok(r)) return cli_fail(r);
    Meshid__Admin__V1__RotateAuthorityResponse *rr = (void *)m;
    if (rr->activated != NULL) print_activated(rr->activated);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

int ca_remote_taint_revoke(const char *sock, const char *id, int revoke)
{
    ProtobufCMessage *m = NULL;
    mid_result r;
    if (revoke) {
        Meshid__Admin__V1__RevokeAuthorityRequest req = MESHID__ADMIN__V1__REVOKE_AUTHORITY_REQUEST__INIT;
        req.id = (char *)id;
        r = admin_call(sock, "RevokeAuthority", &req.base,
                       &meshid__admin__v1__revoke_authority_response__descriptor, &m);
    } else {
        Meshid__Admin__V1__TaintAuthorityRequest req = MESHID__ADMIN__V1__TAINT_AUTHORITY_REQUEST__INIT;
        req.id = (char *)id;
        r = admin_call(sock, "TaintAuthority", &req.base,
                       &meshid__admin__v1__taint_authority_response__descriptor, &m);
    }
    if (!mid_is_ok(r)) return cli_fail(r);
    /* Both responses carry the full id as field 1. */
    const char *full = revoke ? ((Meshid__Admin__V1__RevokeAuthorityResponse *)m)->id
                              : ((Meshid__Admin__V1__TaintAuthorityResponse *)m)->id;
    char i[17];
    short16(full, i);
    if (revoke)
        printf("revoked root %s: it has left the trust bundle\n", i);
    else
        printf("tainted %s: every SVID chained to it is to be re-issued\n", i);
    protobuf_c_message_free_unpacked(m, NULL);
    return CLI_EXIT_OK;
}

void ca_remote_print_spread(const char *sock)
{
    Meshid__Admin__V1__AuthorityStatusRequest req = MESHID__ADMIN__V1__AUTHORITY_STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    if (!mid_is_ok(admin_call(sock, "AuthorityStatus", &req.base,
                              &meshid__admin__v1__authority_status_response__descriptor, &m)))
        return; /* status already printed from the store; the spread is a bonus */
    Meshid__Admin__V1__AuthorityStatusResponse *s = (void *)m;
    char sig[17];
    short16(s->signer_id, sig);
    printf("\nbundle spread (server signing with %s, bundle sequence %llu):\n", sig,
           (unsigned long long)s->bundle_sequence);
    printf("  %-60s  %-9s  %12s  %12s\n", "AGENT", "CONNECTED", "BUNDLE ACK", "SDS ACK");
    size_t behind = 0;
    for (size_t k = 0; k < s->n_agents; k++) {
        const Meshid__Admin__V1__AgentSpread *a = s->agents[k];
        printf("  %-60s  %-9s  %12llu  %12llu\n", a->spiffe_id, a->connected ? "yes" : "no",
               (unsigned long long)a->bundle_sequence_ack,
               (unsigned long long)a->sds_bundle_sequence_ack);
        if (a->connected && a->sds_bundle_sequence_ack < s->bundle_sequence) behind++;
    }
    printf("  %zu of %zu agent(s) connected and behind the current bundle\n", behind, s->n_agents);
    protobuf_c_message_free_unpacked(m, NULL);
}
