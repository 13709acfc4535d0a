/* http_handlers.c - what each route does: the checks the headers alone
 * decide (method, readiness, model, content type, CORS), then the
 * handlers: the GET documents, POST /predict and /predict/batch, and the
 * Open Inference Protocol's /v2 paths, over the serving pipeline. See
 * http_int.h for the life cycle; adding an endpoint: CONTRIBUTING.md. */
#include "server/http_int.h"
#include "server/base64.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checks from the headers ------------------------------------------------ */

/* Media type of a Content-Type value, lowercased, parameters dropped. */
static void media_type(const char *ct, char *out, size_t outlen)
{
    size_t o = 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && *ct != '\t' && o + 1 < outlen; ct++)
        out[o++] = (char)((*ct >= 'A' && *ct <= 'Z') ? *ct + 32 : *ct);
    out[o] = '\0';
}

/* POST .../infer: JSON, or JSON followed by binary tensor data (Triton's
 * clients send that as octet-stream, or with no type at all), and the
 * JSON part's length when binary data follows. */
static void begin_v2_infer(struct MHD_Connection *c, srv_req *r, const char *ct, const char *mt)
{
    if (ct && strcmp(mt, "application/json") != 0 && strcmp(mt, "application/octet-stream") != 0) {
        char safe[96];
        srv_log_sanitize(ct, safe, sizeof safe);
        srv_http_defer(r, PIPE_UNSUPPORTED_MEDIA_TYPE, NULL,
                       "Content-Type %s: send application/json (or "
                       "application/octet-stream with binary tensor data)",
                       safe);
        return;
    }
    const char *hl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    if (hl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(hl, &end, 10);
        if (*hl < '0' || *hl > '9' || *end || errno || v > (unsigned long long)INT64_MAX) {
            char safe[64];
            srv_log_sanitize(hl, safe, sizeof safe);
            srv_http_defer(r, PIPE_BAD_REQUEST, NULL,
                           "Inference-Header-Content-Length '%s' is not a byte count", safe);
            return;
        }
        r->hdr_len = (int64_t)v;
    }
    r->kind = SRV_BODY_JSON;
}

/* ?include= is a comma-separated list; "preprocessed" is the one item.
 * Returns 0 (setting *prep), or -1 for an unknown item. */
static int parse_include(const char *v, int *prep)
{
    static const char item[] = "preprocessed";
    while (*v) {
        size_t n = strcspn(v, ",");
        if (n == sizeof item - 1 && memcmp(v, item, n) == 0)
            *prep = 1;
        else if (n > 0)
            return -1;
        v += n;
        if (*v) v++;
    }
    return 0;
}

