/* Drafters as the step loop sees them: one per request, proposing the next k tokens of its
 * context behind an opaque handle (implementations: draft/drafter_impl.h). The step and the
 * q / has_q rules: docs/design-notes.md, "A speculative step" and "Verification". */
#ifndef SPECDEC_DRAFT_DRAFTER_H
#define SPECDEC_DRAFT_DRAFTER_H

#include <stdint.h>

#include "specdec/specdec.h"
#include "verify/sampler.h"

/* Classes of evidence a proposal may report (sd_draft_out_t.evidence): 0 .. this - 1. */
#define SD_DRAFT_EVIDENCE_CLASSES 8

typedef struct sd_drafter sd_drafter_t;

typedef struct sd_draft_request {
    int k;                             /* propose at most k tokens, k >= 1 */
    const sd_sampler_params_t *params; /* the request's sampler settings */
    uint64_t seed;                     /* the request's seed (SD_RNG_DRAFT uniforms) */
    int64_t pos0;                      /* position of the first proposal = context length */
    float min_confidence;              /* stop drafting once the drafter's top probability
                                          falls below this (adaptive k); 0 = never */
} sd_draft_request_t;

typedef struct sd_draft_out {
    int32_t *tokens; /* [k] caller-owned: the proposals */
    float *q;        /* [k, n_vocab] caller-owned, or NULL when the caller verifies greedily */
    int n_vocab;     /* row length of q */
    int n;           /* set by propose: tokens proposed, 0..k (0: no idea; the step then
                        decodes one token with the target alone) */
    int has_q;       /* set by propose: 1 when q[0..n) holds the drafter's distributions
                        (d_i drawn from q_i with SD_RNG_DRAFT at pos0 + i); 0 when the
                        proposals are deterministic (verify with q = NULL) */
    int evidence;    /* set by propose (zeroed by the caller; drafters without classes leave
                        it): the proposal's support class, 0 .. SD_DRAFT_EVIDENCE_CLASSES - 1
                        (n-gram: the matched suffix length); docs/design-notes.md,
                        "Adaptive draft length" */
} sd_draft_out_t;

/* A forward a drafter needs run before it can go on (proposals in rounds): the tokens[n]
 * at the end of seq, through its first n_layers layers (0: all), with logits for every
 * row (n <= seq->max_tokens). n = 0: nothing to run, the proposal is complete. */
typedef struct sd_draft_forward {
    struct sd_seq *seq; /* sd_seq_t, model/model.h */
    const int32_t *tokens;
    int n;
    int n_layers;
} sd_draft_forward_t;

/* A token tree's shape as asked (sd_spec_config_t's tree fields): levels > 0: width[d]
 * candidates below every node of depth d; else budget > 0: a dynamic tree of up to budget
 * nodes, depth <= max_depth. sample_q: when sampling, a drafter that can draws a static
 * tree's children from its q (sd_draft_tree_t.has_q) instead of its top guesses. */
typedef struct sd_tree_shape {
    int levels;
    int width[SD_SPEC_MAX_K];
    int budget;
    int max_depth;
    int sample_q;
} sd_tree_shape_t;

/* A proposed tree (verify/tree.h's order: parents first, parent -1 = the last context
 * token). has_q 0: deterministic guesses (verified with q = NULL); 1: every node's children
 * were drawn independently from q row (1 + node) (row 0: the root's), SpecInfer's sampled
 * tree (docs/design-notes.md, "Token trees"). */
typedef struct sd_draft_tree {
    int n;
    int32_t tokens[SD_SPEC_TREE_MAX_NODES];
    int32_t parent[SD_SPEC_TREE_MAX_NODES];
    float *q;    /* [SD_SPEC_TREE_MAX_NODES + 1, n_vocab] caller-owned, or NULL (no q trees) */
    int n_vocab; /* row length of q */
    int has_q;   /* set by propose_tree (0 unless q is set and the request samples) */
} sd_draft_tree_t;

