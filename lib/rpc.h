/* The gRPC runtime: the only part of meshid that talks to gRPC core.
 *
 * One rpc_loop owns one completion queue and is driven by one thread (the
 * one calling rpc_loop_run). Every callback below runs on that thread, and
 * every function here must be called on it, except rpc_loop_wake_post and
 * rpc_loop_stop, which any thread may call.
 *
 * Server: rpc_server_new, then rpc_server_register for each method, then
 * rpc_server_add_tcp / rpc_server_add_unix, then rpc_server_start. A handler
 * gets an rpc_call; it answers with rpc_call_send (bounded queue, at most one
 * send in flight) and rpc_call_finish, or rpc_call_abort. The call stays
 * valid until its handler's on_done returns; the runtime frees it then.
 *
 * Client: rpc_channel_new to "unix:PATH" or "host:port" (optional mutual
 * TLS), then rpc_unary or rpc_stream_open; responses arrive on the loop.
 *
 * Shutdown: rpc_loop_free cancels every call and stream (their on_done
 * callbacks run), shuts down every server and channel, drains the queue and
 * frees everything.
 *
 * Errors: MID_E_INVALID bad arguments, MID_E_STATE wrong phase (call already
 * finished, loop closing), MID_E_BUSY a bounded queue is full,
 * MID_E_TOO_LARGE a message over the size limit, MID_E_EXISTS a socket path
 * in use, MID_E_IO socket errors, MID_E_CRYPTO bad PEM, MID_E_NOMEM.
 */
#ifndef MESHID_LIB_RPC_H
#define MESHID_LIB_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/arena.h"
#include "lib/result.h"

typedef struct rpc_loop rpc_loop;
typedef struct rpc_timer rpc_timer;
typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;       /* a call on the server side */
typedef struct rpc_channel rpc_channel; /* a client connection target */
typedef struct rpc_stream rpc_stream;   /* a client stream */

/* gRPC status codes (same numbers as on the wire). */
typedef enum {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16
} rpc_code;

/* A final status as seen by a client; `message` lives during the callback. */
typedef struct {
    rpc_code code;
    const char *message;
} rpc_status;

/* One request metadata entry (client side). */
typedef struct {
    const char *key;
    const char *value;
} rpc_md;

/* PEM material for mutual TLS; every string NUL-terminated. For servers:
 * ca_pem verifies client certificates, which are required unless
 * client_cert_optional is set (then they are requested and, when presented,
 * verified; a call without one sees kind RPC_PEER_TLS with spiffe_id NULL).
 * For clients: ca_pem verifies the server; cert/key are the client's own;
 * server_name (optional) overrides the name checked against the server
 * certificate; server_spiffe_id (optional) must equal the server
 * certificate's URI SAN. */
typedef struct {
    const char *ca_pem;
    const char *cert_pem;
    const char *key_pem;
    const char *server_name;
    const char *server_spiffe_id;
    bool client_cert_optional; /* servers only */
} rpc_tls;

/* ---- loop, timers, wake-ups ---------------------------------------------- */

/* Creates a loop (initialises gRPC, routes its logging to lib/log.h). */
MID_RESULT rpc_loop_new(rpc_loop **out);

/* Runs callbacks until rpc_loop_stop. MID_E_STATE if already running. */
MID_RESULT rpc_loop_run(rpc_loop *loop);

/* Makes rpc_loop_run return after the current callback. Any thread. */
void rpc_loop_stop(rpc_loop *loop);

/* Shuts down every server, call, stream and channel of the loop, running
 * their on_done callbacks, drains the completion queue and frees it all.
 * Must not be called from inside a callback. NULL is a no-op. */
void rpc_loop_free(rpc_loop *loop);

typedef void (*rpc_fn)(rpc_loop *loop, void *arg);

/* Runs fn(loop, arg) once on the loop thread, soon. Any thread. Posts are
 * run in order. MID_E_BUSY when RPC_WAKE_QUEUE_MAX posts are pending,
 * MID_E_STATE after rpc_loop_free started (fn is then never run). Posts
 * still pending at rpc_loop_free are run during the drain. */
#define RPC_WAKE_QUEUE_MAX 4096
MID_RESULT rpc_loop_wake_post(rpc_loop *loop, rpc_fn fn, void *arg);

/* Calls fn(loop, arg) once, `delay_ms` from now, on the loop thread. The
 * timer handle (optional out) is valid until fn is called or the timer is
 * cancelled; it is freed by the runtime. */
MID_RESULT rpc_timer_add(rpc_loop *loop, int64_t delay_ms, rpc_fn fn, void *arg, rpc_timer **out);

/* Cancels a pending timer: fn will not be called. */
void rpc_timer_cancel(rpc_loop *loop, rpc_timer *t);

/* ---- server ------------------------------------------------------------- */

typedef enum { RPC_UNARY, RPC_SERVER_STREAM, RPC_BIDI } rpc_kind;