void srv_http_begin(srv_server *s, struct MHD_Connection *c, srv_req *r, const char *url)
{
    int is_post = strcmp(r->method, "POST") == 0;
    int is_get = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
    if (s->cfg->ncors) {
        const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
        if (srv_config_cors_allows(s->cfg, origin))
            r->origin = origin; /* MHD keeps it until the request completes */
    }
    if (r->route == SRV_ROUTE_OTHER && (r->asset = srv_web_find(s->web, url)) != NULL)
        r->route = SRV_ROUTE_PAGE;
    if (r->route == SRV_ROUTE_OTHER) {
        srv_http_defer(r, PIPE_NOT_FOUND, NULL, "no such path: %s (see GET /openapi.yaml)",
                       r->path);
        return;
    }
    /* With CORS on, OPTIONS on any path is a preflight: 204, with the CORS
     * headers only for an allowed origin (srv_http_respond). */
    if (s->cfg->ncors && strcmp(r->method, "OPTIONS") == 0) {
        r->preflight = 1;
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
    if (r->route == SRV_ROUTE_V2_MODEL || r->route == SRV_ROUTE_V2_MODEL_READY ||
        r->route == SRV_ROUTE_V2_INFER) {
        /* The model (and version) are in the path. */
        char safe[96];
        srv_log_sanitize(r->v2p.name, safe, sizeof safe);
        srv_model *m = r->v2p.name[0] ? srv_snapshot_find(r->snap, r->v2p.name, 0) : NULL;
        if (!m) {
            srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                           "no model named '%s' (see GET /v1/models)", safe);
            return;
        }
        if (r->v2p.has_version) {
            int v;
            srv_model *mv = srv_model_version_parse(r->v2p.version, &v) == 0
                                ? srv_snapshot_find(r->snap, r->v2p.name, v)
                                : NULL;
            if (!mv) {
                char ver[96];
                srv_log_sanitize(r->v2p.version, ver, sizeof ver);
                srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                               "model '%s' has no version '%s' serving (it serves version "
                               "%d; see GET /v1/models)",
                               safe, ver, m->version);
                return;
            }
            m = mv;
        }
        r->model = m;
    }
    if (!post_route) return; /* answered on the last call, keeping the connection */

    if (r->route == SRV_ROUTE_REPO_INDEX || r->route == SRV_ROUTE_REPO_LOAD ||
        r->route == SRV_ROUTE_REPO_UNLOAD) {
        if (!s->cfg->model_control) {
            srv_http_defer(r, PIPE_MODEL_CONTROL_DISABLED, NULL,
                           "the repository API is off; start the server with "
                           "--enable-model-control to use it");
            return;
        }
        r->kind = SRV_BODY_RAW; /* read up to the limit and ignored */
        return;
    }

    if (!atomic_load(&s->ready) && !atomic_load(&s->draining)) {
        srv_http_defer(r, PIPE_NOT_READY, NULL, "starting: models are warming up");
        return;
    }
    /* ?model=NAME, ?model=NAME:N or ?model=NAME&version=N (our API) */
    const char *name =
        r->v2 ? NULL : MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "model");
    const char *ver =
        r->v2 ? NULL : MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "version");
    if (name || ver) {
        char nm[SRV_NAME_MAX], safe[96];
        int v = 0;
        if (name && srv_model_spec_parse(name, nm, &v) < 0) {
            srv_log_sanitize(name, safe, sizeof safe);
            srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                           "no model named '%s' (see GET /v1/models)", safe);
            return;
        }
        if (!name) snprintf(nm, sizeof nm, "%s", r->model ? r->model->name : "");
        if (ver && (srv_model_version_parse(ver, &v) < 0 || (name && strchr(name, ':')))) {
            srv_log_sanitize(ver, safe, sizeof safe);
            srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                           "version '%s': give one version, a number from 1 (?model=NAME"
                           "&version=N or ?model=NAME:N)",
                           safe);
            return;
        }
        r->model = srv_snapshot_find(r->snap, nm, v);
        if (!r->model) {
            if (v && srv_snapshot_find(r->snap, nm, 0))
                srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                               "model '%s' has no version %d serving (see GET /v1/models)", nm, v);
            else
                srv_http_defer(r, PIPE_MODEL_NOT_FOUND, NULL,
                               "no model named '%s' (see GET /v1/models)", nm);
            return;
        }
    }
    if (!r->model) {
        srv_http_defer(r, PIPE_NOT_READY, NULL, "no model serves");
        return;
    }
    const char *inc =
        r->v2 ? NULL : MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "include");
    if (inc && parse_include(inc, &r->want_prep) < 0) {
        char safe[96];
        srv_log_sanitize(inc, safe, sizeof safe);
        srv_http_defer(r, PIPE_BAD_REQUEST, NULL,
                       "include=%s: the one value known is 'preprocessed'", safe);
        return;
    }

    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    char mt[64];
    media_type(ct ? ct : "", mt, sizeof mt);
    if (r->route == SRV_ROUTE_V2_INFER) {
        begin_v2_infer(c, r, ct, mt);
    } else if (strcmp(mt, "application/json") == 0) {
        r->kind = SRV_BODY_JSON; /* {"image": ...} or {"images": [...]} */
    } else if (strcmp(mt, "multipart/form-data") == 0) {
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
                           "Content-Type %s: /predict/batch takes multipart/form-data or "
                           "application/json",
                           safe);
        else
            srv_http_defer(r, PIPE_UNSUPPORTED_MEDIA_TYPE, NULL,
                           "Content-Type %s: send image/png, application/octet-stream, "
                           "multipart/form-data or application/json",
                           safe);
    }
}

/* ---- answers --------------------------------------------------------------- */

/* Appends ,"preprocessed":{...}: the network input x (28x28, 0..1) as an
 * 8-bit gray PNG in base64, the picture of what the model saw. */
static void preprocessed_json(srv_buf *b, const float *x)
{
    uint16_t px[PIPE_PIXELS];
    for (int i = 0; i < PIPE_PIXELS; i++) {
        float v = x[i] < 0 ? 0 : x[i] > 1 ? 1 : x[i];
        px[i] = (uint16_t)lrintf(v * 255.0f);
    }
    img_png_spec spec = {
        .width = PIPE_SIDE, .height = PIPE_SIDE, .color_type = 0, .bit_depth = 8, .samples = px};
    uint8_t *png = NULL;
    size_t len = 0;
    char err[128];
    if (img_png_encode(&spec, &png, &len, err, sizeof err) != IMG_OK) {
        srv_log(SRV_ERROR, "preprocessed image: %s", err);
        b->oom = 1; /* answered like any failure to build the body */
        return;
    }
    srv_buf_printf(b, ",\"preprocessed\":{\"width\":%d,\"height\":%d,\"png\":\"", PIPE_SIDE,
                   PIPE_SIDE);
    size_t n = srv_b64_encoded_len(len);
    if (srv_buf_reserve(b, n) == 0) {
        srv_b64_encode(png, len, b->data + b->len);
        b->len += n;
        b->data[b->len] = '\0';
    }
    srv_buf_puts(b, "\"}");
    free(png);
}

