/* Tensor parallelism on CUDA: ranks as processes sharing device 0, a small synthetic llama
 * (F32) at TP 2, 3 and 4. Over the cuda_ipc backend (the IPC allreduce kernels on the
 * model's stream, inside its CUDA graphs) every rank's logits are the same bits; they equal
 * bit for bit the same model over the CPU intra comm (the host-staged fallback, graphs off:
 * both sum in rank order in f32); and they are within the CPU-vs-CUDA tolerance (1e-4 of
 * max|logit|, test_cuda_engine's for F32) of the CPU backend's TP forward. Not bit-equal to
 * TP 1: the split dot products sum in another order (docs/design-notes.md, "Tensor
 * parallelism"). In the CUDA host mode the regions are shared between the rank processes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "comm/comm.h"
#include "core/check.h"
#include "gguf/synthetic.h"
#include "kernels/cuda.h"
#include "model/forward.h"
#include "model/model.h"
#include "gpu_ranks.h"
#include "support/test_util.h"

#define V 64
#define N_PROMPT 6
#define N_ROWS (N_PROMPT + 2) /* the prompt, then two single-token steps */
#define RANKS_TIMEOUT_S 300

typedef enum { VIA_CUDA_IPC, VIA_HOST_COMM, ON_CPU } tp_mode_t;

typedef struct tp_arg {
    const char *path;
    tp_mode_t mode;
} tp_arg_t;

typedef struct tp_out {
    int failed;
    char msg[300];
    float logits[N_ROWS * V];
} tp_out_t;

static int rank_fail(tp_out_t *o, const char *what, sd_status_t st)
{
    snprintf(o->msg, sizeof o->msg, "%s: %s: %s", what, sd_status_string(st), sd_last_error());
    o->failed = 1;
    return 1;
}

static sd_status_t open_comm(int rank, int size, const char *job, tp_mode_t mode, sd_comm_t **c)
{
    sd_comm_t *host = NULL;
    SD_CHECK(sd_comm_intra_new(rank, size, job, &host));
    if (mode != VIA_CUDA_IPC) {
        *c = host;
        return SD_OK;
    }
    return sd_comm_cuda_ipc_new(host, 0, c);
}

/* Logits of the prompt (one forward), then two single-token forwards. */
static int tp_rank(int rank, int size, const char *job, void *arg, void *out, size_t cap)
{
    const tp_arg_t *a = arg;
    tp_out_t *o = out;
    sd_comm_t *c = NULL;
    sd_status_t st = open_comm(rank, size, job, a->mode, &c);
    if (st != SD_OK) return rank_fail(o, "open comm", st);
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = a->path;
    p.n_threads = 1;
    p.n_ctx = 32;
    p.comm = c;
    p.device = a->mode == ON_CPU ? "cpu" : "cuda";
    sd_model_t *m = NULL;
    if ((st = sd_model_load(&p, &m)) != SD_OK) return rank_fail(o, "load", st);
    sd_seq_t s;
    int32_t tok[N_ROWS] = {3, 17, 42, 5, 60, 11, 29, 8};
    if ((st = sd_seq_init(&s, m, 32, N_PROMPT)) != SD_OK) return rank_fail(o, "seq_init", st);
    if ((st = sd_forward(&s, tok, N_PROMPT, 0)) != SD_OK) return rank_fail(o, "prompt", st);
    memcpy(o->logits, s.logits, sizeof(float) * N_PROMPT * V);
    for (int i = N_PROMPT; i < N_ROWS; i++) {
        if ((st = sd_forward(&s, tok + i, 1, 0)) != SD_OK) return rank_fail(o, "step", st);
        memcpy(o->logits + i * V, s.logits, sizeof(float) * V);
    }
    sd_seq_free(&s);
    sd_model_free(m);
    sd_comm_free(c);
    return 0;
}

/* Every rank's logits, after each exited 0 and agreed with rank 0 bit for bit. */
static void run_tp(int size, tp_arg_t *a, float *logits)
{
    sd_test_ranks_t r;
    sd_test_run_ranks(size, tp_rank, a, sizeof(tp_out_t), RANKS_TIMEOUT_S, &r);
    const tp_out_t *o0 = sd_test_rank_out(&r, 0);
    for (int q = 0; q < size; q++) {
        const tp_out_t *o = sd_test_rank_out(&r, q);
        cr_assert(!o->failed && r.codes[q] == 0, "mode %d TP %d rank %d (code %d): %s", a->mode,
                  size, q, r.codes[q], o->msg);
        cr_assert(memcmp(o->logits, o0->logits, sizeof o->logits) == 0,
                  "mode %d TP %d: rank %d's logits differ from rank 0's", a->mode, size, q);
    }
    memcpy(logits, o0->logits, sizeof o0->logits);
    sd_test_ranks_free(&r);
}

static double max_rel_diff(const float *a, const float *ref)
{
    double d = 0, mr = 0;
    for (int i = 0; i < N_ROWS * V; i++) {
        d = fmax(d, fabs((double)a[i] - ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    return d / mr;
}

Test(cuda_tp, ranks_agree_and_match_the_cpu_tp_forward, .timeout = 1800)
{
    gpu_via_cuda_ipc = 1;
    gpu_skip_unless_available();
    setenv("SPECDEC_COMM_TIMEOUT_MS", "60000", 1);
    sd_synth_spec_t sp;
    sd_synth_spec_default(&sp);
    sp.arch = "llama";
    sp.n_layer = 2;
    sp.n_embd = 96;
    sp.n_head = 12;
    sp.n_head_kv = 12;
    sp.n_ff = 96;
    sp.n_vocab = V;
    sp.n_ctx = 32;
    sp.weight_type = SD_DTYPE_F32;
    sp.embd_type = SD_DTYPE_F32;
    sp.output_type = SD_DTYPE_F32;
    sp.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    sp.seed = 15;
    sp.weight_scale = 0.1f;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "cuda-tp");
    cr_assert_eq(sd_synth_write_file(&sp, path), SD_OK, "%s", sd_last_error());
    static float ipc[N_ROWS * V], staged[N_ROWS * V], cpu[N_ROWS * V];
    for (int size = 2; size <= 4; size++) {
        tp_arg_t a = {path, VIA_CUDA_IPC}, b = {path, VIA_HOST_COMM}, c = {path, ON_CPU};
        run_tp(size, &a, ipc);
        run_tp(size, &b, staged);
        run_tp(size, &c, cpu);
        cr_assert(memcmp(ipc, staged, sizeof ipc) == 0,
                  "TP %d: cuda_ipc logits differ from the host-staged allreduce's", size);
        double rel = max_rel_diff(ipc, cpu);
        cr_log_info("TP %d: CUDA vs CPU TP forward: max diff %.3g of max|logit|", size, rel);
        cr_assert(rel <= 1e-4, "TP %d: CUDA TP vs CPU TP differ by %.3g of max|logit|", size, rel);
    }
    remove(path);
}
