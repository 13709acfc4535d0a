/* ood.c - out-of-distribution scores: Mahalanobis distance and a trained
 * head on penultimate features, energy on logits. */
#include "nn/ood.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/err.h"
#include "nn/gemm.h"
#include "nn/rng.h"
#include "nn/simd.h"

#define OOD_BATCH 128

/* The head's hidden units a block of its score's accumulators holds (four
 * vectors of the widest path), and h rounded up to whole blocks: w1t's
 * row length. */
#define HEAD_BLOCK 32
#define HEAD_UNITS(h) (((size_t)(h) + HEAD_BLOCK - 1) / HEAD_BLOCK * HEAD_BLOCK)

int nn_ood_dim(const nn_net *net)
{
    const nn_layer *L = &net->layers[net->nlayers - 1];
    return L->kind == NN_DENSE && L->in_c <= NN_OOD_MAX_DIM ? L->in_c : 0;
}

void nn_ood_free(nn_ood *o)
{
    if (!o) return;
    free(o->means);
    free(o->chol);
    free(o->w);
    free(o->wmeans);
    free(o->norm);
    free(o->w1);
    free(o->w1t);
    free(o->b1);
    free(o->w2);
    free(o);
}

/* W = L^-1 column by column (forward substitution on unit vectors), then
 * W mu_c; all in double from the stored floats. */
static void derive(nn_ood *o)
{
    int d = o->d;
    for (int j = 0; j < d; j++) {
        for (int i = 0; i < j; i++) o->w[(size_t)i * d + j] = 0.0;
        for (int i = j; i < d; i++) {
            double s = i == j ? 1.0 : 0.0;
            for (int q = j; q < i; q++)
                s -= (double)o->chol[(size_t)i * d + q] * o->w[(size_t)q * d + j];
            o->w[(size_t)i * d + j] = s / o->chol[(size_t)i * d + i];
        }
    }
    for (int c = 0; c < o->k; c++)
        for (int i = 0; i < d; i++) {
            double s = 0.0;
            for (int q = 0; q <= i; q++) s += o->w[(size_t)i * d + q] * o->means[(size_t)c * d + q];
            o->wmeans[(size_t)c * d + i] = s;
        }
}

nn_ood *nn_ood_create(int k, int d, const float *means, const float *chol, double threshold,
                      char *err, size_t errlen)
{
    if (k < 1 || k > NN_MAX_CLASSES || d < 1 || d > NN_OOD_MAX_DIM) {
        nn_errf(err, errlen, "ood: %d classes, %d features (must be 1..%d, 1..%d)", k, d,
                NN_MAX_CLASSES, NN_OOD_MAX_DIM);
        return NULL;
    }
    if (!isfinite(threshold)) {
        nn_errf(err, errlen, "ood: the threshold is not finite");
        return NULL;
    }
    size_t dd = (size_t)d * d, kd = (size_t)k * d;
    for (size_t i = 0; i < kd; i++)
        if (!isfinite(means[i])) {
            nn_errf(err, errlen, "ood: a class mean holds a NaN or infinity");
            return NULL;
        }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            float v = chol[(size_t)i * d + j];
            if (!isfinite(v) || (j > i && v != 0.0f) || (j == i && !(v > 0.0f))) {
                nn_errf(err, errlen,
                        "ood: the covariance factor must be lower triangular with a positive "
                        "diagonal (entry %d,%d is %g)",
                        i, j, (double)v);
                return NULL;
            }
        }
    nn_ood *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->k = k;
    o->d = d;
    o->threshold = threshold;
    o->means = malloc(sizeof(float) * kd);
    o->chol = malloc(sizeof(float) * dd);
    o->w = malloc(sizeof(double) * dd);
    o->wmeans = malloc(sizeof(double) * kd);
    if (!o->means || !o->chol || !o->w || !o->wmeans) goto oom;
    memcpy(o->means, means, sizeof(float) * kd);
    memcpy(o->chol, chol, sizeof(float) * dd);
    derive(o);
    for (size_t i = 0; i < dd; i++)
        if (!isfinite(o->w[i])) {
            nn_errf(err, errlen, "ood: the covariance factor is too ill-conditioned to invert");
            nn_ood_free(o);
            return NULL;
        }
    return o;
