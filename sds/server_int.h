/* The server's schedule for renewing its own TLS SVID, exposed for
 * tests/unit/server (the timing can be checked without waiting for it).
 * Nothing else should need this header: sds/server.c applies it itself. */
#ifndef MESHID_SDS_SERVER_INT_H
#define MESHID_SDS_SERVER_INT_H

#include <stdint.h>

/* The longest the server goes without looking at its TLS material: the
 * trust bundle it verifies client certificates with is followed on the same
 * timer. */
#define SERVER_TLS_CHECK_MS 30000
/* First retry after a failed renewal of the server's SVID; doubles up to
 * SERVER_TLS_CHECK_MS, but never later than half the time left. */
#define SERVER_TLS_RETRY_MS 1000

/* When the server's SVID is due for renewal (ms): half way from when it was
 * taken into use (`got_ms`) to its notAfter (`not_after_ms`). Measured from
 * `got_ms`, not notBefore (backdated by the CA), so an SVID cut short by its
 * issuer's own expiry is renewed half way through what it really has. */
int64_t server_tls_renew_at_ms(int64_t got_ms, int64_t not_after_ms);

/* How long (ms, >= 0) until the server looks at its TLS SVID again, at
 * `now_ms`, for an SVID taken into use at `got_ms` that expires at
 * `not_after_ms`, after `fails` renewals failed in a row (0: none): with no
 * failure, the renewal point (0 once it is past), and at most
 * SERVER_TLS_CHECK_MS; after failures, SERVER_TLS_RETRY_MS doubling per
 * failure up to SERVER_TLS_CHECK_MS, never later than half the time left
 * (at least 100 ms apart; an expired SVID is retried at the plain backoff). */
int64_t server_tls_next_ms(int64_t now_ms, int64_t got_ms, int64_t not_after_ms, int fails);

#endif
