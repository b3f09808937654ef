/* Loading Istio ServiceEntry and AuthorizationPolicy documents from YAML
 * (the subset meshid supports; docs/mesh.md "Resource files" lists it field
 * by field) into the resource model of meshcore/model.h.
 *
 * libyaml is the parser. Anchors/aliases, non-standard tags, duplicate keys,
 * nesting deeper than 32 levels and texts over MESH_DOC_BYTES_MAX are
 * refused. Every error message reads
 *     "SOURCE:LINE:COL: FIELD_PATH: what is wrong"
 * with 1-based line and column of the offending node, e.g.
 *     "x.yaml:14:5: spec.rules[0].when: field not supported by meshid (supported: from, to)".
 * Every document is also checked with mesh_service_validate /
 * mesh_policy_validate. Each returned document's `source` is "SOURCE:LINE"
 * of its first key (after comments). Both functions may also fail with
 * MID_E_NOMEM.
 *
 * No global state: calls on different threads are independent (errors go
 * to the calling thread's last error, lib/result.h).
 */
#ifndef MESHID_MESHCORE_YAML_LOAD_H
#define MESHID_MESHCORE_YAML_LOAD_H

#include <stddef.h>

#include "lib/result.h"
#include "meshcore/model.h"

/* Parses YAML text (one or more documents, '---' separated) named `source_name`
   (used in messages). On success *docs and *n own the documents (mesh_doc_list_free).
   On any error nothing is returned: MID_E_INVALID / MID_E_TOO_LARGE with a message
   "SOURCE:LINE:COL: FIELD_PATH: what is wrong". */
MID_RESULT mesh_yaml_parse(const char *text, size_t len, const char *source_name, mesh_doc **docs, size_t *n);

/* A file, or every *.yaml / *.yml file of a directory (sorted by name, not recursive);
   all documents of all files, or nothing (first error). Duplicate (kind, namespace, name)
   across the set is MID_E_INVALID naming both sources. MID_E_IO / MID_E_NOT_FOUND for
   unreadable paths. */
MID_RESULT mesh_yaml_load_path(const char *path, mesh_doc **docs, size_t *n);

#endif
