/* sd_generate (target-only loop), its stops and streaming, and the sd_text_stream decoder:
 * on small synthetic models and, when present, the real SmolLM2 file. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "engine/generate_text.h"
#include "model/forward.h"
#include "model/model.h"
#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/test_util.h"
#include "verify/philox.h"
#include "verify/sampler.h"

/* ---- helpers --------------------------------------------------------------------- */

static sd_model_t *load_path(const char *path, int n_threads, int n_ctx)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = n_threads;
    p.n_ctx = n_ctx;
    sd_model_t *m = NULL;
    sd_status_t st = sd_model_load(&p, &m);
    cr_assert_eq(st, SD_OK, "load %s: %s", path, sd_last_error());
    return m;
}

static void synth_file(const sd_synth_spec_t *spec, char *path, size_t cap)
{
    sd_test_tmp_path(path, cap, "gen");
    cr_assert_eq(sd_synth_write_file(spec, path), SD_OK, "%s", sd_last_error());
}

/* The default synthetic model (gpt2 tokenizer, vocab 320) with the given weight std. */
static sd_model_t *synth_model(float weight_scale, int n_threads, int n_ctx)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.weight_scale = weight_scale;
    spec.n_ctx = 512;
    char path[512];
    synth_file(&spec, path, sizeof path);
    sd_model_t *m = load_path(path, n_threads, n_ctx);
    remove(path);
    return m;
}

static size_t tokenize(const sd_model_t *m, const char *text, int flags, int32_t *ids, size_t cap)
{
    size_t n = 0;
    cr_assert_eq(sd_tokenize(m, text, strlen(text), flags, ids, cap, &n), SD_OK, "%s",
                 sd_last_error());
    return n;
}

/* Bytes of tokens[n], NUL-terminated, malloc'd. */
static char *detokenize(const sd_model_t *m, const int32_t *tokens, size_t n, size_t *len)
{
    size_t need = 0;
    char probe[1];
    sd_status_t st = sd_detokenize(m, tokens, n, probe, sizeof probe, &need);
    cr_assert(st == SD_OK || st == SD_ERR_BUFFER_TOO_SMALL, "%s", sd_last_error());
    char *buf = malloc(need + 1);
    cr_assert_eq(sd_detokenize(m, tokens, n, buf, need + 1, len), SD_OK, "%s", sd_last_error());
    buf[*len] = '\0';
    return buf;
}

static const int32_t k_prompt[] = {72, 101, 108, 108, 111, 44, 32, 119}; /* byte tokens */
#define K_PROMPT_N (sizeof k_prompt / sizeof k_prompt[0])

static sd_gen_config_t config(float temperature, int max_tokens, uint64_t seed)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = temperature;
    c.top_k = 0;
    c.top_p = 1.0f;
    c.min_p = 0.0f;
    c.max_tokens = max_tokens;
    c.seed = seed;
    c.ignore_eos = 1;
    return c;
}

static sd_gen_result_t generate(sd_model_t *m, const int32_t *prompt, size_t n,
                                const sd_gen_config_t *c)
{
    sd_gen_result_t r;
    sd_status_t st = sd_generate(m, prompt, n, c, NULL, NULL, &r);
    cr_assert_eq(st, SD_OK, "sd_generate: %s: %s", sd_status_string(st), sd_last_error());
    return r;
}

/* Token-by-token reference: sd_forward the prompt in one call, then one token per call,
 * choosing greedily or with the (seed, position) uniform. */
static void manual_loop(sd_model_t *m, const int32_t *prompt, int n_prompt,
                        const sd_gen_config_t *c, int32_t *out, int n_out)
{
    sd_seq_t s;
    cr_assert_eq(sd_seq_init(&s, m, 0, n_prompt), SD_OK, "%s", sd_last_error());
    sd_sampler_scratch_t scratch;
    cr_assert_eq(sd_sampler_scratch_init(&scratch, m->hp.n_vocab), SD_OK);
    float *probs = malloc((size_t)m->hp.n_vocab * sizeof *probs);
    sd_sampler_params_t sp = {c->temperature, c->top_k, c->top_p, c->min_p};
    cr_assert_eq(sd_forward(&s, prompt, n_prompt, 0), SD_OK, "%s", sd_last_error());
    const float *logits = s.logits + (size_t)(n_prompt - 1) * (size_t)m->hp.n_vocab;
    for (int i = 0; i < n_out; i++) {
        if (c->temperature <= 0.0f) {
            out[i] = sd_sample_greedy(logits, m->hp.n_vocab);
        } else {
            float u = sd_rng_uniform(c->seed, (uint64_t)(n_prompt + i), SD_RNG_SAMPLE);
            out[i] = sd_sample(&sp, logits, m->hp.n_vocab, u, &scratch, probs);
        }
        cr_assert_eq(sd_forward(&s, &out[i], 1, 0), SD_OK, "%s", sd_last_error());
        logits = s.logits;
    }
    free(probs);
    sd_sampler_scratch_free(&scratch);
    sd_seq_free(&s);
}

