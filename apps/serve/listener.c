/* The listener thread (listener.h). Every connection is a record in one list, oldest
 * first, from accept until it closes:
 *
 *   HEAD    ours: the request line and headers are arriving; each arrival is screened
 *           (http_head.h) from a MSG_PEEK of the socket, so nothing is consumed
 *   LINGER  ours: answered by the screen (or at its deadline); read to EOF, then closed
 *   BODY    libmicrohttpd's: the head was complete, the body is arriving
 *   ANSWER  libmicrohttpd's: the request arrived whole and is being answered
 *
 * A head that arrives with its whole body goes straight to ANSWER. HEAD and BODY share one
 * deadline, accept + --request-timeout. A HEAD connection past it
 * gets a 408 in OpenAI's shape; a BODY one is shut down (its socket is ours too: a duplicate
 * descriptor taken at the hand-off, so shutting it down can never hit a descriptor number
 * libmicrohttpd has closed and the kernel has reused). A new connection that would pass
 * --max-client-connections (its address) or --max-connections (all) closes the oldest
 * HEAD, LINGER or BODY connection of that address (or of all) instead, if it is at least
 * EVICT_MIN_AGE old; when there is none (every connection is being answered, or has only
 * just arrived) the new one is refused. ANSWER connections are never
 * touched: the work in flight is bounded by the engine's own queue.
 *
 * Threads: the listener thread owns HEAD and LINGER records; libmicrohttpd's threads
 * report a connection's start and close (listener_notify) and its request's arrival
 * (listener_request_received). One mutex guards the list, the counts and the phases.
 *
 * libmicrohttpd 0.9.75 takes an added connection in its own thread, later: the start
 * report finds the record by descriptor. A record it never reports (it dropped the
 * connection) is freed at its deadline. It also deadlocks when its own connection limit is
 * reached (new_connection_process_ keeps a mutex locked on that path), so that limit is
 * set above what the listener ever hands over: connections it still holds, evicted or not,
 * count until their close is reported (listener_mhd_limit). */
#define _GNU_SOURCE
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/check.h"
#include "core/clock.h"
#include "http.h"
#include "http_head.h"

#define LINGER_SECONDS 2.0    /* an answered HEAD connection is read this long at most */
#define ACCEPT_BATCH 64       /* accepts per wake-up, so that arrivals are served too */
#define DRAIN_MAX (4u << 20)  /* bytes read and dropped before answering a refused head */
#define EVICT_MIN_AGE 0.5     /* seconds a connection is safe from eviction */

typedef enum conn_phase { CONN_HEAD = 1, CONN_LINGER, CONN_BODY, CONN_ANSWER } conn_phase_t;

typedef struct conn {
    struct conn *prev, *next;
    struct serve_listener *l;
    conn_phase_t phase;
    int fd;                 /* the socket (libmicrohttpd's from BODY on) */
    int dup_fd;             /* BODY, ANSWER: our duplicate of the socket */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint8_t client[16];     /* the address as IPv6 (IPv4-mapped), for the per-client cap */
    double accepted;        /* when */
    double deadline;        /* HEAD, BODY: the request's; LINGER: the close */
    int counted;            /* holds a place under the caps (0 once evicted or timed out) */
    int adding;             /* inside MHD_add_connection */
    int closed;             /* libmicrohttpd closed it while it was being added */
    int attached;           /* libmicrohttpd reported its start: its close will be reported */
} conn_t;

struct serve_listener {
    serve_t *s;
    int listen_fd, epoll_fd, wake_fd;
    pthread_t thread;
    int started;
    atomic_int quiesce, stop;
    pthread_mutex_t lock;
    conn_t *head, *tail;
    uint64_t open, handed, timed_out, evicted, refused, bad_request; /* handed: BODY, ANSWER */
    char buf[HTTP_HEAD_MAX_BYTES];
};

/* epoll data of the two descriptors that are not connections */
static char listen_mark, wake_mark;

/* ---- the list (under the lock) ------------------------------------------------------------ */

static void link_conn(struct serve_listener *l, conn_t *c)
{
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail) l->tail->next = c;
    else l->head = c;
    l->tail = c;
}

