/* The authority lifecycle: preparing, activating, tainting, revoking and
 * retiring roots and intermediates, by hand (meshid ca ...) or on a schedule
 * (ca_rotation_tick, called by the server). States and rules: docs/ca.md
 * "Rotation".
 *
 *   prepared --activate--> active --(next activate)--> old --(no live SVID)--> removed
 *   prepared | old --taint--> tainted --revoke--> revoked
 *
 * Every function reads the authorities from the store, checks everything it
 * can before writing, and writes each transition with its audit event in
 * one store transaction: a refusal leaves the authorities table exactly as it
 * was. Ids may be given as a unique prefix of the authority id (lowercase or
 * uppercase hex). Thread-safe as the store is. Every write re-checks, in its
 * transaction, that each authority it changes is still in the state that was
 * read (store_authority_apply): when two processes race, one wins and the
 * other fails with MID_E_STATE, nothing of it written (see docs/ca.md). */
#ifndef MESHID_CA_ROTATION_H
#define MESHID_CA_ROTATION_H

#include <stddef.h>
#include <stdint.h>

#include "ca/ca.h"
#include "lib/result.h"
#include "storage/store.h"

#define CA_AUTHORITY_ID_MAX 129 /* 128 hex digits + NUL */

/* Decides whether trust in `root_id` has spread far enough for an SVID chained
 * to it to be handed out: the server answers "has every agent acknowledged a
 * bundle containing root_id (and have their SDS clients ACKed it)?". Called by
 * ca_activate after every other check passed and before anything is written,
 * once per activation, with the root the candidate intermediate chains to
 * (for an intermediate rotation under the active root, that root).
 * `intermediate_id` is the candidate signer. Return mid_ok() to proceed; any
 * error (e.g. MID_E_STATE "3 agents have not acknowledged the bundle: ...")
 * aborts the activation with that error, nothing written. The callback may
 * block (waiting for acks, with its own timeout); it must not call lifecycle
 * functions on the same store. */
typedef struct {
    mid_result (*ready)(void *ctx, const char *root_id, const char *intermediate_id);
    void *ctx;
} ca_activate_gate;

typedef struct {
    int new_root;               /* a new self-signed root and an intermediate under it */
    const char *upstream_dir;   /* adopt an intermediate from an Istio plug-in CA
                                   directory (exclusive with new_root) */
    int replace;                /* retire (-> removed) what is already prepared instead of
                                   refusing with MID_E_EXISTS */
    ca_key_type key_type;       /* 0: the active intermediate's type (EC P-256 if other) */
    int64_t root_ttl;           /* seconds; 0: the active root's lifetime */
    int64_t intermediate_ttl;   /* seconds; 0: CA_INTERMEDIATE_TTL_DEFAULT; always clamped
                                   to the root's notAfter */
    int64_t now;                /* Unix seconds the certificates start at; 0: time_now() */
    const char *actor;          /* for the audit log; NULL: "system" */
} ca_prepare_opts;

/* What ca_prepare recorded. root_id is the root the intermediate chains to:
 * the active one, the new one (new_root) or the upstream one. */
typedef struct {
    char intermediate_id[CA_AUTHORITY_ID_MAX];
    char root_id[CA_AUTHORITY_ID_MAX];
    int root_is_new;            /* the root was added by this call (state prepared) */
} ca_prepared;

/* Creates a prepared intermediate: by default a new key and certificate under
 * the active root (whose key must be here: MID_E_STATE for an upstream root,
 * naming --upstream-dir and --root); with new_root, also a new self-signed
 * root; with upstream_dir, adopted with the same checks as ca_init_upstream
 * (its trust domain must be the store's, MID_E_INVALID). New roots join the
 * trust bundle at once (state prepared). Keys go to <data_dir>/keys/ (0600)
 * and are removed again if nothing was recorded. MID_E_EXISTS when something
 * is already prepared (the message names it) and !replace; MID_E_NOT_FOUND
 * for an empty store; MID_E_STATE without an active intermediate and root.
 * Audit: ca.prepare per new authority, ca.retire per replaced one. `out` may
 * be NULL. */
MID_RESULT ca_prepare(store *st, const char *data_dir, const ca_prepare_opts *o,
                      ca_prepared *out);

/* Makes prepared authority `id` (an intermediate, or a root with exactly one
 * prepared intermediate under it) the signer: the intermediate and, when its
 * root is prepared, the root become active; the previously active ones
 * become old; one transaction, audit ca.activate per row. Before anything
 * changes: the id must resolve (MID_E_NOT_FOUND unknown, MID_E_INVALID
 * ambiguous, listing the matches), be prepared (MID_E_STATE otherwise, naming
 * the state), its key file(s) must load and match the certificates
 * (MID_E_NOT_FOUND / MID_E_INVALID), both certificates must be valid now
 * (MID_E_STATE "not valid before ..." / "expired ..."), the intermediate
 * must verify to its root, whose state must be prepared or active
 * (MID_E_STATE), the clock must not be behind the last recorded lifecycle
 * time (MID_E_STATE), and `gate` (NULL: none) must agree. */
MID_RESULT ca_activate(store *st, const char *data_dir, const char *id,
                       const ca_activate_gate *gate, const char *actor);

