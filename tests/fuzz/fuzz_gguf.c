/* Fuzz target: a GGUF file (the whole input), through every layer that reads one — the
 * reader (gguf/reader.c), the typed getters, the tokenizer built from its metadata, the model
 * loader (architecture, hyper-parameters, tensor shapes, placement) and, when it loads, one
 * forward pass of two tokens. Properties:
 *   - a refusal is one of the documented statuses with a message that names something and
 *     holds no terminal control bytes (keys and strings come from the file);
 *   - an accepted file keeps every key, string and tensor inside the input (every tensor
 *     byte is read: ASan sees an out-of-range one), lookups find what was listed;
 *   - a model that loads computes a forward pass without touching memory outside its
 *     tensors (the shapes the loader accepted are the shapes the kernels use), and its
 *     tokenizer encodes and decodes without failing.
 * Seeds (tests/fuzz/gguf/): small files from the project's writer and synthetic models. */
#include <math.h>

#include "core/check.h"
#include "fuzz/fuzz.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"

static int known_status(sd_status_t s)
{
    return s == SD_ERR_BAD_MODEL || s == SD_ERR_UNSUPPORTED_TYPE || s == SD_ERR_UNSUPPORTED_ARCH ||
           s == SD_ERR_TP_PLAN || s == SD_ERR_NO_TOKENIZER || s == SD_ERR_OUT_OF_MEMORY ||
           s == SD_ERR_INVALID_ARG;
}

static void check_refusal(const char *what, sd_status_t s)
{
    const char *msg = sd_last_error();
    FUZZ_NOTE("%s: %s: %s", what, sd_status_string(s), msg);
    FUZZ_CHECK(known_status(s), "%s: unexpected status %s (%s)", what, sd_status_string(s), msg);
    FUZZ_CHECK(msg[0] != '\0', "%s: %s without a message", what, sd_status_string(s));
    FUZZ_CHECK(!fuzz_has_terminal_control(msg, strlen(msg)), "%s: control bytes in '%s'", what,
               msg);
}

static int inside(const gguf_file_t *f, const void *p, uint64_t n)
{
    const uint8_t *b = p;
    return n == 0 || (b >= f->base && n <= f->size && b - f->base <= (ptrdiff_t)(f->size - n));
}

static volatile uint8_t sink;

static void check_file(const gguf_file_t *f)
{
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv_t *kv = &f->kv[i];
        FUZZ_CHECK(inside(f, kv->key.data, kv->key.len), "key %llu outside the file",
                   (unsigned long long)i);
        FUZZ_CHECK(kv->type < GGUF_TYPE_COUNT, "key %llu: type %d", (unsigned long long)i, kv->type);
        if (kv->type == GGUF_TYPE_STRING)
            FUZZ_CHECK(inside(f, kv->v.str.data, kv->v.str.len), "string value outside the file");
        if (kv->type == GGUF_TYPE_ARRAY && kv->arr_strs)
            for (uint64_t j = 0; j < kv->arr_n; j++)
                FUZZ_CHECK(inside(f, kv->arr_strs[j].data, kv->arr_strs[j].len),
                           "array string %llu outside the file", (unsigned long long)j);
        if (kv->type == GGUF_TYPE_ARRAY && kv->arr_data && kv->arr_type != GGUF_TYPE_STRING &&
            kv->arr_type != GGUF_TYPE_ARRAY) {
            FUZZ_CHECK(inside(f, kv->arr_data, kv->arr_n * gguf_type_size(kv->arr_type)),
                       "array data outside the file");
            for (uint64_t j = 0; j < kv->arr_n && j < 64; j++)
                sink ^= (uint8_t)gguf_arr_int(kv, j) ^ (uint8_t)(gguf_arr_float(kv, j) > 0);
        }
        /* a key with a NUL inside cannot be looked up by name; others find an entry so named */
        if (!memchr(kv->key.data, 0, kv->key.len) && kv->key.len < 256) {
            char name[256];
            memcpy(name, kv->key.data, kv->key.len);
            name[kv->key.len] = '\0';
            const gguf_kv_t *found = gguf_find_kv(f, name);
            FUZZ_CHECK(found && gguf_str_eq(found->key, name), "key '%s' listed, not found", name);
            uint32_t u;
            int32_t i32;
            float x;
            bool b;
            gguf_str_t str;
            const gguf_kv_t *arr;
            (void)gguf_get_u32(f, name, &u), (void)gguf_get_i32(f, name, &i32);
            (void)gguf_get_f32(f, name, &x), (void)gguf_get_bool(f, name, &b);
            (void)gguf_get_str(f, name, &str), (void)gguf_get_arr(f, name, GGUF_TYPE_COUNT, &arr);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor_t *t = &f->tensors[i];
        FUZZ_CHECK(inside(f, t->name.data, t->name.len), "tensor name %llu outside the file",
                   (unsigned long long)i);
        FUZZ_CHECK(inside(f, t->data, t->nbytes), "tensor %llu data [%zu bytes] outside the file",
                   (unsigned long long)i, t->nbytes);
        uint8_t x = 0;
        for (size_t j = 0; j < t->nbytes; j++) x ^= ((const uint8_t *)t->data)[j];
        sink ^= x;
    }
}

