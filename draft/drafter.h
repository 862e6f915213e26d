/* Drafters, as the step loop sees them: a cheap proposer of the next k tokens of one
 * request behind an opaque handle (implementations: draft/drafter_impl.h).
 *
 * A drafter holds the request's context — the tokens already committed (prompt +
 * accepted output), which stand at positions 0 .. n-1 — and nothing shared: one drafter
 * per request, so requests never touch each other's state. One speculative step:
 *
 *   sd_drafter_propose(d, &req, &out)    d[0..out.n) for positions n .. n+out.n-1
 *   (the target verifies them: sd_spec_verify)
 *   sd_drafter_accept(d, n_accepted, next_token)
 *                                       context += d[0..n_accepted) + next_token
 *
 * Distributions: when sampling, a drafter that samples its tokens fills out.q with its
 * own distribution q_i (after the request's sampler settings, the same filters the
 * target's p goes through) and draws d_i from q_i with sd_rng_uniform(seed, n + i,
 * SD_RNG_DRAFT). A drafter whose proposals are deterministic (the n-gram drafter; a model
 * drafting greedily) sets out.has_q = 0: its q is a one-hot at d_i, which
 * sd_spec_verify takes as q = NULL — verification stays lossless (the acceptance test and
 * residual are those of the one-hot q) and needs no [k, n_vocab] rows. */
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
    int has_q;       /* set by propose: 1 when q[0..n) holds the drafter's distributions;
                        0 when the proposals are deterministic (verify with q = NULL) */
    int evidence;    /* set by propose (the caller zeroes it; drafters without classes leave
                        it): how strong the support of this proposal is, a class in
                        0 .. SD_DRAFT_EVIDENCE_CLASSES - 1 (n-gram: the matched suffix
                        length). The adaptive draft length keeps acceptance statistics per
                        class, so a drafter whose proposals are sometimes well founded and
                        sometimes guesses gets a long draft for the first and none for the
                        second (engine/speculative.h). */
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

/* The implementation's name: "ngram", "model", "layerskip", "group". */
const char *sd_drafter_name(const sd_drafter_t *d);
/* 1 when a proposal costs next to nothing beside a target forward (no model runs): the
 * adaptive step loop then asks for the longest draft and cuts it to its evidence class's k. */
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
/* The same proposal as propose, in rounds, so a caller stepping many requests can run
 * their drafters' forwards together (sd_forward_batch): begin fills *fwd with the first
 * forward it needs; after the caller has run it (the sequence's logits then hold its rows
 * and its cache grew by fwd->n), resume continues and fills *fwd with the next one. The
 * proposal is in *out once a call leaves fwd->n == 0; out must stay valid until then. A
 * failing call ends the proposal like a failing propose. */
sd_status_t sd_drafter_propose_begin(sd_drafter_t *d, const sd_draft_request_t *req,
                                     sd_draft_out_t *out, sd_draft_forward_t *fwd);
sd_status_t sd_drafter_propose_resume(sd_drafter_t *d, sd_draft_forward_t *fwd);

/* Commit the step: the first n_accepted tokens of the last proposal, then next_token
 * (the target's correction or bonus). Forgets the proposal. */
sd_status_t sd_drafter_accept(sd_drafter_t *d, int n_accepted, int32_t next_token);
/* Truncate the context to its first n tokens (0 <= n <= length). */
sd_status_t sd_drafter_rollback(sd_drafter_t *d, int n);
/* Forget the request (empty context), keeping allocations for the next one. */
void sd_drafter_reset(sd_drafter_t *d);
/* Free the drafter and everything it owns; NULL is a no-op. */
void sd_drafter_free(sd_drafter_t *d);

#endif
