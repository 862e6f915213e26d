/* The step loop's internals (engine/generate.c runs the loop, engine/speculative.c holds
 * these pieces): drafter set-up from sd_spec_config_t, the adaptive draft length, the
 * statistics, and an entry point that takes a caller-owned drafter and a per-step hook
 * (tests use it to check the KV caches after every step).
 *
 * One step, with the context = prompt + generated tokens (length L) and the target's KV
 * cache holding its first L - 1 tokens (the last token is fed by the next step):
 *   drafter proposes d[0..n), n <= k  ->  target forwards [ctx[L-1], d0..d(n-1)] in one
 *   call (cache: L + n)  ->  sd_spec_verify keeps a = n_accepted drafts + next_token  ->
 *   the tokens are emitted one by one (stops checked per token)  ->  the target cache is
 *   truncated to L + a (the new length minus one)  ->  sd_drafter_accept(a, next_token).
 * With no drafter (or n = 0) a step is exactly one target-only decode step. */
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

/* Draft length control.
 * Fixed (adaptive = 0): every step asks for k_max tokens.
 * Adaptive: each draft token is taken as accepted with probability alpha, estimated from
 * exponentially decayed counts: after a step that drafted n > 0 tokens of which a were
 * accepted, hits <- 0.7 hits + a and misses <- 0.7 misses + (a < n), alpha = hits /
 * (hits + misses) (prior 3 : 1, alpha = 0.75). The next k in [1, k_max] maximises the
 * expected tokens per step over its cost, (1 + alpha + ... + alpha^k) / (1 + 0.5 k):
 * a verify forward of k + 1 rows costs about 1 + 0.5 k single-row forwards on the CPU
 * (SmolLM2 Q4_1, 1 thread: 1 row 8.9 ms, 5 rows 26.4 ms with the AVX2 kernel; about 1 + 0.4 k
 * with the AVX-512 one; bench/results). The cost is a constant, never measured at run time:
 * k decides which positions get drafts, so with sampling it decides the tokens a seed gives,
 * and those must not depend on the machine or its load. So alpha 0.6
 * gives k = 1, alpha 0.8 k = 2, alpha 0.9 k = 4. When even the best k is expected to lose
 * (gain < 1: alpha below 0.5), drafting pauses (k = 0: the step is a plain target decode) and every
 * SD_SPEC_PROBE_INTERVAL-th paused step drafts one token to see whether acceptance came
 * back. k depends only on acceptance counts and step counts, never on timing, so a seeded
 * run is reproducible (and every rank of a tensor-parallel group picks the same k). The
 * drafter's own early stop (min_confidence) cuts a single draft short and is passed in
 * the request.
 *
 * Evidence classes: the estimate above is kept per class of evidence a proposal reports
 * (sd_draft_out_t.evidence; drafters without classes always report 0). A drafter that
 * proposes cheaply (sd_drafter_proposes_cheaply: the n-gram drafter) is asked for k_max
 * tokens every step and its proposal is cut to the k of its class
 * (sd_spec_k_next_for), then that class alone learns from the outcome: an n-gram
 * proposal backed by a 3-token match in text the model is copying keeps drafting long,
 * while 1-token matches in new text pause, and neither disturbs the other's estimate (a
 * single estimate paused during new text and then lost up to SD_SPEC_PROBE_INTERVAL
 * steps of a copy before probing). */
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
/* The draft length of the next step (class 0; 0: no drafting; a paused controller returns
 * 1 on every SD_SPEC_PROBE_INTERVAL-th call). Call once per step. */
int sd_spec_k_next(sd_spec_k_t *c);
/* The same for a proposal of evidence class `evidence` (clamped to the class range): the
 * length to cut it to, counting a paused class's probe interval in its own proposals. */
int sd_spec_k_next_for(sd_spec_k_t *c, int evidence);
void sd_spec_k_update_for(sd_spec_k_t *c, int evidence, int n_drafted, int n_accepted);

/* Batched serving (engine/scheduler.c): when c requests decode in one batched forward, one
 * more verified row costs the batch about c r / (1 + c r) of its cost per token (each of
 * the c base rows brings a token; r = the cost of a row relative to the weight reads, 1 on
 * the CPU, where c = 1 gives the constant 0.5 above), so drafting pays only for a higher
 * acceptance: alpha >= 0.8 at c = 4 for one draft token. sd_spec_batch_row_cost(c) is that
 * cost; sd_spec_k_at_cost the k a class's current estimate earns at a given cost (0: none;
 * k_max when not adaptive). This cost depends on the load, so it may only shorten drafts
 * whose length does not decide the tokens: greedy decoding, or a deterministic drafter
 * (has_q = 0; verification then gives target-only's tokens for any k). */
double sd_spec_batch_row_cost(int n_decoding);
int sd_spec_k_at_cost(const sd_spec_k_t *c, int evidence, double row_cost);

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
} sd_gen_options_t;

/* sd_generate_speculative with options (opts may be NULL). */
sd_status_t sd_generate_ex(sd_model_t *model, const int32_t *prompt, size_t n_prompt,
                           const sd_gen_config_t *config, const sd_spec_config_t *spec,
                           const sd_gen_options_t *opts, sd_token_callback callback, void *user,
                           sd_gen_result_t *out);

#endif
