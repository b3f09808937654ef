/* String hashing for meshid's in-memory hash tables. */
#ifndef MESHID_LIB_HASH_H
#define MESHID_LIB_HASH_H

#include <stdint.h>

/* FNV-1a (64-bit prime) over the bytes of the NUL-terminated string s, which
 * must not be NULL. For bucket and slot indexes only: the value is not
 * stable across meshid versions, never stored or sent, and gives no
 * protection against chosen collisions (tables keyed by client input must
 * bound their probes by other means). Never fails. */
uint64_t hash_str(const char *s);

#endif
