/* Random-weight llama/qwen2 GGUF models with llama.cpp's names, plus a small but real
 * tokenizer (byte-level BPE trained on a fixed corpus, or SentencePiece-style pieces). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "gguf/gguf.h"
#include "gguf/synthetic.h"

void sd_synth_spec_default(sd_synth_spec_t *spec)
{
    *spec = (sd_synth_spec_t){
        .arch = "llama",
        .n_layer = 2,
        .n_embd = 64,
        .n_head = 4,
        .n_head_kv = 2,
        .n_ff = 128,
        .n_vocab = 320,
        .n_ctx = 256,
        .head_dim = 0,
        .rope_base = 10000.0f,
        .norm_eps = 1e-5f,
        .weight_type = SD_DTYPE_F32,
        .embd_type = SD_DTYPE_F32,
        .output_type = SD_DTYPE_F32,
        .tied_embeddings = 0,
        .tokenizer = SD_SYNTH_TOKENIZER_GPT2,
        .seed = 1,
        .weight_scale = 0.02f,
    };
}

/* ---- spec validation ---------------------------------------------------------- */

static sd_status_t check_type(const char *field, sd_dtype_t type, const int *dims, int n_dims)
{
    if (!sd_dtype_supported((uint32_t)type))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_synth: %s %d is not a supported tensor type",
                            field, (int)type);
    int64_t blk = sd_dtype_block_elems(type);
    for (int i = 0; i < n_dims; i++)
        if (dims[i] % blk != 0)
            return sd_set_error(SD_ERR_INVALID_ARG,
                                "sd_synth: %s %s needs rows that are multiples of %lld, but a "
                                "row has %d elements",
                                field, sd_dtype_name((uint32_t)type), (long long)blk, dims[i]);
    return SD_OK;
}

static sd_status_t check_positive(const char *field, int v)
{
    if (v < 1) return sd_set_error(SD_ERR_INVALID_ARG, "sd_synth: %s = %d must be >= 1", field, v);
    return SD_OK;
}

static int head_dim(const sd_synth_spec_t *s)
{
    return s->head_dim ? s->head_dim : s->n_embd / s->n_head;
}

static sd_status_t check_shape(const sd_synth_spec_t *s)
{
    SD_CHECK(check_positive("n_layer", s->n_layer));
    SD_CHECK(check_positive("n_embd", s->n_embd));
    SD_CHECK(check_positive("n_head", s->n_head));
    SD_CHECK(check_positive("n_head_kv", s->n_head_kv));
    SD_CHECK(check_positive("n_ff", s->n_ff));
    SD_CHECK(check_positive("n_vocab", s->n_vocab));
    SD_CHECK(check_positive("n_ctx", s->n_ctx));
    if (s->n_head % s->n_head_kv != 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_synth: n_head %d is not a multiple of n_head_kv %d", s->n_head,
                            s->n_head_kv);
    if (s->head_dim < 0 || (s->head_dim == 0 && s->n_embd % s->n_head != 0))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_synth: head_dim %d: n_embd %d is not a multiple of n_head %d",
                            s->head_dim, s->n_embd, s->n_head);
    if (head_dim(s) % 2 != 0)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_synth: head_dim %d must be even (RoPE pairs)",
                            head_dim(s));
    if ((int64_t)s->n_head * head_dim(s) > (1 << 20) || s->n_vocab > (1 << 24))
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_synth: n_head * head_dim %lld or n_vocab %d too large",
                            (long long)s->n_head * head_dim(s), s->n_vocab);
    return SD_OK;
}

