/* meshid svid fetch [--socket PATH] [--write DIR] [--watch]
 * A SPIFFE Workload API client: FetchX509SVID on the agent's socket. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca/x509.h"
#include "cli/cli.h"
#include "lib/fsutil.h"
#include "lib/rpc.h"
#include "lib/timeutil.h"
#include "spiffe/workload.pb-c.h"

#define FETCH_USAGE "meshid svid fetch [--socket PATH] [--write DIR] [--watch]"
#define FETCH_TIMEOUT_MS 30000
#define FETCH_M "/SpiffeWorkloadAPI/FetchX509SVID"

/* Also declared in cli/cli.h. */
int svid_fetch_cmd(cli_ctx *ctx, int argc, char **argv);

typedef struct {
    rpc_loop *loop;
    const char *socket;
    const char *dir;
    bool watch;
    int updates;
    int rc;          /* exit code once decided */
    bool done;
    sigset_t set;
    int sig;
} fetch_state;

/* Concatenated DER certificates -> PEM text (malloc). */
static mid_result der_certs_pem(const uint8_t *d, size_t len, char **out, X509 **first)
{
    *out = NULL;
    if (first) *first = NULL;
    char *pem = NULL;
    const unsigned char *p = d, *end = d + len;
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, len > 0, MID_E_INVALID, "no certificates in the response");
    while (p < end) {
        X509 *x = d2i_X509(NULL, &p, (long)(end - p));
        MID_CHECK(r, x != NULL, MID_E_INVALID, "a certificate in the response does not parse");
        r = ca_x509_append_pem(x, &pem);
        if (first && !*first) *first = x;
        else X509_free(x);
        if (!mid_is_ok(r)) goto out;
    }
    *out = pem;
    pem = NULL;
out:
    free(pem);
    ERR_clear_error();
    return r;
}

/* PKCS#8 DER -> "PRIVATE KEY" PEM, after checking it parses. */
static mid_result key_pem(const uint8_t *d, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    const unsigned char *p = d;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    EVP_PKEY *k = p8 ? EVP_PKCS82PKEY(p8) : NULL;
    BIO *b = NULL;
    mid_result r = MID_OK_RESULT;
    MID_CHECK(r, k != NULL && p == d + len, MID_E_INVALID, "the SVID key is not PKCS#8");
    b = BIO_new(BIO_s_mem());
    MID_CHECK_MEM(r, b);
    MID_CHECK(r, PEM_write_bio_PKCS8_PRIV_KEY_INFO(b, p8) == 1, MID_E_CRYPTO, "key PEM");
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    *out = malloc((size_t)n + 1);
    MID_CHECK_MEM(r, *out);
    memcpy(*out, data, (size_t)n);
    (*out)[n] = '\0';
    *out_len = (size_t)n;
out:
    if (b) {
        char *mem = NULL;
        long mlen = BIO_get_mem_data(b, &mem);
        if (mlen > 0) OPENSSL_cleanse(mem, (size_t)mlen);
        BIO_free(b);
    }
    EVP_PKEY_free(k);
    PKCS8_PRIV_KEY_INFO_free(p8);
    ERR_clear_error();
    return r;
}

static mid_result write_files(const char *dir, const X509SVID *s)
{
    char path[4096];
    char *chain = NULL, *bundle = NULL, *key = NULL;
    size_t key_len = 0;
    mid_result r = MID_OK_RESULT;
    MID_TRY(r, der_certs_pem(s->x509_svid.data, s->x509_svid.len, &chain, NULL));
    MID_TRY(r, der_certs_pem(s->bundle.data, s->bundle.len, &bundle, NULL));
    MID_TRY(r, key_pem(s->x509_svid_key.data, s->x509_svid_key.len, &key, &key_len));
    MID_TRY(r, fs_mkdir_p(dir, 0700));
    /* key first: svid.pem never names a key that is not there yet */
    MID_TRY(r, fs_join(path, sizeof path, dir, "svid.key"));
    MID_TRY(r, fs_write_file(path, key, key_len, 0600));
    MID_TRY(r, fs_join(path, sizeof path, dir, "svid.pem"));
    MID_TRY(r, fs_write_file(path, chain, strlen(chain), 0644));
    MID_TRY(r, fs_join(path, sizeof path, dir, "bundle.pem"));
    MID_TRY(r, fs_write_file(path, bundle, strlen(bundle), 0644));
out:
    free(chain);
    free(bundle);
    if (key) {
        OPENSSL_cleanse(key, key_len);
        free(key);
    }
    return r;
}

