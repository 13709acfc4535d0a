/* pipeline.c - see pipeline.h. */
#include "pipeline/pipeline.h"
#include "nn/ood.h"
#include "pipeline/batch.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const struct {
    const char *name;
    int http;
} status_table[PIPE_STATUS_COUNT] = {
    [PIPE_OK] = {"ok", 200},
    [PIPE_EMPTY_BODY] = {"empty_body", 400},
    [PIPE_NOT_PNG] = {"not_png", 400},
    [PIPE_INVALID_PNG] = {"invalid_png", 400},
    [PIPE_IMAGE_TOO_LARGE] = {"image_too_large", 413},
    [PIPE_BLANK_IMAGE] = {"blank_image", 422},
    [PIPE_INVALID_TENSOR] = {"invalid_tensor", 400},
    [PIPE_UNREADABLE] = {"unreadable", 400},
    [PIPE_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413},
    [PIPE_TOO_MANY_IMAGES] = {"too_many_images", 413},
    [PIPE_BAD_MULTIPART] = {"bad_multipart", 400},
    [PIPE_MISSING_IMAGE] = {"missing_image", 400},
    [PIPE_BAD_REQUEST] = {"bad_request", 400},
    [PIPE_INVALID_BASE64] = {"invalid_base64", 400},
    [PIPE_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415},
    [PIPE_NOT_FOUND] = {"not_found", 404},
    [PIPE_MODEL_NOT_FOUND] = {"model_not_found", 404},
    [PIPE_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405},
    [PIPE_NOT_IMPLEMENTED] = {"not_implemented", 501},
    [PIPE_URI_TOO_LONG] = {"uri_too_long", 414},
    [PIPE_HEADERS_TOO_LARGE] = {"headers_too_large", 431},
    [PIPE_NOT_READY] = {"not_ready", 503},
    [PIPE_MODEL_CONTROL_DISABLED] = {"model_control_disabled", 403},
    [PIPE_MODEL_LOAD_FAILED] = {"model_load_failed", 422},
    [PIPE_LAST_MODEL] = {"last_model", 409},
    [PIPE_INTERNAL] = {"internal", 500},
};

const char *pipe_status_name(pipe_status st)
{
    if ((unsigned)st >= PIPE_STATUS_COUNT) return "internal";
    return status_table[st].name;
}

int pipe_status_http(pipe_status st)
{
    if ((unsigned)st >= PIPE_STATUS_COUNT) return 500;
    return status_table[st].http;
}

pipe_status pipe_status_from_img(img_status st)
{
    switch (st) {
    case IMG_OK: return PIPE_OK;
    case IMG_ERR_NOT_PNG: return PIPE_NOT_PNG;
    case IMG_ERR_CORRUPT: return PIPE_INVALID_PNG;
    case IMG_ERR_TOO_LARGE: return PIPE_IMAGE_TOO_LARGE;
    case IMG_ERR_BLANK: return PIPE_BLANK_IMAGE;
    case IMG_ERR_NOMEM: /* the server's problem, not the client's */
    case IMG_ERR_ARG: break;
    }
    return PIPE_INTERNAL;
}

/* ---- models ---------------------------------------------------------------- */

int pipe_model_check(const nn_ensemble *e, const char *source, char *err, size_t errlen)
{
    int members = nn_ensemble_size(e);
    for (int i = 0; i < members; i++) {
        const nn_net *net = nn_ensemble_member(e, i);
        if (net->in_c != 1 || net->in_h != PIPE_SIDE || net->in_w != PIPE_SIDE) {
            snprintf(err, errlen,
                     "%s: takes %dx%dx%d inputs, not the 1x%dx%d images this service feeds",
                     members > 1 ? nn_ensemble_path(e, i) : source, net->in_c, net->in_h, net->in_w,
                     PIPE_SIDE, PIPE_SIDE);
            return -1;
        }
    }
    int k = nn_ensemble_classes(e);
    if (k < 1 || k > NN_MAX_CLASSES) {
        snprintf(err, errlen, "%s: %d classes is outside 1..%d", source, k, NN_MAX_CLASSES);
        return -1;
    }
    const nn_meta *meta = nn_ensemble_meta(e);
    if (!nn_preprocess_valid(meta->preprocess)) {
        snprintf(err, errlen,
                 "%s: unknown preprocessing \"%s\" (this build knows \"mnist\" and \"fit\")",
                 source, meta->preprocess);
        return -1;
    }
    return 0;
}

