/* Unix-socket listeners with peer credentials.
 *
 * gRPC cannot tell who is calling on a Unix socket, so we own the listening
 * socket: an acceptor thread per listener accept4()s non-blocking fds, reads
 * SO_PEERCRED and posts (fd, inode, creds) to the loop, which gives each
 * connection its own grpc_server (grpc_server_add_channel_from_fd with
 * insecure creds) on the shared completion queue; calls carry the identity
 * through their gsrv. gRPC has no disconnect callback, so a sweep timer
 * checks that each connection's fd still refers to the same socket inode and
 * shuts the per-connection server down when it does not. From-fd
 * connections have no handshake timeout: the idle limit
 * (GRPC_ARG_MAX_CONNECTION_IDLE_MS) and a per-uid connection cap bound what
 * a silent or hostile local client can hold. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>

#include "lib/log.h"
#include "lib/rpc_int.h"

#define RPC_SWEEP_MS 1000

struct rpc_uid_count {
    uid_t uid;
    unsigned n;
};

struct rpc_ulisten {
    rpc_ulisten *next;
    rpc_server *srv;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fd;
    ino_t ino;
    int pipe[2];
    pthread_t thr;
    bool thr_started;
};

typedef struct {
    rpc_server *srv;
    int fd;
    ino_t ino;
    struct ucred cred;
} rpc_accepted;

static mid_result fill_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t n = strlen(path);
    MID_ENSURE(n > 0 && n < sizeof sa->sun_path, MID_E_INVALID, "socket path length %zu", n);
    memcpy(sa->sun_path, path, n + 1);
    return mid_ok();
}

/* Refuses a path that is not a socket or that answers; removes a stale one.
 * gRPC would unlink it unconditionally and steal it from a running peer. */
static mid_result claim_path(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        MID_ENSURE(errno == ENOENT, MID_E_IO, "stat %s: %s", path, strerror(errno));
        return mid_ok();
    }
    MID_ENSURE(S_ISSOCK(st.st_mode), MID_E_EXISTS, "%s exists and is not a socket", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    MID_ENSURE(s >= 0, MID_E_IO, "socket: %s", strerror(errno));
    int rc = connect(s, (const struct sockaddr *)sa, sizeof *sa);
    int err = errno;
    close(s);
    MID_ENSURE(rc != 0, MID_E_EXISTS, "%s: another server is answering", path);
    MID_ENSURE(err == ECONNREFUSED, MID_E_EXISTS, "%s: in use (%s)", path, strerror(err));
    MID_ENSURE(unlink(path) == 0 || errno == ENOENT, MID_E_IO, "unlink %s: %s", path,
               strerror(errno));
    return mid_ok();
}

mid_result rpc_server_add_unix(rpc_server *srv, const char *path, unsigned mode)
{
    MID_ENSURE(!srv->started, MID_E_STATE, "add sockets before rpc_server_start");
    MID_ENSURE(path != NULL && (mode & ~0777u) == 0, MID_E_INVALID, "bad socket path or mode");
    struct sockaddr_un sa;
    MID_GUARD(fill_addr(path, &sa));
    MID_GUARD(claim_path(path, &sa));
    rpc_ulisten *l = calloc(1, sizeof *l);
    MID_ENSURE_MEM(l);
    l->fd = -1;
    l->pipe[0] = l->pipe[1] = -1;
    mid_result r = MID_OK_RESULT;
    struct stat st;
    memcpy(l->path, sa.sun_path, sizeof l->path);
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    MID_CHECK(r, l->fd >= 0, MID_E_IO, "socket: %s", strerror(errno));
    MID_CHECK(r, bind(l->fd, (struct sockaddr *)&sa, sizeof sa) == 0, MID_E_IO, "bind %s: %s",
              path, strerror(errno));
    /* chmod before listen: until listen() nobody can connect, whatever the
     * umask made of the file mode */
    MID_CHECK(r, chmod(path, mode) == 0, MID_E_IO, "chmod %s: %s", path, strerror(errno));
    MID_CHECK(r, stat(path, &st) == 0, MID_E_IO, "stat %s: %s", path, strerror(errno));
    l->ino = st.st_ino;
    MID_CHECK(r, listen(l->fd, SOMAXCONN) == 0, MID_E_IO, "listen %s: %s", path, strerror(errno));
    MID_CHECK(r, pipe2(l->pipe, O_CLOEXEC | O_NONBLOCK) == 0, MID_E_IO, "pipe: %s",
              strerror(errno));
    l->srv = srv;
    l->next = srv->listeners;
    srv->listeners = l;
    return mid_ok();
out:
    if (l->fd >= 0) {
        close(l->fd);
        if (stat(path, &st) == 0 && l->ino && st.st_ino == l->ino) unlink(path);
    }
    free(l);
    return r;
}

static struct rpc_uid_count *uid_slot(rpc_server *srv, uid_t uid, bool create)
{
    for (size_t i = 0; i < srv->nuids; i++)
        if (srv->uids[i].uid == uid) return &srv->uids[i];
    if (!create) return NULL;
    struct rpc_uid_count *u = realloc(srv->uids, (srv->nuids + 1) * sizeof *u);
    if (!u) return NULL;
    srv->uids = u;
    srv->uids[srv->nuids] = (struct rpc_uid_count){uid, 0};
    return &srv->uids[srv->nuids++];
}