static sd_status_t check_spec(const sd_synth_spec_t *s)
{
    if (s == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_synth: NULL spec");
    if (s->arch == NULL || (strcmp(s->arch, "llama") != 0 && strcmp(s->arch, "qwen2") != 0))
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_synth: arch '%s' is not llama or qwen2",
                            s->arch ? s->arch : "(null)");
    SD_CHECK(check_shape(s));
    if (!(s->rope_base > 0) || !(s->norm_eps > 0) || !(s->weight_scale >= 0))
        return sd_set_error(
            SD_ERR_INVALID_ARG,
            "sd_synth: rope_base %g and norm_eps %g must be > 0, weight_scale %g >= 0",
            (double)s->rope_base, (double)s->norm_eps, (double)s->weight_scale);
    if (s->tokenizer != SD_SYNTH_TOKENIZER_NONE && s->tokenizer != SD_SYNTH_TOKENIZER_GPT2 &&
        s->tokenizer != SD_SYNTH_TOKENIZER_LLAMA)
        return sd_set_error(SD_ERR_INVALID_ARG, "sd_synth: tokenizer %d is unknown",
                            (int)s->tokenizer);
    if (s->tokenizer != SD_SYNTH_TOKENIZER_NONE && s->n_vocab < 300)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "sd_synth: n_vocab %d < 300, the minimum with a tokenizer", s->n_vocab);
    int weight_rows[] = {s->n_embd, s->n_head * head_dim(s), s->n_ff};
    SD_CHECK(check_type("weight_type", s->weight_type, weight_rows, 3));
    SD_CHECK(check_type("embd_type", s->embd_type, &s->n_embd, 1));
    if (!s->tied_embeddings) SD_CHECK(check_type("output_type", s->output_type, &s->n_embd, 1));
    return SD_OK;
}

/* ---- random numbers ----------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Approximately N(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), scaled to unit
 * variance. Plain arithmetic, so the same seed gives the same bits on every libm. */
static float rng_normal(uint64_t *state)
{
    uint64_t r = splitmix64(state);
    double sum = 0;
    for (int k = 0; k < 4; k++) sum += ((double)((r >> (16 * k)) & 0xFFFF) + 0.5) / 65536.0;
    return (float)((sum - 2.0) * 1.7320508075688772);
}

/* ---- tensors ------------------------------------------------------------------- */

/* x[ne0 * ne1] = mean + std * N(0, 1), encoded to `type`. */
static sd_status_t add_random(gguf_writer_t *w, const char *name, sd_dtype_t type, int64_t ne0,
                              int64_t ne1, float mean, float std, uint64_t *rng)
{
    size_t n = (size_t)(ne0 * ne1);
    float *x = malloc(n * sizeof *x);
    SD_ALLOC_CHECK(x, n * sizeof *x, name);
    for (size_t i = 0; i < n; i++) x[i] = mean + std * rng_normal(rng);
    int64_t ne[2] = {ne0, ne1};
    sd_status_t st = gguf_writer_add_tensor_f32(w, name, type, ne1 > 1 ? 2 : 1, ne, x);
    free(x);
    return st;
}

static sd_status_t add_layer(gguf_writer_t *w, const sd_synth_spec_t *s, int l, float scale,
                             uint64_t *rng)
{
    const int64_t e = s->n_embd, q = (int64_t)s->n_head * head_dim(s),
                  kv = (int64_t)s->n_head_kv * head_dim(s), ff = s->n_ff;
    const sd_dtype_t wt = s->weight_type;
    char n[96];
#define BLK(suffix) (snprintf(n, sizeof n, "blk.%d.%s", l, suffix), n)
    SD_CHECK(add_random(w, BLK("attn_norm.weight"), SD_DTYPE_F32, e, 1, 1.0f, 0.05f, rng));
    SD_CHECK(add_random(w, BLK("attn_q.weight"), wt, e, q, 0, scale, rng)); /* [n_embd, q] */
    SD_CHECK(add_random(w, BLK("attn_k.weight"), wt, e, kv, 0, scale, rng));
    SD_CHECK(add_random(w, BLK("attn_v.weight"), wt, e, kv, 0, scale, rng));
    if (strcmp(s->arch, "qwen2") == 0) {
        SD_CHECK(add_random(w, BLK("attn_q.bias"), SD_DTYPE_F32, q, 1, 0, scale, rng));
        SD_CHECK(add_random(w, BLK("attn_k.bias"), SD_DTYPE_F32, kv, 1, 0, scale, rng));
        SD_CHECK(add_random(w, BLK("attn_v.bias"), SD_DTYPE_F32, kv, 1, 0, scale, rng));
    }
    SD_CHECK(add_random(w, BLK("attn_output.weight"), wt, q, e, 0, scale, rng));
    SD_CHECK(add_random(w, BLK("ffn_norm.weight"), SD_DTYPE_F32, e, 1, 1.0f, 0.05f, rng));
    SD_CHECK(add_random(w, BLK("ffn_gate.weight"), wt, e, ff, 0, scale, rng));
    SD_CHECK(add_random(w, BLK("ffn_up.weight"), wt, e, ff, 0, scale, rng));
    SD_CHECK(add_random(w, BLK("ffn_down.weight"), wt, ff, e, 0, scale, rng));
#undef BLK
    return SD_OK;
}

