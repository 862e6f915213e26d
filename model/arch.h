/* The architecture table (model/arch.c): one row per GGUF `general.architecture` the loader
 * knows, with every fact that differs between architectures. The loader reads the row;
 * nothing else compares architectures. */
#ifndef SPECDEC_MODEL_ARCH_H
#define SPECDEC_MODEL_ARCH_H

#include <stddef.h>

#include "kernels/backend.h"

/* Ids start at 1 so that a row missing one is caught (tests/test_model_arch.c). */
typedef enum sd_arch { SD_ARCH_LLAMA = 1, SD_ARCH_QWEN2 = 2 } sd_arch_t;

typedef enum sd_arch_bias {
    SD_ARCH_BIAS_OPTIONAL = 1, /* attention q/k/v biases are loaded when the file has them */
    SD_ARCH_BIAS_REQUIRED = 2, /* a file without them is SD_ERR_BAD_MODEL naming the tensor */
} sd_arch_bias_t;

/* The tensors a model is built from; the first SD_ARCH_TENSOR_FIRST_LAYER are the model's,
 * the rest exist once per layer. */
typedef enum sd_arch_tensor {
    SD_ARCH_TENSOR_TOKEN_EMBD = 0,
    SD_ARCH_TENSOR_OUTPUT_NORM,
    SD_ARCH_TENSOR_OUTPUT, /* optional: absent means tied to the token embedding */
    SD_ARCH_TENSOR_ATTN_NORM,
    SD_ARCH_TENSOR_ATTN_Q,
    SD_ARCH_TENSOR_ATTN_K,
    SD_ARCH_TENSOR_ATTN_V,
    SD_ARCH_TENSOR_ATTN_OUT,
    SD_ARCH_TENSOR_ATTN_Q_BIAS,
    SD_ARCH_TENSOR_ATTN_K_BIAS,
    SD_ARCH_TENSOR_ATTN_V_BIAS,
    SD_ARCH_TENSOR_FFN_NORM,
    SD_ARCH_TENSOR_FFN_GATE,
    SD_ARCH_TENSOR_FFN_UP,
    SD_ARCH_TENSOR_FFN_DOWN,
    SD_ARCH_TENSOR_COUNT,
    SD_ARCH_TENSOR_FIRST_LAYER = SD_ARCH_TENSOR_ATTN_NORM,
} sd_arch_tensor_t;

/* One row. tensors[t] is tensor t's GGUF name; a per-layer name holds one "%d" (the layer). */
typedef struct sd_arch_info {
    const char *name; /* general.architecture, also the prefix of its {arch}.* metadata */
    sd_arch_t id;
    sd_arch_bias_t qkv_bias;
    sd_rope_style_t rope;
    const char *const *tensors; /* [SD_ARCH_TENSOR_COUNT] */
} sd_arch_info_t;

/* The table: *n rows. */
const sd_arch_info_t *sd_arch_table(size_t *n);

/* The row named name[len] (not NUL-terminated), or SD_ERR_UNSUPPORTED_ARCH naming it and
 * listing the known names. */
sd_status_t sd_arch_find(const char *name, size_t len, const sd_arch_info_t **out);

/* Tensor t's name for layer il (il ignored for the model's tensors), written to buf[cap]. */
const char *sd_arch_tensor_name(const sd_arch_info_t *a, sd_arch_tensor_t t, int il, char *buf,
                                size_t cap);

#endif