/* Our JSON for one pipeline answer: the prediction document (with the
 * preprocessed image when prepared is not NULL), or the error envelope. */
static void result_json(srv_buf *b, const srv_model *m, const pipe_result *res, uint64_t total_us,
                        const float *prepared)
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
        if (c) srv_buf_append(b, ",", 1);
        srv_buf_json_float(b, res->probs[c]);
    }
    /* null when the model carries no out-of-distribution statistics. */
    if (res->has_ood) {
        srv_buf_puts(b, "],\"ood_score\":");
        srv_buf_json_float(b, res->ood_score);
        srv_buf_puts(b, res->in_distribution ? ",\"in_distribution\":true"
                                             : ",\"in_distribution\":false");
    } else {
        srv_buf_puts(b, "],\"ood_score\":null,\"in_distribution\":null");
    }
    srv_buf_puts(b, ",\"model\":");
    srv_buf_json_str(b, m->name);
    srv_buf_printf(b, ",\"model_version\":%d", m->version);
    srv_buf_printf(b,
                   ",\"timing\":{\"decode_us\":%llu,\"preprocess_us\":%llu,"
                   "\"inference_us\":%llu,\"total_us\":%llu}",
                   (unsigned long long)res->decode_us, (unsigned long long)res->prep_us,
                   (unsigned long long)res->infer_us, (unsigned long long)total_us);
    if (prepared) preprocessed_json(b, prepared);
    srv_buf_append(b, "}", 1);
}

/* Metrics (and the log, for the server's own failures) of one answer. */
static void observe(srv_server *s, const srv_model *m, const pipe_result *res)
{
    if (res->status == PIPE_OK) {
        srv_metrics_inference(s->metrics, m->slot, res->infer_us, res->prediction);
        if (res->batch_size > 0)
            srv_metrics_batch(s->metrics, m->slot, res->batch_first ? res->batch_size : 0,
                              res->queue_us);
    } else if (res->status == PIPE_INTERNAL) {
        srv_log(SRV_ERROR, "model %s: %s", m->name, res->msg);
    }
}

/* The calling thread's workspace for m; a thread beyond the pool gets a
 * temporary one in *tmp (the caller frees it). NULL when out of memory. */
static pipe_ws *thread_ws(srv_server *s, const srv_model *m, pipe_ws **tmp)
{
    *tmp = NULL;
    pipe_ws *ws = srv_model_ws(m, srv_pool_slot(s->pool));
    if (!ws) ws = *tmp = pipe_ws_create(m->ens, 1);
    return ws;
}

/* The pipeline status of a JSON parser's failure. */
static pipe_status oip_status(srv_oip_status st)
{
    switch (st) {
    case SRV_OIP_OK: return PIPE_OK;
    case SRV_OIP_ERR_TOO_LARGE: return PIPE_TOO_MANY_IMAGES;
    case SRV_OIP_ERR_NOMEM: return PIPE_INTERNAL;
    default: return PIPE_BAD_REQUEST;
    }
}

/* ---- answers the handlers share ------------------------------------------ */

/* Answers what b holds with status and ctype, and frees b (its text is
 * handed over, or copied out of caller storage); a buffer that ran out of
 * memory is answered 500. */
static enum MHD_Result respond_buf(srv_server *s, struct MHD_Connection *c, srv_req *r, int status,
                                   const char *ctype, srv_buf *b)
{
    size_t len;
    char *body = srv_buf_detach(b, &len);
    srv_buf_free(b);
    if (!body) {
        r->resp_hdr_len = 0;
        return srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
    }
    return srv_http_respond(s, c, r, status, ctype, body, len, MHD_RESPMEM_MUST_FREE, NULL);
}

static enum MHD_Result too_many_images(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    return srv_http_error(s, c, r, PIPE_TOO_MANY_IMAGES, NULL,
                          "at most %d images per batch request", s->cfg->max_batch);
}

/* A multipart body that gave no image: rc from srv_multipart_parse (with
 * SRV_MP_OK it had no 'image' part; example: the curl arguments that send
 * one). */
static enum MHD_Result multipart_error(srv_server *s, struct MHD_Connection *c, srv_req *r, int rc,
                                       const char *err, const char *example)
{
    if (rc == SRV_MP_TOO_MANY) return too_many_images(s, c, r);
    if (rc == SRV_MP_MALFORMED) return srv_http_error(s, c, r, PIPE_BAD_MULTIPART, NULL, "%s", err);
    return srv_http_error(s, c, r, PIPE_MISSING_IMAGE, NULL,
                          "multipart body has no 'image' field (curl %s)", example);
}