static sd_status_t add_tensors(gguf_writer_t *w, const sd_synth_spec_t *s)
{
    uint64_t rng = s->seed;
    splitmix64(&rng);
    float scale = s->weight_scale > 0 ? s->weight_scale : 0.02f;
    SD_CHECK(
        add_random(w, "token_embd.weight", s->embd_type, s->n_embd, s->n_vocab, 0, scale, &rng));
    SD_CHECK(add_random(w, "output_norm.weight", SD_DTYPE_F32, s->n_embd, 1, 1.0f, 0.05f, &rng));
    if (!s->tied_embeddings)
        SD_CHECK(
            add_random(w, "output.weight", s->output_type, s->n_embd, s->n_vocab, 0, scale, &rng));
    for (int l = 0; l < s->n_layer; l++) SD_CHECK(add_layer(w, s, l, scale, &rng));
    return SD_OK;
}

static sd_status_t add_hparams(gguf_writer_t *w, const sd_synth_spec_t *s)
{
    char k[128];
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", s->arch, suffix), k)
    SD_CHECK(gguf_writer_set_str(w, "general.architecture", s->arch));
    SD_CHECK(gguf_writer_set_str(w, "general.name", "specdec-synthetic"));
    SD_CHECK(gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)s->n_layer));
    SD_CHECK(gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)s->n_ctx));
    SD_CHECK(gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)s->n_embd));
    SD_CHECK(gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)s->n_ff));
    SD_CHECK(gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)s->n_head));
    SD_CHECK(gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->n_head_kv));
    SD_CHECK(gguf_writer_set_f32(w, KEY("rope.freq_base"), s->rope_base));
    SD_CHECK(gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), s->norm_eps));
    SD_CHECK(gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)head_dim(s)));
    SD_CHECK(gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)s->n_vocab));
    if (s->n_embd % s->n_head != 0 || head_dim(s) != s->n_embd / s->n_head) {
        SD_CHECK(gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)head_dim(s)));
        SD_CHECK(gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)head_dim(s)));
    }
#undef KEY
    return SD_OK;
}

/* ---- tokenizer vocabulary --------------------------------------------------------- */

/* A fixed lowercase corpus the BPE merges are trained on. */
static const char corpus[] =
    "the quick brown fox jumps over the lazy dog. a speculative decoder drafts a few tokens, "
    "then the target model checks them all in one pass and keeps the longest prefix it agrees "
    "with. the output is exactly what the target alone would write. when the draft is good, "
    "many tokens are accepted at once and the model runs faster. when the draft is poor, the "
    "target still writes one token of its own, so nothing is lost but a little time. there "
    "is a small model and a large model; the small one is cheap, the large one is right. "
    "in the morning the sun rises over the hills and the river runs down to the sea. people "
    "walk to work, children go to school, and the city wakes up. she said that he would come "
    "back in the evening, and they would read a book together by the window. this is the "
    "story of a man who wanted to know how things work, and of the machines he built. every "
    "question has an answer, and every answer brings another question. we think, we write, "
    "we learn, and we share what we find with the people around us.";

typedef struct vocab {
    char **tok;
    int n, cap;
    int *slots; /* open addressing over tok, -1 empty */
    size_t n_slots;
    int (*merges)[2];
    int n_merges, cap_merges;
} vocab_t;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* Index of s[0..n) in the vocabulary, or -1; *slot gets where it would go. */
static int vocab_find(const vocab_t *v, const char *s, size_t n, size_t *slot)
{
    size_t h = hash_bytes(s, n) & (v->n_slots - 1);
    for (;; h = (h + 1) & (v->n_slots - 1)) {
        int id = v->slots[h];
        if (id < 0 || (strlen(v->tok[id]) == n && memcmp(v->tok[id], s, n) == 0)) {
            if (slot) *slot = h;
            return id;
        }
    }
}

static sd_status_t vocab_init(vocab_t *v, int cap)
{
    memset(v, 0, sizeof *v);
    v->cap = cap;
    v->n_slots = 16;
    while (v->n_slots < 2 * (size_t)cap) v->n_slots *= 2;
    v->tok = calloc((size_t)cap, sizeof *v->tok);
    v->slots = malloc(v->n_slots * sizeof *v->slots);
    /* each training merge removes a symbol from the corpus, each other one adds a token */
    v->cap_merges = cap + (int)sizeof corpus;
    v->merges = malloc((size_t)v->cap_merges * sizeof *v->merges);
    if (v->tok == NULL || v->slots == NULL || v->merges == NULL)
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for a %d-token vocabulary", cap);
    memset(v->slots, 0xff, v->n_slots * sizeof *v->slots);
    return SD_OK;
}

