/* http.c - the server's life cycle (see http.h): create (metrics and the
 * workspace pool), bind, start the libmicrohttpd daemon (and with
 * --balance-connections the acceptor that deals connections out to its
 * threads), warm up, quiesce and drain, stop, free. What happens to a
 * request is in http_conn.c and http_handlers.c (overview in
 * http_int.h). */
#include "server/http_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Each connection's memory pool: the request line, the header block and
 * the read buffer live in it. A request that does not fit gets
 * libmicrohttpd's own HTML 414 or 431 before the server sees it, so the
 * pool is sized well past the server's own limits (SRV_HTTP_MAX_URI and
 * SRV_HTTP_MAX_HEADER_* in http_int.h: 8 + 16 KiB and 100 fields), whose
 * answers are JSON. libmicrohttpd clears the pool between keep-alive
 * requests, so this size is paid per request (a memset). */
#ifndef SRV_CONN_MEMORY
#define SRV_CONN_MEMORY (64 * 1024)
#endif

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    srv_log(SRV_WARN, "libmicrohttpd: %s", msg);
}

srv_server *srv_server_create(const srv_config *cfg, srv_registry *registry, const char *openapi,
                              size_t openapi_len, char *err, size_t errlen)
{
    srv_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->reg = registry;
    s->openapi = openapi ? openapi : "";
    s->openapi_len = openapi ? openapi_len : 0;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    img_limits_default(&s->lim);
    s->lim.max_pixels = cfg->max_pixels;
    int threads = cfg->threads > 0 ? cfg->threads : 1;
    /* One shard and workspace per pool thread, plus one spare. */
    s->metrics = srv_metrics_create(threads + 1);
    if (!s->metrics) {
        snprintf(err, errlen, "out of memory");
        srv_server_free(s);
        return NULL;
    }
    s->pool = srv_pool_create(threads + 1);
    if (!s->pool) {
        snprintf(err, errlen, "out of memory");
        srv_server_free(s);
        return NULL;
    }
    return s;
}

static int bind_listen(const srv_config *cfg, int *port, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve host %s: %s", cfg->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->host, cfg->port, strerror(saved));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *port = cfg->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

/* With --balance-connections, connections are accepted here rather than
 * by libmicrohttpd's workers. Left to themselves the workers race for
 * each new connection on the shared listening socket (the first free one
 * takes it), and 64 connections opened at once were seen split 12/52 or
 * 16/48 between two workers: the busier worker's clients then wait three
 * times as long as the other's, and the CNN server's p99 under load went
 * from 10-12 ms to 15-21 ms. MHD_add_connection gives socket N to worker
 * N mod the pool size, and the kernel hands out the lowest free
 * descriptor, so a burst of new connections alternates between workers
 * and one opened after another closed usually takes its number, and so
 * its worker: the split stays even. It is not the default: with the load
 * generator on the same two cores, each of its threads' connections then
 * sit on both workers, and LeNet at 8 connections lost requests/s and
 * had its p99 go from 0.3-0.5 to 2-3 ms (README, "Threads and
 * connections"). */
static void *acceptor_main(void *arg)
{
    srv_server *s = arg;
    struct timespec last_warn = {0, 0};
    int backoff_ms = -1; /* poll's timeout: -1 waits for a connection */
    for (;;) {
        struct pollfd p[2] = {{.fd = s->wake[0], .events = POLLIN},
                              {.fd = s->listen_fd, .events = POLLIN}};
        /* While out of descriptors or memory, only the stop pipe is
         * watched: the waiting connection would wake poll at once. */
        int rc = poll(p, backoff_ms < 0 ? 2 : 1, backoff_ms);
        if (rc < 0 && errno != EINTR) {
            srv_log(SRV_ERROR, "accepting connections: poll: %s", strerror(errno));
            break;
        }
        if (p[0].revents) break;
        backoff_ms = -1;
        /* Take what the backlog holds, a bounded number at a time so that a
         * stop request is seen between rounds. */
        for (int k = 0; k < 256; k++) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd =
                accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                /* The socket is MHD's from here, refused (the connection
                 * limit) or not: it closes what it cannot take. */
                MHD_add_connection(s->d, fd, (struct sockaddr *)&ss, sl);
                continue;
            }
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK) break;
            /* A connection reset before it was accepted, or a network
             * error carried over from it (accept(2)): the next one. */
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == ENETDOWN ||
                e == ENOPROTOOPT || e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH ||
                e == ENETUNREACH || e == EPERM)
                continue;
            /* Out of descriptors or memory (or something worse): warn at
             * most every 10 s and retry in 100 ms; connections wait in the
             * backlog meanwhile. */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (last_warn.tv_sec == 0 || now.tv_sec - last_warn.tv_sec >= 10) {
                srv_log(SRV_WARN, "cannot accept connections: %s; retrying every 100 ms",
                        strerror(e));
                last_warn = now;
            }
            backoff_ms = 100;
            break;
        }
    }
    return NULL;
}

