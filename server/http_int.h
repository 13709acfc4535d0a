/* http_int.h - what the server's HTTP files share, and nothing outside
 * them includes:
 *
 *   http.c          life cycle: create, bind, start, warm-up, quiesce
 *                   (drain), stop, free; with --balance-connections the
 *                   acceptor thread that deals new connections out
 *   http_conn.c     one request on its connection: state, body collected
 *                   up to the limit, responses and the error envelope,
 *                   completion (metrics, access log)
 *   http_handlers.c what each route does: checks decided from the headers,
 *                   then the GET and POST handlers over the pipeline
 *   pool.c, route.c worker slots; the table of paths
 *
 * Request life cycle (libmicrohttpd calls srv_http_on_request repeatedly):
 *   1st call   headers are in: srv_http_begin checks route, method,
 *              readiness, model and content type, srv_http_conn checks
 *              Content-Length. An error with a body on its way is
 *              answered at once (and the connection closed) when the
 *              client waits for 100 Continue, when the framing is
 *              ambiguous, the target or headers are over their limits, or
 *              the declared body is over the drain bound; otherwise the
 *              body is read and dropped first, so that a client still
 *              sending is not reset before it reads the answer, and the
 *              error is answered on the last call (as one without a body
 *              is), keeping the connection.
 *   next calls body chunks, appended up to the body limit; past it the
 *              rest is discarded (never buffered) and 413 is answered.
 *              Bytes past the drain bound close the connection.
 *   last call  (no more data) srv_http_handle: the route's handler.
 *   completed  srv_http_on_completed: metrics, access log, free.
 * Each step runs on the pool thread that owns the connection, so the
 * thread's workspace (its srv_pool_slot in the model) is used without
 * locks. The request holds the registry snapshot it found at its first
 * call until completion: its model cannot be freed under it.
 */
#ifndef SERVER_HTTP_INT_H
#define SERVER_HTTP_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/buf.h"
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/multipart.h"
#include "server/oip.h"
#include "pipeline/pipeline.h"
#include "server/pool.h"
#include "server/registry.h"
#include "server/route.h"
#include "server/web.h"

#define SRV_HTTP_SMALL_BODY 4096
#define SRV_HTTP_JSON "application/json"

/* Request target (path and query, as sent) and header field limits, over
 * which the answer is 414 or 431 with the JSON envelope (README,
 * "Security"). They leave room in each connection's memory pool
 * (SRV_CONN_MEMORY in http.c): libmicrohttpd answers a request line or a
 * header block that does not fit there with its own HTML page, before the
 * server sees the request, so what is somewhat over these limits still
 * reaches srv_http_on_request and gets JSON. */
#define SRV_HTTP_MAX_URI 8192
#define SRV_HTTP_MAX_HEADER_BYTES 16384 /* "Name: value\r\n" of every field */
#define SRV_HTTP_MAX_HEADER_FIELDS 100

struct srv_server {
    const srv_config *cfg;
    srv_registry *reg;
    srv_metrics *metrics;
    srv_pool *pool;
    const char *openapi;
    size_t openapi_len;
    const srv_web *web; /* the drawing page, or NULL (--no-ui) */
    img_limits lim;
    struct MHD_Daemon *d;
    int listen_fd, port;
    /* libmicrohttpd accepts on listen_fd, or with --balance-connections
     * (cfg->balance) the acceptor thread (http.c) hands each new
     * connection to a worker; a byte written to wake[1] stops it. */
    pthread_t acceptor;
    int acceptor_on;
    int wake[2];
    atomic_int ready, draining, inflight;
    /* Requests queued through pipe_batcher_submit whose callback has not
     * run yet: srv_server_stop sets stopping, then waits for none before
     * it stops the daemon (a callback resumes its connection); a request
     * that sees stopping waits for its batch on its thread instead. */
    atomic_int batching, stopping;
};

typedef enum { SRV_BODY_NONE, SRV_BODY_RAW, SRV_BODY_MULTIPART, SRV_BODY_JSON } srv_body_kind;

