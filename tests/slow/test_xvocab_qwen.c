/* SmolLM2-135M (byte-level BPE, 49152 tokens) drafting for Qwen2.5-Coder-1.5B (151936
 * tokens) across vocabularies: greedy output equals Qwen alone on bench prompts, and the
 * drafts are accepted often enough to matter (acceptance printed for the record). Needs
 * both files in the cache (scripts/fetch-model.sh, scripts/fetch-qwen.sh); slow. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specdec/specdec.h"
#include "support/test_util.h"

static char *cached(const char *name)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *path = malloc(1024);
    cr_assert_not_null(path);
    if (xdg && xdg[0]) snprintf(path, 1024, "%s/specdec/%s", xdg, name);
    else snprintf(path, 1024, "%s/.cache/specdec/%s", home ? home : ".", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        free(path);
        return NULL;
    }
    fclose(f);
    return path;
}

static sd_model_t *load(const char *path)
{
    sd_model_params_t p;
    sd_model_params_default(&p);
    p.path = path;
    p.n_ctx = 1024;
    sd_model_t *m = NULL;
    cr_assert_eq(sd_model_load(&p, &m), SD_OK, "load %s: %s", path, sd_last_error());
    return m;
}

/* bench/prompts/NAME as a chat turn for m. */
static size_t chat_prompt(sd_model_t *m, const char *name, int32_t *out, size_t cap)
{
    char path[1024], text[8192], chat[16384];
    snprintf(path, sizeof path, "%s/bench/prompts/%s", SPECDEC_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    sd_chat_message_t msg = {"user", text};
    size_t len = 0, n_tokens = 0;
    cr_assert_eq(sd_chat_apply(m, &msg, 1, 1, chat, sizeof chat, &len), SD_OK, "%s", sd_last_error());
    cr_assert_eq(sd_tokenize(m, chat, len, SD_TOKENIZE_PARSE_SPECIAL, out, cap, &n_tokens), SD_OK,
                 "%s", sd_last_error());
    return n_tokens;
}

Test(slow_xvocab, smollm2_drafts_for_qwen_across_vocabularies, .timeout = 3600)
{
    char *qwen = cached("Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf");
    char *smol = cached("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (qwen == NULL || smol == NULL) {
        free(qwen);
        free(smol);
        cr_skip_test("needs Qwen2.5-Coder-1.5B (scripts/fetch-qwen.sh) and SmolLM2 "
                     "(scripts/fetch-model.sh) in the cache");
    }
    sd_model_t *target = load(qwen), *draft = load(smol);
    sd_spec_config_t spec;
    sd_spec_config_default(&spec);
    cr_assert_eq(sd_spec_parse_drafter("xvocab:draft", &spec, NULL), SD_OK);
    spec.draft_model = draft;
    static const char *const prompts[] = {"code-rename.txt", "chat-capital.txt"};
    uint64_t drafted = 0, accepted = 0, steps = 0;
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) {
        int32_t prompt[2048];
        size_t n = chat_prompt(target, prompts[i], prompt, 2048);
        sd_gen_config_t c;
        sd_gen_config_default(&c);
        c.temperature = 0.0f;
        c.max_tokens = 48;
        sd_gen_result_t ref, r;
        cr_assert_eq(sd_generate(target, prompt, n, &c, NULL, NULL, &ref), SD_OK, "%s", sd_last_error());
        cr_assert_eq(sd_generate_speculative(target, prompt, n, &c, &spec, NULL, NULL, &r), SD_OK,
                     "%s", sd_last_error());
        cr_assert_eq(r.n_tokens, ref.n_tokens, "%s: %zu tokens vs %zu", prompts[i], r.n_tokens,
                     ref.n_tokens);
        for (size_t t = 0; t < r.n_tokens; t++)
            cr_assert_eq(r.tokens[t], ref.tokens[t], "%s: token %zu", prompts[i], t);
        fprintf(stderr, "xvocab SmolLM2 -> Qwen 1.5B, %s: acceptance %.3f, %.2f tokens per "
                "target forward\n", prompts[i], r.stats.acceptance_rate, r.stats.mean_accepted_len);
        drafted += r.stats.drafted;
        accepted += r.stats.accepted;
        steps += r.stats.steps;
        sd_gen_result_free(&r);
        sd_gen_result_free(&ref);
    }
    cr_assert_gt(accepted * 2, drafted, "acceptance %llu / %llu below one half",
                 (unsigned long long)accepted, (unsigned long long)drafted);
    sd_model_free(draft);
    sd_model_free(target);
    free(qwen);
    free(smol);
}
