/* SPIFFE ID parsing and validation. See identity/spiffe_id.h for the rules and
 * docs/identity.md for the rule -> message table.
 *
 * All input is walked with a length-checked cursor: nothing here relies on a
 * NUL terminator inside the bytes being validated, and no byte past `len` is
 * read. Every rejection names the rule that was broken and quotes at most
 * QUOTE_MAX bytes of the input, with non-printable bytes escaped, so a hostile
 * ID cannot flood or forge log lines.
 */
#include "identity/spiffe_id.h"
#include "lib/quote.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEME "spiffe://"
#define SCHEME_LEN (sizeof SCHEME - 1)

struct spiffe_id {
    const char *td;   /* NUL-terminated trust domain, inside buf after str */
    const char *path; /* "" or "/a/b", the tail of str */
    char buf[];       /* str NUL td NUL */
};

/* ---- length-checked cursor ---------------------------------------------- */

typedef struct {
    const unsigned char *p;
    size_t len;
    size_t pos;
} cursor;

static bool cur_done(const cursor *c) { return c->pos >= c->len; }

/* The byte under the cursor; the caller has checked !cur_done. */
static unsigned char cur_peek(const cursor *c) { return c->p[c->pos]; }

/* ---- error messages ------------------------------------------------------ */

/* What is being validated, for "invalid <kind> '<quoted s>': <rule>". */
typedef struct {
    const char *kind;
    const char *s;
    size_t len;
} subject;

__attribute__((format(printf, 4, 5))) static mid_result reject_at(int line, mid_err err,
                                                                 const subject *subj,
                                                                 const char *fmt, ...)
{
    char rule[256];
    char quoted[QUOTE_MAX + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rule, sizeof rule, fmt, ap);
    va_end(ap);
    quote_bytes(subj->s, subj->len, quoted, sizeof quoted);
    return mid_fail(err, __FILE__, line, "invalid %s '%s': %s", subj->kind, quoted, rule);
}

#define REJECT(err, subj, ...) return reject_at(__LINE__, (err), (subj), __VA_ARGS__)

/* Describes byte `ch` for a message: 'x' when printable, else 0xHH. */
static void describe_byte(unsigned char ch, char out[8])
{
    if (ch >= 0x20 && ch < 0x7f && ch != '\'' && ch != '\\')
        snprintf(out, 8, "'%c'", ch);
    else
        snprintf(out, 8, "0x%02x", ch);
}

/* ---- the rules ------------------------------------------------------------ */

static bool is_td_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
           ch == '_';
}

static bool is_segment_char(unsigned char ch)
{
    return is_td_char(ch) || (ch >= 'A' && ch <= 'Z');
}

/* Rejects '?' and '#' with their own messages; shared by domain and path. */
static mid_result check_query_fragment(const cursor *c, const subject *subj)
{
    unsigned char ch = cur_peek(c);
    if (ch == '?')
        REJECT(MID_E_INVALID, subj, "a query is not allowed ('?' at offset %zu)", c->pos);
    if (ch == '#')
        REJECT(MID_E_INVALID, subj, "a fragment is not allowed ('#' at offset %zu)", c->pos);
    return mid_ok();
}

/* Bytes from the cursor up to the next '/' or the end. */
static size_t td_rest(const cursor *c)
{
    size_t n = 0;
    while (c->pos + n < c->len && c->p[c->pos + n] != '/') n++;
    return n;
}

#define RULE_TD_CHARS                                                                      \
    "trust domain characters are limited to lowercase letters, digits, dots, dashes and " \
    "underscores"
#define RULE_PATH_CHARS                                                                   \
    "path segment characters are limited to letters, digits, dots, dashes and underscores"

/* Rejects the byte under the cursor, which is not allowed in a trust domain,
 * with the most specific rule it breaks. */
static mid_result reject_td_byte(const cursor *c, const subject *subj)
{
    unsigned char ch = cur_peek(c);
    char b[8];
    describe_byte(ch, b);
    MID_GUARD(check_query_fragment(c, subj));
    if (ch >= 'A' && ch <= 'Z')
        REJECT(MID_E_INVALID, subj, RULE_TD_CHARS " (upper case %s at offset %zu)", b, c->pos);
    if (ch == '%')
        REJECT(MID_E_INVALID, subj,
               "the trust domain must not be percent-encoded ('%%' at offset %zu)", c->pos);
    if (ch == '@')
        REJECT(MID_E_INVALID, subj, "the trust domain must not contain userinfo ('@' at offset %zu)",
               c->pos);
    /* "user:password@host": the ':' comes first but the problem is userinfo. */
    if (ch == ':' && memchr(c->p + c->pos, '@', td_rest(c)) != NULL)
        REJECT(MID_E_INVALID, subj, "the trust domain must not contain userinfo ('user:password@')");
    if (ch == ':')
        REJECT(MID_E_INVALID, subj, "the trust domain must not contain a port (':' at offset %zu)",
               c->pos);
    if (ch == '[' || ch == ']')
        REJECT(MID_E_INVALID, subj,
               "the trust domain must not be an IPv6 address literal (%s at offset %zu)", b, c->pos);
    REJECT(MID_E_INVALID, subj, RULE_TD_CHARS " (%s at offset %zu)", b, c->pos);
}

