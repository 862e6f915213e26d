/* The callers' drafter calls (draft/drafter.h): argument checks, then the ops table. */
#include "core/check.h"
#include "draft/drafter_impl.h"

const char *sd_drafter_name(const sd_drafter_t *d) { return d->ops->name; }

int sd_drafter_proposes_cheaply(const sd_drafter_t *d) { return d->ops->proposes_cheaply; }

uint64_t sd_drafter_forwards(const sd_drafter_t *d)
{
    return d != NULL && d->ops->forwards != NULL ? d->ops->forwards(d) : 0;
}

sd_status_t sd_drafter_begin(sd_drafter_t *d, const int32_t *tokens, int n)
{
    if (n < 0 || (tokens == NULL && n > 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter %s: begin with %d tokens at %p",
                            d->ops->name, n, (const void *)tokens);
    return d->ops->begin(d, tokens, n);
}

static sd_status_t check_propose(const sd_drafter_t *d, const sd_draft_request_t *req,
                                 const sd_draft_out_t *out)
{
    if (req == NULL || out == NULL || out->tokens == NULL || req->k < 1)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "drafter %s: propose needs a request with k >= 1 (k = %d) and an "
                            "output token buffer", d->ops->name, req ? req->k : 0);
    return SD_OK;
}

sd_status_t sd_drafter_propose(sd_drafter_t *d, const sd_draft_request_t *req, sd_draft_out_t *out)
{
    SD_CHECK(check_propose(d, req, out));
    return d->ops->propose(d, req, out);
}

int sd_drafter_has_rounds(const sd_drafter_t *d) { return d->ops->propose_begin != NULL; }

sd_status_t sd_drafter_propose_begin(sd_drafter_t *d, const sd_draft_request_t *req,
                                     sd_draft_out_t *out, sd_draft_forward_t *fwd)
{
    fwd->n = 0;
    SD_CHECK(check_propose(d, req, out));
    return d->ops->propose_begin(d, req, out, fwd);
}

sd_status_t sd_drafter_propose_resume(sd_drafter_t *d, sd_draft_forward_t *fwd)
{
    return d->ops->propose_resume(d, fwd);
}

int sd_drafter_has_trees(const sd_drafter_t *d) { return d->ops->propose_tree != NULL; }

sd_status_t sd_drafter_propose_tree(sd_drafter_t *d, const sd_draft_request_t *req,
                                    const sd_tree_shape_t *shape, sd_draft_tree_t *out)
{
    if (d->ops->propose_tree == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter %s proposes no trees (the model, "
                            "layerskip, xvocab, ngram and callback drafters do)", d->ops->name);
    if (req == NULL || shape == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter %s: propose_tree with a NULL argument",
                            d->ops->name);
    out->n = 0;
    out->has_q = 0;
    return d->ops->propose_tree(d, req, shape, out);
}

sd_status_t sd_drafter_accept_path(sd_drafter_t *d, const int32_t *tokens, int n,
                                   int32_t next_token)
{
    if (d->ops->accept_path == NULL || n < 0 || n > SD_SPEC_MAX_K || (n > 0 && tokens == NULL))
        return sd_set_error(SD_ERR_INVALID_ARG, "drafter %s: accept_path of %d tokens",
                            d->ops->name, n);
    return d->ops->accept_path(d, tokens, n, next_token);
}

sd_status_t sd_drafter_accept(sd_drafter_t *d, int n_accepted, int32_t next_token)
{
    return d->ops->accept(d, n_accepted, next_token);
}

sd_status_t sd_drafter_rollback(sd_drafter_t *d, int n) { return d->ops->rollback(d, n); }

void sd_drafter_reset(sd_drafter_t *d) { d->ops->reset(d); }

sd_status_t sd_drafter_check_token(const sd_drafter_t *d, int32_t token, int n_vocab,
                                   const char *what)
{
    if (token < 0 || token >= n_vocab)
        return sd_set_error(SD_ERR_INVALID_ARG, "%s drafter: %s token %d outside the vocabulary "
                            "[0, %d)", d->ops->name, what, token, n_vocab);
    return SD_OK;
}

sd_status_t sd_drafter_check_tokens(const sd_drafter_t *d, const int32_t *tokens, int n,
                                    int n_vocab, const char *what)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return sd_set_error(SD_ERR_INVALID_ARG, "%s drafter: %s token [%d] = %d outside the "
                                "vocabulary [0, %d)", d->ops->name, what, i, tokens[i], n_vocab);
    return SD_OK;
}

void sd_drafter_free(sd_drafter_t *d)
{
    if (d != NULL)
        d->ops->destroy(d);
}
