/* The xDS generator: proxy identity from the xDS Node, the caches of
 * shared parts and snapshots, and snapshot assembly (see meshcore/xds_gen.h
 * and docs/xds.md). The resources themselves are built by xds_outbound.c
 * and xds_inbound.c. */
#include "meshcore/xds_gen.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/struct.pb-c.h"
#include "identity/spiffe_id.h"
#include "lib/hash.h"
#include "lib/quote.h"
#include "meshcore/xds_gen_int.h"

#define FLAVOURS_MAX 16          /* cached SDS clusters / certificate providers */
#define SNAPSHOTS_MAX 16384      /* cached sidecar snapshots per registry */
#define SNAP_BUCKETS_MIN 64

/* ---- the proxy ---------------------------------------------------------------------- */

void xds_proxy_clear(xds_proxy *p)
{
    if (!p) return;
    free(p->node_id);
    free(p->node_cluster);
    free(p->spiffe_id);
    free(p->cert_provider);
    free(p->sds_cluster);
    memset(p, 0, sizeof *p);
}

/* The string value of metadata key `key` (NULL when absent; the last one
 * wins, as in a protobuf map). MID_E_INVALID for a value that is not a
 * string. */
static MID_RESULT meta_str(const Envoy__Config__Core__V3__Node *node, const char *node_q,
                           const char *key, const char **out)
{
    *out = NULL;
    const Google__Protobuf__Struct *md = node->metadata;
    if (!md) return mid_ok();
    for (size_t i = 0; i < md->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = md->fields[i];
        if (!e || !e->key || strcmp(e->key, key) != 0) continue;
        MID_ENSURE(e->value && e->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
                       e->value->string_value,
                   MID_E_INVALID, "node %s: metadata %s must be a string", node_q, key);
        *out = e->value->string_value;
    }
    return mid_ok();
}

/* A bounded, printable ASCII metadata value (a bootstrap name). */
static MID_RESULT meta_name(const char *node_q, const char *key, const char *v)
{
    size_t n = strnlen(v, XDS_META_VALUE_MAX + 1);
    MID_ENSURE(n <= XDS_META_VALUE_MAX, MID_E_TOO_LARGE,
               "node %s: metadata %s is over %d bytes", node_q, key, XDS_META_VALUE_MAX);
    MID_ENSURE(n > 0, MID_E_INVALID, "node %s: metadata %s is empty", node_q, key);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        char q[QUOTE_MAX + 8];
        quote_str(v, q, sizeof q);
        MID_ENSURE(c > 0x20 && c < 0x7f, MID_E_INVALID,
                   "node %s: metadata %s \"%s\" must be printable ASCII without spaces", node_q,
                   key, q);
    }
    return mid_ok();
}

/* A workload SPIFFE ID from `what` of the node (message names both). */
static MID_RESULT check_id(const char *node_q, const char *what, const char *id)
{
    spiffe_id *sid = NULL;
    mid_result r = spiffe_id_parse(id, strnlen(id, SPIFFE_ID_MAX + 1), &sid);
    if (!mid_is_ok(r)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mid_errmsg());
        MID_BAIL(r.err, "node %s: %s: %s", node_q, what, msg);
    }
    bool workload = spiffe_id_is_workload(sid);
    spiffe_id_free(sid);
    char q[QUOTE_MAX + 8];
    quote_str(id, q, sizeof q);
    MID_ENSURE(workload, MID_E_INVALID, "node %s: %s \"%s\" is not a workload SPIFFE ID (no path)",
               node_q, what, q);
    return mid_ok();
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *ok = false;
    return d;
}

