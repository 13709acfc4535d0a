/* http.c - see http.h.
 *
 * Request life cycle (libmicrohttpd calls on_request repeatedly):
 *   1st call   headers are in: route, method, readiness, model, content
 *              type and Content-Length are checked, and any error is
 *              answered at once, before a byte of the body is read.
 *   next calls body chunks, appended up to the body limit; past it the
 *              rest is discarded (never buffered) and 413 is answered.
 *   last call  (no more data) decode, preprocess, classify, respond.
 *   completed  on_completed: metrics, access log, free.
 * Each step runs on the pool thread that owns the connection, so the
 * thread's workspace can be used without locks.
 */
#include "http.h"
#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "multipart.h"
#include "pipeline/pipeline.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SMALL_BODY 4096
#define MAX_EXTRA_CTX 64
#define JSON_CT "application/json"
/* libmicrohttpd clears a connection's whole memory pool between requests,
 * so its size is paid on every keep-alive request: 16 KiB holds any sane
 * header block and a read buffer, at a quarter of the default's cost. */
#ifndef SRV_CONN_MEMORY
#define SRV_CONN_MEMORY (16 * 1024)
#endif

typedef struct {
    pipe_ws *ws[SRV_MAX_MODELS];
} worker_ctx;

struct srv_server {
    const srv_config *cfg;
    srv_models *models;
    srv_metrics *metrics;
    const char *openapi;
    size_t openapi_len;
    img_limits lim;
    struct MHD_Daemon *d;
    int listen_fd, port;
    atomic_int ready, draining, inflight;
    unsigned id;
    worker_ctx **pool;
    int npool;
    atomic_int next_ctx;
    pthread_mutex_t extra_mu;
    worker_ctx *extra[MAX_EXTRA_CTX];
    int nextra;
};

typedef enum { KIND_NONE, KIND_RAW, KIND_MULTIPART } body_kind;

typedef struct {
    uint64_t t0;               /* ns, CLOCK_MONOTONIC */
    srv_route route;
    char method[16];
    char path[256];
    int status;
    uint64_t resp_bytes;
    int model;
    body_kind kind;
    int over_limit;
    int done;                  /* a response is queued */
    pipe_status e_status;      /* error decided from the headers, or PIPE_OK */
    const char *e_allow;
    char e_msg[320];
    char boundary[SRV_BOUNDARY_MAX + 1];
    char rid[SRV_REQID_MAX + 1];
    uint8_t *body;
    size_t len, cap;
    uint8_t small[SMALL_BODY];
} srv_req;


static atomic_uint next_server_id = 1;
static _Thread_local worker_ctx *tls_ctx;
static _Thread_local unsigned tls_ctx_owner;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- worker contexts ---------------------------------------------------- */

static void ctx_free(worker_ctx *c, int nmodels)
{
    if (!c)
        return;
    for (int k = 0; k < nmodels; k++)
        pipe_ws_free(c->ws[k]);
    free(c);
}

static worker_ctx *ctx_create(const srv_models *ms)
{
    worker_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    for (int k = 0; k < ms->n; k++) {
        c->ws[k] = pipe_ws_create(ms->m[k].ens, 1);
        if (!c->ws[k]) {
            ctx_free(c, k);
            return NULL;
        }
    }
    return c;
}

/* The calling thread's context: from the pool made at start-up; only a
 * thread beyond the pool size (not expected) makes its own, once. */
static worker_ctx *get_ctx(srv_server *s)
{
    if (tls_ctx && tls_ctx_owner == s->id)
        return tls_ctx;
    int i = atomic_fetch_add(&s->next_ctx, 1);
    worker_ctx *c = NULL;
    if (i < s->npool) {
        c = s->pool[i];
    } else {
        c = ctx_create(s->models);
        if (!c)
            return NULL;
        pthread_mutex_lock(&s->extra_mu);
        int ok = s->nextra < MAX_EXTRA_CTX;
        if (ok)
            s->extra[s->nextra++] = c;
        pthread_mutex_unlock(&s->extra_mu);
        if (!ok) {
            ctx_free(c, s->models->n);
            return NULL;
        }
        srv_log(SRV_WARN, "thread %d beyond the pool of %d made its own "
                "workspace", i, s->npool);
    }
    tls_ctx = c;
    tls_ctx_owner = s->id;
    return c;
}

