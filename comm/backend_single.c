/* One rank: nothing to exchange, so no copies (allgather copies only when not in place). */
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"

static sd_status_t single_make(const char *group, int world_rank, sd_comm_t **out);

static sd_status_t single_allreduce(sd_comm_t *c, void *buf, size_t count, sd_comm_dtype_t dt)
{
    return SD_OK;
}

static sd_status_t single_allgather(sd_comm_t *c, const void *send, size_t bytes, void *recv)
{
    if (send != recv) memmove(recv, send, bytes);
    return SD_OK;
}

static sd_status_t single_broadcast(sd_comm_t *c, void *buf, size_t bytes, int root)
{
    return SD_OK;
}

static sd_status_t single_barrier(sd_comm_t *c) { return SD_OK; }

static sd_status_t single_split_first(sd_comm_t *c, int n, sd_comm_t **out)
{
    return single_make("first1", c->world_rank, out);
}

static void single_destroy(sd_comm_t *c)
{
    sd_comm_teardown(c);
    free(c);
}

static const sd_comm_ops_t single_ops = {
    .name = "single",
    .allreduce_sum = single_allreduce,
    .allgather = single_allgather,
    .broadcast = single_broadcast,
    .barrier = single_barrier,
    .split_first = single_split_first,
    .destroy = single_destroy,
};

static sd_status_t single_make(const char *group, int world_rank, sd_comm_t **out)
{
    *out = NULL;
    sd_comm_t *c = calloc(1, sizeof *c);
    SD_ALLOC_CHECK(c, sizeof *c, "a communicator");
    sd_status_t st = sd_comm_setup(c, &single_ops, NULL, 0, 1, group, world_rank);
    if (st != SD_OK) {
        free(c);
        return st;
    }
    *out = c;
    return SD_OK;
}

sd_status_t sd_comm_single_new(sd_comm_t **out)
{
    if (out == NULL) return sd_set_error(SD_ERR_INVALID_ARG, "sd_comm_single_new: NULL out");
    return single_make("world", 0, out);
}
