/* Private to the readers of the mesh model (meshcore/model.c's JSON codec
 * and meshcore/yaml_load.c): the field-path and list helpers both use to
 * name fields and to build and drop meshcore/model.h records, so that
 * messages, cleanup and label order are the same whatever the syntax.
 * Nothing else should need this header. */
#ifndef MESHID_MESHCORE_MODEL_INT_H
#define MESHID_MESHCORE_MODEL_INT_H

#include <stddef.h>

#include "meshcore/model.h"

/* Writes the field-path segment of a user-chosen map key (a label key, an
 * endpoint port name) at out[o] (o < cap): ["KEY"] with '"', '\' and every
 * byte that is not printable ASCII written as \xHH, the form validation
 * messages name such keys in and yaml_load.c's path resolver reads back.
 * klen bytes of key (NULs allowed). Truncates to fit cap (a path is only
 * for messages); always NUL-terminates. Returns the new length. Never
 * fails. */
size_t mesh_path_key(char *out, size_t o, size_t cap, const char *key, size_t klen);

/* Frees the n strings of v (NULL entries allowed) and v itself; v may be
 * NULL. Never fails. */
void mesh_strv_free(char **v, size_t n);

/* Frees the keys and values of the n labels (NULL allowed) and l itself; l
 * may be NULL. Never fails. */
void mesh_labels_free(mesh_label *l, size_t n);

/* Sorts n labels (keys non-NULL) by key in strcmp order, the order
 * mesh_*_validate requires; equal keys stay adjacent for validation to
 * refuse. Never fails. */
void mesh_labels_sort(mesh_label *l, size_t n);

#endif
