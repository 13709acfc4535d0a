#include "layers.h"

#include <string.h>

#include "gemm.h"

size_t nn_conv2d_col_size(const nn_conv_shape *cs)
{
    return (size_t)cs->C * cs->k * cs->k * cs->OH * cs->OW;
}

/* col rows are ld floats apart, so several images can sit side by side. */
static void im2col_ld(float *col, size_t ld, const float *x, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    const int OH = cs->OH, OW = cs->OW;
    for (int kj = 0; kj < k; kj++) {
        /* Output columns whose input column ow*s - p + kj lies inside. */
        int lo = p - kj > 0 ? (p - kj + s - 1) / s : 0;
        int hi = (W - 1 + p - kj) >= 0 ? (W - 1 + p - kj) / s + 1 : 0;
        if (hi > OW) hi = OW;
        if (hi < lo) hi = lo;
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < k; ki++) {
                float *dst = col + ((size_t)(c * k + ki) * k + kj) * ld;
                const float *xc = x + (size_t)c * H * W;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - p + ki;
                    float *d = dst + (size_t)oh * OW;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, sizeof(float) * OW);
                        continue;
                    }
                    const float *xr = xc + (size_t)ih * W;
                    const int off = kj - p;
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    if (s == 1)
                        for (int ow = lo; ow < hi; ow++) d[ow] = xr[ow + off];
                    else
                        for (int ow = lo; ow < hi; ow++) d[ow] = xr[ow * s + off];
                    for (int ow = hi; ow < OW; ow++) d[ow] = 0.0f;
                }
            }
    }
}

void nn_im2col(float *col, const float *x, const nn_conv_shape *cs)
{
    im2col_ld(col, (size_t)cs->OH * cs->OW, x, cs);
}

static void col2im_add_ld(float *dx, const float *dcol, size_t ld, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    const int OH = cs->OH, OW = cs->OW;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *src = dcol + ((size_t)(c * k + ki) * k + kj) * ld;
                float *xc = dx + (size_t)c * H * W;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= H) continue;
                    const float *sr = src + (size_t)oh * OW;
                    float *xr = xc + (size_t)ih * W;
                    for (int ow = 0; ow < OW; ow++) {
                        int iw = ow * s - p + kj;
                        if (iw >= 0 && iw < W) xr[iw] += sr[ow];
                    }
                }
            }
}

void nn_col2im_add(float *dx, const float *dcol, const nn_conv_shape *cs)
{
    col2im_add_ld(dx, dcol, (size_t)cs->OH * cs->OW, cs);
}

void nn_conv2d_forward(float *y, const float *x, const float *w,
                       const float *b, const nn_conv_shape *cs, float *col,
                       int relu)
{
    const int P = cs->OH * cs->OW, K = cs->C * cs->k * cs->k;
    const float *B = x;
    /* A 1x1 stride-1 unpadded convolution needs no im2col. */
    if (!(cs->k == 1 && cs->s == 1 && cs->p == 0)) {
        nn_im2col(col, x, cs);
        B = col;
    }
    for (int o = 0; o < cs->O; o++) {
        float bo = b ? b[o] : 0.0f, *yo = y + (size_t)o * P;
        for (int i = 0; i < P; i++) yo[i] = bo;
    }
    nn_gemm(0, 0, cs->O, P, K, 1.0f, w, K, B, P, 1.0f, y, P);
    if (relu)
        for (size_t i = 0; i < (size_t)cs->O * P; i++)
            if (!(y[i] > 0.0f)) y[i] = 0.0f;
}

void nn_conv2d_forward_ref(float *y, const float *x, const float *w,
                           const float *b, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    for (int o = 0; o < cs->O; o++)
        for (int oh = 0; oh < cs->OH; oh++)
            for (int ow = 0; ow < cs->OW; ow++) {
                double acc = b ? b[o] : 0.0;
                for (int c = 0; c < C; c++)
                    for (int ki = 0; ki < k; ki++)
                        for (int kj = 0; kj < k; kj++) {
                            int ih = oh * s - p + ki, iw = ow * s - p + kj;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            acc += (double)w[((o * C + c) * k + ki) * k + kj] *
                                   x[(c * H + ih) * W + iw];
                        }
                y[(o * cs->OH + oh) * cs->OW + ow] = (float)acc;
            }
}

