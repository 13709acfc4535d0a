/* http_conn.c - one request on its connection: state created on the
 * first callback, body collected chunk by chunk up to the limit, the
 * response and the error envelope, completion (metrics, access log, free).
 * See http_int.h for the life cycle. */
#include "server/http_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

uint64_t srv_http_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- responses ---------------------------------------------------------- */

enum MHD_Result srv_http_respond(srv_server *s, struct MHD_Connection *conn, srv_req *r, int status,
                                 const char *ctype, const void *body, size_t len,
                                 enum MHD_ResponseMemoryMode mode, const char *allow)
{
    return srv_http_respond_hdrs(s, conn, r, status, ctype, body, len, mode, allow, NULL, 0);
}

enum MHD_Result srv_http_respond_hdrs(srv_server *s, struct MHD_Connection *conn, srv_req *r,
                                      int status, const char *ctype, const void *body, size_t len,
                                      enum MHD_ResponseMemoryMode mode, const char *allow,
                                      const char *const (*hdrs)[2], int nhdrs)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE) free((void *)body);
        srv_log(SRV_ERROR, "rid=%s cannot create a response (out of memory)", r->rid);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->rid);
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    for (int i = 0; i < nhdrs; i++) MHD_add_response_header(resp, hdrs[i][0], hdrs[i][1]);
    if (r->resp_hdr_len) {
        char v[32];
        snprintf(v, sizeof v, "%zu", r->resp_hdr_len);
        MHD_add_response_header(resp, "Inference-Header-Content-Length", v);
    }
    if (s->cfg->ncors) {
        /* With CORS on, answers differ by Origin: caches must key on it,
         * also for origins that get no CORS headers. */
        MHD_add_response_header(resp, "Vary", "Origin");
        if (r->origin) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin",
                                    srv_config_cors_any(s->cfg) ? "*" : r->origin);
            MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                    "X-Request-Id, Inference-Header-Content-Length");
            if (r->preflight) {
                MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                        "GET, HEAD, POST, OPTIONS");
                MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                        "Content-Type, X-Request-Id, "
                                        "Inference-Header-Content-Length");
                MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
            }
        }
    }
    if (status == 503) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (atomic_load_explicit(&s->draining, memory_order_relaxed))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->resp_bytes = len;
    r->done = 1;
    return ret;
}

void srv_http_error_json(srv_buf *b, const char *code, const char *msg)
{
    srv_buf_puts(b, "{\"error\":{\"code\":");
    srv_buf_json_str(b, code);
    srv_buf_puts(b, ",\"message\":");
    srv_buf_json_str(b, msg);
    srv_buf_puts(b, "}}");
}

enum MHD_Result srv_http_error(srv_server *s, struct MHD_Connection *c, srv_req *r, pipe_status st,
                               const char *allow, const char *fmt, ...)
{
    char msg[512], store[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_buf b;
    srv_buf_init(&b, store, sizeof store);
    if (r->v2)
        srv_oip_error_write(&b, msg); /* the protocol's {"error": "..."} */
    else
        srv_http_error_json(&b, pipe_status_name(st), msg);
    enum MHD_Result ret = b.oom ? MHD_NO
                                : srv_http_respond(s, c, r, pipe_status_http(st), SRV_HTTP_JSON,
                                                   b.data, b.len, MHD_RESPMEM_MUST_COPY, allow);
    srv_buf_free(&b);
    return ret;
}

/* ---- request state and body ---------------------------------------------------- */

int srv_http_defer(srv_req *r, pipe_status st, const char *allow, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->e_msg, sizeof r->e_msg, fmt, ap);
    va_end(ap);
    r->e_status = st;
    r->e_allow = allow;
    return 0;
}

/* The most body bytes read (and dropped) to answer an error cleanly: four
 * times the body limit. Closing with unread bytes in the socket makes the
 * kernel reset the connection, and a client still sending then loses the
 * answer; past this bound the bytes are not worth reading. */
static uint64_t drain_bound(const srv_server *s)
{
    uint64_t b = (uint64_t)s->cfg->body_limit;
    return b > UINT64_MAX / 4 ? UINT64_MAX : 4 * b;
}

/* The declared body size (first call, a body expected): over the limit is
 * decided before a byte is read; a body known to be large gets its whole
 * buffer at once. */
static void expect_body(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        /* MHD has validated the number; only its size matters here. */
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > s->cfg->body_limit) {
            srv_http_defer(r, PIPE_PAYLOAD_TOO_LARGE, NULL,
                           "request body of %llu bytes is over the limit of %zu bytes", n,
                           s->cfg->body_limit);
            return;
        }
        if (n > sizeof r->small) {
            r->body = malloc((size_t)n);
            if (r->body) r->cap = (size_t)n;
        }
    }
    if (!r->body) {
        r->body = r->small;
        r->cap = sizeof r->small;
    }
}

