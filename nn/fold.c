/* fold.c - batch norm folded into the convolution or dense layer before it.
 *
 * At inference a batch norm is a per-channel affine map
 *   y = gamma (x - mean) / sqrt(var + eps) + beta = a x + (beta - a mean),
 * and a conv/dense output channel o is w_o . x + b_o, so the pair is one
 * layer with w'_o = a_o w_o and b'_o = a_o (b_o - mean_o) + beta_o. That
 * removes a full pass over every activation map (the big CNN has seven). */
#include "nn/net.h"
#include "nn/ood.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void fold_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int foldable(const nn_net *net, int i)
{
    return i > 0 && net->layers[i].kind == NN_BATCHNORM &&
           (net->layers[i - 1].kind == NN_CONV2D || net->layers[i - 1].kind == NN_DENSE);
}

nn_net *nn_net_fold_bn(const nn_net *net, char *err, size_t errlen)
{
    if (!net) {
        fold_fail(err, errlen, "fold: no net");
        return NULL;
    }
    nn_layer layers[NN_MAX_LAYERS];
    int map[NN_MAX_LAYERS], n = 0; /* map[i]: new index of old layer i, -1 folded */
    for (int i = 0; i < net->nlayers; i++) {
        if (foldable(net, i)) {
            map[i] = -1;
            continue;
        }
        map[i] = n;
        layers[n++] = net->layers[i];
    }
    nn_net *f = nn_net_create(layers, n, net->in_c, net->in_h, net->in_w, &net->meta, err, errlen);
    if (!f) return NULL;
    f->bn_batches = net->bn_batches;
    /* Folding changes the features by rounding only: the statistics fit. */
    if (net->ood && !(f->ood = nn_ood_copy(net->ood))) {
        fold_fail(err, errlen, "fold: out of memory");
        nn_net_free(f);
        return NULL;
    }
    for (int i = 0; i < net->nlayers; i++) {
        if (map[i] < 0) continue;
        const nn_layer *L = &net->layers[i];
        const nn_layer *F = &f->layers[map[i]];
        const float *w = net->params + L->w_off, *b = net->params + L->b_off;
        float *fw = f->params + F->w_off, *fb = f->params + F->b_off;
        if (L->kind == NN_BATCHNORM)
            memcpy(f->stats + F->s_off, net->stats + L->s_off, sizeof(float) * 2 * L->out_c);
        if (i + 1 < net->nlayers && foldable(net, i + 1)) {
            const nn_layer *B = &net->layers[i + 1];
            const float *gamma = net->params + B->w_off, *beta = net->params + B->b_off;
            const float *mean = net->stats + B->s_off, *var = mean + B->out_c;
            const int O = (int)L->nb;
            const size_t per = L->nw / L->nb; /* weights per output channel */
            for (int o = 0; o < O; o++) {
                double a = gamma[o] / sqrt((double)var[o] + B->eps);
                for (size_t j = 0; j < per; j++)
                    fw[(size_t)o * per + j] = (float)(w[(size_t)o * per + j] * a);
                fb[o] = (float)((b[o] - (double)mean[o]) * a + beta[o]);
            }
        } else {
            memcpy(fw, w, sizeof(float) * L->nw);
            memcpy(fb, b, sizeof(float) * L->nb);
        }
    }
    /* The copy is for inference: its Winograd weights now, once. */
    if (nn_net_plan(f, err, errlen)) {
        nn_net_free(f);
        return NULL;
    }
    return f;
}