static enum MHD_Result no_workspace(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    return srv_http_error(s, c, r, PIPE_INTERNAL, NULL,
                          "no workspace for this thread (out of memory)");
}

/* ---- POST handlers -------------------------------------------------------- */

/* ---- dynamic batching, one thread a core ---------------------------------- */

/* A runner thread answered p: the second of this and the handler's
 * suspend resumes the connection (http_int.h, srv_pending). */
static void pending_done(void *ctx)
{
    srv_pending *p = ctx;
    srv_server *s = p->s;
    struct MHD_Connection *c = p->c;
    if (atomic_exchange(&p->state, PEND_DONE) == PEND_SUSPENDED) MHD_resume_connection(c);
    atomic_fetch_sub(&s->batching, 1);
}

/* The answer to a /predict: res, and x (the network input) when
 * ?include=preprocessed asked for it; metrics and the log see the
 * outcome. */
static enum MHD_Result predict_answer(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                      const pipe_result *res, const float *x)
{
    observe(s, r->model, res);
    char text[4096]; /* the answer, with a preprocessed image too */
    srv_buf b;
    srv_buf_init(&b, text, sizeof text);
    /* result_json reads x only for an answer (status PIPE_OK). */
    result_json(&b, r->model, res, (srv_http_now_ns() - r->t0) / 1000, r->want_prep ? x : NULL);
    return respond_buf(s, c, r, pipe_status_http(res->status), SRV_HTTP_JSON, &b);
}

/* /predict's image through the model's batcher without holding this
 * thread: decoded here, then queued, and the connection suspended until a
 * runner thread has answered it (this thread reads its other connections
 * meanwhile); answered at once when it ran here (batch.h: a lone image
 * at low load). */
static enum MHD_Result predict_batched(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                       pipe_batcher *bt, const uint8_t *data, size_t len)
{
    srv_pending *p = malloc(sizeof *p);
    if (!p) return srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory queueing the image");
    /* A batch waiting to fill waits for this image while it decodes. */
    pipe_batcher_expect(bt, 1);
    if (pipe_prepare_png(r->model->ens, data, len, &s->lim, p->x, &p->res) < 0) {
        pipe_batcher_expect(bt, -1);
        enum MHD_Result ret = predict_answer(s, c, r, &p->res, p->x);
        free(p);
        return ret;
    }
    p->s = s;
    p->c = c;
    atomic_init(&p->state, PEND_QUEUED);
    r->pend = p; /* freed when the request completes */
    atomic_fetch_add(&s->batching, 1);
    if (atomic_load(&s->stopping)) { /* the daemon stops: no suspending */
        atomic_fetch_sub(&s->batching, 1);
        pipe_batcher_run(bt, PIPE_F32, p->x, 1, &p->res, 1);
        return predict_answer(s, c, r, &p->res, p->x);
    }
    int rc = pipe_batcher_submit(bt, PIPE_F32, p->x, 1, &p->res, 1, pending_done, p);
    if (rc != 0) {
        atomic_fetch_sub(&s->batching, 1);
        if (rc < 0) {
            pipe_batcher_expect(bt, -1);
            return srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory queueing the image");
        }
        return predict_answer(s, c, r, &p->res, p->x);
    }
    MHD_suspend_connection(c);
    if (atomic_exchange(&p->state, PEND_SUSPENDED) == PEND_DONE) MHD_resume_connection(c);
    return MHD_YES;
}

static enum MHD_Result handle_predict(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    /* Resumed: its batch has answered it. */
    if (r->pend) return predict_answer(s, c, r, &r->pend->res, r->pend->x);
    const uint8_t *data = r->body;
    size_t len = r->len;
    char err[256];
    srv_oip_item *items = NULL;
    uint8_t *store = NULL;
    if (r->kind == SRV_BODY_JSON) {
        uint32_t n;
        srv_oip_status st =
            srv_oip_images_parse(r->body, r->len, "image", 1, &items, &store, &n, err, sizeof err);
        if (st != SRV_OIP_OK) return srv_http_error(s, c, r, oip_status(st), NULL, "%s", err);
        if (!items[0].data) {
            free(items);
            free(store);
            return srv_http_error(s, c, r, PIPE_INVALID_BASE64, NULL,
                                  "'image' is not valid base64");
        }
        data = items[0].data;
        len = items[0].len;
    } else if (r->kind == SRV_BODY_MULTIPART) {
        srv_part part;
        int n;
        int rc = srv_multipart_parse(r->body, r->len, r->boundary, "image", &part, 1, &n, err,
                                     sizeof err);
        /* More than one image: /predict answers for the first. */
        if (rc == SRV_MP_MALFORMED || n == 0)
            return multipart_error(s, c, r, rc, err, "-F image=@digit.png");
        data = part.data;
        len = part.len;
    }
    if (r->model->batch) {
        enum MHD_Result ret = predict_batched(s, c, r, r->model->batch, data, len);
        free(items);
        free(store);
        return ret;
    }
    pipe_ws *tmp, *ws = thread_ws(s, r->model, &tmp);
    if (!ws) {
        free(items);
        free(store);
        return no_workspace(s, c, r);
    }
    pipe_result res;
    float prepared[PIPE_PIXELS];
    pipe_run_png(r->model->ens, ws, data, len, &s->lim, r->want_prep ? prepared : NULL, &res);
    pipe_ws_free(tmp);
    free(items);
    free(store);
    return predict_answer(s, c, r, &res, prepared);
}

