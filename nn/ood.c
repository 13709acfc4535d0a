/* ood.c - Mahalanobis out-of-distribution score on penultimate features. */
#include "nn/ood.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/err.h"

#define OOD_BATCH 128

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

const char *nn_ood_method_name(nn_ood_method m)
{
    return m == NN_OOD_ENERGY ? "energy" : NN_OOD_METHOD;
}

int nn_ood_method_parse(const char *name, nn_ood_method *m)
{
    if (!strcmp(name, NN_OOD_METHOD))
        *m = NN_OOD_MAHALANOBIS;
    else if (!strcmp(name, "energy"))
        *m = NN_OOD_ENERGY;
    else
        return -1;
    return 0;
}

nn_ood *nn_ood_copy(const nn_ood *o)
{
    if (!o) return NULL;
    char e[8];
    if (o->method == NN_OOD_ENERGY) return nn_ood_create_energy(o->threshold, e, sizeof e);
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

void nn_ood_score_pass(const nn_ood *o, const float *feats, const float *logits, int n, int k,
                       float *scores)
{
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

nn_ood *nn_ood_fit(const nn_net *net, const uint8_t *images, const uint8_t *labels, int n,
                   double ridge, char *err, size_t errlen)
{
    int d = nn_ood_dim(net), k = nn_net_outputs(net);
    size_t hw = (size_t)net->in_c * net->in_h * net->in_w;
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
    nn_ws *ws = nn_ws_create(net, OOD_BATCH, 0);
    float *x = malloc(sizeof(float) * OOD_BATCH * hw);
    float *feats = malloc(sizeof(float) * (size_t)n * d);
    double *mu = calloc((size_t)k * d, sizeof(double)), *S = calloc((size_t)d * d, sizeof(double));
    float *meansf = malloc(sizeof(float) * (size_t)k * d),
          *cholf = malloc(sizeof(float) * (size_t)d * d);
    long *cnt = calloc((size_t)k, sizeof(long));
    double *v = malloc(sizeof(double) * d);
    if (!ws || !x || !feats || !mu || !S || !meansf || !cholf || !cnt || !v) {
        nn_errf(err, errlen, "ood: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (labels[i] >= k) {
            nn_errf(err, errlen, "ood: label %d of image %d is not a class of the net", labels[i],
                    i);
            goto done;
        }
    for (int b = 0; b < n; b += OOD_BATCH) {
        int m = n - b < OOD_BATCH ? n - b : OOD_BATCH;
        for (size_t j = 0; j < (size_t)m * hw; j++) x[j] = images[(size_t)b * hw + j] / 255.0f;
        nn_net_forward(net, ws, x, m, NULL, NULL);
        memcpy(feats + (size_t)b * d, nn_ws_features(ws), sizeof(float) * (size_t)m * d);
    }
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
    nn_ws_free(ws);
    free(x);
    free(feats);
    free(mu);
    free(S);
    free(meansf);
    free(cholf);
    free(cnt);
    free(v);
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
