/* The WAL write-gathering VFS: see walbuf.h. Every method forwards to the
 * default VFS ("unix"); only xWrite on a WAL file is deferred, and every
 * other method on that file writes out what was gathered first. */
#include "storage/sqlite/walbuf.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Gathered bytes past this are written out before more are taken: a
 * commit of a few hundred frames fits, memory stays bounded. */
#define WALBUF_MAX (4u << 20)
#define WALBUF_CHUNK (64u << 10) /* bytes per write handed to the unix VFS */

typedef struct {
    sqlite3_file base;     /* pMethods = &wb_methods once open */
    sqlite3_file *real;    /* the default VFS's file, right after this struct */
    int is_wal;
    unsigned char *buf;    /* gathered bytes for offsets [off, off + len) */
    size_t len, cap;
    sqlite3_int64 off;
} wb_file;

static sqlite3_vfs wb_vfs;
static sqlite3_vfs *wb_real;
static atomic_uint_fast64_t wb_wal_writes, wb_os_writes;

#define REAL(f) (((wb_file *)(f))->real)
#define RM(f) (REAL(f)->pMethods)

/* Writes out what is gathered, in pieces of WALBUF_CHUNK: the unix VFS
 * takes at most 128 KiB - 1 per write (it masks the length with 0x1ffff,
 * so a bigger write fails as "disk full"). On failure the bytes are
 * dropped: the caller's operation (a sync, i.e. a commit) fails and SQLite
 * never publishes frames it could not write. */
static int wb_flush(wb_file *f)
{
    int rc = SQLITE_OK;
    for (size_t at = 0; at < f->len && rc == SQLITE_OK;) {
        size_t n = f->len - at < WALBUF_CHUNK ? f->len - at : WALBUF_CHUNK;
        atomic_fetch_add(&wb_os_writes, 1);
        rc = f->real->pMethods->xWrite(f->real, f->buf + at, (int)n,
                                       f->off + (sqlite3_int64)at);
        at += n;
    }
    f->len = 0;
    return rc;
}

static int wb_close(sqlite3_file *pf)
{
    wb_file *f = (wb_file *)pf;
    int rc = wb_flush(f);
    int rc2 = RM(f)->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *pf, void *p, int n, sqlite3_int64 off)
{
    int rc = wb_flush((wb_file *)pf);
    return rc != SQLITE_OK ? rc : RM(pf)->xRead(REAL(pf), p, n, off);
}

static int wb_write(sqlite3_file *pf, const void *p, int n, sqlite3_int64 off)
{
    wb_file *f = (wb_file *)pf;
    if (!f->is_wal) return RM(f)->xWrite(f->real, p, n, off);
    atomic_fetch_add(&wb_wal_writes, 1);
    size_t amt = (size_t)n;
    if (f->len > 0 && (off != f->off + (sqlite3_int64)f->len || f->len + amt > WALBUF_MAX)) {
        int rc = wb_flush(f);
        if (rc != SQLITE_OK) return rc;
    }
    if (amt > WALBUF_CHUNK) { /* bigger than a piece: straight through (SQLite's
                                 WAL writes are a header or a page) */
        atomic_fetch_add(&wb_os_writes, 1);
        return RM(f)->xWrite(f->real, p, n, off);
    }
    if (f->len + amt > f->cap) {
        size_t cap = f->cap ? f->cap : 256u << 10;
        while (cap < f->len + amt) cap *= 2;
        unsigned char *nb = realloc(f->buf, cap);
        if (nb == NULL) { /* no room to gather: write what we have and this */
            int rc = wb_flush(f);
            if (rc != SQLITE_OK) return rc;
            atomic_fetch_add(&wb_os_writes, 1);
            return RM(f)->xWrite(f->real, p, n, off);
        }
        f->buf = nb;
        f->cap = cap;
    }
    if (f->len == 0) f->off = off;
    memcpy(f->buf + f->len, p, amt);
    f->len += amt;
    return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
    int rc = wb_flush((wb_file *)pf);
    return rc != SQLITE_OK ? rc : RM(pf)->xTruncate(REAL(pf), size);
}

static int wb_sync(sqlite3_file *pf, int flags)
{
    int rc = wb_flush((wb_file *)pf);
    return rc != SQLITE_OK ? rc : RM(pf)->xSync(REAL(pf), flags);
}

static int wb_file_size(sqlite3_file *pf, sqlite3_int64 *size)
{
    int rc = wb_flush((wb_file *)pf);
    return rc != SQLITE_OK ? rc : RM(pf)->xFileSize(REAL(pf), size);
}

static int wb_lock(sqlite3_file *pf, int lock) { return RM(pf)->xLock(REAL(pf), lock); }
static int wb_unlock(sqlite3_file *pf, int lock)
{
    int rc = wb_flush((wb_file *)pf);
    int rc2 = RM(pf)->xUnlock(REAL(pf), lock);
    return rc != SQLITE_OK ? rc : rc2;
}
static int wb_check_reserved(sqlite3_file *pf, int *out)
{
    return RM(pf)->xCheckReservedLock(REAL(pf), out);
}

static int wb_file_control(sqlite3_file *pf, int op, void *arg)
{
    int rc = wb_flush((wb_file *)pf);
    if (rc != SQLITE_OK) return rc;
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* Say we are here, then what lies below (as SQLite's own shims do). */
        rc = RM(pf)->xFileControl(REAL(pf), op, arg);
        if (rc == SQLITE_OK && arg != NULL) {
            char *below = *(char **)arg;
            *(char **)arg = sqlite3_mprintf(WALBUF_VFS_NAME "/%z", below);
        }
        return rc;
    }
    return RM(pf)->xFileControl(REAL(pf), op, arg);
}