nn_ensemble *pipe_model_load(const char *paths, char *err, size_t errlen)
{
    nn_ensemble *e = nn_ensemble_load(paths, err, errlen);
    if (e && pipe_model_check(e, paths, err, errlen) < 0) {
        nn_ensemble_free(e);
        return NULL;
    }
    return e;
}

/* Best of the single models accepted by want_mnist (1: dataset "mnist"
 * only, 0: any), or -1. */
static int best_single(const pipe_candidate *c, int n, int want_mnist)
{
    int best = -1;
    for (int k = 0; k < n; k++) {
        if (c[k].nmembers != 1) continue;
        if (want_mnist && (!c[k].dataset || strcmp(c[k].dataset, "mnist") != 0)) continue;
        if (best < 0 || c[k].test_accuracy > c[best].test_accuracy) best = k;
    }
    return best;
}

int pipe_default_pick(const pipe_candidate *c, int n)
{
    if (n <= 0) return -1;
    int k = best_single(c, n, 1);
    if (k < 0) k = best_single(c, n, 0);
    return k < 0 ? 0 : k;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of dir but "." and "..", sorted; *n = -1 (errno set) when
 * dir cannot be read. Free with free_names. */
static char **sorted_names(const char *dir, int *n)
{
    *n = -1;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char **names = NULL;
    int cnt = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, sizeof *names * (size_t)cap);
            if (!p) break;
            names = p;
        }
        if (!(names[cnt] = strdup(de->d_name))) break;
        cnt++;
    }
    int failed = de != NULL;
    closedir(d);
    if (failed) {
        for (int i = 0; i < cnt; i++) free(names[i]);
        free(names);
        errno = ENOMEM;
        return NULL;
    }
    if (cnt > 1) qsort(names, (size_t)cnt, sizeof *names, cmp_str);
    *n = cnt;
    return names;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* The version number of a file "N.safetensors" or "N.ensemble" in a
 * versioned directory (N from 1, no leading zero, at most 9 digits), or 0. */
static int version_of(const char *fname, int *is_list)
{
    size_t slen = nn_model_stem(fname, is_list);
    if (slen == 0 || slen > 9 || fname[0] < '1' || fname[0] > '9') return 0;
    int v = 0;
    for (size_t i = 0; i < slen; i++) {
        if (fname[i] < '0' || fname[i] > '9') return 0;
        v = v * 10 + (fname[i] - '0');
    }
    return v;
}

/* A model name as the server accepts one (srv_config_valid_name). */
static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') return 0;
    return 1;
}

/* For a versioned directory dir/name: 1 and the highest version's file in
 * path (*is_list: it is an ensemble list); 0 when dir/name is no such
 * directory or holds no version. */
static int highest_version(const char *dir, const char *name, char *path, size_t pathlen,
                           int *is_list)
{
    char sub[4096];
    struct stat st;
    if ((size_t)snprintf(sub, sizeof sub, "%s/%s", dir, name) >= sizeof sub || !valid_name(name) ||
        stat(sub, &st) != 0 || !S_ISDIR(st.st_mode))
        return 0;
    int n, best = 0;
    char **files = sorted_names(sub, &n);
    for (int i = 0; i < n; i++) {
        int list, v = version_of(files[i], &list);
        if (v > best && (size_t)snprintf(path, pathlen, "%s/%s", sub, files[i]) < pathlen) {
            best = v;
            *is_list = list;
        }
    }
    free_names(files, n);
    return best > 0;
}

