/* Draft-model drafter: the vocabulary check, then the shared sequence drafter over the
 * draft model (all its layers). */
#include <string.h>

#include "core/check.h"
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

static sd_status_t check_vocab(const sd_model_t *draft, const sd_model_t *target)
{
    if (draft->hp.n_vocab != target->hp.n_vocab)
        return sd_set_error(SD_ERR_VOCAB_MISMATCH,
                            "draft model vocabulary has %d tokens, the target's %d",
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
                                "draft '%.*s', target '%.*s'", (int)id, (int)(nd > 64 ? 64 : nd),
                                sd, (int)(nt > 64 ? 64 : nt), st);
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

uint64_t sd_drafter_model_forwards(const sd_drafter_t *d)
{
    return sd_seq_drafter_is(d, SD_SEQ_DRAFTER_MODEL) ? sd_seq_drafter_forwards(d) : 0;
}
