/* Workload attestation by Unix peer credentials (the agent's SDS and Workload
 * API socket). The RPC layer captures SO_PEERCRED at accept(); this module
 * turns it into selectors such as "unix:uid:1000" or "unix:sha256:<hex>",
 * which are matched against registration entries. See docs/attestation.md for
 * the selectors, their sources and the pid-reuse defence. */
#ifndef MESHID_SDS_ATTEST_UNIX_H
#define MESHID_SDS_ATTEST_UNIX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/result.h"

/* The peer as the kernel recorded it at connect(), filled by the RPC layer. */
typedef struct {
    uid_t uid;                /* SO_PEERCRED uid (the peer's effective uid) */
    gid_t gid;                /* SO_PEERCRED gid (the peer's effective gid) */
    pid_t pid;                /* SO_PEERCRED pid; 0 when not visible in our pid namespace */
    uint64_t accept_boot_ns;  /* optional: CLOCK_BOOTTIME at accept(), 0 = not recorded.
                               * A process that started later cannot be the peer. */
} attest_peer;

/* Holds the executable digest cache; safe to share between threads. */
typedef struct attest_unix_ctx attest_unix_ctx;

/* The result of one attestation: an ordered, duplicate-free list of selectors
 * plus flags. Owned by the caller, freed with attest_selectors_free. */
typedef struct attest_selectors attest_selectors;

/* Flags of a selector list. */
enum {
    /* The process could not be inspected (it exited, is a zombie, or its pid
     * is not visible): only the uid/gid/user/group selectors, which come from
     * SO_PEERCRED, are present. */
    ATTEST_F_NO_PROCESS = 1u << 0,
    /* The executable's path, as the agent sees it, does not name the running
     * file (unlinked or replaced since exec, e.g. upgraded; or another mount
     * namespace): no unix:path selector. unix:sha256 is still present and
     * describes what is running. */
    ATTEST_F_NO_PATH = 1u << 1,
};

/* Default bounds. */
#define ATTEST_CACHE_ENTRIES 256
#define ATTEST_MAX_EXE_BYTES ((uint64_t)1 << 30) /* 1 GiB */

/* New context with the default cache size and executable size limit.
 * MID_E_NOMEM, MID_E_INTERNAL (mutex). */
MID_RESULT attest_unix_ctx_new(attest_unix_ctx **out);
/* Frees the context (NULL is fine). No attestation may be running on it. */
void attest_unix_ctx_free(attest_unix_ctx *a);

/* Attests `p`. On success `*out` is a new list owned by the caller.
 * Errors: MID_E_INVALID (NULL argument, uid/gid -1), MID_E_DENIED (the
 * process at p->pid is not the peer, or it changed - exec, pid reuse - while
 * it was being inspected), MID_E_TOO_LARGE (executable over the size limit,
 * too many groups), MID_E_IO (/proc unreadable, e.g. no CAP_SYS_PTRACE for
 * another uid's /proc/<pid>/exe), MID_E_NOMEM, MID_E_CRYPTO. A process that has
 * exited is not an error: see ATTEST_F_NO_PROCESS. */
MID_RESULT attest_unix(attest_unix_ctx *a, const attest_peer *p, attest_selectors **out);

/* Accessors. `i` out of range gives NULL. Strings live as long as the list. */
size_t attest_selectors_count(const attest_selectors *s);
/* "uid", "gid", "user", "group", "path" or "sha256". */
const char *attest_selectors_type(const attest_selectors *s, size_t i);
/* The value, e.g. "1000" or "/usr/bin/envoy". */
const char *attest_selectors_value(const attest_selectors *s, size_t i);
/* The whole selector, e.g. "unix:uid:1000". */
const char *attest_selectors_format(const attest_selectors *s, size_t i);
/* True when the list holds the selector `formatted` (exact byte comparison). */
int attest_selectors_has(const attest_selectors *s, const char *formatted);
/* ATTEST_F_* bits. */
unsigned attest_selectors_flags(const attest_selectors *s);
void attest_selectors_free(attest_selectors *s);

#endif
