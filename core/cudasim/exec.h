// Internal to the CUDA host mode: what the runtime (runtime.cc) asks of the executor
// (exec.cc). One kernel launch, run to completion on the calling thread and the helpers.
#ifndef SPECDEC_CORE_CUDASIM_EXEC_H
#define SPECDEC_CORE_CUDASIM_EXEC_H

#include <string>

#include "core/cudasim/sim.h"

namespace sd_sim {

struct kernel_launch {
    std::string name;
    dim3 grid, block;
    size_t shmem;
    std::shared_ptr<const std::function<void()>> body; // one thread's work
};

// Runs every block of k. cudaSuccess, or cudaErrorLaunchFailure with *why naming the kernel,
// block, thread and what went wrong (barrier divergence, a warp operation whose lanes did not
// all arrive, a deadlock, __trap), or cudaErrorInvalidValue for a bad
// SPECDEC_CUDA_SIM_SCHEDULE.
cudaError_t run_kernel(const kernel_launch &k, std::string *why);

} // namespace sd_sim

#endif