/* ---- responses ---------------------------------------------------------- */

static enum MHD_Result respond(srv_server *s, struct MHD_Connection *conn,
                               srv_req *r, int status, const char *ctype,
                               const void *body, size_t len,
                               enum MHD_ResponseMemoryMode mode,
                               const char *allow)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free((void *)body);
        srv_log(SRV_ERROR, "rid=%s cannot create a response (out of memory)",
                r->rid);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->rid);
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 503)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (atomic_load_explicit(&s->draining, memory_order_relaxed))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->resp_bytes = len;
    r->done = 1;
    return ret;
}

static void error_json(srv_buf *b, const char *code, const char *msg)
{
    srv_buf_puts(b, "{\"error\":{\"code\":");
    srv_buf_json_str(b, code);
    srv_buf_puts(b, ",\"message\":");
    srv_buf_json_str(b, msg);
    srv_buf_puts(b, "}}");
}

static enum MHD_Result respond_error(srv_server *s, struct MHD_Connection *c,
                                     srv_req *r, pipe_status st,
                                     const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum MHD_Result respond_error(srv_server *s, struct MHD_Connection *c,
                                     srv_req *r, pipe_status st,
                                     const char *allow, const char *fmt, ...)
{
    char msg[512], store[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_buf b;
    srv_buf_init(&b, store, sizeof store);
    error_json(&b, pipe_status_name(st), msg);
    enum MHD_Result ret =
        b.oom ? MHD_NO
              : respond(s, c, r, pipe_status_http(st), JSON_CT, b.data, b.len,
                        MHD_RESPMEM_MUST_COPY, allow);
    srv_buf_free(&b);
    return ret;
}

/* ---- answers --------------------------------------------------------------- */

/* Our JSON for one pipeline answer: the prediction document, or the error
 * envelope. */
static void result_json(srv_buf *b, const srv_model *m, const pipe_result *res,
                        uint64_t total_us)
{
    if (res->status != PIPE_OK) {
        error_json(b, pipe_status_name(res->status), res->msg);
        return;
    }
    srv_buf_printf(b, "{\"prediction\":%d,\"label\":", res->prediction);
    srv_buf_json_str(b, res->label);
    srv_buf_puts(b, ",\"confidence\":");
    srv_buf_json_float(b, res->probs[res->prediction]);
    srv_buf_puts(b, ",\"probabilities\":[");
    for (int c = 0; c < res->nclasses; c++) {
        if (c)
            srv_buf_append(b, ",", 1);
        srv_buf_json_float(b, res->probs[c]);
    }
    srv_buf_puts(b, "],\"model\":");
    srv_buf_json_str(b, m->name);
    srv_buf_printf(b,
                   ",\"timing\":{\"decode_us\":%llu,\"preprocess_us\":%llu,"
                   "\"inference_us\":%llu,\"total_us\":%llu}}",
                   (unsigned long long)res->decode_us,
                   (unsigned long long)res->prep_us,
                   (unsigned long long)res->infer_us,
                   (unsigned long long)total_us);
}

/* Runs the pipeline on one image with the thread's workspace; metrics and
 * the log see the outcome. */
static void classify(srv_server *s, worker_ctx *ctx, int model,
                     const uint8_t *data, size_t len, pipe_result *res)
{
    const srv_model *m = &s->models->m[model];
    pipe_run_png(m->ens, ctx->ws[model], data, len, &s->lim, NULL, res);
    if (res->status == PIPE_OK)
        srv_metrics_inference(s->metrics, model, res->infer_us,
                              res->prediction);
    else if (res->status == PIPE_INTERNAL)
        srv_log(SRV_ERROR, "model %s: %s", m->name, res->msg);
}

/* ---- POST handlers -------------------------------------------------------- */

static enum MHD_Result handle_predict(srv_server *s, struct MHD_Connection *c,
                                      srv_req *r)
{
    const uint8_t *data = r->body;
    size_t len = r->len;
    char err[256];
    if (r->kind == KIND_MULTIPART) {
        srv_part part;
        int n;
        int rc = srv_multipart_parse(r->body, r->len, r->boundary, "image",
                                     &part, 1, &n, err, sizeof err);
        /* More than one image: /predict answers for the first. */
        if (rc == SRV_MP_MALFORMED)
            return respond_error(s, c, r, PIPE_BAD_MULTIPART, NULL, "%s",
                                 err);
        if (n == 0)
            return respond_error(s, c, r, PIPE_MISSING_IMAGE, NULL,
                                 "multipart body has no 'image' field "
                                 "(curl -F image=@digit.png)");
        data = part.data;
        len = part.len;
    }
    worker_ctx *ctx = get_ctx(s);
    if (!ctx)
        return respond_error(s, c, r, PIPE_INTERNAL, NULL,
                             "no workspace for this thread (out of memory)");
    pipe_result res;
    classify(s, ctx, r->model, data, len, &res);
    char store[2048];
    srv_buf b;
    srv_buf_init(&b, store, sizeof store);
    result_json(&b, &s->models->m[r->model], &res, (now_ns() - r->t0) / 1000);
    enum MHD_Result ret =
        b.oom ? MHD_NO
              : respond(s, c, r, pipe_status_http(res.status), JSON_CT, b.data, b.len,
                        MHD_RESPMEM_MUST_COPY, NULL);
    srv_buf_free(&b);
    return ret;
}

static enum MHD_Result handle_batch(srv_server *s, struct MHD_Connection *c,
                                    srv_req *r)
{
    char err[256];
    int max = s->cfg->max_batch, n;
    srv_part *parts = malloc(sizeof *parts * (size_t)max);
    if (!parts)
        return respond_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
    int rc = srv_multipart_parse(r->body, r->len, r->boundary, "image", parts,
                                 max, &n, err, sizeof err);
    if (rc != SRV_MP_OK || n == 0) {
        free(parts);
        if (rc == SRV_MP_TOO_MANY)
            return respond_error(s, c, r, PIPE_TOO_MANY_IMAGES, NULL,
                                 "at most %d images per batch request", max);
        if (rc == SRV_MP_MALFORMED)
            return respond_error(s, c, r, PIPE_BAD_MULTIPART, NULL, "%s",
                                 err);
        return respond_error(s, c, r, PIPE_MISSING_IMAGE, NULL,
                             "multipart body has no 'image' field "
                             "(curl -F image=@a.png -F image=@b.png)");
    }
    worker_ctx *ctx = get_ctx(s);
    if (!ctx) {
        free(parts);
        return respond_error(s, c, r, PIPE_INTERNAL, NULL,
                             "no workspace for this thread (out of memory)");
    }
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_buf_reserve(&b, (size_t)n * 400 + 64);
    srv_buf_puts(&b, "{\"model\":");
    srv_buf_json_str(&b, s->models->m[r->model].name);
    srv_buf_printf(&b, ",\"count\":%d,\"results\":[", n);
    for (int i = 0; i < n; i++) {
        pipe_result res;
        uint64_t t0 = now_ns();
        classify(s, ctx, r->model, parts[i].data, parts[i].len, &res);
        if (i)
            srv_buf_append(&b, ",", 1);
        result_json(&b, &s->models->m[r->model], &res, (now_ns() - t0) / 1000);
    }
    srv_buf_puts(&b, "]}");
    free(parts);
    size_t len;
    char *body = srv_buf_detach(&b, &len);
    srv_buf_free(&b);
    if (!body)
        return respond_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
    return respond(s, c, r, 200, JSON_CT, body, len, MHD_RESPMEM_MUST_FREE,
                   NULL);
}

/* ---- GET handlers ---------------------------------------------------------- */

static enum MHD_Result handle_get(srv_server *s, struct MHD_Connection *c,
                                  srv_req *r)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char ready[] = "{\"status\":\"ready\"}";
    switch (r->route) {
    case SRV_ROUTE_HEALTHZ:
        return respond(s, c, r, 200, JSON_CT, ok, sizeof ok - 1,
                       MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_READYZ:
        if (atomic_load(&s->draining))
            return respond_error(s, c, r, PIPE_NOT_READY, NULL,
                                 "shutting down: finishing requests in flight");
        if (!atomic_load(&s->ready))
            return respond_error(s, c, r, PIPE_NOT_READY, NULL,
                                 "starting: models are warming up");
        return respond(s, c, r, 200, JSON_CT, ready, sizeof ready - 1,
                       MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_MODELS:
        return respond(s, c, r, 200, JSON_CT, s->models->json,
                       s->models->json_len, MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_OPENAPI:
        return respond(s, c, r, 200, "application/yaml", s->openapi,
                       s->openapi_len, MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_METRICS: {
        srv_buf b;
        srv_buf_init(&b, NULL, 0);
        srv_metrics_render(s->metrics, &b, atomic_load(&s->ready),
                           atomic_load(&s->draining));
        size_t len;
        char *body = srv_buf_detach(&b, &len);
        srv_buf_free(&b);
        if (!body)
            return respond_error(s, c, r, PIPE_INTERNAL, NULL,
                                 "out of memory");
        return respond(s, c, r, 200,
                       "text/plain; version=0.0.4; charset=utf-8", body, len,
                       MHD_RESPMEM_MUST_FREE, NULL);
    }
    default:
        return respond_error(s, c, r, PIPE_NOT_FOUND, NULL, "no such path");
    }
}

/* ---- request life cycle ------------------------------------------------------ */

static srv_route route_of(const char *url)
{
    static const struct { const char *path; srv_route route; } table[] = {
        {"/predict", SRV_ROUTE_PREDICT},   {"/predict/batch", SRV_ROUTE_BATCH},
        {"/healthz", SRV_ROUTE_HEALTHZ},   {"/readyz", SRV_ROUTE_READYZ},
        {"/v1/models", SRV_ROUTE_MODELS},  {"/metrics", SRV_ROUTE_METRICS},
        {"/openapi.yaml", SRV_ROUTE_OPENAPI}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(url, table[i].path) == 0)
            return table[i].route;
    return SRV_ROUTE_OTHER;
}

/* Media type of a Content-Type value, lowercased, parameters dropped. */
static void media_type(const char *ct, char *out, size_t outlen)
{
    size_t o = 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && *ct != '\t' && o + 1 < outlen;
         ct++)
        out[o++] = (char)((*ct >= 'A' && *ct <= 'Z') ? *ct + 32 : *ct);
    out[o] = '\0';
}

/* Records an error decided from the headers alone; on_request sends it.
 * Returns 0 so begin() can "return defer(...)". */
static int defer(srv_req *r, pipe_status st, const char *allow,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int defer(srv_req *r, pipe_status st, const char *allow,
                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->e_msg, sizeof r->e_msg, fmt, ap);
    va_end(ap);
    r->e_status = st;
    r->e_allow = allow;
    return 0;
}

/* Checks what the headers alone can decide: route, method, readiness,
 * model, content type and declared length. Errors are deferred (see
 * on_request). */
static int begin(srv_server *s, struct MHD_Connection *c, srv_req *r,
                 const char *url)
{
    int is_post = strcmp(r->method, "POST") == 0;
    int is_get = strcmp(r->method, "GET") == 0 ||
                 strcmp(r->method, "HEAD") == 0;
    if (r->route == SRV_ROUTE_OTHER)
        return defer(r, PIPE_NOT_FOUND, NULL,
                             "no such path: %s (see GET /openapi.yaml)",
                             r->path);
    int post_route = r->route == SRV_ROUTE_PREDICT ||
                     r->route == SRV_ROUTE_BATCH;
    if (post_route && !is_post)
        return defer(r, PIPE_METHOD_NOT_ALLOWED, "POST",
                             "%s accepts POST only", url);
    if (!post_route && !is_get)
        return defer(r, PIPE_METHOD_NOT_ALLOWED, "GET, HEAD",
                             "%s accepts GET and HEAD only", url);
    if (!post_route)
        return 0;   /* answered on the last call, keeping the connection */

    if (!atomic_load(&s->ready) && !atomic_load(&s->draining))
        return defer(r, PIPE_NOT_READY, NULL,
                             "starting: models are warming up");
    const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
                                                   "model");
    if (name) {
        r->model = srv_models_find(s->models, name);
        if (r->model < 0) {
            char safe[96];
            srv_log_sanitize(name, safe, sizeof safe);
            return defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                                 "no model named '%s' (see GET /v1/models)",
                                 safe);
        }
    }

    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    char mt[64];
    media_type(ct ? ct : "", mt, sizeof mt);
    if (strcmp(mt, "multipart/form-data") == 0) {
        if (srv_multipart_boundary(ct, r->boundary, sizeof r->boundary) < 0)
            return defer(r, PIPE_BAD_MULTIPART, NULL,
                                 "multipart/form-data needs a boundary "
                                 "parameter of 1..70 characters");
        r->kind = KIND_MULTIPART;
    } else if (r->route == SRV_ROUTE_PREDICT &&
               (strcmp(mt, "image/png") == 0 ||
                strcmp(mt, "application/octet-stream") == 0)) {
        r->kind = KIND_RAW;
    } else {
        char safe[96];
        srv_log_sanitize(ct ? ct : "(none)", safe, sizeof safe);
        if (r->route == SRV_ROUTE_BATCH)
            return defer(r, PIPE_UNSUPPORTED_MEDIA_TYPE, NULL,
                                 "Content-Type %s: /predict/batch takes "
                                 "multipart/form-data", safe);
        return defer(r, PIPE_UNSUPPORTED_MEDIA_TYPE, NULL,
                             "Content-Type %s: send image/png, "
                             "application/octet-stream or "
                             "multipart/form-data", safe);
    }

    const char *cl = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        /* MHD has validated the number; only its size matters here. */
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > s->cfg->body_limit)
            return defer(r, PIPE_PAYLOAD_TOO_LARGE, NULL,
                                 "request body of %llu bytes is over the "
                                 "limit of %zu bytes", n, s->cfg->body_limit);
        if (n > sizeof r->small) {
            r->body = malloc((size_t)n);
            if (r->body)
                r->cap = (size_t)n;
        }
    }
    if (!r->body) {
        r->body = r->small;
        r->cap = sizeof r->small;
    }
    return 0;
}