static void assert_same_tokens(const sd_gen_result_t *a, const int32_t *b, size_t n)
{
    cr_assert_eq(a->n_tokens, n, "%zu tokens, expected %zu", a->n_tokens, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(a->tokens[i], b[i], "token %zu: %d != %d", i, a->tokens[i], b[i]);
}

/* Streaming capture: every callback's text appended; counts of calls and token -1 calls. */
typedef struct capture {
    char buf[1 << 16];
    size_t len;
    int calls, final_calls, stop_after; /* stop_after > 0: return 1 on that call */
    const char *forbidden;              /* must never appear in any single piece */
} capture_t;

static int capture_cb(void *user, int32_t token, const char *text, size_t len)
{
    capture_t *c = user;
    cr_assert(c->len + len < sizeof c->buf);
    memcpy(c->buf + c->len, text, len);
    c->len += len;
    c->buf[c->len] = '\0';
    if (token < 0)
        c->final_calls++;
    else
        c->calls++;
    return c->stop_after > 0 && c->calls == c->stop_after;
}

static sd_gen_result_t generate_streamed(sd_model_t *m, const int32_t *prompt, size_t n,
                                         const sd_gen_config_t *c, capture_t *cap)
{
    sd_gen_result_t r;
    sd_status_t st = sd_generate(m, prompt, n, c, capture_cb, cap, &r);
    cr_assert_eq(st, SD_OK, "sd_generate: %s", sd_last_error());
    cr_assert_eq(cap->len, r.text_len, "streamed %zu bytes, text has %zu", cap->len, r.text_len);
    cr_assert(memcmp(cap->buf, r.text, r.text_len) == 0, "streamed text differs from out->text");
    cr_assert_eq(r.text[r.text_len], '\0');
    return r;
}

static size_t find_bytes(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t p = 0; p + m <= n; p++)
        if (memcmp(hay + p, needle, m) == 0)
            return p;
    return SIZE_MAX;
}

/* ---- config ---------------------------------------------------------------------- */

Test(engine_generate, config_defaults)
{
    sd_gen_config_t c;
    memset(&c, 0x5a, sizeof c);
    sd_gen_config_default(&c);
    cr_assert_eq(c.max_tokens, 128);
    cr_assert_float_eq(c.temperature, 0.8f, 1e-7);
    cr_assert_eq(c.top_k, 40);
    cr_assert_float_eq(c.top_p, 0.95f, 1e-7);
    cr_assert_float_eq(c.min_p, 0.05f, 1e-7);
    cr_assert_eq(c.seed, 0);
    cr_assert_null(c.stop_strings);
    cr_assert_eq(c.n_stop_strings, 0);
    cr_assert_null(c.stop_tokens);
    cr_assert_eq(c.n_stop_tokens, 0);
    cr_assert_eq(c.ignore_eos, 0);
}

/* ---- token choice ---------------------------------------------------------------- */

Test(engine_generate, greedy_equals_forward_argmax_loop, .timeout = 60)
{
    sd_model_t *m = synth_model(0.5f, 1, 0);
    sd_gen_config_t c = config(0.0f, 40, 0);
    sd_gen_result_t r = generate(m, k_prompt, K_PROMPT_N, &c);
    int32_t ref[40];
    manual_loop(m, k_prompt, K_PROMPT_N, &c, ref, 40);
    assert_same_tokens(&r, ref, 40);
    cr_assert_eq(r.stop_reason, SD_STOP_MAX_TOKENS);
    cr_assert_eq(r.n_prompt, K_PROMPT_N);
    cr_assert(r.prefill_seconds > 0.0 && r.decode_seconds > 0.0);
    sd_gen_result_free(&r);
    cr_assert_null(r.tokens);
    cr_assert_null(r.text);
    sd_model_free(m);
}