static enum MHD_Result handle_batch(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    char err[256];
    int max = s->cfg->max_batch, n;
    srv_part *parts = malloc(sizeof *parts * (size_t)max);
    if (!parts) return srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
    int rc = SRV_MP_OK;
    uint8_t *store = NULL;
    if (r->kind == SRV_BODY_JSON) {
        /* {"images": [...]}: an element that is not base64 gets its own
         * error entry (data NULL), as a part that is not a PNG does. */
        srv_oip_item *items;
        uint32_t ni;
        srv_oip_status st = srv_oip_images_parse(r->body, r->len, "images", (uint32_t)max, &items,
                                                 &store, &ni, err, sizeof err);
        if (st != SRV_OIP_OK) {
            free(parts);
            if (st == SRV_OIP_ERR_TOO_LARGE) return too_many_images(s, c, r);
            return srv_http_error(s, c, r, oip_status(st), NULL, "%s", err);
        }
        n = (int)ni;
        for (int i = 0; i < n; i++) {
            parts[i].data = items[i].data;
            parts[i].len = items[i].len;
        }
        free(items);
    } else {
        rc = srv_multipart_parse(r->body, r->len, r->boundary, "image", parts, max, &n, err,
                                 sizeof err);
    }
    if (rc != SRV_MP_OK || n == 0) {
        free(parts);
        return multipart_error(s, c, r, rc, err, "-F image=@a.png -F image=@b.png");
    }
    pipe_ws *tmp, *ws = thread_ws(s, r->model, &tmp);
    /* The images are decoded first, then forwarded together (with
     * batching on: one request in the model's batches). */
    pipe_result *res = calloc((size_t)n, sizeof *res);
    float *x = malloc(sizeof *x * PIPE_PIXELS * (size_t)n);
    const uint8_t **png = malloc(sizeof *png * (size_t)n);
    size_t *plen = malloc(sizeof *plen * (size_t)n);
    if (!ws || !res || !x || !png || !plen) {
        pipe_ws_free(tmp);
        free(res);
        free(x);
        free(png);
        free(plen);
        free(parts);
        free(store);
        return ws ? srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory")
                  : no_workspace(s, c, r);
    }
    for (int i = 0; i < n; i++) {
        png[i] = parts[i].data;
        plen[i] = parts[i].len;
        if (!parts[i].data) {
            res[i].status = PIPE_INVALID_BASE64;
            snprintf(res[i].msg, sizeof res[i].msg, "image %d is not valid base64", i);
        }
    }
    pipe_run_pngs(r->model->ens, ws, n, png, plen, &s->lim, x, res);
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_buf_reserve(&b, (size_t)n * 400 + 64);
    srv_buf_puts(&b, "{\"model\":");
    srv_buf_json_str(&b, r->model->name);
    srv_buf_printf(&b, ",\"model_version\":%d,\"count\":%d,\"results\":[", r->model->version, n);
    for (int i = 0; i < n; i++) {
        observe(s, r->model, &res[i]);
        /* This image's own time: its steps and its wait for a batch. */
        uint64_t own = res[i].decode_us + res[i].prep_us + res[i].queue_us + res[i].infer_us;
        if (i) srv_buf_append(&b, ",", 1);
        result_json(&b, r->model, &res[i], own, r->want_prep ? x + (size_t)i * PIPE_PIXELS : NULL);
    }
    free(res);
    free(x);
    free(png);
    free(plen);
    srv_buf_puts(&b, "]}");
    pipe_ws_free(tmp);
    free(parts);
    free(store);
    return respond_buf(s, c, r, 200, SRV_HTTP_JSON, &b);
}

/* ---- the Open Inference Protocol (v2) ------------------------------------------ */

