/* Layer-skip drafter: the shared sequence drafter over the target's first L layers. */
#include "draft/layerskip.h"
#include "draft/seq_drafter.h"

sd_status_t sd_drafter_layerskip_new(const sd_model_t *target, int n_layers, sd_drafter_t **out)
{
    if (target == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "layerskip drafter: target and out must be non-NULL");
    if (n_layers < 1 || n_layers >= target->hp.n_layer)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "layerskip drafter: L = %d layers must be in [1, n_layer - 1] "
                            "(the target has n_layer = %d)", n_layers, target->hp.n_layer);
    return sd_seq_drafter_new(SD_SEQ_DRAFTER_LAYERSKIP, target, n_layers, out);
}

uint64_t sd_drafter_layerskip_forwards(const sd_drafter_t *d)
{
    return sd_seq_drafter_is(d, SD_SEQ_DRAFTER_LAYERSKIP) ? sd_seq_drafter_forwards(d) : 0;
}

sd_status_t sd_drafter_layerskip_share_kv(sd_drafter_t *d, sd_seq_t *target_seq)
{
    if (!sd_seq_drafter_is(d, SD_SEQ_DRAFTER_LAYERSKIP))
        return sd_set_error(SD_ERR_INVALID_ARG, "share KV: %s is not a layerskip drafter",
                            d ? sd_drafter_name(d) : "NULL");
    return sd_seq_drafter_share_kv(d, target_seq);
}