oom:
    nn_errf(err, errlen, "ood: out of memory");
    nn_ood_free(o);
    return NULL;
}

nn_ood *nn_ood_create_energy(double threshold, char *err, size_t errlen)
{
    if (!isfinite(threshold)) {
        nn_errf(err, errlen, "ood: the threshold is not finite");
        return NULL;
    }
    nn_ood *o = calloc(1, sizeof *o);
    if (!o) {
        nn_errf(err, errlen, "ood: out of memory");
        return NULL;
    }
    o->method = NN_OOD_ENERGY;
    o->threshold = threshold;
    return o;
}

static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

nn_ood *nn_ood_create_head(int d, int h, const float *norm, const float *w1, const float *b1,
                           const float *w2, float b2, double threshold, char *err, size_t errlen)
{
    if (d < 1 || d > NN_OOD_MAX_DIM || h < 1 || h > NN_OOD_MAX_HIDDEN) {
        nn_errf(err, errlen, "ood: head of %d features, %d hidden units (must be 1..%d, 1..%d)", d,
                h, NN_OOD_MAX_DIM, NN_OOD_MAX_HIDDEN);
        return NULL;
    }
    if (!isfinite(threshold)) {
        nn_errf(err, errlen, "ood: the threshold is not finite");
        return NULL;
    }
    size_t hd = (size_t)h * d;
    if (!all_finite(norm, 2 * (size_t)d) || !all_finite(w1, hd) || !all_finite(b1, (size_t)h) ||
        !all_finite(w2, (size_t)h) || !isfinite(b2)) {
        nn_errf(err, errlen, "ood: a head parameter is a NaN or infinity");
        return NULL;
    }
    for (int j = 0; j < d; j++)
        if (!(norm[d + j] > 0.0f)) {
            nn_errf(err, errlen, "ood: the head's feature std %d is %g, not > 0", j,
                    (double)norm[d + j]);
            return NULL;
        }
    nn_ood *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->method = NN_OOD_HEAD;
    o->d = d;
    o->h = h;
    o->threshold = threshold;
    o->b2 = b2;
    o->norm = malloc(sizeof(float) * 2 * (size_t)d);
    o->w1 = malloc(sizeof(float) * hd);
    const size_t hp = HEAD_UNITS(h);
    o->w1t = calloc(hp * d, sizeof(float));
    o->b1 = malloc(sizeof(float) * (size_t)h);
    o->w2 = malloc(sizeof(float) * (size_t)h);
    if (!o->norm || !o->w1 || !o->w1t || !o->b1 || !o->w2) goto oom;
    memcpy(o->norm, norm, sizeof(float) * 2 * (size_t)d);
    memcpy(o->w1, w1, sizeof(float) * hd);
    for (int i = 0; i < h; i++)
        for (int j = 0; j < d; j++) o->w1t[(size_t)j * hp + i] = w1[(size_t)i * d + j];
    memcpy(o->b1, b1, sizeof(float) * (size_t)h);
    memcpy(o->w2, w2, sizeof(float) * (size_t)h);
    return o;
oom:
    nn_errf(err, errlen, "ood: out of memory");
    nn_ood_free(o);
    return NULL;
}

const char *nn_ood_method_name(nn_ood_method m)
{
    return m == NN_OOD_ENERGY ? "energy" : m == NN_OOD_HEAD ? "head" : NN_OOD_METHOD;
}

