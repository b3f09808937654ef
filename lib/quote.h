/* Quoting untrusted input inside error messages: bounded, printable, and
 * unambiguous, so a hostile value can neither flood nor forge a log line. */
#ifndef MESHID_LIB_QUOTE_H
#define MESHID_LIB_QUOTE_H

#include <stddef.h>

#define QUOTE_MAX 80 /* bytes of quoted output before "..." */

/* Writes at most QUOTE_MAX bytes of the `len` bytes at `s` into `out` (size
 * `cap`, always NUL-terminated), escaping anything that is not printable
 * ASCII, and the quote and backslash, as \xHH, and appending "..." when the
 * input was cut. s may be NULL when len is 0. */
void quote_bytes(const char *s, size_t len, char *out, size_t cap);

/* The same for a NUL-terminated string (NULL quotes as ""). */
void quote_str(const char *s, char *out, size_t cap);

/* Client-supplied text made safe for a log line or a status message, for the
 * xDS/SDS servers: writes `s` (NULL: "") into buf, cap bytes with the NUL, as
 * printable ASCII: bytes outside 0x20..0x7e and '\' become \xHH (the quote
 * is kept, unlike quote_str), and after `max` input bytes the rest becomes
 * "...". A cap of max * 4 + 8 always holds the whole result; a smaller one
 * truncates. Always NUL-terminates (cap >= 1). Returns buf. */
const char *quote_printable(const char *s, size_t max, char *buf, size_t cap);

#endif
