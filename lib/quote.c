#include "lib/quote.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void quote_bytes(const char *s, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    if (cap == 0) return;
    for (; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool plain = ch >= 0x20 && ch < 0x7f && ch != '\'' && ch != '\\';
        size_t need = plain ? 1 : 4;
        if (o + need > QUOTE_MAX || o + need >= cap) break;
        if (plain) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 0xf];
        }
    }
    if (i < len && o + 3 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

void quote_str(const char *s, char *out, size_t cap)
{
    quote_bytes(s, s != NULL ? strnlen(s, QUOTE_MAX + 1) : 0, out, cap);
}

const char *quote_printable(const char *s, size_t max, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; s && s[i] && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= max) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\') buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = '\0';
    return buf;
}