/* A prompt longer than one prefill chunk (64) gives the same tokens as a one-call prefill. */
Test(engine_generate, chunked_prefill_equals_single_forward, .timeout = 60)
{
    sd_model_t *m = synth_model(0.5f, 1, 0);
    int32_t prompt[150];
    for (int i = 0; i < 150; i++)
        prompt[i] = (int32_t)(32 + (i * 7) % 90);
    sd_gen_config_t c = config(1.0f, 12, 5);
    sd_gen_result_t r = generate(m, prompt, 150, &c);
    int32_t ref[12];
    manual_loop(m, prompt, 150, &c, ref, 12);
    assert_same_tokens(&r, ref, 12);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

/* Sampling draws the token at position p with sd_rng_uniform(seed, p, SD_RNG_SAMPLE). */
Test(engine_generate, sampling_keyed_by_seed_and_position, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 48, 1234);
    c.top_k = 50;
    c.top_p = 0.9f;
    c.min_p = 0.01f;
    sd_gen_result_t a = generate(m, k_prompt, K_PROMPT_N, &c);
    int32_t ref[48];
    manual_loop(m, k_prompt, K_PROMPT_N, &c, ref, 48);
    assert_same_tokens(&a, ref, 48);
    sd_gen_result_t b = generate(m, k_prompt, K_PROMPT_N, &c);
    assert_same_tokens(&b, a.tokens, 48);
    c.seed = 1235;
    sd_gen_result_t d = generate(m, k_prompt, K_PROMPT_N, &c);
    cr_assert_eq(d.n_tokens, 48);
    int differ = 0;
    for (int i = 0; i < 48; i++)
        differ += d.tokens[i] != a.tokens[i];
    cr_assert(differ >= 24, "seeds 1234 and 1235 share %d of 48 tokens", 48 - differ);
    sd_gen_result_free(&a);
    sd_gen_result_free(&b);
    sd_gen_result_free(&d);
    sd_model_free(m);
}

Test(engine_generate, same_tokens_on_one_and_two_threads, .timeout = 60)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.n_embd = 128;
    spec.n_ff = 320;
    spec.weight_type = SD_DTYPE_Q4_1;
    spec.weight_scale = 0.1f;
    char path[512];
    synth_file(&spec, path, sizeof path);
    sd_model_t *m1 = load_path(path, 1, 0), *m2 = load_path(path, 2, 0);
    remove(path);
    for (int t = 0; t < 2; t++) {
        sd_gen_config_t c = config(t == 0 ? 0.0f : 1.0f, 32, 99);
        sd_gen_result_t a = generate(m1, k_prompt, K_PROMPT_N, &c);
        sd_gen_result_t b = generate(m2, k_prompt, K_PROMPT_N, &c);
        assert_same_tokens(&b, a.tokens, a.n_tokens);
        cr_assert_str_eq(a.text, b.text);
        sd_gen_result_free(&a);
        sd_gen_result_free(&b);
    }
    sd_model_free(m1);
    sd_model_free(m2);
}

typedef struct job {
    sd_model_t *m;
    uint64_t seed;
    sd_gen_result_t r;
    sd_status_t st;
} job_t;

static void *job_run(void *arg)
{
    job_t *j = arg;
    sd_gen_config_t c = config(1.0f, 24, j->seed);
    j->st = sd_generate(j->m, k_prompt, K_PROMPT_N, &c, NULL, NULL, &j->r);
    return NULL;
}

/* Requests share only the read-only model: concurrent calls equal sequential ones, also
 * when the model's thread pool is shared by the callers (it serialises their jobs). */
Test(engine_generate, concurrent_calls_on_one_model, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 2, 0);
    job_t jobs[3] = {{.m = m, .seed = 1}, {.m = m, .seed = 2}, {.m = m, .seed = 3}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, job_run, &jobs[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(jobs[i].st, SD_OK);
        sd_gen_config_t c = config(1.0f, 24, jobs[i].seed);
        sd_gen_result_t r = generate(m, k_prompt, K_PROMPT_N, &c);
        assert_same_tokens(&jobs[i].r, r.tokens, r.n_tokens);
        sd_gen_result_free(&r);
        sd_gen_result_free(&jobs[i].r);
    }
    sd_model_free(m);
}

/* ---- text, streaming and stops ---------------------------------------------------- */

/* Without stops, the text is the bytes of the tokens and the stream delivers all of it
 * with one call per token. */
Test(engine_generate, streamed_text_equals_detokenized_tokens, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 64, 7);
    capture_t *cap = calloc(1, sizeof *cap);
    sd_gen_result_t r = generate_streamed(m, k_prompt, K_PROMPT_N, &c, cap);
    cr_assert_eq(r.n_tokens, 64);
    cr_assert_eq(cap->calls, 64);
    cr_assert_eq(cap->final_calls, 0);
    size_t len;
    char *ref = detokenize(m, r.tokens, r.n_tokens, &len);
    cr_assert_eq(r.text_len, len);
    cr_assert(memcmp(r.text, ref, len) == 0);
    free(ref);
    free(cap);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

Test(engine_generate, max_tokens_exact, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    for (int n = 1; n <= 9; n += 4) {
        sd_gen_config_t c = config(0.7f, n, 3);
        sd_gen_result_t r = generate(m, k_prompt, K_PROMPT_N, &c);
        cr_assert_eq(r.n_tokens, (size_t)n);
        cr_assert_eq(r.stop_reason, SD_STOP_MAX_TOKENS);
        sd_gen_result_free(&r);
    }
    sd_model_free(m);
}

