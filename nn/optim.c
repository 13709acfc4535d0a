#include "nn/optim.h"

#include "nn/gemm.h"
#include "nn/simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct nn_opt {
    nn_opt_cfg cfg;
    size_t n;
    float *m, *v;   /* first and second moments (Adam), velocity (SGD) */
    uint8_t *decay; /* 1 where weight decay applies                     */
    long t;
};

void nn_opt_cfg_default(nn_opt_cfg *c, nn_opt_kind kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-7f;
    c->momentum = 0.9f;
}

nn_opt *nn_opt_create(const nn_net *net, const nn_opt_cfg *cfg)
{
    nn_opt *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->cfg = *cfg;
    o->n = net->nparams;
    o->m = calloc(o->n, sizeof(float));
    o->v = calloc(o->n, sizeof(float));
    o->decay = calloc(o->n, 1);
    if (!o->m || !o->v || !o->decay) {
        nn_opt_free(o);
        return NULL;
    }
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (L->kind == NN_DENSE || L->kind == NN_CONV2D) memset(o->decay + L->w_off, 1, L->nw);
    }
    return o;
}

void nn_opt_free(nn_opt *o)
{
    if (!o) return;
    free(o->m);
    free(o->v);
    free(o->decay);
    free(o);
}

void nn_opt_advance(nn_opt *o) { o->t++; }

/* One Adam step over n parameters, written so the compiler vectorises it
 * (a profile of LeNet training had the scalar loop at 7%): restrict
 * pointers, no branches (the decay flag is a 0/1 factor), and the square
 * root inline (the Makefile's -fno-math-errno). The arithmetic is the same
 * operations in the same order as the scalar loop's, so the results are
 * the same bit for bit. */
__attribute__((always_inline)) static inline void
adam_body(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
          size_t n, float b1, float b2, float step, float eps, const uint8_t *restrict decay,
          float lrwd)
{
    if (decay)
        for (size_t i = 0; i < n; i++) p[i] -= (float)decay[i] * lrwd * p[i];
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        /* Decoupled decay (AdamW) shrank the weight itself, above. */
        p[i] -= step * m[i] / (sqrtf(v[i]) + eps);
    }
}

static void adam_range(float *restrict p, float *restrict m, float *restrict v,
                       const float *restrict g, size_t n, float b1, float b2, float step, float eps,
                       const uint8_t *restrict decay, float lrwd)
{
    adam_body(p, m, v, g, n, b1, b2, step, eps, decay, lrwd);
}

#if NN_X86
/* The same loop compiled for AVX-512: 16 lanes, and above all 16 square
 * roots and divides an instruction (on SSE those bound the loop: 0.97 ns
 * a parameter with everything in L1; Adam was 9.5% of LeNet's training
 * profile). No FMA contraction in ISO C mode (the Makefile's -std=c11):
 * the same operations, the same bits. */
__attribute__((target("avx512f"))) static void
adam_range_avx512(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                  size_t n, float b1, float b2, float step, float eps,
                  const uint8_t *restrict decay, float lrwd)
{
    adam_body(p, m, v, g, n, b1, b2, step, eps, decay, lrwd);
}
#endif

void nn_opt_update_from(nn_opt *o, float *p, const float *g, float lr, size_t lo, size_t hi)
{
    const nn_opt_cfg *c = &o->cfg;
    float wd = c->weight_decay;
    if (hi > o->n) hi = o->n;
    if (lo >= hi) return;
    if (c->kind == NN_OPT_ADAM) {
        float b1 = c->beta1, b2 = c->beta2;
        float bc1 = 1.0f - powf(b1, (float)o->t), bc2 = 1.0f - powf(b2, (float)o->t);
        float step = lr * sqrtf(bc2) / bc1, eps = c->eps * sqrtf(bc2);
        void (*adam)(float *restrict, float *restrict, float *restrict, const float *restrict,
                     size_t, float, float, float, float, const uint8_t *restrict, float) =
            adam_range;
#if NN_X86
        if (nn_gemm_get_path() == NN_GEMM_PATH_AVX512) adam = adam_range_avx512;
#endif
        adam(p + lo, o->m + lo, o->v + lo, g, hi - lo, b1, b2, step, eps,
             wd > 0.0f ? o->decay + lo : NULL, lr * wd);
    } else {
        float mu = c->momentum;
        for (size_t i = lo; i < hi; i++) {
            float gi = g[i - lo] + (o->decay[i] ? wd * p[i] : 0.0f);
            o->v[i] = mu * o->v[i] + gi;
            p[i] -= lr * (c->nesterov ? gi + mu * o->v[i] : o->v[i]);
        }
    }
}

void nn_opt_update(nn_opt *o, float *p, const float *g, float lr, size_t lo, size_t hi)
{
    if (hi > o->n) hi = o->n;
    if (lo < hi) nn_opt_update_from(o, p, g + lo, lr, lo, hi);
}

float nn_sched_lr(const nn_sched *s, double t, int epochs)
{
    const double pi = 3.14159265358979323846;
    switch (s->kind) {
    case NN_SCHED_STEP:
        return s->lr * powf(s->gamma, floorf((float)t / (s->step > 0 ? s->step : 1.0f)));
    case NN_SCHED_EXP: return s->lr * powf(s->gamma, (float)t);
    case NN_SCHED_COSINE:
    case NN_SCHED_ONECYCLE: {
        double w = s->warmup, lo = s->lr * s->final;
        if (t < w && w > 0) {
            double start = s->kind == NN_SCHED_ONECYCLE ? s->lr / 25.0 : 0.0;
            return (float)(start + (s->lr - start) * t / w);
        }
        double span = epochs - w, u = span > 0 ? (t - w) / span : 1.0;
        if (u > 1) u = 1;
        return (float)(lo + (s->lr - lo) * 0.5 * (1.0 + cos(pi * u)));
    }
    default: return s->lr;
    }
}

int nn_sched_parse(const char *name, nn_sched_kind *out)
{
    static const char *names[] = {"const", "step", "exp", "cosine", "onecycle"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, names[i])) {
            *out = (nn_sched_kind)i;
            return 0;
        }
    return -1;
}
