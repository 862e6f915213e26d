/* Fuzz target: chat-template rendering (tokenizer/chat_template.c) and the tokens of a chat
 * (sd_chat_render_marked + sd_tokenizer_encode_marked, and the public sd_chat_tokenize).
 *
 * Input: byte 0 picks the template — 0 SmolLM2's, 1 Qwen2.5's, 2 Llama-3, 3 Llama-2 (the
 * four of tests/test_tokenizer_chat.c), 4 a bare "<|im_start|>", 5 none, 6 one not
 * recognised, 7 the input's own (its first field); byte 1: bit 0 add_generation_prompt, bit 1
 * the BOS/EOS texts ("<s>"/"</s>" instead of "<|begin_of_text|>"/"<|eot_id|>"). Then fields
 * separated by NUL: role, content, role, content, ... (a role "s", "u" or "a" is system, user,
 * assistant; any other role of one byte b, or empty (b = 0), is system/user/assistant by b % 3;
 * longer roles are taken as they are). tests/fuzz/chat_jinja.py renders the same corpus with jinja2 for templates 0-3
 * (FUZZ_CHAT_PRINT=1 makes this program print each template and rendering for it).
 * Properties:
 *   - the size query, a buffer one short and an exact buffer follow the
 *     SD_ERR_BUFFER_TOO_SMALL convention, and the marked and plain renderings agree; the only
 *     refusal is Llama-2's role alternation (SD_ERR_INVALID_ARG);
 *   - ChatML: the bytes marked as data are exactly each message's role and content in order;
 *   - text is data: tokenizing the chat gives the same control tokens as the same chat with
 *     every '<' in roles and contents replaced (no special token can start there) — a
 *     message that spells "<|im_end|>" adds no control token — and decoding the tokens gives
 *     the rendered text back;
 *   - sd_chat_tokenize on a model with a ChatML template gives exactly those tokens. */
#include "fuzz/fuzz.h"
#include "fuzz/fuzz_model.h"
#include "gguf/gguf.h"
#include "gguf/synthetic.h"
#include "model/model.h"
#include "support/chat_templates.h"
#include "tokenizer/tokenizer_impl.h"

#define MAX_MSGS 64

static sd_tokenizer_t *tok;   /* byte-level, no merges, the specials of every template */
static sd_model_t *chatml;    /* a synthetic model with a ChatML template, for sd_chat_tokenize */

/* The synthetic byte-level vocabulary plus the control tokens of the Llama templates. */
static void build_tokenizer(const gguf_file_t *synth)
{
    static const char *const extra[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                        "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>"};
    const gguf_kv_t *toks, *types, *merges;
    if (gguf_get_arr(synth, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &toks) != SD_OK ||
        gguf_get_arr(synth, "tokenizer.ggml.token_type", GGUF_TYPE_COUNT, &types) != SD_OK ||
        gguf_get_arr(synth, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &merges) != SD_OK)
        abort();
    size_t n = toks->arr_n, ne = sizeof extra / sizeof extra[0];
    const char **strs = calloc(n + ne, sizeof *strs);
    int32_t *ty = calloc(n + ne, sizeof *ty);
    const char **ms = calloc(merges->arr_n + 1, sizeof *ms);
    for (size_t i = 0; i < n; i++) {
        strs[i] = fuzz_strndup((const uint8_t *)toks->arr_strs[i].data, toks->arr_strs[i].len);
        ty[i] = (int32_t)gguf_arr_int(types, i);
    }
    for (size_t i = 0; i < ne; i++) strs[n + i] = extra[i], ty[n + i] = SD_TOKTYPE_CONTROL;
    for (size_t i = 0; i < merges->arr_n; i++)
        ms[i] = fuzz_strndup((const uint8_t *)merges->arr_strs[i].data, merges->arr_strs[i].len);
    gguf_writer_t *w;
    void *buf;
    size_t size;
    gguf_file_t *f;
    if (gguf_writer_new(&w) != SD_OK ||
        gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2") != SD_OK ||
        gguf_writer_set_str(w, "tokenizer.ggml.pre", "smollm") != SD_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, n + ne) != SD_OK ||
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ty, n + ne) != SD_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", ms, merges->arr_n) != SD_OK ||
        gguf_writer_write_buffer(w, &buf, &size) != SD_OK || gguf_open_buffer(buf, size, &f) != SD_OK ||
        sd_tokenizer_load(f, &tok) != SD_OK) {
        fprintf(stderr, "fuzz_chat: the test vocabulary: %s\n", sd_last_error());
        exit(1);
    }
    gguf_close(f);
    gguf_writer_free(w);
    free(buf); /* the tokenizer holds copies */
    for (size_t i = 0; i < n; i++) free((char *)strs[i]);
    for (size_t i = 0; i < merges->arr_n; i++) free((char *)ms[i]);
    free(strs), free(ty), free(ms);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("SPECDEC_LOG", "error", 1);
    sd_synth_spec_t s;
    sd_synth_spec_default(&s); /* gpt2 tokenizer, ChatML template */
    chatml = fuzz_synth_model(&s);
    build_tokenizer(chatml->gguf);
    return 0;
}

