/* sd_ref_dump: exposes the C tokenizer and forward to the Python reference checks.
 *   sd_ref_dump tokenize MODEL CORPUS [--special]
 *       CORPUS holds records "<decimal byte length>\n<bytes>\n"; prints per record
 *       "ids: <ids>" and "hex: <hex of the bytes decoded from those ids>".
 *   sd_ref_dump chat MODEL CORPUS [--special]
 *       CORPUS holds conversations "<message count>\n" then per message "<role>\n<decimal
 *       byte length>\n<bytes>\n"; prints per conversation "ids: <ids>" of sd_chat_tokenize
 *       (generation prompt added, no BOS flag; --special: SD_TOKENIZE_PARSE_SPECIAL).
 *   sd_ref_dump logits MODEL OUT ID [ID ...]
 *       writes the logits of every position, float32 little-endian [n, n_vocab].
 *   sd_ref_dump synth OUT ARCH TYPE
 *       writes a small random model (arch llama|qwen2; weight type: any name of the
 *       table in parse_type) with the project's GGUF writer.
 *   sd_ref_dump codec OUT
 *       writes, per quantized type T, tensor "T.quant" (random floats through the project's
 *       quantizer), "T.raw" (random bytes, f16 fields finite) and, as F32, "T.quant.deq" and
 *       "T.raw.deq": the C dequantization of each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf/gguf.h"
#include "gguf/synthetic.h"
#include "kernels/cpu/quants.h"
#include "model/forward.h"
#include "model/model.h"

static int fail(const char *what, sd_status_t s)
{
    fprintf(stderr, "sd_ref_dump: %s: %s: %s\n", what, sd_status_string(s), sd_last_error());
    return 1;
}

static sd_model_t *load(const char *path)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    sd_model_t *m = NULL;
    sd_status_t s = sd_model_load(&p, &m);
    if (s != SD_OK) fail("load", s);
    return m;
}

/* One corpus record: tokenize, decode back, print both. */
static int dump_record(sd_model_t *m, const char *text, size_t len, int flags)
{
    size_t cap = len + 16, n = 0, out_len = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *bytes = malloc(len * 4 + 64);
    sd_status_t s = sd_tokenize(m, text, len, flags, ids, cap, &n);
    if (s == SD_OK) s = sd_detokenize(m, ids, n, bytes, len * 4 + 64, &out_len);
    if (s == SD_OK) {
        printf("ids:");
        for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
        printf("\nhex: ");
        for (size_t i = 0; i < out_len; i++) printf("%02x", (unsigned char)bytes[i]);
        printf("\n");
    }
    free(ids);
    free(bytes);
    return s == SD_OK ? 0 : fail("tokenize", s);
}

static int cmd_tokenize(int argc, char **argv)
{
    if (argc < 4) return fprintf(stderr, "usage: sd_ref_dump tokenize MODEL CORPUS [--special]\n"), 2;
    int flags = (argc > 4 && strcmp(argv[4], "--special") == 0) ? SD_TOKENIZE_PARSE_SPECIAL : 0;
    FILE *f = fopen(argv[3], "rb");
    if (!f) return perror(argv[3]), 1;
    sd_model_t *m = load(argv[2]);
    int rc = m ? 0 : 1;
    size_t len;
    while (rc == 0 && fscanf(f, "%zu", &len) == 1) {
        fgetc(f); /* '\n' */
        char *text = malloc(len + 1);
        if (!text || fread(text, 1, len, f) != len) {
            fprintf(stderr, "sd_ref_dump: short or oversized record (%zu bytes)\n", len);
            rc = 1;
        } else {
            rc = dump_record(m, text, len, flags);
        }
        fgetc(f); /* '\n' */
        free(text);
    }
    fflush(stdout);
    fclose(f);
    sd_model_free(m);
    return rc;
}

enum { MAX_CHAT = 16 };

/* One conversation of a chat corpus into msgs/texts (texts malloc'd); 0 at the end. */
static int read_conversation(FILE *f, sd_chat_message_t *msgs, char **texts, char roles[][16],
                             size_t *n)
{
    if (fscanf(f, "%zu", n) != 1 || *n > MAX_CHAT) return 0;
    for (size_t i = 0; i < *n; i++) {
        size_t len;
        if (fscanf(f, "%15s %zu", roles[i], &len) != 2) return 0;
        fgetc(f); /* '\n' */
        texts[i] = calloc(len + 1, 1);
        if (!texts[i] || fread(texts[i], 1, len, f) != len) return 0;
        msgs[i] = (sd_chat_message_t){roles[i], texts[i]};
    }
    return 1;
}

