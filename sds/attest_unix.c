/* Workload attestation by Unix peer credentials: SO_PEERCRED plus what
 * /proc/<pid> says about the peer process, checked against pid reuse and exec
 * (docs/attestation.md). */
#include "sds/attest_unix.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "sds/attest_unix_int.h"

#define STAT_MAX 4096            /* /proc/<pid>/stat is one line of ~52 numbers */
#define STATUS_MAX (1024 * 1024) /* status with ATTEST_MAX_GROUPS groups fits */
#define NAME_MAX_LEN 256         /* longest user or group name we emit */
#define NSS_BUF_MAX (1024 * 1024)
#define HASH_CHUNK (64 * 1024)

/* ---- selector list ---------------------------------------------------------- */

typedef enum { SEL_UID, SEL_GID, SEL_USER, SEL_GROUP, SEL_PATH, SEL_SHA256 } sel_kind;

static const char *const sel_type_names[] = {"uid", "gid", "user", "group", "path", "sha256"};

struct sel {
    sel_kind kind;
    char *text;          /* "unix:<type>:<value>" */
    const char *value;   /* points into text */
};

struct attest_selectors {
    struct sel *v;
    size_t n, cap;
    unsigned flags;
};

static mid_result sels_add(attest_selectors *s, sel_kind kind, const char *value)
{
    const char *type = sel_type_names[kind];
    size_t need = strlen("unix:") + strlen(type) + 1 + strlen(value) + 1;
    char *text = malloc(need);
    MID_ENSURE_MEM(text);
    int n = snprintf(text, need, "unix:%s:%s", type, value);
    if (n < 0 || (size_t)n != need - 1) {
        free(text);
        MID_BAIL(MID_E_INTERNAL, "selector formatting failed");
    }
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].text, text) == 0) { /* e.g. primary gid also in Groups: */
            free(text);
            return mid_ok();
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct sel *v = realloc(s->v, cap * sizeof *v);
        if (v == NULL) {
            free(text);
            MID_BAIL(MID_E_NOMEM, "out of memory");
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].kind = kind;
    s->v[s->n].text = text;
    s->v[s->n].value = text + (need - 1 - strlen(value));
    s->n++;
    return mid_ok();
}

static mid_result sels_add_num(attest_selectors *s, sel_kind kind, unsigned long v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%lu", v);
    MID_ENSURE(n > 0 && (size_t)n < sizeof num, MID_E_INTERNAL, "number formatting failed");
    return sels_add(s, kind, num);
}

/* Drops the selectors from index `n` on. */
static void sels_truncate(attest_selectors *s, size_t n)
{
    while (s->n > n) free(s->v[--s->n].text);
}

size_t attest_selectors_count(const attest_selectors *s) { return s ? s->n : 0; }

const char *attest_selectors_type(const attest_selectors *s, size_t i)
{
    return s && i < s->n ? sel_type_names[s->v[i].kind] : NULL;
}

const char *attest_selectors_value(const attest_selectors *s, size_t i)
{
    return s && i < s->n ? s->v[i].value : NULL;
}

const char *attest_selectors_format(const attest_selectors *s, size_t i)
{
    return s && i < s->n ? s->v[i].text : NULL;
}

int attest_selectors_has(const attest_selectors *s, const char *formatted)
{
    if (s == NULL || formatted == NULL) return 0;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].text, formatted) == 0) return 1;
    return 0;
}

unsigned attest_selectors_flags(const attest_selectors *s) { return s ? s->flags : 0; }

void attest_selectors_free(attest_selectors *s)
{
    if (s == NULL) return;
    sels_truncate(s, 0);
    free(s->v);
    free(s);
}

/* ---- /proc parsers ---------------------------------------------------------- */

