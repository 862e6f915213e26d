/* Drafting across vocabularies end to end (--draft xvocab:PATH): a draft model with
 * another tokenizer (byte-level BPE for a SentencePiece target and the reverse; the real
 * SmolLM2 tokenizer when cached) leaves greedy output exactly the target-only output for
 * every k, and sampled output exactly target-only sampling (its proposals are
 * deterministic); the serving engine batches its draft forwards with the same tokens; a
 * draft model whose context runs out stops drafting without an error. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/synthetic.h"
#include "specdec/specdec.h"
#include "support/test_util.h"

static sd_model_t *load(const char *path, int n_ctx)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_threads = 2;
    p.n_ctx = n_ctx;
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "load %s: %s", path, sd_last_error());
    return m;
}

static sd_model_t *synth(sd_synth_tokenizer_t tok, int n_vocab, uint64_t seed, int n_ctx)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.n_vocab = n_vocab;
    s.tokenizer = tok;
    s.seed = seed;
    s.n_ctx = 512;
    s.weight_scale = 0.08f;
    char path[512];
    sd_test_tmp_path(path, sizeof path, "xvgen");
    cr_assert_eq(sd_synth_write_file(&s, path), SD_OK, "synth: %s", sd_last_error());
    sd_model_t *m = load(path, n_ctx);
    remove(path);
    return m;
}

static size_t prompt_of(const sd_model_t *m, const char *text, int32_t *out, size_t cap)
{
    size_t n = 0;
    cr_assert_eq(sd_tokenize(m, text, strlen(text), SD_TOKENIZE_ADD_BOS | SD_TOKENIZE_PARSE_SPECIAL,
                             out, cap, &n), SD_OK, "%s", sd_last_error());
    return n;
}

static sd_gen_config_t config(float temperature, int max_tokens, uint64_t seed)
{
    sd_gen_config_t c;
    sd_gen_config_default(&c);
    c.temperature = temperature;
    c.max_tokens = max_tokens;
    c.seed = seed;
    c.ignore_eos = 1;
    return c;
}

static sd_spec_config_t xvocab(sd_model_t *draft, int k, int adaptive)
{
    sd_spec_config_t s;
    sd_spec_config_default(&s);
    cr_assert_eq(sd_spec_parse_drafter("xvocab:unused.gguf", &s, NULL), SD_OK);
    s.draft_model = draft;
    s.k = k;
    s.adaptive = adaptive;
    return s;
}

static void assert_same(const sd_gen_result_t *a, const sd_gen_result_t *b, const char *what)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s: %zu tokens vs %zu", what, a->n_tokens, b->n_tokens);
    for (size_t i = 0; i < a->n_tokens; i++)
        cr_assert_eq(a->tokens[i], b->tokens[i], "%s: token %zu: %d vs %d", what, i, a->tokens[i],
                     b->tokens[i]);
    cr_assert(a->text_len == b->text_len && memcmp(a->text, b->text, a->text_len) == 0,
              "%s: text", what);
}

static const char *const PROMPTS[] = {
    "<|im_start|>user\nthe small model and the large model<|im_end|>\n<|im_start|>assistant\n",
    "the quick brown fox jumps over the lazy dog. the quick brown fox",
};

/* greedy and sampled, several k, adaptive or fixed (or token trees of these shapes; NULL:
 * chains): token for token the target alone */
static void check_pair_shapes(sd_model_t *target, sd_model_t *draft, const char *what,
                              const char *const *shapes)
{
    static const int ks[] = {1, 3, 6};
    uint64_t drafted = 0;
    for (size_t p = 0; p < sizeof PROMPTS / sizeof PROMPTS[0]; p++) {
        int32_t prompt[256];
        size_t n = prompt_of(target, PROMPTS[p], prompt, 256);
        for (int temp = 0; temp < 2; temp++) {
            sd_gen_config_t c = config(temp ? 0.9f : 0.0f, 40, 11 + p);
            sd_gen_result_t ref;
            cr_assert_eq(sd_generate(target, prompt, n, &c, NULL, NULL, &ref), SD_OK, "%s",
                         sd_last_error());
            for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
                sd_spec_config_t s = xvocab(draft, ks[i], (int)(i % 2));
                if (shapes != NULL)
                    cr_assert_eq(sd_spec_parse_tree(shapes[i], &s), SD_OK, "%s", sd_last_error());
                sd_gen_result_t r;
                cr_assert_eq(sd_generate_speculative(target, prompt, n, &c, &s, NULL, NULL, &r),
                             SD_OK, "%s: %s", what, sd_last_error());
                char label[160];
                snprintf(label, sizeof label, "%s, prompt %zu, %s, k %d%s%s", what, p,
                         temp ? "sampled" : "greedy", ks[i], shapes ? ", tree " : "",
                         shapes ? shapes[i] : "");
                assert_same(&r, &ref, label);
                cr_assert_gt(r.stats.draft_forwards, 0, "%s: the draft model ran", label);
                drafted += r.stats.drafted;
                sd_gen_result_free(&r);
            }
            sd_gen_result_free(&ref);
        }
    }
    cr_assert_gt(drafted, 0, "%s: the translation proposed tokens", what);
}