Test(engine_generate, callback_stop, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 50, 11);
    capture_t *cap = calloc(1, sizeof *cap);
    cap->stop_after = 3;
    sd_gen_result_t r = generate_streamed(m, k_prompt, K_PROMPT_N, &c, cap);
    cr_assert_eq(r.stop_reason, SD_STOP_CALLBACK);
    cr_assert_eq(r.n_tokens, 3);
    cr_assert_eq(cap->calls, 3);
    size_t len;
    char *ref = detokenize(m, r.tokens, r.n_tokens, &len);
    cr_assert(len == r.text_len && memcmp(ref, r.text, len) == 0);
    free(ref);
    free(cap);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

/* Text held as a possible stop-string start when the callback stops generation comes in
 * one final call with token -1. */
Test(engine_generate, held_text_after_callback_stop_gets_final_call, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c;
    sd_gen_result_t first = {0};
    for (uint64_t seed = 1; seed < 40; seed++) {
        c = config(1.0f, 3, seed);
        first = generate(m, k_prompt, K_PROMPT_N, &c);
        char last = first.text_len > 0 ? first.text[first.text_len - 1] : 0;
        if (last > ' ' && last < 127)
            break;
        sd_gen_result_free(&first);
    }
    cr_assert_not_null(first.text, "no seed gave 3 tokens ending in printable ASCII");
    char stop[3] = {first.text[first.text_len - 1], '\x01', 0};
    const char *stops[] = {stop};
    c.stop_strings = stops;
    c.n_stop_strings = 1;
    c.max_tokens = 50;
    capture_t *cap = calloc(1, sizeof *cap);
    cap->stop_after = 3;
    sd_gen_result_t r = generate_streamed(m, k_prompt, K_PROMPT_N, &c, cap);
    cr_assert_eq(r.stop_reason, SD_STOP_CALLBACK);
    assert_same_tokens(&r, first.tokens, 3);
    cr_assert_str_eq(r.text, first.text);
    cr_assert_eq(cap->final_calls, 1);
    free(cap);
    sd_gen_result_free(&r);
    sd_gen_result_free(&first);
    sd_model_free(m);
}

Test(engine_generate, stop_token, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 30, 21);
    sd_gen_result_t full = generate(m, k_prompt, K_PROMPT_N, &c);
    int32_t stop = full.tokens[10];
    size_t first = 0;
    while (full.tokens[first] != stop)
        first++;
    c.stop_tokens = &stop;
    c.n_stop_tokens = 1;
    capture_t *cap = calloc(1, sizeof *cap);
    sd_gen_result_t r = generate_streamed(m, k_prompt, K_PROMPT_N, &c, cap);
    cr_assert_eq(r.stop_reason, SD_STOP_TOKEN);
    assert_same_tokens(&r, full.tokens, first);
    size_t len;
    char *ref = detokenize(m, full.tokens, first, &len);
    cr_assert(len == r.text_len && memcmp(ref, r.text, len) == 0, "text '%s' != '%s'", r.text, ref);
    free(ref);
    free(cap);
    sd_gen_result_free(&r);
    sd_gen_result_free(&full);
    sd_model_free(m);
}

/* With EOS honoured, generation ends before the first end-of-generation token that the
 * ignore_eos run produced, and that token is not part of the result. */
Test(engine_generate, eos_stops_before_eog_token, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 400, 5);
    sd_gen_result_t full = generate(m, k_prompt, K_PROMPT_N, &c);
    size_t first = 0;
    while (first < full.n_tokens && !sd_tokenizer_is_eog(m->tokenizer, full.tokens[first]))
        first++;
    cr_assert(first < full.n_tokens, "seed 5 produced no end-of-generation token in 400");
    c.ignore_eos = 0;
    sd_gen_result_t r = generate(m, k_prompt, K_PROMPT_N, &c);
    cr_assert_eq(r.stop_reason, SD_STOP_EOS);
    assert_same_tokens(&r, full.tokens, first);
    sd_gen_result_free(&r);
    sd_gen_result_free(&full);
    sd_model_free(m);
}

/* A two-byte ASCII stop string straddling a token boundary of an unconstrained run: the
 * text ends right before its first occurrence and no streamed piece ever carries it. */