static void vocab_free(vocab_t *v)
{
    for (int i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->slots);
    free(v->merges);
}

/* Adds s[0..n) unless present; *id gets its index (-1 when the vocabulary is full). */
static sd_status_t vocab_add(vocab_t *v, const char *s, size_t n, int *id)
{
    size_t slot;
    *id = vocab_find(v, s, n, &slot);
    if (*id >= 0 || v->n == v->cap) return SD_OK;
    char *copy = malloc(n + 1);
    SD_ALLOC_CHECK(copy, n + 1, "a vocabulary token");
    memcpy(copy, s, n);
    copy[n] = '\0';
    v->tok[v->n] = copy;
    v->slots[slot] = v->n;
    *id = v->n++;
    return SD_OK;
}

static int is_chatml_special(const char *s)
{
    return strcmp(s, "<|endoftext|>") == 0 || strcmp(s, "<|im_start|>") == 0 ||
           strcmp(s, "<|im_end|>") == 0;
}

/* Records the merge a+b and adds its token; *out_id = -1 when nothing was recorded (too
 * long, a special's text, full, or an existing token while !allow_existing). */
static sd_status_t vocab_merge(vocab_t *v, int a, int b, int allow_existing, int *out_id)
{
    size_t la = strlen(v->tok[a]), lb = strlen(v->tok[b]);
    char buf[256];
    *out_id = -1;
    if (la + lb >= sizeof buf) return SD_OK;
    memcpy(buf, v->tok[a], la);
    memcpy(buf + la, v->tok[b], lb);
    buf[la + lb] = '\0';
    if (is_chatml_special(buf) || v->n_merges == v->cap_merges) return SD_OK;
    if (!allow_existing && vocab_find(v, buf, la + lb, NULL) >= 0) return SD_OK;
    SD_CHECK(vocab_add(v, buf, la + lb, out_id));
    if (*out_id < 0) return SD_OK;
    v->merges[v->n_merges][0] = a;
    v->merges[v->n_merges][1] = b;
    v->n_merges++;
    return SD_OK;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100.. in order.
 * order[i] is the byte of token i; cp[b] the code point of byte b. */
static void gpt2_byte_map(uint8_t order[256], uint32_t cp[256])
{
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        if (printable) {
            order[n++] = (uint8_t)b;
            cp[b] = (uint32_t)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        if (!printable) {
            order[n++] = (uint8_t)b;
            cp[b] = 256u + (uint32_t)extra++;
        }
    }
}

static size_t utf8_put(char *out, uint32_t c)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xC0 | (c >> 6)); /* every mapped byte is below U+0800 */
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

static size_t utf8_len(uint8_t lead)
{
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/* ---- BPE training over the corpus -------------------------------------------------- */

typedef struct word {
    int *ids;
    int n;
    int count;
} word_t;

typedef struct words {
    word_t *w;
    int n;
} words_t;

static void words_free(words_t *ws)
{
    for (int i = 0; i < ws->n; i++) free(ws->w[i].ids);
    free(ws->w);
}

/* Next pre-token of the corpus at *p: an optional space, then a run of letters or one other char.
 */
static size_t next_word(const char *p)
{
    size_t n = (*p == ' ' && p[1] != '\0') ? 1 : 0;
    if (p[n] >= 'a' && p[n] <= 'z') {
        while (p[n] >= 'a' && p[n] <= 'z') n++;
        return n;
    }
    return n + 1;
}

/* The pre-token's text in token space: GPT-2 maps bytes, SentencePiece writes ' ' as U+2581. */
static size_t map_word(const char *p, size_t n, int gpt2, const uint32_t cp[256], char *out)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (gpt2) {
            len += utf8_put(out + len, cp[(uint8_t)p[i]]);
        } else if (p[i] == ' ') {
            memcpy(out + len, "\xE2\x96\x81", 3);
            len += 3;
        } else {
            out[len++] = p[i];
        }
    }
    return len;
}

