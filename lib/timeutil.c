#include "lib/timeutil.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_DURATION (100LL * 366 * 86400)

int64_t time_now(void) { return (int64_t)time(NULL); }

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

MID_RESULT time_parse_duration(const char *s, int64_t *secs)
{
    MID_ENSURE(s != NULL && *s != '\0', MID_E_INVALID, "empty duration");
    int64_t total = 0;
    const char *p = s;
    while (*p) {
        MID_ENSURE(isdigit((unsigned char)*p), MID_E_INVALID,
                   "bad duration '%s' (use e.g. 90s, 15m, 1h30m, 2d)", s);
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (*p - '0');
            MID_ENSURE(n <= MAX_DURATION, MID_E_TOO_LARGE, "duration '%s' is too long", s);
            p++;
        }
        int64_t unit;
        switch (*p) {
        case '\0': unit = 1; break;
        case 's': unit = 1; p++; break;
        case 'm': unit = 60; p++; break;
        case 'h': unit = 3600; p++; break;
        case 'd': unit = 86400; p++; break;
        case 'w': unit = 7 * 86400; p++; break;
        default: MID_BAIL(MID_E_INVALID, "bad duration unit in '%s' (s, m, h, d or w)", s);
        }
        MID_ENSURE(n <= MAX_DURATION / unit, MID_E_TOO_LARGE, "duration '%s' is too long", s);
        total += n * unit;
        MID_ENSURE(total <= MAX_DURATION, MID_E_TOO_LARGE, "duration '%s' is too long", s);
    }
    MID_ENSURE(total > 0, MID_E_INVALID, "duration '%s' must be positive", s);
    *secs = total;
    return mid_ok();
}

static int digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i])) return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* Days from 1970-01-01 to the civil date (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static mid_result parse_rfc3339(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    int Y, M, D, h, mi, sec;
    MID_ENSURE(len >= 20 && digits(s, 4, &Y) && s[4] == '-' && digits(s + 5, 2, &M) &&
                   s[7] == '-' && digits(s + 8, 2, &D) && (s[10] == 'T' || s[10] == 't' ||
                   s[10] == ' ') && digits(s + 11, 2, &h) && s[13] == ':' &&
                   digits(s + 14, 2, &mi) && s[16] == ':' && digits(s + 17, 2, &sec),
               MID_E_INVALID, "bad time '%s' (use RFC 3339 like 2026-01-02T15:04:05Z or a "
               "duration like 1h)", s);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    MID_ENSURE(M >= 1 && M <= 12 && D >= 1 && D <= mdays[M - 1] && (M != 2 || D <= 28 || leap) &&
                   h <= 23 && mi <= 59 && sec <= 60,
               MID_E_INVALID, "time '%s' is out of range", s);
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        MID_ENSURE(isdigit((unsigned char)*p), MID_E_INVALID, "bad fraction in '%s'", s);
        while (isdigit((unsigned char)*p)) p++;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        MID_ENSURE(digits(p + 1, 2, &oh) && p[3] == ':' && digits(p + 4, 2, &om) && oh <= 23 &&
                       om <= 59, MID_E_INVALID, "bad offset in '%s'", s);
        offset = (int64_t)(oh * 3600 + om * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        MID_BAIL(MID_E_INVALID, "time '%s' needs a zone (Z or +hh:mm)", s);
    }
    MID_ENSURE(*p == '\0', MID_E_INVALID, "trailing characters in time '%s'", s);
    int64_t t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + (sec == 60 ? 59 : sec);
    *out = t - offset;
    return mid_ok();
}

MID_RESULT time_parse_when(const char *s, int64_t now, int64_t *out)
{
    MID_ENSURE(s != NULL && *s != '\0', MID_E_INVALID, "empty time");
    if (strlen(s) >= 20 && s[4] == '-') return parse_rfc3339(s, out);
    int64_t d;
    mid_result r = time_parse_duration(s, &d);
    if (!mid_is_ok(r))
        MID_BAIL(MID_E_INVALID, "bad time '%s' (use RFC 3339 like 2026-01-02T15:04:05Z or a "
                 "duration like 1h meaning one hour ago)", s);
    *out = now - d;
    return mid_ok();
}

void time_format_rfc3339(int64_t secs, char out[TIME_RFC3339_LEN])
{
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(out, TIME_RFC3339_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, TIME_RFC3339_LEN, "@%lld", (long long)secs);
}

void time_format_rfc3339_ms(int64_t ms, char out[TIME_RFC3339_LEN])
{
    /* Floor division that cannot overflow, even at INT64_MIN. */
    int64_t rem = ms % 1000;
    int64_t secs = ms / 1000 - (rem < 0 ? 1 : 0);
    int frac = (int)(rem < 0 ? rem + 1000 : rem);
    time_t t = (time_t)secs;
    struct tm tm;
    char base[24];
    if (gmtime_r(&t, &tm) == NULL || strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, TIME_RFC3339_LEN, "@%lld", (long long)ms);
        return;
    }
    snprintf(out, TIME_RFC3339_LEN, "%s.%03dZ", base, frac);
}

void time_format_duration(int64_t secs, char *out, size_t cap)
{
    static const struct { int64_t n; char u; } units[] = {
        {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    size_t used = 0;
    if (cap == 0) return;
    if (secs <= 0) {
        snprintf(out, cap, "0s");
        return;
    }
    out[0] = '\0';
    for (size_t i = 0; i < sizeof units / sizeof units[0] && used < cap; i++) {
        int64_t q = secs / units[i].n;
        if (q == 0) continue;
        secs -= q * units[i].n;
        int n = snprintf(out + used, cap - used, "%lld%c", (long long)q, units[i].u);
        if (n < 0) break;
        used += (size_t)n;
    }
}