static void check_stop_string_run(sd_model_t *m, const int32_t *prompt, size_t n_prompt,
                                  sd_gen_config_t c)
{
    sd_gen_result_t full = generate(m, prompt, n_prompt, &c);
    size_t *end = calloc(full.n_tokens + 1, sizeof *end); /* text bytes after token i */
    for (size_t i = 1; i <= full.n_tokens; i++) {
        char *t = detokenize(m, full.tokens, i, &end[i]);
        free(t);
    }
    char stop[3] = {0};
    size_t k = 2;
    for (; k + 1 < full.n_tokens; k++) {
        size_t b = end[k];
        if (b > end[k - 1] && end[k + 1] > b && full.text[b - 1] > ' ' && full.text[b - 1] < 127 &&
            full.text[b] > ' ' && full.text[b] < 127)
            break;
    }
    cr_assert(k + 1 < full.n_tokens, "no ASCII token boundary in %zu tokens", full.n_tokens);
    stop[0] = full.text[end[k] - 1];
    stop[1] = full.text[end[k]];
    size_t at = find_bytes(full.text, full.text_len, stop);
    size_t n_expect = 1;
    while (end[n_expect] < at + 2)
        n_expect++;

    const char *stops[] = {"never-occurs-\x01", stop};
    c.stop_strings = stops;
    c.n_stop_strings = 2;
    capture_t *cap = calloc(1, sizeof *cap);
    sd_gen_result_t r = generate_streamed(m, prompt, n_prompt, &c, cap);
    cr_assert_eq(r.stop_reason, SD_STOP_STRING);
    cr_assert_eq(r.text_len, at, "stop '%s': text of %zu bytes, expected %zu", stop, r.text_len, at);
    cr_assert(memcmp(r.text, full.text, at) == 0);
    cr_assert_null(strstr(cap->buf, stop));
    assert_same_tokens(&r, full.tokens, n_expect);
    cr_assert_eq(cap->final_calls, 0);
    free(cap);
    free(end);
    sd_gen_result_free(&r);
    sd_gen_result_free(&full);
}

Test(engine_generate, stop_string_across_tokens, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    for (uint64_t seed = 40; seed < 43; seed++)
        check_stop_string_run(m, k_prompt, K_PROMPT_N, config(1.0f, 80, seed));
    sd_model_free(m);
}

/* A possible stop-string start is held and then released, in order, once it diverges;
 * at the end of generation held text is delivered. */
Test(engine_generate, held_prefix_released_when_it_diverges, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 60, 8);
    sd_gen_result_t full = generate(m, k_prompt, K_PROMPT_N, &c);
    /* a stop string that starts with the text's last byte but cannot occur */
    char stop[3] = {full.text[full.text_len - 1], '\x01', 0};
    cr_assert(full.text[full.text_len - 1] != '\0');
    const char *stops[] = {stop};
    c.stop_strings = stops;
    c.n_stop_strings = 1;
    capture_t *cap = calloc(1, sizeof *cap);
    sd_gen_result_t r = generate_streamed(m, k_prompt, K_PROMPT_N, &c, cap);
    cr_assert_eq(r.stop_reason, SD_STOP_MAX_TOKENS);
    cr_assert_eq(r.text_len, full.text_len);
    cr_assert(memcmp(r.text, full.text, full.text_len) == 0);
    free(cap);
    sd_gen_result_free(&r);
    sd_gen_result_free(&full);
    sd_model_free(m);
}

Test(engine_generate, no_tokenizer_generates_tokens_without_text, .timeout = 60)
{
    sd_synth_spec_t spec;
    sd_synth_spec_default(&spec);
    spec.tokenizer = SD_SYNTH_TOKENIZER_NONE;
    char path[512];
    synth_file(&spec, path, sizeof path);
    sd_model_t *m = load_path(path, 1, 0);
    remove(path);
    sd_gen_config_t c = config(0.0f, 10, 0);
    capture_t *cap = calloc(1, sizeof *cap);
    sd_gen_result_t r = generate_streamed(m, k_prompt, K_PROMPT_N, &c, cap);
    cr_assert_eq(r.n_tokens, 10);
    cr_assert_eq(cap->calls, 10);
    cr_assert_eq(r.text_len, 0);
    cr_assert_str_eq(r.text, "");
    sd_gen_result_free(&r);
    const char *stops[] = {"x"};
    c.stop_strings = stops;
    c.n_stop_strings = 1;
    cr_assert_eq(sd_generate(m, k_prompt, K_PROMPT_N, &c, NULL, NULL, &r), SD_ERR_NO_TOKENIZER);
    sd_text_stream_t *s = (sd_text_stream_t *)1;
    cr_assert_eq(sd_text_stream_new(m, &s), SD_ERR_NO_TOKENIZER);
    cr_assert_null(s);
    free(cap);
    sd_model_free(m);
}

/* ---- bad input --------------------------------------------------------------------- */

typedef struct bad_case {
    int field;     /* which config field to break */
    char word[24]; /* the message must name it */
} bad_case_t;