/* Splits the corpus into distinct words (with counts) as id sequences of their characters;
 * characters missing from the vocabulary are added while it has room, else they are -1. */
static sd_status_t corpus_words(vocab_t *v, int gpt2, words_t *ws)
{
    uint8_t order[256];
    uint32_t cp[256];
    gpt2_byte_map(order, cp);
    ws->w = calloc(sizeof corpus, sizeof *ws->w);
    SD_ALLOC_CHECK(ws->w, sizeof corpus * sizeof *ws->w, "corpus words");
    for (const char *p = corpus; *p;) {
        size_t n = next_word(p);
        char text[256];
        size_t len = map_word(p, n, gpt2, cp, text);
        p += n;
        int ids[128], n_ids = 0;
        for (size_t i = 0; i < len; i += utf8_len((uint8_t)text[i])) {
            int id;
            SD_CHECK(vocab_add(v, text + i, utf8_len((uint8_t)text[i]), &id));
            ids[n_ids++] = id;
        }
        int k = 0;
        while (k < ws->n && (ws->w[k].n != n_ids || memcmp(ws->w[k].ids, ids, n_ids * sizeof *ids)))
            k++;
        if (k == ws->n) {
            ws->w[k].ids = malloc((size_t)n_ids * sizeof *ids);
            SD_ALLOC_CHECK(ws->w[k].ids, (size_t)n_ids * sizeof *ids, "a corpus word");
            memcpy(ws->w[k].ids, ids, (size_t)n_ids * sizeof *ids);
            ws->w[k].n = n_ids;
            ws->n++;
        }
        ws->w[k].count++;
    }
    return SD_OK;
}

/* Pair counts of one training step: open addressing keyed by (a, b). */
typedef struct pair_table {
    uint64_t *keys; /* (a << 32 | b) + 1; 0 = empty */
    int *counts;
    size_t cap;
} pair_table_t;

static int *pair_slot(pair_table_t *t, int a, int b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (t->cap - 1);
    while (t->keys[h] != 0 && t->keys[h] != key) h = (h + 1) & (t->cap - 1);
    t->keys[h] = key;
    return &t->counts[h];
}

/* The most frequent adjacent pair (the first seen wins ties); returns its count, 0 if none. */
static int best_pair(const words_t *ws, pair_table_t *t, int *a, int *b)
{
    memset(t->keys, 0, t->cap * sizeof *t->keys);
    memset(t->counts, 0, t->cap * sizeof *t->counts);
    for (int i = 0; i < ws->n; i++)
        for (int j = 0; j + 1 < ws->w[i].n; j++)
            if (ws->w[i].ids[j] >= 0 && ws->w[i].ids[j + 1] >= 0)
                *pair_slot(t, ws->w[i].ids[j], ws->w[i].ids[j + 1]) += ws->w[i].count;
    int best = 0;
    for (int i = 0; i < ws->n; i++) {
        for (int j = 0; j + 1 < ws->w[i].n; j++) {
            int x = ws->w[i].ids[j], y = ws->w[i].ids[j + 1];
            if (x < 0 || y < 0) continue;
            int c = *pair_slot(t, x, y);
            if (c > best) {
                best = c;
                *a = x;
                *b = y;
            }
        }
    }
    return best;
}

static void apply_merge(words_t *ws, int a, int b, int id)
{
    for (int i = 0; i < ws->n; i++) {
        word_t *w = &ws->w[i];
        int out = 0;
        for (int j = 0; j < w->n; j++) {
            if (j + 1 < w->n && w->ids[j] == a && w->ids[j + 1] == b) {
                w->ids[out++] = id;
                j++;
            } else {
                w->ids[out++] = w->ids[j];
            }
        }
        w->n = out;
    }
}

/* Greedy BPE: merge the most frequent pair until `target` tokens or every corpus word is
 * one token. */
static sd_status_t train_bpe(vocab_t *v, words_t *ws, int target)
{
    pair_table_t t = {.cap = 2 * sizeof corpus};
    while (t.cap & (t.cap - 1)) t.cap &= t.cap - 1;
    t.cap *= 2; /* a power of two above twice the number of pairs in the corpus */
    t.keys = malloc(t.cap * sizeof *t.keys);
    t.counts = malloc(t.cap * sizeof *t.counts);
    sd_status_t st = SD_OK;
    if (t.keys == NULL || t.counts == NULL)
        st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for BPE pair counts");
    int a = -1, b = -1, id = 0;
    while (st == SD_OK && id >= 0 && v->n < target && best_pair(ws, &t, &a, &b) > 0) {
        st = vocab_merge(v, a, b, 1, &id);
        if (st == SD_OK && id >= 0) apply_merge(ws, a, b, id);
    }
    free(t.keys);
    free(t.counts);
    return st;
}