static void check_pair(sd_model_t *target, sd_model_t *draft, const char *what)
{
    check_pair_shapes(target, draft, what, NULL);
}

Test(engine_xvocab, output_is_the_targets_across_tokenizers, .timeout = 300)
{
    sd_model_t *bpe = synth(SD_SYNTH_TOKENIZER_GPT2, 320, 7, 256);
    sd_model_t *spm = synth(SD_SYNTH_TOKENIZER_LLAMA, 400, 8, 256);
    check_pair(bpe, spm, "BPE target, SentencePiece draft");
    check_pair(spm, bpe, "SentencePiece target, BPE draft");
    sd_model_free(spm);
    sd_model_free(bpe);
}

/* Token trees across vocabularies (the draft model's tree, each path translated, merged into
 * a trie of target tokens): the same. */
Test(engine_xvocab, trees_are_the_targets_across_tokenizers, .timeout = 300)
{
    static const char *const shapes[] = {"3x2x1", "dynamic:8", "2x2x2x1x1x1"};
    sd_model_t *bpe = synth(SD_SYNTH_TOKENIZER_GPT2, 320, 7, 256);
    sd_model_t *spm = synth(SD_SYNTH_TOKENIZER_LLAMA, 400, 8, 256);
    check_pair_shapes(bpe, spm, "BPE target, SentencePiece draft", shapes);
    check_pair_shapes(spm, bpe, "SentencePiece target, BPE draft", shapes);
    sd_model_free(spm);
    sd_model_free(bpe);
}

/* SmolLM2 drafting for itself through text, with trees: exactly its greedy output. */
Test(engine_xvocab, real_tree_is_the_targets, .timeout = 300)
{
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("SmolLM2 is not cached (scripts/fetch-model.sh fetches it)");
    sd_model_t *real = load(path, 256), *draft = load(path, 256);
    int32_t prompt[256];
    size_t n = prompt_of(real, "The capital of France is Paris. The capital of Germany is", prompt, 256);
    sd_gen_config_t c = config(0.0f, 32, 1);
    sd_gen_result_t ref, chain, tree;
    cr_assert_eq(sd_generate(real, prompt, n, &c, NULL, NULL, &ref), SD_OK, "%s", sd_last_error());
    sd_spec_config_t s = xvocab(draft, 4, 0);
    cr_assert_eq(sd_generate_speculative(real, prompt, n, &c, &s, NULL, NULL, &chain), SD_OK, "%s",
                 sd_last_error());
    cr_assert_eq(sd_spec_parse_tree("4x2x2x1", &s), SD_OK);
    cr_assert_eq(sd_generate_speculative(real, prompt, n, &c, &s, NULL, NULL, &tree), SD_OK, "%s",
                 sd_last_error());
    assert_same(&chain, &ref, "SmolLM2 through text, chain");
    assert_same(&tree, &ref, "SmolLM2 through text, tree 4x2x2x1");
    double per_chain = (double)chain.n_tokens / (double)chain.stats.target_forwards;
    double per_tree = (double)tree.n_tokens / (double)tree.stats.target_forwards;
    cr_log_info("tokens per target forward: chain %.2f, tree %.2f", per_chain, per_tree);
    cr_assert_gt(tree.stats.accepted, 0, "the translated tree's paths were kept");
    sd_gen_result_free(&tree);
    sd_gen_result_free(&chain);
    sd_gen_result_free(&ref);
    sd_model_free(draft);
    sd_model_free(real);
}

