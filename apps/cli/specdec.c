/* The `specdec` command: run, chat, info, tokenize. Errors print one line to stderr and exit
 * non-zero. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "core/escape.h"
#include "cli.h"
#include "hangtest.h"
#include "launch.h"
#include "apps/serve/serve.h"

static const char usage[] =
    "usage: specdec <command> [options]\n"
    "\n"
    "commands:\n"
    "  run    generate a continuation of a prompt; only the generated text goes to stdout\n"
    "  chat   chat with the model using its chat template (-p for one turn, else stdin lines)\n"
    "  info   print the model's architecture and shape\n"
    "  tokenize  print the token ids of -p TEXT (as `run` feeds them: BOS if the model asks)\n"
    "  serve  OpenAI-compatible HTTP server: serve -m MODEL [--port P] ... (serve --help,\n"
    "         docs/serve.md)\n"
    "  bench  speculative vs target-only decode speed over a prompt set (see bench/README.md)\n"
    "  launch     run N ranks of a command on this node: launch -n N -- specdec run ... (--help)\n"
    "  commbench  allreduce latency and bus bandwidth of the comm backend, under launch or mpirun\n"
    "  hangtest   hang-regression harness: hangtest --ranks N --steps S [--draft-ranks D] [--comm C] [--device D]\n"
    "\n"
    "options (run, chat, tokenize):\n"
    "  -m, --model PATH   GGUF model (default: SmolLM2-135M-Instruct Q4_1 from the cache)\n"
    "  -p, --prompt TEXT  prompt text\n"
    "  -n N               tokens to generate (default 128)\n"
    "  --temp T           temperature; 0 = greedy\n"
    "  --top-k K, --top-p P, --min-p P   sampling filters\n"
    "  --seed S           sampling seed (same seed -> same tokens)\n"
    "  --stop STR         stop before STR (repeatable)\n"
    "  --ignore-eos       do not stop at end-of-text tokens\n"
    "  --draft D          speculative decoding with drafter D: %s\n"
    "                     (ngram: n-grams up to N, default 3; layerskip: the target's first\n"
    "                     L layers, default n_layer / 2; PATH: a draft model, same vocabulary)\n"
    "  --k K              draft length (the maximum when adaptive; default 4, at most 16)\n"
    "  --tree SHAPE       token tree: WxWx... candidates per level (e.g. 4x2x2x1), dynamic:N\n"
    "                     (N nodes), or chain (default); model, layerskip, xvocab, ngram and\n"
    "                     callback drafters\n"
    "  --tree-sample M    sampled static trees of model/layerskip: top (default: the drafter's\n"
    "                     top guesses) or q (children drawn from the drafter's distribution)\n"
    "  --no-adaptive      draft exactly K tokens each step (default: adapt K to acceptance)\n"
    "  --stats            print acceptance rate, accepted-length histogram and timings\n"
    "  --trace FILE       every speculative step as a JSON line (drafts, accepted, k, timings)\n"
    "  --logprobs N       each token's log-probability under the target and its N (0..20)\n"
    "                     most likely alternatives, one JSON line per generation to stderr\n"
    "                     (stdout keeps only the text); --logprobs-file PATH appends it there\n"
    "  --special          parse special tokens like <|im_start|> in the prompt (run, tokenize)\n"
    "                     or in your messages (chat; by default a message is plain text and\n"
    "                     only the chat template's own markup becomes special tokens)\n"
    "  -t, --threads N    CPU threads (default: all cores)\n"
    "  -c, --ctx N        context length (default: min(model, 4096); on a GPU, what fits)\n"
    "  --device D         cpu, cuda, cuda:N or auto (default: SPECDEC_DEVICE, else cuda:0\n"
    "                     when a GPU is present and the run is single-rank, else cpu)\n";

int cmd_run(int argc, char **argv)
{
    cli_gen_opts_t o;
    if (!cli_parse_gen_opts(argc, argv, 2, &o)) return 2;
    if (!o.prompt) return fprintf(stderr, "specdec: error: run needs -p PROMPT\n"), 2;
    sd_model_t *m = NULL;
    sd_status_t s = cli_load_model(&o, &m);
    if (s == SD_OK) s = cli_load_draft(&o);
    if (s != SD_OK) return sd_model_free(m), cli_release(&o), cli_exit_code(s);
    if (!cli_start_trace(&o, m)) return sd_model_free(m), cli_release(&o), CLI_EXIT_ERROR;
    int flags = SD_TOKENIZE_ADD_BOS | (o.parse_special ? SD_TOKENIZE_PARSE_SPECIAL : 0);
    int rc = cli_stop_trace(&o, cli_generate_text(m, o.prompt, flags, &o, NULL));
    sd_model_free(m);
    cli_release(&o);
    return rc;
}

enum { MAX_TURNS = 256 };

/* One chat turn: render the history with the template into token ids (the messages as
 * plain text unless --special), generate, append the reply. */
static int chat_turn(sd_model_t *m, const cli_gen_opts_t *o, sd_chat_message_t *msgs, size_t *n)
{
    int flags = SD_TOKENIZE_ADD_BOS | (o->parse_special ? SD_TOKENIZE_PARSE_SPECIAL : 0);
    size_t n_ids = 0;
    sd_status_t s = sd_chat_tokenize(m, msgs, *n, 1, flags, NULL, 0, &n_ids);
    if (s != SD_OK && s != SD_ERR_BUFFER_TOO_SMALL) return cli_fail("chat template", s);
    int32_t *ids = malloc((n_ids + 1) * sizeof *ids);
    if (!ids) return fprintf(stderr, "specdec: error: out of memory\n"), 1;
    s = sd_chat_tokenize(m, msgs, *n, 1, flags, ids, n_ids, &n_ids);
    if (s != SD_OK) return free(ids), cli_fail("chat template", s);
    char *reply = NULL;
    int rc = cli_generate_ids(m, ids, n_ids, o, &reply);
    free(ids);
    if (rc == 0) {
        msgs[(*n)++] = (sd_chat_message_t){"assistant", reply};
        if (!isatty(STDOUT_FILENO)) putchar('\n'); /* one reply per line */
        fflush(stdout);
    }
    return rc;
}

