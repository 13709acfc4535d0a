/* http_handlers.c - what each route does: the checks the headers alone
 * decide (method, readiness, model, content type), then the handlers:
 * the GET documents, and POST /predict and /predict/batch over the
 * serving pipeline. See http_int.h for the life cycle; adding an endpoint:
 * CONTRIBUTING.md. */
#include "http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checks from the headers ------------------------------------------------ */

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

void srv_http_begin(srv_server *s, struct MHD_Connection *c, srv_req *r, const char *url)
{
    int is_post = strcmp(r->method, "POST") == 0;
    int is_get = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
    if (r->route == SRV_ROUTE_OTHER) {
        srv_http_defer(r, PIPE_NOT_FOUND, NULL, "no such path: %s (see GET /openapi.yaml)",
                       r->path);
        return;
    }
    int post_route = srv_route_is_post(r->route);
    if (post_route && !is_post) {
        srv_http_defer(r, PIPE_METHOD_NOT_ALLOWED, srv_route_allow(r->route),
                       "%s accepts POST only", url);
        return;
    }
    if (!post_route && !is_get) {
        srv_http_defer(r, PIPE_METHOD_NOT_ALLOWED, srv_route_allow(r->route),
                       "%s accepts GET and HEAD only", url);
        return;
    }
    if (!post_route)
        return; /* answered on the last call, keeping the connection */

    if (!atomic_load(&s->ready) && !atomic_load(&s->draining)) {
        srv_http_defer(r, PIPE_NOT_READY, NULL, "starting: models are warming up");
        return;
    }
    const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "model");
    if (name) {
        r->model = srv_models_find(s->models, name);
        if (r->model < 0) {
            char safe[96];
            srv_log_sanitize(name, safe, sizeof safe);
            srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                           "no model named '%s' (see GET /v1/models)", safe);
            return;
        }
    }

    const char *ct =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    char mt[64];
    media_type(ct ? ct : "", mt, sizeof mt);
    if (strcmp(mt, "multipart/form-data") == 0) {
        if (srv_multipart_boundary(ct, r->boundary, sizeof r->boundary) < 0) {
            srv_http_defer(r, PIPE_BAD_MULTIPART, NULL,
                           "multipart/form-data needs a boundary parameter of 1..70 "
                           "characters");
            return;
        }
        r->kind = SRV_BODY_MULTIPART;
    } else if (r->route == SRV_ROUTE_PREDICT &&
               (strcmp(mt, "image/png") == 0 || strcmp(mt, "application/octet-stream") == 0)) {
        r->kind = SRV_BODY_RAW;
    } else {
        char safe[96];
        srv_log_sanitize(ct ? ct : "(none)", safe, sizeof safe);
        if (r->route == SRV_ROUTE_BATCH)
            srv_http_defer(r, PIPE_UNSUPPORTED_MEDIA_TYPE, NULL,
                           "Content-Type %s: /predict/batch takes multipart/form-data", safe);
        else
            srv_http_defer(r, PIPE_UNSUPPORTED_MEDIA_TYPE, NULL,
                           "Content-Type %s: send image/png, application/octet-stream or "
                           "multipart/form-data",
                           safe);
    }
}

/* ---- answers --------------------------------------------------------------- */

/* Our JSON for one pipeline answer: the prediction document, or the error
 * envelope. */
