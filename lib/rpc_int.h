/* Internals shared by lib/rpc_*.c. Nothing outside lib/rpc_* includes this.
 *
 * Every completion-queue tag is an rpc_tag embedded in its owner; the loop
 * dispatches on tag->kind in one switch (rpc_loop.c) and each handler gets
 * its owner back with RPC_OWNER. Owners count their outstanding tags in
 * `refs` and are freed only when it drops to zero.
 * (Exception: the fuzz targets in tests/fuzz/ include this header for
 * rpc_codec_unpack, so they decode exactly as the runtime does.) */
#ifndef MESHID_LIB_RPC_INT_H
#define MESHID_LIB_RPC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "lib/rpc.h"

#define RPC_OWNER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define RPC_DEFAULT_MAX_MSG ((size_t)4 << 20)
#define RPC_DEFAULT_SENDQ 64
#define RPC_MAX_SENDQ 65536
#define RPC_MAX_DETAILS 1024 /* status message bytes we keep */
#define RPC_MAX_MD_VALUE 8192
#define RPC_MAX_SPIFFE_ID 2048

typedef enum {
    RPC_TAG_WAKE = 1,
    RPC_TAG_SERVER_SHUTDOWN, /* owner: rpc_gsrv */
    RPC_TAG_NEW_CALL,        /* owner: rpc_call (registered method) */
    RPC_TAG_NEW_GENERIC,     /* owner: rpc_call (unregistered method) */
    RPC_TAG_CALL_RECV,
    RPC_TAG_CALL_SEND,
    RPC_TAG_CALL_CLOSE,
    RPC_TAG_CLIENT_UNARY, /* owner: rpc_stream */
    RPC_TAG_STREAM_START,
    RPC_TAG_STREAM_RECV,
    RPC_TAG_STREAM_SEND,
    RPC_TAG_STREAM_STATUS
} rpc_tag_kind;

typedef struct {
    rpc_tag_kind kind;
} rpc_tag;

/* Intrusive doubly linked list. */
typedef struct rpc_link {
    struct rpc_link *prev, *next;
} rpc_link;
void rpc_list_init(rpc_link *head);
void rpc_list_push(rpc_link *head, rpc_link *n);
void rpc_list_del(rpc_link *n);
#define rpc_list_empty(head) ((head)->next == (head))

/* ---- codec: bounded send queue, pack/unpack ---- */

typedef struct {
    grpc_byte_buffer **ring;
    size_t cap, head, count;
    grpc_byte_buffer *inflight;
} rpc_sendq;

MID_RESULT rpc_sendq_init(rpc_sendq *q, size_t cap);
/* Takes ownership of bb on success. */
MID_RESULT rpc_sendq_push(rpc_sendq *q, grpc_byte_buffer *bb);
grpc_byte_buffer *rpc_sendq_pop(rpc_sendq *q);
void rpc_sendq_clear(rpc_sendq *q); /* destroys queued buffers, not inflight */
void rpc_sendq_free(rpc_sendq *q);  /* destroys everything */

/* Serialises msg into a new byte buffer; MID_E_TOO_LARGE over max. */
MID_RESULT rpc_pack(const ProtobufCMessage *msg, size_t max, grpc_byte_buffer **out);

typedef enum { RPC_UNPACK_OK, RPC_UNPACK_TOO_LARGE, RPC_UNPACK_MALFORMED } rpc_unpack_res;
/* Decodes bb into `a`; *out lives as long as the arena. */
rpc_unpack_res rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                          size_t max, arena *a, ProtobufCMessage **out);
/* The flat-bytes half of rpc_unpack (which calls it once the buffer is read
 * into one slice): `len` bytes of `buf` over `max` are TOO_LARGE; otherwise
 * protobuf-c decodes them into `a`, and a refusal is TOO_LARGE when the
 * arena's limit was hit, else MALFORMED. Also MALFORMED before decoding:
 * messages nested more than 100 deep (protobuf-c's unpack recursion has no
 * limit of its own) and field number 0. *out lives as long as the arena.
 * Needs no gRPC state: the fuzz targets decode requests through it. */
rpc_unpack_res rpc_codec_unpack(const uint8_t *buf, size_t len,
                                const ProtobufCMessageDescriptor *desc, size_t max, arena *a,
                                ProtobufCMessage **out);

/* Copies a status message into a slice bounded to RPC_MAX_DETAILS. */
grpc_slice rpc_details_slice(const char *msg);

/* ---- loop ---- */

typedef struct {
    rpc_fn fn;
    void *arg;
} rpc_post;

struct rpc_timer {
    rpc_link link;
    int64_t due_ms;
    uint64_t seq;
    rpc_fn fn;
    void *arg;
};

struct rpc_loop {
    grpc_completion_queue *cq;
    bool running;
    bool closing; /* rpc_loop_free started */
    atomic_bool stop;
    rpc_link timers; /* sorted by due_ms, then seq */
    uint64_t timer_seq;
    rpc_link servers;
    rpc_link channels;
    rpc_link streams; /* client calls (unary and streams) not yet freed */
    /* cross-thread wake-up (see rpc_loop.c) */
    pthread_mutex_t wake_mu;
    grpc_channel *wake_ch;
    grpc_call *wake_call; /* armed call, or NULL */
    bool wake_kicked;
    bool wake_closed;
    bool wake_pending; /* a wake tag is outstanding */
    rpc_tag wake_tag;
    grpc_metadata_array wake_md;
    grpc_status_code wake_status;
    grpc_slice wake_details;
    rpc_post posts[RPC_WAKE_QUEUE_MAX];
    size_t post_head, post_count;
};