/* POST /v2/models/{name}[/versions/{v}]/infer: UINT8/FP32 tensors go
 * straight to the model (pipe_run_tensors), BYTES PNGs through the same
 * path as POST /predict; any image's failure fails the request. */
static enum MHD_Result handle_v2_infer(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    srv_oip_limits lim = {.max_batch = (uint32_t)s->cfg->max_batch};
    srv_oip_request *q;
    char err[256];
    srv_oip_status st =
        srv_oip_request_parse(r->body, r->len, r->hdr_len, &lim, &q, err, sizeof err);
    if (st != SRV_OIP_OK) return srv_http_error(s, c, r, oip_status(st), NULL, "%s", err);
    const srv_model *m = r->model;
    /* "ood_score" is an output of the models that carry the statistics. */
    const int has_ood = nn_ensemble_ood(m->ens) != NULL;
    if ((q->outputs & SRV_OIP_OUT_OOD) && !has_ood) {
        srv_oip_request_free(q);
        return srv_http_error(
            s, c, r, PIPE_BAD_REQUEST, NULL,
            "model %s has no 'ood_score' output (no out-of-distribution statistics)", m->name);
    }
    if (has_ood) srv_oip_request_add_ood(q);
    pipe_ws *tmp, *ws = thread_ws(s, m, &tmp);
    pipe_result *res = malloc((size_t)q->n * sizeof *res);
    float *probs = malloc((size_t)q->n * (size_t)m->nclasses * sizeof *probs);
    int *pred = malloc((size_t)q->n * sizeof *pred);
    float *ood = malloc((size_t)q->n * sizeof *ood);
    enum MHD_Result ret;
    if (!ws || !res || !probs || !pred || !ood) {
        ret = srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
        goto done;
    }
    if (q->u8 || q->f32) {
        pipe_run_tensors(m->ens, ws, q->u8 ? PIPE_U8 : PIPE_F32,
                         q->u8 ? (const void *)q->u8 : (const void *)q->f32, (int)q->n, res);
        for (uint32_t i = 0; i < q->n; i++) observe(s, m, &res[i]);
    } else { /* BYTES: PNGs, decoded first, then forwarded together */
        float *x = malloc(sizeof *x * PIPE_PIXELS * q->n);
        const uint8_t **png = malloc(sizeof *png * q->n);
        size_t *plen = malloc(sizeof *plen * q->n);
        if (!x || !png || !plen) {
            free(x);
            free(png);
            free(plen);
            ret = srv_http_error(s, c, r, PIPE_INTERNAL, NULL, "out of memory");
            goto done;
        }
        memset(res, 0, q->n * sizeof *res);
        for (uint32_t i = 0; i < q->n; i++) {
            png[i] = q->items[i].data;
            plen[i] = q->items[i].len;
        }
        pipe_run_pngs(m->ens, ws, (int)q->n, png, plen, &s->lim, x, res);
        for (uint32_t i = 0; i < q->n; i++) observe(s, m, &res[i]);
        free(x);
        free(png);
        free(plen);
    }
    for (uint32_t i = 0; i < q->n; i++) {
        if (res[i].status != PIPE_OK) {
            ret =
                srv_http_error(s, c, r, res[i].status, NULL, "input element %u: %s", i, res[i].msg);
            goto done;
        }
        memcpy(probs + (size_t)i * (size_t)m->nclasses, res[i].probs,
               (size_t)m->nclasses * sizeof *probs);
        pred[i] = res[i].prediction;
        ood[i] = res[i].ood_score;
    }
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    srv_oip_result out = {.model_name = m->name,
                          .model_version = version,
                          .req = q,
                          .n = q->n,
                          .nclasses = m->nclasses,
                          .probs = probs,
                          .pred = pred,
                          .labels = m->labels,
                          .ood = has_ood ? ood : NULL};
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    size_t json_len;
    srv_oip_response_write(&b, &out, &json_len);
    if (q->binary) /* binary tensor data extension: the JSON, then tensors */
        r->resp_hdr_len = json_len;
    ret = respond_buf(s, c, r, 200, q->binary ? "application/octet-stream" : SRV_HTTP_JSON, &b);
done:
    pipe_ws_free(tmp);
    free(res);
    free(probs);
    free(pred);
    free(ood);
    srv_oip_request_free(q);
    return ret;
}

/* GET /v2/models/{name}: the one input as declared (UINT8 [-1,1,28,28];
 * the other accepted forms are documented), the three outputs, and
 * "ood_score" for a model with out-of-distribution statistics. */
