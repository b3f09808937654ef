/* Results and errors for all of meshid.
 *
 * Every fallible function returns `mid_result` (a struct, so it cannot be mixed
 * up with an int, an OpenSSL 1-is-success code or an SQLite code) and is
 * declared with MID_RESULT so that ignoring it is a compile error.
 * On failure the thread-local last error holds the code, a message and the
 * file and line where it was raised; mid_errmsg() reads it back.
 *
 * Two styles, one per function:
 *   - early return:  MID_GUARD(f(x)); MID_ENSURE(n < MAX, MID_E_TOO_LARGE, "...");
 *   - one cleanup exit: mid_result r = MID_OK_RESULT; MID_TRY(r, f(x));
 *     MID_CHECK(r, cond, err, "..."); ... out: free(...); return r;
 *     (these jump to a label named `out`).
 */
#ifndef MESHID_LIB_RESULT_H
#define MESHID_LIB_RESULT_H

#include <stdarg.h>
#include <stdbool.h>

/* One project error enum, grouped by category (hundreds digit). */
typedef enum {
    MID_E_OK = 0,
    /* caller or peer input */
    MID_E_INVALID = 100, /* malformed or unacceptable input */
    MID_E_TOO_LARGE,     /* input over a documented limit */
    MID_E_NOT_FOUND,     /* named thing does not exist */
    MID_E_EXISTS,        /* thing already exists */
    MID_E_DENIED,        /* policy refused the request */
    MID_E_STATE,         /* operation not valid in the current state */
    MID_E_USAGE,         /* command-line usage error */
    /* environment */
    MID_E_IO = 200,      /* file or socket I/O failed */
    MID_E_NOMEM,         /* allocation failed */
    MID_E_DB,            /* database error */
    MID_E_BUSY,          /* database locked or busy beyond the timeout */
    MID_E_CORRUPT,       /* stored data is damaged or tampered with */
    /* cryptography */
    MID_E_CRYPTO = 300,  /* a crypto library call failed */
    MID_E_VERIFY,        /* a signature or chain did not verify */
    /* bugs */
    MID_E_INTERNAL = 900
} mid_err;

typedef struct {
    mid_err err;
} mid_result;

#define MID_RESULT __attribute__((warn_unused_result)) mid_result
#define MID_OK_RESULT ((mid_result){MID_E_OK})

static inline bool mid_is_ok(mid_result r) { return r.err == MID_E_OK; }
static inline mid_result mid_ok(void) { return MID_OK_RESULT; }

/* Records the last error for this thread and returns it as a result.
 * The message is formatted with vsnprintf and truncated to 1 KiB. */
mid_result mid_fail(mid_err err, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like mid_fail, and appends the reason of the newest OpenSSL error, then
 * clears OpenSSL's thread error queue. */
mid_result mid_fail_ossl(mid_err err, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The last error recorded on this thread: code, message, origin. The message
 * pointer stays valid until the next mid_fail on this thread. */
mid_err mid_errcode(void);
const char *mid_errmsg(void);
const char *mid_errfile(void);
int mid_errline(void);
/* Forget the last error (used by tests and by code that recovers). */
void mid_errclear(void);
/* Stable short name of an error code, e.g. "invalid". */
const char *mid_errname(mid_err err);

#define MID_BAIL(err, ...) return mid_fail((err), __FILE__, __LINE__, __VA_ARGS__)

#define MID_ENSURE(cond, err, ...)                                                  \
    do {                                                                            \
        if (!(cond)) MID_BAIL((err), __VA_ARGS__);                                  \
    } while (0)

#define MID_ENSURE_MEM(ptr) MID_ENSURE((ptr) != NULL, MID_E_NOMEM, "out of memory")

#define MID_GUARD(expr)                                                             \
    do {                                                                            \
        mid_result mid_guard_r_ = (expr);                                           \
        if (!mid_is_ok(mid_guard_r_)) return mid_guard_r_;                          \
    } while (0)

/* OpenSSL convention: 1 is success. */
#define MID_GUARD_OSSL(expr, err, ...)                                              \
    do {                                                                            \
        if ((expr) != 1) return mid_fail_ossl((err), __FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

/* Cleanup-exit style: the function has a `mid_result r` and a label `out`. */
#define MID_TRY(r, expr)                                                            \
    do {                                                                            \
        (r) = (expr);                                                               \
        if (!mid_is_ok(r)) goto out;                                                \
    } while (0)

#define MID_CHECK(r, cond, err, ...)                                                \
    do {                                                                            \
        if (!(cond)) {                                                              \
            (r) = mid_fail((err), __FILE__, __LINE__, __VA_ARGS__);                 \
            goto out;                                                               \
        }                                                                           \
    } while (0)

#define MID_CHECK_OSSL(r, expr, err, ...)                                           \
    do {                                                                            \
        if ((expr) != 1) {                                                          \
            (r) = mid_fail_ossl((err), __FILE__, __LINE__, __VA_ARGS__);            \
            goto out;                                                               \
        }                                                                           \
    } while (0)

#define MID_CHECK_MEM(r, ptr) MID_CHECK((r), (ptr) != NULL, MID_E_NOMEM, "out of memory")

#endif
