/* Internal to model/: the backend a model computes on and where its weights live. */
#ifndef SPECDEC_MODEL_PLACE_H
#define SPECDEC_MODEL_PLACE_H

#include "model/model.h"

/* model/place.c: the backend named by p->device (see sd_model_params_t), and the
 * upload of every weight, norm and bias to it when it is a device backend (views into the
 * file are replaced by device pointers; SD_ERR_OUT_OF_MEMORY with the numbers when they
 * do not fit). Without ctx_given (p->n_ctx == 0) the default KV-cache length shrinks to
 * what the device has left. */
sd_status_t sd_model_create_backend(sd_model_t *m, const sd_model_params_t *p);
sd_status_t sd_model_place_weights(sd_model_t *m, int ctx_given);
/* SD_ERR_UNSUPPORTED_TYPE naming the first matrix (tensor name and type) whose type type_ok
 * refuses; sd_model_place_weights applies it with sd_cuda_type_supported before any upload. */
sd_status_t sd_model_check_weight_types(sd_model_t *m, int (*type_ok)(sd_dtype_t));
void sd_model_release_weights(sd_model_t *m);

#endif
