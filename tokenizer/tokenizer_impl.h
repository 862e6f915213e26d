/* Tokenizer internals shared by the .c files of tokenizer/ (not a public contract). */
#ifndef SPECDEC_TOKENIZER_TOKENIZER_IMPL_H
#define SPECDEC_TOKENIZER_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* tokenizer.ggml.token_type values (llama.cpp numbering). */
enum {
    SD_TOKTYPE_UNDEFINED = 0,
    SD_TOKTYPE_NORMAL = 1,
    SD_TOKTYPE_UNKNOWN = 2,
    SD_TOKTYPE_CONTROL = 3,
    SD_TOKTYPE_USER_DEFINED = 4,
    SD_TOKTYPE_UNUSED = 5,
    SD_TOKTYPE_BYTE = 6,
};

typedef enum sd_tok_kind { SD_TOK_BPE, SD_TOK_SPM } sd_tok_kind_t;
typedef enum sd_pretok { SD_PRE_GPT2, SD_PRE_SMOLLM, SD_PRE_QWEN2 } sd_pretok_t;

/* Open-addressing map: token text -> id (duplicate texts: the last id wins, as in llama.cpp
 * and HF). */
typedef struct sd_text_map {
    uint32_t *hash; /* [cap] */
    int32_t *id;    /* [cap], -1 = empty */
    size_t mask;
} sd_text_map_t;

/* Open-addressing map: (left id, right id) -> (merge rank, merged id). */
typedef struct sd_pair_slot {
    uint64_t key; /* UINT64_MAX = empty */
    int32_t rank, id;
} sd_pair_slot_t;

typedef struct sd_pair_map {
    sd_pair_slot_t *slots; /* [mask + 1] */
    size_t mask;
} sd_pair_map_t;

struct sd_tokenizer {
    sd_tok_kind_t kind;
    sd_pretok_t pre;
    int32_t n_vocab;
    char *blob;      /* every token text, each NUL-terminated */
    uint32_t *off;   /* [n_vocab] text offset into blob */
    uint32_t *len;   /* [n_vocab] text length */
    float *score;    /* [n_vocab] (SPM merge priority; 0 when absent) */
    uint8_t *type;   /* [n_vocab] SD_TOKTYPE_* */
    uint8_t *is_eog; /* [n_vocab] */
    sd_text_map_t vocab;
    sd_pair_map_t merges;      /* BPE only */
    int32_t byte_tok[256];     /* BPE: byte-level char token; SPM: <0xXX>; -1 if none */
    int16_t unbyte[0x144];     /* BPE decode: byte-level code point -> byte, -1 if none */
    int32_t *specials;         /* control + user-defined tokens, longest text first */
    size_t n_specials;
    uint8_t special_first[256]; /* 1 if some special text starts with this byte */
    int32_t bos, eos, unk, pad, eot;
    bool add_bos, add_space_prefix;
    char *chat_template; /* NUL-terminated copy, or NULL */
};

/* Per-encode scratch (encode is const on the tokenizer, so it is thread-safe). */
typedef struct sd_tok_scratch {
    uint32_t *cps;  /* [cap_cps] code points of the current segment */
    uint32_t *offs; /* [cap_cps + 1] byte offset of each code point */
    uint8_t *cls;   /* [cap_cps] SD_UNI_* flags */
    size_t cap_cps;
    void *syms; /* BPE/SPM symbols */
    size_t cap_syms;
    void *heap; /* BPE/SPM candidate pairs */
    size_t cap_heap;
    char *text; /* SPM escaped text */
    size_t cap_text;
} sd_tok_scratch_t;

/* Token ids being produced; counts past cap so the caller learns the size needed. */
typedef struct sd_tok_out {
    int32_t *ids;
    size_t cap, n;
} sd_tok_out_t;

static inline void sd_tok_emit(sd_tok_out_t *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Grow *p (capacity *cap elements of elem bytes) to at least n; SD_ERR_OUT_OF_MEMORY naming
 * `what`, *p and *cap unchanged. */
sd_status_t sd_tok_reserve(void **p, size_t *cap, size_t n, size_t elem, const char *what);

/* ---- maps (maps.c) ---- */
sd_status_t sd_text_map_init(sd_text_map_t *m, size_t n);
void sd_text_map_free(sd_text_map_t *m);
void sd_text_map_put(sd_text_map_t *m, const sd_tokenizer_t *t, int32_t id);
int32_t sd_text_map_get(const sd_text_map_t *m, const sd_tokenizer_t *t, const char *s, size_t n);
sd_status_t sd_pair_map_init(sd_pair_map_t *m, size_t n);
void sd_pair_map_free(sd_pair_map_t *m);
/* Keeps the first (lowest) rank when a pair repeats. */
void sd_pair_map_put(sd_pair_map_t *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const sd_pair_slot_t *sd_pair_map_get(const sd_pair_map_t *m, int32_t a, int32_t b);

/* ---- vocabulary loading (vocab.c) ---- */
sd_status_t sd_tokenizer_load_vocab(const gguf_file_t *f, sd_tokenizer_t *t);

/* ---- pre-tokenizer (pretok.c) ---- */
/* Called with each piece as a byte range [start, end) of the segment. */
typedef sd_status_t (*sd_piece_fn)(void *ctx, size_t start, size_t end);
sd_status_t sd_pretokenize(sd_pretok_t kind, const uint8_t *text, size_t len,
                           sd_tok_scratch_t *s, sd_piece_fn fn, void *ctx);

/* ---- models (bpe.c, spm.c) ---- */
/* Byte-level BPE over one segment of raw text (no special tokens inside). */
sd_status_t sd_bpe_encode(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const uint8_t *text,
                          size_t len, sd_tok_out_t *o);
/* SentencePiece-style over one segment; space_prefix: prepend "▁". */
sd_status_t sd_spm_encode(const sd_tokenizer_t *t, sd_tok_scratch_t *s, const uint8_t *text,
                          size_t len, bool space_prefix, sd_tok_out_t *o);

/* A candidate merge of the adjacent symbols left and right, for BPE and SPM alike: the
 * smallest key merges first (BPE: merge rank; SPM: -score), the leftmost on ties. check[]
 * holds what the algorithm re-checks on pop to skip candidates made stale by earlier
 * merges (lazy invalidation). */
typedef struct sd_merge_cand {
    float key;
    int32_t left, right;
    int32_t check[3];
} sd_merge_cand_t;

/* Binary min-heap over h[0..*n) ordered by (key, left) (tokenizer.c). */
void sd_merge_heap_push(sd_merge_cand_t *h, size_t *n, sd_merge_cand_t c);
sd_merge_cand_t sd_merge_heap_pop(sd_merge_cand_t *h, size_t *n);

#endif