static int cmd_chat(int argc, char **argv)
{
    if (argc < 4) return fprintf(stderr, "usage: sd_ref_dump chat MODEL CORPUS [--special]\n"), 2;
    int flags = (argc > 4 && strcmp(argv[4], "--special") == 0) ? SD_TOKENIZE_PARSE_SPECIAL : 0;
    FILE *f = fopen(argv[3], "rb");
    if (!f) return perror(argv[3]), 1;
    sd_model_t *m = load(argv[2]);
    int rc = m ? 0 : 1;
    sd_chat_message_t msgs[MAX_CHAT];
    char *texts[MAX_CHAT] = {0}, roles[MAX_CHAT][16];
    size_t n = 0;
    while (rc == 0 && read_conversation(f, msgs, texts, roles, &n)) {
        size_t need = 0;
        sd_status_t s = sd_chat_tokenize(m, msgs, n, 1, flags, NULL, 0, &need);
        int32_t *ids = malloc((need + 1) * sizeof *ids);
        if (s == SD_ERR_BUFFER_TOO_SMALL && ids) s = sd_chat_tokenize(m, msgs, n, 1, flags, ids, need, &need);
        if (s == SD_OK) {
            printf("ids:");
            for (size_t i = 0; i < need; i++) printf(" %d", ids[i]);
            printf("\n");
        } else {
            rc = fail("chat", s);
        }
        free(ids);
        for (size_t i = 0; i < n; i++) free(texts[i]), texts[i] = NULL;
    }
    for (size_t i = 0; i < MAX_CHAT; i++) free(texts[i]);
    fflush(stdout);
    fclose(f);
    sd_model_free(m);
    return rc;
}

static int cmd_logits(int argc, char **argv)
{
    if (argc < 5) return fprintf(stderr, "usage: sd_ref_dump logits MODEL OUT ID [ID ...]\n"), 2;
    int n = argc - 4;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)strtol(argv[4 + i], NULL, 10);
    sd_model_t *m = load(argv[2]);
    int rc = 1;
    sd_seq_t seq;
    if (m) {
        sd_status_t s = sd_seq_init(&seq, m, n + 1, n);
        if (s == SD_OK) {
            s = sd_forward(&seq, ids, n, 0);
            if (s == SD_OK) {
                FILE *out = fopen(argv[3], "wb");
                size_t count = (size_t)n * (size_t)m->hp.n_vocab;
                rc = !(out && fwrite(seq.logits, sizeof(float), count, out) == count);
                if (out) fclose(out);
                if (rc) perror(argv[3]);
            } else {
                fail("forward", s);
            }
            sd_seq_free(&seq);
        } else {
            fail("seq_init", s);
        }
    }
    sd_model_free(m);
    free(ids);
    return rc;
}

static int parse_type(const char *s, sd_dtype_t *out)
{
    static const struct { const char *name; sd_dtype_t type; } types[] = {
        {"f32", SD_DTYPE_F32},   {"f16", SD_DTYPE_F16},   {"bf16", SD_DTYPE_BF16},
        {"q8_0", SD_DTYPE_Q8_0}, {"q4_0", SD_DTYPE_Q4_0}, {"q4_1", SD_DTYPE_Q4_1},
        {"q4_k", SD_DTYPE_Q4_K}, {"q6_k", SD_DTYPE_Q6_K}, {"q5_0", SD_DTYPE_Q5_0},
        {"q5_1", SD_DTYPE_Q5_1}, {"q2_k", SD_DTYPE_Q2_K}, {"q3_k", SD_DTYPE_Q3_K},
        {"q5_k", SD_DTYPE_Q5_K}, {"iq4_nl", SD_DTYPE_IQ4_NL}, {"iq4_xs", SD_DTYPE_IQ4_XS},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(s, types[i].name) == 0) return *out = types[i].type, 1;
    return 0;
}

static int cmd_synth(int argc, char **argv)
{
    sd_dtype_t type;
    if (argc < 5 || !parse_type(argv[4], &type))
        return fprintf(stderr, "usage: sd_ref_dump synth OUT llama|qwen2 TYPE (f32, q4_k, iq4_xs, ...)\n"), 2;
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.arch = argv[3];
    /* 256-multiples so K-quant blocks fit every matrix row. */
    spec.n_layer = 2, spec.n_embd = 256, spec.n_head = 4, spec.n_head_kv = 2, spec.n_ff = 512;
    spec.n_vocab = 320, spec.n_ctx = 256;
    spec.weight_type = spec.embd_type = spec.output_type = type;
    spec.tied_embeddings = strcmp(argv[3], "qwen2") == 0;
    spec.seed = 1234;
    sd_status_t s = sd_synth_write_file(&spec, argv[2]);
    return s == SD_OK ? 0 : fail("synth", s);
}