/* Decimal digits at [*p, end) into *out; at least one digit, no overflow. */
static int parse_u64(const char **p, const char *end, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;
    if (q >= end || *q < '0' || *q > '9') return 0;
    while (q < end && *q >= '0' && *q <= '9') {
        unsigned d = (unsigned)(*q - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
        q++;
    }
    *p = q;
    *out = v;
    return 1;
}

MID_RESULT attest_parse_stat_starttime(const char *buf, size_t len, uint64_t *out)
{
    MID_ENSURE(buf != NULL && out != NULL, MID_E_INVALID, "stat: NULL argument");
    const char *end = buf + len;
    /* comm may contain ')' but nothing after it can: fields start after the last one. */
    const char *rp = memrchr(buf, ')', len);
    MID_ENSURE(rp != NULL && memchr(buf, '(', (size_t)(rp - buf)) != NULL, MID_E_INVALID,
               "stat: no (comm)");
    const char *p = rp + 1;
    /* Fields 3 (state) .. 21 are skipped, 22 is starttime. */
    for (int field = 3; field <= 22; field++) {
        MID_ENSURE(p < end && *p == ' ', MID_E_INVALID, "stat: truncated before field %d", field);
        p++;
        if (field == 22) break;
        const char *tok = p;
        while (p < end && *p != ' ' && *p != '\n') p++;
        MID_ENSURE(p > tok, MID_E_INVALID, "stat: empty field %d", field);
    }
    uint64_t v;
    MID_ENSURE(parse_u64(&p, end, &v), MID_E_INVALID, "stat: bad starttime");
    MID_ENSURE(p == end || *p == ' ' || *p == '\n', MID_E_INVALID, "stat: bad starttime");
    *out = v;
    return mid_ok();
}

/* The line starting with `key` (e.g. "Uid:"), as [*line, *lend) after the key. */
static int find_line(const char *buf, size_t len, const char *key, const char **line,
                     const char **lend)
{
    size_t klen = strlen(key);
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        if ((size_t)(e - p) >= klen && memcmp(p, key, klen) == 0) {
            *line = p + klen;
            *lend = e;
            return 1;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static void skip_blanks(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
}

MID_RESULT attest_parse_status(const char *buf, size_t len, uid_t *euid, gid_t **groups,
                               size_t *ngroups)
{
    mid_result r = MID_OK_RESULT;
    gid_t *g = NULL;
    size_t n = 0, cap = 0;
    const char *p, *end;
    uint64_t v;

    MID_ENSURE(buf && euid && groups && ngroups, MID_E_INVALID, "status: NULL argument");
    /* "Uid:\treal\teffective\tsaved\tfs" */
    MID_ENSURE(find_line(buf, len, "Uid:", &p, &end), MID_E_INVALID, "status: no Uid line");
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) {
        skip_blanks(&p, end);
        MID_ENSURE(parse_u64(&p, end, &ids[i]) && ids[i] <= UINT32_MAX, MID_E_INVALID,
                   "status: bad Uid line");
    }
    skip_blanks(&p, end);
    MID_ENSURE(p == end, MID_E_INVALID, "status: bad Uid line");

    /* "Groups:\t4 24 27 \n" (empty list: "Groups:\t\n") */
    MID_CHECK(r, find_line(buf, len, "Groups:", &p, &end), MID_E_INVALID, "status: no Groups line");
    for (;;) {
        skip_blanks(&p, end);
        if (p == end) break;
        MID_CHECK(r, parse_u64(&p, end, &v) && v < UINT32_MAX, MID_E_INVALID,
                  "status: bad Groups line");
        MID_CHECK(r, p == end || *p == ' ' || *p == '\t', MID_E_INVALID, "status: bad Groups line");
        MID_CHECK(r, n < ATTEST_MAX_GROUPS, MID_E_TOO_LARGE, "status: more than %d groups",
                  ATTEST_MAX_GROUPS);
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            gid_t *ng = realloc(g, ncap * sizeof *ng);
            MID_CHECK_MEM(r, ng);
            g = ng;
            cap = ncap;
        }
        g[n++] = (gid_t)v;
    }
    *euid = (uid_t)ids[1];
    *groups = g;
    *ngroups = n;
    g = NULL;
out:
    free(g);
    return r;
}

/* ---- digest cache ------------------------------------------------------------ */

struct cache_entry {
    int used;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    uint64_t last_use;
    unsigned char digest[32];
};

struct attest_unix_ctx {
    pthread_mutex_t mu; /* guards everything below */
    struct cache_entry *cache;
    size_t cap;
    uint64_t clock, hits, misses;
    /* Read-only after creation. */
    uint64_t max_exe_bytes;
    unsigned min_age_s;
    long clk_tck;
};

static int ts_eq(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* Same file, same content as far as the inode can tell. ctime is in the key
 * because mtime can be set back by the file's owner (utimensat) and ctime
 * cannot. */
static int same_version(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           ts_eq(&a->st_mtim, &b->st_mtim) && ts_eq(&a->st_ctim, &b->st_ctim);
}

static int entry_matches(const struct cache_entry *e, const struct stat *st)
{
    return e->used && e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           ts_eq(&e->mtim, &st->st_mtim) && ts_eq(&e->ctim, &st->st_ctim);
}

static int cache_get(attest_unix_ctx *a, const struct stat *st, unsigned char digest[32])
{
    int hit = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->cap; i++) {
        if (entry_matches(&a->cache[i], st)) {
            memcpy(digest, a->cache[i].digest, 32);
            a->cache[i].last_use = ++a->clock;
            hit = 1;
            break;
        }
    }
    if (hit)
        a->hits++;
    else
        a->misses++;
    pthread_mutex_unlock(&a->mu);
    return hit;
}

static void cache_put(attest_unix_ctx *a, const struct stat *st, const unsigned char digest[32])
{
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) return;
    /* Racily clean: the file may still be changing within its timestamp tick. */
    if (st->st_ctim.tv_sec > now.tv_sec - (time_t)a->min_age_s) return;
    pthread_mutex_lock(&a->mu);
    size_t victim = 0;
    for (size_t i = 0; i < a->cap; i++) {
        if (entry_matches(&a->cache[i], st)) { /* another thread was first */
            victim = SIZE_MAX;
            break;
        }
        if (!a->cache[i].used) {
            victim = i;
            break;
        }
        if (a->cache[i].last_use < a->cache[victim].last_use) victim = i;
    }
    if (victim != SIZE_MAX) {
        struct cache_entry *e = &a->cache[victim];
        e->used = 1;
        e->dev = st->st_dev;
        e->ino = st->st_ino;
        e->size = st->st_size;
        e->mtim = st->st_mtim;
        e->ctim = st->st_ctim;
        e->last_use = ++a->clock;
        memcpy(e->digest, digest, 32);
    }
    pthread_mutex_unlock(&a->mu);
}

