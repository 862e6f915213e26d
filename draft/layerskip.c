/* Layer-skip drafter: the shared sequence drafter over the target's first L layers. */
#include <limits.h>
#include <stdio.h>

#include "core/check.h"
#include "draft/layerskip.h"
#include "draft/seq_drafter.h"

/* SD_ERR_INVALID_ARG naming both unless 1 <= n_layers < the target's n_layer. */
static sd_status_t check_layers(const sd_model_t *target, int n_layers)
{
    if (n_layers < 1 || n_layers >= target->hp.n_layer)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "layerskip drafter: L = %d layers must be in [1, n_layer - 1] "
                            "(the target has n_layer = %d)", n_layers, target->hp.n_layer);
    return SD_OK;
}

sd_status_t sd_drafter_layerskip_new(const sd_model_t *target, int n_layers, sd_drafter_t **out)
{
    if (target == NULL || out == NULL)
        return sd_set_error(SD_ERR_INVALID_ARG, "layerskip drafter: target and out must be non-NULL");
    SD_CHECK(check_layers(target, n_layers));
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

/* ---- registry row -------------------------------------------------------------------- */

/* spec's L on target: layerskip_layers, or n_layer / 2 for 0. */
static int layers_on(const sd_model_t *target, const sd_spec_config_t *spec)
{
    return spec->layerskip_layers != 0 ? spec->layerskip_layers : target->hp.n_layer / 2;
}

sd_status_t sd_drafter_layerskip_parse(const char *text, const char *arg, sd_spec_config_t *spec,
                                       const char **model_path)
{
    int L = 0;
    if (arg != NULL)
        SD_CHECK(sd_drafter_parse_int(text, arg, "L", 1, INT_MAX, &L));
    spec->drafter = SD_DRAFTER_LAYERSKIP;
    spec->layerskip_layers = L;
    *model_path = NULL;
    return SD_OK;
}

sd_status_t sd_drafter_layerskip_check(const sd_spec_config_t *spec)
{
    if (spec->layerskip_layers < 0)
        return sd_set_error(SD_ERR_INVALID_ARG,
                            "spec layerskip_layers = %d, must be >= 1 (or 0: n_layer / 2)",
                            spec->layerskip_layers);
    return SD_OK;
}

sd_status_t sd_drafter_layerskip_make(sd_model_t *target, const sd_spec_config_t *spec,
                                      sd_drafter_t **out)
{
    return sd_drafter_layerskip_new(target, layers_on(target, spec), out);
}

int sd_drafter_layerskip_hash_words(const sd_spec_config_t *spec,
                                    int32_t words[SD_DRAFTER_HASH_WORDS])
{
    words[0] = spec->layerskip_layers;
    return 1;
}

sd_status_t sd_drafter_layerskip_text(const sd_spec_config_t *spec, const sd_model_t *target,
                                      char *buf, size_t cap)
{
    int L = target != NULL ? layers_on(target, spec) : spec->layerskip_layers;
    if (target != NULL)
        SD_CHECK(check_layers(target, L));
    if (L == 0)
        snprintf(buf, cap, "layerskip");
    else
        snprintf(buf, cap, "layerskip:%d", L);
    return SD_OK;
}

const sd_model_t *sd_drafter_layerskip_batch_model(const sd_model_t *target,
                                                   const sd_spec_config_t *spec, int *n_layers)
{
    *n_layers = layers_on(target, spec);
    return target;
}