int nn_ood_method_parse(const char *name, nn_ood_method *m)
{
    if (!strcmp(name, NN_OOD_METHOD))
        *m = NN_OOD_MAHALANOBIS;
    else if (!strcmp(name, "energy"))
        *m = NN_OOD_ENERGY;
    else if (!strcmp(name, "head"))
        *m = NN_OOD_HEAD;
    else
        return -1;
    return 0;
}

nn_ood *nn_ood_copy(const nn_ood *o)
{
    if (!o) return NULL;
    char e[8];
    if (o->method == NN_OOD_ENERGY) return nn_ood_create_energy(o->threshold, e, sizeof e);
    if (o->method == NN_OOD_HEAD)
        return nn_ood_create_head(o->d, o->h, o->norm, o->w1, o->b1, o->w2, o->b2, o->threshold, e,
                                  sizeof e);
    return nn_ood_create(o->k, o->d, o->means, o->chol, o->threshold, e, sizeof e);
}

float nn_energy(const float *z, int k)
{
    float m = z[0];
    for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
    double s = 0.0;
    for (int j = 0; j < k; j++) s += exp((double)z[j] - m);
    return (float)-(m + log(s));
}

/* The head's hidden layer before its ReLU, a = b1 + W1 g, in double from
 * the stored floats: HEAD_BLOCK units at a time, a vector of VL of them
 * per accumulator, from w1t (one row of HEAD_UNITS(h) units per feature).
 * Each unit's sum runs over the features in order, a product and then an
 * add (C11 does not contract them into one rounding), as a scalar loop
 * would: every width gives the same bits. */
#define HEAD_HIDDEN(NAME, VT, VL, ATTR)                                           \
    ATTR static void NAME(const nn_ood *o, const double *g, double *a)            \
    {                                                                             \
        typedef float VF __attribute__((vector_size(VL * sizeof(float))));        \
        const int d = o->d, h = o->h;                                             \
        const size_t hp = HEAD_UNITS(h);                                          \
        for (int i = 0; i < h; i += HEAD_BLOCK) {                                 \
            VT acc[HEAD_BLOCK / VL];                                              \
            for (int v = 0; v < HEAD_BLOCK / VL; v++)                             \
                for (int l = 0; l < VL; l++) {                                    \
                    const int u = i + v * VL + l;                                 \
                    acc[v][l] = u < h ? o->b1[u] : 0.0;                           \
                }                                                                 \
            const float *w = o->w1t + i;                                          \
            for (int j = 0; j < d; j++, w += hp) {                                \
                const double gj = g[j];                                           \
                _Pragma("GCC unroll 8") for (int v = 0; v < HEAD_BLOCK / VL; v++) \
                {                                                                 \
                    VF wf;                                                        \
                    memcpy(&wf, w + v * VL, sizeof wf);                           \
                    acc[v] += __builtin_convertvector(wf, VT) * gj;               \
                }                                                                 \
            }                                                                     \
            memcpy(a + i, acc, sizeof acc);                                       \
        }                                                                         \
    }
typedef double head_v2d __attribute__((vector_size(16)));
HEAD_HIDDEN(head_hidden_v2, head_v2d, 2, )
#if NN_X86
typedef double head_v4d __attribute__((vector_size(32)));
typedef double head_v8d __attribute__((vector_size(64)));
HEAD_HIDDEN(head_hidden_v4, head_v4d, 4, __attribute__((target("avx2"))))
HEAD_HIDDEN(head_hidden_v8, head_v8d, 8, __attribute__((target("avx512f"))))
#endif

/* The head's logit for one row of features (the hidden layer is 64 x 128
 * multiply-adds: nothing beside the net's own pass; scalar, eight units
 * at a time, it was 1.7% of the default CNN server's CPU under load). */
