/* The step loop's pieces (engine/speculative.c; engine/generate.c runs the loop): spec
 * checks and drafter set-up, the adaptive draft length, statistics, and sd_generate_ex with
 * a caller-owned drafter and a per-step hook. A step: drafter proposes d[0..n) -> target
 * forwards [last, d] -> sd_spec_verify -> emit -> roll back (docs/design-notes.md, "A
 * speculative step"; with no drafter or n = 0, one target-only decode step). */
#ifndef SPECDEC_ENGINE_SPECULATIVE_H
#define SPECDEC_ENGINE_SPECULATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "draft/drafter.h"
#include "draft/registry.h"
#include "model/forward.h"
#include "model/model.h"

/* SD_ERR_INVALID_ARG naming the field for a bad spec (k outside 1..SD_SPEC_MAX_K,
 * min_confidence outside [0, 1], an unknown drafter kind, draft_ranks < 0, or the
 * drafter's own fields: its registry row's check, draft/registry.h). Drafter NONE without
 * a caller-given drafter (drafter_given = 0) is always valid; with one, only k and
 * min_confidence matter. */
sd_status_t sd_spec_check(const sd_spec_config_t *spec, int drafter_given);
/* The tree fields of spec: SD_ERR_INVALID_ARG naming a bad width, level count, budget or
 * node count (more than SD_SPEC_TREE_MAX_NODES). */
sd_status_t sd_spec_check_tree(const sd_spec_config_t *spec);

/* The drafter spec asks for, built by its registry row and begun on nothing (*out = NULL
 * for SD_DRAFTER_NONE). The constructors report their own errors (SD_ERR_VOCAB_MISMATCH
 * for a draft model whose vocabulary differs, SD_ERR_INVALID_ARG for layer-skip
 * L >= n_layer, ...). */
sd_status_t sd_spec_make_drafter(sd_model_t *target, const sd_spec_config_t *spec,
                                 sd_drafter_t **out);

/* spec's drafter fields as words[0 .. return) for a request's hash (0 for NONE). */
int sd_spec_hash_words(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS]);

/* The model and layer count (0: all) a batched draft forward runs for spec's drafter over
 * target, or NULL when its drafters run no model or propose one request at a time. */
const sd_model_t *sd_spec_batch_model(const sd_model_t *target, const sd_spec_config_t *spec,
                                      int *n_layers);

/* Draft length control, per evidence class (docs/design-notes.md, "Adaptive draft
 * length"): fixed (adaptive = 0) asks for k_max every step; adaptive picks the k that best
 * pays for the estimated acceptance, 0 (paused) with a 1-token probe every
 * SD_SPEC_PROBE_INTERVAL-th paused proposal. Depends on counts only, never on timing. */
#define SD_SPEC_PROBE_INTERVAL 8
typedef struct sd_spec_class {
    double hits, misses; /* decayed counts of accepted and rejected draft tokens */
    int k;               /* the next draft length of this class; 0 = paused */
    int paused_steps;    /* proposals of this class seen since it paused */
} sd_spec_class_t;

typedef struct sd_spec_k {
    int k;                                       /* the next k of the class last updated */
    int k_max, adaptive;
    sd_spec_class_t cls[SD_DRAFT_EVIDENCE_CLASSES]; /* [evidence class] */
} sd_spec_k_t;

void sd_spec_k_init(sd_spec_k_t *c, int k_max, int adaptive);
/* After a step that drafted n_drafted tokens and had n_accepted accepted (class 0). */
void sd_spec_k_update(sd_spec_k_t *c, int n_drafted, int n_accepted);
/* The draft length of the next step (class 0; 0: no drafting, or 1 on every
 * SD_SPEC_PROBE_INTERVAL-th call while paused). Call once per step. */
int sd_spec_k_next(sd_spec_k_t *c);
/* The same two for class `evidence` (clamped to the class range): the length to cut its
 * proposal to, counting a paused class's probe interval in its own proposals. */