typedef struct rendered {
    char *text;
    uint8_t *markup;
    size_t len;
    sd_status_t status;
} rendered_t;

static rendered_t render(const char *tmpl, const char *bos, const char *eos,
                         const sd_chat_message_t *m, size_t n, int gen)
{
    rendered_t r = {0};
    size_t len = 0, len2 = 0;
    sd_status_t s = sd_chat_render_marked(tmpl, bos, eos, m, n, gen, NULL, NULL, 0, &len);
    if (s == SD_ERR_INVALID_ARG) {
        FUZZ_CHECK(strstr(sd_last_error(), "Llama-2 roles must alternate"), "refused: %s",
                   sd_last_error());
        r.status = s;
        return r;
    }
    FUZZ_CHECK(s == SD_ERR_BUFFER_TOO_SMALL, "size query: %s: %s", sd_status_string(s),
               sd_last_error());
    r.text = malloc(len + 1), r.markup = malloc(len + 1);
    char *plain = malloc(len + 1);
    if (!r.text || !r.markup || !plain) abort();
    s = sd_chat_render_marked(tmpl, bos, eos, m, n, gen, r.text, r.markup, len, &len2);
    FUZZ_CHECK(s == SD_ERR_BUFFER_TOO_SMALL && len2 == len, "a buffer one short: %s, %zu vs %zu",
               sd_status_string(s), len2, len);
    s = sd_chat_render_marked(tmpl, bos, eos, m, n, gen, r.text, r.markup, len + 1, &len2);
    FUZZ_CHECK(s == SD_OK && len2 == len && r.text[len] == '\0', "exact buffer: %s",
               sd_status_string(s));
    s = sd_chat_render(tmpl, bos, eos, m, n, gen, plain, len + 1, &len2);
    FUZZ_CHECK(s == SD_OK && len2 == len && memcmp(plain, r.text, len) == 0,
               "sd_chat_render and sd_chat_render_marked differ");
    free(plain);
    r.len = len;
    return r;
}

static int32_t *encode(const char *text, size_t len, const uint8_t *markup, size_t *n)
{
    size_t need = 0;
    sd_status_t s = sd_tokenizer_encode_marked(tok, text, len, SD_TOKENIZE_PARSE_SPECIAL, markup,
                                               NULL, 0, &need);
    FUZZ_CHECK(s == SD_OK || s == SD_ERR_BUFFER_TOO_SMALL, "encode: %s", sd_last_error());
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    if (!ids) abort();
    s = sd_tokenizer_encode_marked(tok, text, len, SD_TOKENIZE_PARSE_SPECIAL, markup, ids,
                                   need + 1, n);
    FUZZ_CHECK(s == SD_OK && *n == need, "encode: %s", sd_last_error());
    return ids;
}

/* The control tokens of ids[n], in order, into out (returns how many). */
static size_t controls(const int32_t *ids, size_t n, int32_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (tok->type[ids[i]] == SD_TOKTYPE_CONTROL) out[k++] = ids[i];
    return k;
}