int64_t rpc_now_ms(void);
gpr_timespec rpc_deadline_ts(int64_t timeout_ms);
void rpc_run_posts(rpc_loop *loop);

/* ---- server ---- */

typedef struct {
    const char *path;
    rpc_kind kind;
    const ProtobufCMessageDescriptor *desc;
    const rpc_handler *h;
    void *ctx;
} rpc_method;

typedef struct rpc_uconn rpc_uconn;
typedef struct rpc_ulisten rpc_ulisten;

/* One grpc_server: the server's main one (TCP ports), or one per accepted
 * Unix connection (conn != NULL). */
typedef struct {
    rpc_link link;
    struct rpc_server *srv;
    grpc_server *gs;
    void **handles; /* per method */
    rpc_uconn *conn;
    size_t ncalls; /* rpc_call objects (requested or live) */
    bool started;
    bool shutdown_sent;
    bool shutdown_done;
    rpc_tag shutdown_tag;
} rpc_gsrv;

struct rpc_server {
    rpc_link link;
    rpc_loop *loop;
    rpc_server_opts opts;
    rpc_method *methods;
    size_t nmethods;
    bool started;
    bool shutting_down;
    rpc_gsrv *main;
    rpc_link gsrvs; /* conn servers */
    rpc_ulisten *listeners;
    rpc_link uconns; /* Unix connections whose fd still looks alive */
    rpc_timer *sweep;
    struct rpc_uid_count *uids;
    size_t nuids;
    grpc_channel_args *args; /* shared by all grpc_servers */
    grpc_resource_quota *quota; /* opts.memory_quota_bytes, or NULL; in args */
    struct rpc_tls_cfg *tls_cfgs; /* one per TLS port, freed after the grpc_servers */
};

struct rpc_uconn {
    rpc_link link;
    rpc_server *srv;
    rpc_gsrv *g;
    int fd;
    ino_t ino;
    uid_t uid;
    gid_t gid;
    pid_t pid;
};

/* rpc_server.c */
MID_RESULT rpc_gsrv_new(rpc_server *srv, rpc_uconn *conn, rpc_gsrv **out);
/* grpc_server_start and one call request per method (plus the generic one). */
MID_RESULT rpc_gsrv_start(rpc_gsrv *g);
void rpc_gsrv_shutdown(rpc_gsrv *g);
void rpc_gsrv_call_gone(rpc_gsrv *g); /* an rpc_call of g was freed */
void rpc_on_server_shutdown(rpc_gsrv *g, bool ok);
void rpc_servers_shutdown_all(rpc_loop *loop);
bool rpc_servers_all_gone(rpc_loop *loop);
void rpc_server_free_all(rpc_loop *loop);
/* The channel args of a server's grpc_servers; `quota` (may be NULL) is
 * referenced, not owned. NULL when out of memory. */
grpc_channel_args *rpc_server_make_args(const rpc_server_opts *o, grpc_resource_quota *quota);

/* rpc_call.c */
MID_RESULT rpc_call_request(rpc_gsrv *g, size_t method_idx);
MID_RESULT rpc_call_request_generic(rpc_gsrv *g);
void rpc_on_new_call(rpc_call *c, bool ok);
void rpc_on_new_generic(rpc_call *c, bool ok);
void rpc_on_call_recv(rpc_call *c, bool ok);
void rpc_on_call_send(rpc_call *c, bool ok);
void rpc_on_call_close(rpc_call *c, bool ok);
rpc_call *rpc_call_from_tag(rpc_tag *t);

/* rpc_unix.c */
MID_RESULT rpc_unix_start(rpc_server *srv);
void rpc_unix_stop(rpc_server *srv);  /* joins acceptor threads, closes listeners */
void rpc_unix_conn_gone(rpc_uconn *c); /* the conn's grpc_server was destroyed */
void rpc_unix_free(rpc_server *srv);

/* rpc_tls.c */
typedef struct rpc_tls_cfg rpc_tls_cfg; /* a TLS port's swappable material */
/* Server credentials reading their material through a config fetcher, so
 * rpc_server_set_tls can rotate it; *cfg is the fetcher's state, which must
 * outlive the grpc_server (freed with rpc_tls_cfg_free). NULL on failure. */
grpc_server_credentials *rpc_tls_server_creds(const rpc_tls *tls, rpc_tls_cfg **cfg);
/* Updates every cfg of the list (new handshakes load it). */
MID_RESULT rpc_tls_cfg_update(rpc_tls_cfg *list, const rpc_tls *tls);
void rpc_tls_cfg_push(rpc_tls_cfg **list, rpc_tls_cfg *cfg);
void rpc_tls_cfg_free(rpc_tls_cfg *cfg); /* the whole ->next list */
grpc_channel_credentials *rpc_tls_client_creds(const rpc_tls *tls);
/* Extracts the single spiffe:// URI SAN of a PEM certificate into `a`.
 * MID_E_DENIED when there is not exactly one. */
MID_RESULT rpc_tls_spiffe_id(const char *pem, size_t len, arena *a, const char **out);
/* The peer's SPIFFE ID from a call's auth context: OK with *out NULL when
 * the call is not over TLS or presented no certificate (*is_tls tells
 * which); MID_E_DENIED when a certificate without exactly one. */
MID_RESULT rpc_tls_call_peer(grpc_call *gc, arena *a, bool *is_tls, const char **out);

/* rpc_client.c */
void rpc_on_stream_event(rpc_tag *t, bool ok);
void rpc_channels_cancel_all(rpc_loop *loop);
void rpc_channels_free_all(rpc_loop *loop);

#endif
