/* Unit tests for lib/fsutil.c: bounded reads, atomic writes with exact modes,
 * mkdir -p and path joins. Everything happens in a fresh temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "tests/unit/lib/lib_tests.h"

static char tmpdir[256];

/* tmpdir/name into a static buffer (one at a time is enough here). */
static const char *tpath(const char *name)
{
    static char buf[512];
    int n = snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    return buf;
}

static void write_raw(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* Number of entries in `dir` other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
                char child[1024];
                int n = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                if (n > 0 && (size_t)n < sizeof child) rm_rf(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    int n = snprintf(tmpdir, sizeof tmpdir, "%s/meshid-fsutil-XXXXXX", base ? base : "/tmp");
    if (n <= 0 || (size_t)n >= sizeof tmpdir) return -1;
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(tmpdir);
    return 0;
}

/* ---- fs_read_file ------------------------------------------------------------- */

static void test_read_file(void **state)
{
    (void)state;
    static const char data[] = "hello\0world";
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("read.bin"));
    write_raw(path, data, sizeof data - 1, 0644);

    char *buf = NULL;
    size_t len = 0;
    assert_true(mid_is_ok(fs_read_file(path, 100, &buf, &len)));
    assert_int_equal(len, sizeof data - 1);
    assert_memory_equal(buf, data, len);
    assert_int_equal(buf[len], '\0');
    free(buf);

    /* Exactly at the limit is fine; one byte under is not. */
    assert_true(mid_is_ok(fs_read_file(path, sizeof data - 1, &buf, &len)));
    free(buf);
    buf = NULL;
    assert_int_equal(fs_read_file(path, sizeof data - 2, &buf, &len).err, MID_E_TOO_LARGE);
    assert_non_null(strstr(mid_errmsg(), "over the limit"));
    assert_null(buf);
}

static void test_read_empty_file(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("empty"));
    write_raw(path, "", 0, 0600);
    char *buf = NULL;
    size_t len = 99;
    assert_true(mid_is_ok(fs_read_file(path, 0, &buf, &len)));
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);
}

static void test_read_missing_and_wrong_type(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(fs_read_file(tpath("no-such-file"), 10, &buf, &len).err, MID_E_NOT_FOUND);
    assert_non_null(strstr(mid_errmsg(), "no such file"));
    assert_null(buf);
    /* A missing directory on the way is "not found" too. */
    assert_int_equal(fs_read_file(tpath("no-dir/file"), 10, &buf, &len).err, MID_E_NOT_FOUND);
    /* A directory is not a regular file. */
    assert_int_equal(fs_read_file(tmpdir, 10, &buf, &len).err, MID_E_IO);
    assert_non_null(strstr(mid_errmsg(), "not a regular file"));
    assert_null(buf);
}

/* ---- fs_write_file -------------------------------------------------------------- */

static void test_write_mode_exact_with_permissive_umask(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("key.pem"));
    mode_t old = umask(0);
    mid_result r = fs_write_file(path, "secret", 6, 0600);
    umask(old);
    assert_true(mid_is_ok(r));
    assert_int_equal(mode_of(path), 0600);

    char *buf = NULL;
    size_t len = 0;
    assert_true(mid_is_ok(fs_read_file(path, 100, &buf, &len)));
    assert_int_equal(len, 6);
    assert_string_equal(buf, "secret");
    free(buf);
}

static void test_write_mode_exact_with_strict_umask(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("bundle.pem"));
    mode_t old = umask(077);
    mid_result r = fs_write_file(path, "pub", 3, 0644);
    umask(old);
    assert_true(mid_is_ok(r));
    assert_int_equal(mode_of(path), 0644);
}

static void test_write_replaces_wider_file(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("replace.pem"));
    write_raw(path, "old contents, longer", 20, 0666);
    assert_int_equal(chmod(path, 0666), 0);
    mode_t old = umask(0);
    mid_result r = fs_write_file(path, "new", 3, 0600);
    umask(old);
    assert_true(mid_is_ok(r));
    assert_int_equal(mode_of(path), 0600);
    char *buf = NULL;
    size_t len = 0;
    assert_true(mid_is_ok(fs_read_file(path, 100, &buf, &len)));
    assert_string_equal(buf, "new");
    free(buf);
}

static void test_write_leaves_no_temp_files(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tpath("clean"));
    assert_true(mid_is_ok(fs_mkdir_p(dir, 0700)));
    char path[600];
    snprintf(path, sizeof path, "%s/f", dir);
    assert_true(mid_is_ok(fs_write_file(path, "a", 1, 0600)));
    assert_true(mid_is_ok(fs_write_file(path, "", 0, 0600)));
    assert_int_equal(count_entries(dir), 1);
    char *buf = NULL;
    size_t len = 9;
    assert_true(mid_is_ok(fs_read_file(path, 10, &buf, &len)));
    assert_int_equal(len, 0);
    free(buf);
}

