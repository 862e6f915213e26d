/* kernels/cuda.h for builds without nvcc: every call says CUDA is not built in. */
#include "cuda.h"
#include "core/check.h"

int sd_cuda_built(void) { return 0; }
int sd_cuda_host_mode(void) { return 0; }
int sd_cuda_type_supported(sd_dtype_t type) { return (void)type, 0; }

static sd_status_t not_built(void)
{
    return sd_set_error(SD_ERR_NOT_BUILT, "this specdec was built without CUDA (no nvcc at configure "
                                          "time, or -DSPECDEC_CUDA=OFF)");
}

sd_status_t sd_cuda_device_count(int *count)
{
    *count = 0;
    return not_built();
}

sd_status_t sd_cuda_device_info(int index, sd_cuda_device_info_t *out)
{
    (void)index, (void)out;
    return not_built();
}

sd_status_t sd_cuda_self_test(int index)
{
    (void)index;
    return not_built();
}

sd_status_t sd_cuda_copy_bandwidth(int index, size_t bytes, int reps, double *gbps)
{
    (void)index, (void)bytes, (void)reps;
    *gbps = 0.0;
    return not_built();
}

int sd_cuda_attention_chunk_len(int ctx_len)
{
    (void)ctx_len;
    return 0;
}

int sd_cuda_attention_chunk_slots(int max_ctx_len)
{
    (void)max_ctx_len;
    return 0;
}

sd_status_t sd_cuda_matmul_check_args(const sd_weight_t *w, const float *x, int n, const float *y)
{
    (void)w, (void)x, (void)n, (void)y;
    return not_built();
}

sd_status_t sd_cuda_embed_check_args(const sd_weight_t *table, const int32_t *tokens, int n,
                                     const float *out)
{
    (void)table, (void)tokens, (void)n, (void)out;
    return not_built();
}

void sd_cuda_matmul_geometry(int64_t rows, int n, unsigned grid[3], unsigned block[3])
{
    (void)rows, (void)n;
    for (int i = 0; i < 3; i++) grid[i] = block[i] = 0;
}

sd_status_t sd_cuda_matmul_host(const sd_weight_t *w, const float *x, int n, const float *bias,
                                float *y)
{
    (void)w, (void)x, (void)n, (void)bias, (void)y;
    return not_built();
}

sd_status_t sd_cuda_embed_host(const sd_weight_t *table, const int32_t *tokens, int n, float *out)
{
    (void)table, (void)tokens, (void)n, (void)out;
    return not_built();
}

sd_status_t sd_backend_cuda_create(int device, double memory_fraction, sd_backend_t **out)
{
    (void)device, (void)memory_fraction;
    *out = NULL;
    return not_built();
}

sd_status_t sd_backend_cuda_memory(sd_backend_t *be, size_t *used, size_t *cap)
{
    (void)be;
    *used = *cap = 0;
    return not_built();
}
