/* The intra allreduce hang regression (tests/support/comm_hang.h) at 100,000 steps:
 * data-dependent sizes across the one-shot/two-shot threshold and the slot chunking,
 * random per-rank jitter, every result checked; 2 and 4 ranks. */
#include <criterion/criterion.h>
#include <unistd.h>

#include "support/comm_hang.h"

Test(comm_hang_slow, intra_2_ranks_100000_steps, .timeout = 1800)
{
    sd_hang_check(2, 100000, (uint64_t)getpid(), 1500);
}

Test(comm_hang_slow, intra_4_ranks_100000_steps, .timeout = 1800)
{
    sd_hang_check(4, 100000, (uint64_t)getpid() * 31u, 1500);
}
