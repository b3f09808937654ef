/* Stopping an rpc loop on SIGINT/SIGTERM without async-signal hazards: the
 * signals are blocked in every thread and one small thread takes them with
 * sigwait, then calls rpc_loop_stop (safe from any thread). Used by every
 * long-running command (server, agent, dev). */
#ifndef MESHID_LIB_SIGSTOP_H
#define MESHID_LIB_SIGSTOP_H

#include "lib/result.h"
#include "lib/rpc.h"

typedef struct sigstop sigstop;

/* Blocks SIGINT and SIGTERM in the calling thread. Call before creating any
 * thread (the rpc loop, worker pools), so that they all inherit the mask. */
MID_RESULT sigstop_block(void);

/* Starts the thread that stops `loop` on the first SIGINT or SIGTERM.
 * MID_E_IO if the thread cannot start, MID_E_NOMEM. */
MID_RESULT sigstop_start(rpc_loop *loop, sigstop **out);

/* Ends the thread (waking it if no signal came) and frees it. Returns the
 * signal received, or 0 when the loop stopped for another reason. NULL ok. */
int sigstop_end(sigstop *s);

#endif
