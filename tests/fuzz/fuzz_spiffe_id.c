/* libFuzzer target for identity/spiffe_id.c.
 *
 * Feeds the raw bytes to spiffe_id_parse (not NUL-terminated: libFuzzer's
 * buffer is exactly `size` bytes, so ASan catches any over-read) and to
 * spiffe_trust_domain_parse, and checks, aborting on any violation:
 *   - the verdict agrees with an independent, deliberately naive reference
 *     checker written straight from the spec;
 *   - an accepted ID formats back to the exact input, its trust domain is
 *     lowercase and in range, its path is canonical, re-parsing and
 *     from_parts reproduce it, and member_of / is_workload agree;
 *   - a rejection is MID_E_INVALID or MID_E_TOO_LARGE with a bounded, printable
 *     message that starts with "invalid ".
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity/spiffe_id.h"
#include "lib/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                \
        }                                                                           \
    } while (0)

static bool ref_td_char(uint8_t c)
{
    return strchr("abcdefghijklmnopqrstuvwxyz0123456789.-_", c) != NULL && c != 0;
}

static bool ref_seg_char(uint8_t c)
{
    return c != 0 &&
           strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_", c) != NULL;
}

/* The spec, read literally, with no shared code. */
static bool ref_valid_id(const uint8_t *s, size_t n)
{
    if (n < 10 || n > 2048 || memcmp(s, "spiffe://", 9) != 0) return false;
    size_t i = 9;
    size_t td = 0;
    while (i < n && s[i] != '/') {
        if (!ref_td_char(s[i])) return false;
        i++;
        td++;
    }
    if (td < 1 || td > 255) return false;
    while (i < n) {
        /* s[i] == '/' */
        size_t start = ++i;
        while (i < n && s[i] != '/') {
            if (!ref_seg_char(s[i])) return false;
            i++;
        }
        size_t len = i - start;
        if (len == 0) return false;
        if (len == 1 && s[start] == '.') return false;
        if (len == 2 && s[start] == '.' && s[start + 1] == '.') return false;
    }
    return true;
}

static void check_failure(mid_result r)
{
    CHECK(r.err == MID_E_INVALID || r.err == MID_E_TOO_LARGE);
    CHECK(mid_errcode() == r.err);
    const char *msg = mid_errmsg();
    CHECK(strncmp(msg, "invalid ", 8) == 0);
    size_t n = strlen(msg);
    CHECK(n < 400);
    for (size_t i = 0; i < n; i++) CHECK(msg[i] >= 0x20 && msg[i] < 0x7f);
}

static void check_id(const spiffe_id *id, const uint8_t *data, size_t size)
{
    const char *str = spiffe_id_str(id);
    const char *td = spiffe_id_trust_domain(id);
    const char *path = spiffe_id_path(id);
    size_t td_len = strlen(td);
    size_t path_len = strlen(path);

    /* Exact round trip: the canonical form is the input. */
    CHECK(strlen(str) == size && memcmp(str, data, size) == 0);
    CHECK(size <= SPIFFE_ID_MAX);
    CHECK(strncmp(str, "spiffe://", 9) == 0);
    CHECK(9 + td_len + path_len == size);
    CHECK(memcmp(str + 9, td, td_len) == 0);
    CHECK(strcmp(str + 9 + td_len, path) == 0);

    CHECK(td_len >= 1 && td_len <= SPIFFE_TD_MAX);
    for (size_t i = 0; i < td_len; i++) CHECK(ref_td_char((uint8_t)td[i]));

    CHECK(path_len == 0 || path[0] == '/');
    CHECK(path_len == 0 || path[path_len - 1] != '/');
    CHECK(strstr(path, "//") == NULL);
    CHECK(strchr(str, '?') == NULL && strchr(str, '#') == NULL && strchr(str, '%') == NULL);
    CHECK(spiffe_id_is_workload(id) == (path_len > 0));
    CHECK(spiffe_id_member_of(id, td));

    /* Re-parse gives the same string. */
    spiffe_id *again = NULL;
    CHECK(mid_is_ok(spiffe_id_parse(str, size, &again)));
    CHECK(strcmp(spiffe_id_str(again), str) == 0);
    CHECK(strcmp(spiffe_id_trust_domain(again), td) == 0);
    spiffe_id_free(again);

    /* Building from the parts gives the same string. */
    spiffe_id *built = NULL;
    CHECK(mid_is_ok(spiffe_id_from_parts(td, path, &built)));
    CHECK(strcmp(spiffe_id_str(built), str) == 0);
    spiffe_id_free(built);

    /* The trust domain is accepted on its own, bare and with the scheme. */
    char out[SPIFFE_TD_MAX + 1];
    CHECK(mid_is_ok(spiffe_trust_domain_parse(td, out)));
    CHECK(strcmp(out, td) == 0);
    char with_scheme[9 + SPIFFE_TD_MAX + 1];
    snprintf(with_scheme, sizeof with_scheme, "spiffe://%s", td);
    CHECK(mid_is_ok(spiffe_trust_domain_parse(with_scheme, out)));
    CHECK(strcmp(out, td) == 0);
}

/* The input as a C string for spiffe_trust_domain_parse: the bytes before
 * any NUL. Whatever is accepted must be a valid bare trust domain ID. */
static void check_trust_domain(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    char out[SPIFFE_TD_MAX + 1];
    mid_result r = spiffe_trust_domain_parse(s, out);
    if (mid_is_ok(r)) {
        size_t n = strlen(out);
        CHECK(n >= 1 && n <= SPIFFE_TD_MAX);
        char id[9 + SPIFFE_TD_MAX + 1];
        snprintf(id, sizeof id, "spiffe://%s", out);
        spiffe_id *parsed = NULL;
        CHECK(mid_is_ok(spiffe_id_parse(id, strlen(id), &parsed)));
        CHECK(!spiffe_id_is_workload(parsed));
        CHECK(spiffe_id_member_of(parsed, out));
        spiffe_id_free(parsed);
        /* Either the bare name or "spiffe://" + name. */
        CHECK(strcmp(s, out) == 0 || strcmp(s, id) == 0);
    } else {
        check_failure(r);
        CHECK(out[0] == '\0');
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spiffe_id *id = NULL;
    mid_result r = spiffe_id_parse((const char *)data, size, &id);
    bool ref = ref_valid_id(data, size);
    if (mid_is_ok(r)) {
        CHECK(ref);
        CHECK(id != NULL);
        check_id(id, data, size);
        spiffe_id_free(id);
    } else {
        CHECK(!ref);
        CHECK(id == NULL);
        check_failure(r);
        if (size > SPIFFE_ID_MAX) CHECK(r.err == MID_E_TOO_LARGE);
    }
    if (size <= 4096) check_trust_domain(data, size);
    return 0;
}
