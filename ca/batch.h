/* Batch issuance: many X.509-SVIDs for the price of a few store writes.
 *
 * Each request is validated, CSR-verified, signed and (when refused)
 * audited exactly as ca_issue does it; the signed certificates are
 * recorded, each with its "svid.issue" event, in store requests of up to 8
 * sent as soon as they are signed (store_cert_insert_many_start: one queue
 * entry each; the writer folds whatever is queued into one transaction),
 * so the store writes the first while the rest are signed. Nothing is
 * handed out before its commit. This is what a server answering an agent's
 * BatchSignX509SVID wants: the durable write, the dominant cost of a lone
 * issuance, is shared by the batch instead of paid per certificate. Call
 * it from several threads with one chunk each to use every core
 * (sds/node_service.c does): calls on one handle share their work, a thread
 * whose own requests are all taken or being written signs requests of
 * another call instead of sleeping (see ca/batch.c and docs/ca.md,
 * "Batches"), so a core is not left idle while a chunk is written.
 */
#ifndef MESHID_CA_BATCH_H
#define MESHID_CA_BATCH_H

#include <stddef.h>

#include "ca/ca.h"
#include "lib/result.h"

#define CA_BATCH_MAX 256     /* requests per call */
#define CA_BATCH_MSG_MAX 512 /* bytes of one item's error message, NUL included */

/* One item's error message ("" on success); see ca_issue_batch_msgs. */
typedef struct {
    char msg[CA_BATCH_MSG_MAX];
} ca_batch_msg;

/* Issues reqs[0..n) (1 <= n <= CA_BATCH_MAX). For every i, results[i] is
 * what ca_issue would have returned for reqs[i] and out[i] the SVID on
 * success (owned by the caller: ca_svid_free), NULL otherwise. Refusals are
 * audited as "svid.refuse" exactly as ca_issue audits them, certificates
 * the store could not record included (some of them possibly on another
 * thread inside ca_issue_batch on the same handle, which signed that
 * request). Returns MID_E_OK when all n were issued, otherwise the first
 * failed item's error (this thread's last error then describes it);
 * MID_E_INVALID with nothing issued, nothing audited and the arrays
 * untouched for missing arguments or n out of range. Safe to call from many
 * threads at once on one handle; `reqs` must stay valid until it returns. */
MID_RESULT ca_issue_batch(ca *c, const ca_issue_req *reqs, size_t n, ca_svid **out,
                          mid_result *results);

/* ca_issue_batch, and, when `msgs` is not NULL, each item's error message
 * in msgs[i] (what mid_errmsg() would have said after ca_issue; cut to
 * CA_BATCH_MSG_MAX - 1 bytes). */
MID_RESULT ca_issue_batch_msgs(ca *c, const ca_issue_req *reqs, size_t n, ca_svid **out,
                               mid_result *results, ca_batch_msg *msgs);

#endif