int pipe_default_in_dir(const char *dir, char *out, size_t outlen, char *err, size_t errlen)
{
    int n;
    char **names = sorted_names(dir, &n);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    /* One file per model name, as the server serves them after start-up:
     * flat NAME.safetensors files first, then versioned directories NAME/
     * (their highest version, which replaces a flat file of the same
     * name); a name whose file is an ensemble list or does not load is
     * left out. Both in name order. */
    pipe_candidate *cand = n ? calloc((size_t)n, sizeof *cand) : NULL;
    char(*datasets)[64] = n ? calloc((size_t)n, sizeof *datasets) : NULL;
    char(*paths)[4096] = n ? calloc((size_t)n, sizeof *paths) : NULL;
    if (n && (!cand || !datasets || !paths)) {
        snprintf(err, errlen, "%s: out of memory listing the directory", dir);
        free(cand);
        free(datasets);
        free(paths);
        free_names(names, n);
        return -1;
    }
    int m = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            char stem[256], path[4096];
            int list = 0;
            size_t slen = nn_model_stem(names[i], &list);
            if (pass == 0) { /* a flat file, unless NAME/ has versions */
                if (names[i][0] == '.' || !slen || list || slen >= sizeof stem) continue;
                memcpy(stem, names[i], slen);
                stem[slen] = '\0';
                if (!highest_version(dir, stem, path, sizeof path, &list)) {
                    list = 0;
                    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path)
                        continue;
                }
            } else { /* a versioned directory without a flat file */
                int flat = 0;
                for (int j = 0; j < n && !flat; j++) {
                    int l2;
                    size_t s2 = nn_model_stem(names[j], &l2);
                    flat =
                        s2 && !l2 && s2 == strlen(names[i]) && strncmp(names[j], names[i], s2) == 0;
                }
                if (flat || !highest_version(dir, names[i], path, sizeof path, &list)) continue;
            }
            if (list) continue;
            char e2[256];
            nn_net *net = nn_net_load(path, e2, sizeof e2);
            if (!net) continue;
            snprintf(datasets[m], sizeof datasets[m], "%s", net->meta.dataset);
            cand[m] = (pipe_candidate){
                .nmembers = 1, .test_accuracy = net->meta.test_accuracy, .dataset = datasets[m]};
            memcpy(paths[m++], path, sizeof path);
            nn_net_free(net);
        }
    }
    int rc = 0;
    if (m == 0) {
        snprintf(err, errlen, "%s: no loadable *.safetensors model", dir);
        rc = -1;
    } else if ((size_t)snprintf(out, outlen, "%s", paths[pipe_default_pick(cand, m)]) >= outlen) {
        snprintf(err, errlen, "%s: path too long", dir);
        rc = -1;
    }
    free_names(names, n);
    free(cand);
    free(datasets);
    free(paths);
    return rc;
}

/* ---- running ------------------------------------------------------------------ */

struct pipe_ws {
    int max_batch, nclasses;
    nn_ensemble_ws *ews;
    float *x;            /* [max_batch, 784] network input */
    float *probs;        /* [max_batch, nclasses] */
    float *ood;          /* [max_batch] out-of-distribution scores */
    pipe_batcher *batch; /* the forward step's, or NULL */
};

pipe_ws *pipe_ws_create(const nn_ensemble *e, int max_batch)
{
    if (max_batch < 1) return NULL;
    pipe_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->max_batch = max_batch;
    ws->nclasses = nn_ensemble_classes(e);
    ws->ews = nn_ensemble_ws_create(e, max_batch);
    ws->x = malloc(sizeof *ws->x * PIPE_PIXELS * (size_t)max_batch);
    ws->probs = malloc(sizeof *ws->probs * (size_t)ws->nclasses * (size_t)max_batch);
    ws->ood = malloc(sizeof *ws->ood * (size_t)max_batch);
    if (!ws->ews || !ws->x || !ws->probs || !ws->ood) {
        pipe_ws_free(ws);
        return NULL;
    }
    return ws;
}