MID_RESULT xds_proxy_from_node(const Envoy__Config__Core__V3__Node *node,
                               const char *peer_spiffe_id, xds_proxy *out)
{
    MID_ENSURE(out != NULL, MID_E_INVALID, "no output");
    memset(out, 0, sizeof *out);
    MID_ENSURE(node != NULL, MID_E_INVALID, "the xDS request carries no node");
    const char *id = node->id ? node->id : "";
    const char *cluster = node->cluster ? node->cluster : "";
    char node_q[QUOTE_MAX + 8];
    quote_str(id, node_q, sizeof node_q);
    MID_ENSURE(strnlen(id, XDS_NODE_ID_MAX + 1) <= XDS_NODE_ID_MAX, MID_E_TOO_LARGE,
               "node id %s is over %d bytes", node_q, XDS_NODE_ID_MAX);
    MID_ENSURE(strnlen(cluster, XDS_NODE_ID_MAX + 1) <= XDS_NODE_ID_MAX, MID_E_TOO_LARGE,
               "node %s: cluster is over %d bytes", node_q, XDS_NODE_ID_MAX);

    const char *meta_id = NULL, *generator = NULL, *cert_provider = NULL, *sds = NULL;
    MID_GUARD(meta_str(node, node_q, XDS_META_SPIFFE_ID, &meta_id));
    MID_GUARD(meta_str(node, node_q, XDS_META_GENERATOR, &generator));
    MID_GUARD(meta_str(node, node_q, XDS_META_CERT_PROVIDER, &cert_provider));
    MID_GUARD(meta_str(node, node_q, XDS_META_SDS_CLUSTER, &sds));

    const char *identity = NULL;
    if (peer_spiffe_id) {
        MID_GUARD(check_id(node_q, "TLS peer", peer_spiffe_id));
        if (meta_id && strcmp(meta_id, peer_spiffe_id) != 0) {
            char mq[QUOTE_MAX + 8], pq[QUOTE_MAX + 8];
            quote_str(meta_id, mq, sizeof mq);
            quote_str(peer_spiffe_id, pq, sizeof pq);
            MID_BAIL(MID_E_DENIED,
                     "node %s claims metadata SPIFFE_ID \"%s\" but its certificate is \"%s\"",
                     node_q, mq, pq);
        }
        identity = peer_spiffe_id;
    } else if (meta_id) {
        MID_GUARD(check_id(node_q, "metadata SPIFFE_ID", meta_id));
        identity = meta_id;
    } else if (strncmp(id, "spiffe:", 7) == 0) {
        MID_GUARD(check_id(node_q, "node id", id));
        identity = id;
    }
    MID_ENSURE(identity != NULL, MID_E_DENIED,
               "node %s has no identity: connect over TLS with an SVID, or (plaintext) set node "
               "metadata " XDS_META_SPIFFE_ID " or use a SPIFFE ID as node id",
               node_q);

    const char *ua = node->user_agent_name ? node->user_agent_name : "";
    int proxyless = strncmp(ua, "gRPC", 4) == 0 || (generator && strcmp(generator, "grpc") == 0);
    if (proxyless) {
        sds = NULL;
        if (cert_provider) MID_GUARD(meta_name(node_q, XDS_META_CERT_PROVIDER, cert_provider));
    } else {
        cert_provider = NULL;
        if (sds) MID_GUARD(meta_name(node_q, XDS_META_SDS_CLUSTER, sds));
        else sds = XDS_SDS_CLUSTER_DEFAULT;
    }

    bool ok = true;
    out->node_id = dup_or_null(id, &ok);
    out->node_cluster = dup_or_null(cluster, &ok);
    out->spiffe_id = dup_or_null(identity, &ok);
    out->proxyless = proxyless;
    out->cert_provider = dup_or_null(cert_provider, &ok);
    out->sds_cluster = dup_or_null(sds, &ok);
    if (!ok) {
        xds_proxy_clear(out);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    return mid_ok();
}

/* ---- caches -------------------------------------------------------------------------- */

typedef struct {
    char *key;         /* SDS cluster (sidecar) or certificate provider ("" = none) */
    xds_rset *cds;     /* outbound clusters of the flavour */
    xds_snapshot *snap; /* proxyless: the whole snapshot */
} flavour;

typedef struct snap_entry {
    char *key; /* "<sds cluster>\n<spiffe id>" */
    xds_snapshot *snap;
    struct snap_entry *next;
} snap_entry;

struct xds_gen {
    mesh_registry *reg; /* what the caches are for; a reference */
    const mesh_policy **pols;
    size_t n_pols;
    xds_rset *eds;
    bool sc_ready, px_ready;
    xds_listener_chunks sc_lds;
    xds_rset *sc_rds;
    xds_rset *px_lds, *px_rds;
    flavour sc_fl[FLAVOURS_MAX];
    size_t n_sc_fl;
    flavour px_fl[FLAVOURS_MAX];
    size_t n_px_fl;
    snap_entry **buckets;
    size_t n_buckets, n_snaps;
    xds_gen_stats st;
};

static void flavour_clear(flavour *f)
{
    free(f->key);
    xds_rset_unref(f->cds);
    xds_snapshot_unref(f->snap);
    memset(f, 0, sizeof *f);
}

static void flush(xds_gen *g)
{
    if (g->reg) g->st.flushes++;
    for (size_t i = 0; i < g->n_buckets; i++) {
        snap_entry *e = g->buckets[i];
        while (e) {
            snap_entry *next = e->next;
            free(e->key);
            xds_snapshot_unref(e->snap);
            free(e);
            e = next;
        }
    }
    free(g->buckets);
    g->buckets = NULL;
    g->n_buckets = g->n_snaps = 0;
    for (size_t i = 0; i < g->n_sc_fl; i++) flavour_clear(&g->sc_fl[i]);
    for (size_t i = 0; i < g->n_px_fl; i++) flavour_clear(&g->px_fl[i]);
    g->n_sc_fl = g->n_px_fl = 0;
    xds_listener_chunks_clear(&g->sc_lds);
    xds_rset_unref(g->sc_rds);
    xds_rset_unref(g->px_lds);
    xds_rset_unref(g->px_rds);
    xds_rset_unref(g->eds);
    g->sc_rds = g->px_lds = g->px_rds = g->eds = NULL;
    g->sc_ready = g->px_ready = false;
    free(g->pols);
    g->pols = NULL;
    g->n_pols = 0;
    mesh_registry_unref(g->reg);
    g->reg = NULL;
}

MID_RESULT xds_gen_new(xds_gen **out)
{
    xds_gen *g = calloc(1, sizeof *g);
    MID_ENSURE_MEM(g);
    *out = g;
    return mid_ok();
}

void xds_gen_free(xds_gen *g)
{
    if (!g) return;
    flush(g);
    free(g);
}

void xds_gen_get_stats(const xds_gen *g, xds_gen_stats *out)
{
    *out = g->st;
}

/* Points the caches at reg (dropping those of another registry). */
static MID_RESULT use_registry(xds_gen *g, const mesh_registry *reg)
{
    if (g->reg == reg) return mid_ok();
    flush(g);
    size_t n = mesh_registry_n_policies(reg);
    g->pols = calloc(n ? n : 1, sizeof *g->pols);
    MID_ENSURE_MEM(g->pols);
    for (size_t i = 0; i < n; i++) g->pols[i] = mesh_registry_policy(reg, i);
    g->n_pols = n;
    /* The registry is immutable; the reference only keeps it (and the
     * pointers into it) alive while cached. */
    g->reg = mesh_registry_ref((mesh_registry *)reg);
    return mid_ok();
}

static snap_entry *snap_find(const xds_gen *g, const char *key)
{
    if (!g->n_buckets) return NULL;
    for (snap_entry *e = g->buckets[hash_str(key) & (g->n_buckets - 1)]; e; e = e->next)
        if (strcmp(e->key, key) == 0) return e;
    return NULL;
}

/* Caches s under key (takes a new reference). Silently does nothing once
 * SNAPSHOTS_MAX are cached or memory is short: caching is an optimisation. */
static void snap_put(xds_gen *g, char *key, xds_snapshot *s)
{
    if (g->n_snaps >= SNAPSHOTS_MAX) return;
    if (g->n_snaps + 1 > g->n_buckets) {
        size_t nb = g->n_buckets ? 2 * g->n_buckets : SNAP_BUCKETS_MIN;
        snap_entry **b = calloc(nb, sizeof *b);
        if (!b) return;
        for (size_t i = 0; i < g->n_buckets; i++) {
            snap_entry *e = g->buckets[i];
            while (e) {
                snap_entry *next = e->next;
                size_t k = hash_str(e->key) & (nb - 1);
                e->next = b[k];
                b[k] = e;
                e = next;
            }
        }
        free(g->buckets);
        g->buckets = b;
        g->n_buckets = nb;
    }
    snap_entry *e = malloc(sizeof *e);
    char *k = strdup(key);
    if (!e || !k) {
        free(e);
        free(k);
        return;
    }
    e->key = k;
    e->snap = xds_snapshot_ref(s);
    size_t bi = hash_str(k) & (g->n_buckets - 1);
    e->next = g->buckets[bi];
    g->buckets[bi] = e;
    g->n_snaps++;
}

static MID_RESULT ensure_eds(xds_gen *g)
{
    if (g->eds) return mid_ok();
    MID_GUARD(xds_build_eds(g->reg, &g->eds));
    g->st.shared_builds++;
    return mid_ok();
}

/* The flavour `key` of table fl (built on first use). When the table is
 * full the flavour is built into *tmp, which the caller clears. */
static MID_RESULT get_flavour(xds_gen *g, flavour *fl, size_t *n, const char *key,
                              const char *sds_cluster, const char *cert_provider, flavour *tmp,
                              flavour **out)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(fl[i].key, key) == 0) {
            *out = &fl[i];
            return mid_ok();
        }
    }
    flavour *f = *n < FLAVOURS_MAX ? &fl[*n] : tmp;
    memset(f, 0, sizeof *f);
    f->key = strdup(key);
    MID_ENSURE_MEM(f->key);
    mid_result r = xds_build_clusters(g->reg, sds_cluster, cert_provider, &f->cds);
    if (!mid_is_ok(r)) {
        flavour_clear(f);
        return r;
    }
    g->st.shared_builds++;
    if (f != tmp) (*n)++;
    *out = f;
    return mid_ok();
}

