/* Tokenizer built from GGUF metadata: byte-level BPE (tokenizer.ggml.model = "gpt2",
 * with the pre-tokenizer named by tokenizer.ggml.pre) and SentencePiece-style ("llama"). */
#ifndef SPECDEC_TOKENIZER_TOKENIZER_H
#define SPECDEC_TOKENIZER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

typedef struct sd_tokenizer sd_tokenizer_t;

/* SD_ERR_NO_TOKENIZER when the file has no tokenizer.ggml.model;
 * SD_ERR_BAD_MODEL naming the key for inconsistent metadata. */
sd_status_t sd_tokenizer_load(const gguf_file_t *f, sd_tokenizer_t **out);
void sd_tokenizer_free(sd_tokenizer_t *t);

int sd_tokenizer_n_vocab(const sd_tokenizer_t *t);
int32_t sd_tokenizer_bos(const sd_tokenizer_t *t); /* -1 if none */
int32_t sd_tokenizer_eos(const sd_tokenizer_t *t); /* -1 if none */
/* 1 for tokens that end generation (eos, eot, <|im_end|>, <|endoftext|>, ...). */
int sd_tokenizer_is_eog(const sd_tokenizer_t *t, int32_t token);
/* The vocabulary entry as stored (for vocab comparison); NULL if out of range. */
const char *sd_tokenizer_token_text(const sd_tokenizer_t *t, int32_t token, size_t *len);
/* Chat template string (tokenizer.chat_template) or NULL. */
const char *sd_tokenizer_chat_template(const sd_tokenizer_t *t);

/* An encode flag of this layer only (not in specdec.h): the text continues earlier text,
 * so a SentencePiece vocabulary adds no space prefix at its start (cross-vocabulary
 * drafting encodes a context piece by piece). */
#define SD_TOKENIZE_CONTINUATION (1 << 8)

/* 1 for the tokens written as their vocabulary text and produced only by
 * SD_TOKENIZE_PARSE_SPECIAL: control tokens, and user-defined ones of a BPE vocabulary. */
int sd_tokenizer_is_special(const sd_tokenizer_t *t, int32_t token);
/* 1 when the first piece of a text (at its start or after a special token) carries a
 * space the text did not have: SentencePiece with add_space_prefix. */
int sd_tokenizer_space_prefix(const sd_tokenizer_t *t);

/* flags: SD_TOKENIZE_ADD_BOS | SD_TOKENIZE_PARSE_SPECIAL (specdec.h) | SD_TOKENIZE_CONTINUATION. */
sd_status_t sd_tokenizer_encode(const sd_tokenizer_t *t, const char *text, size_t len, int flags,
                                int32_t *out, size_t cap, size_t *n_out);
/* sd_tokenizer_encode where SD_TOKENIZE_PARSE_SPECIAL recognises a special token only where
 * every byte of its text is marked in special_ok[len] (NULL: everywhere); elsewhere its
 * text is plain text. With a chat template's markup marked (sd_chat_render_marked), text
 * that came from a message can never become a control token. */
sd_status_t sd_tokenizer_encode_marked(const sd_tokenizer_t *t, const char *text, size_t len,
                                       int flags, const uint8_t *special_ok, int32_t *out,
                                       size_t cap, size_t *n_out);
/* Raw bytes a token stands for (byte-level decoded, "▁" -> " ", <0xXX> -> byte).
 * Control tokens decode to their text. SD_ERR_BUFFER_TOO_SMALL with *len = needed. */
sd_status_t sd_tokenizer_piece(const sd_tokenizer_t *t, int32_t token, char *buf, size_t cap,
                               size_t *len);

/* Render a chat with a recognised template (ChatML; Llama-2 [INST]; Llama-3 headers).
 * Unknown template -> ChatML with a warning. NUL-terminated output. */
sd_status_t sd_chat_render(const char *chat_template, const char *bos_text, const char *eos_text,
                           const sd_chat_message_t *msgs, size_t n, int add_generation_prompt,
                           char *buf, size_t cap, size_t *len);
/* sd_chat_render that also marks, in markup[cap] (NULL: not wanted), which bytes of buf are
 * the template's own text (1: markers, the BOS/EOS texts, the template's default system
 * message) and which came from a message (0: its role and content, Llama-2's system block). */
sd_status_t sd_chat_render_marked(const char *chat_template, const char *bos_text,
                                  const char *eos_text, const sd_chat_message_t *msgs, size_t n,
                                  int add_generation_prompt, char *buf, uint8_t *markup,
                                  size_t cap, size_t *len);

#endif