static void check_chatml_marks(const rendered_t *r, const sd_chat_message_t *m, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        for (int part = 0; part < 2; part++) {
            const char *s = part ? m[i].content : m[i].role;
            for (size_t j = 0; s[j]; j++) {
                while (k < r->len && r->markup[k]) k++;
                FUZZ_CHECK(k < r->len && r->text[k] == s[j],
                           "ChatML: message %zu's %s byte %zu is not the next data byte", i,
                           part ? "content" : "role", j);
                k++;
            }
        }
    while (k < r->len && r->markup[k]) k++;
    FUZZ_CHECK(k == r->len, "ChatML: data bytes beyond the messages' at %zu", k);
}

/* sd_chat_tokenize on the ChatML model: its tokens decode to sd_chat_apply's text, and its
 * control tokens are those of the cleaned chat. Returns the control tokens in *ctl. */
static int32_t *public_tokens(const sd_chat_message_t *m, size_t n, int gen, size_t *n_ctl)
{
    const sd_tokenizer_t *t = chatml->tokenizer;
    size_t need = 0, got = 0, pl = 0, al = 0;
    sd_status_t s = sd_chat_tokenize(chatml, m, n, gen, SD_TOKENIZE_ADD_BOS, NULL, 0, &need);
    FUZZ_CHECK(s == SD_OK || s == SD_ERR_BUFFER_TOO_SMALL, "sd_chat_tokenize: %s", sd_last_error());
    int32_t *ids = malloc((need + 1) * sizeof *ids), *ctl = malloc((need + 1) * sizeof *ctl);
    if (!ids || !ctl) abort();
    s = sd_chat_tokenize(chatml, m, n, gen, SD_TOKENIZE_ADD_BOS, ids, need + 1, &got);
    FUZZ_CHECK(s == SD_OK && got == need, "sd_chat_tokenize: %s", sd_last_error());
    s = sd_chat_apply(chatml, m, n, gen, NULL, 0, &al);
    FUZZ_CHECK(s == SD_ERR_BUFFER_TOO_SMALL, "sd_chat_apply: %s", sd_last_error());
    char *applied = malloc(al + 1), *decoded = malloc(4 * got + al + 16);
    if (!applied || !decoded) abort();
    FUZZ_CHECK(sd_chat_apply(chatml, m, n, gen, applied, al + 1, &al) == SD_OK, "sd_chat_apply");
    size_t first = got > 0 && t->add_bos && ids[0] == t->bos;
    FUZZ_CHECK(sd_detokenize(chatml, ids + first, got - first, decoded, 4 * got + al + 16, &pl) ==
                   SD_OK, "detokenize: %s", sd_last_error());
    size_t want = 0; /* bytes without a byte-level token are dropped, as HF does */
    for (size_t i = 0; i < al; i++)
        if (t->byte_tok[(uint8_t)applied[i]] >= 0) applied[want++] = applied[i];
    FUZZ_CHECK(pl == want && memcmp(decoded, applied, want) == 0,
               "sd_chat_tokenize's tokens decode to %zu bytes, not sd_chat_apply's text (%zu)", pl,
               want);
    *n_ctl = 0;
    for (size_t i = 0; i < got; i++)
        if (t->type[ids[i]] == SD_TOKTYPE_CONTROL) ctl[(*n_ctl)++] = ids[i];
    free(applied), free(decoded), free(ids);
    return ctl;
}

static void print_hex(const char *what, const char *s, size_t n)
{
    printf("%s ", what);
    for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char)s[i]);
    printf("\n");
}

