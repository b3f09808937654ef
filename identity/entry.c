/* Registration entries and selectors: parsing, validation, matching.
 * The rules are listed in identity/entry.h and docs/identity.md. */
#include "identity/entry.h"
#include "lib/quote.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "identity/spiffe_id.h"

#define NAME_MAX_LEN 255
#define PATH_MAX_LEN 4095

/* ---- messages -------------------------------------------------------------- */

/* "invalid selector '<type>:<value>': <rule>" */
__attribute__((format(printf, 3, 4))) static mid_result reject_sel(const entry_selector *sel,
                                                                   mid_err err, const char *fmt,
                                                                   ...)
{
    char t[QUOTE_MAX + 8], v[QUOTE_MAX + 8], rule[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rule, sizeof rule, fmt, ap);
    va_end(ap);
    quote_str(sel->type, t, sizeof t);
    quote_str(sel->value, v, sizeof v);
    return mid_fail(err, __FILE__, __LINE__, "invalid selector '%s:%s': %s", t, v, rule);
}

/* ---- value rules ----------------------------------------------------------- */

/* Decimal 0..4294967294 in canonical form. (uid_t)-1 means "no id". */
static bool is_id_number(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 10) return false;
    if (n > 1 && s[0] == '0') return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v < 4294967295u;
}

/* A user or group name: the portable set plus '.', a trailing '$' (Samba
 * machine accounts), no leading '-' (it would read as an option). */
static bool is_unix_name(const char *s)
{
    size_t n = strnlen(s, NAME_MAX_LEN + 1);
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' ||
                  (ch == '$' && i == n - 1 && n > 1);
        if (!ok) return false;
    }
    return true;
}

/* What is wrong with a path, or NULL. */
static const char *path_problem(const char *s)
{
    size_t n = strnlen(s, PATH_MAX_LEN + 1);
    if (n > PATH_MAX_LEN) return "the path is over 4095 bytes";
    if (s[0] != '/') return "the path must be absolute";
    if (n == 1) return "the path must name a file, not '/'";
    if (s[n - 1] == '/') return "the path must not end with '/'";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) return "the path must not contain control bytes";
    }
    for (const char *seg = s + 1;; seg++) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0) return "the path must not contain '//'";
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return "the path must not contain '.' or '..' segments";
        if (end == NULL) break;
        seg = end;
    }
    return NULL;
}

