/* Time helpers: the clock, durations ("90s", "15m", "1h30m", "2d") and RFC 3339. */
#ifndef MESHID_LIB_TIMEUTIL_H
#define MESHID_LIB_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "lib/result.h"

#define TIME_RFC3339_LEN 32

/* Wall clock, Unix time. */
int64_t time_now(void);
int64_t time_now_ms(void);

/* Parses a positive duration: one or more <digits><unit> with unit s, m, h, d
 * or w (e.g. "1h30m"); a bare number means seconds. MID_E_INVALID otherwise,
 * MID_E_TOO_LARGE past 100 years. */
MID_RESULT time_parse_duration(const char *s, int64_t *secs);

/* Parses a point in time: RFC 3339 ("2026-01-02T03:04:05Z", offsets and
 * fractions accepted) or a duration meaning that long before `now`. */
MID_RESULT time_parse_when(const char *s, int64_t now, int64_t *out);

/* Formats Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" into `out`. */
void time_format_rfc3339(int64_t secs, char out[TIME_RFC3339_LEN]);

/* Formats Unix milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ" into `out`. */
void time_format_rfc3339_ms(int64_t ms, char out[TIME_RFC3339_LEN]);

/* Formats a duration compactly, e.g. 5400 -> "1h30m". */
void time_format_duration(int64_t secs, char *out, size_t cap);

#endif