static void finish(fetch_state *fs, int rc)
{
    if (fs->done) return;
    fs->done = true;
    fs->rc = rc;
    rpc_loop_stop(fs->loop);
}

static void on_message(rpc_stream *s, const ProtobufCMessage *msg, void *arg)
{
    fetch_state *fs = arg;
    const X509SVIDResponse *m = (const X509SVIDResponse *)msg;
    if (m->n_svids == 0) {
        fprintf(stderr, "meshid: error: the agent sent no SVID\n");
        finish(fs, CLI_EXIT_ERROR);
        rpc_stream_cancel(s);
        return;
    }
    fs->updates++;
    for (size_t i = 0; i < m->n_svids; i++) {
        const X509SVID *sv = m->svids[i];
        char *chain = NULL;
        X509 *leaf = NULL;
        char serial[128] = "?", exp[TIME_RFC3339_LEN] = "?";
        int64_t nb = 0, na = 0;
        if (mid_is_ok(der_certs_pem(sv->x509_svid.data, sv->x509_svid.len, &chain, &leaf))) {
            if (!mid_is_ok(ca_x509_serial_hex(leaf, serial, sizeof serial)))
                snprintf(serial, sizeof serial, "?");
            if (mid_is_ok(ca_x509_validity(leaf, &nb, &na))) time_format_rfc3339(na, exp);
        }
        X509_free(leaf);
        free(chain);
        if (fs->watch) {
            char now[TIME_RFC3339_LEN];
            time_format_rfc3339(time_now(), now);
            printf("%s update %d: %s serial %s expires %s%s\n", now, fs->updates, sv->spiffe_id,
                   serial, exp, i == 0 ? " (default)" : "");
        } else {
            printf("%s serial %s expires %s%s\n", sv->spiffe_id, serial, exp,
                   i == 0 && m->n_svids > 1 ? " (default)" : "");
        }
    }
    if (fs->dir) {
        mid_result r = write_files(fs->dir, m->svids[0]);
        if (!mid_is_ok(r)) {
            fprintf(stderr, "meshid: error: %s\n", mid_errmsg());
            finish(fs, CLI_EXIT_ERROR);
            rpc_stream_cancel(s);
            return;
        }
        if (!fs->watch) printf("wrote svid.pem, svid.key, bundle.pem into %s/\n", fs->dir);
    }
    fflush(stdout);
    if (!fs->watch) {
        finish(fs, CLI_EXIT_OK);
        rpc_stream_cancel(s);
    }
}

static void on_done(rpc_stream *s, const rpc_status *st, void *arg)
{
    (void)s;
    fetch_state *fs = arg;
    if (fs->done) return;
    switch (st->code) {
    case RPC_OK:
        fprintf(stderr, "meshid: error: the agent closed the stream\n");
        break;
    case RPC_PERMISSION_DENIED:
        fprintf(stderr, "meshid: error: no identity issued for this workload (uid %lu)\n",
                (unsigned long)geteuid());
        break;
    case RPC_DEADLINE_EXCEEDED:
        fprintf(stderr, "meshid: error: no SVID within %d s (matched but not issued yet?)\n",
                FETCH_TIMEOUT_MS / 1000);
        break;
    case RPC_UNAVAILABLE:
        fprintf(stderr, "meshid: error: cannot reach the agent at %s: %s\n", fs->socket,
                st->message ? st->message : "unavailable");
        break;
    default:
        fprintf(stderr, "meshid: error: FetchX509SVID failed (%d): %s\n", (int)st->code,
                st->message ? st->message : "");
    }
    finish(fs, CLI_EXIT_ERROR);
}

