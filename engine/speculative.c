/* Speculative decoding set-up around the step loop in engine/generate.c: the spec's
 * validation, drafter construction, adaptive draft length (the model and its constants:
 * docs/design-notes.md, "Adaptive draft length") and statistics. */
#include "core/check.h"
#include "draft/registry.h"
#include "engine/speculative.h"

#define SPEC_DECAY 0.7        /* weight of the older evidence per step */
#define SPEC_PRIOR_HITS 3.0   /* the estimate starts at alpha = 0.75 */
#define SPEC_PRIOR_MISSES 1.0
#define SPEC_ROW_COST 0.5     /* cost of one more verified row relative to a 1-row forward */

sd_status_t sd_spec_check(const sd_spec_config_t *spec, int drafter_given)
{
    if (spec->drafter == SD_DRAFTER_NONE && !drafter_given)
        return SD_OK;
    if (spec->k < 1 || spec->k > SD_SPEC_MAX_K)
        return sd_set_error(SD_ERR_INVALID_ARG, "spec k = %d, must be in [1, %d]", spec->k,
                            SD_SPEC_MAX_K);
    if (!(spec->min_confidence >= 0.0f && spec->min_confidence <= 1.0f))
        return sd_set_error(SD_ERR_INVALID_ARG, "spec min_confidence = %g, must be in [0, 1]",
                            (double)spec->min_confidence);
    SD_CHECK(sd_spec_check_tree(spec));
    if (drafter_given)
        return SD_OK;
    const sd_drafter_row_t *row;
    SD_CHECK(sd_drafter_row_get(spec->drafter, &row));
    if (spec->draft_ranks < 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "spec draft_ranks = %d, must be >= 0",
                            spec->draft_ranks);
    return row->check(spec);
}

sd_status_t sd_spec_check_tree(const sd_spec_config_t *spec)
{
    if (spec->tree_levels < 0 || spec->tree_levels > SD_SPEC_MAX_K || spec->tree_budget < 0 ||
        spec->tree_budget > SD_SPEC_TREE_MAX_NODES || (spec->tree_levels > 0 && spec->tree_budget > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "spec tree_levels = %d (at most %d), tree_budget = %d "
                            "(at most %d): set at most one", spec->tree_levels, SD_SPEC_MAX_K,
                            spec->tree_budget, SD_SPEC_TREE_MAX_NODES);
    for (int d = 0; d < spec->tree_levels; d++)
        if (spec->tree_width[d] < 1)
            return sd_set_error(SD_ERR_INVALID_ARG, "spec tree_width[%d] = %d, must be >= 1", d,
                                spec->tree_width[d]);
    int nodes = sd_spec_tree_nodes(spec);
    if (nodes > SD_SPEC_TREE_MAX_NODES)
        return sd_set_error(SD_ERR_INVALID_ARG, "spec tree of %d nodes, more than %d", nodes,
                            SD_SPEC_TREE_MAX_NODES);
    return SD_OK;
}

sd_status_t sd_spec_make_drafter(sd_model_t *target, const sd_spec_config_t *spec,
                                 sd_drafter_t **out)
{
    *out = NULL;
    if (spec == NULL || spec->drafter == SD_DRAFTER_NONE)
        return SD_OK;
    const sd_drafter_row_t *row;
    SD_CHECK(sd_drafter_row_get(spec->drafter, &row));
    return row->make(target, spec, out);
}

int sd_spec_hash_words(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS])
{
    const sd_drafter_row_t *row = sd_drafter_row_for(spec->drafter);
    return row ? row->hash_words(spec, words) : 0;
}

const sd_model_t *sd_spec_batch_model(const sd_model_t *target, const sd_spec_config_t *spec,
                                      int *n_layers)
{
    const sd_drafter_row_t *row = sd_drafter_row_for(spec->drafter);
    *n_layers = 0;
    return row && row->batch_model ? row->batch_model(target, spec, n_layers) : NULL;
}

/* ---- adaptive k ------------------------------------------------------------------------ */

void sd_spec_k_init(sd_spec_k_t *c, int k_max, int adaptive)
{
    c->k = k_max;
    c->k_max = k_max;
    c->adaptive = adaptive;
    for (int e = 0; e < SD_DRAFT_EVIDENCE_CLASSES; e++)
        c->cls[e] = (sd_spec_class_t){SPEC_PRIOR_HITS, SPEC_PRIOR_MISSES, k_max, 0};
}

/* Expected tokens per unit of target cost for a draft of k tokens at acceptance alpha,
 * one more verified row costing row_cost of a step's cost per token. */
static double spec_gain(double alpha, int k, double row_cost)
{
    double tokens = 1.0, run = 1.0; /* 1 + alpha + ... + alpha^k */
    for (int i = 0; i < k; i++) {
        run *= alpha;
        tokens += run;
    }
    return tokens / (1.0 + row_cost * k);
}