/* The implementation's name: "ngram", "model", "layerskip", "group". */
const char *sd_drafter_name(const sd_drafter_t *d);
/* 1 when a proposal runs no model: the adaptive step loop asks for the longest draft and
 * cuts it to its evidence class's k. */
int sd_drafter_proposes_cheaply(const sd_drafter_t *d);
/* Forward passes the drafter's model has run since it was made; 0 for a drafter that runs
 * no model (n-gram) and for NULL. */
uint64_t sd_drafter_forwards(const sd_drafter_t *d);

/* Start a request: the context becomes tokens[n] (replacing any earlier one).
 * SD_ERR_INVALID_ARG for n < 0 or NULL tokens with n > 0. */
sd_status_t sd_drafter_begin(sd_drafter_t *d, const int32_t *tokens, int n);
/* Propose up to req->k tokens continuing the context; fills out->tokens, out->n,
 * out->has_q (and out->q rows when has_q). The context does not change.
 * SD_ERR_INVALID_ARG without a request with k >= 1 or an output token buffer. */
sd_status_t sd_drafter_propose(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out);

/* 1 when the drafter can propose in rounds (sd_drafter_propose_begin / _resume). */
int sd_drafter_has_rounds(const sd_drafter_t *d);
/* The same proposal as propose, in rounds, so the caller can batch the forwards: begin
 * fills *fwd with the first forward; once the caller has run it (logits for its rows, cache
 * grown by fwd->n), resume fills the next. The proposal is in *out once a call leaves
 * fwd->n == 0 (out stays valid until then); a failing call ends it like propose. */
sd_status_t sd_drafter_propose_begin(sd_drafter_t *d, const sd_draft_request_t *req,
                                     sd_draft_out_t *out, sd_draft_forward_t *fwd);
sd_status_t sd_drafter_propose_resume(sd_drafter_t *d, sd_draft_forward_t *fwd);

/* 1 when the drafter proposes trees (sd_drafter_propose_tree / _accept_path). */
int sd_drafter_has_trees(const sd_drafter_t *d);
/* Propose a tree of the shape (at most SD_SPEC_TREE_MAX_NODES nodes, depth <= SD_SPEC_MAX_K)
 * continuing the context (req->k is ignored; req->pos0 = context length); out->n = 0: no
 * idea. The context does not change. SD_ERR_INVALID_ARG for a drafter without trees. */
sd_status_t sd_drafter_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                    const sd_tree_shape_t *shape, sd_draft_tree_t *out);
/* Commit a tree step: the accepted path tokens[n] (root's child first), then next_token. */
sd_status_t sd_drafter_accept_path(sd_drafter_t *d, const int32_t *tokens, int n,
                                   int32_t next_token);

/* Commit the step: the first n_accepted tokens of the last proposal, then next_token
 * (the target's correction or bonus). Forgets the proposal. */
sd_status_t sd_drafter_accept(sd_drafter_t *d, int n_accepted, int32_t next_token);
/* Truncate the context to its first n tokens (0 <= n <= length). */
sd_status_t sd_drafter_rollback(sd_drafter_t *d, int n);
/* Forget the request (empty context), keeping allocations for the next one. */
void sd_drafter_reset(sd_drafter_t *d);
/* For implementations: SD_ERR_INVALID_ARG "<name> drafter: <what> token T outside the
 * vocabulary [0, n_vocab)" unless 0 <= token < n_vocab. */
sd_status_t sd_drafter_check_token(const sd_drafter_t *d, int32_t token, int n_vocab,
                                   const char *what);
/* The same for tokens[0..n), the message naming the first bad token's index. */
sd_status_t sd_drafter_check_tokens(const sd_drafter_t *d, const int32_t *tokens, int n,
                                    int n_vocab, const char *what);
/* Free the drafter and everything it owns; NULL is a no-op. */
void sd_drafter_free(sd_drafter_t *d);

#endif