void attest_unix_cache_stats(attest_unix_ctx *a, uint64_t *hits, uint64_t *misses)
{
    pthread_mutex_lock(&a->mu);
    if (hits) *hits = a->hits;
    if (misses) *misses = a->misses;
    pthread_mutex_unlock(&a->mu);
}

MID_RESULT attest_unix_digest_fd(attest_unix_ctx *a, int fd, unsigned char digest[32])
{
    mid_result r = MID_OK_RESULT;
    EVP_MD_CTX *md = NULL;
    unsigned char *chunk = NULL;
    struct stat st, st2;

    MID_ENSURE(a != NULL && fd >= 0 && digest != NULL, MID_E_INVALID, "digest: bad argument");
    MID_ENSURE(fstat(fd, &st) == 0, MID_E_IO, "executable: fstat: %s", strerror(errno));
    MID_ENSURE(S_ISREG(st.st_mode), MID_E_INVALID, "executable is not a regular file");
    MID_ENSURE(st.st_size >= 0 && (uint64_t)st.st_size <= a->max_exe_bytes, MID_E_TOO_LARGE,
               "executable of %lld bytes is over the limit of %llu", (long long)st.st_size,
               (unsigned long long)a->max_exe_bytes);
    if (cache_get(a, &st, digest)) return mid_ok();

    md = EVP_MD_CTX_new();
    MID_CHECK_MEM(r, md);
    chunk = malloc(HASH_CHUNK);
    MID_CHECK_MEM(r, chunk);
    MID_CHECK_OSSL(r, EVP_DigestInit_ex(md, EVP_sha256(), NULL), MID_E_CRYPTO, "sha256 init");
    uint64_t off = 0;
    for (;;) {
        ssize_t n = pread(fd, chunk, HASH_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        MID_CHECK(r, n >= 0, MID_E_IO, "executable: read: %s", strerror(errno));
        if (n == 0) break;
        off += (uint64_t)n;
        MID_CHECK(r, off <= a->max_exe_bytes, MID_E_TOO_LARGE,
                  "executable grew over the limit of %llu bytes",
                  (unsigned long long)a->max_exe_bytes);
        MID_CHECK_OSSL(r, EVP_DigestUpdate(md, chunk, (size_t)n), MID_E_CRYPTO, "sha256 update");
    }
    unsigned int dlen = 0;
    MID_CHECK_OSSL(r, EVP_DigestFinal_ex(md, digest, &dlen), MID_E_CRYPTO, "sha256 final");
    MID_CHECK(r, dlen == 32, MID_E_INTERNAL, "sha256 gave %u bytes", dlen);
    MID_CHECK(r, fstat(fd, &st2) == 0, MID_E_IO, "executable: fstat: %s", strerror(errno));
    MID_CHECK(r, same_version(&st, &st2) && off == (uint64_t)st.st_size, MID_E_DENIED,
              "executable changed while it was hashed");
    cache_put(a, &st, digest);
out:
    if (!mid_is_ok(r)) memset(digest, 0, 32);
    EVP_MD_CTX_free(md);
    free(chunk);
    return r;
}

/* ---- context ------------------------------------------------------------------ */

MID_RESULT attest_unix_ctx_new_with(size_t cache_entries, uint64_t max_exe_bytes,
                                    unsigned min_age_s, attest_unix_ctx **out)
{
    MID_ENSURE(out != NULL && cache_entries >= 1 && cache_entries <= 65536, MID_E_INVALID,
               "attest: bad cache size");
    attest_unix_ctx *a = calloc(1, sizeof *a);
    MID_ENSURE_MEM(a);
    a->cache = calloc(cache_entries, sizeof *a->cache);
    if (a->cache == NULL) {
        free(a);
        MID_BAIL(MID_E_NOMEM, "out of memory");
    }
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a->cache);
        free(a);
        MID_BAIL(MID_E_INTERNAL, "attest: mutex init failed");
    }
    a->cap = cache_entries;
    a->max_exe_bytes = max_exe_bytes;
    a->min_age_s = min_age_s;
    a->clk_tck = sysconf(_SC_CLK_TCK);
    *out = a;
    return mid_ok();
}