static int wb_sector_size(sqlite3_file *pf) { return RM(pf)->xSectorSize(REAL(pf)); }
static int wb_device_chars(sqlite3_file *pf) { return RM(pf)->xDeviceCharacteristics(REAL(pf)); }

static int wb_shm_map(sqlite3_file *pf, int pg, int pgsz, int extend, void volatile **pp)
{
    return RM(pf)->xShmMap(REAL(pf), pg, pgsz, extend, pp);
}
static int wb_shm_lock(sqlite3_file *pf, int offset, int n, int flags)
{
    return RM(pf)->xShmLock(REAL(pf), offset, n, flags);
}
static void wb_shm_barrier(sqlite3_file *pf) { RM(pf)->xShmBarrier(REAL(pf)); }
static int wb_shm_unmap(sqlite3_file *pf, int del) { return RM(pf)->xShmUnmap(REAL(pf), del); }
static int wb_fetch(sqlite3_file *pf, sqlite3_int64 off, int n, void **pp)
{
    int rc = wb_flush((wb_file *)pf);
    return rc != SQLITE_OK ? rc : RM(pf)->xFetch(REAL(pf), off, n, pp);
}
static int wb_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *p)
{
    return RM(pf)->xUnfetch(REAL(pf), off, p);
}

static const sqlite3_io_methods wb_methods = {
    .iVersion = 3,
    .xClose = wb_close,
    .xRead = wb_read,
    .xWrite = wb_write,
    .xTruncate = wb_truncate,
    .xSync = wb_sync,
    .xFileSize = wb_file_size,
    .xLock = wb_lock,
    .xUnlock = wb_unlock,
    .xCheckReservedLock = wb_check_reserved,
    .xFileControl = wb_file_control,
    .xSectorSize = wb_sector_size,
    .xDeviceCharacteristics = wb_device_chars,
    .xShmMap = wb_shm_map,
    .xShmLock = wb_shm_lock,
    .xShmBarrier = wb_shm_barrier,
    .xShmUnmap = wb_shm_unmap,
    .xFetch = wb_fetch,
    .xUnfetch = wb_unfetch,
};

static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags)
{
    (void)vfs;
    wb_file *f = (wb_file *)pf;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = wb_real->xOpen(wb_real, name, f->real, flags, out_flags);
    /* The shm and fetch methods exist only when the file below has them. */
    if (f->real->pMethods == NULL) {
        f->base.pMethods = NULL;
        return rc;
    }
    if (f->real->pMethods->iVersion < 3) {
        /* Not the unix VFS we were built against: do not pretend. */
        f->real->pMethods->xClose(f->real);
        f->base.pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    f->base.pMethods = &wb_methods;
    return rc;
}

/* The rest of the VFS is the default one's. */
static int wb_delete(sqlite3_vfs *v, const char *z, int sync)
{
    (void)v;
    return wb_real->xDelete(wb_real, z, sync);
}
static int wb_access(sqlite3_vfs *v, const char *z, int flags, int *out)
{
    (void)v;
    return wb_real->xAccess(wb_real, z, flags, out);
}
static int wb_full_pathname(sqlite3_vfs *v, const char *z, int n, char *out)
{
    (void)v;
    return wb_real->xFullPathname(wb_real, z, n, out);
}
static void *wb_dlopen(sqlite3_vfs *v, const char *z)
{
    (void)v;
    return wb_real->xDlOpen(wb_real, z);
}
static void wb_dlerror(sqlite3_vfs *v, int n, char *z)
{
    (void)v;
    wb_real->xDlError(wb_real, n, z);
}
static void (*wb_dlsym(sqlite3_vfs *v, void *h, const char *z))(void)
{
    (void)v;
    return wb_real->xDlSym(wb_real, h, z);
}
static void wb_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    wb_real->xDlClose(wb_real, h);
}
static int wb_randomness(sqlite3_vfs *v, int n, char *z)
{
    (void)v;
    return wb_real->xRandomness(wb_real, n, z);
}
static int wb_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return wb_real->xSleep(wb_real, us);
}
static int wb_current_time(sqlite3_vfs *v, double *t)
{
    (void)v;
    return wb_real->xCurrentTime(wb_real, t);
}
static int wb_last_error(sqlite3_vfs *v, int n, char *z)
{
    (void)v;
    return wb_real->xGetLastError(wb_real, n, z);
}
static int wb_current_time64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    (void)v;
    return wb_real->xCurrentTimeInt64(wb_real, t);
}

static int wb_rc = SQLITE_ERROR;
static pthread_once_t wb_once = PTHREAD_ONCE_INIT;

static void wb_init(void)
{
    wb_real = sqlite3_vfs_find(NULL);
    if (wb_real == NULL || wb_real->iVersion < 2) return;
    wb_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(wb_file) + wb_real->szOsFile,
        .mxPathname = wb_real->mxPathname,
        .zName = WALBUF_VFS_NAME,
        .xOpen = wb_open,
        .xDelete = wb_delete,
        .xAccess = wb_access,
        .xFullPathname = wb_full_pathname,
        .xDlOpen = wb_dlopen,
        .xDlError = wb_dlerror,
        .xDlSym = wb_dlsym,
        .xDlClose = wb_dlclose,
        .xRandomness = wb_randomness,
        .xSleep = wb_sleep,
        .xCurrentTime = wb_current_time,
        .xGetLastError = wb_last_error,
        .xCurrentTimeInt64 = wb_current_time64,
    };
    wb_rc = sqlite3_vfs_register(&wb_vfs, 0);
}

int walbuf_register(void)
{
    pthread_once(&wb_once, wb_init);
    return wb_rc;
}

void walbuf_stats_get(walbuf_stats *out)
{
    out->wal_writes = atomic_load(&wb_wal_writes);
    out->os_writes = atomic_load(&wb_os_writes);
}