static bool is_sha256_hex(const char *s)
{
    if (strnlen(s, 65) != 64) return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static MID_RESULT validate_unix(const entry_selector *sel)
{
    const char *v = sel->value;
    const char *colon = strchr(v, ':');
    if (colon == NULL)
        return reject_sel(sel, MID_E_INVALID,
                          "a unix selector is 'unix:<uid|gid|user|group|path|sha256>:<value>'");
    size_t klen = (size_t)(colon - v);
    const char *rest = colon + 1;
#define KEY_IS(k) (klen == sizeof(k) - 1 && memcmp(v, (k), klen) == 0)
    if (KEY_IS("uid") || KEY_IS("gid")) {
        if (!is_id_number(rest))
            return reject_sel(sel, MID_E_INVALID,
                              "a %s is a decimal number from 0 to 4294967294 without sign or "
                              "leading zeros",
                              KEY_IS("uid") ? "uid" : "gid");
        return MID_OK_RESULT;
    }
    if (KEY_IS("user") || KEY_IS("group")) {
        if (!is_unix_name(rest))
            return reject_sel(sel, MID_E_INVALID,
                              "a %s name is 1 to 255 of [A-Za-z0-9._-] (a final '$' allowed), "
                              "not starting with '-'",
                              KEY_IS("user") ? "user" : "group");
        return MID_OK_RESULT;
    }
    if (KEY_IS("path")) {
        const char *why = path_problem(rest);
        if (why != NULL) return reject_sel(sel, MID_E_INVALID, "%s", why);
        return MID_OK_RESULT;
    }
    if (KEY_IS("sha256")) {
        if (!is_sha256_hex(rest))
            return reject_sel(sel, MID_E_INVALID, "a sha256 is 64 lowercase hex digits");
        return MID_OK_RESULT;
    }
#undef KEY_IS
    return reject_sel(sel, MID_E_INVALID,
                      "unknown unix selector key (known: uid, gid, user, group, path, sha256)");
}

/* ---- selectors ------------------------------------------------------------- */

MID_RESULT entry_selector_validate(const entry_selector *sel)
{
    MID_ENSURE(sel != NULL && sel->type != NULL && sel->value != NULL, MID_E_INVALID,
               "a selector needs a type and a value");
    if (strnlen(sel->type, ENTRY_SELECTOR_TYPE_MAX + 1) > ENTRY_SELECTOR_TYPE_MAX)
        return reject_sel(sel, MID_E_TOO_LARGE, "the type is over %d bytes",
                          ENTRY_SELECTOR_TYPE_MAX);
    if (strnlen(sel->value, ENTRY_SELECTOR_VALUE_MAX + 1) > ENTRY_SELECTOR_VALUE_MAX)
        return reject_sel(sel, MID_E_TOO_LARGE, "the value is over %d bytes",
                          ENTRY_SELECTOR_VALUE_MAX);
    if (sel->type[0] == '\0') return reject_sel(sel, MID_E_INVALID, "the type is empty");
    if (sel->value[0] == '\0') return reject_sel(sel, MID_E_INVALID, "the value is empty");
    if (strcmp(sel->type, "unix") == 0) return validate_unix(sel);
    return reject_sel(sel, MID_E_INVALID, "unknown selector type (known: unix)");
}

MID_RESULT entry_selector_parse(const char *text, char *buf, size_t cap, entry_selector *out)
{
    MID_ENSURE(text != NULL && buf != NULL && out != NULL, MID_E_INVALID, "no selector");
    out->type = out->value = NULL;
    size_t n = strnlen(text, ENTRY_SELECTOR_TEXT_MAX + 1);
    MID_ENSURE(n <= ENTRY_SELECTOR_TEXT_MAX, MID_E_TOO_LARGE,
               "invalid selector: over %d bytes", ENTRY_SELECTOR_TEXT_MAX);
    MID_ENSURE(n < cap, MID_E_TOO_LARGE, "invalid selector: %zu bytes do not fit the buffer", n);
    memcpy(buf, text, n + 1);
    char *colon = strchr(buf, ':');
    if (colon == NULL) {
        entry_selector whole = {buf, ""};
        return reject_sel(&whole, MID_E_INVALID, "a selector is written 'type:value'");
    }
    *colon = '\0';
    entry_selector sel = {buf, colon + 1};
    MID_GUARD(entry_selector_validate(&sel));
    *out = sel;
    return MID_OK_RESULT;
}

MID_RESULT entry_selector_format(const entry_selector *sel, char *out, size_t cap)
{
    MID_ENSURE(sel != NULL && sel->type != NULL && sel->value != NULL && out != NULL && cap > 0,
               MID_E_INVALID, "no selector");
    int n = snprintf(out, cap, "%s:%s", sel->type, sel->value);
    MID_ENSURE(n >= 0 && (size_t)n < cap, MID_E_TOO_LARGE, "selector does not fit %zu bytes",
               cap);
    return MID_OK_RESULT;
}

int entry_selector_equal(const entry_selector *a, const entry_selector *b)
{
    return strcmp(a->type, b->type) == 0 && strcmp(a->value, b->value) == 0;
}

/* ---- entries --------------------------------------------------------------- */

/* A hostname for a DNS SAN, optionally with "*." in front. */
static bool is_dns_name(const char *s)
{
    size_t n = strnlen(s, ENTRY_DNS_NAME_MAX + 1);
    if (n == 0 || n > ENTRY_DNS_NAME_MAX) return false;
    size_t i = 0;
    if (n > 2 && s[0] == '*' && s[1] == '.') i = 2;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] != '.') {
            char ch = s[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '-';
            if (!ok) return false;
            i++;
        }
        size_t len = i - start;
        if (len == 0 || len > 63 || s[start] == '-' || s[i - 1] == '-') return false;
        if (i < n) {
            i++; /* the dot */
            if (i == n) return false; /* trailing dot */
        }
    }
    return true;
}