static void unlink_conn(struct serve_listener *l, conn_t *c)
{
    if (c->prev) c->prev->next = c->next;
    else l->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else l->tail = c->prev;
}

static void uncount(struct serve_listener *l, conn_t *c)
{
    if (c->counted) l->open--;
    c->counted = 0;
}

/* Close and free a connection: ours (HEAD, LINGER) or one libmicrohttpd is done with. */
static void drop(struct serve_listener *l, conn_t *c)
{
    uncount(l, c);
    unlink_conn(l, c);
    if (c->phase == CONN_HEAD || c->phase == CONN_LINGER) {
        epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    } else {
        l->handed--;
        if (c->dup_fd >= 0) close(c->dup_fd);
    }
    free(c);
}

static void client_key(const struct sockaddr_storage *a, uint8_t out[16])
{
    memset(out, 0, 16);
    if (a->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    } else if (a->ss_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)a)->sin_addr, 4);
    }
}

static size_t count_client(const struct serve_listener *l, const uint8_t key[16])
{
    size_t n = 0;
    for (const conn_t *c = l->head; c; c = c->next) n += c->counted && !memcmp(c->client, key, 16);
    return n;
}

/* The oldest connection that may give way (of the client `key`, or of anyone when NULL):
 * still sending and at least EVICT_MIN_AGE old, so that a burst of new connections cannot
 * push out one that has only just arrived (it is refused instead). */
static conn_t *oldest_idle(const struct serve_listener *l, const uint8_t *key, double now)
{
    for (conn_t *c = l->head; c && c->accepted <= now - EVICT_MIN_AGE; c = c->next)
        if (c->counted && c->phase != CONN_ANSWER && !c->adding &&
            (!key || !memcmp(c->client, key, 16)))
            return c;
    return NULL;
}

/* Shut a BODY connection down: libmicrohttpd's thread sees the end, closes, and reports it. */
static void cut_body(struct serve_listener *l, conn_t *c)
{
    shutdown(c->dup_fd, SHUT_RDWR);
    uncount(l, c);
}

static void evict(struct serve_listener *l, conn_t *c)
{
    l->evicted++;
    if (c->phase == CONN_BODY) cut_body(l, c);
    else drop(l, c);
}

/* ---- answering from the listener ------------------------------------------------------------ */

/* Answer a HEAD connection with an OpenAI error and let it linger until the client has read
 * it: what it sent so far is read and dropped first, so closing does not reset the
 * connection under the client's feet. */
static void answer(struct serve_listener *l, conn_t *c, int status, const char *code,
                   const char *message)
{
    for (size_t drained = 0; drained < DRAIN_MAX;) {
        ssize_t n = recv(c->fd, l->buf, sizeof l->buf, MSG_DONTWAIT);
        if (n <= 0) break;
        drained += (size_t)n;
    }
    oai_error_t e;
    oai_error_set(&e, status, status == 503 ? "server_error" : "invalid_request_error", NULL,
                  code, "%s", message);
    char *body = oai_error_json(&e);
    char head[256];
    size_t body_len = body ? strlen(body) : 0;
    int head_len = snprintf(head, sizeof head,
                            "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                            status, MHD_get_reason_phrase_for((unsigned)status), body_len);
    struct iovec iov[2] = {{head, (size_t)head_len}, {body, body_len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = body ? 2 : 1};
    sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); /* small: the socket buffer holds it */
    free(body);
    http_count_response(l->s, status);
    shutdown(c->fd, SHUT_WR);
    c->phase = CONN_LINGER;
    c->deadline = sd_now() + LINGER_SECONDS;
}

/* ---- hand-off -------------------------------------------------------------------------------- */

/* Give a HEAD connection whose head is complete to libmicrohttpd; `whole`: its body has
 * arrived too (it is being answered from now on, never evicted). Called and returns with
 * the lock held; releases it around MHD_add_connection (which reports the start through
 * listener_notify). */
static void hand_off(struct serve_listener *l, conn_t *c, int whole)
{
    if (l->handed + 1 >= listener_mhd_limit(l->s->opts) - 32) {
        answer(l, c, 503, "server_busy", "the server is closing too many connections; retry");
        return;
    }
    int dup = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
        answer(l, c, 503, "server_busy", "the server is out of file descriptors");
        return;
    }
    epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    c->phase = whole ? CONN_ANSWER : CONN_BODY;
    c->dup_fd = dup;
    c->adding = 1;
    l->handed++;
    pthread_mutex_unlock(&l->lock);
    enum MHD_Result ok = MHD_add_connection(l->s->daemon, c->fd, (struct sockaddr *)&c->addr,
                                            c->addr_len);
    pthread_mutex_lock(&l->lock);
    c->adding = 0;
    if (ok != MHD_YES || c->closed) drop(l, c); /* libmicrohttpd closed its descriptor */
}