void nn_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                        const float *x, const float *w,
                        const nn_conv_shape *cs, float *col, float *dcol)
{
    const int P = cs->OH * cs->OW, K = cs->C * cs->k * cs->k, O = cs->O;
    const int direct = cs->k == 1 && cs->s == 1 && cs->p == 0;
    const float *B = x;
    if (!direct) {
        nn_im2col(col, x, cs);
        B = col;
    }
    /* dw[O,K] += dy[O,P] col[K,P]^T */
    nn_gemm(0, 1, O, K, P, 1.0f, dy, P, B, P, 1.0f, dw, K);
    for (int o = 0; o < O; o++) {
        const float *d = dy + (size_t)o * P;
        float acc = 0.0f;
        for (int i = 0; i < P; i++) acc += d[i];
        db[o] += acc;
    }
    if (!dx) return;
    if (direct) {
        nn_gemm(1, 0, K, P, O, 1.0f, w, K, dy, P, 0.0f, dx, P);
        return;
    }
    /* dcol[K,P] = w[O,K]^T dy[O,P], scattered back onto the image. */
    nn_gemm(1, 0, K, P, O, 1.0f, w, K, dy, P, 0.0f, dcol, P);
    memset(dx, 0, sizeof(float) * cs->C * cs->H * cs->W);
    nn_col2im_add(dx, dcol, cs);
}

void nn_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy,
                            const float *x, const float *w,
                            const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    if (dx) memset(dx, 0, sizeof(float) * C * H * W);
    for (int o = 0; o < cs->O; o++)
        for (int oh = 0; oh < cs->OH; oh++)
            for (int ow = 0; ow < cs->OW; ow++) {
                float g = dy[(o * cs->OH + oh) * cs->OW + ow];
                db[o] += g;
                for (int c = 0; c < C; c++)
                    for (int ki = 0; ki < k; ki++)
                        for (int kj = 0; kj < k; kj++) {
                            int ih = oh * s - p + ki, iw = ow * s - p + kj;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            size_t wi = ((size_t)(o * C + c) * k + ki) * k + kj;
                            size_t xi = ((size_t)c * H + ih) * W + iw;
                            dw[wi] += g * x[xi];
                            if (dx) dx[xi] += g * w[wi];
                        }
            }
}

void nn_dense_forward(float *y, const float *x, const float *w, const float *b,
                      int n, int in, int out, int relu)
{
    for (int i = 0; i < n; i++)
        memcpy(y + (size_t)i * out, b, sizeof(float) * out);
    nn_gemm(0, 1, n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
    if (relu)
        for (size_t i = 0; i < (size_t)n * out; i++)
            if (!(y[i] > 0.0f)) y[i] = 0.0f;
}

void nn_dense_forward_ref(float *y, const float *x, const float *w,
                          const float *b, int n, int in, int out)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double acc = b[o];
            for (int j = 0; j < in; j++)
                acc += (double)x[(size_t)i * in + j] * w[(size_t)o * in + j];
            y[(size_t)i * out + o] = (float)acc;
        }
}

void nn_dense_backward(float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, int n, int in, int out)
{
    nn_gemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
    if (dx) nn_gemm(0, 0, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

void nn_dense_backward_ref(float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int n, int in,
                           int out)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            float g = dy[(size_t)i * out + o];
            db[o] += g;
            for (int j = 0; j < in; j++) dw[(size_t)o * in + j] += g * x[(size_t)i * in + j];
        }
    if (!dx) return;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < in; j++) {
            double acc = 0.0;
            for (int o = 0; o < out; o++)
                acc += (double)dy[(size_t)i * out + o] * w[(size_t)o * in + j];
            dx[(size_t)i * in + j] = (float)acc;
        }
}

