/* Arena allocator: bump allocation from a chain of blocks (nginx ngx_palloc
 * style), or one malloc per allocation in MESHID_TESTING builds. */
#include "lib/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN (alignof(max_align_t))
#define ARENA_BLOCK_SIZE ((size_t)4096)

/* A block header; payload follows, aligned. In testing mode each block holds
 * exactly one allocation, sized exactly, so ASan's redzone sits right after it. */
typedef struct arena_block {
    struct arena_block *next;
    size_t cap;  /* payload bytes */
    size_t off;  /* payload bytes used */
    alignas(max_align_t) unsigned char data[];
} arena_block;

struct arena {
    size_t limit;
    size_t used;
    bool exhausted;
    arena_block *head; /* newest first; bump allocation from head */
    ProtobufCAllocator pbc;
};

static void *pbc_alloc(void *ctx, size_t n) { return arena_alloc(ctx, n); }
static void pbc_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p;
}

mid_result arena_new(size_t limit, arena **out)
{
    *out = NULL;
    arena *a = calloc(1, sizeof *a);
    MID_ENSURE_MEM(a);
    a->limit = limit ? limit : ARENA_DEFAULT_LIMIT;
    a->pbc.alloc = pbc_alloc;
    a->pbc.free = pbc_free;
    a->pbc.allocator_data = a;
    *out = a;
    return mid_ok();
}

static void free_blocks(arena_block *b, arena_block *keep)
{
    while (b) {
        arena_block *next = b->next;
        if (b != keep) free(b);
        b = next;
    }
}

void arena_free(arena *a)
{
    if (!a) return;
    free_blocks(a->head, NULL);
    free(a);
}

void arena_reset(arena *a)
{
#ifdef MESHID_TESTING
    free_blocks(a->head, NULL);
    a->head = NULL;
#else
    /* keep the oldest block (the tail) for reuse */
    arena_block *tail = a->head;
    while (tail && tail->next) tail = tail->next;
    free_blocks(a->head, tail);
    a->head = tail;
    if (tail) tail->off = 0, tail->next = NULL;
#endif
    a->used = 0;
    a->exhausted = false;
}

static arena_block *new_block(size_t cap)
{
    if (cap > SIZE_MAX - sizeof(arena_block)) return NULL;
    arena_block *b = malloc(sizeof(arena_block) + cap);
    if (!b) return NULL;
    b->cap = cap;
    b->off = 0;
    b->next = NULL;
    return b;
}

void *arena_alloc(arena *a, size_t n)
{
    if (n > a->limit - a->used) {
        a->exhausted = true;
        return NULL;
    }
#ifdef MESHID_TESTING
    arena_block *b = new_block(n ? n : 1);
    if (!b) return NULL;
    b->off = b->cap;
    b->next = a->head;
    a->head = b;
    a->used += n;
    return b->data;
#else
    size_t need = n ? n : 1;
    size_t padded = (need + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    arena_block *b = a->head;
    if (!b || b->cap - b->off < padded) {
        /* big allocations get their own block behind the head so the
         * current block's free space is not wasted */
        if (padded > ARENA_BLOCK_SIZE / 4) {
            arena_block *big = new_block(padded);
            if (!big) return NULL;
            big->off = padded;
            if (b) {
                big->next = b->next;
                b->next = big;
            } else {
                a->head = big;
            }
            a->used += n;
            return big->data;
        }
        b = new_block(ARENA_BLOCK_SIZE);
        if (!b) return NULL;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->off;
    b->off += padded;
    a->used += n;
    return p;
#endif
}

void *arena_calloc(arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    if (p) memset(p, 0, n);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX) return NULL;
    char *p = arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

size_t arena_used(const arena *a) { return a->used; }
bool arena_exhausted(const arena *a) { return a->exhausted; }
ProtobufCAllocator *arena_allocator(arena *a) { return &a->pbc; }