/* The k in [1, k_max] that maximises spec_gain, or 0 when even it loses (gain < 1). */
static int spec_best_k(double alpha, int k_max, double row_cost)
{
    int best = 1;
    for (int k = 2; k <= k_max; k++)
        if (spec_gain(alpha, k, row_cost) > spec_gain(alpha, best, row_cost))
            best = k;
    return spec_gain(alpha, best, row_cost) < 1.0 ? 0 : best;
}

static sd_spec_class_t *spec_class(sd_spec_k_t *c, int evidence)
{
    int e = evidence < 0 ? 0 : evidence >= SD_DRAFT_EVIDENCE_CLASSES ? SD_DRAFT_EVIDENCE_CLASSES - 1 : evidence;
    return &c->cls[e];
}

void sd_spec_k_update_for(sd_spec_k_t *c, int evidence, int n_drafted, int n_accepted)
{
    if (!c->adaptive || n_drafted <= 0)
        return;
    sd_spec_class_t *cl = spec_class(c, evidence);
    cl->hits = SPEC_DECAY * cl->hits + n_accepted;
    cl->misses = SPEC_DECAY * cl->misses + (n_accepted < n_drafted);
    double alpha = cl->hits / (cl->hits + cl->misses);
    /* drafting would cost more than it brings: pause (k = 0) and probe now and then */
    cl->k = spec_best_k(alpha, c->k_max, SPEC_ROW_COST);
    cl->paused_steps = 0;
    c->k = cl->k;
}

int sd_spec_k_next_for(sd_spec_k_t *c, int evidence)
{
    sd_spec_class_t *cl = spec_class(c, evidence);
    if (!c->adaptive || c->k_max == 0)
        return c->k_max;
    if (cl->k > 0)
        return cl->k;
    return ++cl->paused_steps % SD_SPEC_PROBE_INTERVAL == 0; /* a 1-token probe */
}

int sd_spec_k_at_cost(const sd_spec_k_t *c, int evidence, double row_cost)
{
    if (!c->adaptive || c->k_max == 0)
        return c->k_max;
    const sd_spec_class_t *cl = spec_class((sd_spec_k_t *)c, evidence);
    return spec_best_k(cl->hits / (cl->hits + cl->misses), c->k_max, row_cost);
}

double sd_spec_batch_row_cost(int n_decoding)
{
    if (n_decoding <= 1)
        return SPEC_ROW_COST;
    return (double)n_decoding / (1.0 + (double)n_decoding);
}

void sd_spec_tree_reach_init(sd_spec_tree_reach_t *t)
{
    double alpha = SPEC_PRIOR_HITS / (SPEC_PRIOR_HITS + SPEC_PRIOR_MISSES), p = 1.0;
    for (int d = 0; d <= SD_SPEC_MAX_K; d++, p *= alpha) { /* as the chain's 3 : 1 */
        t->tried[d] = SPEC_PRIOR_HITS + SPEC_PRIOR_MISSES;
        t->reached[d] = t->tried[d] * p;
    }
}

void sd_spec_tree_reach_update(sd_spec_tree_reach_t *t, int depth, int n_accepted)
{
    for (int d = 1; d <= depth && d <= SD_SPEC_MAX_K; d++) {
        t->tried[d] = SPEC_DECAY * t->tried[d] + 1.0;
        t->reached[d] = SPEC_DECAY * t->reached[d] + (n_accepted >= d);
    }
}

int sd_spec_tree_depth_at_cost(const sd_spec_tree_reach_t *t, const int *width, int max_depth,
                               double row_cost)
{
    int d = 0;
    while (d < max_depth && d < SD_SPEC_MAX_K &&
           t->reached[d + 1] >= (double)width[d + 1] * row_cost * t->tried[d + 1])
        d++;
    return d;
}

void sd_spec_k_update(sd_spec_k_t *c, int n_drafted, int n_accepted)
{
    sd_spec_k_update_for(c, 0, n_drafted, n_accepted);
}

int sd_spec_k_next(sd_spec_k_t *c) { return sd_spec_k_next_for(c, 0); }

/* ---- statistics -------------------------------------------------------------------------- */

void sd_gen_stats_step(sd_gen_stats_t *s, int n_drafted, int n_accepted)
{
    s->steps++;
    s->target_forwards++;
    s->drafted += (uint64_t)n_drafted;
    s->accepted += (uint64_t)n_accepted;
    s->accepted_hist[n_accepted]++;
}

void sd_gen_stats_finish(sd_gen_stats_t *s, size_t n_tokens)
{
    s->tokens_generated = n_tokens;
    s->acceptance_rate = s->drafted ? (double)s->accepted / (double)s->drafted : 0.0;
    s->mean_accepted_len = s->steps ? (double)(s->accepted + s->steps) / (double)s->steps : 0.0;
}
