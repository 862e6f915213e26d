/* Fuzz target: the response writers of `specdec serve` — the Server-Sent Events stream
 * (apps/serve/http_stream.c: the token callback's pieces, the events, the reader MHD pulls
 * bytes from in chunks of any size) and the JSON bodies (openai_reply.c: chunks, the final
 * and usage chunks, the non-streamed response, the error event). http_stream.c's pieces are
 * static, so this file includes it and plays the scheduler (on_token), the waiter (the
 * result) and MHD (read_stream) itself.
 *
 * Input: byte 0 — bit 0 completions (else chat), bit 1 include_usage, bit 2 the generation
 * fails (an error event), bits 3-6 the stop reason (modulo their count); byte 1 — the size
 * of MHD's reads (0: 4096). Then length-prefixed records (one byte of length): the model id,
 * the drafter's name (empty: none), then the text pieces the engine released.
 * Properties:
 *   - the bytes are UTF-8 and well-formed SSE: "data: <one line>\n\n" events, the last one
 *     "data: [DONE]", nothing after it, whatever the read size;
 *   - every event is a JSON object of the expected shape: id, object, created and model of
 *     the reply; chat's opening role chunk; one content chunk per non-empty piece, its text
 *     the piece made valid UTF-8; the final chunk's finish_reason; the usage chunk when
 *     asked; an error event instead when the generation failed;
 *   - when no piece splits a character (the engine's promise), the deltas join to exactly
 *     the non-streamed response's content. */
#include "apps/serve/http_stream.c"

#include <cjson/cJSON.h>

#include "core/unicode.h"
#include "fuzz/fuzz.h"

static int utf8_valid(const char *s, size_t n)
{
    size_t adv;
    for (size_t i = 0; i < n; i += adv)
        if (sd_utf8_decode((const uint8_t *)s + i, n - i, &adv) >= SD_UTF8_INVALID) return 0;
    return 1;
}

/* text[n] with every undecodable byte and NUL replaced by U+FFFD (openai_reply.c's rule). */
static char *cleaned(const char *text, size_t n)
{
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) abort();
    size_t adv;
    for (size_t i = 0; i < n; i += adv) {
        uint32_t cp = sd_utf8_decode((const uint8_t *)text + i, n - i, &adv);
        int keep = cp != 0 && cp < SD_UTF8_INVALID;
        memcpy(o, keep ? text + i : "\xEF\xBF\xBD", keep ? adv : 3);
        o += keep ? adv : 3;
    }
    *o = '\0';
    return out;
}

/* 1 when a valid character of whole[len] starts before `cut` and ends after it. */
static int splits_char(const char *whole, size_t len, size_t cut)
{
    for (size_t lead = cut; lead > 0 && cut - lead < 4;) {
        lead--;
        size_t adv;
        uint32_t cp = sd_utf8_decode((const uint8_t *)whole + lead, len - lead, &adv);
        if (cp < SD_UTF8_INVALID && lead + adv > cut) return 1;
    }
    return 0;
}

static const char *str_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

