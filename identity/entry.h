/* Registration entries and workload selectors, as a pure model (no I/O).
 *
 * A selector is a pair of opaque strings compared by exact byte equality,
 * written "type:value" where the type is everything before the first ':':
 * "unix:uid:1000" is {type "unix", value "uid:1000"}, the same split as the
 * node API's Selector message and SPIRE. meshid knows one type, "unix", whose
 * value is "<key>:<rest>" (docs/identity.md, "Selectors"):
 *
 *   unix:uid:<n>        decimal 0..4294967294, no sign, no leading zero
 *   unix:gid:<n>        same
 *   unix:user:<name>    [A-Za-z0-9._-], a trailing '$' allowed, not starting
 *   unix:group:<name>   with '-', 1..255 bytes
 *   unix:path:<path>    absolute, canonical (no "//", "." or ".." segment, no
 *                       trailing '/'), no control bytes, at most 4095 bytes
 *   unix:sha256:<hex>   64 lowercase hex digits (executable digest)
 *
 * Values are checked in canonical form only, because matching is exact: a
 * "uid:01000" entry could never match what the attestor reports.
 *
 * An entry maps the workloads of a parent (an agent) that carry ALL of its
 * selectors to a SPIFFE ID. Errors: MID_E_INVALID for a broken rule, with a
 * message "invalid selector '<input>': <rule>" (input quoted, cut to ~80
 * bytes, non-printable bytes as \xHH); MID_E_TOO_LARGE over a limit.
 */
#ifndef MESHID_IDENTITY_ENTRY_H
#define MESHID_IDENTITY_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"

#define ENTRY_SELECTOR_TYPE_MAX 64     /* bytes in a selector type */
#define ENTRY_SELECTOR_VALUE_MAX 4224  /* bytes in a selector value ("path:" + 4095) */
#define ENTRY_SELECTOR_TEXT_MAX (ENTRY_SELECTOR_TYPE_MAX + 1 + ENTRY_SELECTOR_VALUE_MAX)
#define ENTRY_SELECTORS_MAX 64         /* selectors per entry */
#define ENTRY_DNS_NAMES_MAX 32         /* DNS names per entry */
#define ENTRY_DNS_NAME_MAX 253         /* bytes in one DNS name */
#define ENTRY_TTL_MAX (366 * 86400)    /* longest ttl_seconds an entry may ask for */

/* Borrowed strings; see the rules above. */
typedef struct {
    const char *type;  /* "unix" */
    const char *value; /* "uid:1000" */
} entry_selector;

/* A registration entry as the matcher and validator see it (borrowed). */
typedef struct {
    const char *id;
    const char *spiffe_id;
    const char *parent_id;
    const entry_selector *selectors;
    size_t n_selectors;
    const char *const *dns_names;
    size_t n_dns_names;
    int64_t ttl_seconds; /* 0 = server default */
} entry;

/* Splits "type:value" at the first ':' into `buf` (capacity `cap`, which
 * must hold strlen(text) + 1 bytes, else MID_E_TOO_LARGE) and validates the
 * result with entry_selector_validate. On success out->type and out->value
 * point into buf. MID_E_INVALID for a missing ':' and every broken rule. */
MID_RESULT entry_selector_parse(const char *text, char *buf, size_t cap, entry_selector *out);

/* Checks one selector: a known type and a value that follows its rules. */
MID_RESULT entry_selector_validate(const entry_selector *sel);

/* Writes "type:value" into out; MID_E_TOO_LARGE if it does not fit in cap. */
MID_RESULT entry_selector_format(const entry_selector *sel, char *out, size_t cap);

/* 1 when both strings of a and b are equal, else 0. */
int entry_selector_equal(const entry_selector *a, const entry_selector *b);

/* Checks an entry before it is stored: spiffe_id a workload SPIFFE ID and
 * parent_id a SPIFFE ID, both of one trust domain; 1..ENTRY_SELECTORS_MAX
 * valid selectors, none twice; at most ENTRY_DNS_NAMES_MAX DNS names, each a
 * hostname (letters, digits, '-', dot-separated labels of 1..63 bytes, not
 * starting or ending with '-'; "*." allowed as the first label) of at most
 * ENTRY_DNS_NAME_MAX bytes; 0 <= ttl_seconds <= ENTRY_TTL_MAX. The id is
 * not checked (the store assigns it). */
MID_RESULT entry_validate(const entry *e);

/* 1 when every selector of `e` is among `have` (the selectors discovered for
 * a workload), else 0. An entry without selectors never matches. */
int entry_matches(const entry *e, const entry_selector *have, size_t n_have);

/* Finds the entries a workload gets: writes to idx[] the index of every
 * entries[i] that entry_matches `have`, in order, and their number to
 * *n_out. idx must have room for n_entries indices. Several entries may
 * match (a workload may hold several identities); none is not an error. */
void entry_match_all(const entry *entries, size_t n_entries, const entry_selector *have,
                     size_t n_have, size_t *idx, size_t *n_out);

#endif
