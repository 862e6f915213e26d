/* The listening socket and every connection until its request has arrived (listener.c):
 * one thread accepts, enforces the caps on open connections (in total and per client
 * address) and the deadline for a request's headers and body (--request-timeout), screens
 * the request line and headers (http_head.h) without consuming them, and hands the
 * connection to libmicrohttpd (MHD_add_connection) only once its head is complete and
 * acceptable. Connections that are still sending cost a descriptor and a few bytes, never
 * a thread, and the oldest of them gives way when a new connection finds the caps full, so
 * idle or trickling clients cannot starve requests that are being answered. */
#ifndef SPECDEC_APPS_SERVE_LISTENER_H
#define SPECDEC_APPS_SERVE_LISTENER_H

#include <microhttpd.h>
#include <stdint.h>

#include "serve.h"

/* Bind and listen on s->opts->host:port; *port gets the bound port, *loopback 1 when the
 * address is a loopback one. SD_ERR_INVALID_ARG (unknown host) / SD_ERR_IO naming it. */
sd_status_t listener_open(serve_t *s, int *port, int *loopback);
/* Start the thread; connections go to s->daemon (started with MHD_USE_NO_LISTEN_SOCKET and
 * listener_notify as its MHD_OPTION_NOTIFY_CONNECTION). */
sd_status_t listener_start(serve_t *s);
/* Stop accepting: close the listening socket and the connections still sending a head. */
void listener_quiesce(serve_t *s);
/* Stop the thread and close what it holds (before MHD_stop_daemon). */
void listener_stop(serve_t *s);
/* Free the listener (after MHD_stop_daemon, whose close notifications it receives). */
void listener_free(serve_t *s);

/* MHD_OPTION_NOTIFY_CONNECTION: cls is the serve_t. */
void listener_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);
/* The request on c has arrived whole or is being answered: its deadline no longer applies
 * and it is never evicted. */
void listener_request_received(struct MHD_Connection *c);
/* The response on c has been sent (or given up): it no longer counts toward the caps. */
void listener_request_done(struct MHD_Connection *c);

/* libmicrohttpd's MHD_OPTION_CONNECTION_LIMIT: above what the listener ever hands over. */
unsigned listener_mhd_limit(const serve_options_t *opts);

typedef struct listener_stats {
    uint64_t open;        /* connections open now (sending, or being answered) */
    uint64_t timed_out;   /* closed at --request-timeout */
    uint64_t evicted;     /* closed to make room for a newer connection */
    uint64_t refused;     /* closed at once: the caps were full of connections being answered */
    uint64_t bad_request; /* answered by the screen (400, 411, 413, 414, 431, 501, 505) */
} listener_stats_t;
void listener_get_stats(serve_t *s, listener_stats_t *out);

#endif
