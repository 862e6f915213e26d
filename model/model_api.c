/* Public model and tokenizer API (specdec.h) over the engine's model and tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "model.h"

#define NULL_ARG(fn, arg) sd_set_error(SD_ERR_INVALID_ARG, fn ": " arg " is NULL")

void sd_model_params_default(sd_model_params_t *params)
{
    if (params == NULL) return;
    *params = (sd_model_params_t){.path = NULL, .n_threads = 0, .n_ctx = 0};
}

sd_status_t sd_model_load(const sd_model_params_t *params, sd_model_t **out)
{
    if (params == NULL) return NULL_ARG("sd_model_load", "params");
    if (out == NULL) return NULL_ARG("sd_model_load", "out");
    *out = NULL;
    if (params->path == NULL) return NULL_ARG("sd_model_load", "params->path");
    gguf_file_t *f;
    SD_CHECK(gguf_open(params->path, &f));
    sd_status_t st = sd_model_load_gguf(f, params, out);
    if (st != SD_OK) gguf_close(f);
    return st;
}

sd_status_t sd_model_get_info(const sd_model_t *model, sd_model_info_t *out)
{
    if (model == NULL) return NULL_ARG("sd_model_get_info", "model");
    if (out == NULL) return NULL_ARG("sd_model_get_info", "out");
    const sd_hparams_t *hp = &model->hp;
    const sd_tokenizer_t *t = model->tokenizer;
    *out = (sd_model_info_t){
        .arch = model->arch_name,
        .name = model->name,
        .n_vocab = hp->n_vocab,
        .n_layer = hp->n_layer,
        .n_embd = hp->n_embd,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .n_ff = hp->n_ff,
        .n_ctx = model->n_ctx,
        .bos = t ? sd_tokenizer_bos(t) : -1,
        .eos = t ? sd_tokenizer_eos(t) : -1,
        .device = sd_backend_name(model->backend),
    };
    return SD_OK;
}

static sd_status_t need_tokenizer(const sd_model_t *model, const char *fn)
{
    if (model->tokenizer == NULL)
        return sd_set_error(SD_ERR_NO_TOKENIZER, "%s: model '%s' has no tokenizer", fn,
                            model->name);
    return SD_OK;
}

sd_status_t sd_tokenize(const sd_model_t *model, const char *text, size_t len, int flags,
                        int32_t *tokens, size_t cap, size_t *n_tokens)
{
    if (model == NULL) return NULL_ARG("sd_tokenize", "model");
    if (text == NULL && len > 0) return NULL_ARG("sd_tokenize", "text");
    if (tokens == NULL && cap > 0) return NULL_ARG("sd_tokenize", "tokens");
    if (n_tokens == NULL) return NULL_ARG("sd_tokenize", "n_tokens");
    *n_tokens = 0;
    SD_CHECK(need_tokenizer(model, "sd_tokenize"));
    return sd_tokenizer_encode(model->tokenizer, text ? text : "", len, flags, tokens, cap,
                               n_tokens);
}

sd_status_t sd_detokenize(const sd_model_t *model, const int32_t *tokens, size_t n, char *buf,
                          size_t cap, size_t *len)
{
    if (model == NULL) return NULL_ARG("sd_detokenize", "model");
    if (tokens == NULL && n > 0) return NULL_ARG("sd_detokenize", "tokens");
    if (buf == NULL && cap > 0) return NULL_ARG("sd_detokenize", "buf");
    if (len == NULL) return NULL_ARG("sd_detokenize", "len");
    *len = 0;
    SD_CHECK(need_tokenizer(model, "sd_detokenize"));
    size_t total = 0;
    int fits = 1;
    for (size_t i = 0; i < n; i++) {
        size_t piece;
        char *dst = fits && buf ? buf + total : NULL; /* no arithmetic on a NULL size query */
        sd_status_t st =
            sd_tokenizer_piece(model->tokenizer, tokens[i], dst, fits ? cap - total : 0, &piece);
        if (st == SD_ERR_BUFFER_TOO_SMALL)
            fits = 0;
        else
            SD_CHECK(st);
        total += piece;
    }
    *len = total;
    if (!fits)
        return sd_set_error(SD_ERR_BUFFER_TOO_SMALL,
                            "sd_detokenize: %zu tokens need %zu bytes, buffer holds %zu", n, total,
                            cap);
    return SD_OK;
}

/* Vocabulary text of a special token as a NUL-terminated string ("" when absent). */
static void token_text(const sd_tokenizer_t *t, int32_t id, char *buf, size_t cap)
{
    size_t n = 0;
    const char *s = id >= 0 ? sd_tokenizer_token_text(t, id, &n) : NULL;
    if (s == NULL) n = 0;
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), s ? s : "");
}