static void append_body(srv_server *s, srv_req *r, const char *data, size_t n)
{
    if (r->over_limit) return;
    if (n > s->cfg->body_limit - r->len) {
        /* Over the limit: stop buffering; the rest is read and dropped. */
        r->over_limit = 1;
        if (r->body != r->small) free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap * 2;
        if (cap < r->len + n) cap = r->len + n;
        if (cap > s->cfg->body_limit) cap = s->cfg->body_limit;
        uint8_t *p = r->body == r->small ? malloc(cap) : realloc(r->body, cap);
        if (!p) {
            r->over_limit = 2; /* out of memory, answered 500 */
            if (r->body != r->small) free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return;
        }
        if (r->body == r->small) memcpy(p, r->small, r->len);
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
}

static int has_body(struct MHD_Connection *c)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strcmp(cl, "0") != 0) return 1;
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
           NULL;
}

/* An error decided from the headers of a request with a body: answered at
 * once, or after the body has been read and dropped. At once when the
 * request failed before its route was looked at (unclear framing, whose
 * body end is unknown, or a request target or header block over the
 * limits), when the client waits for 100 Continue (it then sends nothing)
 * or when the declared body is past the drain bound; libmicrohttpd then
 * closes the connection. */
static int answer_before_body(const srv_server *s, struct MHD_Connection *c, int malformed)
{
    if (malformed) return 1;
    const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if (ex && strcasecmp(ex, "100-continue") == 0) return 1;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return cl && strtoull(cl, NULL, 10) > drain_bound(s);
}

/* Message framing and Host (RFC 9112 3.2, 6.1, 6.3), checked before
 * anything else. A request whose body length two readers could see
 * differently (two different Content-Length values, or Content-Length with
 * Transfer-Encoding) is refused, so nothing can be smuggled past a proxy
 * that picked the other reading; libmicrohttpd would use the first value. */
typedef struct {
    int ncl, nhost, nte;
    const char *cl, *te;
    int cl_differ;
    int fields;   /* header fields */
    size_t bytes; /* their size as sent: "Name: value\r\n" */
} framing;

static enum MHD_Result framing_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    framing *f = cls;
    if (!value) value = "";
    f->fields++;
    f->bytes += strlen(key) + strlen(value) + 4;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->ncl++ && strcmp(f->cl, value) != 0)
            f->cl_differ = 1;
        else
            f->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        f->nhost++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->nte++;
        f->te = value;
    }
    return MHD_YES;
}

static void check_framing(struct MHD_Connection *c, const char *version, srv_req *r)
{
    framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, framing_field, &f);
    if (f.fields > SRV_HTTP_MAX_HEADER_FIELDS || f.bytes > SRV_HTTP_MAX_HEADER_BYTES)
        srv_http_defer(r, PIPE_HEADERS_TOO_LARGE, NULL,
                       "%d header fields of %zu bytes: at most %d fields and %d bytes", f.fields,
                       f.bytes, SRV_HTTP_MAX_HEADER_FIELDS, SRV_HTTP_MAX_HEADER_BYTES);
    else if (f.cl_differ)
        srv_http_defer(r, PIPE_BAD_REQUEST, NULL, "two different Content-Length headers");
    else if (f.ncl && f.nte)
        srv_http_defer(r, PIPE_BAD_REQUEST, NULL, "Content-Length together with Transfer-Encoding");
    else if (f.nte && (f.nte > 1 || strcasecmp(f.te, "chunked") != 0))
        srv_http_defer(r, PIPE_NOT_IMPLEMENTED, NULL,
                       "Transfer-Encoding: only chunked is supported");
    else if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 && f.nhost != 1)
        srv_http_defer(r, PIPE_BAD_REQUEST, NULL, "%s",
                       f.nhost ? "more than one Host header"
                               : "HTTP/1.1 request without a Host header");
}

static enum MHD_Result send_deferred(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    return srv_http_error(s, c, r, r->e_status, r->e_allow, "%s", r->e_msg);
}

/* The URI callback's answer for a request target over the limit. */
static const char uri_too_long;

void *srv_http_on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    return strnlen(uri, SRV_HTTP_MAX_URI + 1) > SRV_HTTP_MAX_URI ? (void *)&uri_too_long : NULL;
}

