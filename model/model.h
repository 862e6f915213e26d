/* A model loaded from GGUF: hyper-parameters, this rank's weights (views into the file, or
 * device copies), tokenizer and backend. model/kv_cache.h and model/forward.h compute with it. */
#ifndef SPECDEC_MODEL_MODEL_H
#define SPECDEC_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "tokenizer/tokenizer.h"

typedef struct sd_hparams {
    sd_arch_t arch; /* the id of the model's row in model/arch.c */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    float norm_eps;
    sd_rope_params_t rope;
} sd_hparams_t;

/* This rank's part of a tensor-parallel model (sd_tp_plan in model/tp_plan.h computes it). */
typedef struct sd_tp_shard {
    int rank, size;          /* position in the model's comm (0, 1 without one) */
    int head0, n_head;       /* local query heads [head0, head0 + n_head) */
    int kv_head0, n_head_kv; /* local KV heads [kv_head0, kv_head0 + n_head_kv) */
    int ff0, n_ff;           /* local MLP features [ff0, ff0 + n_ff) */
} sd_tp_shard_t;

/* A layer's weights as this rank computes with them: with TP the local rows of
 * Wq/Wk/Wv/gate/up (and of the biases) and the local columns of Wo/down (shapes below
 * with n_head, n_kv, n_ff the shard's). */
typedef struct sd_layer {
    const float *attn_norm;            /* [n_embd] */
    sd_weight_t wq, wk, wv, wo;        /* [n_head*hd, n_embd] [n_kv*hd, n_embd] x2, [n_embd, n_head*hd] */
    const float *bq, *bk, *bv;         /* qwen2 biases or NULL */
    const float *ffn_norm;             /* [n_embd] */
    sd_weight_t w_gate, w_up, w_down;  /* [n_ff, n_embd] x2, [n_embd, n_ff] */
} sd_layer_t;

struct sd_model {
    gguf_file_t *gguf;
    sd_hparams_t hp;           /* the full model's, whatever the TP size */
    sd_tp_shard_t tp;          /* this rank's heads and MLP features (all of them at TP 1) */
    sd_comm_t *comm;           /* TP group of size > 1, or NULL; not owned */
    void *tp_copies;           /* the local columns of every Wo and down (TP > 1), owned */
    const sd_arch_info_t *arch; /* the architecture's row (model/arch.h) */
    const char *arch_name;     /* arch->name (sd_model_get_info reports it) */
    char *name;                /* general.name or "" */
    sd_weight_t tok_embd;      /* [n_vocab, n_embd] */
    const float *output_norm;  /* [n_embd] */
    sd_weight_t output;        /* [n_vocab, n_embd]; == tok_embd when tied */
    sd_layer_t *layers;        /* [n_layer] */
    float *f32_copies;         /* norms/biases stored as F16/BF16 in the file, converted */
    sd_tokenizer_t *tokenizer; /* NULL when the file has none */
    sd_backend_t *backend;
    int cuda_device;           /* the CUDA device the backend computes on, or -1 (CPU) */
    void **device_bufs;        /* device copies of the weights (device backends), owned */
    int n_device_bufs;
    int n_ctx;                 /* KV-cache length for sequences of this model */
    int n_threads;
};

/* Build a model over an open GGUF file (p->path is ignored). On SD_OK the model owns
 * `f` (sd_model_free closes it); on failure the caller still owns it. */
sd_status_t sd_model_load_gguf(gguf_file_t *f, const sd_model_params_t *p, sd_model_t **out);

#endif
