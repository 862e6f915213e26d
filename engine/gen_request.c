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

int sd_gen_consistency_check(void)
{
    const char *v = getenv("SPECDEC_CHECK_CONSISTENCY");
    return v == NULL || strcmp(v, "0") != 0;
}

/* What the ranks compare before a request: every value that decides its tokens, its length
 * or the collectives it runs. Numbers are compared as they are (and named with both values
 * in the message); the rest as hashes. */
enum {
    REQ_N_PROMPT, REQ_PROMPT, REQ_MAX_TOKENS, REQ_N_CTX, REQ_SEED, REQ_SAMPLER, REQ_STOPS,
    REQ_SPEC, REQ_MODEL, REQ_CHECK, REQ_FIELDS
};

static const struct {
    const char *name;
    int number; /* 1: the value itself, 0: a hash */
} req_fields[REQ_FIELDS] = {
    [REQ_N_PROMPT] = {"the prompt length", 1},
    [REQ_PROMPT] = {"the prompt tokens", 0},
    [REQ_MAX_TOKENS] = {"max_tokens", 1},
    [REQ_N_CTX] = {"the context size (n_ctx)", 1},
    [REQ_SEED] = {"the seed", 1},
    [REQ_SAMPLER] = {"the sampler settings (temperature, top_k, top_p, min_p)", 0},
    [REQ_STOPS] = {"the stops (stop strings, stop tokens, ignore_eos)", 0},
    [REQ_SPEC] = {"the drafter settings", 0},
    [REQ_MODEL] = {"the model's shape", 0},
    [REQ_CHECK] = {"SPECDEC_CHECK_CONSISTENCY", 1},
};

static void request_digest(const sd_model_t *m, const int32_t *prompt, size_t n_prompt,
                           const sd_gen_config_t *c, const sd_spec_config_t *s,
                           uint64_t d[REQ_FIELDS])
{
    d[REQ_N_PROMPT] = n_prompt;
    d[REQ_PROMPT] = sd_fnv1a64(SD_FNV64_INIT, prompt, n_prompt * sizeof *prompt);
    d[REQ_MAX_TOKENS] = (uint64_t)c->max_tokens;
    d[REQ_N_CTX] = (uint64_t)m->n_ctx;
    d[REQ_SEED] = c->seed;
    float floats[] = {c->temperature, c->top_p, c->min_p};
    d[REQ_SAMPLER] = sd_fnv1a64(sd_fnv1a64(SD_FNV64_INIT, floats, sizeof floats), &c->top_k,
                                sizeof c->top_k);
    uint64_t h = sd_fnv1a64(SD_FNV64_INIT, &c->ignore_eos, sizeof c->ignore_eos);
    for (size_t i = 0; i < c->n_stop_strings; i++)
        h = sd_fnv1a64(h, c->stop_strings[i], strlen(c->stop_strings[i]) + 1);
    h = sd_fnv1a64(h, &c->n_stop_strings, sizeof c->n_stop_strings);
    d[REQ_STOPS] = sd_fnv1a64(h, c->stop_tokens, c->n_stop_tokens * sizeof *c->stop_tokens);
    int32_t ints[3 + SD_DRAFTER_HASH_WORDS] = {(int32_t)s->drafter, s->k, s->adaptive};
    int n = 3 + sd_spec_hash_words(s, ints + 3);
    d[REQ_SPEC] = sd_fnv1a64(sd_fnv1a64(SD_FNV64_INIT, ints, (size_t)n * sizeof *ints),
                             &s->min_confidence, sizeof s->min_confidence);
    const sd_hparams_t *hp = &m->hp;
    int32_t shape[] = {(int32_t)hp->arch, hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_head,
                       hp->n_head_kv, hp->head_dim, hp->n_ff};
    d[REQ_MODEL] = sd_fnv1a64(SD_FNV64_INIT, shape, sizeof shape);
    d[REQ_CHECK] = (uint64_t)sd_gen_consistency_check();
}

/* SD_ERR_RANK_DIVERGENCE naming the first field where rank r's request differs from rank
 * 0's (the same message on every rank), or SD_OK. */
static sd_status_t compare_digests(const uint64_t *all, int size)
{
    for (int r = 1; r < size; r++)
        for (int f = 0; f < REQ_FIELDS; f++) {
            uint64_t a = all[f], b = all[(size_t)r * REQ_FIELDS + f];
            if (a == b) continue;
            if (!req_fields[f].number)
                return sd_set_error(SD_ERR_RANK_DIVERGENCE,
                                    "rank %d was given a different request than rank 0: %s "
                                    "differ", r, req_fields[f].name);
            return sd_set_error(SD_ERR_RANK_DIVERGENCE,
                                "rank %d was given a different request than rank 0: %s is %llu "
                                "on rank 0, %llu on rank %d", r, req_fields[f].name,
                                (unsigned long long)a, (unsigned long long)b, r);
        }
    return SD_OK;
}

/* Under TP, before any collective of the request: every rank learns whether any rank
 * refused it (the first refusal's status and message on all), and ranks given different
 * requests get SD_ERR_RANK_DIVERGENCE naming what differs instead of mismatched
 * collectives. A request that validated locally is digested only then. */
sd_status_t sd_gen_agree_on_request(const sd_model_t *m, sd_status_t local, const int32_t *prompt,
                                    size_t n_prompt, const sd_gen_config_t *c,
                                    const sd_spec_config_t *s)
{
    int size = sd_comm_size(m->comm);
    if (size == 1) return local;
    SD_CHECK(sd_comm_agree(m->comm, local));
    uint64_t mine[REQ_FIELDS];
    request_digest(m, prompt, n_prompt, c, s, mine);
    uint64_t *all = malloc((size_t)size * sizeof mine);
    SD_ALLOC_CHECK(all, (size_t)size * sizeof mine, "request digests");
    sd_status_t st = sd_comm_allgather(m->comm, mine, sizeof mine, all);
    if (st == SD_OK) st = compare_digests(all, size);
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