/* Past what the corpus teaches: concatenate pairs of existing tokens [first, n) in order. */
static sd_status_t fill_pairs(vocab_t *v, int first, int target)
{
    while (v->n < target) {
        int snap = v->n, before = v->n;
        for (int a = first; a < snap && v->n < target; a++)
            for (int b = first; b < snap && v->n < target; b++) {
                int id;
                SD_CHECK(vocab_merge(v, a, b, 0, &id));
            }
        if (v->n == before)
            return sd_set_error(SD_ERR_INTERNAL, "sd_synth: vocabulary stuck at %d of %d tokens",
                                v->n, target);
    }
    return SD_OK;
}

/* ---- tokenizer metadata ------------------------------------------------------------ */

/* ChatML, with real newlines inside the string literals as in SmolLM2's file. */
static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

static sd_status_t write_token_types(gguf_writer_t *w, const vocab_t *v,
                                     int32_t (*type_of)(const vocab_t *, int))
{
    int32_t *types = malloc((size_t)v->n * sizeof *types);
    SD_ALLOC_CHECK(types, (size_t)v->n * sizeof *types, "token types");
    for (int i = 0; i < v->n; i++) types[i] = type_of(v, i);
    sd_status_t st =
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)v->n);
    free(types);
    return st;
}

static int32_t gpt2_type(const vocab_t *v, int i) { return is_chatml_special(v->tok[i]) ? 3 : 1; }

static sd_status_t write_merges(gguf_writer_t *w, const vocab_t *v)
{
    char **lines = calloc((size_t)v->n_merges + 1, sizeof *lines);
    SD_ALLOC_CHECK(lines, ((size_t)v->n_merges + 1) * sizeof *lines, "merges");
    sd_status_t st = SD_OK;
    for (int i = 0; i < v->n_merges && st == SD_OK; i++) {
        const char *a = v->tok[v->merges[i][0]], *b = v->tok[v->merges[i][1]];
        lines[i] = malloc(strlen(a) + strlen(b) + 2);
        if (lines[i] == NULL)
            st = sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for merge %d", i);
        else
            sprintf(lines[i], "%s %s", a, b);
    }
    if (st == SD_OK)
        st = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)lines,
                                     (uint64_t)v->n_merges);
    for (int i = 0; i < v->n_merges; i++) free(lines[i]);
    free(lines);
    return st;
}

static sd_status_t gpt2_vocab(vocab_t *v, int n_vocab)
{
    uint8_t order[256];
    uint32_t cp[256];
    gpt2_byte_map(order, cp);
    for (int i = 0; i < 256; i++) {
        char s[4];
        int id;
        SD_CHECK(vocab_add(v, s, utf8_put(s, cp[order[i]]), &id));
    }
    words_t ws = {0};
    sd_status_t st = corpus_words(v, 1, &ws);
    if (st == SD_OK) st = train_bpe(v, &ws, n_vocab - 3);
    words_free(&ws);
    SD_CHECK(st);
    SD_CHECK(fill_pairs(v, 0, n_vocab - 3));
    int id;
    SD_CHECK(vocab_add(v, "<|endoftext|>", 13, &id));
    SD_CHECK(vocab_add(v, "<|im_start|>", 12, &id));
    SD_CHECK(vocab_add(v, "<|im_end|>", 10, &id));
    return SD_OK;
}

static sd_status_t write_gpt2(gguf_writer_t *w, const sd_synth_spec_t *s, const vocab_t *v)
{
    SD_CHECK(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"));
    SD_CHECK(gguf_writer_set_str(w, "tokenizer.ggml.pre",
                                 strcmp(s->arch, "qwen2") == 0 ? "qwen2" : "smollm"));
    SD_CHECK(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok,
                                     (uint64_t)v->n));
    SD_CHECK(write_token_types(w, v, gpt2_type));
    SD_CHECK(write_merges(w, v));
    SD_CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(v->n - 3)));
    SD_CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(v->n - 3)));
    SD_CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)(v->n - 1)));
    SD_CHECK(gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false));
    return gguf_writer_set_str(w, "tokenizer.chat_template",
                               s->chat_template ? s->chat_template : chatml_template);
}

