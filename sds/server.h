/* `meshid server` as a reusable piece: store + CA + worker pool + the node
 * API on TCP with TLS + the admin API on a Unix socket, all driven by one
 * rpc loop (docs/server.md).
 *
 * Embedding (`meshid dev` runs server and agent on one loop):
 *
 *   rpc_loop_new(&loop);
 *   server_start(&opts, loop, &srv);     // listening when this returns
 *   ... rpc_loop_run(loop) ...
 *   server_stop(srv);                    // loop thread, or after run returned
 *   rpc_loop_free(loop);                 // ends open calls
 *   server_free(srv);                    // closes CA and store
 *
 * server_run does all of that for the `meshid server` command, with
 * SIGINT/SIGTERM handling.
 */
#ifndef MESHID_SDS_SERVER_H
#define MESHID_SDS_SERVER_H

#include <stdint.h>

#include "lib/result.h"
#include "lib/rpc.h"
#include "lib/workpool.h"
#include "storage/store.h"

typedef struct server server;

/* ---- extensions --------------------------------------------------------------
 * A part composed in by the caller (the mesh plane: meshcore/, wired by
 * cli/) that serves more methods on the server's rpc servers and shares its
 * store and worker pool, without sds/ knowing about it. */

/* What an extension gets at start. Everything is borrowed and lives until
 * server_free; the struct itself only during start(). */
typedef struct {
    server *srv;               /* server_port/_bundle_pem/... work already */
    rpc_loop *loop;
    rpc_server *admin_srv;     /* the admin Unix socket (caller uid checks are the extension's) */
    rpc_server *tls_srv;       /* the node API's mutual-TLS port (client certs optional) */
    store *st;
    workpool *wp;
    const char *trust_domain;
    const char *data_dir;
} server_ext_env;

typedef struct {
    const char *name; /* for messages */
    /* On the loop thread (or before it runs), after both rpc servers were
     * created and the server's own methods registered, before the TLS port
     * is bound (lib/rpc.h: methods before TCP ports; server_port() is still
     * 0) and before anything is served: register methods, open more
     * servers, add timers. A failure fails server_start (extensions started
     * before it are stopped and freed, later ones never start). */
    MID_RESULT (*start)(void *ctx, const server_ext_env *env);
    /* Optional: at server_stop (loop thread, before the worker pool is
     * freed): cancel timers, refuse new work. Only after a successful start. */
    void (*stop)(void *ctx);
    /* Optional: at server_free (after rpc_loop_free, before the store is
     * closed; when server_start fails after this extension started: during
     * server_start, before anything was served): free what start made. Only
     * after a successful start. */
    void (*free)(void *ctx);
    void *ctx;
} server_ext;

#define SERVER_EXT_MAX 8

#define SERVER_LISTEN_DEFAULT "127.0.0.1:15012"
#define SERVER_SPIFFE_PATH "/meshid/server"

/* Worker threads per core by default. A worker signing a certificate holds
 * its thread until the certificate is durable (an fsync away), so with one
 * worker per core every core waits for the disk after each signature and
 * group commit has at most one write per core to group (the "parallel" row
 * of bench_issue, ~20 % of raw OpenSSL). With 16 per core, 16 requests per
 * core can be signed or waiting at once: the writer folds the waiting ones
 * into one commit and the cores keep signing (the "server" and "batch"
 * rows, >= 50 %). docs/server.md, "Workers". */
#define SERVER_WORKERS_PER_CORE 16

typedef struct {
    const char *data_dir;    /* required: holds meshid.db and keys/ */
    const char *listen;      /* node API "host:port"; NULL: SERVER_LISTEN_DEFAULT; port 0 picks */
    const char *admin_sock;  /* NULL: <data_dir>/run/admin.sock */
    int64_t agent_svid_ttl;  /* agent SVID lifetime; 0: CA default (1h) */
    int64_t server_svid_ttl; /* the server's own TLS SVID; 0: CA default (1h) */
    unsigned workers;        /* 0: SERVER_WORKERS_PER_CORE per core, at most
                                WORKPOOL_THREADS_MAX */
    int64_t sync_poll_ms;    /* 0: 1000 */
    /* Authority rotation (docs/ca.md "Rotation"). Old authorities nothing
     * live chains to are retired on every rotation check; with auto_rotate
     * the check also runs ca_rotation_tick, its activations gated on the
     * agents' acknowledgements (node_service_gate_check). */
    int auto_rotate;          /* rotate the intermediate on schedule */
    int auto_rotate_root;     /* also the root (implies auto_rotate) */
    int64_t retire_grace;     /* seconds; 0: CA_RETIRE_GRACE */
    int64_t rotation_check_ms; /* 0: SERVER_ROTATION_CHECK_MS */
    /* Extensions, started in order, stopped and freed in reverse (the array
     * is copied; each `ctx` must live until server_free). */
    const server_ext *ext;
    size_t n_ext;             /* at most SERVER_EXT_MAX */
} server_opts;

#define SERVER_ROTATION_CHECK_MS 60000

/* Opens the store and CA, issues the server's SVID, starts the worker pool
 * and both APIs on `loop` (not running yet, or the caller's thread is the
 * loop thread). MID_E_NOT_FOUND with "run 'meshid ca init' first" when the
 * data directory has no trust domain; MID_E_EXISTS when the admin socket is
 * in use; MID_E_IO when the port cannot be bound. On failure nothing is
 * left running except what rpc_loop_free will clean up. */
MID_RESULT server_start(const server_opts *o, rpc_loop *loop, server **out);

/* Where it listens, and for what trust domain (valid until server_free). */
int server_port(const server *s);

/* Worker threads of the server's pool (server_opts.workers, or the default). */
unsigned server_workers(const server *s);
const char *server_admin_path(const server *s);
const char *server_trust_domain(const server *s);
/* The trust bundle (PEM) the node API serves; agents verify the server with it. */
const char *server_bundle_pem(const server *s);

/* Stops timers and the worker pool (finished jobs are answered, queued ones
 * refused). Call on the loop thread or after rpc_loop_run returned, and
 * before rpc_loop_free. NULL is a no-op. */
void server_stop(server *s);

/* Frees everything left; after rpc_loop_free. NULL is a no-op. */
void server_free(server *s);

/* The whole `meshid server` process: blocks SIGINT/SIGTERM, starts, prints
 * one ready line on stdout, runs until a signal, shuts down. */
MID_RESULT server_run(const server_opts *o);

#endif