static MID_RESULT add_set(xds_snapshot *s, xds_type t, xds_rset *set)
{
    if (!set || xds_rset_count(set) == 0) return mid_ok();
    return xds_snapshot_add_set(s, t, set);
}

/* ---- proxyless ------------------------------------------------------------------------ */

static MID_RESULT proxyless_snapshot(xds_gen *g, const xds_proxy *p, xds_snapshot **out)
{
    const char *key = p->cert_provider ? p->cert_provider : "";
    flavour tmp = {0}, *f = NULL;
    xds_snapshot *s = NULL;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, get_flavour(g, g->px_fl, &g->n_px_fl, key, NULL, p->cert_provider, &tmp, &f));
    if (f->snap) {
        g->st.snapshot_hits++;
        *out = xds_snapshot_ref(f->snap);
        goto out;
    }
    if (!g->px_ready) {
        MID_TRY(r, xds_build_proxyless(g->reg, &g->px_lds, &g->px_rds));
        g->px_ready = true;
        g->st.shared_builds++;
    }
    MID_TRY(r, ensure_eds(g));
    MID_TRY(r, xds_snapshot_new(&s));
    MID_TRY(r, add_set(s, XDS_CDS, f->cds));
    MID_TRY(r, add_set(s, XDS_EDS, g->eds));
    MID_TRY(r, add_set(s, XDS_LDS, g->px_lds));
    MID_TRY(r, add_set(s, XDS_RDS, g->px_rds));
    MID_TRY(r, xds_snapshot_seal(s));
    g->st.snapshot_builds++;
    if (f != &tmp) f->snap = xds_snapshot_ref(s);
    *out = s;
    s = NULL;
