/* The drafter ops table, for drafter implementations (callers use draft/drafter.h).
 * An implementation embeds sd_drafter_t as the first member of its state, fills one
 * static ops table with designated initializers, and points base.ops at it. Members
 * marked optional may be NULL. */
#ifndef SPECDEC_DRAFT_DRAFTER_IMPL_H
#define SPECDEC_DRAFT_DRAFTER_IMPL_H

#include <stdint.h>

#include "draft/drafter.h"

typedef struct sd_drafter_ops {
    const char *name; /* "ngram", "model", "layerskip", "group" */
    /* The members below up to destroy are required and have the contracts of their
     * wrappers in draft/drafter.h (the wrappers check the arguments first). */
    sd_status_t (*begin)(sd_drafter_t *d, const int32_t *tokens, int n);
    sd_status_t (*propose)(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out);
    sd_status_t (*accept)(sd_drafter_t *d, int n_accepted, int32_t next_token);
    sd_status_t (*rollback)(sd_drafter_t *d, int n);
    void (*reset)(sd_drafter_t *d);
    void (*destroy)(sd_drafter_t *d);
    /* 1 when no model runs for a proposal (sd_drafter_proposes_cheaply). */
    int proposes_cheaply;
    /* Optional (NULL: propose only): propose in rounds (sd_drafter_propose_begin). */
    sd_status_t (*propose_begin)(sd_drafter_t *d, const sd_draft_request_t *req,
                                 sd_draft_out_t *out, sd_draft_forward_t *fwd);
    sd_status_t (*propose_resume)(sd_drafter_t *d, sd_draft_forward_t *fwd);
    /* Optional (NULL: runs no model, 0 forwards): sd_drafter_forwards. */
    uint64_t (*forwards)(const sd_drafter_t *d);
    /* Optional (NULL: chains only), both or neither: sd_drafter_propose_tree, _accept_path. */
    sd_status_t (*propose_tree)(sd_drafter_t *d, const sd_draft_request_t *req,
                                const sd_tree_shape_t *shape, sd_draft_tree_t *out);
    sd_status_t (*accept_path)(sd_drafter_t *d, const int32_t *tokens, int n, int32_t next_token);
} sd_drafter_ops_t;

struct sd_drafter {
    const sd_drafter_ops_t *ops;
};

#endif