static char *read_line(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t got = getline(&line, &cap, f);
    if (got < 0) return free(line), NULL;
    if (got > 0 && line[got - 1] == '\n') line[got - 1] = '\0';
    return line;
}

int cmd_chat(int argc, char **argv)
{
    cli_gen_opts_t o;
    if (!cli_parse_gen_opts(argc, argv, 2, &o)) return 2;
    sd_model_t *m = NULL;
    sd_status_t s = cli_load_model(&o, &m);
    if (s == SD_OK) s = cli_load_draft(&o);
    if (s != SD_OK) return sd_model_free(m), cli_release(&o), cli_exit_code(s);
    if (!cli_start_trace(&o, m)) return sd_model_free(m), cli_release(&o), CLI_EXIT_ERROR;
    sd_chat_message_t msgs[MAX_TURNS];
    char *owned[MAX_TURNS];
    size_t n = 0, n_owned = 0;
    int rc = 0, interactive = o.prompt == NULL;
    while (rc == 0 && n + 2 <= MAX_TURNS) {
        char *line = NULL;
        if (interactive) {
            if (isatty(STDIN_FILENO)) fputs("> ", stderr);
            if (!(line = read_line(stdin))) break;
            owned[n_owned++] = line;
        }
        msgs[n++] = (sd_chat_message_t){"user", interactive ? line : o.prompt};
        rc = chat_turn(m, &o, msgs, &n);
        if (rc == 0) owned[n_owned++] = (char *)msgs[n - 1].content;
        if (!interactive) break;
    }
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    rc = cli_stop_trace(&o, rc);
    sd_model_free(m);
    cli_release(&o);
    return rc;
}

/* `specdec tokenize -m MODEL -p TEXT [--special]`: the ids, space-separated, one line on
 * stdout; the count on stderr. */
static int cmd_tokenize(int argc, char **argv)
{
    cli_gen_opts_t o;
    if (!cli_parse_gen_opts(argc, argv, 2, &o)) return 2;
    if (!o.prompt) return cli_release(&o), fprintf(stderr, "specdec: error: tokenize needs -p TEXT\n"), 2;
    sd_model_t *m = NULL;
    sd_status_t s = cli_load_model(&o, &m);
    if (s != SD_OK) return cli_release(&o), cli_exit_code(s);
    int flags = SD_TOKENIZE_ADD_BOS | (o.parse_special ? SD_TOKENIZE_PARSE_SPECIAL : 0);
    size_t len = strlen(o.prompt), n = 0;
    int32_t *ids = malloc((len + 2) * sizeof *ids); /* a token covers a byte or more */
    s = ids ? sd_tokenize(m, o.prompt, len, flags, ids, len + 2, &n) : SD_ERR_OUT_OF_MEMORY;
    int rc = s == SD_OK ? 0 : cli_fail("tokenize", s);
    if (rc == 0 && sd_comm_rank(o.world) == 0) {
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        putchar('\n');
        fprintf(stderr, "specdec: %zu tokens\n", n);
    }
    free(ids);
    sd_model_free(m);
    cli_release(&o);
    return rc;
}

static int cmd_info(int argc, char **argv)
{
    cli_gen_opts_t o;
    if (!cli_parse_gen_opts(argc, argv, 2, &o)) return 2;
    sd_model_t *m = NULL;
    sd_status_t s = cli_load_model(&o, &m);
    if (s != SD_OK) return cli_release(&o), cli_exit_code(s);
    sd_model_info_t i;
    sd_model_get_info(m, &i);
    printf("name: %s\narch: %s\nlayers: %d\nembedding: %d\nffn: %d\nheads: %d\nkv heads: %d\n"
           "vocab: %d\ncontext: %d\nbos: %d\neos: %d\n",
           SD_ESC_STR(i.name), i.arch, i.n_layer, i.n_embd, i.n_ff, i.n_head, i.n_head_kv, i.n_vocab, i.n_ctx,
           i.bos, i.eos);
    sd_model_free(m);
    cli_release(&o);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        cli_fprint_usage(argc < 2 ? stderr : stdout, usage);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "run")) return cmd_run(argc, argv);
    if (!strcmp(argv[1], "chat")) return cmd_chat(argc, argv);
    if (!strcmp(argv[1], "info")) return cmd_info(argc, argv);
    if (!strcmp(argv[1], "tokenize")) return cmd_tokenize(argc, argv);
    if (!strcmp(argv[1], "serve")) return cmd_serve(argc, argv);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc, argv);
    if (!strcmp(argv[1], "launch")) return cmd_launch(argc, argv);
    if (!strcmp(argv[1], "commbench")) return cmd_commbench(argc, argv);
    if (!strcmp(argv[1], "hangtest")) return cmd_hangtest(argc, argv);
    fprintf(stderr, "specdec: error: unknown command '%s' (run, chat, info, tokenize, serve, "
                    "bench, launch, commbench, hangtest)\n", argv[1]);
    return 2;
}
