/* What a request is allowed to be, and whether the ranks of a tensor-parallel group were all
 * given the same one (engine/gen.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/check.h"
#include "core/hash.h"
#include "draft/registry.h"
#include "engine/gen.h"
#include "engine/speculative.h"
#include "verify/sampler.h"

/* ---- validation -------------------------------------------------------------------- */

static sd_status_t check_config(const sd_model_t *m, const sd_gen_config_t *c)
{
    if (c->max_tokens <= 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "config max_tokens = %d, must be > 0",
                            c->max_tokens);
    sd_sampler_params_t sp = {c->temperature, c->top_k, c->top_p, c->min_p};
    SD_CHECK(sd_sampler_params_check(&sp));
    if (c->logprobs != 0 && c->logprobs != 1)
        return sd_set_error(SD_ERR_INVALID_ARG, "config logprobs = %d, must be 0 or 1", c->logprobs);
    int max_top = m->hp.n_vocab < SD_MAX_TOP_LOGPROBS ? m->hp.n_vocab : SD_MAX_TOP_LOGPROBS;
    if (c->top_logprobs < 0 || c->top_logprobs > max_top)
        return sd_set_error(SD_ERR_INVALID_ARG, "config top_logprobs = %d outside [0, %d]",
                            c->top_logprobs, max_top);
    if (c->top_logprobs > 0 && !c->logprobs)
        return sd_set_error(SD_ERR_INVALID_ARG, "config top_logprobs = %d needs logprobs = 1",
                            c->top_logprobs);
    if (c->n_stop_strings > 0 && c->stop_strings == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "config stop_strings is NULL with n_stop_strings = %zu",
                            c->n_stop_strings);
    for (size_t i = 0; i < c->n_stop_strings; i++)
        if (c->stop_strings[i] == NULL || c->stop_strings[i][0] == '\0')
            return sd_set_error(SD_ERR_INVALID_ARG, "config stop_strings[%zu] is %s", i,
                                c->stop_strings[i] == NULL ? "NULL" : "empty");
    if (c->n_stop_strings > 0 && m->tokenizer == NULL)
        return sd_set_error(SD_ERR_NO_TOKENIZER,
                            "config has %zu stop strings but the model has no tokenizer",
                            c->n_stop_strings);
    if (c->n_stop_tokens > 0 && c->stop_tokens == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "config stop_tokens is NULL with n_stop_tokens = %zu",
                            c->n_stop_tokens);
    for (size_t i = 0; i < c->n_stop_tokens; i++)
        if (c->stop_tokens[i] < 0 || c->stop_tokens[i] >= m->hp.n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "config stop_tokens[%zu] = %d outside the vocabulary [0, %d)", i,
                                (int)c->stop_tokens[i], m->hp.n_vocab);
    return SD_OK;
}

static sd_status_t check_prompt(const sd_model_t *m, const int32_t *prompt, size_t n_prompt)
{
    if (n_prompt == 0 || prompt == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "prompt is empty (n_prompt = %zu%s)", n_prompt,
                            prompt == NULL ? ", prompt NULL" : "");
    if (n_prompt > (size_t)m->n_ctx - 1)
        return sd_set_error(SD_ERR_CONTEXT_FULL,
                            "prompt of %zu tokens leaves no room to generate in a context of %d",
                            n_prompt, m->n_ctx);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->hp.n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG, "prompt[%zu] = %d outside the vocabulary [0, %d)",
                                i, (int)prompt[i], m->hp.n_vocab);
    return SD_OK;
}

/* ---- agreement between ranks -------------------------------------------------------- */

/* The request as a hash: prompt, sampler settings, seed, stops and the spec. */
static uint64_t request_hash(const int32_t *prompt, size_t n_prompt, const sd_gen_config_t *c,
                             const sd_spec_config_t *s)
{
    uint64_t h = sd_fnv1a64(SD_FNV64_INIT, &n_prompt, sizeof n_prompt);
    h = sd_fnv1a64(h, prompt, n_prompt * sizeof *prompt);
    int32_t ints[] = {c->max_tokens, c->top_k, c->ignore_eos, (int32_t)c->n_stop_strings,
                      (int32_t)c->n_stop_tokens, (int32_t)s->drafter, s->k, s->adaptive};
    int32_t words[SD_DRAFTER_HASH_WORDS];
    float floats[] = {c->temperature, c->top_p, c->min_p, s->min_confidence};
    h = sd_fnv1a64(h, ints, sizeof ints);
    h = sd_fnv1a64(h, words, (size_t)sd_spec_hash_words(s, words) * sizeof *words);
    h = sd_fnv1a64(h, floats, sizeof floats);
    h = sd_fnv1a64(h, &c->seed, sizeof c->seed);
    for (size_t i = 0; i < c->n_stop_strings; i++)
        h = sd_fnv1a64(h, c->stop_strings[i], strlen(c->stop_strings[i]) + 1);
    return sd_fnv1a64(h, c->stop_tokens, c->n_stop_tokens * sizeof *c->stop_tokens);
}

/* Under TP, before any collective of the request: every rank learns whether any rank
 * refused it (the first refusal's status and message on all), and ranks given different
 * requests (prompt, settings, seed) get SD_ERR_RANK_DIVERGENCE instead of mismatched
 * collectives. A request that validated locally is hashed only then. */
sd_status_t sd_gen_agree_on_request(sd_comm_t *comm, sd_status_t local, const int32_t *prompt,
                                    size_t n_prompt, const sd_gen_config_t *c,
                                    const sd_spec_config_t *s)
{
    int size = sd_comm_size(comm);
    if (size == 1) return local;
    SD_CHECK(sd_comm_agree(comm, local));
    uint64_t h = request_hash(prompt, n_prompt, c, s);
    uint64_t *all = malloc((size_t)size * sizeof *all);
    SD_ALLOC_CHECK(all, (size_t)size * sizeof *all, "request hashes");
    sd_status_t st = sd_comm_allgather(comm, &h, sizeof h, all);
    for (int r = 1; st == SD_OK && r < size; r++)
        if (all[r] != all[0])
            st = sd_set_error(SD_ERR_RANK_DIVERGENCE,
                              "rank %d was given a different request than rank 0 (prompt, "
                              "settings or seed; this rank: %zu prompt tokens, seed %llu)", r,
                              n_prompt, (unsigned long long)c->seed);
    free(all);
    return st;
}

sd_status_t sd_gen_check(const char *caller, const sd_model_t *model, const int32_t *prompt,
                         size_t n_prompt, const sd_gen_config_t *config,
                         const sd_spec_config_t *spec, int drafter_given)
{
    if (model == NULL || config == NULL || spec == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s: %s is NULL", caller,
                            model == NULL ? "model" : config == NULL ? "config" : "spec");
    SD_CHECK(check_config(model, config));
    SD_CHECK(check_prompt(model, prompt, n_prompt));
    return sd_spec_check(spec, drafter_given);
}

size_t sd_gen_kv_positions_for(const sd_model_t *m, size_t n_prompt, const sd_gen_config_t *c)
{
    size_t want = n_prompt + (size_t)c->max_tokens;
    return (want < (size_t)m->n_ctx ? want : (size_t)m->n_ctx) - 1;
}