enum MHD_Result srv_http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *upload,
                                    size_t *upload_size, void **con_cls)
{
    srv_server *s = cls;
    srv_req *r = *con_cls;
    int long_uri = r == (const void *)&uri_too_long;
    if (long_uri) r = NULL;
    if (!r) {
        r = malloc(sizeof *r);
        if (!r) return MHD_NO;
        r->t0 = srv_http_now_ns();
        r->route = srv_route_of(url);
        r->v2 = srv_oip_path_parse(url, &r->v2p) != SRV_OIP_PATH_NONE;
        r->hdr_len = -1;
        r->resp_hdr_len = 0;
        r->origin = NULL;
        r->preflight = 0;
        snprintf(r->method, sizeof r->method, "%s", method);
        srv_log_sanitize(url, r->path, sizeof r->path);
        r->status = 0;
        r->resp_bytes = 0;
        /* The models as they are now: this request keeps them until it
         * completes, whatever reloads meanwhile. */
        r->snap = srv_registry_acquire(s->reg);
        r->model = srv_snapshot_default(r->snap);
        r->kind = SRV_BODY_NONE;
        r->over_limit = 0;
        r->seen = 0;
        r->done = 0;
        r->e_status = PIPE_OK;
        r->asset = NULL;
        r->want_prep = 0;
        r->pend = NULL;
        r->body = NULL;
        r->len = r->cap = 0;
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && srv_reqid_valid(rid))
            snprintf(r->rid, sizeof r->rid, "%s", rid);
        else
            srv_reqid_generate(r->rid);
        *con_cls = r;
        atomic_fetch_add(&s->inflight, 1);
        srv_metrics_inflight_add(s->metrics, 1);
        if (long_uri)
            srv_http_defer(r, PIPE_URI_TOO_LONG, NULL, "request target over the limit of %d bytes",
                           SRV_HTTP_MAX_URI);
        else
            check_framing(c, version, r);
        int malformed = r->e_status != PIPE_OK;
        if (!r->e_status) srv_http_begin(s, c, r, url);
        if (!r->e_status && r->kind != SRV_BODY_NONE) expect_body(s, c, r);
        /* libmicrohttpd closes the connection after a response queued on
         * this first call, without reading the body. Any other error is
         * answered on the last call, after the body (up to the drain
         * bound) has been read and dropped; a bodiless request keeps its
         * connection that way too. */
        if (r->e_status && has_body(c) && answer_before_body(s, c, malformed))
            return send_deferred(s, c, r);
        return MHD_YES;
    }
    if (*upload_size) {
        /* A chunked body past the drain bound: closed, not read on. */
        if (*upload_size > drain_bound(s) - r->seen) return MHD_NO;
        r->seen += *upload_size;
        if (!r->done && !r->e_status && r->kind != SRV_BODY_NONE)
            append_body(s, r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->done) return MHD_YES;
    if (r->e_status) return send_deferred(s, c, r);
    if (r->over_limit == 2)
        return srv_http_error(s, c, r, PIPE_INTERNAL, NULL,
                              "out of memory buffering the request body");
    if (r->over_limit)
        return srv_http_error(s, c, r, PIPE_PAYLOAD_TOO_LARGE, NULL,
                              "request body is over the limit of %zu bytes", s->cfg->body_limit);
    return srv_http_handle(s, c, r, url);
}

void srv_http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    srv_server *s = cls;
    srv_req *r = *con_cls;
    /* The marker alone: libmicrohttpd refused the request before the
     * first call (a header block past its memory pool). */
    if (!r || r == (const void *)&uri_too_long) return;
    if (!r->done) {
        /* libmicrohttpd's own answer to a body it could not read (bad
         * chunked framing), if it sent one. */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        if (ci) r->status = (int)ci->http_status;
    }
    uint64_t us = (srv_http_now_ns() - r->t0) / 1000;
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
        /* The model (and version) that answered a prediction. */
        const srv_model *m = (r->route == SRV_ROUTE_PREDICT || r->route == SRV_ROUTE_BATCH ||
                              r->route == SRV_ROUTE_V2_INFER) &&
                                     r->status == 200
                                 ? r->model
                                 : NULL;
        srv_access a = {.method = r->method,
                        .path = r->path,
                        .status = r->status,
                        .bytes = r->resp_bytes,
                        .us = us,
                        .rid = r->rid,
                        .model = m ? m->name : NULL,
                        .model_version = m ? m->version : 0,
                        .note = note};
        srv_log_access(&a);
    }
    if (r->body != r->small) free(r->body);
    /* Answered by then: srv_server_stop waits for every batch callback
     * before libmicrohttpd closes a suspended connection. */
    free(r->pend);
    /* The last request on an old snapshot frees it (and the models only
     * it still held). */
    srv_snapshot_release(r->snap);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
}
