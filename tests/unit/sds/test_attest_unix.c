/* Unit tests for sds/attest_unix.c: attesting this process, a child under
 * another uid with extra groups, exited and zombie peers, a deleted
 * executable, pid/uid mismatches, the /proc parsers with hostile input and the
 * digest cache. Tests that change uids are skipped when not run as root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sds/attest_unix.h"
#include "sds/attest_unix_int.h"
#include "tests/unit/sds/sds_tests.h"

#define SLEEP_BIN "/bin/sleep"
#define UNNAMED_GID 4242

/* ---- helpers ---------------------------------------------------------------- */

static void hex_of(const unsigned char d[32], char out[65])
{
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* SHA-256 of the file at `path`, independently of the code under test. */
static void sha256_file(const char *path, char out[65])
{
    unsigned char buf[8192], d[32];
    unsigned int dlen = 0;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) assert_int_equal(EVP_DigestUpdate(md, buf, n), 1);
    assert_int_equal(EVP_DigestFinal_ex(md, d, &dlen), 1);
    assert_int_equal(dlen, 32);
    EVP_MD_CTX_free(md);
    fclose(f);
    hex_of(d, out);
}

static int has(const attest_selectors *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int has(const attest_selectors *s, const char *fmt, ...)
{
    char want[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof want);
    return attest_selectors_has(s, want);
}

static size_t count_type(const attest_selectors *s, const char *type)
{
    size_t c = 0;
    for (size_t i = 0; i < attest_selectors_count(s); i++)
        if (strcmp(attest_selectors_type(s, i), type) == 0) c++;
    return c;
}

/* Every selector is "unix:<type>:<value>" and no two are equal. */
static void check_shape(const attest_selectors *s)
{
    size_t n = attest_selectors_count(s);
    for (size_t i = 0; i < n; i++) {
        char want[PATH_MAX + 64];
        int k = snprintf(want, sizeof want, "unix:%s:%s", attest_selectors_type(s, i),
                         attest_selectors_value(s, i));
        assert_true(k > 0 && (size_t)k < sizeof want);
        assert_string_equal(attest_selectors_format(s, i), want);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(attest_selectors_format(s, i), attest_selectors_format(s, j));
    }
    assert_null(attest_selectors_format(s, n));
    assert_null(attest_selectors_type(s, n));
    assert_null(attest_selectors_value(s, n));
}

static void skip_unless_root(void)
{
    if (geteuid() != 0) {
        print_message("not root: skipped\n");
        skip();
    }
}

/* Starts `path` with argv {name, "30"} as uid/gid 65534 with groups
 * {100, UNNAMED_GID} (when `drop`), and returns once exec has succeeded. */
static pid_t spawn(const char *path, int drop)
{
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int err = 0;
        gid_t groups[2] = {100, UNNAMED_GID};
        if (drop && (setgroups(2, groups) != 0 || setresgid(65534, 65534, 65534) != 0 ||
                     setresuid(65534, 65534, 65534) != 0))
            err = errno;
        if (err == 0) {
            char *const argv[] = {(char *)"sleep", (char *)"30", NULL};
            execv(path, argv);
            err = errno;
        }
        (void)!write(pfd[1], &err, sizeof err);
        _exit(127);
    }
    close(pfd[1]);
    int err = 0;
    ssize_t n = read(pfd[0], &err, sizeof err); /* EOF: exec closed the pipe */
    close(pfd[0]);
    assert_int_equal(n, 0);
    return pid;
}

static void reap(pid_t pid, int sig)
{
    if (sig) kill(pid, sig);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
}

static attest_peer self_peer(void)
{
    attest_peer p = {.uid = geteuid(), .gid = getegid(), .pid = getpid()};
    return p;
}

