/* The CUDA side of the kernels, seen from C. Built from kernels/cuda/ when nvcc is found;
 * otherwise kernels/cuda_stub.c answers SD_ERR_NOT_BUILT (callers never #ifdef). */
#ifndef SPECDEC_KERNELS_CUDA_H
#define SPECDEC_KERNELS_CUDA_H

#include <stddef.h>

#include "kernels/backend.h"
#include "specdec/specdec.h"

typedef struct sd_cuda_device_info {
    int index;
    char name[256];
    int cc_major, cc_minor;
    size_t total_memory, free_memory;
    int multiprocessors;
} sd_cuda_device_info_t;

/* 1 if this build has CUDA support compiled in (by nvcc, or in the CUDA host mode). */
int sd_cuda_built(void);
/* 1 in the CUDA host mode: the CUDA sources built as host code, one emulated device that runs
 * kernels on the CPU (docs/cuda.md, "The CUDA host mode"); 0 otherwise. */
int sd_cuda_host_mode(void);
/* Number of usable devices: 0 with no GPU or no driver (not an error);
 * SD_ERR_NOT_BUILT without CUDA support. */
sd_status_t sd_cuda_device_count(int *count);
sd_status_t sd_cuda_device_info(int index, sd_cuda_device_info_t *out);
/* Runs a small kernel on the device and checks its result and the cuBLAS/cuRAND
 * handles (the health check before a model is placed on the device). */
sd_status_t sd_cuda_self_test(int index);
/* Device-to-device copy bandwidth in GB/s (bytes read + written per second, best of reps
 * copies of `bytes`): the memory roofline that decode benchmarks compare against. */
sd_status_t sd_cuda_copy_bandwidth(int index, size_t bytes, int reps, double *gbps);

/* The attention kernel's split-K rule (kernels/cuda/ops.cu), exposed for host tests: the
 * chunk length for a query whose context holds ctx_len positions (a function of ctx_len
 * only: batch invariance), and the partial records reserved for contexts up to
 * max_ctx_len. 0 without CUDA. */
int sd_cuda_attention_chunk_len(int ctx_len);
int sd_cuda_attention_chunk_slots(int max_ctx_len);

/* The matmul and embedding kernels' host side (kernels/cuda/matmul.cu), for host tests:
 * the argument checks the launchers apply (SD_ERR_INVALID_ARG naming the value), the
 * launch geometry, and host mirrors that run the kernels' own decode and accumulation code
 * lane by lane (bit-identical to the device by construction). SD_ERR_NOT_BUILT without
 * CUDA. */
/* 1 for the weight types the matmul and embedding kernels decode (every type a model may
 * load today), 0 for others and without CUDA. */
int sd_cuda_type_supported(sd_dtype_t type);
sd_status_t sd_cuda_matmul_check_args(const sd_weight_t *w, const float *x, int n, const float *y);
sd_status_t sd_cuda_embed_check_args(const sd_weight_t *table, const int32_t *tokens, int n,
                                     const float *out);
void sd_cuda_matmul_geometry(int64_t rows, int n, unsigned grid[3], unsigned block[3]);
sd_status_t sd_cuda_matmul_host(const sd_weight_t *w, const float *x, int n, const float *bias,
                                float *y);
sd_status_t sd_cuda_embed_host(const sd_weight_t *table, const int32_t *tokens, int n, float *out);

#endif
