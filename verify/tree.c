/* Token-tree verification (docs/design-notes.md, "Token trees"). From the root
 * down, the target's row at the current node picks which child survives: its
 * argmax (greedy), its own draw (deterministic guesses), or recursive rejection
 * sampling over the children in index order, each tested against the residual
 * the rejected siblings before it leave. A chain gives sd_spec_verify's result
 * bit for bit: sibling 0 uses the same uniforms and arithmetic. */
#include "verify/tree.h"

#include <string.h>

#include "core/check.h"
#include "verify/philox.h"
#include "verify/sampler_math.h"

sd_status_t sd_tree_check(const sd_token_tree_t *tree, int n_vocab, int32_t *depth)
{
    if (tree == NULL || tree->n < 0 || tree->n > SD_TREE_MAX_NODES)
        return sd_set_error(SD_ERR_INVALID_ARG, "token tree: %d nodes, must be in [0, %d]",
                            tree != NULL ? tree->n : -1, SD_TREE_MAX_NODES);
    if (tree->n > 0 && (tree->tokens == NULL || tree->parent == NULL))
        return sd_set_error(SD_ERR_INVALID_ARG, "token tree: tokens and parent must be non-NULL");
    int32_t d[SD_TREE_MAX_NODES];
    for (int i = 0; i < tree->n; i++) {
        int32_t p = tree->parent[i], t = tree->tokens[i];
        if (p < -1 || p >= i)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "token tree: node %d has parent %d; a parent is -1 (the root) or "
                                "an earlier node",
                                i, p);
        d[i] = p < 0 ? 1 : d[p] + 1;
        if (d[i] > SD_TREE_MAX_DEPTH)
            return sd_set_error(SD_ERR_INVALID_ARG, "token tree: node %d has depth %d, above %d", i,
                                d[i], SD_TREE_MAX_DEPTH);
        if (t < 0 || t >= n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "token tree: node %d has token %d, outside [0, %d)", i, t, n_vocab);
    }
    if (depth != NULL && tree->n > 0)
        memcpy(depth, d, (size_t)tree->n * sizeof *d);
    return SD_OK;
}

void sd_tree_ancestor_mask(const sd_token_tree_t *tree, uint8_t *mask)
{
    int n = tree->n;
    memset(mask, 0, (size_t)n * (size_t)n);
    for (int i = 0; i < n; i++) /* a node sees what its parent sees, and itself */
        for (int j = tree->parent[i]; j >= 0; j = tree->parent[j])
            mask[(size_t)i * n + j] = 1;
    for (int i = 0; i < n; i++)
        mask[(size_t)i * n + i] = 1;
}

/* The first child of `node` (-1: the root) holding token, -1 when none. */
static int child_with(const sd_token_tree_t *t, int node, int32_t token)
{
    for (int c = node + 1; c < t->n; c++)
        if (t->parent[c] == node && t->tokens[c] == token)
            return c;
    return -1;
}

/* Greedy (argmax) or deterministic guesses (the target's own draw at each
 * position): follow the child holding the target's token while there is one. */
static void verify_pick(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                        const sd_token_tree_t *t, const float *p_logits, int n_vocab,
                        sd_spec_scratch_t *s, sd_tree_result_t *out)
{
    int node = -1, depth = 0;
    for (;;) {
        const float *row = p_logits + (size_t)(node + 1) * n_vocab;
        int32_t x;
        if (params->temperature > 0.0f) {
            sd_sampler_probs(params, row, n_vocab, &s->sampler, s->p);
            x = sd_sample_from_probs(s->p, n_vocab,
                                     sd_rng_uniform(seed, pos0 + (uint64_t)depth, SD_RNG_SAMPLE));
        } else {
            x = sd_sample_greedy(row, n_vocab);
        }
        int c = child_with(t, node, x);
        if (c < 0) {
            out->n_accepted = depth;
            out->next_token = x;
            return;
        }
        out->path[depth++] = c;
        node = c;
    }
}

/* residual[] = max(0, p - q); returns whether any entry is positive. */
static int residual_of(const float *p, const float *q, int n_vocab, float *residual)
{
    int any = 0;
    for (int j = 0; j < n_vocab; j++) {
        float r = sd_math_fsub(p[j], q[j]);
        residual[j] = r > 0.0f ? r : 0.0f;
        any |= residual[j] > 0.0f;
    }
    return any;
}

