/* Private to sds/attest_unix.c and its unit tests: the /proc parsers and the
 * digest cache, exposed so that they can be tested directly. */
#ifndef MESHID_SDS_ATTEST_UNIX_INT_H
#define MESHID_SDS_ATTEST_UNIX_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/result.h"
#include "sds/attest_unix.h"

/* More supplementary groups than the kernel allows (NGROUPS_MAX) is malformed. */
#define ATTEST_MAX_GROUPS 65536

/* Field 22 (starttime, clock ticks since boot) of a /proc/<pid>/stat line of
 * `len` bytes. The comm field (2) is in parentheses and may itself contain
 * spaces and ')', so fields are counted from the last ')'. MID_E_INVALID when
 * the line is malformed or the number overflows. */
MID_RESULT attest_parse_stat_starttime(const char *buf, size_t len, uint64_t *out);

/* From a /proc/<pid>/status text of `len` bytes: the effective uid (second
 * number of "Uid:", the one SO_PEERCRED reports) and the supplementary groups
 * of "Groups:" as a new array owned by the caller (free(); NULL when empty).
 * MID_E_INVALID when a line is missing or malformed, MID_E_TOO_LARGE over
 * ATTEST_MAX_GROUPS, MID_E_NOMEM. */
MID_RESULT attest_parse_status(const char *buf, size_t len, uid_t *euid, gid_t **groups,
                               size_t *ngroups);

/* Seconds a file's ctime must lie in the past before its digest is cached:
 * two writes within one filesystem timestamp tick can leave (size, mtime,
 * ctime) unchanged, so a digest of a file that is still being written is
 * never trusted later (git's "racily clean" rule). */
#define ATTEST_CACHE_MIN_AGE_S 2

/* Context with a cache of `cache_entries` (>= 1) digests, an executable size
 * limit of `max_exe_bytes` and a cache minimum age of `min_age_s` seconds. */
MID_RESULT attest_unix_ctx_new_with(size_t cache_entries, uint64_t max_exe_bytes,
                                    unsigned min_age_s, attest_unix_ctx **out);

/* SHA-256 of the regular file open at `fd` (read from offset 0), through the
 * cache keyed by (device, inode, size, mtime, ctime). MID_E_INVALID (not a
 * regular file), MID_E_TOO_LARGE, MID_E_DENIED (file changed while hashed),
 * MID_E_IO, MID_E_CRYPTO. */
MID_RESULT attest_unix_digest_fd(attest_unix_ctx *a, int fd, unsigned char digest[32]);

/* Cache counters since the context was created. */
void attest_unix_cache_stats(attest_unix_ctx *a, uint64_t *hits, uint64_t *misses);

#endif
