/* Pieces of the HTTP layer shared by http.c (routing, bodies, plain responses) and
 * http_stream.c (Server-Sent Events). Only these two files see libmicrohttpd. */
#ifndef SPECDEC_APPS_SERVE_HTTP_H
#define SPECDEC_APPS_SERVE_HTTP_H

#include <microhttpd.h>

#include "openai.h"
#include "serve.h"

/* Queue r (NULL: MHD_NO, the connection closes) with its status, Retry-After on 429 and
 * 503; count it; destroy our reference. */
enum MHD_Result http_queue(serve_t *s, struct MHD_Connection *c, int status,
                           struct MHD_Response *r);
/* Queue a response with body[len] (malloc'd, taken; NULL = out of memory: a 500) and count
 * it under its status. */
enum MHD_Result http_respond(serve_t *s, struct MHD_Connection *c, int status,
                             const char *content_type, char *body, size_t len);
/* Queue the OpenAI error body of *err with its status (Retry-After on 429 and 503). */
enum MHD_Result http_respond_error(serve_t *s, struct MHD_Connection *c, const oai_error_t *err);
/* The response to a failed sd_engine_submit: 503 while stopping, else as
 * oai_error_from_status (429 for SD_ERR_BUSY). */
enum MHD_Result http_respond_submit_error(serve_t *s, struct MHD_Connection *c, sd_status_t st);

/* Submit req and answer with an event stream (stream: true): a chunk per generated text
 * piece, the final chunk, the usage chunk when asked, then "data: [DONE]". A client that
 * goes away cancels the request. */
enum MHD_Result http_stream_generation(serve_t *s, struct MHD_Connection *c,
                                       const oai_request_t *req, const oai_reply_t *reply);

#endif
