/* Byte-level BPE: each pre-token piece starts as one symbol per byte (its GPT-2 byte-level
 * token) and the adjacent pair with the lowest merge rank (leftmost on ties) is merged until no
 * pair has a merge — the order HF tokenizers and llama.cpp use. A binary heap with lazy
 * invalidation keeps this O(n log n) for long pieces. */
#include "core/check.h"
#include "tokenizer/tokenizer_impl.h"

typedef struct bpe_sym {
    int32_t id; /* -1 once merged into its left neighbour */
    int32_t prev, next;
} bpe_sym_t;

typedef struct bpe_ctx {
    const sd_tokenizer_t *t;
    sd_tok_scratch_t *s;
    const uint8_t *text;
    sd_tok_out_t *out;
} bpe_ctx_t;


static void push_pair(const sd_tokenizer_t *t, const bpe_sym_t *sy, int32_t l, int32_t r,
                      sd_merge_cand_t *h, size_t *n)
{
    const sd_pair_slot_t *m = sd_pair_map_get(&t->merges, sy[l].id, sy[r].id);
    if (m == NULL) return;
    /* check = {left id, right id, merged id}: stale once either id changed */
    sd_merge_heap_push(h, n, (sd_merge_cand_t){(float)m->rank, l, r, {sy[l].id, sy[r].id, m->id}});
}

static void merge_all(const sd_tokenizer_t *t, bpe_sym_t *sy, size_t n, sd_merge_cand_t *h)
{
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, sy, (int32_t)i, (int32_t)i + 1, h, &nh);
    while (nh > 0) {
        sd_merge_cand_t p = sd_merge_heap_pop(h, &nh);
        bpe_sym_t *l = &sy[p.left], *r = &sy[p.right];
        if (l->id != p.check[0] || l->next != p.right || r->id != p.check[1]) continue;
        l->id = p.check[2];
        l->next = r->next;
        if (r->next >= 0) sy[r->next].prev = p.left;
        r->id = -1;
        if (l->prev >= 0) push_pair(t, sy, l->prev, p.left, h, &nh);
        if (l->next >= 0) push_pair(t, sy, p.left, l->next, h, &nh);
    }
}

/* One pre-token piece text[0..n). Bytes whose byte-level character is not in the vocabulary
 * (SmolLM2 lacks 21, e.g. 0x04 and 0xC0) are dropped before merging, as HF tokenizers' BPE
 * without an unknown token does (llama.cpp drops them too). */
static sd_status_t encode_piece(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const uint8_t *text,
                                size_t n, sd_tok_out_t *o)
{
    if (n == 1) {
        if (t->byte_tok[text[0]] >= 0) sd_tok_emit(o, t->byte_tok[text[0]]);
        return SD_OK;
    }
    if (n > INT32_MAX / 4)
        return sd_set_error(SD_ERR_INVALID_ARG, "pre-token of %zu bytes is too long", n);
    SD_CHECK(sd_tok_reserve(&s->syms, &s->cap_syms, n, sizeof(bpe_sym_t), "BPE symbols"));
    SD_CHECK(sd_tok_reserve(&s->heap, &s->cap_heap, 3 * n, sizeof(sd_merge_cand_t), "BPE pairs"));
    bpe_sym_t *sy = s->syms; /* [m] */
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_tok[text[i]];
        if (id < 0) continue;
        sy[m] = (bpe_sym_t){id, m - 1, m + 1};
        m++;
    }
    if (m == 0) return SD_OK;
    sy[m - 1].next = -1;
    merge_all(t, sy, (size_t)m, s->heap);
    for (int32_t i = 0; i >= 0; i = sy[i].next) sd_tok_emit(o, sy[i].id);
    return SD_OK;
}

static sd_status_t on_piece(void *ctx, size_t start, size_t end)
{
    bpe_ctx_t *c = ctx;
    return encode_piece(c->t, c->s, c->text + start, end - start, c->out);
}

sd_status_t sd_bpe_encode(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const uint8_t *text,
                          size_t len, sd_tok_out_t *o)
{
    bpe_ctx_t c = {t, s, text, o};
    return sd_pretokenize(t->pre, text, len, s, on_piece, &c);
}
