#include "ca/codec.h"

#include <stdint.h>
#include <stdlib.h>

static const char HEX[] = "0123456789abcdef";
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void ca_hex_encode(const unsigned char *in, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

static mid_result encode(const unsigned char *in, size_t len, const char *alphabet, int pad,
                         char **out)
{
    MID_ENSURE(len <= (SIZE_MAX / 4) - 4, MID_E_TOO_LARGE, "base64 input too large");
    size_t cap = (len + 2) / 3 * 4 + 1;
    char *s = malloc(cap);
    MID_ENSURE_MEM(s);
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        s[o++] = alphabet[v >> 18 & 63];
        s[o++] = alphabet[v >> 12 & 63];
        s[o++] = alphabet[v >> 6 & 63];
        s[o++] = alphabet[v & 63];
    }
    size_t rest = len - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        s[o++] = alphabet[v >> 18 & 63];
        s[o++] = alphabet[v >> 12 & 63];
        if (rest == 2) s[o++] = alphabet[v >> 6 & 63];
        else if (pad) s[o++] = '=';
        if (pad) s[o++] = '=';
    }
    s[o] = '\0';
    *out = s;
    return mid_ok();
}

MID_RESULT ca_b64_encode(const unsigned char *in, size_t len, char **out)
{
    return encode(in, len, B64, 1, out);
}

MID_RESULT ca_b64url_encode(const unsigned char *in, size_t len, char **out)
{
    return encode(in, len, B64URL, 0, out);
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

MID_RESULT ca_b64_decode(const char *in, size_t len, size_t max, const char *what,
                         unsigned char **out, size_t *out_len)
{
    MID_ENSURE(len > 0 && len % 4 == 0, MID_E_INVALID,
               "%s: base64 length %zu is not a positive multiple of 4", what, len);
    size_t npad = 0;
    if (in[len - 1] == '=') npad = in[len - 2] == '=' ? 2 : 1;
    size_t dec = len / 4 * 3 - npad;
    MID_ENSURE(dec <= max, MID_E_TOO_LARGE, "%s: %zu bytes is over the limit of %zu", what, dec,
               max);
    unsigned char *buf = malloc(dec > 0 ? dec : 1);
    MID_ENSURE_MEM(buf);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int v[4];
        for (size_t k = 0; k < 4; k++) {
            unsigned char ch = (unsigned char)in[i + k];
            if (last && ch == '=' && k >= 4 - npad) {
                v[k] = 0;
                continue;
            }
            v[k] = b64_value(ch);
            if (v[k] < 0) {
                free(buf);
                MID_BAIL(MID_E_INVALID, "%s: invalid base64 character at offset %zu", what,
                         i + k);
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        /* Non-canonical encodings (non-zero bits under the padding) are refused
         * so that one byte string has exactly one accepted text form. */
        if (last && ((npad == 1 && (w & 0xff) != 0) || (npad == 2 && (w & 0xffff) != 0))) {
            free(buf);
            MID_BAIL(MID_E_INVALID, "%s: non-canonical base64 padding", what);
        }
        buf[o++] = (unsigned char)(w >> 16);
        if (!last || npad < 2) buf[o++] = (unsigned char)(w >> 8);
        if (!last || npad < 1) buf[o++] = (unsigned char)w;
    }
    *out = buf;
    *out_len = o;
    return mid_ok();
}