/* Byte offsets of the f16 fields of a block of `type` (-1 ends the list). */
static const int *f16_fields(sd_dtype_t type)
{
    static const int at0[] = {0, -1}, at01[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1},
                     q6k[] = {208, -1};
    switch (type) {
    case SD_DTYPE_Q4_1:
    case SD_DTYPE_Q5_1:
    case SD_DTYPE_Q4_K:
    case SD_DTYPE_Q5_K: return at01;
    case SD_DTYPE_Q2_K: return q2k;
    case SD_DTYPE_Q3_K: return q3k;
    case SD_DTYPE_Q6_K: return q6k;
    default: return at0;
    }
}

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

static int cmd_codec(int argc, char **argv)
{
    if (argc < 3) return fprintf(stderr, "usage: sd_ref_dump codec OUT\n"), 2;
    static const sd_dtype_t types[] = {SD_DTYPE_Q8_0, SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q5_0,
                                       SD_DTYPE_Q5_1, SD_DTYPE_IQ4_NL, SD_DTYPE_Q2_K, SD_DTYPE_Q3_K,
                                       SD_DTYPE_Q4_K, SD_DTYPE_Q5_K, SD_DTYPE_Q6_K, SD_DTYPE_IQ4_XS};
    enum { COLS = 1024, ROWS = 16 };
    gguf_writer_t *w = NULL;
    sd_status_t s = gguf_writer_new(&w);
    float *x = malloc(sizeof(float) * COLS * ROWS), *y = malloc(sizeof(float) * COLS * ROWS);
    uint8_t *q = malloc((size_t)COLS * ROWS * 2);
    uint32_t rng = 12345;
    for (size_t t = 0; s == SD_OK && t < sizeof types / sizeof types[0]; t++) {
        sd_dtype_t type = types[t];
        size_t rb = 0, bb = sd_dtype_block_bytes(type);
        sd_dtype_row_bytes(type, COLS, &rb);
        int64_t ne[2] = {COLS, ROWS};
        char name[64], lower[16];
        snprintf(lower, sizeof lower, "%s", sd_dtype_name(type));
        for (char *c = lower; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        for (int raw = 0; raw < 2 && s == SD_OK; raw++) {
            if (raw) {
                for (size_t i = 0; i < rb * ROWS; i++) q[i] = (uint8_t)xorshift(&rng);
                for (size_t b = 0; b < rb * ROWS / bb; b++)
                    for (const int *f = f16_fields(type); *f >= 0; f++) {
                        float v = (float)((int)(xorshift(&rng) % 2001) - 1000) / 500.0f;
                        uint16_t h = sd_f32_to_f16(v);
                        memcpy(q + b * bb + (size_t)*f, &h, 2);
                    }
            } else {
                /* rows of very different magnitudes; one all-zero row, one constant row */
                for (int r = 0; r < ROWS; r++)
                    for (int i = 0; i < COLS; i++) {
                        float u = (float)(xorshift(&rng) % 20001) / 10000.0f - 1.0f;
                        x[r * COLS + i] = r == 0 ? 0.0f : r == 1 ? 0.25f : u * (float)(1 << (r % 8)) * 0.01f;
                    }
                for (int r = 0; r < ROWS; r++) sd_quantize_row(type, x + r * COLS, q + (size_t)r * rb, COLS);
            }
            for (int r = 0; r < ROWS; r++) sd_dequantize_row(type, q + (size_t)r * rb, y + r * COLS, COLS);
            snprintf(name, sizeof name, "%s.%s", lower, raw ? "raw" : "quant");
            s = gguf_writer_add_tensor(w, name, type, 2, ne, q, rb * ROWS);
            snprintf(name, sizeof name, "%s.%s.deq", lower, raw ? "raw" : "quant");
            if (s == SD_OK) s = gguf_writer_add_tensor(w, name, SD_DTYPE_F32, 2, ne, y, sizeof(float) * COLS * ROWS);
        }
    }
    if (s == SD_OK) s = gguf_writer_write_file(w, argv[2]);
    gguf_writer_free(w);
    free(x);
    free(y);
    free(q);
    return s == SD_OK ? 0 : fail("codec", s);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "tokenize") == 0) return cmd_tokenize(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "chat") == 0) return cmd_chat(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "logits") == 0) return cmd_logits(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "synth") == 0) return cmd_synth(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "codec") == 0) return cmd_codec(argc, argv);
    fprintf(stderr, "usage: sd_ref_dump tokenize|chat|logits|synth|codec ...\n");
    return 2;
}