/* SentencePiece layout: <unk> <s> </s>, <0x00>..<0xFF>, then pieces (chars, then merges). */
#define SPM_FIRST_PIECE 259

static int32_t spm_type(const vocab_t *v, int i)
{
    (void)v;
    return i == 0 ? 2 : i < 3 ? 3 : i < SPM_FIRST_PIECE ? 6 : 1;
}

static sd_status_t llama_vocab(vocab_t *v, int n_vocab)
{
    int id;
    SD_CHECK(vocab_add(v, "<unk>", 5, &id));
    SD_CHECK(vocab_add(v, "<s>", 3, &id));
    SD_CHECK(vocab_add(v, "</s>", 4, &id));
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        SD_CHECK(vocab_add(v, s, 6, &id));
    }
    words_t ws = {0};
    sd_status_t st = corpus_words(v, 0, &ws);
    if (st == SD_OK) st = train_bpe(v, &ws, n_vocab);
    words_free(&ws);
    SD_CHECK(st);
    return fill_pairs(v, SPM_FIRST_PIECE, n_vocab);
}

static sd_status_t write_llama(gguf_writer_t *w, const sd_synth_spec_t *s, const vocab_t *v)
{
    float *scores = malloc((size_t)v->n * sizeof *scores);
    SD_ALLOC_CHECK(scores, (size_t)v->n * sizeof *scores, "token scores");
    for (int i = 0; i < v->n; i++)
        scores[i] = i < SPM_FIRST_PIECE ? 0.0f : (float)-(i - SPM_FIRST_PIECE);
    sd_status_t st =
        gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)v->n);
    free(scores);
    SD_CHECK(st);
    SD_CHECK(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"));
    SD_CHECK(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok,
                                     (uint64_t)v->n));
    SD_CHECK(write_token_types(w, v, spm_type));
    SD_CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1));
    SD_CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2));
    SD_CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0));
    SD_CHECK(gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true));
    if (s->chat_template)
        SD_CHECK(gguf_writer_set_str(w, "tokenizer.chat_template", s->chat_template));
    return gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
}

static sd_status_t add_tokenizer(gguf_writer_t *w, const sd_synth_spec_t *s)
{
    if (s->tokenizer == SD_SYNTH_TOKENIZER_NONE) return SD_OK;
    vocab_t v;
    sd_status_t st = vocab_init(&v, s->n_vocab);
    if (st == SD_OK && s->tokenizer == SD_SYNTH_TOKENIZER_GPT2) {
        st = gpt2_vocab(&v, s->n_vocab);
        if (st == SD_OK) st = write_gpt2(w, s, &v);
    } else if (st == SD_OK) {
        st = llama_vocab(&v, s->n_vocab);
        if (st == SD_OK) st = write_llama(w, s, &v);
    }
    if (st == SD_OK && v.n != s->n_vocab)
        st = sd_set_error(SD_ERR_INTERNAL, "sd_synth: built %d tokens, n_vocab is %d", v.n,
                          s->n_vocab);
    vocab_free(&v);
    return st;
}

/* ---- entry points ------------------------------------------------------------------ */

static sd_status_t build(const sd_synth_spec_t *spec, gguf_writer_t **out)
{
    SD_CHECK(check_spec(spec));
    SD_CHECK(gguf_writer_new(out));
    sd_status_t st = add_hparams(*out, spec);
    if (st == SD_OK) st = add_tokenizer(*out, spec);
    if (st == SD_OK) st = add_tensors(*out, spec);
    if (st != SD_OK) {
        gguf_writer_free(*out);
        *out = NULL;
    }
    return st;
}

sd_status_t sd_synth_write_file(const sd_synth_spec_t *spec, const char *path)
{
    gguf_writer_t *w;
    SD_CHECK(build(spec, &w));
    sd_status_t st = gguf_writer_write_file(w, path);
    gguf_writer_free(w);
    return st;
}

sd_status_t sd_synth_write_buffer(const sd_synth_spec_t *spec, void **out, size_t *size)
{
    gguf_writer_t *w;
    SD_CHECK(build(spec, &w));
    sd_status_t st = gguf_writer_write_buffer(w, out, size);
    gguf_writer_free(w);
    return st;
}
