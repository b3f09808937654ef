/* The agent's retry schedule for renewing its own SVID, exposed for
 * tests/unit/agent (checked without waiting for it). Nothing else should
 * need this header: sds/agent.c applies it itself. */
#ifndef MESHID_SDS_AGENT_INT_H
#define MESHID_SDS_AGENT_INT_H

#include <stdint.h>

/* Retries of a failed RenewAgent are never closer than this (or than the
 * agent's minimum backoff, when that is shorter). */
#define AGENT_RENEW_RETRY_FLOOR_MS 100

/* The delay (ms) before the next RenewAgent after a failure: the backoff
 * `backoff_ms`, but no later than half of what is left of the SVID
 * (`left_ms`, <= 0 once expired) so that a few tries still fit before it
 * expires, and never under `floor_ms`: halving what is left would
 * otherwise end in a burst of retries a millisecond apart just before
 * expiry. */
int64_t agent_renew_retry_ms(int64_t backoff_ms, int64_t left_ms, int64_t floor_ms);

#endif