/* Data (or the end) arrived on a HEAD or LINGER connection. Lock held. */
static void on_readable(struct serve_listener *l, conn_t *c, uint32_t events)
{
    if (c->phase == CONN_LINGER) {
        ssize_t n;
        while ((n = recv(c->fd, l->buf, sizeof l->buf, MSG_DONTWAIT)) > 0) {}
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) drop(l, c);
        return;
    }
    ssize_t n = recv(c->fd, l->buf, sizeof l->buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) { /* gone before sending a whole head */
        drop(l, c);
        return;
    }
    int peer_done = (events & (EPOLLRDHUP | EPOLLHUP)) != 0;
    unsigned long long request_len = 0;
    http_head_error_t err;
    switch (http_head_screen(l->buf, (size_t)n, (unsigned long long)l->s->opts->max_body_bytes,
                             peer_done, &request_len, &err)) {
    case HTTP_HEAD_INCOMPLETE: break;
    case HTTP_HEAD_REFUSED:
        l->bad_request++;
        answer(l, c, err.status, err.code, err.message);
        break;
    case HTTP_HEAD_COMPLETE: hand_off(l, c, (unsigned long long)n >= request_len); break;
    }
}

/* ---- accepting --------------------------------------------------------------------------------- */

/* Make room under both caps for a connection from key: the oldest idle connection of the
 * same client, then of anyone, gives way. 0 when every candidate is being answered. */
static int make_room(struct serve_listener *l, const uint8_t key[16], double now)
{
    const serve_options_t *o = l->s->opts;
    while (count_client(l, key) >= (size_t)o->max_client_connections) {
        conn_t *v = oldest_idle(l, key, now);
        if (!v) return 0;
        evict(l, v);
    }
    while (l->open >= (uint64_t)o->max_connections) {
        conn_t *v = oldest_idle(l, NULL, now);
        if (!v) return 0;
        evict(l, v);
    }
    return 1;
}

static void admit(struct serve_listener *l, int fd, const struct sockaddr_storage *addr,
                  socklen_t addr_len)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    double now = sd_now();
    *c = (conn_t){.l = l, .phase = CONN_HEAD, .fd = fd, .dup_fd = -1, .addr = *addr,
                  .addr_len = addr_len, .counted = 1, .accepted = now,
                  .deadline = now + l->s->opts->request_timeout};
    client_key(addr, c->client);
    if (!make_room(l, c->client, now)) {
        l->refused++;
        close(fd);
        free(c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(c);
        return;
    }
    l->open++;
    link_conn(l, c);
}