out:
    xds_snapshot_unref(s);
    flavour_clear(&tmp);
    return r;
}

/* ---- sidecar ----------------------------------------------------------------------------- */

static int port_cmp(const void *k, const void *e)
{
    uint32_t a = *(const uint32_t *)k, b = *(const uint32_t *)e;
    return a < b ? -1 : a > b;
}

/* 1 when port is one of the proxy's inbound ports (sorted ascending). */
static int is_inbound(const xds_inbound_port *ip, size_t n, uint32_t port)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ip[mid].port == port) return 1;
        if (ip[mid].port < port) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* The outbound listeners: whole chunks by reference; a chunk holding a port
 * the proxy listens on inbound is copied without that listener. */
static MID_RESULT add_outbound_listeners(const xds_gen *g, const xds_inbound_port *ip, size_t n_ip,
                                         xds_snapshot *s)
{
    const xds_listener_chunks *c = &g->sc_lds;
    bool cut[64] = {false};
    for (size_t i = 0; i < n_ip; i++) {
        const uint32_t *hit = bsearch(&ip[i].port, c->ports, c->n_ports, sizeof *c->ports, port_cmp);
        if (hit) {
            size_t ci = (size_t)(hit - c->ports) / c->chunk;
            if (ci < sizeof cut / sizeof cut[0]) cut[ci] = true;
        }
    }
    for (size_t ci = 0; ci < c->n_chunks; ci++) {
        if (!cut[ci]) {
            MID_GUARD(add_set(s, XDS_LDS, c->chunks[ci]));
            continue;
        }
        for (size_t i = ci * c->chunk; i < c->n_ports && i < (ci + 1) * c->chunk; i++) {
            if (is_inbound(ip, n_ip, c->ports[i])) continue;
            char name[XDS_NAME_MAX + 1];
            MID_GUARD(xds_name_outbound_listener(name, sizeof name, c->ports[i]));
            const xds_resource *res = xds_rset_find(c->chunks[ci], name);
            MID_ENSURE(res != NULL, MID_E_INTERNAL, "listener %s missing from its chunk", name);
            MID_GUARD(xds_snapshot_add(s, XDS_LDS, res->name, res->bytes, res->len));
        }
    }
    return mid_ok();
}

