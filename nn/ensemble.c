/* ensemble.c - several nets answering as one model. */
#include "err.h"
#include "ensemble.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nn_ensemble_ws {
    int n, k, max_batch;
    nn_ws *ws[NN_MAX_MEMBERS];
    float *tmp;   /* one member's probabilities [max_batch, k] */
};

nn_ensemble *nn_ensemble_from_nets(nn_net **nets, int n, char *err, size_t errlen)
{
    if (n < 1 || n > NN_MAX_MEMBERS) {
        nn_errf(err, errlen, "ensemble: %d members (must be 1..%d)", n, NN_MAX_MEMBERS);
        for (int i = 0; i < n; i++) nn_net_free(nets[i]);
        return NULL;
    }
    nn_ensemble *e = calloc(1, sizeof *e);
    if (!e) {
        nn_errf(err, errlen, "ensemble: out of memory");
        for (int i = 0; i < n; i++) nn_net_free(nets[i]);
        return NULL;
    }
    e->n = n;
    for (int i = 0; i < n; i++) e->nets[i] = nets[i];
    const nn_net *a = nets[0];
    for (int i = 1; i < n; i++) {
        const nn_net *b = nets[i];
        if (b->in_c != a->in_c || b->in_h != a->in_h || b->in_w != a->in_w ||
            nn_net_outputs(b) != nn_net_outputs(a)) {
            nn_errf(err, errlen, "ensemble: member %d has input [%d,%d,%d] and %d classes, member 0 [%d,%d,%d] and %d",
                 i, b->in_c, b->in_h, b->in_w, nn_net_outputs(b), a->in_c, a->in_h, a->in_w, nn_net_outputs(a));
            nn_ensemble_free(e);
            return NULL;
        }
        /* One image goes through one preprocessing for all members. */
        if (strcmp(b->meta.preprocess, a->meta.preprocess)) {
            nn_errf(err, errlen, "ensemble: member %d wants preprocess \"%s\", member 0 \"%s\"",
                 i, b->meta.preprocess, a->meta.preprocess);
            nn_ensemble_free(e);
            return NULL;
        }
    }
    /* Inference runs the folded copies: one pass fewer per batch norm. */
    for (int i = 0; i < n; i++) {
        int folds = 0;
        for (int j = 1; j < nets[i]->nlayers; j++)
            folds |= nets[i]->layers[j].kind == NN_BATCHNORM &&
                     (nets[i]->layers[j - 1].kind == NN_CONV2D || nets[i]->layers[j - 1].kind == NN_DENSE);
        e->infer[i] = folds ? nn_net_fold_bn(nets[i], err, errlen) : nets[i];
        if (!e->infer[i]) {
            nn_ensemble_free(e);
            return NULL;
        }
    }
    return e;
}

nn_ensemble *nn_ensemble_load(const char *paths, char *err, size_t errlen)
{
    nn_net *nets[NN_MAX_MEMBERS];
    char names[NN_MAX_MEMBERS][512];
    int n = 0;
    const char *p = paths;
    if (!paths || !*paths) { nn_errf(err, errlen, "ensemble: no model path given"); return NULL; }
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0 || len >= sizeof names[0]) {
            nn_errf(err, errlen, "ensemble: empty or too long path in \"%.100s\"", paths);
            goto bad;
        }
        if (n == NN_MAX_MEMBERS) {
            nn_errf(err, errlen, "ensemble: more than %d members", NN_MAX_MEMBERS);
            goto bad;
        }
        memcpy(names[n], p, len);
        names[n][len] = 0;
        nets[n] = nn_net_load(names[n], err, errlen);
        if (!nets[n]) goto bad;
        n++;
        p += len + (q ? 1 : 0);
        if (q && !*p) { nn_errf(err, errlen, "ensemble: trailing comma in \"%.100s\"", paths); goto bad; }
    }
    nn_ensemble *e = nn_ensemble_from_nets(nets, n, err, errlen);
    if (e)
        for (int i = 0; i < n; i++) memcpy(e->paths[i], names[i], sizeof e->paths[i]);
    return e;
bad:
    for (int i = 0; i < n; i++) nn_net_free(nets[i]);
    return NULL;
}

void nn_ensemble_free(nn_ensemble *e)
{
    if (!e) return;
    for (int i = 0; i < e->n; i++) {
        if (e->infer[i] != e->nets[i]) nn_net_free(e->infer[i]); /* NULL: harmless */
        nn_net_free(e->nets[i]);
    }
    free(e);
}

const nn_meta *nn_ensemble_meta(const nn_ensemble *e) { return &e->nets[0]->meta; }
int nn_ensemble_classes(const nn_ensemble *e) { return nn_net_outputs(e->nets[0]); }

size_t nn_ensemble_params(const nn_ensemble *e)
{
    size_t s = 0;
    for (int i = 0; i < e->n; i++) s += e->nets[i]->nparams;
    return s;
}

/* The net forward runs: the folded copy, or the member itself in an
 * ensemble put together by hand (infer[i] left NULL). */
static const nn_net *runs(const nn_ensemble *e, int i)
{
    return e->infer[i] ? e->infer[i] : e->nets[i];
}

nn_ensemble_ws *nn_ensemble_ws_create(const nn_ensemble *e, int max_batch)
{
    nn_ensemble_ws *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->n = e->n;
    w->k = nn_ensemble_classes(e);
    w->max_batch = max_batch;
    for (int i = 0; i < e->n; i++)
        if (!(w->ws[i] = nn_ws_create(runs(e, i), max_batch, 0))) goto bad;
    if (e->n > 1 && !(w->tmp = malloc(sizeof(float) * max_batch * w->k))) goto bad;
    return w;
bad:
    nn_ensemble_ws_free(w);
    return NULL;
}

void nn_ensemble_ws_free(nn_ensemble_ws *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) nn_ws_free(w->ws[i]);
    free(w->tmp);
    free(w);
}

void nn_ensemble_forward(const nn_ensemble *e, nn_ensemble_ws *w,
                         const float *x, int n, float *probs)
{
    size_t m = (size_t)n * w->k;
    nn_net_forward(runs(e, 0), w->ws[0], x, n, probs, NULL);
    for (int i = 1; i < e->n; i++) {
        nn_net_forward(runs(e, i), w->ws[i], x, n, w->tmp, NULL);
        for (size_t j = 0; j < m; j++) probs[j] += w->tmp[j];
    }
    if (e->n > 1) {
        float inv = 1.0f / e->n;
        for (size_t j = 0; j < m; j++) probs[j] *= inv;
    }
}