/* Consumes a trust domain name from the cursor, stopping before '/' or at the
 * end. Error offsets are reported relative to the subject. */
static mid_result scan_trust_domain(cursor *c, const subject *subj, size_t *td_len)
{
    size_t start = c->pos;
    while (!cur_done(c) && cur_peek(c) != '/') {
        if (!is_td_char(cur_peek(c))) return reject_td_byte(c, subj);
        c->pos++;
    }
    size_t n = c->pos - start;
    if (n == 0) REJECT(MID_E_INVALID, subj, "the trust domain is missing");
    if (n > SPIFFE_TD_MAX)
        REJECT(MID_E_TOO_LARGE, subj, "the trust domain is over the limit of %d bytes",
               SPIFFE_TD_MAX);
    *td_len = n;
    return mid_ok();
}

/* Consumes the path: zero or more "/<segment>" up to the end of the cursor. */
static mid_result scan_path(cursor *c, const subject *subj)
{
    if (cur_done(c)) return mid_ok();
    if (cur_peek(c) != '/')
        REJECT(MID_E_INVALID, subj, "the path must be empty or start with '/'");
    while (!cur_done(c)) {
        c->pos++; /* the '/' */
        size_t seg = c->pos;
        while (!cur_done(c) && cur_peek(c) != '/') {
            unsigned char ch = cur_peek(c);
            if (!is_segment_char(ch)) {
                MID_GUARD(check_query_fragment(c, subj));
                if (ch == '%')
                    REJECT(MID_E_INVALID, subj,
                           "the path must not be percent-encoded ('%%' at offset %zu)", c->pos);
                char b[8];
                describe_byte(ch, b);
                REJECT(MID_E_INVALID, subj, RULE_PATH_CHARS " (%s at offset %zu)", b, c->pos);
            }
            c->pos++;
        }
        size_t n = c->pos - seg;
        if (n == 0) {
            if (cur_done(c)) REJECT(MID_E_INVALID, subj, "the path must not end with '/'");
            REJECT(MID_E_INVALID, subj,
                   "path segments must not be empty ('//' at offset %zu)", seg - 1);
        }
        if ((n == 1 && c->p[seg] == '.') || (n == 2 && c->p[seg] == '.' && c->p[seg + 1] == '.'))
            REJECT(MID_E_INVALID, subj,
                   "path segments must not be '.' or '..' (at offset %zu)", seg);
    }
    return mid_ok();
}

/* Checks the "spiffe://" prefix and leaves the cursor after it. */
static mid_result scan_scheme(cursor *c, const subject *subj)
{
    if (c->len >= SCHEME_LEN && memcmp(c->p, SCHEME, SCHEME_LEN) == 0) {
        c->pos = SCHEME_LEN;
        return mid_ok();
    }
    if (c->len >= SCHEME_LEN) {
        bool same_ci = true;
        for (size_t i = 0; i < SCHEME_LEN; i++) {
            unsigned char ch = c->p[i];
            if (ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch - 'A' + 'a');
            if (ch != (unsigned char)SCHEME[i]) same_ci = false;
        }
        if (same_ci)
            REJECT(MID_E_INVALID, subj, "the scheme must be written in lower case as \"spiffe://\"");
    }
    /* Some other URI ("https://...", "spiffe:/x")? Look for a scheme delimiter
     * before the first '/'. */
    for (size_t i = 0; i < c->len && c->p[i] != '/'; i++)
        if (c->p[i] == ':') REJECT(MID_E_INVALID, subj, "the scheme must be \"spiffe://\"");
    REJECT(MID_E_INVALID, subj, "a SPIFFE ID must start with \"spiffe://\"");
}

/* Copies the validated parts into one allocation. */
static mid_result build(const char *td, size_t td_len, const char *path, size_t path_len,
                        spiffe_id **out)
{
    size_t len = SCHEME_LEN + td_len + path_len;
    spiffe_id *id = malloc(sizeof *id + len + 1 + td_len + 1);
    MID_ENSURE_MEM(id);
    char *p = id->buf;
    memcpy(p, SCHEME, SCHEME_LEN);
    memcpy(p + SCHEME_LEN, td, td_len);
    memcpy(p + SCHEME_LEN + td_len, path, path_len);
    p[len] = '\0';
    char *tdcopy = p + len + 1;
    memcpy(tdcopy, td, td_len);
    tdcopy[td_len] = '\0';
    id->td = tdcopy;
    id->path = p + SCHEME_LEN + td_len;
    *out = id;
    return mid_ok();
}