void nn_maxpool_forward(float *y, int32_t *idx, const float *x, int C, int H,
                        int W, int k, int s, int OH, int OW)
{
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int best = (c * H + oh * s) * W + ow * s;
                float m = x[best];
                for (int ki = 0; ki < k; ki++)
                    for (int kj = 0; kj < k; kj++) {
                        int i = (c * H + oh * s + ki) * W + ow * s + kj;
                        if (x[i] > m) { m = x[i]; best = i; }
                    }
                int o = (c * OH + oh) * OW + ow;
                y[o] = m;
                if (idx) idx[o] = best;
            }
}

void nn_maxpool_backward(float *dx, const float *dy, const int32_t *idx,
                         int C, int H, int W, int OH, int OW)
{
    memset(dx, 0, sizeof(float) * C * H * W);
    for (int o = 0; o < C * OH * OW; o++) dx[idx[o]] += dy[o];
}

void nn_conv2d_forward_n(float *y, const float *x, const float *w,
                         const float *b, const nn_conv_shape *cs, int g,
                         float *col, float *tmp, int relu)
{
    const size_t P = (size_t)cs->OH * cs->OW, K = (size_t)cs->C * cs->k * cs->k;
    const size_t nin = (size_t)cs->C * cs->H * cs->W, nout = (size_t)cs->O * P, ld = P * g;
    if (g == 1) {
        nn_conv2d_forward(y, x, w, b, cs, col, relu);
        return;
    }
    for (int i = 0; i < g; i++) im2col_ld(col + i * P, ld, x + i * nin, cs);
    nn_gemm(0, 0, cs->O, (int)ld, (int)K, 1.0f, w, (int)K, col, (int)ld, 0.0f, tmp, (int)ld);
    /* [O, g*P] -> [g, O, P] with the bias (and ReLU). */
    for (int i = 0; i < g; i++)
        for (int o = 0; o < cs->O; o++) {
            const float *src = tmp + (size_t)o * ld + i * P;
            float *dst = y + i * nout + (size_t)o * P, bo = b ? b[o] : 0.0f;
            if (relu)
                for (size_t q = 0; q < P; q++) { float v = src[q] + bo; dst[q] = v > 0.0f ? v : 0.0f; }
            else
                for (size_t q = 0; q < P; q++) dst[q] = src[q] + bo;
        }
}

void nn_conv2d_backward_n(float *dx, float *dw, float *db, const float *dy,
                          const float *x, const float *w,
                          const nn_conv_shape *cs, int g, float *col,
                          float *dcol, float *tmp)
{
    const size_t P = (size_t)cs->OH * cs->OW, K = (size_t)cs->C * cs->k * cs->k;
    const size_t nin = (size_t)cs->C * cs->H * cs->W, nout = (size_t)cs->O * P, ld = P * g;
    if (g == 1) {
        nn_conv2d_backward(dx, dw, db, dy, x, w, cs, col, dcol);
        return;
    }
    /* dy [g, O, P] -> tmp [O, g*P]; bias gradient on the way. */
    for (int o = 0; o < cs->O; o++) {
        float acc = 0.0f;
        for (int i = 0; i < g; i++) {
            const float *src = dy + i * nout + (size_t)o * P;
            float *dst = tmp + (size_t)o * ld + i * P;
            for (size_t q = 0; q < P; q++) { dst[q] = src[q]; acc += src[q]; }
        }
        db[o] += acc;
    }
    for (int i = 0; i < g; i++) im2col_ld(col + i * P, ld, x + i * nin, cs);
    nn_gemm(0, 1, cs->O, (int)K, (int)ld, 1.0f, tmp, (int)ld, col, (int)ld, 1.0f, dw, (int)K);
    if (!dx) return;
    nn_gemm(1, 0, (int)K, (int)ld, cs->O, 1.0f, w, (int)K, tmp, (int)ld, 0.0f, dcol, (int)ld);
    memset(dx, 0, sizeof(float) * nin * g);
    for (int i = 0; i < g; i++) col2im_add_ld(dx + i * nin, dcol + i * P, ld, cs);
}
