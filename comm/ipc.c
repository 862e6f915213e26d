/* The CUDA IPC allreduce over a communicator (contract: comm/ipc.h). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "comm/ipc.h"
#include "core/clock.h"

#define IPC_DRAIN_S 2.0 /* how long an aborted IPC kernel gets to exit */

sd_status_t sd_ipc_setup(sd_comm_t *c, int device, void *stream, sd_ipc_gather_fn gather,
                         sd_ipc_t **out)
{
    *out = NULL;
    if (c->size > SD_IPC_MAX_RANKS)
        return sd_set_error(SD_ERR_INVALID_ARG, "the CUDA IPC allreduce takes at most %d ranks; "
                                                "group '%s' has %d",
                            SD_IPC_MAX_RANKS, c->group, c->size);
    sd_ipc_t *s = NULL;
    sd_ipc_hello_t me = {0}, all[SD_IPC_MAX_RANKS];
    sd_status_t made = sd_ipc_create(device, stream, &s, &me);
    if (made != SD_OK) me.sms = 0; /* tells the peers, who fail too instead of waiting */
    sd_status_t st = gather(c, &me, sizeof me, all);
    for (int q = 0; st == SD_OK && q < c->size; q++)
        if (all[q].sms <= 0)
            st = q == c->rank ? made
                              : sd_set_error(SD_ERR_DEVICE, "group '%s': rank %d could not set up "
                                                            "its CUDA IPC region", c->group, q);
    if (st == SD_OK) st = sd_ipc_connect(s, c->rank, c->size, all);
    if (st != SD_OK) {
        sd_ipc_destroy(s, 0);
        return st;
    }
    *out = s;
    return SD_OK;
}

sd_status_t sd_ipc_launch(sd_comm_t *c, sd_ipc_t *s, void *buf, size_t count,
                          sd_comm_dtype_t dt, void *stream)
{
    return sd_ipc_enqueue(s, buf, count, (sd_gpu_dtype_t)dt, (uint64_t)c->timeout_ms * 1000000u,
                          stream);
}

sd_status_t sd_ipc_status(const sd_comm_t *c, const sd_ipc_t *s)
{
    static const char *const phases[] = {"copy-in", "reduce-scatter"};
    uint64_t w = sd_ipc_error(s);
    if (sd_ipc_error_code(w) == SD_IPC_ERR_NONE) return SD_OK;
    char why[96];
    if (sd_ipc_error_code(w) == SD_IPC_ERR_DEADLINE)
        snprintf(why, sizeof why, "hit its device deadline (%d ms)", c->timeout_ms);
    else
        snprintf(why, sizeof why, "was aborted by the host");
    return sd_set_error(SD_ERR_COMM_TIMEOUT,
                        "group '%s' rank %d: the CUDA IPC allreduce kernel (launch %u) %s at the "
                        "%s barrier, waiting for rank %d",
                        c->group, c->rank, (unsigned)(w & 0xffffffffu), why,
                        phases[sd_ipc_error_phase(w) & 1], sd_ipc_error_rank(w));
}

static sd_status_t wait_launches(sd_comm_t *c, sd_ipc_t *s, void *stream);

/* Budget of the running op: nanoseconds left to its deadline (at least 1). */
static uint64_t budget_ns(const sd_comm_t *c)
{
    double left = c->deadline - sd_now();
    return left > 1e-9 ? (uint64_t)(left * 1e9) : 1;
}

sd_status_t sd_ipc_allreduce_wait(sd_comm_t *c, sd_ipc_t *s, void *buf, size_t count,
                                  sd_comm_dtype_t dt, void *stream)
{
    SD_CHECK(sd_ipc_enqueue(s, buf, count, (sd_gpu_dtype_t)dt, budget_ns(c), stream));
    return wait_launches(c, s, stream);
}

sd_status_t sd_ipc_allreduce_staged(sd_comm_t *c, sd_ipc_t *s, void *buf, size_t count,
                                    sd_comm_dtype_t dt, void *stream)
{
    size_t bytes = count * sd_comm_dtype_size(dt);
    void *dev = buf;
    int staged = !sd_ipc_is_device(buf);
    if (staged) SD_CHECK(sd_ipc_stage(s, buf, bytes, 0, stream, &dev));
    SD_CHECK(sd_ipc_allreduce_wait(c, s, dev, count, dt, stream));
    return staged ? sd_ipc_stage(s, buf, bytes, 1, stream, &dev) : SD_OK;
}

/* Wait for the launches on stream: the host polls the deadline and abort flag; when it
 * gives up it sets the abort word and gives the kernel IPC_DRAIN_S to exit. */
static sd_status_t wait_launches(sd_comm_t *c, sd_ipc_t *s, void *stream)
{
    unsigned spins = 0;
    sd_status_t st = SD_OK;
    double drain_until = 0;
    int q;
    while ((q = sd_ipc_query(stream)) == 0) {
        if (st == SD_OK) {
            st = sd_comm_wait_step(c, &spins, "the peers' IPC flags");
            if (st != SD_OK) {
                sd_ipc_abort(s);
                drain_until = sd_now() + IPC_DRAIN_S;
            }
        } else if (sd_now() > drain_until) {
            return sd_set_error(SD_ERR_COMM_TIMEOUT,
                                "group '%s' rank %d: allreduce seq %llu: the CUDA IPC kernel did "
                                "not exit %.0f s after the abort",
                                c->group, c->rank, (unsigned long long)c->seq, IPC_DRAIN_S);
        } else {
            sched_yield();
        }
    }
    if (q < 0) return SD_ERR_DEVICE;
    sd_status_t dev = sd_ipc_status(c, s);
    return dev != SD_OK ? dev : st;
}

void sd_ipc_teardown(sd_comm_t *c, sd_ipc_t *s, int healthy)
{
    if (s == NULL) return;
    sd_ipc_close_peers(s);
    int safe = healthy && c->failed == SD_OK && sd_ipc_status(c, s) == SD_OK &&
               sd_comm_barrier(c) == SD_OK;
    sd_ipc_destroy(s, safe);
}