static void result_json(srv_buf *b, const srv_model *m, const pipe_result *res,
                        uint64_t total_us)
{
    if (res->status != PIPE_OK) {
        srv_http_error_json(b, pipe_status_name(res->status), res->msg);
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
static void classify(srv_server *s, srv_ws *w, int model,
                     const uint8_t *data, size_t len, pipe_result *res)
{
    const srv_model *m = &s->models->m[model];
    pipe_run_png(m->ens, w->ws[model], data, len, &s->lim, NULL, res);
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
    if (r->kind == SRV_BODY_MULTIPART) {
        srv_part part;
        int n;
        int rc = srv_multipart_parse(r->body, r->len, r->boundary, "image",
                                     &part, 1, &n, err, sizeof err);
        /* More than one image: /predict answers for the first. */
        if (rc == SRV_MP_MALFORMED)
            return srv_http_error(s, c, r, PIPE_BAD_MULTIPART, NULL, "%s",
                                 err);
        if (n == 0)
            return srv_http_error(s, c, r, PIPE_MISSING_IMAGE, NULL,
                                 "multipart body has no 'image' field "
                                 "(curl -F image=@digit.png)");
        data = part.data;
        len = part.len;
    }
    srv_ws *w = srv_pool_get(s->pool);
    if (!w)
        return srv_http_error(s, c, r, PIPE_INTERNAL, NULL,
                             "no workspace for this thread (out of memory)");
    pipe_result res;
    classify(s, w, r->model, data, len, &res);
    char store[2048];
    srv_buf b;
    srv_buf_init(&b, store, sizeof store);
    result_json(&b, &s->models->m[r->model], &res, (srv_http_now_ns() - r->t0) / 1000);
    enum MHD_Result ret =
        b.oom ? MHD_NO
              : srv_http_respond(s, c, r, pipe_status_http(res.status), SRV_HTTP_JSON, b.data, b.len,
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
        return srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
    int rc = srv_multipart_parse(r->body, r->len, r->boundary, "image", parts,
                                 max, &n, err, sizeof err);
    if (rc != SRV_MP_OK || n == 0) {
        free(parts);
        if (rc == SRV_MP_TOO_MANY)
            return srv_http_error(s, c, r, PIPE_TOO_MANY_IMAGES, NULL,
                                 "at most %d images per batch request", max);
        if (rc == SRV_MP_MALFORMED)
            return srv_http_error(s, c, r, PIPE_BAD_MULTIPART, NULL, "%s",
                                 err);
        return srv_http_error(s, c, r, PIPE_MISSING_IMAGE, NULL,
                             "multipart body has no 'image' field "
                             "(curl -F image=@a.png -F image=@b.png)");
    }
    srv_ws *w = srv_pool_get(s->pool);
    if (!w) {
        free(parts);
        return srv_http_error(s, c, r, PIPE_INTERNAL, NULL,
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
        uint64_t t0 = srv_http_now_ns();
        classify(s, w, r->model, parts[i].data, parts[i].len, &res);
        if (i)
            srv_buf_append(&b, ",", 1);
        result_json(&b, &s->models->m[r->model], &res, (srv_http_now_ns() - t0) / 1000);
    }
    srv_buf_puts(&b, "]}");
    free(parts);
    size_t len;
    char *body = srv_buf_detach(&b, &len);
    srv_buf_free(&b);
    if (!body)
        return srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
    return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, body, len, MHD_RESPMEM_MUST_FREE,
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
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, ok, sizeof ok - 1,
                       MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_READYZ:
        if (atomic_load(&s->draining))
            return srv_http_error(s, c, r, PIPE_NOT_READY, NULL,
                                 "shutting down: finishing requests in flight");
        if (!atomic_load(&s->ready))
            return srv_http_error(s, c, r, PIPE_NOT_READY, NULL,
                                 "starting: models are warming up");
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, ready, sizeof ready - 1,
                       MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_MODELS:
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, s->models->json,
                       s->models->json_len, MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_OPENAPI:
        return srv_http_respond(s, c, r, 200, "application/yaml", s->openapi,
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
            return srv_http_error(s, c, r, PIPE_INTERNAL, NULL,
                                 "out of memory");
        return srv_http_respond(s, c, r, 200,
                       "text/plain; version=0.0.4; charset=utf-8", body, len,
                       MHD_RESPMEM_MUST_FREE, NULL);
    }
    default:
        return srv_http_error(s, c, r, PIPE_NOT_FOUND, NULL, "no such path");
    }
}

enum MHD_Result srv_http_handle(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    switch (r->route) {
    case SRV_ROUTE_PREDICT:
        return handle_predict(s, c, r);
    case SRV_ROUTE_BATCH:
        return handle_batch(s, c, r);
    default:
        return handle_get(s, c, r);
    }
}
