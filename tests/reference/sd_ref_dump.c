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
 *       writes a small random model (arch llama|qwen2; weight type f32|f16|bf16|q8_0|
 *       q4_0|q4_1|q4_k|q6_k) with the project's GGUF writer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"

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
        {"q4_k", SD_DTYPE_Q4_K}, {"q6_k", SD_DTYPE_Q6_K},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(s, types[i].name) == 0) return *out = types[i].type, 1;
    return 0;
}

static int cmd_synth(int argc, char **argv)
{
    sd_dtype_t type;
    if (argc < 5 || !parse_type(argv[4], &type))
        return fprintf(stderr, "usage: sd_ref_dump synth OUT llama|qwen2 f32|f16|bf16|q8_0|q4_0|q4_1|q4_k|q6_k\n"), 2;
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

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "tokenize") == 0) return cmd_tokenize(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "chat") == 0) return cmd_chat(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "logits") == 0) return cmd_logits(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "synth") == 0) return cmd_synth(argc, argv);
    fprintf(stderr, "usage: sd_ref_dump tokenize|chat|logits|synth ...\n");
    return 2;
}