/* ---- public API ---------------------------------------------------------- */

MID_RESULT spiffe_id_parse(const char *s, size_t len, spiffe_id **out)
{
    *out = NULL;
    subject subj = {"SPIFFE ID", s, len};
    if (s == NULL) {
        subj.s = "";
        subj.len = 0;
        REJECT(MID_E_INVALID, &subj, "a SPIFFE ID must not be empty");
    }
    if (len == 0) REJECT(MID_E_INVALID, &subj, "a SPIFFE ID must not be empty");
    if (len > SPIFFE_ID_MAX)
        REJECT(MID_E_TOO_LARGE, &subj, "the ID is %zu bytes, over the limit of %d bytes", len,
               SPIFFE_ID_MAX);
    const char *nul = memchr(s, '\0', len);
    if (nul != NULL)
        REJECT(MID_E_INVALID, &subj, "a SPIFFE ID must not contain a NUL byte (at offset %zu)",
               (size_t)(nul - s));

    cursor c = {(const unsigned char *)s, len, 0};
    MID_GUARD(scan_scheme(&c, &subj));
    size_t td_start = c.pos;
    size_t td_len = 0;
    MID_GUARD(scan_trust_domain(&c, &subj, &td_len));
    size_t path_start = c.pos;
    MID_GUARD(scan_path(&c, &subj));
    return build(s + td_start, td_len, s + path_start, len - path_start, out);
}

MID_RESULT spiffe_id_from_parts(const char *trust_domain, const char *path, spiffe_id **out)
{
    *out = NULL;
    if (path == NULL) path = "";
    /* Bound the scans: anything longer than a whole ID is rejected anyway. */
    size_t td_len = trust_domain ? strnlen(trust_domain, SPIFFE_ID_MAX + 1) : 0;
    size_t path_len = strnlen(path, SPIFFE_ID_MAX + 1);
    subject td_subj = {"trust domain", trust_domain ? trust_domain : "", td_len};
    subject path_subj = {"SPIFFE ID path", path, path_len};

    if (memmem(td_subj.s, td_len, "://", 3) != NULL)
        REJECT(MID_E_INVALID, &td_subj,
               "a trust domain name must not include a scheme (give the bare name)");
    cursor c = {(const unsigned char *)td_subj.s, td_len, 0};
    MID_GUARD(scan_trust_domain(&c, &td_subj, &td_len));
    if (!cur_done(&c))
        REJECT(MID_E_INVALID, &td_subj, "a trust domain name must not contain '/' or a path");
    if (SCHEME_LEN + td_len + path_len > SPIFFE_ID_MAX)
        REJECT(MID_E_TOO_LARGE, &path_subj,
               "the ID would be over the limit of %d bytes", SPIFFE_ID_MAX);
    cursor pc = {(const unsigned char *)path, path_len, 0};
    MID_GUARD(scan_path(&pc, &path_subj));
    return build(td_subj.s, td_len, path, path_len, out);
}

void spiffe_id_free(spiffe_id *id) { free(id); }

const char *spiffe_id_str(const spiffe_id *id) { return id->buf; }

const char *spiffe_id_trust_domain(const spiffe_id *id) { return id->td; }

const char *spiffe_id_path(const spiffe_id *id) { return id->path; }

bool spiffe_id_is_workload(const spiffe_id *id) { return id->path[0] != '\0'; }

bool spiffe_id_member_of(const spiffe_id *id, const char *td)
{
    return id != NULL && td != NULL && strcmp(id->td, td) == 0;
}

MID_RESULT spiffe_trust_domain_parse(const char *s, char out[SPIFFE_TD_MAX + 1])
{
    out[0] = '\0';
    if (s == NULL) s = "";
    size_t len = strnlen(s, SPIFFE_ID_MAX + 1);
    subject subj = {"trust domain", s, len};
    cursor c = {(const unsigned char *)s, len, 0};
    /* "spiffe://td" is accepted; any other scheme, or a bad case, is not. */
    bool has_scheme = false;
    for (size_t i = 0; i + 2 < len && s[i] != '/'; i++)
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') has_scheme = true;
    if (has_scheme) MID_GUARD(scan_scheme(&c, &subj));
    size_t start = c.pos;
    size_t td_len = 0;
    MID_GUARD(scan_trust_domain(&c, &subj, &td_len));
    if (!cur_done(&c))
        REJECT(MID_E_INVALID, &subj, "a trust domain name must not contain '/' or a path");
    memcpy(out, s + start, td_len);
    out[td_len] = '\0';
    return mid_ok();
}