static void acceptor_stop(srv_server *s)
{
    if (!s->acceptor_on) return;
    ssize_t w;
    do w = write(s->wake[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(s->acceptor, NULL);
    s->acceptor_on = 0;
}

int srv_server_start(srv_server *s, char *err, size_t errlen)
{
    const srv_config *cfg = s->cfg;
    s->listen_fd = bind_listen(cfg, &s->port, err, errlen);
    if (s->listen_fd < 0) return -1;
    const int balance = cfg->balance;
    if (balance) {
        if (pipe2(s->wake, O_CLOEXEC) < 0) {
            snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
            return -1;
        }
        /* The acceptor drains the backlog until accept says EAGAIN. */
        int fl = fcntl(s->listen_fd, F_GETFL);
        if (fl < 0 || fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            snprintf(err, errlen, "cannot make the listening socket non-blocking: %s",
                     strerror(errno));
            return -1;
        }
    }
    /* MHD_USE_ITC: the workers learn of connections added from the
     * acceptor thread through it. */
    unsigned flags = MHD_USE_ITC | MHD_USE_ERROR_LOG | (balance ? MHD_USE_NO_LISTEN_SOCKET : 0);
    /* Dynamic batching suspends a /predict's connection while its image
     * waits for a batch (http_handlers.c, predict_batched). */
    if (cfg->batch_delay_us > 0) flags |= MHD_ALLOW_SUSPEND_RESUME;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        flags |= MHD_USE_EPOLL_INTERNAL_THREAD;
    else
        flags |= MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    unsigned threads = cfg->threads > 0 ? (unsigned)cfg->threads : 1;
    struct MHD_OptionItem opts[12];
    int n = 0;
    /* The logger first, so MHD reports even option errors through it. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL};
    if (!balance) opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, s->listen_fd, NULL};
    /* A pool of one is no pool: leave the option out then. */
    if (threads > 1)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, cfg->timeout_s, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL};
    /* Headers and the read buffer per connection; bodies are copied out
     * chunk by chunk, so this does not bound the body size. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, SRV_CONN_MEMORY, NULL};
    opts[n++] =
        (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)srv_http_on_completed, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)srv_http_on_uri, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, srv_http_on_request, s, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen,
                 "cannot start the HTTP daemon on %s:%d (see the "
                 "libmicrohttpd message above)",
                 cfg->host, s->port);
        return -1;
    }
    if (!balance) return 0; /* MHD accepts on listen_fd, and closes it unless quiesced */
    int e = pthread_create(&s->acceptor, NULL, acceptor_main, s);
    if (e != 0) {
        snprintf(err, errlen, "cannot start the acceptor thread: %s", strerror(e));
        return -1;
    }
    s->acceptor_on = 1;
    return 0;
}

int srv_server_port(const srv_server *s) { return s->port; }

void srv_server_set_web(srv_server *s, const srv_web *web) { s->web = web; }

int srv_server_warmup(srv_server *s, char *err, size_t errlen)
{
    /* Every model ran its warm-up forward when it loaded (registry.c);
     * here only: is there a default model to answer with? */
    srv_snapshot *v = srv_registry_acquire(s->reg);
    int ok = srv_snapshot_default(v) != NULL;
    srv_snapshot_release(v);
    if (!ok) {
        snprintf(err, errlen, "no model to serve");
        return -1;
    }
    atomic_store(&s->ready, 1);
    return 0;
}

void srv_server_set_draining(srv_server *s) { atomic_store(&s->draining, 1); }

void srv_server_quiesce(srv_server *s)
{
    atomic_store(&s->draining, 1);
    /* Requests waiting for a batch to fill run now. */
    srv_registry_close_batchers(s->reg);
    /* No more connections: closing the listening socket makes new ones
     * fail fast instead of waiting in the backlog until the process
     * exits. Those open stay, for the requests in flight. (After quiesce
     * MHD no longer owns the socket it listened on.) */
    if (!s->cfg->balance) {
        if (s->d && s->listen_fd >= 0) {
            MHD_socket fd = MHD_quiesce_daemon(s->d);
            if (fd != MHD_INVALID_SOCKET) close(fd);
            s->listen_fd = -1;
        }
        return;
    }
    acceptor_stop(s);
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
}

int srv_server_inflight(const srv_server *s) { return atomic_load(&((srv_server *)s)->inflight); }

void srv_server_stop(srv_server *s)
{
    acceptor_stop(s);
    if (s->d) {
        /* Every queued image's callback first: it resumes a connection
         * that libmicrohttpd is about to close. Batches run in bounded
         * time, and closed batchers no longer wait to fill; from here on
         * no request queues that way (predict_batched). */
        atomic_store(&s->stopping, 1);
        if (atomic_load(&s->batching) > 0) {
            srv_registry_close_batchers(s->reg);
            while (atomic_load(&s->batching) > 0) nanosleep(&(struct timespec){0, 1000000}, NULL);
        }
        MHD_stop_daemon(s->d);
        s->d = NULL;
        /* Closed by MHD, if not already at quiesce; the acceptor's is
         * closed by srv_server_free. */
        if (!s->cfg->balance) s->listen_fd = -1;
    }
}

void srv_server_free(srv_server *s)
{
    if (!s) return;
    srv_server_stop(s);
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    srv_pool_free(s->pool);
    srv_metrics_free(s->metrics);
    free(s);
}
