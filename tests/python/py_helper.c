/* What the Python tests (python/tests) need from C:
 *   py_helper synth PATH gpt2|llama|none N_VOCAB SEED   write a synthetic model (gguf/synthetic.h)
 *   py_helper abi                                       the public structs' layout as JSON
 * The layout is the C compiler's: the size of each struct, and the offset and size of every
 * field the ctypes mirror
 * (python/specdec/_lib.py) declares, so a field added, moved or resized on either side
 * fails python/tests/test_abi.py. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/synthetic.h"
#include "specdec/specdec.h"

static int first_struct = 1, first_field;

#define BEGIN(T) (printf("%s\"%s\": {\"size\": %zu, \"fields\": {", first_struct ? "" : ",\n ", \
                         #T, sizeof(T)), first_struct = 0, first_field = 1)
#define F(T, f) (printf("%s\"%s\": [%zu, %zu]", first_field ? "" : ", ", #f, offsetof(T, f), \
                        sizeof(((T *)0)->f)), first_field = 0)
#define END() printf("}}")

static void abi(void)
{
    printf("{\"structs\": {");
    BEGIN(sd_model_params_t), F(sd_model_params_t, path), F(sd_model_params_t, n_threads),
        F(sd_model_params_t, n_ctx), F(sd_model_params_t, comm), F(sd_model_params_t, device), END();
    BEGIN(sd_model_info_t), F(sd_model_info_t, arch), F(sd_model_info_t, name),
        F(sd_model_info_t, n_vocab), F(sd_model_info_t, n_layer), F(sd_model_info_t, n_embd),
        F(sd_model_info_t, n_head), F(sd_model_info_t, n_head_kv), F(sd_model_info_t, n_ff),
        F(sd_model_info_t, n_ctx), F(sd_model_info_t, bos), F(sd_model_info_t, eos),
        F(sd_model_info_t, device), END();
    BEGIN(sd_chat_message_t), F(sd_chat_message_t, role), F(sd_chat_message_t, content), END();
    BEGIN(sd_gen_config_t), F(sd_gen_config_t, max_tokens), F(sd_gen_config_t, temperature),
        F(sd_gen_config_t, top_k), F(sd_gen_config_t, top_p), F(sd_gen_config_t, min_p),
        F(sd_gen_config_t, seed), F(sd_gen_config_t, stop_strings),
        F(sd_gen_config_t, n_stop_strings), F(sd_gen_config_t, stop_tokens),
        F(sd_gen_config_t, n_stop_tokens), F(sd_gen_config_t, ignore_eos),
        F(sd_gen_config_t, logprobs), F(sd_gen_config_t, top_logprobs),
        F(sd_gen_config_t, logprobs_callback), END();
    BEGIN(sd_gen_stats_t), F(sd_gen_stats_t, tokens_generated), F(sd_gen_stats_t, target_forwards),
        F(sd_gen_stats_t, draft_forwards), F(sd_gen_stats_t, drafted), F(sd_gen_stats_t, accepted),
        F(sd_gen_stats_t, steps), F(sd_gen_stats_t, acceptance_rate),
        F(sd_gen_stats_t, mean_accepted_len), F(sd_gen_stats_t, accepted_hist),
        F(sd_gen_stats_t, draft_seconds), F(sd_gen_stats_t, verify_seconds),
        F(sd_gen_stats_t, other_seconds), F(sd_gen_stats_t, check_seconds), END();
    BEGIN(sd_gen_result_t), F(sd_gen_result_t, tokens), F(sd_gen_result_t, n_tokens),
        F(sd_gen_result_t, text), F(sd_gen_result_t, text_len), F(sd_gen_result_t, stop_reason),
        F(sd_gen_result_t, n_prompt), F(sd_gen_result_t, n_cached),
        F(sd_gen_result_t, prefill_seconds),
        F(sd_gen_result_t, decode_seconds), F(sd_gen_result_t, stats),
        F(sd_gen_result_t, logprobs), F(sd_gen_result_t, n_top), F(sd_gen_result_t, top_tokens),
        F(sd_gen_result_t, top_logprobs), END();
    BEGIN(sd_draft_query_t), F(sd_draft_query_t, context), F(sd_draft_query_t, n_context),
        F(sd_draft_query_t, k), F(sd_draft_query_t, temperature), F(sd_draft_query_t, seed), END();
    BEGIN(sd_draft_proposal_t), F(sd_draft_proposal_t, tokens), F(sd_draft_proposal_t, capacity),
        F(sd_draft_proposal_t, n), F(sd_draft_proposal_t, evidence), F(sd_draft_proposal_t, parent),
        F(sd_draft_proposal_t, is_tree), END();
    BEGIN(sd_draft_outcome_t), F(sd_draft_outcome_t, n_accepted), F(sd_draft_outcome_t, next_token),
        F(sd_draft_outcome_t, accepted), F(sd_draft_outcome_t, from_tree), END();
    BEGIN(sd_callback_drafter_t), F(sd_callback_drafter_t, user), F(sd_callback_drafter_t, create),
        F(sd_callback_drafter_t, begin), F(sd_callback_drafter_t, propose),
        F(sd_callback_drafter_t, accept), F(sd_callback_drafter_t, rollback),
        F(sd_callback_drafter_t, destroy), END();
    BEGIN(sd_step_info_t), F(sd_step_info_t, request), F(sd_step_info_t, step),
        F(sd_step_info_t, pos), F(sd_step_info_t, k), F(sd_step_info_t, n_drafted),
        F(sd_step_info_t, drafted), F(sd_step_info_t, n_accepted), F(sd_step_info_t, next_token),
        F(sd_step_info_t, evidence), F(sd_step_info_t, draft_seconds),
        F(sd_step_info_t, verify_seconds), END();
    BEGIN(sd_spec_config_t), F(sd_spec_config_t, drafter), F(sd_spec_config_t, draft_model),
        F(sd_spec_config_t, ngram_min), F(sd_spec_config_t, ngram_max),
        F(sd_spec_config_t, layerskip_layers), F(sd_spec_config_t, k), F(sd_spec_config_t, adaptive),
        F(sd_spec_config_t, min_confidence), F(sd_spec_config_t, draft_ranks),
        F(sd_spec_config_t, callback), F(sd_spec_config_t, on_step),
        F(sd_spec_config_t, on_step_user), F(sd_spec_config_t, tree_levels),
        F(sd_spec_config_t, tree_width), F(sd_spec_config_t, tree_budget),
        F(sd_spec_config_t, tree_sample), END();
    BEGIN(sd_engine_params_t), F(sd_engine_params_t, model), F(sd_engine_params_t, spec),
        F(sd_engine_params_t, max_active), F(sd_engine_params_t, max_queued),
        F(sd_engine_params_t, max_batch_rows), F(sd_engine_params_t, load_aware_drafts),
        F(sd_engine_params_t, max_kv_positions), F(sd_engine_params_t, prefix_cache), END();
    BEGIN(sd_histogram_t), F(sd_histogram_t, n_bounds), F(sd_histogram_t, bounds),
        F(sd_histogram_t, counts), F(sd_histogram_t, sum), F(sd_histogram_t, count), END();
    BEGIN(sd_engine_metrics_t), F(sd_engine_metrics_t, submitted),
        F(sd_engine_metrics_t, rejected_busy), F(sd_engine_metrics_t, rejected_invalid),
        F(sd_engine_metrics_t, finished), F(sd_engine_metrics_t, prompt_tokens),
        F(sd_engine_metrics_t, generated_tokens), F(sd_engine_metrics_t, steps),
        F(sd_engine_metrics_t, batch_rows), F(sd_engine_metrics_t, drafted),
        F(sd_engine_metrics_t, accepted), F(sd_engine_metrics_t, draft_forwards),
        F(sd_engine_metrics_t, draft_rows), F(sd_engine_metrics_t, queued),
        F(sd_engine_metrics_t, active), F(sd_engine_metrics_t, kv_positions_used),
        F(sd_engine_metrics_t, kv_positions_cap), F(sd_engine_metrics_t, kv_bytes_used),
        F(sd_engine_metrics_t, cached_prompt_tokens), F(sd_engine_metrics_t, kv_blocks_used),
        F(sd_engine_metrics_t, kv_blocks_cached), F(sd_engine_metrics_t, kv_blocks_free),
        F(sd_engine_metrics_t, kv_block_evictions),
        F(sd_engine_metrics_t, step_seconds), F(sd_engine_metrics_t, ttft_seconds),
        F(sd_engine_metrics_t, queue_seconds), F(sd_engine_metrics_t, acceptance_rate),
        F(sd_engine_metrics_t, accepted_len), END();
    printf("},\n \"stop_reasons\": [%d, %d, %d, %d, %d, %d, %d, %d, %d], \"stop_count\": %d}\n",
           SD_STOP_NONE, SD_STOP_MAX_TOKENS, SD_STOP_EOS, SD_STOP_TOKEN, SD_STOP_STRING,
           SD_STOP_CALLBACK, SD_STOP_ERROR, SD_STOP_CANCELLED, SD_STOP_CONTEXT_FULL,
           SD_STOP_REASON_COUNT);
}

static int synth(char **argv)
{
    sd_synth_spec_t s;
    sd_synth_spec_default(&s);
    s.tokenizer = !strcmp(argv[3], "gpt2")    ? SD_SYNTH_TOKENIZER_GPT2
                  : !strcmp(argv[3], "llama") ? SD_SYNTH_TOKENIZER_LLAMA
                                              : SD_SYNTH_TOKENIZER_NONE;
    s.n_vocab = atoi(argv[4]);
    s.seed = strtoull(argv[5], NULL, 10);
    s.n_ctx = 512;
    s.weight_scale = 0.08f;
    sd_status_t st = sd_synth_write_file(&s, argv[2]);
    if (st != SD_OK) fprintf(stderr, "py_helper: %s\n", sd_last_error());
    return st == SD_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "abi")) return abi(), 0;
    if (argc == 6 && !strcmp(argv[1], "synth")) return synth(argv);
    fprintf(stderr, "usage: py_helper abi | py_helper synth PATH gpt2|llama|none N_VOCAB SEED\n");
    return 2;
}
