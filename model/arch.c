/* The architecture table (in the style of llama.cpp's llama-arch.cpp): one row per
 * architecture, one name table per tensor naming scheme. */
#include <stdio.h>
#include <string.h>

#include "core/check.h"
#include "core/escape.h"
#include "model/arch.h"

/* llama.cpp's names, shared by llama and qwen2 */
static const char *const llama_tensor_names[SD_ARCH_TENSOR_COUNT] = {
    [SD_ARCH_TENSOR_TOKEN_EMBD] = "token_embd.weight",
    [SD_ARCH_TENSOR_OUTPUT_NORM] = "output_norm.weight",
    [SD_ARCH_TENSOR_OUTPUT] = "output.weight",
    [SD_ARCH_TENSOR_ATTN_NORM] = "blk.%d.attn_norm.weight",
    [SD_ARCH_TENSOR_ATTN_Q] = "blk.%d.attn_q.weight",
    [SD_ARCH_TENSOR_ATTN_K] = "blk.%d.attn_k.weight",
    [SD_ARCH_TENSOR_ATTN_V] = "blk.%d.attn_v.weight",
    [SD_ARCH_TENSOR_ATTN_OUT] = "blk.%d.attn_output.weight",
    [SD_ARCH_TENSOR_ATTN_Q_BIAS] = "blk.%d.attn_q.bias",
    [SD_ARCH_TENSOR_ATTN_K_BIAS] = "blk.%d.attn_k.bias",
    [SD_ARCH_TENSOR_ATTN_V_BIAS] = "blk.%d.attn_v.bias",
    [SD_ARCH_TENSOR_FFN_NORM] = "blk.%d.ffn_norm.weight",
    [SD_ARCH_TENSOR_FFN_GATE] = "blk.%d.ffn_gate.weight",
    [SD_ARCH_TENSOR_FFN_UP] = "blk.%d.ffn_up.weight",
    [SD_ARCH_TENSOR_FFN_DOWN] = "blk.%d.ffn_down.weight",
};

static const sd_arch_info_t arch_table[] = {
    {
        .name = "llama",
        .id = SD_ARCH_LLAMA,
        .qkv_bias = SD_ARCH_BIAS_OPTIONAL,
        .rope = SD_ROPE_NORM, /* GGUF's llama q/k rows are permuted for it */
        .tensors = llama_tensor_names,
    },
    {
        .name = "qwen2",
        .id = SD_ARCH_QWEN2,
        .qkv_bias = SD_ARCH_BIAS_REQUIRED,
        .rope = SD_ROPE_NEOX,
        .tensors = llama_tensor_names,
    },
};

#define N_ARCH (sizeof arch_table / sizeof arch_table[0])

const sd_arch_info_t *sd_arch_table(size_t *n)
{
    *n = N_ARCH;
    return arch_table;
}

sd_status_t sd_arch_find(const char *name, size_t len, const sd_arch_info_t **out)
{
    *out = NULL;
    char known[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < N_ARCH; i++) {
        const char *n = arch_table[i].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) {
            *out = &arch_table[i];
            return SD_OK;
        }
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", n);
        if (used >= sizeof known) used = sizeof known - 1;
    }
    return sd_set_error(SD_ERR_UNSUPPORTED_ARCH, "general.architecture '%s' is not supported (%s)",
                        SD_ESC(name, len), known);
}

const char *sd_arch_tensor_name(const sd_arch_info_t *a, sd_arch_tensor_t t, int il, char *buf,
                                size_t cap)
{
    snprintf(buf, cap, a->tensors[t], il);
    return buf;
}