void pipe_ws_free(pipe_ws *ws)
{
    if (!ws) return;
    nn_ensemble_ws_free(ws->ews);
    free(ws->x);
    free(ws->probs);
    free(ws->ood);
    free(ws);
}

void pipe_ws_set_batcher(pipe_ws *ws, pipe_batcher *b) { ws->batch = b; }

static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static void fail(pipe_result *res, pipe_status st)
{
    res->status = st;
    res->prediction = 0;
    res->label = NULL;
    res->nclasses = 0;
    memset(res->probs, 0, sizeof res->probs);
    res->has_ood = 0;
    res->ood_score = 0.0f;
    res->in_distribution = 0;
}

void pipe_forward(const nn_ensemble *e, pipe_ws *ws, const float *x, int n, pipe_result *res)
{
    uint64_t t0 = now_us();
    const nn_ood *ood = nn_ensemble_ood(e);
    nn_ensemble_forward_scores(e, ws->ews, x, n, ws->probs, NULL, ood ? ws->ood : NULL);
    uint64_t us = now_us() - t0;
    const nn_meta *meta = nn_ensemble_meta(e);
    int k = ws->nclasses;
    for (int i = 0; i < n; i++) {
        pipe_result *r = &res[i];
        if (r->status != PIPE_OK) continue;
        const float *p = ws->probs + (size_t)i * (size_t)k;
        int best = 0;
        for (int c = 0; c < k; c++) {
            if (!isfinite(p[c])) {
                fail(r, PIPE_INTERNAL);
                snprintf(r->msg, sizeof r->msg, "model produced a non-finite probability");
                break;
            }
            if (p[c] > p[best]) best = c;
        }
        if (r->status != PIPE_OK) continue;
        r->nclasses = k;
        memcpy(r->probs, p, sizeof *p * (size_t)k);
        r->prediction = best;
        r->label = meta->labels[best];
        r->infer_us = us;
        if (ood) {
            /* A score too large for a float is as far out as it gets. */
            r->has_ood = 1;
            r->ood_score = isfinite(ws->ood[i]) ? ws->ood[i] : FLT_MAX;
            r->in_distribution = r->ood_score <= ood->threshold;
        }
    }
}

/* Decodes png and writes the model's input into x; res (zeroed by the
 * caller) gets the timings, or the failure. 0, or -1 on failure. */
static int prepare_png(const nn_ensemble *e, const uint8_t *png, size_t len, const img_limits *lim,
                       float x[PIPE_PIXELS], pipe_result *res)
{
    if (len == 0) {
        fail(res, PIPE_EMPTY_BODY);
        snprintf(res->msg, sizeof res->msg, "no image data: send a PNG");
        return -1;
    }
    uint64_t t0 = now_us();
    uint8_t *gray = NULL;
    uint32_t w = 0, h = 0;
    img_status st = img_png_decode(png, len, lim, &gray, &w, &h, res->msg, sizeof res->msg);
    uint64_t t1 = now_us();
    res->decode_us = t1 - t0;
    if (st == IMG_OK) {
        /* The framing the model was trained on (an ensemble's members
         * agree, nn_ensemble checks). */
        const nn_meta *meta = nn_ensemble_meta(e);
        st = img_prep_by_name(meta->preprocess, gray, w, h, x, res->msg, sizeof res->msg);
        free(gray);
        res->prep_us = now_us() - t1;
    }
    if (st != IMG_OK) {
        fail(res, pipe_status_from_img(st));
        return -1;
    }
    return 0;
}

int pipe_prepare_png(const nn_ensemble *e, const uint8_t *png, size_t len, const img_limits *lim,
                     float x[PIPE_PIXELS], pipe_result *res)
{
    memset(res, 0, sizeof *res);
    return prepare_png(e, png, len, lim, x, res);
}

