/* Arenas: one per request or per received message.
 *
 * An arena hands out memory that is released all at once by arena_free (or
 * arena_reset). It has a hard byte limit: an allocation that would take the
 * total of requested bytes past the limit fails and marks the arena
 * exhausted, so a hostile protobuf message cannot make the decoder allocate
 * without bound. arena_allocator() adapts it to protobuf-c, so unpacked
 * messages live in the arena and protobuf_c_message_free_unpacked is never
 * needed for them.
 *
 * Built with -DMESHID_TESTING every allocation is a separate malloc, so
 * AddressSanitizer still sees overflows of individual objects; the limit is
 * accounted identically in both modes.
 *
 * Not thread-safe: an arena belongs to one thread at a time.
 */
#ifndef MESHID_LIB_ARENA_H
#define MESHID_LIB_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/result.h"

typedef struct arena arena;

/* Creates an empty arena that refuses to hand out more than `limit` bytes in
 * total (0 means ARENA_DEFAULT_LIMIT). MID_E_NOMEM on allocation failure. */
#define ARENA_DEFAULT_LIMIT ((size_t)16 << 20)
MID_RESULT arena_new(size_t limit, arena **out);

/* Releases the arena and everything allocated from it. NULL is a no-op. */
void arena_free(arena *a);

/* Releases every allocation but keeps the arena (and its first block) for
 * reuse; clears the exhausted flag. */
void arena_reset(arena *a);

/* Returns `n` bytes aligned for any object type, or NULL when the limit would
 * be exceeded (the arena is then marked exhausted) or malloc fails. n == 0
 * returns a valid unique pointer. */
void *arena_alloc(arena *a, size_t n);

/* Like arena_alloc, zero-filled. */
void *arena_calloc(arena *a, size_t n);

/* Copies `n` bytes of `s` and a terminating NUL into the arena. */
char *arena_strndup(arena *a, const char *s, size_t n);

/* Bytes handed out so far (requested sizes, without padding). */
size_t arena_used(const arena *a);

/* True once an allocation was refused because of the limit. */
bool arena_exhausted(const arena *a);

/* A protobuf-c allocator backed by `a` (its free is a no-op). The pointer
 * stays valid as long as the arena. */
ProtobufCAllocator *arena_allocator(arena *a);

#endif