enum { BAD_MAX_TOKENS, BAD_TEMP_NEG, BAD_TEMP_NAN, BAD_TOP_K, BAD_TOP_P_ZERO, BAD_TOP_P_BIG,
       BAD_MIN_P, BAD_STOPS_NULL, BAD_STOP_NULL, BAD_STOP_EMPTY, BAD_STOP_TOKENS_NULL,
       BAD_STOP_TOKEN_NEG, BAD_STOP_TOKEN_BIG, BAD_PROMPT_TOKEN, BAD_PROMPT_EMPTY };

ParameterizedTestParameters(engine_generate, invalid_input)
{
    static bad_case_t cases[] = {
        {BAD_MAX_TOKENS, "max_tokens"},   {BAD_TEMP_NEG, "temperature"},
        {BAD_TEMP_NAN, "temperature"},    {BAD_TOP_K, "top_k"},
        {BAD_TOP_P_ZERO, "top_p"},        {BAD_TOP_P_BIG, "top_p"},
        {BAD_MIN_P, "min_p"},             {BAD_STOPS_NULL, "stop_strings"},
        {BAD_STOP_NULL, "stop_strings[1]"}, {BAD_STOP_EMPTY, "stop_strings[0]"},
        {BAD_STOP_TOKENS_NULL, "stop_tokens"}, {BAD_STOP_TOKEN_NEG, "stop_tokens[0]"},
        {BAD_STOP_TOKEN_BIG, "stop_tokens[1]"}, {BAD_PROMPT_TOKEN, "prompt[2]"},
        {BAD_PROMPT_EMPTY, "prompt"},
    };
    return cr_make_param_array(bad_case_t, cases, sizeof cases / sizeof cases[0]);
}

static void break_config(int field, sd_gen_config_t *c, int32_t *prompt, size_t *n_prompt)
{
    static const char *null_second[] = {"ok", NULL};
    static const char *empty[] = {""};
    static const int32_t neg[] = {-1};
    static const int32_t big[] = {3, 320};
    switch (field) {
    case BAD_MAX_TOKENS: c->max_tokens = 0; break;
    case BAD_TEMP_NEG: c->temperature = -0.5f; break;
    case BAD_TEMP_NAN: c->temperature = NAN; break;
    case BAD_TOP_K: c->top_k = -3; break;
    case BAD_TOP_P_ZERO: c->top_p = 0.0f; break;
    case BAD_TOP_P_BIG: c->top_p = 1.5f; break;
    case BAD_MIN_P: c->min_p = -0.1f; break;
    case BAD_STOPS_NULL: c->n_stop_strings = 2; break;
    case BAD_STOP_NULL: c->stop_strings = null_second; c->n_stop_strings = 2; break;
    case BAD_STOP_EMPTY: c->stop_strings = empty; c->n_stop_strings = 1; break;
    case BAD_STOP_TOKENS_NULL: c->n_stop_tokens = 1; break;
    case BAD_STOP_TOKEN_NEG: c->stop_tokens = neg; c->n_stop_tokens = 1; break;
    case BAD_STOP_TOKEN_BIG: c->stop_tokens = big; c->n_stop_tokens = 2; break;
    case BAD_PROMPT_TOKEN: prompt[2] = 100000; break;
    case BAD_PROMPT_EMPTY: *n_prompt = 0; break;
    }
}

ParameterizedTest(bad_case_t *bc, engine_generate, invalid_input, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_gen_config_t c = config(1.0f, 8, 0);
    int32_t prompt[K_PROMPT_N];
    memcpy(prompt, k_prompt, sizeof prompt);
    size_t n_prompt = K_PROMPT_N;
    break_config(bc->field, &c, prompt, &n_prompt);
    sd_gen_result_t r;
    memset(&r, 0x5a, sizeof r);
    sd_status_t st = sd_generate(m, prompt, n_prompt, &c, NULL, NULL, &r);
    cr_assert_eq(st, SD_ERR_INVALID_ARG, "case %s: %s", bc->word, sd_status_string(st));
    cr_assert_not_null(strstr(sd_last_error(), bc->word), "message '%s' does not name '%s'",
                       sd_last_error(), bc->word);
    cr_assert_null(r.tokens);
    cr_assert_null(r.text);
    cr_assert_eq(r.n_tokens, 0);
    sd_model_free(m);
}