void pipe_run_png(const nn_ensemble *e, pipe_ws *ws, const uint8_t *png, size_t len,
                  const img_limits *lim, float prepared[PIPE_PIXELS], pipe_result *res)
{
    memset(res, 0, sizeof *res);
    /* A batch waiting to fill waits for this image while it decodes. */
    if (ws->batch && len) pipe_batcher_expect(ws->batch, 1);
    if (prepare_png(e, png, len, lim, ws->x, res) < 0) {
        if (ws->batch && len) pipe_batcher_expect(ws->batch, -1);
        return;
    }
    if (prepared) memcpy(prepared, ws->x, sizeof *prepared * PIPE_PIXELS);
    if (ws->batch)
        pipe_batcher_run(ws->batch, PIPE_F32, ws->x, 1, res, 1);
    else
        pipe_forward(e, ws, ws->x, 1, res);
}

void pipe_run_pngs(const nn_ensemble *e, pipe_ws *ws, int n, const uint8_t *const *png,
                   const size_t *len, const img_limits *lim, float *x, pipe_result *res)
{
    int todo = 0;
    for (int i = 0; i < n; i++) todo += res[i].status == PIPE_OK;
    if (ws->batch && todo) pipe_batcher_expect(ws->batch, todo);
    int ready = 0;
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * PIPE_PIXELS;
        if (res[i].status != PIPE_OK || prepare_png(e, png[i], len[i], lim, xi, &res[i]) < 0) {
            memset(xi, 0, sizeof *xi * PIPE_PIXELS);
            continue;
        }
        ready++;
    }
    if (ws->batch) {
        /* The failed ones are no longer on their way. */
        if (todo > ready) pipe_batcher_expect(ws->batch, -(todo - ready));
        if (ready) pipe_batcher_run(ws->batch, PIPE_F32, x, n, res, ready);
        return;
    }
    for (int i0 = 0; i0 < n; i0 += ws->max_batch) {
        int m = n - i0 < ws->max_batch ? n - i0 : ws->max_batch;
        pipe_forward(e, ws, x + (size_t)i0 * PIPE_PIXELS, m, res + i0);
    }
}

/* Checks image i of x (dtype) into res[i] (a float outside 0..1 fails it)
 * and, when dst is not NULL, writes it there as floats (zeros if it
 * failed). */
static void tensor_in(pipe_dtype dtype, const void *x, int i, float *dst, pipe_result *r)
{
    size_t at = (size_t)i * PIPE_PIXELS;
    memset(r, 0, sizeof *r);
    if (dtype == PIPE_U8) {
        const uint8_t *src = (const uint8_t *)x + at;
        if (dst)
            for (int q = 0; q < PIPE_PIXELS; q++) dst[q] = src[q] / 255.0f;
        return;
    }
    const float *src = (const float *)x + at;
    for (int q = 0; q < PIPE_PIXELS; q++) {
        if (!(src[q] >= 0.0f && src[q] <= 1.0f)) { /* NaN fails too */
            fail(r, PIPE_INVALID_TENSOR);
            snprintf(r->msg, sizeof r->msg,
                     "pixel %d (row %d, column %d) is %g: values must be 0..1", q, q / PIPE_SIDE,
                     q % PIPE_SIDE, (double)src[q]);
            if (dst) memset(dst, 0, sizeof *dst * PIPE_PIXELS);
            return;
        }
        if (dst) dst[q] = src[q];
    }
}

void pipe_run_tensors(const nn_ensemble *e, pipe_ws *ws, pipe_dtype dtype, const void *x, int n,
                      pipe_result *res)
{
    if (ws->batch) { /* checked here, converted by the batch that takes it */
        for (int i = 0; i < n; i++) tensor_in(dtype, x, i, NULL, &res[i]);
        pipe_batcher_run(ws->batch, dtype, x, n, res, 0);
        return;
    }
    for (int i0 = 0; i0 < n; i0 += ws->max_batch) {
        int m = n - i0 < ws->max_batch ? n - i0 : ws->max_batch;
        for (int i = 0; i < m; i++)
            tensor_in(dtype, x, i0 + i, ws->x + (size_t)i * PIPE_PIXELS, &res[i0 + i]);
        pipe_forward(e, ws, ws->x, m, res + i0);
    }
}
