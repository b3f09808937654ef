/* An independent interpreter of compiled Envoy RBAC filter configs, for
 * tests: it unpacks the bytes meshcore/rbac.c produced with protobuf-c and
 * evaluates them with Envoy's semantics (envoy/config/rbac/v3/rbac.proto):
 *   - filters run in order; the first one that denies decides;
 *   - action ALLOW: allowed iff some policy matches; DENY: allowed iff none;
 *   - a policy matches iff some permission AND some principal match;
 *   - and_* / or_* / not_* / any, header (":method", ":path", ":authority"),
 *     url_path (path without query), destination_port, authenticated
 *     (principal_name against the peer URI SAN; unset = any TLS peer);
 *   - StringMatcher exact/prefix/suffix/contains (ignore_case) and
 *     safe_regex as a full match (POSIX ERE; a leading "(?i)" = ignore case).
 * On a TCP request (http = 0) no header and no path is known.
 *
 * It also checks Envoy's validation rules for what it reads (a oneof must be
 * set, `any` true, sets and policy lists non-empty, prefix/suffix non-empty,
 * header names non-empty, stat_prefix non-empty for network filters, the
 * filter names and type URLs): a violation is a load error.
 *
 * Nothing is shared with meshcore/policy.c on purpose.
 */
#ifndef MESHID_TESTS_UNIT_POLICY_RBAC_INTERP_H
#define MESHID_TESTS_UNIT_POLICY_RBAC_INTERP_H

#include <stddef.h>

#include "meshcore/policy.h"
#include "meshcore/rbac.h"

typedef struct rbac_interp rbac_interp;

/* Unpacks and checks filters[0..n). Returns NULL and writes a message into
 * err on a malformed or invalid config. Free with rbac_interp_free. */
rbac_interp *rbac_interp_load(const mesh_rbac_filter *filters, size_t n, char *err, size_t errcap);
void rbac_interp_free(rbac_interp *it);

/* 1 allowed, 0 denied, -1 when evaluation hit something unsupported
 * (message in err). */
int rbac_interp_decide(rbac_interp *it, const mesh_request *rq, char *err, size_t errcap);

/* Whether the policy named `name` (in any filter) matches rq: 1, 0, or -1
 * when no filter has a policy of that name. */
int rbac_interp_policy_matches(rbac_interp *it, const char *name, const mesh_request *rq);

/* Total number of policies (map entries) over all filters. */
size_t rbac_interp_n_policies(const rbac_interp *it);

#endif
