/* The CUDA side of the kernels, seen from C. Built from kernels/cuda/ when nvcc is found;
 * otherwise kernels/cuda_stub.c answers SD_ERR_NOT_BUILT (callers never #ifdef). */
#ifndef SPECDEC_KERNELS_CUDA_H
#define SPECDEC_KERNELS_CUDA_H

#include <stddef.h>

#include "specdec/specdec.h"

typedef struct sd_cuda_device_info {
    int index;
    char name[256];
    int cc_major, cc_minor;
    size_t total_memory, free_memory;
    int multiprocessors;
} sd_cuda_device_info_t;

/* 1 if this build has CUDA support compiled in. */
int sd_cuda_built(void);
/* Number of usable devices: 0 with no GPU or no driver (not an error);
 * SD_ERR_NOT_BUILT without CUDA support. */
sd_status_t sd_cuda_device_count(int *count);
sd_status_t sd_cuda_device_info(int index, sd_cuda_device_info_t *out);
/* Runs a small kernel on the device and checks its result and the cuBLAS/cuRAND
 * handles (the health check before a model is placed on the device). */
sd_status_t sd_cuda_self_test(int index);

#endif