typedef struct piece {
    const char *p;
    size_t n;
} piece_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    int flags = fuzz_u8(&in), chunk = fuzz_u8(&in);
    oai_reply_t reply = {.endpoint = flags & 1 ? OAI_COMPLETIONS : OAI_CHAT, .created = 1764750000,
                         .k = 4, .seed = 7};
    snprintf(reply.id, sizeof reply.id, "%s-%d", flags & 1 ? "cmpl" : "chatcmpl", 42);
    int include_usage = (flags >> 1) & 1, fails = (flags >> 2) & 1;
    sd_stop_reason_t reason = (sd_stop_reason_t)(((flags >> 3) & 15) % SD_STOP_REASON_COUNT);
    size_t max = chunk ? chunk : 4096;
    /* records */
    piece_t rec[256];
    size_t n_rec = 0;
    while (in.n > 0 && n_rec < 256) {
        size_t len = fuzz_u8(&in);
        if (len > in.n) len = in.n;
        rec[n_rec++] = (piece_t){(const char *)in.p, len};
        in.p += len, in.n -= len;
    }
    char *model_id = fuzz_strndup((const uint8_t *)(n_rec > 0 ? rec[0].p : ""), n_rec > 0 ? rec[0].n : 0);
    char *drafter = fuzz_strndup((const uint8_t *)(n_rec > 1 ? rec[1].p : ""), n_rec > 1 ? rec[1].n : 0);
    reply.model_id = model_id;
    reply.drafter = drafter[0] ? drafter : NULL;
    size_t first = n_rec < 2 ? n_rec : 2;

    /* the engine: pieces through the token callback, then the result */
    stream_t *st = stream_new(&reply, include_usage, 1, 0);
    FUZZ_CHECK(st != NULL, "stream_new");
    choice_t *ch = &st->choices[0];
    size_t total = 0;
    for (size_t i = first; i < n_rec; i++) total += rec[i].n;
    char *whole = malloc(total + 1);
    if (!whole) abort();
    size_t at = 0;
    int splits = 0;
    for (size_t i = first; i < n_rec; i++) {
        FUZZ_CHECK(on_token(ch, 1, rec[i].p, rec[i].n) == 0, "on_token asked to stop");
        memcpy(whole + at, rec[i].p, rec[i].n);
        at += rec[i].n;
    }
    for (size_t i = first, cut = 0; i + 1 < n_rec; i++) splits |= splits_char(whole, total, cut += rec[i].n);
    sd_gen_result_t result = {.text = whole, .text_len = total, .n_prompt = 5, .n_tokens = n_rec,
                              .stop_reason = fails ? SD_STOP_ERROR : reason};
    pthread_mutex_lock(&st->lock);
    ch->status = fails ? SD_ERR_DEVICE : reason == SD_STOP_CANCELLED ? SD_ERR_CANCELLED : SD_OK;
    ch->result = (sd_gen_result_t){0}; /* freed by free_stream: ours stays ours */
    ch->result.stop_reason = result.stop_reason;
    ch->result.n_prompt = result.n_prompt, ch->result.n_tokens = result.n_tokens;
    ch->finished = 1;
    st->n_finished = 1;
    pthread_mutex_unlock(&st->lock);

    /* MHD: pull the bytes in reads of `max` */
    size_t cap = 4096, got = 0;
    char *sse = malloc(cap), buf[4096];
    if (!sse) abort();
    for (;;) { /* every read makes progress, so this ends (a stream that never does is a
                  libFuzzer timeout) */
        ssize_t r = read_stream(st, got, buf, max);
        if (r == MHD_CONTENT_READER_END_OF_STREAM) break;
        FUZZ_CHECK(r > 0 && (size_t)r <= max, "read_stream returned %zd for %zu", r, max);
        if (got + (size_t)r > cap && !(sse = realloc(sse, cap = 2 * (got + (size_t)r)))) abort();
        memcpy(sse + got, buf, (size_t)r);
        got += (size_t)r;
    }
    free_stream(st);
    FUZZ_CHECK(utf8_valid(sse, got), "the event stream is not UTF-8");

    /* parse it back */
    char *deltas = malloc(3 * total + 1);
    if (!deltas) abort();
    size_t n_deltas = 0, pos = 0, n_events = 0, next_piece = first;
    int seen_done = 0, seen_final = 0, seen_usage = 0, seen_error = 0;
    while (pos < got) {
        FUZZ_CHECK(!seen_done, "bytes after data: [DONE]");
        const char *end = memchr(sse + pos, '\n', got - pos);
        FUZZ_CHECK(end && end + 1 < sse + got && end[1] == '\n', "an event not ended by a blank line");
        size_t line = (size_t)(end - (sse + pos));
        FUZZ_CHECK(line > 6 && memcmp(sse + pos, "data: ", 6) == 0, "a line that is not data:");
        char *payload = fuzz_strndup((const uint8_t *)sse + pos + 6, line - 6);
        pos += line + 2;
        if (!strcmp(payload, "[DONE]")) {
            seen_done = 1;
            free(payload);
            continue;
        }
        cJSON *ev = cJSON_Parse(payload);
        FUZZ_CHECK(cJSON_IsObject(ev), "event %zu is not a JSON object: %s", n_events, payload);
        n_events++;
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(ev, "error");
        if (err) {
            FUZZ_CHECK(fails && !seen_error && !seen_final, "an error event: %s", payload);
            seen_error = 1;
            FUZZ_CHECK(str_field(err, "message") && str_field(err, "type"), "error event: %s", payload);
            cJSON_Delete(ev), free(payload);
            continue;
        }
        const char *object = str_field(ev, "object"), *id = str_field(ev, "id");
        const char *model = str_field(ev, "model");
        char *want_model = cleaned(model_id, strlen(model_id));
        FUZZ_CHECK(id && !strcmp(id, reply.id) && model && !strcmp(model, want_model) && object &&
                       !strcmp(object, flags & 1 ? "text_completion" : "chat.completion.chunk"),
                   "chunk header: %s", payload);
        free(want_model);
        const cJSON *choices = cJSON_GetObjectItemCaseSensitive(ev, "choices");
        FUZZ_CHECK(cJSON_IsArray(choices), "choices: %s", payload);
        if (cJSON_GetArraySize(choices) == 0) {
            FUZZ_CHECK(include_usage && seen_final && !seen_usage, "usage chunk out of place");
            FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(ev, "usage") &&
                           cJSON_GetObjectItemCaseSensitive(ev, "specdec"), "usage chunk: %s", payload);
            seen_usage = 1;
            cJSON_Delete(ev), free(payload);
            continue;
        }
        FUZZ_CHECK(!seen_final, "a chunk after the final one");
        const cJSON *c = cJSON_GetArrayItem(choices, 0);
        const cJSON *finish = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        const char *text;
        if (flags & 1) {
            text = str_field(c, "text");
        } else {
            const cJSON *delta = cJSON_GetObjectItemCaseSensitive(c, "delta");
            FUZZ_CHECK(cJSON_IsObject(delta), "delta: %s", payload);
            if (n_events == 1) {
                FUZZ_CHECK(str_field(delta, "role") && !strcmp(str_field(delta, "role"), "assistant"),
                           "the opening chunk: %s", payload);
                cJSON_Delete(ev), free(payload);
                continue;
            }
            text = str_field(delta, "content");
        }
        if (cJSON_IsString(finish)) {
            int length = reason == SD_STOP_MAX_TOKENS || reason == SD_STOP_CONTEXT_FULL;
            FUZZ_CHECK(!strcmp(finish->valuestring, length ? "length" : "stop"),
                       "finish_reason %s for stop reason %d", finish->valuestring, (int)reason);
            FUZZ_CHECK(!fails, "a final chunk for a failed generation");
            FUZZ_CHECK(!text || !text[0], "the final chunk carries text: %s", payload);
            seen_final = 1;
        } else {
            FUZZ_CHECK(cJSON_IsNull(finish) && text && text[0], "a content chunk: %s", payload);
            while (next_piece < n_rec && rec[next_piece].n == 0) next_piece++;
            FUZZ_CHECK(next_piece < n_rec, "more content chunks than pieces");
            char *want = cleaned(rec[next_piece].p, rec[next_piece].n);
            FUZZ_CHECK(!strcmp(text, want), "chunk %zu is not its piece made UTF-8", next_piece);
            free(want);
            next_piece++;
            size_t tl = strlen(text);
            memcpy(deltas + n_deltas, text, tl);
            n_deltas += tl;
        }
        cJSON_Delete(ev), free(payload);
    }
    while (next_piece < n_rec && rec[next_piece].n == 0) next_piece++;
    FUZZ_CHECK(next_piece == n_rec, "piece %zu never sent", next_piece);
    FUZZ_CHECK(seen_done, "no data: [DONE]");
    FUZZ_CHECK(fails ? seen_error && !seen_final : seen_final && !seen_error,
               "the end of the stream: final %d, error %d", seen_final, seen_error);
    FUZZ_CHECK(seen_usage == (include_usage && !fails), "usage chunk %d", seen_usage);

    /* the non-streamed response: valid JSON whose content joins the deltas */
    char *body = oai_response_json(&reply, &result, 1);
    FUZZ_CHECK(body && utf8_valid(body, strlen(body)), "the response is not UTF-8");
    cJSON *resp = cJSON_Parse(body);
    FUZZ_CHECK(cJSON_IsObject(resp), "the response is not JSON: %s", body);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    const char *content = flags & 1 ? str_field(c0, "text")
                                    : str_field(cJSON_GetObjectItemCaseSensitive(c0, "message"), "content");
    char *want = cleaned(whole, total);
    FUZZ_CHECK(content && !strcmp(content, want), "the response's content is not the text made UTF-8");
    if (!splits)
        FUZZ_CHECK(n_deltas == strlen(content) && memcmp(deltas, content, n_deltas) == 0,
                   "the streamed deltas do not join to the response's content");
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(resp, "specdec");
    char *want_drafter = reply.drafter ? cleaned(drafter, strlen(drafter)) : NULL;
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(x, "drafter");
    FUZZ_CHECK(reply.drafter ? cJSON_IsString(dr) && !strcmp(dr->valuestring, want_drafter)
                             : cJSON_IsNull(dr), "specdec.drafter");
    free(want_drafter);
    free(want);
    cJSON_Delete(resp);
    free(body);
    char *models = oai_models_json(model_id, 1);
    FUZZ_CHECK(models && utf8_valid(models, strlen(models)), "the /v1/models body is not UTF-8");
    cJSON *list = cJSON_Parse(models);
    FUZZ_CHECK(cJSON_IsObject(list), "the /v1/models body is not JSON: %s", models);
    cJSON_Delete(list);
    free(models);
    free(deltas), free(sse), free(whole), free(model_id), free(drafter);
    return 0;
}