static void test_write_into_missing_dir(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("missing-dir/f"));
    assert_int_equal(fs_write_file(path, "x", 1, 0600).err, MID_E_IO);
    assert_false(fs_exists(path));
}

static void test_write_onto_directory_fails_cleanly(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tpath("occupied"));
    assert_true(mid_is_ok(fs_mkdir_p(dir, 0700)));
    char inner[600];
    snprintf(inner, sizeof inner, "%s/x", dir);
    assert_true(mid_is_ok(fs_mkdir_p(inner, 0700)));
    /* rename() of a file over a non-empty directory fails: no temp is left. */
    char parent[512];
    snprintf(parent, sizeof parent, "%s", tmpdir);
    int before = count_entries(parent);
    assert_int_equal(fs_write_file(dir, "x", 1, 0600).err, MID_E_IO);
    assert_int_equal(count_entries(parent), before);
}

/* ---- fs_mkdir_p ------------------------------------------------------------------ */

static void test_mkdir_p(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("a/b/c"));
    assert_true(mid_is_ok(fs_mkdir_p(path, 0700)));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* Idempotent, and tolerant of trailing and doubled slashes. */
    assert_true(mid_is_ok(fs_mkdir_p(path, 0700)));
    snprintf(path, sizeof path, "%s", tpath("a/b/c/"));
    assert_true(mid_is_ok(fs_mkdir_p(path, 0700)));
    snprintf(path, sizeof path, "%s", tpath("a//b//d"));
    assert_true(mid_is_ok(fs_mkdir_p(path, 0700)));
    assert_true(fs_exists(tpath("a/b/d")));
    /* Root exists already. */
    assert_true(mid_is_ok(fs_mkdir_p("/", 0700)));
}

static void test_mkdir_p_relative(void **state)
{
    (void)state;
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(tmpdir), 0);
    mid_result r = fs_mkdir_p("rel/x", 0700);
    int exists = fs_exists("rel/x");
    assert_int_equal(chdir(cwd), 0);
    assert_true(mid_is_ok(r));
    assert_true(exists);
}

static void test_mkdir_p_errors(void **state)
{
    (void)state;
    char file[512];
    snprintf(file, sizeof file, "%s", tpath("plainfile"));
    write_raw(file, "x", 1, 0600);
    /* A file is in the way, as the leaf or as a parent. */
    assert_int_equal(fs_mkdir_p(file, 0700).err, MID_E_IO);
    assert_non_null(strstr(mid_errmsg(), "not a directory"));
    char below[600];
    snprintf(below, sizeof below, "%s/sub", file);
    assert_int_equal(fs_mkdir_p(below, 0700).err, MID_E_IO);

    assert_int_equal(fs_mkdir_p("", 0700).err, MID_E_INVALID);
    char *huge = malloc(5000);
    assert_non_null(huge);
    memset(huge, 'd', 4999);
    huge[4999] = '\0';
    assert_int_equal(fs_mkdir_p(huge, 0700).err, MID_E_INVALID);
    free(huge);
}

/* ---- fs_join / fs_exists --------------------------------------------------------- */

static void test_join(void **state)
{
    (void)state;
    char out[16];
    assert_true(mid_is_ok(fs_join(out, sizeof out, "/var", "db")));
    assert_string_equal(out, "/var/db");
    /* 15 characters plus the NUL fit exactly in 16. */
    assert_true(mid_is_ok(fs_join(out, sizeof out, "/var/lib", "meshid")));
    assert_string_equal(out, "/var/lib/meshid");
    /* One more does not, and says so. */
    assert_int_equal(fs_join(out, sizeof out, "/var/lib", "meshid2").err, MID_E_TOO_LARGE);
    assert_non_null(strstr(mid_errmsg(), "path too long"));
    assert_int_equal(strlen(out), 15); /* truncated, still terminated */
    char tiny[1];
    assert_int_equal(fs_join(tiny, sizeof tiny, "", "").err, MID_E_TOO_LARGE);
    assert_int_equal(tiny[0], '\0');
}

static void test_exists(void **state)
{
    (void)state;
    assert_true(fs_exists(tmpdir));
    assert_false(fs_exists(tpath("nothing-here")));
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("exists"));
    write_raw(path, "x", 1, 0600);
    assert_true(fs_exists(path));
}

int run_fsutil_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_read_empty_file),
        cmocka_unit_test(test_read_missing_and_wrong_type),
        cmocka_unit_test(test_write_mode_exact_with_permissive_umask),
        cmocka_unit_test(test_write_mode_exact_with_strict_umask),
        cmocka_unit_test(test_write_replaces_wider_file),
        cmocka_unit_test(test_write_leaves_no_temp_files),
        cmocka_unit_test(test_write_into_missing_dir),
        cmocka_unit_test(test_write_onto_directory_fails_cleanly),
        cmocka_unit_test(test_mkdir_p),
        cmocka_unit_test(test_mkdir_p_relative),
        cmocka_unit_test(test_mkdir_p_errors),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_exists),
    };
    return cmocka_run_group_tests_name("lib/fsutil", tests, setup, teardown);
}
