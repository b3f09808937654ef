#include "lib/result.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

#define MID_ERRMSG_MAX 1024

static _Thread_local struct {
    mid_err err;
    const char *file;
    int line;
    char msg[MID_ERRMSG_MAX];
} last_error;

__attribute__((format(printf, 4, 0))) static mid_result record(mid_err err, const char *file,
                                                               int line, const char *fmt,
                                                               va_list ap)
{
    /* Format into a scratch buffer first: callers often wrap the previous
     * error, passing mid_errmsg() as an argument, and vsnprintf must not
     * read from the buffer it is writing. */
    char msg[MID_ERRMSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    memcpy(last_error.msg, msg, sizeof msg);
    last_error.err = err;
    last_error.file = file;
    last_error.line = line;
    return (mid_result){err};
}

mid_result mid_fail(mid_err err, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mid_result r = record(err, file, line, fmt, ap);
    va_end(ap);
    return r;
}

mid_result mid_fail_ossl(mid_err err, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mid_result r = record(err, file, line, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_peek_last_error();
    if (e != 0) {
        size_t used = strlen(last_error.msg);
        char reason[256];
        ERR_error_string_n(e, reason, sizeof reason);
        if (used + 3 < sizeof last_error.msg)
            snprintf(last_error.msg + used, sizeof last_error.msg - used, " (%s)", reason);
    }
    ERR_clear_error();
    return r;
}

mid_err mid_errcode(void) { return last_error.err; }
const char *mid_errmsg(void) { return last_error.msg; }
const char *mid_errfile(void) { return last_error.file ? last_error.file : ""; }
int mid_errline(void) { return last_error.line; }

void mid_errclear(void)
{
    last_error.err = MID_E_OK;
    last_error.file = NULL;
    last_error.line = 0;
    last_error.msg[0] = '\0';
}

const char *mid_errname(mid_err err)
{
    switch (err) {
    case MID_E_OK: return "ok";
    case MID_E_INVALID: return "invalid";
    case MID_E_TOO_LARGE: return "too-large";
    case MID_E_NOT_FOUND: return "not-found";
    case MID_E_EXISTS: return "exists";
    case MID_E_DENIED: return "denied";
    case MID_E_STATE: return "bad-state";
    case MID_E_USAGE: return "usage";
    case MID_E_IO: return "io";
    case MID_E_NOMEM: return "no-memory";
    case MID_E_DB: return "database";
    case MID_E_BUSY: return "busy";
    case MID_E_CORRUPT: return "corrupt";
    case MID_E_CRYPTO: return "crypto";
    case MID_E_VERIFY: return "verify";
    case MID_E_INTERNAL: return "internal";
    }
    return "unknown";
}