int sd_spec_k_next_for(sd_spec_k_t *c, int evidence);
void sd_spec_k_update_for(sd_spec_k_t *c, int evidence, int n_drafted, int n_accepted);

/* Under load (docs/design-notes.md, "Serving"): the cost of one more verified row when
 * n_decoding requests share a step (c/(1+c); 0.5 for one), and the k a class's estimate earns
 * at row_cost (0: none; k_max when not adaptive). Only for drafts whose length cannot change
 * the tokens: greedy, or deterministic proposals (has_q = 0). */
double sd_spec_batch_row_cost(int n_decoding);
int sd_spec_k_at_cost(const sd_spec_k_t *c, int evidence, double row_cost);

/* Load-aware token trees: per depth d, decayed counts of the tree steps that reached depth d
 * and of those that accepted d or more nodes; init sets the prior (0.75^d, the chain's). */
typedef struct sd_spec_tree_reach {
    double tried[SD_SPEC_MAX_K + 1], reached[SD_SPEC_MAX_K + 1];
} sd_spec_tree_reach_t;
void sd_spec_tree_reach_init(sd_spec_tree_reach_t *t);
/* After a tree step of depth `depth` that accepted n_accepted nodes. */
void sd_spec_tree_reach_update(sd_spec_tree_reach_t *t, int depth, int n_accepted);
/* The depth (0 .. max_depth) up to which every level pays at row_cost: level d, of width[d]
 * nodes (width[1 .. max_depth]), while the estimated P(accepting >= d) >= width[d] *
 * row_cost. Only for trees whose shape cannot change the tokens (deterministic guesses). */
int sd_spec_tree_depth_at_cost(const sd_spec_tree_reach_t *t, const int *width, int max_depth,
                               double row_cost);

/* Statistics: one step drafted n tokens of which a were accepted; finish derives the
 * rates once generation is over. */
void sd_gen_stats_step(sd_gen_stats_t *s, int n_drafted, int n_accepted);
void sd_gen_stats_finish(sd_gen_stats_t *s, size_t n_tokens);

/* What the hook sees after a step that did not end generation. */
typedef struct sd_spec_step_view {
    sd_seq_t *target;          /* the target's sequence: kv.len == n_prompt + n_tokens - 1 */
    sd_drafter_t *drafter;     /* NULL for target-only */
    const int32_t *prompt;     /* [n_prompt] */
    size_t n_prompt;
    const int32_t *tokens;     /* [n_tokens] generated so far */
    size_t n_tokens;
    int n_drafted, n_accepted; /* this step */
    int32_t next_token;        /* the target's token that ended the step */
    int k_next;                /* draft length the next step asks for */
} sd_spec_step_view_t;

/* A non-SD_OK return ends generation with that status. The hook may run the target's
 * sequence (forward, then truncate back to view->target->kv.len); s->logits is not reused. */
typedef sd_status_t (*sd_spec_step_hook)(void *user, const sd_spec_step_view_t *view);

typedef struct sd_gen_options {
    sd_drafter_t *drafter;  /* caller-owned drafter used instead of building spec->drafter's
                               (spec->k, adaptive and min_confidence still apply); it is
                               begun on the prompt by the call */
    sd_spec_step_hook hook; /* NULL = none */
    void *hook_user;
    uint64_t request;       /* the serving engine's request number (sd_step_info_t.request) */
    sd_kv_pool_t *kv_pool;  /* the target's KV blocks (a pool of the model), the prompt's
                               longest cached prefix reused; NULL: a private cache */
    sd_kv_pool_t *draft_kv_pool; /* the same for a draft model's drafter (a pool of it) */
} sd_gen_options_t;

/* sd_generate_speculative with options (opts may be NULL). */
sd_status_t sd_generate_ex(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                           const sd_gen_config_t *config, const sd_spec_config_t *spec,
                           const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                           sd_gen_result_t *out);

#endif
