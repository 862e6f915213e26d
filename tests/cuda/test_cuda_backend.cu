/* The CUDA backend against the CUDA runtime's per-thread state (CUDA C++, for the runtime
 * calls): an error another module left for cudaGetLastError on this thread is not the
 * backend's, and stays for its owner. */
#include <criterion/criterion.h>
#include <cuda_runtime.h>

extern "C" {
#include "kernels/backend_impl.h"
#include "kernels/cuda.h"
}

Test(cuda_backend, an_error_another_module_left_is_not_the_backends, .timeout = 60)
{
    int n = 0;
    if (sd_cuda_device_count(&n) != SD_OK || n == 0) cr_skip_test("no CUDA device on this machine");
    sd_backend_t *be = NULL;
    cr_assert_eq(sd_backend_cuda_create(0, 0.5, &be), SD_OK, "%s", sd_last_error());
    float host[64], back[64];
    for (int i = 0; i < 64; i++) host[i] = (float)i - 20.0f;
    float *d = (float *)be->ops->alloc(be, sizeof host);
    cr_assert_not_null(d, "%s", sd_last_error());
    be->ops->upload(be, d, host, sizeof host);
    cr_assert_eq(be->ops->sync(be), SD_OK, "%s", sd_last_error());

    cr_assert_neq(cudaSetDevice(1 << 20), cudaSuccess, "another module's failed call");
    be->ops->add(be, d, d, 64);
    be->ops->download(be, back, d, sizeof back);
    sd_status_t st = be->ops->sync(be);
    cr_assert_eq(st, SD_OK, "the backend took another module's error: %s", sd_last_error());
    for (int i = 0; i < 64; i++) cr_assert_eq(back[i], 2.0f * host[i], "element %d", i);
    cr_assert_eq(cudaGetLastError(), cudaErrorInvalidDevice, "the error is still there for its owner");

    be->ops->release(be, d);
    sd_backend_destroy(be);
}