MID_RESULT attest_unix_ctx_new(attest_unix_ctx **out)
{
    return attest_unix_ctx_new_with(ATTEST_CACHE_ENTRIES, ATTEST_MAX_EXE_BYTES,
                                    ATTEST_CACHE_MIN_AGE_S, out);
}

void attest_unix_ctx_free(attest_unix_ctx *a)
{
    if (a == NULL) return;
    pthread_mutex_destroy(&a->mu);
    free(a->cache);
    free(a);
}

/* ---- names --------------------------------------------------------------------- */

/* Names go into selectors verbatim: refuse empty, overlong and control bytes. */
static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f) return 0;
    }
    return 1;
}

/* unix:user:<name> for `uid`, nothing when it has no (acceptable) name. */
static mid_result add_user_name(attest_selectors *s, uid_t uid)
{
    mid_result r = MID_OK_RESULT;
    struct passwd pw, *res = NULL;
    size_t cap = 1024;
    char *buf = NULL;
    int e;
    for (;;) {
        char *nb = realloc(buf, cap);
        MID_CHECK_MEM(r, nb);
        buf = nb;
        e = getpwuid_r(uid, &pw, buf, cap, &res);
        if (e == ERANGE && cap < NSS_BUF_MAX) {
            cap *= 2;
            continue;
        }
        break;
    }
    if (e != 0) LOG_WARN("attest: getpwuid_r(%lu): %s", (unsigned long)uid, strerror(e));
    if (e == 0 && res != NULL && name_ok(res->pw_name)) MID_TRY(r, sels_add(s, SEL_USER, res->pw_name));
out:
    free(buf);
    return r;
}