/* One request, from its headers to its completion. */
typedef struct {
    uint64_t t0; /* ns, CLOCK_MONOTONIC */
    srv_route route;
    char method[16];
    char path[256]; /* sanitised for logs and messages */
    int status;     /* HTTP status sent, 0 before */
    uint64_t resp_bytes;
    srv_snapshot *snap;   /* the models as the request found them */
    srv_model *model;     /* in snap: the one asked for, or default */
    srv_body_kind kind;   /* what body the route expects */
    int over_limit;       /* 1: body over the limit, 2: out of memory */
    uint64_t seen;        /* body bytes received */
    int done;             /* a response is queued */
    pipe_status e_status; /* error decided from the headers, or PIPE_OK */
    const char *e_allow;
    char e_msg[320];
    char boundary[SRV_BOUNDARY_MAX + 1];
    char rid[SRV_REQID_MAX + 1];
    int v2;                     /* a /v2 path: errors in the protocol's shape */
    srv_oip_path v2p;           /* its model name and version */
    int64_t hdr_len;            /* Inference-Header-Content-Length, or -1 */
    size_t resp_hdr_len;        /* the response's (binary outputs), or 0 */
    const char *origin;         /* an allowed CORS Origin (MHD's copy), or NULL */
    int preflight;              /* a CORS preflight, answered 204 */
    const srv_web_asset *asset; /* SRV_ROUTE_PAGE: the file asked for */
    int want_prep;              /* ?include=preprocessed */
    struct srv_pending *pend;   /* its image queued for a batch, or NULL */
    uint8_t *body;              /* small, or malloc'ed up to the body limit */
    size_t len, cap;
    uint8_t small[SRV_HTTP_SMALL_BODY];
} srv_req;

uint64_t srv_http_now_ns(void);

/* A /predict image in a batch while its connection is suspended
 * (http_handlers.c). state: PEND_QUEUED, then PEND_SUSPENDED (the
 * handler has suspended the connection) and PEND_DONE (answered) in
 * either order; whichever of the two comes second resumes the
 * connection. */
enum { PEND_QUEUED, PEND_SUSPENDED, PEND_DONE };
typedef struct srv_pending {
    float x[PIPE_PIXELS]; /* the network input */
    pipe_result res;
    srv_server *s;
    struct MHD_Connection *c;
    atomic_int state;
} srv_pending;

/* ---- http_conn.c ----------------------------------------------------------- */

/* libmicrohttpd's access handler and completion callback (cls: the server). */
enum MHD_Result srv_http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *upload,
                                    size_t *upload_size, void **con_cls);
void srv_http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe);
/* libmicrohttpd's URI callback: the raw request target, seen once per
 * request before the headers. Returns the first *con_cls: NULL, or a
 * marker (never freed) for a target over SRV_HTTP_MAX_URI. */
void *srv_http_on_uri(void *cls, const char *uri, struct MHD_Connection *c);

/* Queues a response of body (len bytes, kept as mode says) with status,
 * content type (NULL: none) and, when not NULL, an Allow header; also
 * r->resp_hdr_len as Inference-Header-Content-Length and, with CORS on,
 * Vary: Origin and the Access-Control-* headers for an allowed origin. */
enum MHD_Result srv_http_respond(srv_server *s, struct MHD_Connection *c, srv_req *r, int status,
                                 const char *ctype, const void *body, size_t len,
                                 enum MHD_ResponseMemoryMode mode, const char *allow);
/* srv_http_respond with nhdrs more {name, value} headers (the page's). */
enum MHD_Result srv_http_respond_hdrs(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                      int status, const char *ctype, const void *body, size_t len,
                                      enum MHD_ResponseMemoryMode mode, const char *allow,
                                      const char *const (*hdrs)[2], int nhdrs);
/* The JSON error envelope {"error":{"code","message"}} into b (on /v2
 * paths srv_http_error writes the protocol's {"error": "message"}). */
void srv_http_error_json(srv_buf *b, const char *code, const char *msg);
/* Queues the error envelope of st (its HTTP status) with a formatted message. */
enum MHD_Result srv_http_error(srv_server *s, struct MHD_Connection *c, srv_req *r, pipe_status st,
                               const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Records an error decided from the headers alone, sent by
 * srv_http_on_request. Returns 0 (so checks can "return srv_http_defer"). */
int srv_http_defer(srv_req *r, pipe_status st, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- http_handlers.c ---------------------------------------------------------- */

/* What the headers alone decide for r's route (first call): errors go
 * through srv_http_defer; sets r->model and r->kind. */
void srv_http_begin(srv_server *s, struct MHD_Connection *c, srv_req *r, const char *url);
/* Answers r (for url) once its body (if any) is complete and within the
 * limit. */
enum MHD_Result srv_http_handle(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                const char *url);

#endif