Test(engine_generate, prompt_longer_than_context, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 32);
    int32_t prompt[32];
    for (int i = 0; i < 32; i++)
        prompt[i] = 65 + i % 26;
    sd_gen_config_t c = config(1.0f, 10, 0);
    sd_gen_result_t r;
    cr_assert_eq(sd_generate(m, prompt, 32, &c, NULL, NULL, &r), SD_ERR_CONTEXT_FULL);
    cr_assert_not_null(strstr(sd_last_error(), "32"), "%s", sd_last_error());
    cr_assert_null(r.tokens);
    /* 30 prompt tokens leave room for 2: generation stops at the context end and says so */
    r = generate(m, prompt, 30, &c);
    cr_assert_eq(r.n_tokens, 2);
    cr_assert_eq(r.stop_reason, SD_STOP_CONTEXT_FULL);
    sd_gen_result_free(&r);
    c.max_tokens = 2; /* asked for exactly what fits: max_tokens ended it */
    r = generate(m, prompt, 30, &c);
    cr_assert_eq(r.n_tokens, 2);
    cr_assert_eq(r.stop_reason, SD_STOP_MAX_TOKENS);
    sd_gen_result_free(&r);
    sd_spec_config_t sp; /* speculative: the same stop at the same token */
    sd_spec_config_default(&sp);
    sp.drafter = SD_DRAFTER_NGRAM;
    c.max_tokens = 10;
    cr_assert_eq(sd_generate_speculative(m, prompt, 24, &c, &sp, NULL, NULL, &r), SD_OK, "%s",
                 sd_last_error());
    cr_assert_eq(r.n_tokens, 8);
    cr_assert_eq(r.stop_reason, SD_STOP_CONTEXT_FULL);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

/* ---- the streaming decoder --------------------------------------------------------- */

typedef struct tail_case {
    const char *bytes;
    size_t held;
} tail_case_t;

Test(engine_generate, utf8_incomplete_tail)
{
    static const tail_case_t cases[] = {
        {"", 0},         {"a", 0},          {"\xC3", 1},        {"a\xC3\xA9", 0},
        {"\xE2\x82", 2}, {"\xE2", 1},       {"\xF0\x9F\xA6", 3}, {"\xF0\x9F\xA6\x80", 0},
        {"\x80", 0},     {"\xBF\xBF\xBF", 0}, {"\xC0", 0},       {"\xC1", 0},
        {"\xE0\x80", 0}, {"\xE0\xA0", 2},   {"\xED\xA0", 0},    {"\xF4\x90", 0},
        {"\xF5", 0},     {"\xFF", 0},       {"x\xF0\x9F", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].bytes);
        cr_assert_eq(sd_utf8_incomplete_tail(cases[i].bytes, n), cases[i].held, "case %zu", i);
    }
}

Test(engine_generate, stop_find_and_hold)
{
    const char *stops[] = {"abc", "bcd", "xy"};
    const char *t = "zzabxbcdq";
    cr_assert_eq(sd_stop_find(stops, 3, t, 0, strlen(t)), 5);
    cr_assert_eq(sd_stop_find(stops, 3, t, 0, 7), SIZE_MAX);
    cr_assert_eq(sd_stop_find(stops, 3, "abcd", 1, 4), 1);
    cr_assert_eq(sd_stop_hold(stops, 3, "zzab", 0, 4), 2);
    cr_assert_eq(sd_stop_hold(stops, 3, "zzab", 3, 4), 3);
    cr_assert_eq(sd_stop_hold(stops, 3, "zzx", 0, 3), 2);
    cr_assert_eq(sd_stop_hold(stops, 3, "zzq", 0, 3), 3);
    cr_assert_eq(sd_stop_hold(stops, 0, "zab", 0, 3), 3);
}

/* Push one token, return its text (NUL-terminated in a static buffer). */
static const char *push(sd_text_stream_t *s, int32_t token, size_t *len)
{
    static char buf[256];
    cr_assert_eq(sd_text_stream_push(s, token, buf, sizeof buf - 1, len), SD_OK, "%s",
                 sd_last_error());
    buf[*len] = '\0';
    return buf;
}

/* The synthetic gpt2 vocabulary's first 256 tokens are the bytes (byte-level order). */
static int32_t byte_token(const sd_model_t *m, unsigned char b)
{
    for (int32_t t = 0; t < 256; t++) {
        char piece[8];
        size_t n = 0;
        if (sd_tokenizer_piece(m->tokenizer, t, piece, sizeof piece, &n) == SD_OK && n == 1 &&
            (unsigned char)piece[0] == b)
            return t;
    }
    cr_assert_fail("no token for byte 0x%02x", b);
    return -1;
}

