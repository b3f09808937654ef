#include "lib/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

MID_RESULT fs_read_file(const char *path, size_t max, char **out, size_t *len)
{
    mid_result r = MID_OK_RESULT;
    char *buf = NULL;
    /* O_NONBLOCK so that a FIFO at `path` cannot block us before the S_ISREG check. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) MID_BAIL(MID_E_NOT_FOUND, "%s: no such file", path);
        MID_BAIL(MID_E_IO, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    MID_CHECK(r, fstat(fd, &st) == 0, MID_E_IO, "%s: %s", path, strerror(errno));
    MID_CHECK(r, S_ISREG(st.st_mode), MID_E_IO, "%s: not a regular file", path);
    MID_CHECK(r, (size_t)st.st_size <= max, MID_E_TOO_LARGE,
              "%s: %lld bytes is over the limit of %zu", path, (long long)st.st_size, max);
    buf = malloc((size_t)st.st_size + 1);
    MID_CHECK_MEM(r, buf);
    size_t got = 0;
    for (;;) {
        MID_CHECK(r, got <= max, MID_E_TOO_LARGE, "%s: over the limit of %zu bytes", path, max);
        size_t room = (size_t)st.st_size - got;
        if (room == 0) {
            /* File may have grown since fstat: probe for one more byte. */
            char probe;
            ssize_t n = read(fd, &probe, 1);
            MID_CHECK(r, n == 0, MID_E_TOO_LARGE, "%s: file changed while reading", path);
            break;
        }
        ssize_t n = read(fd, buf + got, room);
        if (n < 0 && errno == EINTR) continue;
        MID_CHECK(r, n >= 0, MID_E_IO, "%s: %s", path, strerror(errno));
        if (n == 0) break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return r;
}

static mid_result fsync_dir_of(const char *path)
{
    char dir[4096];
    size_t n = strlen(path);
    MID_ENSURE(n < sizeof dir, MID_E_TOO_LARGE, "path too long");
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    MID_ENSURE(fd >= 0, MID_E_IO, "%s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    MID_ENSURE(rc == 0, MID_E_IO, "fsync %s: %s", dir, strerror(errno));
    return mid_ok();
}

MID_RESULT fs_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    mid_result r = MID_OK_RESULT;
    char tmp[4096];
    int fd = -1;
    static atomic_uint counter;
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                     atomic_fetch_add(&counter, 1));
    MID_ENSURE(n > 0 && (size_t)n < sizeof tmp, MID_E_TOO_LARGE, "%s: path too long", path);
    (void)unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    MID_CHECK(r, fd >= 0, MID_E_IO, "%s: %s", tmp, strerror(errno));
    /* open() applies the umask; make the bits exactly `mode`. */
    MID_CHECK(r, fchmod(fd, mode) == 0, MID_E_IO, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        MID_CHECK(r, w > 0, MID_E_IO, "%s: %s", tmp, strerror(errno));
        p += w;
        left -= (size_t)w;
    }
    MID_CHECK(r, fsync(fd) == 0, MID_E_IO, "%s: %s", tmp, strerror(errno));
    /* The descriptor is gone even when close() fails: never close it twice. */
    int crc = close(fd);
    fd = -1;
    MID_CHECK(r, crc == 0, MID_E_IO, "%s: %s", tmp, strerror(errno));
    MID_CHECK(r, rename(tmp, path) == 0, MID_E_IO, "%s: %s", path, strerror(errno));
    MID_TRY(r, fsync_dir_of(path));
out:
    if (fd >= 0) close(fd);
    if (!mid_is_ok(r)) (void)unlink(tmp);
    return r;
}

MID_RESULT fs_mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    size_t n = strlen(path);
    MID_ENSURE(n > 0 && n < sizeof buf, MID_E_INVALID, "bad directory path");
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            MID_BAIL(MID_E_IO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        MID_BAIL(MID_E_IO, "mkdir %s: %s", buf, strerror(errno));
    struct stat st;
    MID_ENSURE(stat(buf, &st) == 0 && S_ISDIR(st.st_mode), MID_E_IO, "%s: not a directory", buf);
    return mid_ok();
}

MID_RESULT fs_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    MID_ENSURE(n > 0 && (size_t)n < cap, MID_E_TOO_LARGE, "path too long: %s/%s", dir, name);
    return mid_ok();
}

int fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
