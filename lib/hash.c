#include "lib/hash.h"

uint64_t hash_str(const char *s)
{
    /* The offset basis the mesh tables were written with (not the published
     * 14695981039346656037; any start value serves for table indexes). */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}