static void *signal_thread(void *arg)
{
    fetch_state *fs = arg;
    int sig = 0;
    if (sigwait(&fs->set, &sig) == 0) {
        fs->sig = sig;
        rpc_loop_stop(fs->loop);
    }
    return NULL;
}

int svid_fetch_cmd(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"write", required_argument, NULL, 'w'},
                                         {"watch", no_argument, NULL, 'W'},
                                         {NULL, 0, NULL, 0}};
    fetch_state fs = {.rc = CLI_EXIT_OK};
    char sock[4096];
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 's': fs.socket = optarg; break;
        case 'w': fs.dir = optarg; break;
        case 'W': fs.watch = true; break;
        default: return cli_usage(FETCH_USAGE, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage(FETCH_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!fs.socket) fs.socket = getenv("MESHID_AGENT_SOCKET");
    if (!fs.socket || !*fs.socket) {
        char run[4096];
        mid_result r = fs_join(run, sizeof run, ctx->data_dir, "run");
        if (mid_is_ok(r)) r = fs_join(sock, sizeof sock, run, "agent.sock");
        if (!mid_is_ok(r)) return cli_fail(r);
        fs.socket = sock;
    }
    if (!fs_exists(fs.socket)) {
        fprintf(stderr,
                "meshid: error: no agent socket at %s (is `meshid agent` running? use --socket "
                "or MESHID_AGENT_SOCKET)\n",
                fs.socket);
        return CLI_EXIT_ERROR;
    }

    char target[4200];
    snprintf(target, sizeof target, "unix:%s", fs.socket);
    rpc_loop *loop = NULL;
    rpc_channel *ch = NULL;
    pthread_t th;
    bool th_started = false;
    int rc;
    sigemptyset(&fs.set);
    sigaddset(&fs.set, SIGINT);
    sigaddset(&fs.set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &fs.set, NULL);

    mid_result r = rpc_loop_new(&loop);
    if (!mid_is_ok(r)) goto fail;
    fs.loop = loop;
    r = rpc_channel_new(loop, target, NULL, 0, &ch);
    if (!mid_is_ok(r)) goto fail;
    {
        static const rpc_stream_handler h = {.on_message = on_message, .on_done = on_done};
        rpc_md md = {.key = "workload.spiffe.io", .value = "true"};
        rpc_call_opts o = {.timeout_ms = fs.watch ? 0 : FETCH_TIMEOUT_MS, .md = &md, .n_md = 1};
        X509SVIDRequest req = X509_SVIDREQUEST__INIT;
        rpc_stream *st = NULL;
        r = rpc_stream_open(ch, FETCH_M, RPC_SERVER_STREAM, &req.base,
                            &x509_svidresponse__descriptor, &o, &h, &fs, &st);
        if (!mid_is_ok(r)) goto fail;
    }
    if (pthread_create(&th, NULL, signal_thread, &fs) != 0) {
        r = mid_fail(MID_E_IO, __FILE__, __LINE__, "cannot start the signal thread");
        goto fail;
    }
    th_started = true;
    r = rpc_loop_run(loop);
    if (!mid_is_ok(r)) goto fail;
    rc = fs.done ? fs.rc : CLI_EXIT_OK; /* a signal in --watch mode is a normal end */
    fs.done = true; /* the cancellation in rpc_loop_free is ours, not an error */
    goto out;
fail:
    rc = cli_fail(r);
out:
    if (th_started) {
        if (fs.sig == 0) pthread_kill(th, SIGTERM);
        pthread_join(th, NULL);
    }
    rpc_loop_free(loop);
    return rc;
}