static float head_score(const nn_ood *o, const float *f)
{
    const int d = o->d;
    double g[NN_OOD_MAX_DIM], a[HEAD_UNITS(NN_OOD_MAX_HIDDEN)], z = o->b2;
    for (int j = 0; j < d; j++) g[j] = ((double)f[j] - o->norm[j]) / o->norm[d + j];
#if NN_X86
    const int path = nn_gemm_get_path();
    if (path == NN_GEMM_PATH_AVX512)
        head_hidden_v8(o, g, a);
    else if (path == NN_GEMM_PATH_AVX2)
        head_hidden_v4(o, g, a);
    else
#endif
        head_hidden_v2(o, g, a);
    for (int i = 0; i < o->h; i++)
        if (a[i] > 0.0) z += o->w2[i] * a[i];
    return (float)z;
}

void nn_ood_score_pass(const nn_ood *o, const float *feats, const float *logits, int n, int k,
                       float *scores)
{
    if (o->method == NN_OOD_HEAD) {
        for (int r = 0; r < n; r++) scores[r] = head_score(o, feats + (size_t)r * o->d);
        return;
    }
    if (o->method == NN_OOD_MAHALANOBIS) {
        nn_ood_score(o, feats, n, scores);
        return;
    }
    for (int r = 0; r < n; r++) scores[r] = nn_energy(logits + (size_t)r * k, k);
}

void nn_ood_score(const nn_ood *o, const float *feats, int n, float *scores)
{
    int d = o->d;
    for (int r = 0; r < n; r++) {
        const float *f = feats + (size_t)r * d;
        double best = INFINITY;
        /* y = W f once, then the squared distance to each W mu_c. */
        double yp[NN_OOD_MAX_DIM];
        for (int i = 0; i < d; i++) {
            const double *wi = o->w + (size_t)i * d;
            double s = 0.0;
            for (int q = 0; q <= i; q++) s += wi[q] * f[q];
            yp[i] = s;
        }
        for (int c = 0; c < o->k; c++) {
            const double *m = o->wmeans + (size_t)c * d;
            double s = 0.0;
            for (int i = 0; i < d; i++) s += (yp[i] - m[i]) * (yp[i] - m[i]);
            if (s < best) best = s;
        }
        scores[r] = (float)best;
    }
}

int nn_ood_features(const nn_net *net, const uint8_t *images, int n, float *feats, char *err,
                    size_t errlen)
{
    int d = nn_ood_dim(net);
    size_t hw = (size_t)net->in_c * net->in_h * net->in_w;
    if (!d) {
        nn_errf(err, errlen,
                "ood: the net's last layer is not dense with at most %d inputs: no features",
                NN_OOD_MAX_DIM);
        return -1;
    }
    nn_ws *ws = nn_ws_create(net, OOD_BATCH, 0);
    float *x = malloc(sizeof(float) * OOD_BATCH * hw);
    if (!ws || !x) {
        nn_ws_free(ws);
        free(x);
        nn_errf(err, errlen, "ood: out of memory");
        return -1;
    }
    for (int b = 0; b < n; b += OOD_BATCH) {
        int m = n - b < OOD_BATCH ? n - b : OOD_BATCH;
        for (size_t j = 0; j < (size_t)m * hw; j++) x[j] = images[(size_t)b * hw + j] / 255.0f;
        nn_net_forward(net, ws, x, m, NULL, NULL);
        memcpy(feats + (size_t)b * d, nn_ws_features(ws), sizeof(float) * (size_t)m * d);
    }
    nn_ws_free(ws);
    free(x);
    return 0;
}

