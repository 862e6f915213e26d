/* The drafter registry (draft/registry.h): one row per drafter kind. */
#include "draft/callback.h"
#include "draft/layerskip.h"
#include "draft/model_drafter.h"
#include "draft/ngram.h"
#include "draft/registry.h"
#include "draft/xvocab.h"

const sd_drafter_row_t sd_drafter_registry[] = {
    {
        .name = "ngram",
        .kind = SD_DRAFTER_NGRAM,
        .usage = "ngram[:N]",
        .parse = sd_drafter_ngram_parse,
        .check = sd_drafter_ngram_check,
        .make = sd_drafter_ngram_make,
        .hash_words = sd_drafter_ngram_hash_words,
        .text = sd_drafter_ngram_text,
        .proposes_cheaply = 1,
    },
    {
        .name = "layerskip",
        .kind = SD_DRAFTER_LAYERSKIP,
        .usage = "layerskip[:L]",
        .parse = sd_drafter_layerskip_parse,
        .check = sd_drafter_layerskip_check,
        .make = sd_drafter_layerskip_make,
        .hash_words = sd_drafter_layerskip_hash_words,
        .text = sd_drafter_layerskip_text,
        .batch_model = sd_drafter_layerskip_batch_model,
    },
    {
        .name = "model",
        .kind = SD_DRAFTER_MODEL,
        .usage = "model:PATH | PATH",
        .takes_any_text = 1,
        .parse = sd_drafter_model_parse,
        .check = sd_drafter_model_check,
        .make = sd_drafter_model_make,
        .hash_words = sd_drafter_model_hash_words,
        .text = sd_drafter_model_text,
        .batch_model = sd_drafter_model_batch_model,
    },
    {
        .name = "xvocab",
        .kind = SD_DRAFTER_XVOCAB,
        .usage = "xvocab:PATH",
        .parse = sd_drafter_xvocab_parse,
        .check = sd_drafter_model_check,
        .make = sd_drafter_xvocab_make,
        .hash_words = sd_drafter_model_hash_words,
        .text = sd_drafter_xvocab_text,
        .batch_model = sd_drafter_model_batch_model,
    },
    {
        .name = "callback",
        .kind = SD_DRAFTER_CALLBACK,
        .usage = "callback",
        .parse = sd_drafter_callback_parse,
        .check = sd_drafter_callback_check,
        .make = sd_drafter_callback_make,
        .hash_words = sd_drafter_callback_hash_words,
        .text = sd_drafter_callback_text,
        .proposes_cheaply = 1,
    },
};

const int sd_drafter_registry_len = (int)(sizeof sd_drafter_registry / sizeof sd_drafter_registry[0]);