static void expect_cred_only(const attest_selectors *s, uid_t uid, gid_t gid)
{
    assert_int_equal(attest_selectors_flags(s), ATTEST_F_NO_PROCESS);
    assert_true(has(s, "unix:uid:%lu", (unsigned long)uid));
    assert_true(has(s, "unix:gid:%lu", (unsigned long)gid));
    for (size_t i = 0; i < attest_selectors_count(s); i++) {
        const char *t = attest_selectors_type(s, i);
        assert_true(strcmp(t, "uid") == 0 || strcmp(t, "gid") == 0 || strcmp(t, "user") == 0 ||
                    strcmp(t, "group") == 0);
    }
    assert_int_equal(count_type(s, "gid"), 1);
    check_shape(s);
}

/* ---- attesting real processes ----------------------------------------------- */

static void test_self(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    attest_peer p = self_peer();
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));

    assert_int_equal(attest_selectors_flags(s), 0);
    check_shape(s);
    assert_string_equal(attest_selectors_type(s, 0), "uid");
    assert_true(has(s, "unix:uid:%lu", (unsigned long)p.uid));
    assert_true(has(s, "unix:gid:%lu", (unsigned long)p.gid));
    struct passwd *pw = getpwuid(p.uid);
    if (pw) assert_true(has(s, "unix:user:%s", pw->pw_name));
    struct group *gr = getgrgid(p.gid);
    if (gr) assert_true(has(s, "unix:group:%s", gr->gr_name));
    gid_t groups[256];
    int ng = getgroups(256, groups);
    assert_true(ng >= 0);
    for (int i = 0; i < ng; i++) assert_true(has(s, "unix:gid:%lu", (unsigned long)groups[i]));

    char exe[PATH_MAX], hex[65];
    assert_non_null(realpath("/proc/self/exe", exe));
    assert_true(has(s, "unix:path:%s", exe));
    sha256_file(exe, hex);
    assert_true(has(s, "unix:sha256:%s", hex));
    assert_int_equal(count_type(s, "path"), 1);
    assert_int_equal(count_type(s, "sha256"), 1);

    attest_selectors_free(s);
    attest_unix_ctx_free(a);
}

static void test_self_wrong_uid_denied(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    attest_peer p = self_peer();
    p.uid = p.uid + 1;
    mid_result r = attest_unix(a, &p, &s);
    assert_int_equal(r.err, MID_E_DENIED);
    assert_int_equal(mid_errcode(), MID_E_DENIED);
    assert_null(s);
    attest_unix_ctx_free(a);
}

static void test_child_other_uid(void **state)
{
    (void)state;
    skip_unless_root();
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    pid_t pid = spawn(SLEEP_BIN, 1);
    attest_peer p = {.uid = 65534, .gid = 65534, .pid = pid};
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));

    assert_int_equal(attest_selectors_flags(s), 0);
    check_shape(s);
    assert_string_equal(attest_selectors_format(s, 0), "unix:uid:65534");
    assert_true(has(s, "unix:gid:65534"));
    assert_true(has(s, "unix:gid:100"));
    assert_true(has(s, "unix:gid:%d", UNNAMED_GID));
    assert_int_equal(count_type(s, "gid"), 3);
    assert_int_equal(count_type(s, "uid"), 1);
    struct passwd *pw = getpwuid(65534);
    if (pw) assert_true(has(s, "unix:user:%s", pw->pw_name));
    struct group *g100 = getgrgid(100);
    if (g100) assert_true(has(s, "unix:group:%s", g100->gr_name));
    /* A gid without a name has a gid selector only. */
    if (getgrgid(UNNAMED_GID) == NULL)
        assert_int_equal(count_type(s, "group"), (getgrgid(65534) ? 1u : 0u) + (g100 ? 1u : 0u));

    char exe[PATH_MAX], hex[65];
    assert_non_null(realpath(SLEEP_BIN, exe));
    assert_true(has(s, "unix:path:%s", exe));
    sha256_file(exe, hex);
    assert_true(has(s, "unix:sha256:%s", hex));
    attest_selectors_free(s);
    s = NULL;

    /* The same pid claimed by another uid is not that peer. */
    p.uid = 0;
    assert_int_equal(attest_unix(a, &p, &s).err, MID_E_DENIED);
    assert_null(s);

    reap(pid, SIGKILL);
    attest_unix_ctx_free(a);
}