/* The template and what it rendered, for tests/fuzz/chat_jinja.py. */
static void print_render(const char *tmpl, const rendered_t *r)
{
    print_hex("template", tmpl ? tmpl : "", tmpl ? strlen(tmpl) : 0);
    if (r->status == SD_OK) print_hex("render", r->text, r->len);
    else printf("refused %s\n", sd_status_string(r->status));
    fflush(stdout);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fixed[] = {SMOL_TMPL, QWEN_TMPL, LLAMA3_TMPL, LLAMA2_TMPL,
                                        "<|im_start|>", NULL, "{{ messages }}"};
    fuzz_in_t in = {data, size};
    int which = fuzz_u8(&in) & 7, opts = fuzz_u8(&in);
    const uint8_t *fp = NULL;
    char *custom = NULL;
    const char *tmpl = which < 7 ? fixed[which] : NULL;
    if (which == 7) {
        size_t len = fuzz_field(&in, 0, &fp);
        tmpl = custom = fuzz_strndup(fp, len);
    }
    int gen = opts & 1;
    const char *bos = opts & 2 ? "<s>" : "<|begin_of_text|>", *eos = opts & 2 ? "</s>" : "<|eot_id|>";
    sd_chat_message_t m[MAX_MSGS] = {{0}}, clean[MAX_MSGS] = {{0}};
    char *owned[4 * MAX_MSGS];
    size_t n = 0, n_owned = 0;
    while (in.n > 0 && n < MAX_MSGS) {
        size_t len = fuzz_field(&in, 0, &fp);
        char *role = fuzz_strndup(fp, len);
        len = fuzz_field(&in, 0, &fp);
        char *content = fuzz_strndup(fp, len);
        static const char *const roles[] = {"system", "user", "assistant"};
        const char *r = !strcmp(role, "s") ? "system" : !strcmp(role, "u") ? "user"
                      : !strcmp(role, "a") ? "assistant"
                      : strlen(role) <= 1 ? roles[(uint8_t)role[0] % 3] : role;
        m[n] = (sd_chat_message_t){r, content};
        char *cr = strdup(r), *cc = strdup(content);
        for (char *p = cr; *p; p++) if (*p == '<') *p = 'x';
        for (char *p = cc; *p; p++) if (*p == '<') *p = 'x';
        clean[n] = (sd_chat_message_t){cr, cc};
        owned[n_owned++] = role, owned[n_owned++] = content, owned[n_owned++] = cr;
        owned[n_owned++] = cc;
        n++;
    }
    rendered_t r = render(tmpl, bos, eos, m, n, gen);
    if (getenv("FUZZ_CHAT_PRINT")) print_render(tmpl, &r); /* for chat_jinja.py */
    if (r.status == SD_OK) {
        int chatml_kind = which != 2 && which != 3 &&
                          !(tmpl && !strstr(tmpl, "<|im_start|>") &&
                            (strstr(tmpl, "<|start_header_id|>") || strstr(tmpl, "[INST]")));
        if (chatml_kind) check_chatml_marks(&r, m, n);
        rendered_t rc = render(tmpl, bos, eos, clean, n, gen);
        FUZZ_CHECK(rc.status == SD_OK, "the cleaned chat was refused");
        size_t n1, n2;
        int32_t *t1 = encode(r.text, r.len, r.markup, &n1), *t2 = encode(rc.text, rc.len, rc.markup, &n2);
        int32_t *c1 = malloc((n1 + 1) * sizeof *c1), *c2 = malloc((n2 + 1) * sizeof *c2);
        size_t k1 = controls(t1, n1, c1), k2 = controls(t2, n2, c2);
        FUZZ_CHECK(k1 == k2 && memcmp(c1, c2, k1 * sizeof *c1) == 0,
                   "message text became control tokens: %zu control tokens, %zu without '<' "
                   "in the messages", k1, k2);
        /* decoding gives the rendered text (the vocabulary has every byte) */
        size_t at = 0;
        for (size_t i = 0; i < n1; i++) {
            char piece[64];
            size_t pl = 0;
            FUZZ_CHECK(sd_tokenizer_piece(tok, t1[i], piece, sizeof piece, &pl) == SD_OK, "piece");
            FUZZ_CHECK(at + pl <= r.len && memcmp(r.text + at, piece, pl) == 0,
                       "decoding token %zu does not give the rendered text back", i);
            at += pl;
        }
        FUZZ_CHECK(at == r.len, "decoded %zu of %zu rendered bytes", at, r.len);
        free(t1), free(t2), free(c1), free(c2);
        size_t p1, p2;
        int32_t *pc1 = public_tokens(m, n, gen, &p1), *pc2 = public_tokens(clean, n, gen, &p2);
        FUZZ_CHECK(p1 == p2 && memcmp(pc1, pc2, p1 * sizeof *pc1) == 0,
                   "sd_chat_tokenize: message text became control tokens (%zu vs %zu)", p1, p2);
        free(pc1), free(pc2);
        free(rc.text), free(rc.markup);
    }
    free(r.text), free(r.markup);
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    free(custom);
    return 0;
}