/* ca_activate at an explicit time (tests, ca_rotation_tick, the CLI);
 * `activated` (may be NULL) receives the intermediate's full id. */
MID_RESULT ca_activate_at(store *st, const char *data_dir, const char *id,
                          const ca_activate_gate *gate, const char *actor, int64_t now,
                          char activated[CA_AUTHORITY_ID_MAX]);

/* Marks a prepared or old authority tainted (compromised): agents re-issue
 * every SVID whose chain contains it at once (ca_chain_tainted), and a
 * tainted root stays in the bundle until revoked. MID_E_STATE for the active
 * intermediate or root ("activate a replacement first"), for one already
 * tainted, revoked or removed. Audit ca.taint with the live SVID count.
 * `full_id` (may be NULL) receives the resolved id. */
MID_RESULT ca_taint(store *st, const char *id, const char *actor,
                    char full_id[CA_AUTHORITY_ID_MAX]);

/* Revokes a tainted root: it leaves the trust bundle, so peers refuse every
 * certificate chained to it. Only tainted authorities (MID_E_STATE "taint it
 * first", with the live SVID count) and only roots: peers hold roots, never
 * intermediates, so revoking an intermediate could not stop them accepting
 * it (MID_E_INVALID, pointing at root rotation). Audit ca.revoke. */
MID_RESULT ca_revoke(store *st, const char *id, const char *actor,
                     char full_id[CA_AUTHORITY_ID_MAX]);

/* Moves every old authority nothing live chains to any more (no SVID with
 * notAfter > now - CA_RETIRE_GRACE signed by it or, for a root, by an
 * intermediate under it; for a root, no prepared or active intermediate
 * under it) to removed, each with audit ca.retire. `retired` (may be NULL)
 * receives how many. Refuses (MID_E_STATE, nothing written) when `now` is
 * behind the last recorded lifecycle time. */
#define CA_RETIRE_GRACE 300 /* seconds; peers whose clocks run behind */
MID_RESULT ca_retire_expired(store *st, int64_t now, const char *actor, size_t *retired);

/* ca_retire_expired with `grace` seconds (>= 0, MID_E_INVALID otherwise)
 * instead of CA_RETIRE_GRACE (meshid server --retire-grace; tests). */
MID_RESULT ca_retire_expired_grace(store *st, int64_t now, int64_t grace, const char *actor,
                                   size_t *retired);

/* Automatic rotation thresholds, in thousandths of an authority's lifetime
 * elapsed (notBefore..notAfter). 0 means the default. */
#define CA_ROTATE_PREPARE_PERMILLE 500  /* prepare at half the lifetime */
#define CA_ROTATE_ACTIVATE_PERMILLE 667 /* activate when a third remains */

typedef struct {
    int rotate_root;               /* also rotate a self-signed root */
    int prepare_permille;          /* 0: CA_ROTATE_PREPARE_PERMILLE */
    int activate_permille;         /* 0: CA_ROTATE_ACTIVATE_PERMILLE; > prepare */
    ca_key_type key_type;          /* as ca_prepare_opts */
    int64_t root_ttl;              /* as ca_prepare_opts */
    int64_t intermediate_ttl;      /* as ca_prepare_opts */
    const ca_activate_gate *gate;  /* passed to ca_activate; NULL: none */
    int64_t retire_grace;          /* seconds; 0: CA_RETIRE_GRACE */
} ca_rotation_policy;

/* What one tick did. */
typedef enum {
    CA_TICK_NOTHING = 0,
    CA_TICK_PREPARED_INTERMEDIATE,
    CA_TICK_PREPARED_ROOT,
    CA_TICK_ACTIVATED,
    CA_TICK_CLOCK_BEHIND           /* now is behind the last recorded time: no step */
} ca_tick_action;

/* One step of automatic rotation at `now` (the server calls it periodically,
 * e.g. every minute): retire what has expired, then at most one of: activate
 * the prepared intermediate once the active one (or, for a prepared root,
 * the active root) has passed activate_permille of its lifetime; prepare a
 * new root (rotate_root, self-signed roots only) or intermediate once the
 * active one has passed prepare_permille. A clock behind the last recorded
 * lifecycle time gives CA_TICK_CLOCK_BEHIND, a warning and no change
 * (not an error). A refused activation (e.g. by the gate) is returned as
 * its error; the next tick tries again. `policy` may be NULL (defaults);
 * `action` may be NULL. */
MID_RESULT ca_rotation_tick(store *st, const char *data_dir, int64_t now,
                            const ca_rotation_policy *policy, const char *actor,
                            ca_tick_action *action);

/* *tainted = 1 when authority `id` (a full id) or any authority above it is
 * tainted or revoked: an SVID it signed must be re-issued at once. */
MID_RESULT ca_chain_tainted(store *st, const char *id, int *tainted);

/* The full id of the authority `id` (a unique prefix) names. Errors as
 * ca_activate's for the id. */
MID_RESULT ca_authority_resolve(store *st, const char *id, char full_id[CA_AUTHORITY_ID_MAX]);

/* The id of the authority a handle signs with (for a server to notice that
 * the active intermediate changed and reopen). */
const char *ca_signer_id(const ca *c);

#endif