sd_status_t sd_chat_apply(const sd_model_t *model, const sd_chat_message_t *messages, size_t n,
                          int add_generation_prompt, char *buf, size_t cap, size_t *len)
{
    if (model == NULL) return NULL_ARG("sd_chat_apply", "model");
    if (messages == NULL && n > 0) return NULL_ARG("sd_chat_apply", "messages");
    if (buf == NULL && cap > 0) return NULL_ARG("sd_chat_apply", "buf");
    if (len == NULL) return NULL_ARG("sd_chat_apply", "len");
    *len = 0;
    SD_CHECK(need_tokenizer(model, "sd_chat_apply"));
    const sd_tokenizer_t *t = model->tokenizer;
    char bos[256], eos[256];
    token_text(t, sd_tokenizer_bos(t), bos, sizeof bos);
    token_text(t, sd_tokenizer_eos(t), eos, sizeof eos);
    return sd_chat_render(sd_tokenizer_chat_template(t), bos, eos, messages, n,
                          add_generation_prompt, buf, cap, len);
}

/* messages rendered into a malloc'd *text[*len] with *markup[*len] (1: the template's text). */
static sd_status_t render_marked(const sd_model_t *model, const sd_chat_message_t *messages,
                                 size_t n, int add_generation_prompt, char **text,
                                 uint8_t **markup, size_t *len)
{
    const sd_tokenizer_t *t = model->tokenizer;
    const char *tmpl = sd_tokenizer_chat_template(t);
    char bos[256], eos[256];
    token_text(t, sd_tokenizer_bos(t), bos, sizeof bos);
    token_text(t, sd_tokenizer_eos(t), eos, sizeof eos);
    sd_status_t st = sd_chat_render_marked(tmpl, bos, eos, messages, n, add_generation_prompt,
                                           NULL, NULL, 0, len);
    if (st != SD_ERR_BUFFER_TOO_SMALL)
        return st == SD_OK ? sd_set_error(SD_ERR_INTERNAL, "chat text fits in 0 bytes") : st;
    *text = malloc(*len + 1);
    *markup = malloc(*len + 1);
    if (*text == NULL || *markup == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "sd_chat_tokenize: %zu bytes of chat text",
                            *len + 1);
    return sd_chat_render_marked(tmpl, bos, eos, messages, n, add_generation_prompt, *text,
                                 *markup, *len + 1, len);
}

sd_status_t sd_chat_tokenize(const sd_model_t *model, const sd_chat_message_t *messages, size_t n,
                             int add_generation_prompt, int flags, int32_t *tokens, size_t cap,
                             size_t *n_tokens)
{
    if (model == NULL) return NULL_ARG("sd_chat_tokenize", "model");
    if (messages == NULL && n > 0) return NULL_ARG("sd_chat_tokenize", "messages");
    if (tokens == NULL && cap > 0) return NULL_ARG("sd_chat_tokenize", "tokens");
    if (n_tokens == NULL) return NULL_ARG("sd_chat_tokenize", "n_tokens");
    *n_tokens = 0;
    SD_CHECK(need_tokenizer(model, "sd_chat_tokenize"));
    const sd_tokenizer_t *t = model->tokenizer;
    char *text = NULL;
    uint8_t *markup = NULL;
    int32_t *ids = NULL;
    size_t len = 0, n_ids = 0;
    sd_status_t st = render_marked(model, messages, n, add_generation_prompt, &text, &markup, &len);
    /* A token covers at least one byte: len + 1 ids hold the text and a BOS. */
    if (st == SD_OK && (ids = malloc((len + 1) * sizeof *ids)) == NULL)
        st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "sd_chat_tokenize: %zu token ids", len + 1);
    /* Special tokens are always parsed, but only in the template's text unless the caller
     * trusts the messages (SD_TOKENIZE_PARSE_SPECIAL). */
    const uint8_t *special_ok = (flags & SD_TOKENIZE_PARSE_SPECIAL) ? NULL : markup;
    if (st == SD_OK)
        st = sd_tokenizer_encode_marked(t, text, len, flags | SD_TOKENIZE_PARSE_SPECIAL,
                                        special_ok, ids, len + 1, &n_ids);
    /* SD_TOKENIZE_ADD_BOS adds the BOS the model asks for, unless the template wrote one. */
    int32_t bos = sd_tokenizer_bos(t);
    size_t first = (flags & SD_TOKENIZE_ADD_BOS) && n_ids >= 2 && ids[0] == bos && ids[1] == bos;
    if (st == SD_OK) {
        n_ids -= first;
        *n_tokens = n_ids;
        if (n_ids > cap)
            st = sd_set_error(SD_ERR_BUFFER_TOO_SMALL,
                              "sd_chat_tokenize: %zu tokens do not fit in a buffer of %zu", n_ids,
                              cap);
        else if (n_ids > 0)
            memcpy(tokens, ids + first, n_ids * sizeof *ids);
    }
    free(ids);
    free(markup);
    free(text);
    return st;
}