Test(engine_generate, text_stream_holds_split_character, .timeout = 60)
{
    sd_model_t *m = synth_model(0.02f, 1, 0);
    sd_text_stream_t *s;
    cr_assert_eq(sd_text_stream_new(m, &s), SD_OK);
    const unsigned char crab[] = {0xF0, 0x9F, 0xA6, 0x80};
    size_t len;
    for (int i = 0; i < 3; i++) {
        push(s, byte_token(m, crab[i]), &len);
        cr_assert_eq(len, 0, "byte %d of the crab released early", i);
    }
    cr_assert_str_eq(push(s, byte_token(m, crab[3]), &len), "\xF0\x9F\xA6\x80");
    char buf[8];
    cr_assert_eq(sd_text_stream_flush(s, buf, sizeof buf, &len), SD_OK);
    cr_assert_eq(len, 0);
    /* a sequence broken by ASCII is released raw, ASCII included */
    push(s, byte_token(m, 0xE2), &len);
    cr_assert_eq(len, 0);
    cr_assert_str_eq(push(s, byte_token(m, 'a'), &len), "\xE2" "a");
    /* a buffer too small keeps the state: the same push then succeeds */
    push(s, byte_token(m, 0xC3), &len);
    cr_assert_eq(sd_text_stream_push(s, byte_token(m, 0xA9), buf, 1, &len), SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(len, 2);
    cr_assert_str_eq(push(s, byte_token(m, 0xA9), &len), "\xC3\xA9");
    /* flush hands back an incomplete tail raw */
    push(s, byte_token(m, 0xF0), &len);
    push(s, byte_token(m, 0x9F), &len);
    cr_assert_eq(sd_text_stream_flush(s, buf, 1, &len), SD_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(len, 2);
    cr_assert_eq(sd_text_stream_flush(s, buf, sizeof buf, &len), SD_OK);
    cr_assert(len == 2 && memcmp(buf, "\xF0\x9F", 2) == 0);
    /* a token outside the vocabulary is an error that leaves held bytes in place */
    push(s, byte_token(m, 0xC3), &len);
    cr_assert_eq(sd_text_stream_push(s, 320, buf, sizeof buf, &len), SD_ERR_INVALID_ARG);
    cr_assert_not_null(strstr(sd_last_error(), "320"), "%s", sd_last_error());
    cr_assert_str_eq(push(s, byte_token(m, 0xA9), &len), "\xC3\xA9");
    sd_text_stream_free(s);
    sd_model_free(m);
}

/* ---- the real model ----------------------------------------------------------------- */

static sd_model_t *real_model(int n_threads)
{
    const char *path = sd_test_real_model();
    if (path == NULL)
        cr_skip_test("real model not found (run scripts/fetch-model.sh)");
    return load_path(path, n_threads, 0);
}

Test(engine_generate, real_text_stream_reassembles_emoji, .timeout = 120)
{
    sd_model_t *m = real_model(1);
    int32_t ids[16];
    size_t n = tokenize(m, "🦀🦀", 0, ids, 16);
    cr_assert(n >= 2, "'🦀🦀' is %zu tokens", n);
    sd_text_stream_t *s;
    cr_assert_eq(sd_text_stream_new(m, &s), SD_OK);
    char all[64] = {0};
    size_t total = 0, len, partial = 0;
    for (size_t i = 0; i < n; i++) {
        const char *t = push(s, ids[i], &len);
        partial += len == 0;
        memcpy(all + total, t, len);
        total += len;
        cr_assert_eq(sd_utf8_incomplete_tail(all, total), 0);
    }
    cr_assert(partial >= 1, "no token of the emoji was a partial UTF-8 sequence");
    cr_assert_str_eq(all, "🦀🦀");
    sd_text_stream_free(s);
    sd_model_free(m);
}

Test(engine_generate, real_greedy_paris, .timeout = 300)
{
    sd_model_t *m = real_model(2);
    int32_t ids[64];
    size_t n = tokenize(m, "The capital of France is", SD_TOKENIZE_ADD_BOS, ids, 64);
    sd_gen_config_t c = config(0.0f, 32, 0);
    c.ignore_eos = 0;
    capture_t *cap = calloc(1, sizeof *cap);
    sd_gen_result_t r = generate_streamed(m, ids, n, &c, cap);
    cr_assert_not_null(strstr(r.text, "Paris"), "continuation: '%s'", r.text);
    int32_t ref[32];
    manual_loop(m, ids, (int)n, &c, ref, (int)r.n_tokens);
    assert_same_tokens(&r, ref, r.n_tokens);
    cr_log_info("SmolLM2 2 threads: prefill %zu tok in %.3f s, decode %zu tok in %.3f s (%.1f tok/s)",
                n, r.prefill_seconds, r.n_tokens, r.decode_seconds,
                (double)(r.n_tokens - 1) / r.decode_seconds);
    free(cap);
    sd_gen_result_free(&r);
    sd_model_free(m);
}

Test(engine_generate, real_stop_string_and_sampling, .timeout = 300)
{
#ifdef __SANITIZE_THREAD__
    cr_skip_test("ThreadSanitizer pass: about a minute there; real_greedy_paris runs the real "
                 "model on two threads, the other passes run this one");
#endif
    sd_model_t *m = real_model(2);
    int32_t ids[64];
    size_t n = tokenize(m, "Once upon a time", SD_TOKENIZE_ADD_BOS, ids, 64);
    check_stop_string_run(m, ids, n, config(0.8f, 40, 17));
    sd_model_free(m);
}
