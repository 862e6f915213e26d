/* Random-weight GGUF models of any llama/qwen2 shape, written with the project's GGUF
 * writer: tests and benchmarks use them so they need no download. */
#ifndef SPECDEC_GGUF_SYNTHETIC_H
#define SPECDEC_GGUF_SYNTHETIC_H

#include <stdint.h>

#include "kernels/dtype.h"
#include "specdec/specdec.h"

typedef enum sd_synth_tokenizer {
    SD_SYNTH_TOKENIZER_NONE = 0, /* no tokenizer metadata (token ids only) */
    SD_SYNTH_TOKENIZER_GPT2,     /* byte-level BPE: 256 byte tokens + merges + ChatML specials */
    SD_SYNTH_TOKENIZER_LLAMA,    /* SentencePiece-style: <unk> <s> </s>, <0xXX> bytes, scored pieces */
} sd_synth_tokenizer_t;

typedef struct sd_synth_spec {
    const char *arch; /* "llama" | "qwen2" (qwen2 writes q/k/v biases) */
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    int head_dim;           /* 0 = n_embd / n_head */
    float rope_base, norm_eps;
    sd_dtype_t weight_type; /* attention and MLP matrices */
    sd_dtype_t embd_type;   /* token embedding */
    sd_dtype_t output_type; /* output head */
    int tied_embeddings;    /* 1: no output.weight */
    sd_synth_tokenizer_t tokenizer; /* GPT2/LLAMA need n_vocab >= 300 */
    const char *chat_template; /* tokenizer.chat_template; NULL: ChatML for GPT2, none for LLAMA */
    uint64_t seed;
    float weight_scale;     /* std of the random weights; 0 = 0.02 */
} sd_synth_spec_t;

/* A small llama-shaped default (2 layers, 64 dims, GQA 4/2, vocab 320, F32, gpt2 tokenizer). */
void sd_synth_spec_default(sd_synth_spec_t *spec);
sd_status_t sd_synth_write_file(const sd_synth_spec_t *spec, const char *path);
sd_status_t sd_synth_write_buffer(const sd_synth_spec_t *spec, void **out, size_t *size);

#endif
