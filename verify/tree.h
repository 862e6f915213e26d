/* Token trees: a drafter's several continuations as one tree of nodes (parent
 * indices, depth), the target's attention mask over them, and exact
 * verification of the whole tree — greedy, deterministic guesses, or
 * SpecInfer's recursive rejection sampling (docs/design-notes.md, "Token
 * trees"). A chain is the tree whose node i has parent i - 1. */
#ifndef SPECDEC_VERIFY_TREE_H
#define SPECDEC_VERIFY_TREE_H

#include <stdint.h>

#include "specdec/specdec.h"
#include "verify/sampler.h"
#include "verify/speculative.h"

#define SD_TREE_MAX_NODES 64
#define SD_TREE_MAX_DEPTH SD_SPEC_MAX_K

/* Nodes in order, parents first: node i holds tokens[i] and hangs below
 * parent[i] (-1: the root, the last kept token; else a node < i). A node of
 * depth d stands at position pos0 + d - 1, so siblings share a position. */
typedef struct sd_token_tree {
    int n;
    const int32_t *tokens; /* [n] */
    const int32_t *parent; /* [n] */
} sd_token_tree_t;

/* SD_ERR_INVALID_ARG naming the node and value for n outside [0,
 * SD_TREE_MAX_NODES], a parent outside [-1, i), a depth above SD_TREE_MAX_DEPTH
 * or a token outside [0, n_vocab). depth[n] (may be NULL) gets each node's
 * depth, 1 for the root's children. */
sd_status_t sd_tree_check(const sd_token_tree_t *tree, int n_vocab, int32_t *depth);

/* The tree attention mask, C reference: mask[i * n + j] = 1 when node j is node
 * i or one of its ancestors, else 0 (every node also sees the whole kept
 * context). tree checked. */
void sd_tree_ancestor_mask(const sd_token_tree_t *tree, uint8_t *mask);

typedef struct sd_tree_result {
    int n_accepted;                  /* nodes on the accepted path, 0..max depth */
    int32_t path[SD_TREE_MAX_DEPTH]; /* their indices, the root's child first */
    int32_t next_token;              /* the target's token after the path */
} sd_tree_result_t;

/* Verify tree (pos0: the position of a depth-1 node) against p_logits[n + 1,
 * n_vocab] (row 0: after the root, row 1 + i: after node i). q is NULL
 * (deterministic guesses: the target's own draw picks the child, so sampled
 * output is exactly target-only) or [n + 1, n_vocab]: row r the distribution
 * the children of row r's node were drawn from, independently; the step emits
 * the path's tokens + next_token. Errors as sd_spec_verify and sd_tree_check,
 * and for a child c with q(tokens[c]) not > 0. *out is written only on SD_OK.
 */
sd_status_t sd_tree_verify(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                           const sd_token_tree_t *tree, const float *q, const float *p_logits,
                           int n_vocab, sd_spec_scratch_t *scratch, sd_tree_result_t *out);

#endif