static void test_exited_pid(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(0);
    reap(pid, 0);
    attest_peer p = self_peer();
    p.pid = pid;
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));
    expect_cred_only(s, p.uid, p.gid);
    attest_selectors_free(s);
    attest_unix_ctx_free(a);
}

static void test_zombie_pid(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    /* Wait for the exit but leave the zombie in place. */
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    attest_peer p = self_peer();
    p.pid = pid;
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));
    expect_cred_only(s, p.uid, p.gid);
    attest_selectors_free(s);
    reap(pid, 0);
    attest_unix_ctx_free(a);
}

static void test_pid_not_visible(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    attest_peer p = {.uid = 4321, .gid = 4322, .pid = 0};
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));
    expect_cred_only(s, 4321, 4322);
    attest_selectors_free(s);
    attest_unix_ctx_free(a);
}

static void test_started_after_accept_denied(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    attest_peer p = self_peer();
    p.accept_boot_ns = 1; /* accepted 1 ns after boot: long before we started */
    assert_int_equal(attest_unix(a, &p, &s).err, MID_E_DENIED);
    assert_null(s);

    struct timespec now;
    assert_int_equal(clock_gettime(CLOCK_BOOTTIME, &now), 0);
    p.accept_boot_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));
    assert_int_equal(attest_selectors_flags(s), 0);
    attest_selectors_free(s);
    attest_unix_ctx_free(a);
}

/* A process whose comm is "a) b (c" (set with PR_SET_NAME) is attested. */
static void test_hostile_comm(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    int pfd[2];
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        prctl(PR_SET_NAME, "a) b (c) 1 2 3", 0, 0, 0);
        (void)!write(pfd[1], "x", 1);
        for (;;) pause();
    }
    close(pfd[1]);
    char c;
    assert_int_equal(read(pfd[0], &c, 1), 1);
    close(pfd[0]);

    attest_peer p = self_peer();
    p.pid = pid;
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));
    assert_int_equal(attest_selectors_flags(s), 0);
    char exe[PATH_MAX];
    assert_non_null(realpath("/proc/self/exe", exe));
    assert_true(has(s, "unix:path:%s", exe));
    attest_selectors_free(s);
    reap(pid, SIGKILL);
    attest_unix_ctx_free(a);
}

/* The running file was unlinked after exec: no path, but the digest stays. */
static void test_deleted_executable(void **state)
{
    (void)state;
    skip_unless_root();
    char dir[] = "/tmp/attest_XXXXXX", copy[64], orig[PATH_MAX], hex[65];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0);
    snprintf(copy, sizeof copy, "%s/sleep", dir);
    assert_non_null(realpath(SLEEP_BIN, orig));
    {
        FILE *in = fopen(orig, "rb"), *out = fopen(copy, "wb");
        assert_non_null(in);
        assert_non_null(out);
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
        fclose(in);
        assert_int_equal(fclose(out), 0);
        assert_int_equal(chmod(copy, 0755), 0);
    }
    sha256_file(copy, hex);
    pid_t pid = spawn(copy, 1);
    assert_int_equal(unlink(copy), 0);
    assert_int_equal(rmdir(dir), 0);

    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    attest_peer p = {.uid = 65534, .gid = 65534, .pid = pid};
    assert_true(mid_is_ok(attest_unix(a, &p, &s)));
    assert_int_equal(attest_selectors_flags(s), ATTEST_F_NO_PATH);
    assert_int_equal(count_type(s, "path"), 0);
    assert_true(has(s, "unix:sha256:%s", hex));
    attest_selectors_free(s);
    reap(pid, SIGKILL);
    attest_unix_ctx_free(a);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    attest_selectors *s = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    attest_peer p = self_peer();
    assert_int_equal(attest_unix(NULL, &p, &s).err, MID_E_INVALID);
    assert_int_equal(attest_unix(a, NULL, &s).err, MID_E_INVALID);
    assert_int_equal(attest_unix(a, &p, NULL).err, MID_E_INVALID);
    p.uid = (uid_t)-1;
    assert_int_equal(attest_unix(a, &p, &s).err, MID_E_INVALID);
    p = self_peer();
    p.pid = -5;
    assert_int_equal(attest_unix(a, &p, &s).err, MID_E_INVALID);
    assert_null(s);
    assert_int_equal(attest_unix_ctx_new_with(0, 1, 0, &a).err, MID_E_INVALID);
    /* Accessors tolerate NULL. */
    assert_int_equal(attest_selectors_count(NULL), 0);
    assert_null(attest_selectors_format(NULL, 0));
    assert_int_equal(attest_selectors_has(NULL, "unix:uid:0"), 0);
    attest_selectors_free(NULL);
    attest_unix_ctx_free(a);
    attest_unix_ctx_free(NULL);
}