static void append_body(srv_server *s, srv_req *r, const char *data, size_t n)
{
    if (r->over_limit)
        return;
    if (n > s->cfg->body_limit - r->len) {
        /* Over the limit: stop buffering; the rest is read and dropped. */
        r->over_limit = 1;
        if (r->body != r->small)
            free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap * 2;
        if (cap < r->len + n)
            cap = r->len + n;
        if (cap > s->cfg->body_limit)
            cap = s->cfg->body_limit;
        uint8_t *p = r->body == r->small ? malloc(cap) : realloc(r->body, cap);
        if (!p) {
            r->over_limit = 2;   /* out of memory, answered 500 */
            if (r->body != r->small)
                free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return;
        }
        if (r->body == r->small)
            memcpy(p, r->small, r->len);
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
}

static int has_body(struct MHD_Connection *c)
{
    const char *cl = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strcmp(cl, "0") != 0)
        return 1;
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

static enum MHD_Result send_deferred(srv_server *s, struct MHD_Connection *c,
                                     srv_req *r)
{
    return respond_error(s, c, r, r->e_status, r->e_allow, "%s",
                         r->e_msg);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    srv_server *s = cls;
    srv_req *r = *con_cls;
    if (!r) {
        r = malloc(sizeof *r);
        if (!r)
            return MHD_NO;
        r->t0 = now_ns();
        r->route = route_of(url);
        snprintf(r->method, sizeof r->method, "%s", method);
        srv_log_sanitize(url, r->path, sizeof r->path);
        r->status = 0;
        r->resp_bytes = 0;
        r->model = s->models->default_idx;
        r->kind = KIND_NONE;
        r->over_limit = 0;
        r->done = 0;
        r->e_status = PIPE_OK;
        r->body = NULL;
        r->len = r->cap = 0;
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                      "X-Request-Id");
        if (rid && srv_reqid_valid(rid))
            snprintf(r->rid, sizeof r->rid, "%s", rid);
        else
            srv_reqid_generate(r->rid);
        *con_cls = r;
        atomic_fetch_add(&s->inflight, 1);
        srv_metrics_inflight_add(s->metrics, 1);
        begin(s, c, r, url);
        /* libmicrohttpd closes the connection after a response queued on
         * this first call. That is right when a body is coming (it is then
         * never read), but a bodiless request keeps its connection by being
         * answered on the next call. */
        if (r->e_status && has_body(c))
            return send_deferred(s, c, r);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->done && !r->e_status && r->kind != KIND_NONE)
            append_body(s, r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->done)
        return MHD_YES;
    if (r->e_status)
        return send_deferred(s, c, r);
    if (r->kind == KIND_NONE)
        return handle_get(s, c, r);
    if (r->over_limit == 2)
        return respond_error(s, c, r, PIPE_INTERNAL, NULL,
                             "out of memory buffering the request body");
    if (r->over_limit)
        return respond_error(s, c, r, PIPE_PAYLOAD_TOO_LARGE, NULL,
                             "request body is over the limit of %zu bytes",
                             s->cfg->body_limit);
    if (r->route == SRV_ROUTE_BATCH)
        return handle_batch(s, c, r);
    return handle_predict(s, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    srv_server *s = cls;
    srv_req *r = *con_cls;
    if (!r)
        return;
    uint64_t us = (now_ns() - r->t0) / 1000;
    srv_metrics_request(s->metrics, r->route, r->status, us);
    srv_metrics_inflight_add(s->metrics, -1);
    if (s->cfg->access_log) {
        const char *note = NULL;
        if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
            note = "timeout";
        else if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ||
                 toe == MHD_REQUEST_TERMINATED_READ_ERROR)
            note = "client_closed";
        else if (toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
            note = "shutdown";
        else if (toe == MHD_REQUEST_TERMINATED_WITH_ERROR)
            note = "error";
        srv_access a = {
            .method = r->method, .path = r->path, .status = r->status,
            .bytes = r->resp_bytes, .us = us, .rid = r->rid,
            .model = (r->route == SRV_ROUTE_PREDICT ||
                      r->route == SRV_ROUTE_BATCH) && r->status == 200
                         ? s->models->m[r->model].name : NULL,
            .note = note};
        srv_log_access(&a);
    }
    if (r->body != r->small)
        free(r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    srv_log(SRV_WARN, "libmicrohttpd: %s", msg);
}

/* ---- set-up and tear-down ---------------------------------------------------- */

srv_server *srv_server_create(const srv_config *cfg, srv_models *models,
                              const char *openapi, size_t openapi_len,
                              char *err, size_t errlen)
{
    srv_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->models = models;
    s->openapi = openapi ? openapi : "";
    s->openapi_len = openapi ? openapi_len : 0;
    s->listen_fd = -1;
    s->id = atomic_fetch_add(&next_server_id, 1);
    pthread_mutex_init(&s->extra_mu, NULL);
    img_limits_default(&s->lim);
    s->lim.max_pixels = cfg->max_pixels;
    int threads = cfg->threads > 0 ? cfg->threads : 1;
    /* One shard and workspace per pool thread, plus one spare. */
    s->metrics = srv_metrics_create(models->info, models->n, threads + 1);
    s->npool = threads + 1;
    s->pool = calloc((size_t)s->npool, sizeof *s->pool);
    if (!s->metrics || !s->pool) {
        snprintf(err, errlen, "out of memory");
        srv_server_free(s);
        return NULL;
    }
    for (int i = 0; i < s->npool; i++) {
        s->pool[i] = ctx_create(models);
        if (!s->pool[i]) {
            snprintf(err, errlen, "out of memory creating %d workspaces",
                     s->npool);
            srv_server_free(s);
            return NULL;
        }
    }
    return s;
}

static int bind_listen(const srv_config *cfg, int *port, char *err,
                       size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve host %s: %s", cfg->host,
                 gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 1024) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->host,
                 cfg->port, strerror(saved));
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

int srv_server_start(srv_server *s, char *err, size_t errlen)
{
    const srv_config *cfg = s->cfg;
    s->listen_fd = bind_listen(cfg, &s->port, err, errlen);
    if (s->listen_fd < 0)
        return -1;
    unsigned flags = MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        flags |= MHD_USE_EPOLL_INTERNAL_THREAD;
    else
        flags |= MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    unsigned threads = cfg->threads > 0 ? (unsigned)cfg->threads : 1;
    struct MHD_OptionItem opts[10];
    int n = 0;
    /* The logger first, so MHD reports even option errors through it. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER,
                                        (intptr_t)on_mhd_log, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET,
                                        s->listen_fd, NULL};
    /* A pool of one is no pool: leave the option out then. */
    if (threads > 1)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
                                            threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                        cfg->timeout_s, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                        cfg->max_connections, NULL};
    /* Headers and the read buffer per connection; bodies are copied out
     * chunk by chunk, so this does not bound the body size. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                        SRV_CONN_MEMORY, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED,
                                        (intptr_t)on_completed, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                            MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot start the HTTP daemon on %s:%d (see the "
                 "libmicrohttpd message above)", cfg->host, s->port);
        close(s->listen_fd);
        s->listen_fd = -1;
        return -1;
    }
    return 0;
}

int srv_server_port(const srv_server *s) { return s->port; }

int srv_server_warmup(srv_server *s, char *err, size_t errlen)
{
    worker_ctx *c = ctx_create(s->models);
    if (!c) {
        snprintf(err, errlen, "out of memory creating the warm-up workspace");
        return -1;
    }
    /* A plain stroke: any input exercises the whole forward path. */
    float x[PIPE_PIXELS] = {0};
    for (int y = 6; y < 22; y++)
        x[y * PIPE_SIDE + 14] = 1.0f;
    for (int k = 0; k < s->models->n; k++) {
        const srv_model *m = &s->models->m[k];
        pipe_result res;
        pipe_run_tensors(m->ens, c->ws[k], PIPE_F32, x, 1, &res);
        double sum = 0;
        for (int i = 0; i < res.nclasses; i++)
            sum += res.probs[i];
        if (res.status != PIPE_OK || fabs(sum - 1) > 1e-3) {
            snprintf(err, errlen, "model '%s' failed its warm-up inference "
                     "(%s; probabilities sum to %g)", m->name,
                     pipe_status_name(res.status), sum);
            ctx_free(c, s->models->n);
            return -1;
        }
    }
    ctx_free(c, s->models->n);
    atomic_store(&s->ready, 1);
    return 0;
}

void srv_server_quiesce(srv_server *s)
{
    atomic_store(&s->draining, 1);
    if (!s->d)
        return;
    /* After quiesce MHD no longer owns the listening socket; closing it
     * now makes new connections fail fast instead of waiting in the
     * backlog until the process exits. */
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    s->listen_fd = -1;
}

int srv_server_inflight(const srv_server *s)
{
    return atomic_load(&((srv_server *)s)->inflight);
}

void srv_server_stop(srv_server *s)
{
    if (s->d) {
        MHD_stop_daemon(s->d);
        s->d = NULL;
        s->listen_fd = -1;   /* closed by MHD unless quiesced (closed there) */
    }
}

void srv_server_free(srv_server *s)
{
    if (!s)
        return;
    srv_server_stop(s);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    for (int i = 0; s->pool && i < s->npool; i++)
        ctx_free(s->pool[i], s->models->n);
    for (int i = 0; i < s->nextra; i++)
        ctx_free(s->extra[i], s->models->n);
    free(s->pool);
    srv_metrics_free(s->metrics);
    pthread_mutex_destroy(&s->extra_mu);
    free(s);
}
