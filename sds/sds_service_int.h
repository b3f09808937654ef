/* The SDS service's checks on client-supplied request fields, exposed for
 * tests/fuzz/fuzz_sds_request.c (which applies them to decoded requests
 * without a network). Nothing else should need this header: the service
 * applies them itself (sds/sds_service.c). */
#ifndef MESHID_SDS_SDS_SERVICE_INT_H
#define MESHID_SDS_SDS_SERVICE_INT_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of a client-supplied string quoted in logs and status messages, and
 * a buffer size for sds_printable that always holds the result. */
#define SDS_PRINT_MAX 160
#define SDS_PRINT_BUF (SDS_PRINT_MAX * 4 + 8)

/* True for the type_url values a request may carry: NULL, empty (implied on
 * a dedicated SDS stream) or exactly SDS_SECRET_TYPE_URL. */
bool sds_type_url_ok(const char *type_url);

/* True when a requested resource name is short enough to look at (at most
 * SDS_NAME_MAX bytes); the service ends the stream otherwise. */
bool sds_name_len_ok(const char *name);

/* Writes `s` (NULL: "") into buf, cap bytes with the NUL, as printable
 * ASCII: bytes outside 0x20..0x7e and '\' become \xHH, and after
 * SDS_PRINT_MAX input bytes the rest becomes "...". Always NUL-terminates
 * (cap >= 1). Returns buf. */
const char *sds_printable(const char *s, char *buf, size_t cap);

#endif