nn_ood *nn_ood_fit(const nn_net *net, const uint8_t *images, const uint8_t *labels, int n,
                   double ridge, char *err, size_t errlen)
{
    int d = nn_ood_dim(net), k = nn_net_outputs(net);
    if (!d) {
        nn_errf(err, errlen,
                "ood: the net's last layer is not dense with at most %d inputs: no features to fit",
                NN_OOD_MAX_DIM);
        return NULL;
    }
    if (n < 2) {
        nn_errf(err, errlen, "ood: %d images; fitting needs at least 2", n);
        return NULL;
    }
    if (!(ridge >= 0.0 && ridge < 1.0)) {
        nn_errf(err, errlen, "ood: ridge must be in [0,1)");
        return NULL;
    }
    nn_ood *o = NULL;
    float *feats = malloc(sizeof(float) * (size_t)n * d);
    double *mu = calloc((size_t)k * d, sizeof(double)), *S = calloc((size_t)d * d, sizeof(double));
    float *meansf = malloc(sizeof(float) * (size_t)k * d),
          *cholf = malloc(sizeof(float) * (size_t)d * d);
    long *cnt = calloc((size_t)k, sizeof(long));
    double *v = malloc(sizeof(double) * d);
    if (!feats || !mu || !S || !meansf || !cholf || !cnt || !v) {
        nn_errf(err, errlen, "ood: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (labels[i] >= k) {
            nn_errf(err, errlen, "ood: label %d of image %d is not a class of the net", labels[i],
                    i);
            goto done;
        }
    if (nn_ood_features(net, images, n, feats, err, errlen)) goto done;
    for (int i = 0; i < n; i++) {
        cnt[labels[i]]++;
        for (int j = 0; j < d; j++) mu[(size_t)labels[i] * d + j] += feats[(size_t)i * d + j];
    }
    for (int c = 0; c < k; c++) {
        if (!cnt[c]) {
            nn_errf(err, errlen, "ood: no image of class %d to fit its mean", c);
            goto done;
        }
        for (int j = 0; j < d; j++) {
            mu[(size_t)c * d + j] /= cnt[c];
            meansf[(size_t)c * d + j] = (float)mu[(size_t)c * d + j];
        }
    }
    /* Lower triangle of the scatter around each image's class mean. */
    for (int i = 0; i < n; i++) {
        const float *f = feats + (size_t)i * d;
        const double *mc = mu + (size_t)labels[i] * d;
        for (int j = 0; j < d; j++) v[j] = f[j] - mc[j];
        for (int a = 0; a < d; a++) {
            double va = v[a], *Sa = S + (size_t)a * d;
            for (int q = 0; q <= a; q++) Sa[q] += va * v[q];
        }
    }
    double tr = 0.0;
    for (int a = 0; a < d; a++) tr += S[(size_t)a * d + a] / n;
    double add = ridge * tr / d;
    for (int a = 0; a < d; a++) {
        for (int q = 0; q <= a; q++) S[(size_t)a * d + q] /= n;
        S[(size_t)a * d + a] += add;
    }
    /* Cholesky in place on the lower triangle. */
    for (int j = 0; j < d; j++) {
        double s = S[(size_t)j * d + j];
        for (int q = 0; q < j; q++) s -= S[(size_t)j * d + q] * S[(size_t)j * d + q];
        if (!(s > 0.0)) {
            nn_errf(err, errlen,
                    "ood: the feature covariance is not positive definite (give a ridge > 0)");
            goto done;
        }
        S[(size_t)j * d + j] = sqrt(s);
        for (int i = j + 1; i < d; i++) {
            double t = S[(size_t)i * d + j];
            for (int q = 0; q < j; q++) t -= S[(size_t)i * d + q] * S[(size_t)j * d + q];
            S[(size_t)i * d + j] = t / S[(size_t)j * d + j];
        }
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++)
            cholf[(size_t)i * d + j] = j <= i ? (float)S[(size_t)i * d + j] : 0.0f;
    o = nn_ood_create(k, d, meansf, cholf, -1.0, err, errlen);
done:
    free(feats);
    free(mu);
    free(S);
    free(meansf);
    free(cholf);
    free(cnt);
    free(v);
    return o;
}

void nn_ood_head_cfg_default(nn_ood_head_cfg *cfg)
{
    cfg->hidden = 64;
    cfg->epochs = 5;
    cfg->batch = 256;
    cfg->lr = 1e-3f;
    cfg->weight_decay = 1e-4f;
    cfg->seed = 1;
}

nn_ood *nn_ood_fit_head(int d, const float *fin, int nin, const float *fout, int nout,
                        const nn_ood_head_cfg *cfg, char *err, size_t errlen)
{
    int h = cfg->hidden;
    if (d < 1 || d > NN_OOD_MAX_DIM || h < 1 || h > NN_OOD_MAX_HIDDEN || nin < 1 || nout < 1 ||
        cfg->epochs < 1 || cfg->batch < 1 || !(cfg->lr > 0.0f && isfinite(cfg->lr)) ||
        !(cfg->weight_decay >= 0.0f && isfinite(cfg->weight_decay))) {
        nn_errf(err, errlen,
                "ood: head fit needs 1..%d features, 1..%d hidden units, digits and outliers, "
                "epochs and batch >= 1, lr > 0, weight decay >= 0",
                NN_OOD_MAX_DIM, NN_OOD_MAX_HIDDEN);
        return NULL;
    }
    if ((long)nin + nout > 0x7fffffffL) {
        nn_errf(err, errlen, "ood: too many images for a head fit");
        return NULL;
    }
    int n = nin + nout, bs = cfg->batch < n ? cfg->batch : n;
    size_t hd = (size_t)h * d, np = hd + 2 * (size_t)h + 1;
    nn_ood *o = NULL;
    float *norm = malloc(sizeof(float) * 2 * (size_t)d), *P = malloc(sizeof(float) * np),
          *G = malloc(sizeof(float) * np), *M = calloc(np, sizeof(float)),
          *V = calloc(np, sizeof(float)), *g = malloc(sizeof(float) * d),
          *a = malloc(sizeof(float) * h);
    int *order = malloc(sizeof(int) * (size_t)n);
    double *acc = calloc(2 * (size_t)d, sizeof(double));
    if (!norm || !P || !G || !M || !V || !g || !a || !order || !acc) {
        nn_errf(err, errlen, "ood: out of memory");
        goto done;
    }
    /* Standardise by the digits' mean and std. */
    for (int r = 0; r < nin; r++)
        for (int j = 0; j < d; j++) {
            double v = fin[(size_t)r * d + j];
            acc[j] += v;
            acc[d + j] += v * v;
        }
    for (int j = 0; j < d; j++) {
        double mu = acc[j] / nin, var = acc[d + j] / nin - mu * mu;
        norm[j] = (float)mu;
        norm[d + j] = (float)(sqrt(var > 0.0 ? var : 0.0) + 1e-3);
    }
    /* Parameters: w1 [h,d] | b1 [h] | w2 [h] | b2, uniform in
     * +-1/sqrt(fan_in) as a dense layer's usual start. */
    float *w1 = P, *b1 = P + hd, *w2 = b1 + h, *b2 = w2 + h;
    float *gw1 = G, *gb1 = G + hd, *gw2 = gb1 + h, *gb2 = gw2 + h;
    nn_rng rng;
    nn_rng_seed(&rng, cfg->seed);
    float s1 = 1.0f / sqrtf((float)d), s2 = 1.0f / sqrtf((float)h);
    for (size_t i = 0; i < hd + (size_t)h; i++) P[i] = s1 * (2.0f * nn_rng_uniform(&rng) - 1.0f);
    for (size_t i = hd + (size_t)h; i < np; i++) P[i] = s2 * (2.0f * nn_rng_uniform(&rng) - 1.0f);
    for (int i = 0; i < n; i++) order[i] = i;
    const double posw = (double)nin / nout, beta1 = 0.9, beta2 = 0.999;
    double b1t = 1.0, b2t = 1.0;
    for (int ep = 0; ep < cfg->epochs; ep++) {
        for (int i = n - 1; i > 0; i--) {
            int j = (int)nn_rng_below(&rng, (uint32_t)i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int b0 = 0; b0 < n; b0 += bs) {
            int m = n - b0 < bs ? n - b0 : bs;
            memset(G, 0, sizeof(float) * np);
            for (int r = 0; r < m; r++) {
                int idx = order[b0 + r], out = idx >= nin;
                const float *f = out ? fout + (size_t)(idx - nin) * d : fin + (size_t)idx * d;
                for (int j = 0; j < d; j++) g[j] = (f[j] - norm[j]) / norm[d + j];
                double z = *b2;
                for (int i = 0; i < h; i++) {
                    const float *w = w1 + (size_t)i * d;
                    float s = b1[i];
                    for (int j = 0; j < d; j++) s += w[j] * g[j];
                    a[i] = s;
                    if (s > 0.0f) z += (double)w2[i] * s;
                }
                /* d(weighted BCE)/dz = weight * (sigmoid(z) - target), over the batch. */
                double p = 1.0 / (1.0 + exp(-z));
                float dz = (float)((out ? posw : 1.0) * (p - out) / m);
                *gb2 += dz;
                for (int i = 0; i < h; i++) {
                    if (!(a[i] > 0.0f)) continue;
                    float dh = dz * w2[i], *gw = gw1 + (size_t)i * d;
                    gw2[i] += dz * a[i];
                    gb1[i] += dh;
                    for (int j = 0; j < d; j++) gw[j] += dh * g[j];
                }
            }
            /* Adam with L2 decay added to the gradient. */
            b1t *= beta1;
            b2t *= beta2;
            float c1 = (float)(cfg->lr / (1.0 - b1t)), c2 = (float)(1.0 / sqrt(1.0 - b2t));
            for (size_t i = 0; i < np; i++) {
                float gr = G[i] + cfg->weight_decay * P[i];
                M[i] = (float)beta1 * M[i] + (float)(1.0 - beta1) * gr;
                V[i] = (float)beta2 * V[i] + (float)(1.0 - beta2) * gr * gr;
                P[i] -= c1 * M[i] / (sqrtf(V[i]) * c2 + 1e-8f);
            }
        }
    }
    o = nn_ood_create_head(d, h, norm, w1, b1, w2, *b2, -1.0, err, errlen);
done:
    free(norm);
    free(P);
    free(G);
    free(M);
    free(V);
    free(g);
    free(a);
    free(order);
    free(acc);
    return o;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int nn_ood_set_threshold(nn_ood *o, const float *scores, int n, double share)
{
    if (n < 1 || !(share > 0.0 && share <= 1.0)) return -1;
    float *s = malloc(sizeof(float) * n);
    if (!s) return -1;
    memcpy(s, scores, sizeof(float) * n);
    qsort(s, (size_t)n, sizeof(float), cmp_float);
    long idx = (long)ceil(share * n - 1e-9) - 1;
    if (idx < 0) idx = 0;
    o->threshold = s[idx];
    free(s);
    return 0;
}

double nn_ood_auroc(const float *in, int nin, const float *out, int nout)
{
    if (nin < 1 || nout < 1) return -1.0;
    float *a = malloc(sizeof(float) * nin), *b = malloc(sizeof(float) * nout);
    if (!a || !b) {
        free(a);
        free(b);
        return -1.0;
    }
    memcpy(a, in, sizeof(float) * nin);
    memcpy(b, out, sizeof(float) * nout);
    qsort(a, (size_t)nin, sizeof(float), cmp_float);
    qsort(b, (size_t)nout, sizeof(float), cmp_float);
    /* For each out-score: in-scores below it count 1, equal ones 1/2. */
    double wins = 0.0;
    int lo = 0, hi = 0;
    for (int j = 0; j < nout; j++) {
        while (lo < nin && a[lo] < b[j]) lo++;
        if (hi < lo) hi = lo;
        while (hi < nin && a[hi] <= b[j]) hi++;
        wins += lo + 0.5 * (hi - lo);
    }
    free(a);
    free(b);
    return wins / ((double)nin * nout);
}