/* unix:group:<name> for `gid`, nothing when it has no (acceptable) name. */
static mid_result add_group_name(attest_selectors *s, gid_t gid)
{
    mid_result r = MID_OK_RESULT;
    struct group gr, *res = NULL;
    size_t cap = 1024;
    char *buf = NULL;
    int e;
    for (;;) {
        char *nb = realloc(buf, cap);
        MID_CHECK_MEM(r, nb);
        buf = nb;
        e = getgrgid_r(gid, &gr, buf, cap, &res);
        if (e == ERANGE && cap < NSS_BUF_MAX) {
            cap *= 2;
            continue;
        }
        break;
    }
    if (e != 0) LOG_WARN("attest: getgrgid_r(%lu): %s", (unsigned long)gid, strerror(e));
    if (e == 0 && res != NULL && name_ok(res->gr_name)) MID_TRY(r, sels_add(s, SEL_GROUP, res->gr_name));
out:
    free(buf);
    return r;
}

/* ---- the process -------------------------------------------------------------- */

/* ENOENT/ESRCH from /proc/<pid>/...: the process has exited (or is a zombie,
 * for exe). The directory fd pins the process, so a reused pid never
 * answers through it. */
static int is_gone(int e) { return e == ENOENT || e == ESRCH; }

/* Reads the /proc file `name` under `dfd` (st_size is 0 there, so read to
 * EOF). Returns 0 or an errno value; EFBIG when over `max`. */
static int proc_read(int dfd, const char *name, size_t max, char **out, size_t *len)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno;
    size_t cap = 1024, got = 0;
    char *buf = NULL;
    int e = 0;
    for (;;) {
        if (cap - got < 2 || buf == NULL) {
            if (buf != NULL) cap *= 2;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                e = ENOMEM;
                break;
            }
            buf = nb;
        }
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            e = errno;
            break;
        }
        if (n == 0) break;
        got += (size_t)n;
        if (got > max) {
            e = EFBIG;
            break;
        }
    }
    close(fd);
    if (e != 0) {
        free(buf);
        return e;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

/* Start time (field 22 of stat) via `dfd`; *gone when the process exited. */
static mid_result read_start(int dfd, const char *dir, uint64_t *start, int *gone)
{
    char *buf = NULL;
    size_t len = 0;
    int e = proc_read(dfd, "stat", STAT_MAX, &buf, &len);
    if (is_gone(e)) {
        *gone = 1;
        return mid_ok();
    }
    MID_ENSURE(e == 0, MID_E_IO, "%s/stat: %s", dir, strerror(e));
    mid_result r = attest_parse_stat_starttime(buf, len, start);
    free(buf);
    return r;
}

/* Effective uid and supplementary groups via `dfd`; *gone when exited. */
static mid_result read_status(int dfd, const char *dir, uid_t *euid, gid_t **groups,
                              size_t *ngroups, int *gone)
{
    char *buf = NULL;
    size_t len = 0;
    int e = proc_read(dfd, "status", STATUS_MAX, &buf, &len);
    if (is_gone(e)) {
        *gone = 1;
        return mid_ok();
    }
    MID_ENSURE(e != EFBIG, MID_E_TOO_LARGE, "%s/status: over %d bytes", dir, STATUS_MAX);
    MID_ENSURE(e == 0, MID_E_IO, "%s/status: %s", dir, strerror(e));
    mid_result r = attest_parse_status(buf, len, euid, groups, ngroups);
    free(buf);
    return r;
}

/* Target of /proc/<pid>/exe into `path` (PATH_MAX); *gone when exited. */
static mid_result read_exe_link(int dfd, const char *dir, char *path, int *gone)
{
    ssize_t n = readlinkat(dfd, "exe", path, PATH_MAX);
    if (n < 0 && is_gone(errno)) {
        *gone = 1;
        return mid_ok();
    }
    MID_ENSURE(n >= 0, MID_E_IO, "%s/exe: %s", dir, strerror(errno));
    MID_ENSURE(n < PATH_MAX, MID_E_TOO_LARGE, "%s/exe: path too long", dir);
    path[n] = '\0';
    return mid_ok();
}

/* Rejects a process that started after the connection was accepted: it
 * cannot be the peer, whatever its uid (pid reused before we looked). */
static mid_result check_accept_time(const attest_unix_ctx *a, const attest_peer *p,
                                    uint64_t start_ticks)
{
    if (p->accept_boot_ns == 0 || a->clk_tck <= 0) return mid_ok();
    /* floor(accept_ns * HZ / 1e9) without overflow; start ticks are floored too. */
    uint64_t hz = (uint64_t)a->clk_tck;
    uint64_t accept_ticks =
        p->accept_boot_ns / 1000000000u * hz + p->accept_boot_ns % 1000000000u * hz / 1000000000u;
    MID_ENSURE(start_ticks <= accept_ticks, MID_E_DENIED,
               "pid %ld started after the connection was accepted: not the peer", (long)p->pid);
    return mid_ok();
}

static void hex32(const unsigned char d[32], char out[65])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = '\0';
}