static void exercise_model(sd_model_t *m)
{
    sd_model_info_t info;
    FUZZ_CHECK(sd_model_get_info(m, &info) == SD_OK, "get_info: %s", sd_last_error());
    if (m->tokenizer) {
        int32_t ids[64];
        size_t n = 0, len = 0;
        static const char text[] = "Hello, world! <|im_start|> 123";
        sd_status_t s = sd_tokenize(m, text, sizeof text - 1, SD_TOKENIZE_ADD_BOS, ids, 64, &n);
        /* a SentencePiece vocabulary without a byte token or <unk> for some byte is refused
         * when that byte is met (SD_ERR_BAD_MODEL naming it) */
        if (s != SD_OK && s != SD_ERR_BUFFER_TOO_SMALL) check_refusal("tokenize", s);
        char out[1024];
        if (s == SD_OK) {
            s = sd_detokenize(m, ids, n, out, sizeof out, &len);
            FUZZ_CHECK(s == SD_OK || s == SD_ERR_BUFFER_TOO_SMALL, "detokenize: %s",
                       sd_last_error());
        }
        sd_chat_message_t msg = {"user", "hi"};
        s = sd_chat_apply(m, &msg, 1, 1, out, sizeof out, &len);
        FUZZ_CHECK(s == SD_OK || s == SD_ERR_BUFFER_TOO_SMALL || s == SD_ERR_INVALID_ARG,
                   "chat: %s: %s", sd_status_string(s), sd_last_error());
    }
    sd_seq_t seq;
    sd_status_t s = sd_seq_init(&seq, m, 16, 2);
    if (s != SD_OK) return check_refusal("sd_seq_init", s);
    int32_t toks[2] = {0, info.n_vocab - 1};
    s = sd_forward(&seq, toks, 2, 0);
    FUZZ_CHECK(s == SD_OK, "forward of a loaded model: %s: %s", sd_status_string(s),
               sd_last_error());
    sink ^= (uint8_t)isnan(seq.logits[info.n_vocab]);
    sd_seq_free(&seq);
    FUZZ_NOTE("loaded %s (%d layers, %d embd, vocab %d, %s), forward ok", info.arch, info.n_layer,
              info.n_embd, info.n_vocab, m->tokenizer ? "tokenizer" : "no tokenizer");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("SPECDEC_LOG", "error", 1); /* "template not recognised" and such, per input */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file_t *f = NULL;
    sd_clear_error();
    sd_status_t s = gguf_open_buffer(data, size, &f);
    if (s != SD_OK) {
        FUZZ_CHECK(f == NULL, "a refused file left a handle");
        check_refusal("gguf_open_buffer", s);
        return 0;
    }
    check_file(f);
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.n_threads = 1;
    p.n_ctx = 16; /* the file's context length may be anything: no huge KV cache per input */
    p.device = "cpu";
    sd_model_t *m = NULL;
    s = sd_model_load_gguf(f, &p, &m);
    if (s != SD_OK) {
        FUZZ_CHECK(m == NULL, "a refused model left a handle");
        check_refusal("sd_model_load_gguf", s);
        gguf_close(f);
        return 0;
    }
    exercise_model(m);
    sd_model_free(m); /* closes f */
    return 0;
}