static MID_RESULT parse_id(const char *what, const char *s, spiffe_id **out)
{
    MID_ENSURE(s != NULL && *s != '\0', MID_E_INVALID, "entry %s is required", what);
    return spiffe_id_parse(s, strnlen(s, SPIFFE_ID_MAX + 1), out);
}

MID_RESULT entry_validate(const entry *e)
{
    mid_result r = MID_OK_RESULT;
    spiffe_id *id = NULL, *parent = NULL;
    MID_CHECK(r, e != NULL, MID_E_INVALID, "no entry");
    MID_TRY(r, parse_id("spiffe_id", e->spiffe_id, &id));
    MID_CHECK(r, spiffe_id_is_workload(id), MID_E_INVALID,
              "entry spiffe_id %s names a trust domain, not a workload", spiffe_id_str(id));
    MID_TRY(r, parse_id("parent_id", e->parent_id, &parent));
    MID_CHECK(r, spiffe_id_member_of(id, spiffe_id_trust_domain(parent)), MID_E_INVALID,
              "entry spiffe_id %s and parent_id %s are in different trust domains",
              spiffe_id_str(id), spiffe_id_str(parent));
    MID_CHECK(r, e->n_selectors >= 1, MID_E_INVALID, "an entry needs at least one selector");
    MID_CHECK(r, e->n_selectors <= ENTRY_SELECTORS_MAX, MID_E_TOO_LARGE,
              "an entry has at most %d selectors", ENTRY_SELECTORS_MAX);
    MID_CHECK(r, e->selectors != NULL, MID_E_INVALID, "entry selectors are missing");
    for (size_t i = 0; i < e->n_selectors; i++) {
        MID_TRY(r, entry_selector_validate(&e->selectors[i]));
        for (size_t j = 0; j < i; j++)
            if (entry_selector_equal(&e->selectors[i], &e->selectors[j])) {
                r = reject_sel(&e->selectors[i], MID_E_INVALID, "listed twice in one entry");
                goto out;
            }
    }
    MID_CHECK(r, e->n_dns_names <= ENTRY_DNS_NAMES_MAX, MID_E_TOO_LARGE,
              "an entry has at most %d DNS names", ENTRY_DNS_NAMES_MAX);
    MID_CHECK(r, e->n_dns_names == 0 || e->dns_names != NULL, MID_E_INVALID,
              "entry dns_names are missing");
    for (size_t i = 0; i < e->n_dns_names; i++) {
        char q[QUOTE_MAX + 8];
        quote_str(e->dns_names[i], q, sizeof q);
        MID_CHECK(r, e->dns_names[i] != NULL && is_dns_name(e->dns_names[i]), MID_E_INVALID,
                  "invalid DNS name '%s': labels of 1 to 63 letters, digits or '-' (not at "
                  "either end), at most %d bytes, '*.' allowed in front",
                  q, ENTRY_DNS_NAME_MAX);
    }
    MID_CHECK(r, e->ttl_seconds >= 0 && e->ttl_seconds <= ENTRY_TTL_MAX, MID_E_INVALID,
              "entry ttl_seconds %lld is outside 0..%d", (long long)e->ttl_seconds,
              ENTRY_TTL_MAX);
out:
    spiffe_id_free(id);
    spiffe_id_free(parent);
    return r;
}

int entry_matches(const entry *e, const entry_selector *have, size_t n_have)
{
    if (e == NULL || e->n_selectors == 0) return 0; /* never "matches everything" */
    for (size_t i = 0; i < e->n_selectors; i++) {
        size_t j = 0;
        while (j < n_have && !entry_selector_equal(&e->selectors[i], &have[j])) j++;
        if (j == n_have) return 0;
    }
    return 1;
}

void entry_match_all(const entry *entries, size_t n_entries, const entry_selector *have,
                     size_t n_have, size_t *idx, size_t *n_out)
{
    size_t n = 0;
    for (size_t i = 0; i < n_entries; i++)
        if (entry_matches(&entries[i], have, n_have)) idx[n++] = i;
    *n_out = n;
}