static enum MHD_Result v2_model_metadata(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    const srv_model *m = r->model;
    char text[1024];
    srv_buf b;
    srv_buf_init(&b, text, sizeof text);
    srv_buf_puts(&b, "{\"name\":");
    srv_buf_json_str(&b, m->name);
    /* Every version serving under this name, highest first. */
    srv_buf_puts(&b, ",\"versions\":[");
    for (int k = 0; k < r->snap->n; k++) {
        const srv_served *sv = &r->snap->s[k];
        if (strcmp(sv->ver[0]->name, m->name) != 0) continue;
        for (int i = 0; i < sv->nver; i++)
            srv_buf_printf(&b, "%s\"%d\"", i ? "," : "", sv->ver[i]->version);
    }
    srv_buf_printf(&b,
                   "],"
                   "\"platform\":\"mnistc_safetensors\","
                   "\"inputs\":[{\"name\":\"" SRV_OIP_INPUT_NAME "\","
                   "\"datatype\":\"UINT8\",\"shape\":[-1,1,28,28]}],"
                   "\"outputs\":[{\"name\":\"probabilities\",\"datatype\":"
                   "\"FP32\",\"shape\":[-1,%d]},{\"name\":\"prediction\","
                   "\"datatype\":\"INT64\",\"shape\":[-1]},{\"name\":"
                   "\"label\",\"datatype\":\"BYTES\",\"shape\":[-1]}%s]}",
                   m->nclasses,
                   nn_ensemble_ood(m->ens)
                       ? ",{\"name\":\"ood_score\",\"datatype\":\"FP32\",\"shape\":[-1]}"
                       : "");
    return respond_buf(s, c, r, 200, SRV_HTTP_JSON, &b);
}

static enum MHD_Result handle_v2_get(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    static const char meta[] = "{\"name\":\"mnist-server\",\"version\":\"" SRV_VERSION
                               "\",\"extensions\":[\"binary_tensor_data\"]}";
    static const char live[] = "{\"live\":true}";
    static const char ready[] = "{\"ready\":true}";
    switch (r->route) {
    case SRV_ROUTE_V2:
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, meta, sizeof meta - 1,
                                MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_V2_LIVE:
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, live, sizeof live - 1,
                                MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_V2_READY:
    case SRV_ROUTE_V2_MODEL_READY: {
        if (atomic_load(&s->draining))
            return srv_http_error(s, c, r, PIPE_NOT_READY, NULL,
                                  "shutting down: finishing requests in flight");
        if (!atomic_load(&s->ready))
            return srv_http_error(s, c, r, PIPE_NOT_READY, NULL, "starting: models are warming up");
        if (r->route == SRV_ROUTE_V2_READY)
            return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, ready, sizeof ready - 1,
                                    MHD_RESPMEM_PERSISTENT, NULL);
        char text[160];
        srv_buf b;
        srv_buf_init(&b, text, sizeof text);
        srv_buf_puts(&b, "{\"name\":");
        srv_buf_json_str(&b, r->model->name);
        srv_buf_puts(&b, ",\"ready\":true}");
        return respond_buf(s, c, r, 200, SRV_HTTP_JSON, &b);
    }
    default: /* SRV_ROUTE_V2_MODEL */ return v2_model_metadata(s, c, r);
    }
}

/* A file of the drawing page; 304 when the client's copy is current. */
static enum MHD_Result handle_page(srv_server *s, struct MHD_Connection *c, srv_req *r)
{
    const srv_web_asset *a = r->asset;
    const char *hdrs[SRV_WEB_NHEADERS + 1][2];
    memcpy(hdrs, srv_web_headers, sizeof srv_web_headers);
    hdrs[SRV_WEB_NHEADERS][0] = MHD_HTTP_HEADER_ETAG;
    hdrs[SRV_WEB_NHEADERS][1] = a->etag;
    const char *inm =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    int fresh = srv_web_etag_match(inm, a->etag);
    /* A 304 repeats the validators, not the representation's type. */
    return srv_http_respond_hdrs(s, c, r, fresh ? 304 : 200, fresh ? NULL : a->ctype, a->data,
                                 fresh ? 0 : a->len, MHD_RESPMEM_PERSISTENT, NULL,
                                 (const char *const(*)[2])hdrs, SRV_WEB_NHEADERS + 1);
}

/* ---- GET handlers ---------------------------------------------------------- */

