/* Draft-model drafter: the vocabulary check, then the shared sequence drafter over the
 * draft model (all its layers); under a draft group, the group drafter around it. */
#include <stdio.h>
#include <string.h>

#include "core/check.h"
#include "core/escape.h"
#include "draft/group_drafter.h"
#include "draft/model_drafter.h"
#include "draft/seq_drafter.h"

/* Text of token id, or "(none)". */
static const char *text_of(const sd_tokenizer_t *t, int32_t id, size_t *len)
{
    const char *s = sd_tokenizer_token_text(t, id, len);
    if (s == NULL) {
        *len = 6;
        return "(none)";
    }
    return s;
}

/* How to ask for a draft model with another vocabulary, for the messages below. */
#define XVOCAB_HINT "; a draft model with another tokenizer can draft through text: " \
                    "--draft xvocab:PATH (spec drafter SD_DRAFTER_XVOCAB)"

static sd_status_t check_vocab(const sd_model_t *draft, const sd_model_t *target)
{
    if (draft->hp.n_vocab != target->hp.n_vocab)
        return sd_set_error(SD_ERR_VOCAB_MISMATCH,
                            "draft model vocabulary has %d tokens, the target's %d" XVOCAB_HINT,
                            draft->hp.n_vocab, target->hp.n_vocab);
    if (draft->tokenizer == NULL || target->tokenizer == NULL)
        return SD_OK; /* token ids only: sizes are all there is to compare */
    for (int32_t id = 0; id < target->hp.n_vocab; id++) {
        size_t nd, nt;
        const char *sd = text_of(draft->tokenizer, id, &nd);
        const char *st = text_of(target->tokenizer, id, &nt);
        if (nd != nt || memcmp(sd, st, nd) != 0)
            return sd_set_error(SD_ERR_VOCAB_MISMATCH,
                                "draft and target vocabularies differ first at token %d: "
                                "draft '%s', target '%s'" XVOCAB_HINT, (int)id,
                                SD_ESC(sd, nd), SD_ESC(st, nt));
    }
    return SD_OK;
}

sd_status_t sd_drafter_model_new(sd_model_t *draft, const sd_model_t *target, sd_drafter_t **out)
{
    if (draft == NULL || target == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "model drafter: draft, target and out must be non-NULL");
    SD_CHECK(check_vocab(draft, target));
    return sd_seq_drafter_new(SD_SEQ_DRAFTER_MODEL, draft, 0, out);
}

sd_status_t sd_drafter_model_use_pool(sd_drafter_t *d, struct sd_kv_pool *pool, int *used)
{
    *used = sd_seq_drafter_is(d, SD_SEQ_DRAFTER_MODEL);
    return *used ? sd_seq_drafter_use_pool(d, pool) : SD_OK;
}

uint64_t sd_drafter_model_forwards(const sd_drafter_t *d)
{
    return sd_seq_drafter_is(d, SD_SEQ_DRAFTER_MODEL) ? sd_seq_drafter_forwards(d) : 0;
}

/* ---- registry row -------------------------------------------------------------------- */

sd_status_t sd_drafter_model_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                   const char **model_path)
{
    if (arg == NULL || arg[0] == '\0')
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter '%s': a draft model needs a file: "
                            "model:PATH", text);
    spec->drafter = SD_DRAFTER_MODEL;
    *model_path = arg;
    return SD_OK;
}

sd_status_t sd_drafter_model_check(const sd_spec_config_t *spec)
{
    if (spec->draft_model == NULL && spec->draft_ranks == 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "spec drafter is a draft model but draft_model is NULL");
    return SD_OK;
}

sd_status_t sd_drafter_model_make(sd_model_t *target, const sd_spec_config_t *spec,
                                  sd_drafter_t **out)
{
    return sd_drafter_make_over_draft_model(target, spec, sd_drafter_model_new, out);
}

int sd_drafter_model_hash_words(const sd_spec_config_t *spec, int32_t words[SD_DRAFTER_HASH_WORDS])
{
    words[0] = spec->draft_ranks;
    /* a draft model every rank holds: its context decides when drafting stops (draft
     * groups: only the group's leader decides, and the others have no draft model) */
    words[1] = spec->draft_ranks == 0 && spec->draft_model ? spec->draft_model->n_ctx : 0;
    return 2;
}

sd_status_t sd_drafter_model_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                  char *buf, size_t cap)
{
    snprintf(buf, cap, "model");
    return SD_OK;
}

const sd_model_t *sd_drafter_model_batch_model(const sd_model_t *target,
                                               const sd_spec_config_t *spec, int *n_layers)
{
    *n_layers = 0;
    return spec->draft_ranks == 0 ? spec->draft_model : NULL;
}
