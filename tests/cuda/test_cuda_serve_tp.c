/* The server under tensor parallelism on CUDA: `ENABLE_INTRA_NODE_COMM=1 specdec launch -n 2
 * -- specdec serve --device cuda` (the cuda_ipc backend) answers a seeded chat completion with
 * exactly the text of a 1-rank CUDA server, and ends cleanly on SIGTERM. A few tokens of a
 * tiny synthetic model (the CUDA host mode is slow). Skips without a device or cuda_ipc. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "kernels/cuda.h"
#include "support/serve_harness.h"

static char model_path[512];

static void need_gpu(void)
{
    int n = 0;
    if (!sd_cuda_built()) cr_skip_test("built without CUDA");
    if (sd_cuda_device_count(&n) != SD_OK || n == 0) cr_skip_test("no CUDA device on this machine");
    if (!sd_comm_cuda_ipc_built()) cr_skip_test("built without the cuda_ipc backend (no NCCL)");
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void teardown(void)
{
    sh_kill_all();
    if (model_path[0]) remove(model_path);
}

TestSuite(cuda_serve_tp, .init = setup, .fini = teardown, .timeout = 600);

/* The "content" string of the reply's first choice (JSON escapes kept: compared as bytes). */
static char *content_of(const sh_reply_t *r)
{
    cr_assert_eq(r->status, 200, "HTTP %ld: %s", r->status, r->body ? r->body : "");
    const char *key = "\"content\":\"", *p = strstr(r->body, key);
    cr_assert(p, "no content in %s", r->body);
    p += strlen(key);
    const char *e = p;
    while (*e && *e != '"') e += (*e == '\\' && e[1]) ? 2 : 1;
    return strndup(p, (size_t)(e - p));
}

static char *chat(int port)
{
    const char *body = "{\"model\":\"synth\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"Tell me a story\"}],\"max_tokens\":6,\"seed\":61,"
                       "\"temperature\":1.0,\"ignore_eos\":true}";
    sh_reply_t r = sh_http(port, NULL, "POST", "/v1/chat/completions", body, NULL);
    char *text = content_of(&r);
    sh_reply_free(&r);
    return text;
}

Test(cuda_serve_tp, two_ranks_answer_as_one)
{
    need_gpu();
    sh_write_model(model_path, sizeof model_path, 256);
    const char *const extra[] = {"--device", "cuda", NULL};
    const char *const env[] = {"ENABLE_INTRA_NODE_COMM=1", "SPECDEC_LOG=info", NULL};
    sh_server_t one = {0}, tp = {0};
    sh_start(&one, model_path, extra, env);
    char *want = chat(one.port);
    sh_stop(&one);
    sh_start_ranks(&tp, 2, model_path, extra, env);
    char *got = chat(tp.port);
    char log[8192];
    cr_expect(strstr(sh_log(&tp, log), "comm: cuda_ipc for 2 ranks"), "not on cuda_ipc: %s", log);
    cr_expect_str_eq(got, want, "two CUDA ranks give the single-rank CUDA text");
    cr_expect_gt(strlen(want), 0, "some text was generated");
    free(got), free(want);
    sh_stop_expect(&tp, 128 + SIGTERM); /* launch's status when every rank exited 0 */
}