static void accept_some(struct serve_listener *l)
{
    for (int i = 0; i < ACCEPT_BATCH && l->listen_fd >= 0; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        int fd = accept4(l->listen_fd, (struct sockaddr *)&addr, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or out of descriptors: the backlog waits */
        admit(l, fd, &addr, len);
    }
}

/* ---- deadlines and the loop ----------------------------------------------------------------- */

/* Act on every passed deadline; the next one (0: none). Lock held. */
static double expire(struct serve_listener *l, double now)
{
    double next = 0;
    char msg[160];
    for (conn_t *c = l->head, *after; c; c = after) {
        after = c->next;
        int due = now >= c->deadline;
        if (c->phase == CONN_HEAD && due) {
            l->timed_out++;
            snprintf(msg, sizeof msg, "the request's headers did not arrive within %g s "
                     "(--request-timeout)", l->s->opts->request_timeout);
            answer(l, c, 408, "request_timeout", msg);
        } else if (c->phase == CONN_LINGER && due) {
            drop(l, c);
            continue;
        } else if (c->dup_fd >= 0 && !c->attached && !c->adding && due) {
            l->timed_out++; /* never started by libmicrohttpd (it dropped it): ours to free */
            shutdown(c->dup_fd, SHUT_RDWR);
            drop(l, c);
            continue;
        } else if (c->phase == CONN_BODY && c->counted && !c->adding && due) {
            l->timed_out++;
            cut_body(l, c);
            continue;
        }
        int waits = c->phase == CONN_HEAD || c->phase == CONN_LINGER ||
                    (c->phase == CONN_BODY && c->counted) || (c->dup_fd >= 0 && !c->attached);
        if (waits && (next == 0 || c->deadline < next)) next = c->deadline;
    }
    return next;
}

static void close_listening(struct serve_listener *l)
{
    if (l->listen_fd < 0) return;
    epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, l->listen_fd, NULL);
    close(l->listen_fd);
    l->listen_fd = -1;
    for (conn_t *c = l->head, *after; c; c = after) {
        after = c->next;
        if (c->phase == CONN_HEAD) drop(l, c);
    }
}

static void *run(void *arg)
{
    struct serve_listener *l = arg;
    struct epoll_event events[64];
    double next = 0;
    while (!atomic_load(&l->stop)) {
        int wait_ms = -1;
        if (next > 0) {
            double ms = (next - sd_now()) * 1000.0 + 1.0;
            wait_ms = ms < 1 ? 1 : ms > 60000 ? 60000 : (int)ms;
        }
        int n = epoll_wait(l->epoll_fd, events, 64, wait_ms);
        pthread_mutex_lock(&l->lock);
        int accept_now = 0;
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &listen_mark) accept_now = 1;
            else if (p == &wake_mark) {
                uint64_t v;
                if (read(l->wake_fd, &v, sizeof v) < 0) {}
            } else {
                on_readable(l, p, events[i].events);
            }
        }
        /* after the connections' events: admitting may free one of them */
        if (accept_now) accept_some(l);
        if (atomic_load(&l->quiesce)) close_listening(l);
        next = expire(l, sd_now());
        pthread_mutex_unlock(&l->lock);
    }
    return NULL;
}

static void wake(struct serve_listener *l)
{
    uint64_t one = 1;
    if (write(l->wake_fd, &one, sizeof one) < 0) {}
}

/* ---- the socket and the thread --------------------------------------------------------------- */

static int is_loopback(const struct sockaddr_storage *a)
{
    uint8_t key[16];
    client_key(a, key);
    static const uint8_t v6_loopback[16] = {[15] = 1};
    int v4_mapped = !memcmp(key, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12);
    return (v4_mapped && key[12] == 127) || !memcmp(key, v6_loopback, 16);
}

sd_status_t listener_open(serve_t *s, int *port, int *loopback)
{
    const serve_options_t *o = s->opts;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", o->port);
    int rc = getaddrinfo(o->host, service, &hints, &res);
    if (rc != 0) return sd_set_error(SD_ERR_INVALID_ARG, "--host %s: %s", o->host, gai_strerror(rc));
    struct sockaddr_storage addr = {0};
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    socklen_t addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    struct serve_listener *l = calloc(1, sizeof *l);
    SD_ALLOC_CHECK(l, sizeof *l, "the listener");
    *l = (struct serve_listener){.s = s, .listen_fd = -1, .epoll_fd = -1, .wake_fd = -1};
    pthread_mutex_init(&l->lock, NULL);
    s->listener = l;
    int one = 1, fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return sd_set_error(SD_ERR_IO, "--host %s: socket: %s", o->host, strerror(errno));
    l->listen_fd = fd;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, addr_len) != 0 || listen(fd, SOMAXCONN) != 0)
        return sd_set_error(SD_ERR_IO, "cannot listen on %s port %d: %s", o->host, o->port,
                            strerror(errno));
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &bound_len);
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    *loopback = is_loopback(&addr);
    return SD_OK;
}

