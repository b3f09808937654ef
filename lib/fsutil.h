/* Small, careful file helpers: bounded reads and atomic writes with a mode. */
#ifndef MESHID_LIB_FSUTIL_H
#define MESHID_LIB_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "lib/result.h"

/* Reads all of `path` into a fresh NUL-terminated buffer owned by the caller
 * (free()). Fails with MID_E_NOT_FOUND if absent, MID_E_TOO_LARGE if the file
 * holds more than `max` bytes, MID_E_IO otherwise. `*len` excludes the NUL. */
MID_RESULT fs_read_file(const char *path, size_t max, char **out, size_t *len);

/* Writes `len` bytes to `path` atomically (temp file in the same directory,
 * fsync, rename, fsync of the directory) with permission bits `mode`.
 * The file never exists with wider permissions than `mode`. */
MID_RESULT fs_write_file(const char *path, const void *data, size_t len, mode_t mode);

/* Creates `path` and its missing parents with `mode` (like mkdir -p). */
MID_RESULT fs_mkdir_p(const char *path, mode_t mode);

/* Joins dir and name into `out` (size `cap`); MID_E_TOO_LARGE if it does not fit. */
MID_RESULT fs_join(char *out, size_t cap, const char *dir, const char *name);

/* True when `path` exists (any type). */
int fs_exists(const char *path);

#endif