/* Server limits; 0 in any field means its default. */
typedef struct {
    size_t max_msg_bytes;      /* outbound message cap, and inbound unless max_recv_bytes (4 MiB) */
    size_t max_recv_bytes;     /* inbound message cap (max_msg_bytes; at most max_msg_bytes):
                                * a server whose responses are large but whose requests are
                                * small keeps one client's oversized request from filling a
                                * shared memory quota */
    size_t max_arena_bytes;    /* per decoded message (4 x max_recv_bytes) */
    size_t send_queue_len;     /* per call; rpc_call_send beyond it: BUSY (64) */
    unsigned max_conns_per_uid; /* Unix sockets: concurrent connections (64) */
    int64_t conn_idle_ms;      /* Unix sockets: close idle connections (300000) */
    int64_t keepalive_ms;      /* HTTP/2 keepalive ping interval (60000) */
    /* 0: none (gRPC's process-wide default quota, unlimited). Otherwise a
     * gRPC resource quota of this many bytes, shared by every connection of
     * this server (TCP and Unix) and by nothing else. What gRPC 1.51
     * charges to it: each connection's TCP read buffers, HTTP/2 transport
     * and stream state and the per-call arenas; not the messages this
     * runtime builds to send. It is a soft limit: an allocation never fails
     * because of it. Near it (over 80 % in use) gRPC reads in smaller
     * chunks; over it, it reclaims in passes until usage is back under:
     * first idle buffers (a waiting connection's read buffer is dropped),
     * then a GOAWAY to connections without calls, and as a last resort it
     * cancels a random live stream of a connection ("Buffers full", HTTP/2
     * ENHANCE_YOUR_CALM; the client sees the call fail and the handler's
     * on_done runs with cancelled == true). So size it well above the live
     * working set: the largest request in flight (max_recv_bytes) plus a few
     * KB per open call. RPC_MIN_MEMORY_QUOTA..RPC_MAX_MEMORY_QUOTA, else
     * rpc_server_new fails with MID_E_INVALID. */
    size_t memory_quota_bytes;
} rpc_server_opts;
#define RPC_MIN_MEMORY_QUOTA ((size_t)1 << 20)
#define RPC_MAX_MEMORY_QUOTA ((size_t)1 << 40)

typedef struct {
    /* A call arrived. `req` is the request for unary and server-streaming
     * methods (valid until on_done) and NULL for bidi. Required. */
    void (*on_start)(rpc_call *call, const ProtobufCMessage *req, void *ctx);
    /* Bidi only: a received message (valid during the callback), or NULL
     * once when the client half-closed. */
    void (*on_message)(rpc_call *call, const ProtobufCMessage *msg, void *ctx);
    /* Optional: the send queue just became empty (flow control hint). */
    void (*on_drain)(rpc_call *call, void *ctx);
    /* The call is over: finished, cancelled by the client, deadline passed
     * or connection lost (cancelled == true unless the status we sent was
     * delivered). The call is freed when this returns. Optional. */
    void (*on_done)(rpc_call *call, bool cancelled, void *ctx);
} rpc_handler;

/* Creates a server on `loop` (owned by the loop, freed by rpc_loop_free).
 * opts may be NULL. */
MID_RESULT rpc_server_new(rpc_loop *loop, const rpc_server_opts *opts, rpc_server **out);

/* Registers "/pkg.Service/Method" before rpc_server_start. The method path,
 * descriptor, handler table and ctx must outlive the server. Unregistered
 * methods are answered with UNIMPLEMENTED. */
MID_RESULT rpc_server_register(rpc_server *srv, const char *method, rpc_kind kind,
                               const ProtobufCMessageDescriptor *req_desc,
                               const rpc_handler *h, void *ctx);

/* Listens on "host:port" (port 0 picks one; *port_out gets the bound port,
 * may be NULL). tls NULL means plaintext; otherwise clients must present a
 * certificate with exactly one spiffe:// URI SAN, or their calls fail with
 * UNAUTHENTICATED. SO_REUSEPORT is off. Before rpc_server_start. */
MID_RESULT rpc_server_add_tcp(rpc_server *srv, const char *addr, const rpc_tls *tls, int *port_out);

/* Replaces the CA bundle, certificate and key of every TLS port of `srv`
 * for handshakes from now on (open connections keep theirs); used to rotate
 * the server's own SVID. The strings are copied. client_cert_optional and
 * the client fields of `tls` are ignored. MID_E_STATE when srv has no TLS
 * port, MID_E_INVALID for missing PEM, MID_E_NOMEM. Loop thread. */
MID_RESULT rpc_server_set_tls(rpc_server *srv, const rpc_tls *tls);

/* Listens on a Unix socket at `path` with file mode `mode`; each caller's
 * uid, gid and pid are captured at accept. MID_E_EXISTS when something
 * already answers on the path or the path is not a socket (a stale socket
 * file is replaced). Before rpc_server_start. */
MID_RESULT rpc_server_add_unix(rpc_server *srv, const char *path, unsigned mode);

/* Starts serving. */
MID_RESULT rpc_server_start(rpc_server *srv);

/* ---- server calls --------------------------------------------------------- */

typedef enum { RPC_PEER_INSECURE, RPC_PEER_TLS, RPC_PEER_UNIX } rpc_peer_kind;

