/* A thin SQLite VFS over the default one that gathers the writes SQLite
 * makes to a WAL file and hands them to the kernel as one pwrite when
 * SQLite syncs the file (or reads, truncates, sizes or closes it, or writes
 * somewhere that does not continue the gathered run).
 *
 * Why: SQLite writes every WAL frame with two pwrite calls (the 24-byte
 * frame header, then the page), so a commit of ~60 frames is ~120 system
 * calls, each paying the file system's per-call and per-folio work (the
 * header and the page of a frame straddle two page-cache folios). Measured
 * on the bench VM: ~3.6 us of CPU per frame written that way against ~2.4
 * us in one call (docs/storage.md, "Write cost").
 *
 * Safety: nothing about durability changes. SQLite (synchronous=FULL, the
 * only mode meshid uses) syncs the WAL before it publishes a commit in the
 * WAL index, and the sync writes the gathered bytes first, in order; a
 * reader only ever reads frames a commit published. Every operation other
 * than a continuing write sees the file exactly as SQLite wrote it. Files
 * other than WAL files pass straight through.
 */
#ifndef MESHID_STORAGE_SQLITE_WALBUF_H
#define MESHID_STORAGE_SQLITE_WALBUF_H

#include <stdint.h>

#define WALBUF_VFS_NAME "meshid-walbuf"

/* Registers the VFS (not as the default) once per process. Returns an
 * SQLite result code. */
int walbuf_register(void);

/* Process-wide counters: calls SQLite made to write a WAL file, and writes
 * this VFS issued for them. */
typedef struct {
    uint64_t wal_writes;  /* xWrite calls on WAL files */
    uint64_t os_writes;   /* pwrites issued for them */
} walbuf_stats;

void walbuf_stats_get(walbuf_stats *out);

#endif