/* p = residual / sum(residual). */
static void normalize_into(const float *residual, int n_vocab, float *p)
{
    double sum = 0.0;
    for (int j = 0; j < n_vocab; j++)
        sum += residual[j];
    for (int j = 0; j < n_vocab; j++)
        p[j] = sd_math_d2f(sd_math_ddiv((double)residual[j], sum));
}

static float sibling_uniform(uint64_t seed, uint64_t pos, int j)
{
    return sd_rng_uniform(seed, pos,
                          j == 0 ? SD_RNG_ACCEPT : (sd_rng_purpose_t)(SD_RNG_TREE_SIBLING + j - 1));
}

/* SpecInfer's recursive rejection sampling over children drawn independently
 * from q. */
static void verify_rrs(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                       const sd_token_tree_t *t, const float *q, const float *p_logits, int n_vocab,
                       sd_spec_scratch_t *s, sd_tree_result_t *out)
{
    int node = -1, depth = 0;
    for (;;) {
        uint64_t pos = pos0 + (uint64_t)depth;
        const float *q_row = q + (size_t)(node + 1) * n_vocab; /* [n_vocab] */
        sd_sampler_probs(params, p_logits + (size_t)(node + 1) * n_vocab, n_vocab, &s->sampler,
                         s->p);
        int accepted = -1, j = 0, last = -1;
        for (int c = node + 1; c < t->n && accepted < 0; c++) {
            if (t->parent[c] != node)
                continue;
            if (last >= 0) /* the sibling before was rejected: test against what it left */
                if (residual_of(s->p, q_row, n_vocab, s->residual))
                    normalize_into(s->residual, n_vocab, s->p);
            float u = sibling_uniform(seed, pos, j++);
            if (sd_math_dmul((double)u, (double)q_row[t->tokens[c]]) <= (double)s->p[t->tokens[c]])
                accepted = c;
            last = c;
        }
        if (accepted >= 0) {
            out->path[depth++] = accepted;
            node = accepted;
            continue;
        }
        out->n_accepted = depth;
        if (last < 0) { /* a leaf: the bonus token, the target's own draw */
            out->next_token =
                sd_sample_from_probs(s->p, n_vocab, sd_rng_uniform(seed, pos, SD_RNG_SAMPLE));
        } else {
            int any = residual_of(s->p, q_row, n_vocab, s->residual);
            out->next_token = sd_sample_from_probs(any ? s->residual : s->p, n_vocab,
                                                   sd_rng_uniform(seed, pos, SD_RNG_RESIDUAL));
        }
        return;
    }
}

/* Every child must have been drawable from its parent's q row. */
static sd_status_t check_tree_q(const sd_token_tree_t *t, const float *q, int n_vocab)
{
    for (int c = 0; c < t->n; c++)
        SD_CHECK(sd_spec_validate_q(t->tokens[c], c,
                                    q[(size_t)(t->parent[c] + 1) * n_vocab + t->tokens[c]]));
    return SD_OK;
}

sd_status_t sd_tree_verify(const sd_sampler_params_t *params, uint64_t seed, uint64_t pos0,
                           const sd_token_tree_t *tree, const float *q, const float *p_logits,
                           int n_vocab, sd_spec_scratch_t *scratch, sd_tree_result_t *out)
{
    SD_CHECK(sd_spec_validate_args(params, NULL, 0, p_logits, n_vocab,
                                   scratch != NULL ? scratch->n_vocab : -1, out));
    SD_CHECK(sd_tree_check(tree, n_vocab, NULL));
    sd_tree_result_t r = {0};
    if (!(params->temperature > 0.0f) || q == NULL) {
        verify_pick(params, seed, pos0, tree, p_logits, n_vocab, scratch, &r);
    } else {
        SD_CHECK(check_tree_q(tree, q, n_vocab));
        verify_rrs(params, seed, pos0, tree, q, p_logits, n_vocab, scratch, &r);
    }
    *out = r;
    return SD_OK;
}