/* ---- parsers ----------------------------------------------------------------- */

/* A stat line with `comm` and starttime 4242 in field 22. */
static size_t stat_line(char *buf, size_t cap, const char *comm)
{
    int n = snprintf(buf, cap,
                     "1234 (%s) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 "
                     "1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n",
                     comm);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static void test_stat_parser(void **state)
{
    (void)state;
    static const char *const comms[] = {"sleep", "a) b (c", ") 1 2 3 4 5 6", "((", "x\ny) z", "", " "};
    char buf[512];
    uint64_t v;
    for (size_t i = 0; i < sizeof comms / sizeof comms[0]; i++) {
        size_t len = stat_line(buf, sizeof buf, comms[i]);
        v = 0;
        assert_true(mid_is_ok(attest_parse_stat_starttime(buf, len, &v)));
        assert_int_equal(v, 4242);
    }
    /* Our own, from the kernel. */
    {
        FILE *f = fopen("/proc/self/stat", "r");
        assert_non_null(f);
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        assert_true(mid_is_ok(attest_parse_stat_starttime(buf, len, &v)));
        assert_true(v > 0);
    }
    /* Malformed. */
    static const char *const bad[] = {
        "",
        "1234 sleep S 1",
        "1234 sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 4242 1",
        "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",
        "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 ",
        "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 1",
        "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -4 1",
        "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 42x 1",
        "1234 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99999999999999999999 1",
        "1234 (x)  S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242",
        "1234 (x)S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(attest_parse_stat_starttime(bad[i], strlen(bad[i]), &v).err,
                         MID_E_INVALID);
    }
    /* Exactly 18446744073709551615 parses; the length bounds the parse. */
    const char *max = "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 18446744073709551615";
    assert_true(mid_is_ok(attest_parse_stat_starttime(max, strlen(max), &v)));
    assert_true(v == UINT64_MAX);
    const char *cut = "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 9";
    assert_true(mid_is_ok(attest_parse_stat_starttime(cut, strlen(cut) - 4, &v)));
    assert_int_equal(v, 42);
}