static MID_RESULT sidecar_snapshot(xds_gen *g, const xds_proxy *p, xds_snapshot **out)
{
    const char *sds = p->sds_cluster ? p->sds_cluster : XDS_SDS_CLUSTER_DEFAULT;
    size_t kl = strlen(sds) + strlen(p->spiffe_id) + 2;
    char *key = malloc(kl);
    MID_ENSURE_MEM(key);
    snprintf(key, kl, "%s\n%s", sds, p->spiffe_id);
    mid_result r = MID_OK_RESULT;
    xds_inbound_port *ip = NULL;
    size_t n_ip = 0;
    flavour tmp = {0}, *f = NULL;
    xds_snapshot *s = NULL;
    snap_entry *hit = snap_find(g, key);
    if (hit) {
        g->st.snapshot_hits++;
        *out = xds_snapshot_ref(hit->snap);
        goto out;
    }
    MID_TRY(r, xds_inbound_ports(g->reg, p->spiffe_id, &ip, &n_ip));
    MID_TRY(r, get_flavour(g, g->sc_fl, &g->n_sc_fl, sds, sds, NULL, &tmp, &f));
    if (!g->sc_ready) {
        xds_listener_chunks lds = {0};
        xds_rset *rds = NULL;
        MID_TRY(r, xds_build_sidecar_listeners(g->reg, &lds));
        r = xds_build_sidecar_routes(g->reg, &rds);
        if (!mid_is_ok(r)) {
            xds_listener_chunks_clear(&lds);
            goto out;
        }
        g->sc_lds = lds;
        g->sc_rds = rds;
        g->sc_ready = true;
        g->st.shared_builds++;
    }
    MID_TRY(r, ensure_eds(g));
    MID_TRY(r, xds_snapshot_new(&s));
    MID_TRY(r, add_set(s, XDS_CDS, f->cds));
    MID_TRY(r, add_set(s, XDS_EDS, g->eds));
    MID_TRY(r, add_outbound_listeners(g, ip, n_ip, s));
    MID_TRY(r, add_set(s, XDS_RDS, g->sc_rds));
    MID_TRY(r, xds_build_inbound(g->reg, g->pols, g->n_pols, ip, n_ip, sds, s));
    g->st.inbound_builds++;
    MID_TRY(r, xds_snapshot_seal(s));
    g->st.snapshot_builds++;
    if (f != &tmp) snap_put(g, key, s);
    *out = s;
    s = NULL;
out:
    xds_snapshot_unref(s);
    flavour_clear(&tmp);
    free(ip);
    free(key);
    return r;
}

MID_RESULT xds_gen_snapshot(xds_gen *g, const mesh_registry *reg, const xds_proxy *p,
                            xds_snapshot **out)
{
    MID_ENSURE(g && reg && p && out, MID_E_INVALID, "xds_gen_snapshot: NULL argument");
    *out = NULL;
    MID_ENSURE(p->spiffe_id != NULL, MID_E_INVALID, "the proxy has no identity");
    MID_GUARD(use_registry(g, reg));
    if (p->proxyless) return proxyless_snapshot(g, p, out);
    return sidecar_snapshot(g, p, out);
}
