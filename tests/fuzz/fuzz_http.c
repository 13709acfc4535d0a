/* fuzz_http.c - the whole HTTP front: request line, query string, header
 * fields, framing checks, bodies, through the real server (http.h) on a
 * loopback port, serving one small model.
 *
 * The server starts once per process (threads, as in production); each
 * input is written to a fresh connection as raw bytes, the write side is
 * then shut down and every answer read. Invariants: every answer is a
 * status line "HTTP/1.1 NNN " with NNN in 100..599; the server never
 * answers 500, 502, 503 or 504 (nothing a client sends is the server's
 * fault, and it is ready); sanitizers watch the server threads.
 *
 * Needs models/mlp.safetensors (run from the repository root, as make
 * fuzz does) or FUZZ_MODEL=path. Leak checking is off for this target
 * (fuzz_http.flags): connections still open at an input's end hold
 * memory that is freed later, on another thread. */
#include "fuzz.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static srv_config cfg;
static srv_server *srv;
static int port;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    const char *model = getenv("FUZZ_MODEL");
    char spec[600];
    snprintf(spec, sizeof spec, "mlp=%s", model ? model : "models/mlp.safetensors");
    srv_config_defaults(&cfg);
    strcpy(cfg.host, "127.0.0.1");
    cfg.port = 0;
    cfg.threads = 1;
    cfg.timeout_s = 1;
    cfg.max_batch = 4;
    cfg.access_log = 0;
    srv_log_init(0);
    if (srv_config_add_model(&cfg, spec, err, sizeof err) < 0) goto fail;
    srv_registry_opts ro = {.cfg = &cfg, .nslots = cfg.threads + 1, .settle_s = -1};
    srv_registry *reg = srv_registry_create(&ro, err, sizeof err);
    if (!reg) goto fail;
    srv = srv_server_create(&cfg, reg, "openapi: 3.1.0\n", 15, err, sizeof err);
    if (!srv || srv_server_start(srv, err, sizeof err) < 0 ||
        srv_server_warmup(srv, err, sizeof err) < 0)
        goto fail;
    port = srv_server_port(srv);
    return 0;
fail:
    fprintf(stderr, "fuzz_http: cannot start the server: %s\n", err);
    exit(1);
}

/* Reads until the server closes, or until it has been quiet for 30 ms:
 * libmicrohttpd keeps a connection whose client shut down its write side
 * until the idle timeout, and answers on loopback take well under that. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 30) <= 0) break;
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == cap) break;
    }
    return n;
}

static void check_answers(const char *buf, size_t n)
{
    /* Each response: status line, headers, Content-Length bytes of body. */
    size_t at = 0;
    while (at < n) {
        FUZZ_CHECK(n - at >= 12 && memcmp(buf + at, "HTTP/1.1 ", 9) == 0);
        int st = (buf[at + 9] - '0') * 100 + (buf[at + 10] - '0') * 10 + (buf[at + 11] - '0');
        FUZZ_CHECK(st >= 100 && st <= 599);
        FUZZ_CHECK(st != 500 && !(st >= 502 && st <= 504));
        const char *end = memmem(buf + at, n - at, "\r\n\r\n", 4);
        if (!end) return; /* cut short by our read limit */
        size_t body = 0;
        for (const char *h = buf + at; h < end;) {
            const char *eol = memmem(h, (size_t)(end - h) + 2, "\r\n", 2);
            if (strncasecmp(h, "Content-Length:", 15) == 0) body = strtoul(h + 15, NULL, 10);
            h = eol + 2;
        }
        /* A HEAD answer has a length but no body; stop at anything that is
         * not another status line rather than guess. */
        at = (size_t)(end + 4 - buf) + body;
        if (at < n && memcmp(buf + at, "HTTP/1.1 ", 9) != 0) return;
    }
}

/* A fresh connection to the server. A connect() that a signal interrupts
 * (libFuzzer's timeout alarm, which -timeout sets) leaves the socket
 * half-connected, and one CI run failed that way once in a 30 s run; so
 * an interrupted or refused attempt is retried on a new socket, for up to
 * about two seconds. A server that accepts nothing for that long still
 * fails the run, with the reason. */
static int connect_server(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int e = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        /* Close with a reset: no TIME_WAIT, so ports last the whole run. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        e = errno;
        close(fd);
        if (e != EINTR && e != ECONNREFUSED && e != EAGAIN && e != ETIMEDOUT) break;
        usleep(20000);
    }
    fprintf(stderr, "fuzz_http: cannot connect to the server on port %d: %s\n", port, strerror(e));
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0;
    int fd = connect_server();
    size_t off = 0;
    while (off < size) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server closed early (e.g. 431): fine */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    static char buf[1 << 17];
    size_t n = read_all(fd, buf, sizeof buf);
    close(fd);
    check_answers(buf, n);
    return 0;
}