/* Loop thread: turn an accepted fd into a per-connection grpc_server. */
static void on_accepted(rpc_loop *loop, void *arg)
{
    rpc_accepted *a = arg;
    rpc_server *srv = a->srv;
    rpc_uconn *conn = NULL;
    if (loop->closing || srv->shutting_down) goto drop;
    struct rpc_uid_count *u = uid_slot(srv, a->cred.uid, true);
    if (!u) goto drop;
    if (u->n >= srv->opts.max_conns_per_uid) {
        LOG_WARN("rpc: uid %u has %u connections, refusing another (pid %d)",
                 (unsigned)a->cred.uid, u->n, (int)a->cred.pid);
        goto drop;
    }
    LOG_DEBUG("rpc: accepted fd %d uid %u", a->fd, (unsigned)a->cred.uid);
    conn = calloc(1, sizeof *conn);
    if (!conn) goto drop;
    *conn = (rpc_uconn){.srv = srv, .fd = a->fd, .ino = a->ino, .uid = a->cred.uid,
                        .gid = a->cred.gid, .pid = a->cred.pid};
    rpc_list_init(&conn->link);
    rpc_gsrv *g;
    if (!mid_is_ok(rpc_gsrv_new(srv, conn, &g))) goto drop;
    conn->g = g;
    u->n++;
    rpc_list_push(&srv->uconns, &conn->link);
    grpc_server_start(g->gs);
    g->started = true;
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    grpc_server_add_channel_from_fd(g->gs, a->fd, creds); /* gRPC owns the fd now */
    grpc_server_credentials_release(creds);
    for (size_t i = 0; i < srv->nmethods; i++)
        if (!mid_is_ok(rpc_call_request(g, i))) LOG_ERROR("rpc: %s", mid_errmsg());
    if (!mid_is_ok(rpc_call_request_generic(g))) LOG_ERROR("rpc: %s", mid_errmsg());
    free(a);
    return;
drop:
    free(conn);
    close(a->fd);
    free(a);
}

static void *acceptor(void *arg)
{
    rpc_ulisten *l = arg;
    rpc_loop *loop = l->srv->loop;
    for (;;) {
        struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = l->pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            LOG_ERROR("rpc: poll on %s: %s", l->path, strerror(errno));
            return NULL;
        }
        if (p[1].revents) return NULL;
        for (;;) {
            int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    LOG_WARN("rpc: accept on %s: %s", l->path, strerror(errno));
                    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
                }
                break; /* EAGAIN, or a transient error: back to poll */
            }
            rpc_accepted *a = calloc(1, sizeof *a);
            socklen_t len = sizeof a->cred;
            struct stat st;
            if (!a || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &a->cred, &len) != 0 ||
                fstat(fd, &st) != 0) {
                free(a);
                close(fd);
                continue;
            }
            a->srv = l->srv;
            a->fd = fd;
            a->ino = st.st_ino;
            if (!mid_is_ok(rpc_loop_wake_post(loop, on_accepted, a))) {
                LOG_WARN("rpc: dropping a connection on %s: %s", l->path, mid_errmsg());
                close(fd);
                free(a);
            }
        }
    }
}

/* Has gRPC closed this connection's fd? (The number may have been reused by
 * a newer socket, hence the inode.) */
static bool conn_alive(const rpc_uconn *c)
{
    struct stat st;
    return fstat(c->fd, &st) == 0 && st.st_ino == c->ino && S_ISSOCK(st.st_mode);
}

static void sweep(rpc_loop *loop, void *arg)
{
    rpc_server *srv = arg;
    srv->sweep = NULL;
    rpc_link *n;
    for (rpc_link *l = srv->uconns.next; l != &srv->uconns; l = n) {
        n = l->next;
        rpc_uconn *c = RPC_OWNER(l, rpc_uconn, link);
        if (conn_alive(c)) continue;
        rpc_list_del(&c->link); /* stays off the list until its gsrv is gone */
        rpc_gsrv_shutdown(c->g);
    }
    if (!srv->shutting_down && !mid_is_ok(rpc_timer_add(loop, RPC_SWEEP_MS, sweep, srv, &srv->sweep)))
        LOG_ERROR("rpc: cannot re-arm the connection sweep: %s", mid_errmsg());
}

mid_result rpc_unix_start(rpc_server *srv)
{
    if (!srv->listeners) return mid_ok();
    for (rpc_ulisten *l = srv->listeners; l; l = l->next) {
        int e = pthread_create(&l->thr, NULL, acceptor, l);
        MID_ENSURE(e == 0, MID_E_IO, "cannot start the acceptor for %s: %s", l->path, strerror(e));
        l->thr_started = true;
    }
    return rpc_timer_add(srv->loop, RPC_SWEEP_MS, sweep, srv, &srv->sweep);
}

void rpc_unix_stop(rpc_server *srv)
{
    for (rpc_ulisten *l = srv->listeners; l; l = l->next) {
        if (l->thr_started) {
            ssize_t w;
            do w = write(l->pipe[1], "x", 1);
            while (w < 0 && errno == EINTR);
            pthread_join(l->thr, NULL);
            l->thr_started = false;
        }
        if (l->fd >= 0) {
            close(l->fd);
            l->fd = -1;
            struct stat st;
            if (stat(l->path, &st) == 0 && st.st_ino == l->ino) unlink(l->path);
        }
    }
    if (srv->sweep) rpc_timer_cancel(srv->loop, srv->sweep);
    srv->sweep = NULL;
}

void rpc_unix_conn_gone(rpc_uconn *c)
{
    struct rpc_uid_count *u = uid_slot(c->srv, c->uid, false);
    if (u && u->n > 0) u->n--;
    rpc_list_del(&c->link);
    free(c);
}

void rpc_unix_free(rpc_server *srv)
{
    rpc_unix_stop(srv);
    while (srv->listeners) {
        rpc_ulisten *l = srv->listeners;
        srv->listeners = l->next;
        if (l->pipe[0] >= 0) close(l->pipe[0]);
        if (l->pipe[1] >= 0) close(l->pipe[1]);
        free(l);
    }
    free(srv->uids);
    srv->uids = NULL;
}