/* Adds supplementary gid, group, path and sha256 selectors of p->pid to `s`.
 * Sets *gone (and may leave partial selectors, which the caller drops) when
 * the process exited before or during the inspection. */
static mid_result attest_process(attest_unix_ctx *a, const attest_peer *p, attest_selectors *s,
                                 int *gone)
{
    mid_result r = MID_OK_RESULT;
    int dfd = -1, efd = -1;
    gid_t *groups = NULL, *groups2 = NULL;
    size_t ngroups = 0, ngroups2 = 0;
    char *path1 = NULL, *path2 = NULL;
    uint64_t start1 = 0, start2 = 0;
    uid_t euid = (uid_t)-1;
    unsigned char digest[32];
    char hex[65];
    char dir[32];
    struct stat est, pst, est2;

    *gone = 0;
    int n = snprintf(dir, sizeof dir, "/proc/%ld", (long)p->pid);
    MID_ENSURE(n > 0 && (size_t)n < sizeof dir, MID_E_INTERNAL, "pid formatting failed");
    /* Held open, the directory refers to this process, never to a later one
     * with the same pid: reads through it fail with ENOENT/ESRCH once it exits. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && is_gone(errno)) {
        *gone = 1;
        return mid_ok();
    }
    MID_ENSURE(dfd >= 0, MID_E_IO, "%s: %s", dir, strerror(errno));
    path1 = malloc(PATH_MAX);
    path2 = malloc(PATH_MAX);
    MID_CHECK_MEM(r, path1);
    MID_CHECK_MEM(r, path2);

    MID_TRY(r, read_start(dfd, dir, &start1, gone));
    if (*gone) goto out;
    MID_TRY(r, check_accept_time(a, p, start1));
    MID_TRY(r, read_status(dfd, dir, &euid, &groups, &ngroups, gone));
    if (*gone) goto out;
    MID_CHECK(r, euid == p->uid, MID_E_DENIED,
              "pid %ld is not the peer: its uid is %lu, the connection's is %lu", (long)p->pid,
              (unsigned long)euid, (unsigned long)p->uid);

    MID_TRY(r, read_exe_link(dfd, dir, path1, gone));
    if (*gone) goto out;
    /* Hash what the process runs, not what the path names now. */
    efd = openat(dfd, "exe", O_RDONLY | O_CLOEXEC);
    if (efd < 0 && is_gone(errno)) {
        *gone = 1;
        goto out;
    }
    MID_CHECK(r, efd >= 0, MID_E_IO, "%s/exe: %s (the agent needs CAP_SYS_PTRACE for other uids)",
              dir, strerror(errno));
    MID_CHECK(r, fstat(efd, &est) == 0, MID_E_IO, "%s/exe: fstat: %s", dir, strerror(errno));
    MID_TRY(r, attest_unix_digest_fd(a, efd, digest));
    /* The path only counts when it names the running file in our namespace. */
    int path_ok = path1[0] == '/' && stat(path1, &pst) == 0 && pst.st_dev == est.st_dev &&
                  pst.st_ino == est.st_ino;

    /* Re-check: same process (start time), same uid, same executable (exec
     * keeps pid and start time but changes exe). */
    MID_TRY(r, read_start(dfd, dir, &start2, gone));
    if (*gone) goto out;
    MID_TRY(r, read_status(dfd, dir, &euid, &groups2, &ngroups2, gone));
    if (*gone) goto out;
    MID_TRY(r, read_exe_link(dfd, dir, path2, gone));
    if (*gone) goto out;
    if (fstatat(dfd, "exe", &est2, 0) != 0) {
        if (is_gone(errno)) {
            *gone = 1;
            goto out;
        }
        MID_CHECK(r, 0, MID_E_IO, "%s/exe: stat: %s", dir, strerror(errno));
    }
    MID_CHECK(r,
              start2 == start1 && euid == p->uid && strcmp(path1, path2) == 0 &&
                  est2.st_dev == est.st_dev && est2.st_ino == est.st_ino,
              MID_E_DENIED, "process changed during attestation (pid %ld)", (long)p->pid);
    /* Groups are taken from the second read: a process that changed groups
     * in between only loses selectors. */
    for (size_t i = 0; i < ngroups2; i++) {
        int in_both = 0;
        for (size_t j = 0; j < ngroups && !in_both; j++) in_both = groups[j] == groups2[i];
        if (!in_both) continue;
        MID_TRY(r, sels_add_num(s, SEL_GID, groups2[i]));
        MID_TRY(r, add_group_name(s, groups2[i]));
    }
    if (path_ok)
        MID_TRY(r, sels_add(s, SEL_PATH, path1));
    else
        s->flags |= ATTEST_F_NO_PATH;
    hex32(digest, hex);
    MID_TRY(r, sels_add(s, SEL_SHA256, hex));
out:
    if (efd >= 0) close(efd);
    if (dfd >= 0) close(dfd);
    free(groups);
    free(groups2);
    free(path1);
    free(path2);
    return r;
}

