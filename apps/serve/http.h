/* Pieces of the HTTP layer shared by http.c (dispatch, bodies, plain responses), routes.c
 * (the endpoints) and http_stream.c (Server-Sent Events). Only these files see
 * libmicrohttpd. */
#ifndef SPECDEC_APPS_SERVE_HTTP_H
#define SPECDEC_APPS_SERVE_HTTP_H

#include <microhttpd.h>

#include "openai.h"
#include "serve.h"

/* Count a response under its status (/metrics: specdec_requests_total). */
void http_count_response(serve_t *s, int status);
/* Queue r (NULL: MHD_NO, the connection closes) with its status, Retry-After on 429 and
 * 503, WWW-Authenticate on 401 and Connection: close; count it; destroy our reference. */
enum MHD_Result http_queue(serve_t *s, struct MHD_Connection *c, int status,
                           struct MHD_Response *r);
/* Queue a response with body[len] (malloc'd, taken; NULL = out of memory: a 500) and count
 * it under its status. */
enum MHD_Result http_respond(serve_t *s, struct MHD_Connection *c, int status,
                             const char *content_type, char *body, size_t len);
/* http_respond with JSON text (malloc'd, taken; NULL = out of memory: a 500). */
enum MHD_Result http_respond_json(serve_t *s, struct MHD_Connection *c, int status, char *body);
/* Queue the OpenAI error body of *err with its status (Retry-After on 429 and 503). */
enum MHD_Result http_respond_error(serve_t *s, struct MHD_Connection *c, const oai_error_t *err);
/* The same for an error built here: status, type, code (NULL: null), the message's format. */
enum MHD_Result http_respond_errorf(serve_t *s, struct MHD_Connection *c, int status,
                                    const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* The response to a failed sd_engine_submit: 503 while stopping, else as
 * oai_error_from_status (429 for SD_ERR_BUSY). */
enum MHD_Result http_respond_submit_error(serve_t *s, struct MHD_Connection *c, sd_status_t st);

/* Submit req and answer with an event stream (stream: true): a chunk per generated text
 * piece, the final chunk, the usage chunk when asked, then "data: [DONE]". A client that
 * goes away cancels the request. */
enum MHD_Result http_stream_generation(serve_t *s, struct MHD_Connection *c,
                                       const oai_request_t *req, const oai_reply_t *reply);

#endif
