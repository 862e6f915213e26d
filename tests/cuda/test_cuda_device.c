/* The CUDA device probe and self-test. Skips cleanly without a GPU. */
#include <criterion/criterion.h>

#include "kernels/cuda.h"

static int device_count_or_skip(void)
{
    int n = 0;
    sd_status_t s = sd_cuda_device_count(&n);
    if (s == SD_ERR_NOT_BUILT) cr_skip_test("built without CUDA");
    cr_assert_eq(s, SD_OK, "device count: %s: %s", sd_status_string(s), sd_last_error());
    if (n == 0) cr_skip_test("no CUDA device on this machine");
    return n;
}

Test(cuda_device, info_describes_device_0, .timeout = 60)
{
    device_count_or_skip();
    sd_cuda_device_info_t info;
    cr_assert_eq(sd_cuda_device_info(0, &info), SD_OK, "%s", sd_last_error());
    cr_assert(info.name[0] != '\0');
    cr_assert(info.cc_major >= 5, "compute capability %d.%d", info.cc_major, info.cc_minor);
    cr_assert(info.total_memory > 0 && info.free_memory <= info.total_memory);
}

Test(cuda_device, bad_index_is_a_clear_error, .timeout = 60)
{
    int n = device_count_or_skip();
    sd_cuda_device_info_t info;
    cr_assert_eq(sd_cuda_device_info(n, &info), SD_ERR_INVALID_ARG);
    cr_assert(strstr(sd_last_error(), "does not exist") != NULL, "%s", sd_last_error());
}

Test(cuda_device, self_test_passes, .timeout = 120)
{
    device_count_or_skip();
    cr_assert_eq(sd_cuda_self_test(0), SD_OK, "%s", sd_last_error());
}
