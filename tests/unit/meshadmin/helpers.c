/* Fixtures shared by the mesh admin tests. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meshcore/yaml_load.h"
#include "tests/unit/meshadmin/meshadmin_tests.h"

void ma_tmp_init(ma_tmp *t)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0') base = "/tmp";
    snprintf(t->dir, sizeof t->dir, "%s/meshid-meshadmin-XXXXXX", base);
    if (mkdtemp(t->dir) == NULL) fail_msg("mkdtemp %s failed", t->dir);
    snprintf(t->db, sizeof t->db, "%s/meshid.db", t->dir);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ma_tmp_cleanup(ma_tmp *t)
{
    if (t->dir[0] != '\0') nftw(t->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

store *ma_open_store(const ma_tmp *t)
{
    store *st = NULL;
    assert_mid_ok(store_open(t->db, NULL, &st));
    assert_non_null(st);
    return st;
}

void ma_parse(const char *yaml, const char *source, mesh_doc **docs, size_t *n)
{
    assert_mid_ok(mesh_yaml_parse(yaml, strlen(yaml), source, docs, n));
}

typedef struct {
    const char *event;
    int64_t n;
} count_ctx;

static int count_cb(void *ctx, const store_audit_event *row)
{
    count_ctx *c = ctx;
    if (c->event == NULL || strcmp(row->event, c->event) == 0) c->n++;
    return 0;
}

int64_t ma_count_events(store *st, const char *event)
{
    count_ctx c = {event, 0};
    store_audit_filter f = {0};
    assert_mid_ok(store_audit_query(st, &f, count_cb, &c));
    return c.n;
}
