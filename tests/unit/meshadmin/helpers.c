/* Fixtures shared by the mesh admin tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meshcore/yaml_load.h"
#include "storage/store_mesh.h"
#include "tests/testlib/ca_fixtures.h"
#include "tests/unit/meshadmin/meshadmin_tests.h"

void ma_tmp_init(ma_tmp *t)
{
    char *dir = cafx_tmpdir();
    snprintf(t->dir, sizeof t->dir, "%s", dir);
    free(dir);
    cafx_db_path(t->dir, t->db, sizeof t->db);
}

void ma_tmp_cleanup(ma_tmp *t)
{
    if (t->dir[0] != '\0') cafx_rmtree(t->dir);
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

size_t ma_stored_count(store *st)
{
    store_mesh_row *rows = NULL;
    size_t n = 0;
    assert_mid_ok(store_mesh_list(st, NULL, &rows, &n, NULL));
    store_mesh_list_free(rows, n);
    return n;
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

typedef struct {
    const char *reason_part;
    int64_t n;
} refusal_ctx;

static int refusal_cb(void *ctx, const store_audit_event *row)
{
    refusal_ctx *c = ctx;
    if (c->reason_part == NULL || (row->reason && strstr(row->reason, c->reason_part))) c->n++;
    return 0;
}

int64_t ma_count_ok(store *st, const char *event)
{
    refusal_ctx c = {NULL, 0};
    store_audit_filter f = {.event = event, .outcome = "ok"};
    assert_mid_ok(store_audit_query(st, &f, refusal_cb, &c));
    return c.n;
}

int64_t ma_count_refusals(store *st, const char *event, const char *reason_part)
{
    refusal_ctx c = {reason_part, 0};
    store_audit_filter f = {.event = event, .outcome = "denied"};
    assert_mid_ok(store_audit_query(st, &f, refusal_cb, &c));
    return c.n;
}