static void test_status_parser(void **state)
{
    (void)state;
    uid_t euid = 0;
    gid_t *g = NULL;
    size_t n = 99;
    const char *ok = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\n"
                     "Uid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nFDSize:\t64\n"
                     "Groups:\t4 24 27 4294967294 \nNStgid:\t1\n";
    assert_true(mid_is_ok(attest_parse_status(ok, strlen(ok), &euid, &g, &n)));
    assert_int_equal(euid, 1001); /* effective, as SO_PEERCRED reports */
    assert_int_equal(n, 4);
    assert_int_equal(g[0], 4);
    assert_int_equal(g[2], 27);
    assert_int_equal(g[3], 4294967294u);
    free(g);

    const char *none = "Uid:\t0\t0\t0\t0\nGroups:\t\n";
    assert_true(mid_is_ok(attest_parse_status(none, strlen(none), &euid, &g, &n)));
    assert_int_equal(euid, 0);
    assert_int_equal(n, 0);
    assert_null(g);

    static const char *const bad[] = {
        "Groups:\t1\n",                              /* no Uid */
        "Uid:\t1\t2\t3\t4\n",                        /* no Groups */
        "Uid:\t1\t2\t3\nGroups:\t\n",                /* short Uid */
        "Uid:\t1\t2\t3\t4\t5\nGroups:\t\n",          /* long Uid */
        "Uid:\t1\t4294967296\t3\t4\nGroups:\t\n",    /* over 32 bits */
        "Uid:\t1\t-2\t3\t4\nGroups:\t\n",
        "Uid:\t1\t2\t3\t4\nGroups:\t1 x\n",
        "Uid:\t1\t2\t3\t4\nGroups:\t1,2\n",
        "Uid:\t1\t2\t3\t4\nGroups:\t4294967295\n",   /* (gid_t)-1 */
        "XUid:\t1\t2\t3\t4\nGroups:\t\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g = NULL;
        assert_int_equal(attest_parse_status(bad[i], strlen(bad[i]), &euid, &g, &n).err,
                         MID_E_INVALID);
        assert_null(g);
    }

    /* More than ATTEST_MAX_GROUPS groups. */
    size_t cap = 32 + (size_t)(ATTEST_MAX_GROUPS + 1) * 2;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t len = (size_t)snprintf(big, cap, "Uid:\t1\t1\t1\t1\nGroups:\t");
    for (int i = 0; i <= ATTEST_MAX_GROUPS; i++) {
        big[len++] = '7';
        big[len++] = ' ';
    }
    g = NULL;
    assert_int_equal(attest_parse_status(big, len, &euid, &g, &n).err, MID_E_TOO_LARGE);
    assert_null(g);
    free(big);
}

/* ---- digest cache ------------------------------------------------------------- */

static char cache_dir[] = "/tmp/attest_cache_XXXXXX";

static void write_file(const char *path, const char *data)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, strlen(data), f), strlen(data));
    assert_int_equal(fclose(f), 0);
}

/* Digest of `path` through the cache, checked against OpenSSL. */
static void digest_path(attest_unix_ctx *a, const char *path)
{
    unsigned char d[32];
    char got[65], want[65];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_true(mid_is_ok(attest_unix_digest_fd(a, fd, d)));
    close(fd);
    hex_of(d, got);
    sha256_file(path, want);
    assert_string_equal(got, want);
}

static void expect_stats(attest_unix_ctx *a, uint64_t hits, uint64_t misses)
{
    uint64_t h = 0, m = 0;
    attest_unix_cache_stats(a, &h, &m);
    assert_int_equal(h, hits);
    assert_int_equal(m, misses);
}

static void test_digest_cache(void **state)
{
    (void)state;
    char p1[64], p2[64], p3[64];
    assert_non_null(mkdtemp(cache_dir));
    snprintf(p1, sizeof p1, "%s/one", cache_dir);
    snprintf(p2, sizeof p2, "%s/two", cache_dir);
    snprintf(p3, sizeof p3, "%s/three", cache_dir);
    write_file(p1, "first file");
    write_file(p2, "second file");
    write_file(p3, "");

    attest_unix_ctx *a = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new_with(2, 1024, 0, &a)));
    digest_path(a, p1);
    expect_stats(a, 0, 1);
    digest_path(a, p1); /* hit: same digest, no re-hash */
    expect_stats(a, 1, 1);

    /* A changed file is a different key. */
    write_file(p1, "first file, changed");
    digest_path(a, p1);
    expect_stats(a, 1, 2);
    digest_path(a, p1);
    expect_stats(a, 2, 2);

    /* Two entries: p2 and p3 evict p1 (least recently used). */
    digest_path(a, p2);
    digest_path(a, p3); /* empty file */
    expect_stats(a, 2, 4);
    digest_path(a, p2);
    expect_stats(a, 3, 4);
    digest_path(a, p1);
    expect_stats(a, 3, 5);
    attest_unix_ctx_free(a);

    /* Default minimum age: a file written just now is never cached. */
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    digest_path(a, p2);
    digest_path(a, p2);
    expect_stats(a, 0, 2);
    attest_unix_ctx_free(a);

    /* Over the size limit; not a regular file. */
    unsigned char d[32];
    assert_true(mid_is_ok(attest_unix_ctx_new_with(4, 5, 0, &a)));
    int fd = open(p2, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(attest_unix_digest_fd(a, fd, d).err, MID_E_TOO_LARGE);
    close(fd);
    fd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(attest_unix_digest_fd(a, fd, d).err, MID_E_INVALID);
    close(fd);
    attest_unix_ctx_free(a);

    assert_int_equal(unlink(p1), 0);
    assert_int_equal(unlink(p2), 0);
    assert_int_equal(unlink(p3), 0);
    assert_int_equal(rmdir(cache_dir), 0);
}