sd_status_t listener_start(serve_t *s)
{
    struct serve_listener *l = s->listener;
    l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epoll_fd < 0 || l->wake_fd < 0)
        return sd_set_error(SD_ERR_IO, "the listener: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_mark};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_mark};
    if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, l->listen_fd, &ev) != 0 ||
        epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, l->wake_fd, &wev) != 0)
        return sd_set_error(SD_ERR_IO, "the listener: epoll: %s", strerror(errno));
    if (pthread_create(&l->thread, NULL, run, l) != 0)
        return sd_set_error(SD_ERR_IO, "the listener: cannot start its thread");
    l->started = 1;
    return SD_OK;
}

void listener_quiesce(serve_t *s)
{
    struct serve_listener *l = s->listener;
    if (!l) return;
    atomic_store(&l->quiesce, 1);
    if (l->started) wake(l);
    else close_listening(l);
}

void listener_stop(serve_t *s)
{
    struct serve_listener *l = s->listener;
    if (!l) return;
    if (l->started) {
        atomic_store(&l->stop, 1);
        wake(l);
        pthread_join(l->thread, NULL);
        l->started = 0;
    }
    pthread_mutex_lock(&l->lock);
    close_listening(l);
    for (conn_t *c = l->head, *after; c; c = after) {
        after = c->next;
        if (c->phase == CONN_LINGER) drop(l, c);
    }
    pthread_mutex_unlock(&l->lock);
}

void listener_free(serve_t *s)
{
    struct serve_listener *l = s->listener;
    if (!l) return;
    listener_stop(s);
    while (l->head) drop(l, l->head); /* libmicrohttpd has reported every close by now */
    if (l->epoll_fd >= 0) close(l->epoll_fd);
    if (l->wake_fd >= 0) close(l->wake_fd);
    pthread_mutex_destroy(&l->lock);
    free(l);
    s->listener = NULL;
}

/* ---- libmicrohttpd's side ------------------------------------------------------------------- */

void listener_notify(void *cls, struct MHD_Connection *mc, void **socket_context,
                     enum MHD_ConnectionNotificationCode code)
{
    serve_t *s = cls;
    struct serve_listener *l = s->listener;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci) return;
        pthread_mutex_lock(&l->lock);
        /* the newest with that descriptor: an older one was dropped by libmicrohttpd */
        for (conn_t *c = l->tail; c; c = c->prev)
            if (c->dup_fd >= 0 && !c->attached && c->fd == ci->connect_fd) {
                c->attached = 1;
                *socket_context = c;
                break;
            }
        pthread_mutex_unlock(&l->lock);
        return;
    }
    conn_t *c = *socket_context;
    if (!c) return;
    *socket_context = NULL;
    pthread_mutex_lock(&l->lock);
    if (c->adding) c->closed = 1; /* hand_off frees it */
    else drop(l, c);
    pthread_mutex_unlock(&l->lock);
}

/* The record libmicrohttpd's connection carries (NULL: none was attached). */
static conn_t *record_of(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void listener_request_received(struct MHD_Connection *mc)
{
    conn_t *c = record_of(mc);
    if (!c) return;
    pthread_mutex_lock(&c->l->lock);
    if (c->phase == CONN_BODY) c->phase = CONN_ANSWER;
    pthread_mutex_unlock(&c->l->lock);
}

unsigned listener_mhd_limit(const serve_options_t *o)
{
    return 2u * (unsigned)o->max_connections + 64u;
}

void listener_request_done(struct MHD_Connection *mc)
{
    conn_t *c = record_of(mc);
    if (!c) return;
    pthread_mutex_lock(&c->l->lock);
    uncount(c->l, c); /* closing now; still held against libmicrohttpd's limit until closed */
    pthread_mutex_unlock(&c->l->lock);
}

void listener_get_stats(serve_t *s, listener_stats_t *out)
{
    struct serve_listener *l = s->listener;
    *out = (listener_stats_t){0};
    if (!l) return;
    pthread_mutex_lock(&l->lock);
    *out = (listener_stats_t){.open = l->open, .timed_out = l->timed_out,
                              .evicted = l->evicted, .refused = l->refused,
                              .bad_request = l->bad_request};
    pthread_mutex_unlock(&l->lock);
}