typedef struct {
    rpc_peer_kind kind;
    const char *spiffe_id; /* RPC_PEER_TLS: the client cert's URI SAN; NULL when
                            * the port's client_cert_optional let a call in
                            * without a certificate */
    uid_t uid;             /* RPC_PEER_UNIX: SO_PEERCRED at accept */
    gid_t gid;
    pid_t pid;
} rpc_peer;

/* Who is calling; valid for the life of the call. */
const rpc_peer *rpc_call_peer(const rpc_call *call);

/* The first value of request header `key` (lower case), NUL-terminated and
 * copied into the call's arena; NULL when absent, binary or not printable. */
const char *rpc_call_metadata(rpc_call *call, const char *key);

/* Milliseconds until the client's deadline (INT64_MAX when none). gRPC
 * cancels the call itself when it passes; on_done then reports it. */
int64_t rpc_call_deadline_ms(const rpc_call *call);

/* An arena living as long as the call, for building responses. */
arena *rpc_call_arena(rpc_call *call);

/* The method path the call was registered under. */
const char *rpc_call_method(const rpc_call *call);

/* Per-call user pointer for the handler. */
void rpc_call_set_user(rpc_call *call, void *user);
void *rpc_call_user(const rpc_call *call);

/* True once the client is gone or a status was set; further sends fail. */
bool rpc_call_is_closed(const rpc_call *call);

/* Serialises `msg` now (the caller keeps ownership of msg) and queues it.
 * MID_E_BUSY when the queue is full (a slow reader: the service should
 * rpc_call_abort it), MID_E_TOO_LARGE over max_msg_bytes, MID_E_STATE after
 * finish/abort or once the client is gone. */
MID_RESULT rpc_call_send(rpc_call *call, const ProtobufCMessage *msg);

/* Sends the final status after every queued message. `message` is copied
 * (may be NULL). MID_E_STATE when already finished. */
MID_RESULT rpc_call_finish(rpc_call *call, rpc_code code, const char *message);

/* Ends the call now with `code`, dropping queued messages; works even when
 * the client stopped reading. No-op once the call is closed. */
void rpc_call_abort(rpc_call *call, rpc_code code, const char *message);

/* Number of messages queued and in flight. */
size_t rpc_call_queued(const rpc_call *call);

/* ---- client ---------------------------------------------------------- */

/* Opens a channel to "unix:/path" or "host:port"; tls NULL means plaintext.
 * The connection is made lazily. max_msg_bytes 0 means 4 MiB. */
MID_RESULT rpc_channel_new(rpc_loop *loop, const char *target, const rpc_tls *tls,
                           size_t max_msg_bytes, rpc_channel **out);

/* Closes the channel; its streams are cancelled (their on_done still runs).
 * NULL is a no-op. Channels left open are closed by rpc_loop_free. */
void rpc_channel_free(rpc_channel *ch);

/* Per-call options; NULL means defaults (no deadline, no metadata). */
typedef struct {
    int64_t timeout_ms;  /* 0: no deadline */
    const rpc_md *md;
    size_t n_md;
    bool wait_for_ready; /* queue the call until the channel connects */
    size_t send_queue_len; /* streams: bounded outbound queue (64) */
} rpc_call_opts;

/* resp (valid during the callback) is non-NULL iff st->code == RPC_OK. */
typedef void (*rpc_unary_cb)(const rpc_status *st, const ProtobufCMessage *resp, void *arg);

/* Starts a unary call; cb runs exactly once on the loop (also on failure
 * after this returned OK, and with CANCELLED at shutdown). */
MID_RESULT rpc_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                     rpc_unary_cb cb, void *arg);

typedef struct {
    /* A response message, valid during the callback. */
    void (*on_message)(rpc_stream *s, const ProtobufCMessage *msg, void *arg);
    /* The stream ended with `st`; it is freed when this returns. */
    void (*on_done)(rpc_stream *s, const rpc_status *st, void *arg);
} rpc_stream_handler;

/* Opens a server-streaming (`first` is the request, then the client
 * half-closes) or bidi stream (`first` may be NULL; send more with
 * rpc_stream_send). on_done always runs once if this returns OK. */
MID_RESULT rpc_stream_open(rpc_channel *ch, const char *method, rpc_kind kind,
                           const ProtobufCMessage *first,
                           const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                           const rpc_stream_handler *h, void *arg, rpc_stream **out);

/* Queues a message (serialised now). MID_E_BUSY when the queue is full,
 * MID_E_STATE after close_send or once the stream ended. */
MID_RESULT rpc_stream_send(rpc_stream *s, const ProtobufCMessage *msg);

/* Half-closes after the queued messages. */
MID_RESULT rpc_stream_close_send(rpc_stream *s);

/* Stops (true) or resumes (false) reading responses; a stopped reader lets
 * HTTP/2 flow control push back on the server. */
void rpc_stream_pause(rpc_stream *s, bool paused);

/* Cancels the stream; on_done follows with CANCELLED. */
void rpc_stream_cancel(rpc_stream *s);

#endif
