#include "lib/sigstop.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

struct sigstop {
    rpc_loop *loop;
    pthread_t th;
    atomic_int sig;
    atomic_int ending;
};

static void stop_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
}

MID_RESULT sigstop_block(void)
{
    sigset_t set;
    stop_set(&set);
    MID_ENSURE(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0, MID_E_IO, "cannot block signals");
    return mid_ok();
}

static void *sig_thread(void *arg)
{
    sigstop *s = arg;
    sigset_t set;
    stop_set(&set);
    int sig = 0;
    if (sigwait(&set, &sig) == 0 && !atomic_load(&s->ending)) {
        atomic_store(&s->sig, sig);
        rpc_loop_stop(s->loop);
    }
    return NULL;
}

MID_RESULT sigstop_start(rpc_loop *loop, sigstop **out)
{
    sigstop *s = calloc(1, sizeof *s);
    MID_ENSURE_MEM(s);
    s->loop = loop;
    if (pthread_create(&s->th, NULL, sig_thread, s) != 0) {
        free(s);
        MID_BAIL(MID_E_IO, "cannot start the signal thread");
    }
    *out = s;
    return mid_ok();
}

int sigstop_end(sigstop *s)
{
    if (s == NULL) return 0;
    atomic_store(&s->ending, 1);
    if (atomic_load(&s->sig) == 0) pthread_kill(s->th, SIGTERM); /* wakes sigwait */
    pthread_join(s->th, NULL);
    int sig = atomic_load(&s->sig);
    free(s);
    return sig;
}
