/* Decode speed against the memory roofline: a random-weight model of a named shape is
 * written with the project's GGUF writer (no download), loaded on a device, and decoded one
 * token per forward; the roofline is the device's measured copy bandwidth divided by the
 * weight bytes one token reads.
 *
 *   roofline [--shape llama7b|smollm2] [--layers L] [--type TYPE] [--device D]
 *            [--tokens N] [-t THREADS] [--keep PATH]
 *
 * Defaults: llama7b (Llama-2-7B: 4096 wide, 32 heads, FFN 11008, vocab 32000, 32 layers),
 * BF16, the default device (cuda:0 when present), 128 tokens. --layers L keeps the shape's
 * width but only L layers (the fraction of roofline per layer is the same; the file is
 * smaller to write). Weight bytes per token count every matrix once (the tied head too) and
 * ignore the KV cache (a few MB at these contexts). Decode runs with CUDA graphs unless
 * SPECDEC_CUDA_GRAPHS=0 (the report says which). Engine-internal API (model/model.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/clock.h"
#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "kernels/cuda.h"

static int set_shape(sd_synth_spec_t *s, const char *name)
{
    sd_synth_spec_default(s);
    s->arch = "llama";
    s->tokenizer = SD_SYNTH_TOKENIZER_NONE;
    s->n_ctx = 4096;
    if (strcmp(name, "llama7b") == 0) {
        s->n_layer = 32, s->n_embd = 4096, s->n_head = 32, s->n_head_kv = 32, s->n_ff = 11008;
        s->n_vocab = 32000;
        return 1;
    }
    if (strcmp(name, "smollm2") == 0) {
        s->n_layer = 30, s->n_embd = 576, s->n_head = 9, s->n_head_kv = 3, s->n_ff = 1536;
        s->n_vocab = 49152, s->tied_embeddings = 1;
        return 1;
    }
    return 0;
}

static int parse_type(const char *v, sd_dtype_t *t)
{
    const sd_dtype_t all[] = {SD_DTYPE_F32,  SD_DTYPE_F16,  SD_DTYPE_BF16, SD_DTYPE_Q8_0,
                              SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q5_0, SD_DTYPE_Q4_K,
                              SD_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcasecmp(v, sd_dtype_name(all[i])) == 0) return *t = all[i], 1;
    return 0;
}

/* Bytes of every weight matrix one decode token reads. */
static double weight_bytes(const sd_model_t *m)
{
    double b = (double)m->output.row_bytes * (double)m->output.rows;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const sd_layer_t *L = &m->layers[il];
        const sd_weight_t *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) b += (double)w[i]->row_bytes * (double)w[i]->rows;
    }
    return b;
}

/* Host memcpy bandwidth (read + write), best of 5 copies of 512 MiB. */
static double host_copy_gbps(void)
{
    size_t bytes = (size_t)512 << 20;
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) return free(a), free(b), 0.0;
    memset(a, 1, bytes), memset(b, 2, bytes);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = sd_now();
        memcpy(b, a, bytes);
        t = sd_now() - t;
        best = t < best ? t : best;
    }
    free(a), free(b);
    return 2.0 * (double)bytes / best / 1e9;
}

/* "on" or "off", and why: the sequence's setting (model/forward.h: sd_seq_t.use_graphs). */
static void describe_graphs(const sd_seq_t *seq, char *buf, size_t cap)
{
    const char *env = getenv("SPECDEC_CUDA_GRAPHS");
    if (seq->use_graphs)
        snprintf(buf, cap, "on (SPECDEC_CUDA_GRAPHS=%s)", env ? env : "unset");
    else if (!sd_backend_has_graphs(seq->model->backend))
        snprintf(buf, cap, "off (the %s backend has none)", sd_backend_name(seq->model->backend));
    else
        snprintf(buf, cap, "off (SPECDEC_CUDA_GRAPHS=%s)", env ? env : "unset");
}

static int fail(const char *what)
{
    fprintf(stderr, "roofline: %s: %s\n", what, sd_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *shape = "llama7b", *device = NULL, *keep = NULL;
    int layers = 0, tokens = 128, threads = 0;
    sd_dtype_t type = SD_DTYPE_BF16;
    sd_synth_spec_t s;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--shape")) shape = v;
        else if (!strcmp(f, "--layers")) layers = atoi(v);
        else if (!strcmp(f, "--tokens")) tokens = atoi(v);
        else if (!strcmp(f, "-t")) threads = atoi(v);
        else if (!strcmp(f, "--device")) device = v;
        else if (!strcmp(f, "--keep")) keep = v;
        else if (!strcmp(f, "--type") && parse_type(v, &type)) continue;
        else return fprintf(stderr, "roofline: bad option %s %s\n", f, v), 2;
    }
    if (!set_shape(&s, shape) || layers < 0 || tokens < 1)
        return fprintf(stderr, "usage: roofline [--shape llama7b|smollm2] [--layers L] [--type T] "
                               "[--device D] [--tokens N] [-t THREADS] [--keep PATH]\n"), 2;
    if (layers > 0) s.n_layer = layers;
    s.weight_type = s.embd_type = s.output_type = type;
    char path[512];
    snprintf(path, sizeof path, "%s", keep ? keep : "/tmp/specdec-roofline.gguf");
    double t0 = sd_now();
    if (sd_synth_write_file(&s, path) != SD_OK) return fail("write the model");
    double t_write = sd_now() - t0;

    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path, p.device = device, p.n_threads = threads, p.n_ctx = tokens + 8;
    sd_model_t *m = NULL;
    if (sd_model_load(&p, &m) != SD_OK) return fail("load");
    sd_model_info_t info;
    sd_model_get_info(m, &info);
    sd_seq_t seq;
    if (sd_seq_init(&seq, m, 0, 1) != SD_OK) return fail("sequence");
    int32_t tok = 1;
    if (sd_forward(&seq, &tok, 1, 0) != SD_OK) return fail("first forward");
    double t = sd_now();
    for (int i = 0; i < tokens; i++) {
        tok = (tok * 7 + 3) % s.n_vocab;
        if (sd_forward(&seq, &tok, 1, 0) != SD_OK) return fail("decode");
    }
    t = sd_now() - t;
    double bytes = weight_bytes(m), gbps = 0.0;
    if (strcmp(info.device, "cuda") == 0) {
        if (sd_cuda_copy_bandwidth(0, (size_t)1 << 30, 10, &gbps) != SD_OK) return fail("bandwidth");
    } else {
        gbps = host_copy_gbps();
    }
    double tok_s = tokens / t, roof = gbps * 1e9 / bytes;
    char graphs[96];
    describe_graphs(&seq, graphs, sizeof graphs);
    printf("shape %s, %d layers, %s weights on %s: %.1f MiB read per token; CUDA graphs %s\n",
           shape, s.n_layer, sd_dtype_name(type), info.device, bytes / 1048576.0, graphs);
    printf("decode %d tokens: %.2f tok/s (%.3f ms/token); copy bandwidth %.1f GB/s; roofline "
           "%.2f tok/s; %.1f%% of roofline (model written in %.1f s)\n",
           tokens, tok_s, 1e3 / tok_s, gbps, roof, 100.0 * tok_s / roof, t_write);
    sd_seq_free(&seq);
    sd_model_free(m);
    if (!keep) remove(path);
    return 0;
}