Test(engine_xvocab, output_is_the_targets_with_a_real_tokenizer, .timeout = 300)
{
    const char *path = sd_test_real_model();
    if (path == NULL) cr_skip_test("SmolLM2 is not cached (scripts/fetch-model.sh fetches it)");
    sd_model_t *real = load(path, 256);
    sd_model_t *spm = synth(SD_SYNTH_TOKENIZER_LLAMA, 400, 8, 256);
    int32_t prompt[256];
    size_t n = prompt_of(real, PROMPTS[0], prompt, 256);
    sd_gen_config_t c = config(0.0f, 24, 1);
    sd_gen_result_t ref, r;
    cr_assert_eq(sd_generate(real, prompt, n, &c, NULL, NULL, &ref), SD_OK, "%s", sd_last_error());
    sd_spec_config_t s = xvocab(spm, 4, 1);
    cr_assert_eq(sd_generate_speculative(real, prompt, n, &c, &s, NULL, NULL, &r), SD_OK, "%s",
                 sd_last_error());
    assert_same(&r, &ref, "SmolLM2 target, SentencePiece draft");
    sd_gen_result_free(&r);
    sd_gen_result_free(&ref);
    sd_model_free(spm);
    sd_model_free(real);
}

/* Six requests at once: their draft forwards run batched over the draft model; each
 * request's tokens are those it gets alone. */
Test(engine_xvocab, engine_batches_the_drafts, .timeout = 300)
{
    sd_model_t *target = synth(SD_SYNTH_TOKENIZER_GPT2, 320, 7, 256);
    sd_model_t *draft = synth(SD_SYNTH_TOKENIZER_LLAMA, 400, 8, 256);
    sd_engine_params_t ep;
    sd_engine_params_default(&ep);
    ep.model = target;
    ep.spec = xvocab(draft, 4, 1);
    sd_engine_t *e = NULL;
    cr_assert_eq(sd_engine_create(&ep, &e), SD_OK, "%s", sd_last_error());
    enum { N = 6 };
    int32_t prompts[N][256];
    size_t lens[N];
    sd_gen_config_t cs[N];
    sd_request_t *rq[N];
    for (int i = 0; i < N; i++) {
        lens[i] = prompt_of(target, PROMPTS[i % 2], prompts[i], 256);
        lens[i] -= (size_t)i; /* ragged */
        cs[i] = config(i % 3 ? 0.0f : 0.8f, 24 + 3 * i, 100 + (uint64_t)i);
        cr_assert_eq(sd_engine_submit(e, prompts[i], lens[i], &cs[i], NULL, NULL, &rq[i]), SD_OK,
                     "%s", sd_last_error());
    }
    for (int i = 0; i < N; i++) {
        sd_gen_result_t got, alone;
        cr_assert_eq(sd_request_wait(rq[i], -1, &got), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_generate_speculative(target, prompts[i], lens[i], &cs[i], &ep.spec, NULL,
                                             NULL, &alone), SD_OK, "%s", sd_last_error());
        char label[32];
        snprintf(label, sizeof label, "request %d", i);
        assert_same(&got, &alone, label);
        sd_gen_result_free(&got);
        sd_gen_result_free(&alone);
        sd_request_free(rq[i]);
    }
    sd_engine_metrics_t mt;
    cr_assert_eq(sd_engine_get_metrics(e, &mt), SD_OK);
    cr_assert_gt(mt.draft_forwards, 0, "draft rounds ran batched over the draft model");
    cr_assert_gt(mt.draft_rows, mt.draft_forwards, "some draft forward carried several rows");
    sd_engine_free(e);
    sd_model_free(draft);
    sd_model_free(target);
}

/* A draft model with a 24-token context: the translated prompt does not fit; the
 * generation goes on target-only and equals it. */
Test(engine_xvocab, a_draft_out_of_context_stops_drafting, .timeout = 120)
{
    sd_model_t *target = synth(SD_SYNTH_TOKENIZER_GPT2, 320, 7, 256);
    sd_model_t *draft = synth(SD_SYNTH_TOKENIZER_LLAMA, 400, 8, 24);
    int32_t prompt[256];
    size_t n = prompt_of(target, PROMPTS[1], prompt, 256);
    sd_gen_config_t c = config(0.0f, 16, 1);
    sd_gen_result_t ref, r;
    cr_assert_eq(sd_generate(target, prompt, n, &c, NULL, NULL, &ref), SD_OK);
    sd_spec_config_t s = xvocab(draft, 4, 0);
    cr_assert_eq(sd_generate_speculative(target, prompt, n, &c, &s, NULL, NULL, &r), SD_OK, "%s",
                 sd_last_error());
    assert_same(&r, &ref, "draft out of context");
    cr_assert_eq(r.stats.drafted, 0);
    sd_gen_result_free(&r);
    sd_gen_result_free(&ref);
    sd_model_free(draft);
    sd_model_free(target);
}