MID_RESULT attest_unix(attest_unix_ctx *a, const attest_peer *p, attest_selectors **out)
{
    mid_result r = MID_OK_RESULT;
    attest_selectors *s = NULL;

    MID_ENSURE(a != NULL && p != NULL && out != NULL, MID_E_INVALID, "attest: NULL argument");
    MID_ENSURE(p->uid != (uid_t)-1 && p->gid != (gid_t)-1, MID_E_INVALID,
               "attest: peer credentials not set");
    MID_ENSURE(p->pid >= 0, MID_E_INVALID, "attest: bad pid %ld", (long)p->pid);
    s = calloc(1, sizeof *s);
    MID_ENSURE_MEM(s);

    /* From SO_PEERCRED: trustworthy whatever the process does later. */
    MID_TRY(r, sels_add_num(s, SEL_UID, p->uid));
    MID_TRY(r, add_user_name(s, p->uid));
    MID_TRY(r, sels_add_num(s, SEL_GID, p->gid));
    MID_TRY(r, add_group_name(s, p->gid));
    size_t cred_count = s->n;

    int gone = p->pid == 0;
    if (!gone) MID_TRY(r, attest_process(a, p, s, &gone));
    if (gone) {
        sels_truncate(s, cred_count);
        s->flags = ATTEST_F_NO_PROCESS;
    }
    *out = s;
    s = NULL;
out:
    attest_selectors_free(s);
    return r;
}