/* Attesting a process twice hashes its (old enough) executable once. */
static void test_attest_uses_cache(void **state)
{
    (void)state;
    skip_unless_root();
    attest_unix_ctx *a = NULL;
    attest_selectors *s1 = NULL, *s2 = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new(&a)));
    pid_t pid = spawn(SLEEP_BIN, 1);
    attest_peer p = {.uid = 65534, .gid = 65534, .pid = pid};
    assert_true(mid_is_ok(attest_unix(a, &p, &s1)));
    expect_stats(a, 0, 1);
    assert_true(mid_is_ok(attest_unix(a, &p, &s2)));
    expect_stats(a, 1, 1);
    assert_int_equal(attest_selectors_count(s1), attest_selectors_count(s2));
    for (size_t i = 0; i < attest_selectors_count(s1); i++)
        assert_string_equal(attest_selectors_format(s1, i), attest_selectors_format(s2, i));
    attest_selectors_free(s1);
    attest_selectors_free(s2);
    reap(pid, SIGKILL);
    attest_unix_ctx_free(a);
}

struct thread_arg {
    attest_unix_ctx *a;
    int failures;
};

static void *attest_loop(void *arg)
{
    struct thread_arg *t = arg;
    for (int i = 0; i < 20; i++) {
        attest_selectors *s = NULL;
        attest_peer p = self_peer();
        if (!mid_is_ok(attest_unix(t->a, &p, &s)) || attest_selectors_flags(s) != 0) t->failures++;
        attest_selectors_free(s);
    }
    return NULL;
}

/* One context shared by threads (the cache is the shared state). */
static void test_threads_share_ctx(void **state)
{
    (void)state;
    attest_unix_ctx *a = NULL;
    assert_true(mid_is_ok(attest_unix_ctx_new_with(4, ATTEST_MAX_EXE_BYTES, 0, &a)));
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].a = a;
        args[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, attest_loop, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    uint64_t h = 0, m = 0;
    attest_unix_cache_stats(a, &h, &m);
    assert_int_equal(h + m, 80);
    assert_true(h >= 76); /* at most one miss per thread */
    attest_unix_ctx_free(a);
}

int run_attest_unix_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self),
        cmocka_unit_test(test_self_wrong_uid_denied),
        cmocka_unit_test(test_child_other_uid),
        cmocka_unit_test(test_exited_pid),
        cmocka_unit_test(test_zombie_pid),
        cmocka_unit_test(test_pid_not_visible),
        cmocka_unit_test(test_started_after_accept_denied),
        cmocka_unit_test(test_hostile_comm),
        cmocka_unit_test(test_deleted_executable),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_stat_parser),
        cmocka_unit_test(test_status_parser),
        cmocka_unit_test(test_digest_cache),
        cmocka_unit_test(test_attest_uses_cache),
        cmocka_unit_test(test_threads_share_ctx),
    };
    return cmocka_run_group_tests_name("sds/attest_unix", tests, NULL, NULL);
}