static enum MHD_Result handle_get(srv_server *s, struct MHD_Connection *c, srv_req *r)
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
            return srv_http_error(s, c, r, PIPE_NOT_READY, NULL, "starting: models are warming up");
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, ready, sizeof ready - 1,
                                MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_MODELS:
        /* Copied: the response may outlive this call's view of r->snap. */
        return srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, r->snap->models_json,
                                r->snap->models_json_len, MHD_RESPMEM_MUST_COPY, NULL);
    case SRV_ROUTE_OPENAPI:
        return srv_http_respond(s, c, r, 200, "application/yaml", s->openapi, s->openapi_len,
                                MHD_RESPMEM_PERSISTENT, NULL);
    case SRV_ROUTE_PAGE: return handle_page(s, c, r);
    case SRV_ROUTE_METRICS: {
        srv_buf b;
        srv_buf_init(&b, NULL, 0);
        srv_metrics_render(s->metrics, &b, r->snap->info, r->snap->ninfo, atomic_load(&s->ready),
                           atomic_load(&s->draining));
        return respond_buf(s, c, r, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    default: return srv_http_error(s, c, r, PIPE_NOT_FOUND, NULL, "no such path");
    }
}

/* ---- the repository API (only with --enable-model-control) ----------------- */

/* {"name":NAME,"versions":[NAME's index entries]} from a fresh snapshot. */
static enum MHD_Result repo_state(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                  const char *name)
{
    srv_snapshot *v = srv_registry_acquire(s->reg);
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_buf_puts(&b, "{\"name\":");
    srv_buf_json_str(&b, name);
    srv_buf_puts(&b, ",\"versions\":[");
    int n = 0;
    for (int i = 0; i < v->nindex; i++) {
        const srv_index_entry *e = &v->index[i];
        if (strcmp(e->name, name) != 0) continue;
        srv_buf_printf(&b, "%s{\"version\":\"%d\",\"state\":\"%s\",\"reason\":", n++ ? "," : "",
                       e->version, e->state == SRV_MODEL_READY ? "READY" : "UNAVAILABLE");
        srv_buf_json_str(&b, e->reason);
        srv_buf_puts(&b, "}");
    }
    srv_buf_puts(&b, "]}");
    srv_snapshot_release(v);
    return respond_buf(s, c, r, 200, SRV_HTTP_JSON, &b);
}

static enum MHD_Result handle_repo(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                   const char *url)
{
    if (r->route == SRV_ROUTE_REPO_INDEX) {
        /* The index as it is now, not as the request found it: a client
         * that just loaded a model sees the result. */
        srv_snapshot *v = srv_registry_acquire(s->reg);
        enum MHD_Result ret = srv_http_respond(s, c, r, 200, SRV_HTTP_JSON, v->index_json,
                                               v->index_json_len, MHD_RESPMEM_MUST_COPY, NULL);
        srv_snapshot_release(v);
        return ret;
    }
    char name[SRV_NAME_MAX + 8], err[1200], safe[96];
    srv_route_repo_name(url, name, sizeof name);
    if (!srv_config_valid_name(name)) {
        srv_log_sanitize(name, safe, sizeof safe);
        return srv_http_error(s, c, r, PIPE_MODEL_NOT_FOUND, NULL, "no model named '%s'", safe);
    }
    srv_reg_result res = r->route == SRV_ROUTE_REPO_LOAD
                             ? srv_registry_load(s->reg, name, err, sizeof err)
                             : srv_registry_unload(s->reg, name, err, sizeof err);
    switch (res) {
    case SRV_REG_OK: return repo_state(s, c, r, name);
    case SRV_REG_NOT_FOUND: return srv_http_error(s, c, r, PIPE_MODEL_NOT_FOUND, NULL, "%s", err);
    case SRV_REG_LAST_MODEL: return srv_http_error(s, c, r, PIPE_LAST_MODEL, NULL, "%s", err);
    case SRV_REG_FAILED:
    default:
        return srv_http_error(s, c, r, PIPE_MODEL_LOAD_FAILED, NULL,
                              "%s (what served before still does)", err);
    }
}

enum MHD_Result srv_http_handle(srv_server *s, struct MHD_Connection *c, srv_req *r,
                                const char *url)
{
    if (r->preflight) /* CORS: headers only (srv_http_respond adds them) */
        return srv_http_respond(s, c, r, 204, NULL, "", 0, MHD_RESPMEM_PERSISTENT, NULL);
    switch (r->route) {
    case SRV_ROUTE_PREDICT: return handle_predict(s, c, r);
    case SRV_ROUTE_BATCH: return handle_batch(s, c, r);
    case SRV_ROUTE_V2_INFER: return handle_v2_infer(s, c, r);
    case SRV_ROUTE_REPO_INDEX:
    case SRV_ROUTE_REPO_LOAD:
    case SRV_ROUTE_REPO_UNLOAD: return handle_repo(s, c, r, url);
    case SRV_ROUTE_V2:
    case SRV_ROUTE_V2_LIVE:
    case SRV_ROUTE_V2_READY:
    case SRV_ROUTE_V2_MODEL:
    case SRV_ROUTE_V2_MODEL_READY: return handle_v2_get(s, c, r);
    default: return handle_get(s, c, r);
    }
}
