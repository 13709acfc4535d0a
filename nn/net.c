/* net.c - architecture, parameters, workspaces, and the walk over the
 * layer list that forward and backward are: each layer's work is its
 * kernel pair in layers.h (conv.h for the convolution). */
#include "nn/err.h"
#include "nn/net.h"
#include "nn/amx.h"

#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nn/gemm.h"
#include "nn/simd.h"
#include "nn/layers.h"
#include "nn/ood.h"
#include "nn/rng.h"
#include "nn/wino.h"

static const char *kind_names[NN_LAYER_KINDS] = {"dense",   "conv2d",  "maxpool",   "relu",
                                                 "dropout", "flatten", "batchnorm", "deskew"};

/* ---- architecture text ------------------------------------------------ */

static int json_int(const cJSON *o, const char *key, int def, int lo, int hi, int *out, int li,
                    char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return nn_errf(err, errlen, "arch: layer %d: \"%s\" must be an integer in [%d, %d]", li,
                       key, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

/* lo and hi are doubles: as floats, a bound like 0.95 would sit below the
 * JSON value 0.95 and refuse the documented maximum. */
static int json_float(const cJSON *o, const char *key, float def, double lo, double hi, float *out,
                      int li, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return nn_errf(err, errlen, "arch: layer %d: \"%s\" must be a number in [%g, %g]", li, key,
                       lo, hi);
    *out = (float)v->valuedouble;
    return 0;
}

int nn_arch_parse(const char *json, nn_layer *layers, int *nlayers, char *err, size_t errlen)
{
    cJSON *root = cJSON_Parse(json);
    if (!root) return nn_errf(err, errlen, "arch: not valid JSON");
    int rc = -1;
    if (!cJSON_IsArray(root)) {
        nn_errf(err, errlen, "arch: must be a JSON array of layers");
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    if (n < 1 || n > NN_MAX_LAYERS) {
        nn_errf(err, errlen, "arch: %d layers (must be 1..%d)", n, NN_MAX_LAYERS);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(root, i);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
        nn_layer *L = &layers[i];
        memset(L, 0, sizeof *L);
        if (!cJSON_IsObject(o) || !cJSON_IsString(t)) {
            nn_errf(err, errlen, "arch: layer %d: needs an object with a \"type\" string", i);
            goto done;
        }
        int k = -1;
        for (int j = 0; j < NN_LAYER_KINDS; j++)
            if (!strcmp(t->valuestring, kind_names[j])) k = j;
        if (k < 0) {
            nn_errf(err, errlen, "arch: layer %d: unknown type \"%.32s\"", i, t->valuestring);
            goto done;
        }
        L->kind = (nn_kind)k;
        switch (L->kind) {
        case NN_DENSE:
            if (json_int(o, "out", -1, 1, 1 << 20, &L->out, i, err, errlen)) goto done;
            if (L->out < 1) {
                nn_errf(err, errlen, "arch: layer %d: dense needs \"out\"", i);
                goto done;
            }
            break;
        case NN_CONV2D:
            if (json_int(o, "out", -1, 1, 1 << 16, &L->out, i, err, errlen) ||
                json_int(o, "k", -1, 1, 64, &L->k, i, err, errlen) ||
                json_int(o, "stride", 1, 1, 64, &L->stride, i, err, errlen) ||
                json_int(o, "pad", 0, 0, 64, &L->pad, i, err, errlen))
                goto done;
            if (L->out < 1 || L->k < 1) {
                nn_errf(err, errlen, "arch: layer %d: conv2d needs \"out\" and \"k\"", i);
                goto done;
            }
            break;
        case NN_MAXPOOL:
            if (json_int(o, "k", -1, 1, 64, &L->k, i, err, errlen)) goto done;
            if (L->k < 1) {
                nn_errf(err, errlen, "arch: layer %d: maxpool needs \"k\"", i);
                goto done;
            }
            if (json_int(o, "stride", L->k, 1, 64, &L->stride, i, err, errlen)) goto done;
            break;
        case NN_DROPOUT:
            if (json_float(o, "p", 0.5f, 0.0, 0.95, &L->p, i, err, errlen)) goto done;
            break;
        case NN_BATCHNORM:
            if (json_float(o, "eps", 1e-5f, 1e-12, 1.0, &L->eps, i, err, errlen) ||
                json_float(o, "momentum", 0.1f, 0.0, 1.0, &L->momentum, i, err, errlen))
                goto done;
            break;
        default: break;
        }
    }
    *nlayers = n;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

/* The shortest decimal that reads back as the same float (0.2, not
 * 0.20000000298023224). */
static double tidy(float f)
{
    char b[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, f);
        if ((float)strtod(b, NULL) == f) break;
    }
    return strtod(b, NULL);
}

char *nn_arch_to_json(const nn_layer *layers, int nlayers)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    for (int i = 0; i < nlayers; i++) {
        const nn_layer *L = &layers[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "type", kind_names[L->kind]);
        switch (L->kind) {
        case NN_DENSE: cJSON_AddNumberToObject(o, "out", L->out); break;
        case NN_CONV2D:
            cJSON_AddNumberToObject(o, "out", L->out);
            cJSON_AddNumberToObject(o, "k", L->k);
            cJSON_AddNumberToObject(o, "stride", L->stride);
            cJSON_AddNumberToObject(o, "pad", L->pad);
            break;
        case NN_MAXPOOL:
            cJSON_AddNumberToObject(o, "k", L->k);
            cJSON_AddNumberToObject(o, "stride", L->stride);
            break;
        case NN_DROPOUT: cJSON_AddNumberToObject(o, "p", tidy(L->p)); break;
        case NN_BATCHNORM:
            cJSON_AddNumberToObject(o, "eps", tidy(L->eps));
            cJSON_AddNumberToObject(o, "momentum", tidy(L->momentum));
            break;
        default: break;
        }
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

/* ---- net ---------------------------------------------------------------- */

const char *nn_preprocess_default(const char *dataset)
{
    return dataset && !strcmp(dataset, "fashion-mnist") ? "fit" : "mnist";
}

int nn_preprocess_valid(const char *s) { return s && (!strcmp(s, "mnist") || !strcmp(s, "fit")); }

static void meta_default(nn_meta *m, int nclasses)
{
    memset(m, 0, sizeof *m);
    snprintf(m->dataset, sizeof m->dataset, "mnist");
    m->nclasses = nclasses;
    for (int i = 0; i < nclasses && i < NN_MAX_CLASSES; i++)
        snprintf(m->labels[i], NN_LABEL_MAX, "%d", i);
    m->input_mean = 0.0f;
    m->input_std = 1.0f;
    m->test_accuracy = -1.0;
    m->test_ece = -1.0;
    m->temperature = 1.0;
}

nn_net *nn_net_create(const nn_layer *layers, int nlayers, int c, int h, int w, const nn_meta *meta,
                      char *err, size_t errlen)
{
    if (nlayers < 1 || nlayers > NN_MAX_LAYERS) {
        nn_errf(err, errlen, "net: %d layers (must be 1..%d)", nlayers, NN_MAX_LAYERS);
        return NULL;
    }
    if (c < 1 || h < 1 || w < 1 || c > 4096 || h > 4096 || w > 4096) {
        nn_errf(err, errlen, "net: bad input shape [%d,%d,%d]", c, h, w);
        return NULL;
    }
    nn_net *net = calloc(1, sizeof *net);
    if (!net) {
        nn_errf(err, errlen, "net: out of memory");
        return NULL;
    }
    net->nlayers = nlayers;
    net->in_c = c;
    net->in_h = h;
    net->in_w = w;
    memcpy(net->layers, layers, sizeof(nn_layer) * nlayers);
    size_t np = 0, ns = 0;
    for (int i = 0; i < nlayers; i++) {
        nn_layer *L = &net->layers[i];
        L->in_c = c;
        L->in_h = h;
        L->in_w = w;
        L->nw = L->nb = 0;
        switch (L->kind) {
        case NN_DENSE:
            if (h != 1 || w != 1) {
                nn_errf(err, errlen,
                        "net: layer %d: dense on a %dx%d map needs a flatten before it", i, h, w);
                goto bad;
            }
            L->w_off = np;
            L->nw = (size_t)L->out * c;
            np += L->nw;
            L->b_off = np;
            L->nb = L->out;
            np += L->nb;
            c = L->out;
            break;
        case NN_CONV2D: {
            int oh = (h + 2 * L->pad - L->k), ow = (w + 2 * L->pad - L->k);
            if (oh < 0 || ow < 0 || L->pad >= L->k) {
                nn_errf(err, errlen, "net: layer %d: conv2d k=%d pad=%d does not fit a %dx%d input",
                        i, L->k, L->pad, h, w);
                goto bad;
            }
            L->w_off = np;
            L->nw = (size_t)L->out * c * L->k * L->k;
            np += L->nw;
            L->b_off = np;
            L->nb = L->out;
            np += L->nb;
            c = L->out;
            h = oh / L->stride + 1;
            w = ow / L->stride + 1;
            break;
        }
        case NN_MAXPOOL:
            if (L->k > h || L->k > w) {
                nn_errf(err, errlen, "net: layer %d: maxpool k=%d larger than the %dx%d input", i,
                        L->k, h, w);
                goto bad;
            }
            h = (h - L->k) / L->stride + 1;
            w = (w - L->k) / L->stride + 1;
            break;
        case NN_FLATTEN:
            c = c * h * w;
            h = w = 1;
            break;
        case NN_DESKEW:
            /* Backward treats the shear as fixed: exact only for the input. */
            if (i != 0) {
                nn_errf(err, errlen, "net: layer %d: deskew must be the first layer", i);
                goto bad;
            }
            break;
        case NN_BATCHNORM:
            L->w_off = np;
            L->nw = c;
            np += c;
            L->b_off = np;
            L->nb = c;
            np += c;
            L->s_off = ns;
            ns += 2 * (size_t)c;
            break;
        default: break;
        }
        L->out_c = c;
        L->out_h = h;
        L->out_w = w;
        if ((size_t)c * h * w > (64u << 20)) {
            nn_errf(err, errlen, "net: layer %d: activation too large", i);
            goto bad;
        }
    }
    if (net->layers[nlayers - 1].out_h != 1 || net->layers[nlayers - 1].out_w != 1 || c < 2 ||
        c > NN_MAX_CLASSES) {
        nn_errf(err, errlen, "net: the last layer must give 2..%d class scores (gives [%d,%d,%d])",
                NN_MAX_CLASSES, c, h, w);
        goto bad;
    }
    if (np > (256u << 20)) {
        nn_errf(err, errlen, "net: %zu parameters is too many", np);
        goto bad;
    }
    net->nparams = np;
    net->nstats = ns;
    net->params = calloc(np ? np : 1, sizeof(float));
    net->stats = calloc(ns ? ns : 1, sizeof(float));
    if (!net->params || !net->stats) {
        nn_errf(err, errlen, "net: out of memory");
        goto bad;
    }
    for (int i = 0; i < nlayers; i++) {
        nn_layer *L = &net->layers[i];
        if (L->kind != NN_BATCHNORM) continue;
        for (size_t j = 0; j < L->nw; j++) net->params[L->w_off + j] = 1.0f;
        for (int j = 0; j < L->out_c; j++) net->stats[L->s_off + L->out_c + j] = 1.0f;
    }
    if (meta) {
        net->meta = *meta;
        if (meta->nclasses != c) {
            nn_errf(err, errlen, "net: metadata has %d classes, the architecture gives %d",
                    meta->nclasses, c);
            goto bad;
        }
    } else {
        meta_default(&net->meta, c);
    }
    net->meta.preprocess[sizeof net->meta.preprocess - 1] = '\0';
    if (!net->meta.preprocess[0])
        snprintf(net->meta.preprocess, sizeof net->meta.preprocess, "%s",
                 nn_preprocess_default(net->meta.dataset));
    if (!nn_preprocess_valid(net->meta.preprocess)) {
        nn_errf(err, errlen, "net: preprocess \"%.15s\" is not \"mnist\" or \"fit\"",
                net->meta.preprocess);
        goto bad;
    }
    /* A zeroed nn_meta (callers that fill only what they know) means 1. */
    if (net->meta.temperature == 0.0) net->meta.temperature = 1.0;
    if (!(net->meta.temperature >= NN_TEMPERATURE_MIN &&
          net->meta.temperature <= NN_TEMPERATURE_MAX)) {
        nn_errf(err, errlen, "net: temperature must be a number in [%g, %g]", NN_TEMPERATURE_MIN,
                NN_TEMPERATURE_MAX);
        goto bad;
    }
    if (!(net->meta.input_std > 0.0f)) {
        nn_errf(err, errlen, "net: input_std must be > 0");
        goto bad;
    }
    return net;
bad:
    nn_net_free(net);
    return NULL;
}

void nn_net_free(nn_net *net)
{
    if (!net) return;
    nn_net_unplan(net);
    nn_ood_free(net->ood);
    free(net->params);
    free(net->stats);
    free(net);
}

int nn_net_outputs(const nn_net *net) { return net->layers[net->nlayers - 1].out_c; }

/* He-uniform for weights feeding a ReLU (directly or through batch norm),
 * Glorot-uniform otherwise (the classifier); biases zero. */
void nn_net_init(nn_net *net, uint64_t seed)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    for (int i = 0; i < net->nlayers; i++) {
        nn_layer *L = &net->layers[i];
        if (L->kind != NN_DENSE && L->kind != NN_CONV2D) continue;
        int kk = L->kind == NN_CONV2D ? L->k * L->k : 1;
        double fan_in = (double)L->in_c * kk, fan_out = (double)L->out * kk;
        int relu_next = 0;
        for (int j = i + 1; j < net->nlayers; j++) {
            if (net->layers[j].kind == NN_RELU) {
                relu_next = 1;
                break;
            }
            if (net->layers[j].kind != NN_BATCHNORM && net->layers[j].kind != NN_DROPOUT) break;
        }
        double lim = relu_next ? sqrt(6.0 / fan_in) : sqrt(6.0 / (fan_in + fan_out));
        float *wp = net->params + L->w_off;
        for (size_t j = 0; j < L->nw; j++) wp[j] = (float)((2.0 * nn_rng_uniform(&r) - 1.0) * lim);
        memset(net->params + L->b_off, 0, sizeof(float) * L->nb);
    }
}

uint64_t nn_net_macs(const nn_net *net)
{
    uint64_t m = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (L->kind == NN_DENSE)
            m += (uint64_t)L->in_c * L->out;
        else if (L->kind == NN_CONV2D)
            m += (uint64_t)L->out_c * L->out_h * L->out_w * L->in_c * L->k * L->k;
    }
    return m;
}

void nn_net_summary(const nn_net *net, char *buf, size_t buflen)
{
    size_t used = 0;
    if (!buflen) return;
    buf[0] = 0;
    for (int i = 0; i < net->nlayers && used < buflen; i++) {
        const nn_layer *L = &net->layers[i];
        char part[64];
        switch (L->kind) {
        case NN_DENSE: snprintf(part, sizeof part, "dense(%d)", L->out); break;
        case NN_CONV2D:
            if (L->stride != 1 || L->pad)
                snprintf(part, sizeof part, "conv(%d,%dx%d,s%d,p%d)", L->out, L->k, L->k, L->stride,
                         L->pad);
            else
                snprintf(part, sizeof part, "conv(%d,%dx%d)", L->out, L->k, L->k);
            break;
        case NN_MAXPOOL: snprintf(part, sizeof part, "maxpool(%d)", L->k); break;
        case NN_DROPOUT: snprintf(part, sizeof part, "dropout(%g)", L->p); break;
        case NN_BATCHNORM: snprintf(part, sizeof part, "bn"); break;
        default: snprintf(part, sizeof part, "%s", kind_names[L->kind]); break;
        }
        int k = snprintf(buf + used, buflen - used, "%s%s", i ? "-" : "", part);
        if (k < 0) break;
        used += (size_t)k;
    }
}

/* ---- inference plan ----------------------------------------------------- */

static void conv_shape(nn_conv_shape *cs, const nn_layer *L);

struct nn_plan {
    float *u;                     /* Winograd weights of all layers, one block */
    size_t u_off[NN_MAX_LAYERS];  /* layer i's [16 or 36, C, O] at u + u_off[i] */
    int wino[NN_MAX_LAYERS];      /* layer i runs by Winograd F(mxm,3x3): m, or 0 */
    float *pw;                    /* directly run layers' packed weights, one block */
    size_t pw_off[NN_MAX_LAYERS]; /* layer i's at pw + pw_off[i] */
    int packed[NN_MAX_LAYERS];    /* 1 where layer i has them */
    int pw_path;                  /* the kernel path they were packed for */
    nn_amx *amx;                  /* BF16 precision: layers [amx_i0, amx_i1) on AMX */
    int amx_i0, amx_i1, amx_convs;
};

void nn_net_unplan(nn_net *net)
{
    if (!net || !net->plan) return;
    free(net->plan->u);
    free(net->plan->pw);
    nn_amx_free(net->plan->amx);
    free(net->plan);
    net->plan = NULL;
}

/* The chain of convolutions BF16 precision runs on AMX (nn/amx.h): from
 * the first convolution, convolutions joined only by ReLU and dropout
 * (nothing at inference), as long as each fits; at least two, or the
 * chain is not worth its conversions. Returns the number of
 * convolutions, filling layers[] and [*i0, *i1). */
static int amx_chain(const nn_net *net, nn_amx_layer *layers, int *i0, int *i1)
{
    int n = 0, i = 0;
    while (i < net->nlayers && net->layers[i].kind != NN_CONV2D) i++;
    *i0 = i;
    for (; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (L->kind == NN_RELU && n > 0) {
            layers[n - 1].relu = 1;
            continue;
        }
        if (L->kind == NN_DROPOUT && n > 0) continue;
        if (L->kind != NN_CONV2D || n == NN_MAX_LAYERS) break;
        nn_conv_shape cs;
        conv_shape(&cs, L);
        if (n == 0 ? !nn_amx_first_fits(&cs) : !nn_amx_next_fits(&cs)) break;
        layers[n] = (nn_amx_layer){
            .cs = cs, .w = net->params + L->w_off, .b = net->params + L->b_off, .relu = 0};
        n++;
    }
    *i1 = i;
    return n >= 2 ? n : 0;
}

#define PLAN_F4_MIN_TILES 5
/* ... and only on CPUs with at least this much L2 a core (see nn_net_plan). */
#define PLAN_F2_MIN_L2 ((size_t)2 << 20)

static size_t plan_l2_set; /* nn_net_plan_set_l2; 0: ask the system */

void nn_net_plan_set_l2(size_t bytes) { plan_l2_set = bytes; }

/* One core's L2 in bytes, 0 when the system does not say. */
static size_t plan_l2(void)
{
    if (plan_l2_set) return plan_l2_set;
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? (size_t)v : 0;
#else
    return 0;
#endif
}

/* A block that starts on a 64-byte line (its size in floats rounded up
 * to whole lines, round16): the packed weights' rows of 16 floats ([K][O]
 * for the kernels that skip zero inputs) are then single cache lines,
 * where a block from malloc (16-byte aligned) split each of their loads
 * in two. So are the Winograd weights' panel rows, and the activations'
 * and the scratch's vectors of channels: with those three from malloc the
 * default CNN's batch-1 pass took 128.5-130.9 us against 122.1-122.5 on
 * AVX-512, 137.9-140.9 against 129.1-130.1 capped to AVX2 (three pairs). */
static float *alloc_lines(size_t floats)
{
    return aligned_alloc(64, sizeof(float) * round16(floats));
}

int nn_net_plan(nn_net *net, char *err, size_t errlen)
{
    nn_net_unplan(net);
    struct nn_plan *pl = calloc(1, sizeof *pl);
    if (!pl) return nn_errf(err, errlen, "plan: out of memory");
    /* A forward pass at batch 1 reads every layer's weights once, so it
     * runs fastest when they all stay in L2 from one pass to the next.
     * Where the direct kernel for few outputs takes a layer (its
     * Winograd weights would be 2.5 times its own), the plan keeps it
     * direct, and then runs layers of fewer than PLAN_F4_MIN_TILES
     * F(4x4) tiles by F(2x2) (less than half the transformed weights for
     * 1.8 times the multiplies). The default CNN on the AMX Xeon (2 MiB
     * L2; 2026-12-03, best of 20 x 100 batch-1 passes, ten rounds): 337
     * -> 277 us median, faster in 9 of 10; the 4x4 layer direct alone, or
     * F(2x2) alone, did not help. With 1 MiB of L2 (Zen 5 EPYC) the
     * weights stream from L3 either way, and the fewer multiplies win:
     * F(4x4) for the CNN's 8x8 layer took the pass from 92.2 to 90.5 us
     * median, faster in 92 of 100 interleaved rounds of 200 test
     * images. So F(2x2) only where L2 holds PLAN_F2_MIN_L2 (or the system
     * does not say). Training keeps nn_wino_tile's choice (its chunks of
     * images reuse the weights). */
    const size_t l2 = plan_l2();
    int few = 0;
    for (int i = 0; i < net->nlayers; i++) {
        nn_conv_shape cs;
        if (net->layers[i].kind != NN_CONV2D) continue;
        conv_shape(&cs, &net->layers[i]);
        few |= nn_wino_fits(&cs) && nn_conv2d_few_outputs(&cs);
    }
    few &= l2 == 0 || l2 >= PLAN_F2_MIN_L2;
    size_t total = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (L->kind != NN_CONV2D) continue;
        nn_conv_shape cs;
        conv_shape(&cs, L);
        if (!nn_wino_fits(&cs) || nn_conv2d_few_outputs(&cs)) continue;
        pl->wino[i] = nn_wino_tile(&cs);
        if (few && pl->wino[i] == 4 && nn_wino_tiles(&cs, 4) < PLAN_F4_MIN_TILES) pl->wino[i] = 2;
        pl->u_off[i] = total;
        total += nn_wino_weights_size(&cs, pl->wino[i]);
    }
    /* The layers run directly whose kernel packs its weights (conv.h)
     * get them packed here, once. */
    size_t ptotal = 0;
    for (int i = 0; i < net->nlayers; i++) {
        nn_conv_shape cs;
        if (net->layers[i].kind != NN_CONV2D || pl->wino[i]) continue;
        conv_shape(&cs, &net->layers[i]);
        size_t n = nn_conv2d_packed_size(&cs);
        if (!n) continue;
        pl->packed[i] = 1;
        pl->pw_off[i] = ptotal;
        ptotal += round16(n);
    }
    pl->pw_path = nn_gemm_get_path();
    if ((total && !(pl->u = alloc_lines(total))) || (ptotal && !(pl->pw = alloc_lines(ptotal)))) {
        free(pl->u);
        free(pl);
        return nn_errf(err, errlen, "plan: out of memory");
    }
    for (int i = 0; i < net->nlayers; i++) {
        nn_conv_shape cs;
        if (!pl->packed[i]) continue;
        conv_shape(&cs, &net->layers[i]);
        nn_conv2d_pack_weights(pl->pw + pl->pw_off[i], net->params + net->layers[i].w_off, &cs);
    }
    for (int i = 0; i < net->nlayers; i++) {
        if (!pl->wino[i]) continue;
        nn_conv_shape cs;
        conv_shape(&cs, &net->layers[i]);
        nn_wino_weights(pl->u + pl->u_off[i], net->params + net->layers[i].w_off, &cs, pl->wino[i]);
    }
    if (nn_precision_get() == NN_PREC_BF16 && nn_amx_supported()) {
        nn_amx_layer chain[NN_MAX_LAYERS];
        int n = amx_chain(net, chain, &pl->amx_i0, &pl->amx_i1);
        if (n && !(pl->amx = nn_amx_create(chain, n, err, errlen))) {
            free(pl->u);
            free(pl->pw);
            free(pl);
            return -1;
        }
        pl->amx_convs = pl->amx ? n : 0;
    }
    net->plan = pl;
    return 0;
}

int nn_net_plan_bf16_layers(const nn_net *net) { return net->plan ? net->plan->amx_convs : 0; }

int nn_net_plan_wino(const nn_net *net, int i)
{
    return net->plan && i >= 0 && i < net->nlayers ? net->plan->wino[i] : 0;
}

int nn_net_plan_packed_layers(const nn_net *net)
{
    int n = 0;
    for (int i = 0; net->plan && i < net->nlayers; i++) n += net->plan->packed[i];
    return n;
}

int nn_net_plan_wino_layers(const nn_net *net)
{
    int n = 0;
    for (int i = 0; i < net->nlayers; i++) n += nn_net_plan_wino(net, i) != 0;
    return n;
}

/* ---- workspaces --------------------------------------------------------- */

struct nn_ws {
    int max_batch, training;
    int nl;
    float *act[NN_MAX_LAYERS + 1];  /* act[i] is the input of layer i        */
    float *dact[NN_MAX_LAYERS + 1]; /* gradients, same shapes (training)     */
    float *dgrad[2];                /* the two buffers dact[i] lie in        */
    float *bn_out;                  /* batch norms' outputs (bn_recomputed)  */
    int own[NN_MAX_LAYERS + 1];     /* act[i] owns its memory                */
    int32_t *pool_idx[NN_MAX_LAYERS];
    uint8_t *mask[NN_MAX_LAYERS];  /* dropout keep masks                    */
    float *bn_mean[NN_MAX_LAYERS]; /* batch norm batch mean per channel     */
    float *bn_inv[NN_MAX_LAYERS];  /* batch norm 1/std per channel          */
    float *scratch;                /* conv scratch for a group of images    */
    void *amx_scratch;             /* the plan's AMX chain (nn_amx_forward) */
    int group[NN_MAX_LAYERS];      /* conv: images per GEMM                 */
    int wino[NN_MAX_LAYERS];       /* conv: scratch fits the plan's Winograd */
    /* Training by Winograd (nn_wino_fits): the forward, the input
     * gradient and then the weight gradient (which needs no transformed
     * weights). The weights change every step, so each step transforms
     * them here, or once for all shards (nn_ws_wino_share): layer i's
     * forward U at wino_u + wu_off[i], then the input gradient's U
     * (nn_wino_dx_weights). */
    float *wino_u;
    const float *wu_src; /* where the step's transforms are read: wino_u, or
                          * a shared set nn_ws_wino_weights fills (wu_ext) */
    int wu_ext;
    size_t wu_off[NN_MAX_LAYERS];
    int wtrain[NN_MAX_LAYERS]; /* 1: forward; 2: forward and input gradient */
    /* Layers whose forward skips zero inputs (nn_conv2d_skips_zeros)
     * run it in training too, on this step's packed weights at wu_src +
     * pt_off[i] (after the layer's Winograd U, whose forward part they
     * then leave unused). */
    int ptrain[NN_MAX_LAYERS];
    size_t pt_off[NN_MAX_LAYERS];
    int wino_on;  /* nn_ws_use_wino                            */
    float *probs; /* softmax of the last forward_train     */
    const uint8_t *labels;
    float ls;
    int n;
    float oe_weight; /* outlier exposure: weight of the outliers' mean loss  */
    int oe_energy;   /* nn_ws_set_energy_margins: on, and its margins         */
    float m_in, m_out;
    float w_in, w_out;       /* per-image loss weights of the last forward_train */
    int fuse[NN_MAX_LAYERS]; /* layer i fuses the ReLU at i+1         */
    double *timer;           /* per-layer seconds (benchmarks), or NULL */
    int input_grad;          /* backward computes dact[0] too          */
    int df_split, df_sub;    /* depth-first prefix (depth_first_plan)   */
    int df_on;               /* nn_ws_set_depth_first                   */
};

/* Output columns per conv GEMM to aim for: enough panels that packing the
 * weights once per GEMM is amortised; more only grows the scratch. */
#define CONV_GROUP_COLS 4096

static void conv_shape(nn_conv_shape *cs, const nn_layer *L)
{
    cs->C = L->in_c;
    cs->H = L->in_h;
    cs->W = L->in_w;
    cs->O = L->out;
    cs->k = L->k;
    cs->s = L->stride;
    cs->p = L->pad;
    cs->OH = L->out_h;
    cs->OW = L->out_w;
}

static size_t layer_out(const nn_layer *L) { return (size_t)L->out_c * L->out_h * L->out_w; }
static size_t layer_in(const nn_layer *L) { return (size_t)L->in_c * L->in_h * L->in_w; }

/* ReLU, dropout and flatten work in place: their output shares the input's
 * buffer. Backward needs neither value (ReLU's mask is "output > 0"). */
static int in_place(const nn_layer *L)
{
    return L->kind == NN_RELU || L->kind == NN_DROPOUT || L->kind == NN_FLATTEN;
}

/* Inference of a batch runs layer by layer, so each layer's weights are
 * read once per batch; but a layer's activations for the whole batch then
 * leave L2 between the layer that writes them and the one that reads them.
 * Where activations are large and weights small (the first convolutions)
 * that costs more than it saves: the big CNN's 24x24 and 12x12 layers took
 * up to a third longer per image at 16 images than at one. So layers up to
 * the last one whose input exceeds DF_INPUT_BYTES per image (and the
 * element-wise layers right after it) run depth-first, df_sub images at a
 * time (as many as fit DF_SUB_BYTES of one layer's input and output), and
 * the rest on the whole batch. mnist-eval of the default CNN on one thread
 * (batches of 128), ten pairs: CPU time 0.87 of layer by layer. */
#define DF_INPUT_BYTES (64 * 1024)
#define DF_SUB_BYTES (256 * 1024)

static int elementwise(const nn_layer *L)
{
    return L->kind == NN_RELU || L->kind == NN_DROPOUT || L->kind == NN_BATCHNORM;
}

static void depth_first_plan(const nn_net *net, int *split, int *sub)
{
    int last = -1;
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (sizeof(float) * layer_in(L) > DF_INPUT_BYTES) last = i;
    }
    *split = *sub = 0;
    if (last < 0) return;
    int s = last + 1;
    while (s < net->nlayers && elementwise(&net->layers[s])) s++;
    size_t big = 1;
    for (int i = 0; i < s; i++) {
        const nn_layer *L = &net->layers[i];
        size_t b = sizeof(float) * (layer_in(L) + layer_out(L));
        if (b > big) big = b;
    }
    *split = s;
    *sub = DF_SUB_BYTES / big > 0 ? (int)(DF_SUB_BYTES / big) : 1;
}

/* The layer after i past those that work in place (ReLU, dropout,
 * flatten), or -1. */
static int next_not_in_place(const nn_net *net, int i)
{
    int j = i + 1;
    while (j < net->nlayers && in_place(&net->layers[j])) j++;
    return j < net->nlayers ? j : -1;
}

/* In training, batch norm i's output is not kept: it goes to one buffer
 * all of them share (ws->bn_out), read by the layers in place after it
 * and then by a convolution or dense layer, and the backward recomputes
 * it for that layer's weight gradient (nn_batchnorm_output, then the
 * dropouts' stored masks) from the batch norm's input, which its own
 * backward reads next. Kept, the big CNN's batch-norm outputs were half
 * a thread's activations (7 MB at batch 32), written each step into
 * memory untouched since the last and read back from DRAM. */
static int bn_recomputed(const nn_net *net, int i)
{
    if (net->layers[i].kind != NN_BATCHNORM) return 0;
    const int j = next_not_in_place(net, i);
    return j >= 0 && (net->layers[j].kind == NN_CONV2D || net->layers[j].kind == NN_DENSE);
}

nn_ws *nn_ws_create(const nn_net *net, int max_batch, int training)
{
    if (max_batch < 1) return NULL;
    nn_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->max_batch = max_batch;
    ws->oe_weight = 1.0f;
    ws->training = training;
    ws->nl = net->nlayers;
    size_t B = (size_t)max_batch, in0 = (size_t)net->in_c * net->in_h * net->in_w;
    size_t scrmax = 0, wu_total = 0;
    ws->wino_on = 1;
    ws->df_on = 1;
    depth_first_plan(net, &ws->df_split, &ws->df_sub);
    ws->act[0] = alloc_lines(B * in0);
    ws->own[0] = 1;
    if (!ws->act[0]) goto bad;
    if (training) {
        /* Gradients in two buffers, taken in turn down the layers (an
         * in-place layer's the same as the one above it): a layer's
         * backward reads the one above and writes its own, and nothing
         * else outlives a layer. Each layer's own buffer had its
         * gradient written into memory not touched for a step, fetched
         * from DRAM to be overwritten; the two buffers stay in cache. */
        size_t big = in0;
        for (int i = 0; i < net->nlayers; i++)
            if (layer_out(&net->layers[i]) > big) big = layer_out(&net->layers[i]);
        if (!(ws->dgrad[0] = alloc_lines(B * big))) goto bad;
        if (!(ws->dgrad[1] = alloc_lines(B * big))) goto bad;
        int b = 0;
        ws->dact[net->nlayers] = ws->dgrad[b];
        for (int i = net->nlayers - 1; i >= 0; i--) {
            if (!in_place(&net->layers[i])) b = 1 - b;
            ws->dact[i] = ws->dgrad[b];
        }
        size_t bn = 0;
        for (int i = 0; i < net->nlayers; i++)
            if (bn_recomputed(net, i) && layer_out(&net->layers[i]) > bn)
                bn = layer_out(&net->layers[i]);
        if (bn && !(ws->bn_out = alloc_lines(B * bn))) goto bad;
    }
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        size_t no = layer_out(L);
        if (in_place(L)) {
            ws->act[i + 1] = ws->act[i];
        } else if (training && bn_recomputed(net, i)) {
            ws->act[i + 1] = ws->bn_out;
        } else {
            ws->own[i + 1] = 1;
            if (!(ws->act[i + 1] = alloc_lines(B * no))) goto bad;
        }
        if (L->kind == NN_CONV2D) {
            nn_conv_shape cs;
            conv_shape(&cs, L);
            size_t P = (size_t)L->out_h * L->out_w, g = (CONV_GROUP_COLS + P - 1) / P;
            if (g > B) g = B;
            ws->group[i] = (int)g;
            size_t sz = nn_conv2d_scratch_size(&cs, (int)g, training);
            if (sz > scrmax) scrmax = sz;
            if (net->plan && net->plan->wino[i]) {
                /* Winograd takes the whole batch (it chunks it itself). */
                ws->wino[i] = 1;
                sz = nn_wino_scratch_size(&cs, max_batch, net->plan->wino[i]);
                if (sz > scrmax) scrmax = sz;
            }
            if (training && nn_wino_fits(&cs)) {
                ws->wtrain[i] = nn_wino_dx_fits(&cs) ? 2 : 1;
                const int m = nn_wino_tile(&cs);
                ws->wu_off[i] = wu_total;
                wu_total += nn_wino_weights_size(&cs, m) + nn_wino_dx_weights_size(&cs);
                if (nn_conv2d_skips_zeros(&cs)) {
                    ws->ptrain[i] = 1;
                    ws->pt_off[i] = wu_total = round16(wu_total);
                    wu_total += nn_conv2d_packed_size(&cs);
                }
                sz = nn_wino_scratch_size(&cs, max_batch, m);
                if (sz > scrmax) scrmax = sz;
                sz = nn_wino_dx_scratch_size(&cs, max_batch);
                if (sz > scrmax) scrmax = sz;
                if (nn_wino_dw_fits(&cs)) {
                    sz = nn_wino_dw_scratch_size(&cs, max_batch);
                    if (sz > scrmax) scrmax = sz;
                }
            }
        }
        /* conv/dense/batch norm + ReLU in one pass, training too: nothing
         * reads the pre-ReLU values (backward needs the layers' inputs,
         * from which batch norm recomputes its xhat, and the ReLU's
         * output, which shares the buffer). */
        if ((L->kind == NN_CONV2D || L->kind == NN_DENSE || L->kind == NN_BATCHNORM) &&
            i + 1 < net->nlayers && net->layers[i + 1].kind == NN_RELU)
            ws->fuse[i] = 1;
        if (!training) continue;
        if (L->kind == NN_MAXPOOL && !(ws->pool_idx[i] = malloc(sizeof(int32_t) * B * no)))
            goto bad;
        if (L->kind == NN_DROPOUT && !(ws->mask[i] = malloc(B * no))) goto bad;
        if (L->kind == NN_BATCHNORM) {
            if (!(ws->bn_mean[i] = malloc(sizeof(float) * L->out_c))) goto bad;
            if (!(ws->bn_inv[i] = malloc(sizeof(float) * L->out_c))) goto bad;
        }
    }
    if (scrmax && !(ws->scratch = alloc_lines(scrmax))) goto bad;
    if (!training && net->plan && net->plan->amx) {
        size_t sz = (nn_amx_scratch_size(net->plan->amx) + 63) / 64 * 64;
        if (!(ws->amx_scratch = aligned_alloc(64, sz))) goto bad;
        memset(ws->amx_scratch, 0, sz); /* the borders stay zero */
        /* The chain goes image by image: a depth-first prefix covers it. */
        if (ws->df_split < net->plan->amx_i1) ws->df_split = net->plan->amx_i1;
        if (ws->df_sub < 1) ws->df_sub = max_batch;
    }
    if (wu_total && !(ws->wino_u = alloc_lines(wu_total))) goto bad;
    ws->wu_src = ws->wino_u;
    if (training && !(ws->probs = malloc(sizeof(float) * B * nn_net_outputs(net)))) goto bad;
    return ws;
bad:
    nn_ws_free(ws);
    return NULL;
}

void nn_ws_free(nn_ws *ws)
{
    if (!ws) return;
    for (int i = 0; i <= ws->nl; i++)
        if (ws->own[i]) free(ws->act[i]);
    free(ws->dgrad[0]);
    free(ws->dgrad[1]);
    free(ws->bn_out);
    for (int i = 0; i < ws->nl; i++) {
        free(ws->pool_idx[i]);
        free(ws->mask[i]);
        free(ws->bn_mean[i]);
        free(ws->bn_inv[i]);
    }
    free(ws->scratch);
    free(ws->amx_scratch);
    free(ws->wino_u);
    free(ws->probs);
    free(ws);
}

void nn_ws_want_input_grad(nn_ws *ws, int on) { ws->input_grad = on != 0; }

const float *nn_ws_input_grad(const nn_ws *ws) { return ws->input_grad ? ws->dact[0] : NULL; }

void nn_ws_set_timer(nn_ws *ws, double *t) { ws->timer = t; }

void nn_ws_use_wino(nn_ws *ws, int on) { ws->wino_on = on != 0; }

void nn_ws_wino_share(nn_ws *ws, const nn_ws *from)
{
    ws->wu_src = from->wino_u;
    ws->wu_ext = 1;
}

/* Where layer i's input-gradient U starts in the transforms. */
static size_t wino_dx_at(const nn_ws *ws, int i, const nn_conv_shape *cs)
{
    return ws->wu_off[i] + nn_wino_weights_size(cs, nn_wino_tile(cs));
}

/* Layer i trains its forward by the kernel that skips zero inputs: set
 * up so, and still on the kernel path that packs for it. */
static int pt_on(const nn_ws *ws, int i, const nn_conv_shape *cs)
{
    return ws->ptrain[i] && nn_conv2d_skips_zeros(cs);
}

/* Convolution j trains its forward by Winograd (nn_wino_forward_nl on
 * this step's transforms); its weight gradient (nn_wino_dw_n, which
 * needs no transforms: also where the forward skips zeros instead). */
static int wino_fwd_train(const nn_ws *ws, int j, const nn_conv_shape *cs)
{
    return ws->training && ws->wtrain[j] && ws->wino_on && !pt_on(ws, j, cs);
}
static int wino_dw_train(const nn_ws *ws, int j, const nn_conv_shape *cs)
{
    return ws->training && ws->wtrain[j] && ws->wino_on && nn_wino_dw_fits(cs);
}

/* The batch norm whose output (with its fused ReLU, nothing else
 * between) is convolution j's input, where that output is not kept
 * (bn_recomputed): its index, else -1. Such a convolution, where it runs
 * by Winograd, reads the batch norm's input and applies it as it packs
 * (nn_bn_in), in the forward and the weight gradient, so that output is
 * never written. */
static int bn_before(const nn_net *net, int j)
{
    if (net->layers[j].kind != NN_CONV2D) return -1;
    int i = j - 1;
    if (i >= 0 && net->layers[i].kind == NN_RELU) i--;
    return i >= 0 && net->layers[i].kind == NN_BATCHNORM && bn_recomputed(net, i) ? i : -1;
}

/* The nn_bn_in of batch norm i (training: its saved mean and inv). */
static nn_bn_in bn_in_of(const nn_net *net, const nn_ws *ws, int i)
{
    const nn_layer *B = &net->layers[i];
    return (nn_bn_in){ws->bn_mean[i], ws->bn_inv[i], net->params + B->w_off, net->params + B->b_off,
                      ws->fuse[i]};
}

/* Batch norm i's training forward leaves its output to the convolution
 * after it (bn_before). */
static int bn_output_skipped(const nn_net *net, const nn_ws *ws, int i)
{
    const int j = next_not_in_place(net, i);
    if (j < 0 || bn_before(net, j) != i) return 0;
    nn_conv_shape cs;
    conv_shape(&cs, &net->layers[j]);
    return wino_fwd_train(ws, j, &cs);
}

/* Layer i's transforms into ws->wino_u (part part of nparts): the
 * forward's U and, where it trains its input gradient by Winograd too,
 * that one's. */
static void wino_layer_weights(const nn_net *net, nn_ws *ws, int i, int part, int nparts)
{
    const nn_layer *L = &net->layers[i];
    const float *wp = net->params + L->w_off;
    nn_conv_shape cs;
    conv_shape(&cs, L);
    if (!pt_on(ws, i, &cs))
        nn_wino_weights_part(ws->wino_u + ws->wu_off[i], wp, &cs, nn_wino_tile(&cs), part, nparts);
    else if (part == 0)
        nn_conv2d_pack_weights(ws->wino_u + ws->pt_off[i], wp, &cs);
    if (ws->wtrain[i] == 2)
        nn_wino_dx_weights_part(ws->wino_u + wino_dx_at(ws, i, &cs), wp, &cs, part, nparts);
}

void nn_ws_wino_weights(const nn_net *net, nn_ws *ws, int part, int nparts)
{
    if (!ws->wino_on) return;
    for (int i = 0; i < net->nlayers; i++)
        if (ws->wtrain[i]) wino_layer_weights(net, ws, i, part, nparts);
}

void nn_ws_set_depth_first(nn_ws *ws, int on) { ws->df_on = on != 0; }

int nn_ws_depth_first(const nn_ws *ws, int *sub)
{
    if (sub) *sub = ws->df_sub;
    return ws->df_split;
}

/* Thread CPU time: on a shared machine time spent descheduled says nothing
 * about a layer. Only read when a timer is set. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- forward ------------------------------------------------------------ */

/* p = softmax(z / t) row by row. (z - max) / t, divided rather than
 * multiplied by 1/t: the largest entry stays exactly 0 for any finite
 * t > 0, so the row sums to at least 1 and never to NaN. t == 1 is the
 * plain softmax bit for bit. */
static void softmax_rows(float *p, const float *z, int n, int k, float t)
{
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * k;
        float *pi = p + (size_t)i * k, m = zi[0], s = 0.0f;
        for (int j = 1; j < k; j++)
            if (zi[j] > m) m = zi[j];
        for (int j = 0; j < k; j++) {
            pi[j] = t == 1.0f ? expf(zi[j] - m) : expf((zi[j] - m) / t);
            s += pi[j];
        }
        for (int j = 0; j < k; j++) pi[j] /= s;
    }
}

static void load_input(const nn_net *net, nn_ws *ws, const float *x, int n)
{
    size_t m = (size_t)n * net->in_c * net->in_h * net->in_w;
    float mean = net->meta.input_mean, inv = 1.0f / net->meta.input_std;
    for (size_t i = 0; i < m; i++) ws->act[0][i] = (x[i] - mean) * inv;
}

/* Deskew measures ink in pixel units: the background is input 0, after
 * the net's normalisation. */
static float deskew_bg(const nn_net *net) { return -net->meta.input_mean / net->meta.input_std; }

/* Layer i runs by the plan's Winograd in this forward: inference with a
 * plan and the workspace's scratch sized for it. */
static int runs_wino(const nn_net *net, const nn_ws *ws, int i, int train)
{
    return !train && net->plan && net->plan->wino[i] && ws->wino[i];
}

/* Layers between two convolutions that leave the layout alone: ReLU is
 * element-wise (in place or fused), inference skips dropout. */
static int layout_free(const nn_layer *L) { return L->kind == NN_RELU || L->kind == NN_DROPOUT; }

/* The next layer after i that computes (-1 if none). */
static int next_computing(const nn_net *net, int i)
{
    int j = i + 1;
    while (j < net->nlayers && layout_free(&net->layers[j])) j++;
    return j < net->nlayers ? j : -1;
}

/* Layer i, a first layer at inference (nn_conv2d_nhwc_fits), writes its
 * outputs channels last for the Winograd layer after it. */
static int c1_nhwc_out(const nn_net *net, const nn_ws *ws, int i, int train)
{
    const nn_layer *L = &net->layers[i];
    if (train || !net->plan || net->plan->wino[i] || L->kind != NN_CONV2D) return 0;
    if (ws->amx_scratch && net->plan->amx) return 0; /* as wino_layout */
    nn_conv_shape cs;
    conv_shape(&cs, L);
    const int j = next_computing(net, i);
    return nn_conv2d_nhwc_fits(&cs) && j >= 0 && net->layers[j].kind == NN_CONV2D &&
           runs_wino(net, ws, j, train);
}

/* The layout flags of Winograd layer i (nn_wino_forward_nl): its output
 * stays channels last when the next layer that computes is a Winograd
 * convolution too, and its input is channels last when the one before
 * was (or was a first layer that wrote it so, c1_nhwc_out). The big
 * CNN's four Winograd layers in a row so skip three transposes out and
 * back. Decided from the net, the plan and the
 * workspace alone, so both ends agree whichever range runs them. */
static int wino_layout(const nn_net *net, const nn_ws *ws, int i, int train)
{
    /* An AMX chain (which reads and writes [C, H, W]) may take over any
     * of the neighbours: no channels-last hand-over then. */
    if (ws->amx_scratch && net->plan && net->plan->amx) return 0;
    int lay = 0, j = next_computing(net, i);
    if (j >= 0 && net->layers[j].kind == NN_CONV2D && runs_wino(net, ws, j, train))
        lay |= NN_WINO_OUT_NHWC;
    j = i - 1;
    while (j >= 0 && layout_free(&net->layers[j])) j--;
    if (j >= 0 && net->layers[j].kind == NN_CONV2D &&
        (runs_wino(net, ws, j, train) || c1_nhwc_out(net, ws, j, train)))
        lay |= NN_WINO_IN_NHWC;
    return lay;
}

/* Runs layers [i0, i1) on images [b0, b0 + n) of the batch in inference
 * or training mode (training: all layers, b0 0): each layer's kernel
 * (layers.h, conv.h) on its input and output buffers. */
static void forward_range(const nn_net *net, nn_ws *ws, int i0, int i1, int b0, int n, int train,
                          uint64_t seed, int update_stats, float *stats)
{
    for (int i = i0; i < i1; i++) {
        const nn_layer *L = &net->layers[i];
        const float *wp = net->params + L->w_off, *bp = net->params + L->b_off;
        size_t nin = layer_in(L), nout = layer_out(L);
        const float *x = ws->act[i] + (size_t)b0 * nin;
        float *y = ws->act[i + 1] + (size_t)b0 * nout;
        double t0 = ws->timer ? cpu_now() : 0.0;
        const struct nn_plan *pl = net->plan;
        if (!train && ws->amx_scratch && pl && pl->amx && i == pl->amx_i0 && pl->amx_i1 <= i1) {
            /* The chain's output lands where its last layer's would. */
            size_t nlast = layer_out(&net->layers[pl->amx_i1 - 1]);
            nn_amx_forward(pl->amx, x, ws->act[pl->amx_i1] + (size_t)b0 * nlast, n,
                           ws->amx_scratch);
            if (ws->timer) ws->timer[i] += cpu_now() - t0;
            i = pl->amx_i1 - 1;
            continue;
        }
        switch (L->kind) {
        case NN_DENSE: nn_dense_forward(y, x, wp, bp, n, L->in_c, L->out, ws->fuse[i]); break;
        case NN_CONV2D: {
            nn_conv_shape cs;
            conv_shape(&cs, L);
            if (runs_wino(net, ws, i, train)) {
                nn_wino_forward_nl(y, x, net->plan->u + net->plan->u_off[i], bp, &cs, n,
                                   ws->scratch, ws->fuse[i], net->plan->wino[i],
                                   wino_layout(net, ws, i, train), NULL);
                break;
            }
            if (c1_nhwc_out(net, ws, i, train)) {
                nn_conv2d_forward_nhwc(y, x, wp, bp, &cs, n, ws->scratch, ws->fuse[i]);
                break;
            }
            if (train && ws->wino_on && pt_on(ws, i, &cs)) {
                /* Zero inputs skipped, image by image, on this step's
                 * packed weights (transforms and packing together). */
                if (!ws->wu_ext) wino_layer_weights(net, ws, i, 0, 1);
                nn_conv2d_forward_packed(y, x, wp, ws->wu_src + ws->pt_off[i], bp, &cs, n,
                                         ws->scratch, ws->fuse[i]);
                break;
            }
            if (train && wino_fwd_train(ws, i, &cs)) {
                /* Unshared: this step's transforms, backward's too. */
                if (!ws->wu_ext) wino_layer_weights(net, ws, i, 0, 1);
                const int ib = bn_before(net, i);
                const nn_bn_in bn = ib >= 0 ? bn_in_of(net, ws, ib) : (nn_bn_in){0};
                nn_wino_forward_nl(y, ib >= 0 ? ws->act[ib] : x, ws->wu_src + ws->wu_off[i], bp,
                                   &cs, n, ws->scratch, ws->fuse[i], nn_wino_tile(&cs), 0,
                                   ib >= 0 ? &bn : NULL);
                break;
            }
            /* The plan's packed weights, if packed for the path running. */
            const float *wt = !train && pl && pl->packed[i] && pl->pw_path == nn_gemm_get_path()
                                  ? pl->pw + pl->pw_off[i]
                                  : NULL;
            for (int b = 0; b < n; b += ws->group[i]) {
                int g = n - b < ws->group[i] ? n - b : ws->group[i];
                nn_conv2d_forward_packed(y + b * nout, x + b * nin, wp, wt, bp, &cs, g, ws->scratch,
                                         ws->fuse[i]);
            }
            break;
        }
        case NN_MAXPOOL:
            for (int b = 0; b < n; b++)
                nn_maxpool_forward(y + b * nout, train ? ws->pool_idx[i] + b * nout : NULL,
                                   x + b * nin, L->in_c, L->in_h, L->in_w, L->k, L->stride,
                                   L->out_h, L->out_w);
            break;
        case NN_RELU:
            if (!(i > 0 && ws->fuse[i - 1])) nn_relu_forward(y, x, (size_t)n * nout);
            break;
        case NN_DROPOUT:
            if (train && L->p > 0.0f)
                nn_dropout_forward(y, ws->mask[i], x, (size_t)n * nout, L->p,
                                   nn_hash64(seed, (uint64_t)i));
            break;
        case NN_DESKEW:
            nn_deskew_forward_n(y, x, (size_t)n * L->in_c, L->in_h, L->in_w, deskew_bg(net));
            break;
        case NN_BATCHNORM: {
            float *rm = stats + L->s_off, *rv = stats + L->s_off + L->out_c;
            if (train)
                nn_batchnorm_forward_train(bn_output_skipped(net, ws, i) ? NULL : y, ws->bn_mean[i],
                                           ws->bn_inv[i], update_stats ? rm : NULL, rv, x, wp, bp,
                                           L->eps, L->momentum, n, L->out_c, L->out_h * L->out_w,
                                           ws->fuse[i]);
            else
                nn_batchnorm_forward(y, x, wp, bp, rm, rv, L->eps, n, L->out_c, L->out_h * L->out_w,
                                     ws->fuse[i]);
            break;
        }
        case NN_FLATTEN: /* in place: the same floats, another shape */
        default: break;
        }
        if (ws->timer) ws->timer[i] += cpu_now() - t0;
    }
}

/* All layers; in inference, the depth-first prefix (depth_first_plan)
 * df_sub images at a time first. */
static void forward_layers(const nn_net *net, nn_ws *ws, int n, int train, uint64_t seed,
                           int update_stats, float *stats)
{
    const int split = ws->df_split, sub = ws->df_sub;
    if (!train && ws->df_on && split > 0 && sub < n) {
        for (int b = 0; b < n; b += sub)
            forward_range(net, ws, 0, split, b, n - b < sub ? n - b : sub, train, seed,
                          update_stats, stats);
        forward_range(net, ws, split, net->nlayers, 0, n, train, seed, update_stats, stats);
        return;
    }
    forward_range(net, ws, 0, net->nlayers, 0, n, train, seed, update_stats, stats);
}

const float *nn_ws_features(const nn_ws *ws) { return ws->act[ws->nl - 1]; }

void nn_net_forward(const nn_net *net, nn_ws *ws, const float *x, int n, float *probs,
                    float *logits)
{
    load_input(net, ws, x, n);
    forward_layers(net, ws, n, 0, 0, 0, net->stats);
    const float *z = ws->act[net->nlayers];
    int k = nn_net_outputs(net);
    if (logits) memcpy(logits, z, sizeof(float) * n * k);
    if (probs) softmax_rows(probs, z, n, k, (float)net->meta.temperature);
}

/* Target probability of class j for label y: smoothed one-hot, or the
 * uniform distribution for an outlier. */
static inline float target_of(int j, int y, float ls, int k)
{
    if (y == NN_LABEL_OUTLIER) return 1.0f / k;
    return (j == y ? 1.0f - ls : 0.0f) + ls / k;
}

void nn_ws_set_outlier_weight(nn_ws *ws, float weight) { ws->oe_weight = weight; }

void nn_ws_set_energy_margins(nn_ws *ws, int on, float m_in, float m_out)
{
    ws->oe_energy = on;
    ws->m_in = m_in;
    ws->m_out = m_out;
}

/* The energy loss's hinge for image i with label y (nn_ws_set_energy_margins):
 * max(0, E - m_in) for a digit, max(0, m_out - E) for an outlier, with the
 * energy the served score thresholds (nn_energy). */
static double energy_hinge(const nn_ws *ws, const float *z, int k, int y)
{
    double e = nn_energy(z, k);
    double h = y == NN_LABEL_OUTLIER ? ws->m_out - e : e - ws->m_in;
    return h > 0.0 ? h : 0.0;
}

float nn_net_forward_train(nn_net *net, nn_ws *ws, const float *x, const uint8_t *y, int n,
                           float ls, uint64_t seed, int update_stats, float *probs)
{
    load_input(net, ws, x, n);
    forward_layers(net, ws, n, 1, seed, update_stats, net->stats);
    int k = nn_net_outputs(net);
    /* Training fits the logits themselves: no temperature. */
    softmax_rows(ws->probs, ws->act[net->nlayers], n, k, 1.0f);
    if (probs) memcpy(probs, ws->probs, sizeof(float) * n * k);
    ws->labels = y;
    ws->ls = ls;
    ws->n = n;
    int m = 0;
    for (int i = 0; i < n; i++) m += y[i] == NN_LABEL_OUTLIER;
    /* Per-image weights of the loss's gradient; w_out == 0 marks a batch
     * without outliers (backward then divides by n, as it always did). */
    /* The outliers' weight: 1 for a batch of outliers alone under the
     * uniform target, always the set weight under energy margins. */
    float wo = ws->oe_energy || m < n ? ws->oe_weight : 1.0f;
    ws->w_in = m < n ? 1.0f / (n - m) : 0.0f;
    ws->w_out = m == 0 ? 0.0f : wo / m;
    double loss_in = 0.0, loss_out = 0.0;
    const float *z = ws->act[net->nlayers];
    for (int i = 0; i < n; i++) {
        const float *p = ws->probs + (size_t)i * k;
        double l = 0.0;
        if (ws->oe_energy) {
            double h = energy_hinge(ws, z + (size_t)i * k, k, y[i]);
            if (y[i] == NN_LABEL_OUTLIER) {
                loss_out += h * h;
                continue;
            }
            l = ws->oe_weight * h * h;
        }
        for (int j = 0; j < k; j++) {
            float q = target_of(j, y[i], ls, k);
            if (q > 0.0f) l -= q * log(p[j] > 1e-30f ? p[j] : 1e-30f);
        }
        if (y[i] == NN_LABEL_OUTLIER)
            loss_out += l;
        else
            loss_in += l;
    }
    if (m == 0) return (float)(loss_in / n);
    return (float)((m < n ? loss_in / (n - m) : 0.0) + (double)wo * loss_out / m);
}

/* ---- backward ----------------------------------------------------------- */

/* Layer i is a ReLU right after a batch norm: in training, the batch
 * norm's backward takes the ReLU's (the ReLU is in place, so its output
 * gradient is the batch norm's dy and its output the batch norm's). */
static int relu_after_bn(const nn_net *net, int i)
{
    return i > 0 && i < net->nlayers && net->layers[i].kind == NN_RELU &&
           net->layers[i - 1].kind == NN_BATCHNORM;
}

/* Layer i is a ReLU right before a max-pool: the pool's backward masks
 * its gradient (it writes a quarter of the positions; the ReLU's own pass
 * read and wrote them all: a tenth of a LeNet training step). */
static int relu_before_pool(const nn_net *net, int i)
{
    return i >= 0 && i + 1 < net->nlayers && net->layers[i].kind == NN_RELU &&
           net->layers[i + 1].kind == NN_MAXPOOL;
}

/* Layer j's input, where a batch norm's output not kept
 * (bn_recomputed): that output again, bit for bit, then the dropouts
 * between, by their stored masks. */
static void recompute_input(const nn_net *net, nn_ws *ws, int j)
{
    int i = j - 1;
    while (i >= 0 && in_place(&net->layers[i])) i--;
    if (i < 0 || !bn_recomputed(net, i)) return;
    const nn_layer *B = &net->layers[i];
    const size_t n = (size_t)ws->n * layer_out(B);
    nn_batchnorm_output(ws->bn_out, ws->act[i], ws->bn_mean[i], ws->bn_inv[i],
                        net->params + B->w_off, net->params + B->b_off, ws->n, B->out_c,
                        B->out_h * B->out_w, ws->fuse[i]);
    for (int k = i + 1; k < j; k++)
        if (net->layers[k].kind == NN_DROPOUT && net->layers[k].p > 0.0f)
            nn_dropout_backward(ws->bn_out, ws->bn_out, ws->mask[k], n, net->layers[k].p);
}

void nn_net_backward(const nn_net *net, nn_ws *ws, float *grad)
{
    int n = ws->n, k = nn_net_outputs(net), nl = net->nlayers;
    float *dz = ws->dact[nl];
    const float *z = ws->act[nl];
    for (int i = 0; i < n; i++) {
        int y = ws->labels[i];
        float w = y == NN_LABEL_OUTLIER ? ws->w_out : ws->w_in;
        const float *p = ws->probs + (size_t)i * k;
        if (ws->oe_energy) {
            /* dE/dz_j = -p_j: a digit's hinge adds -2 weight h p_j to its
             * cross-entropy's p - q, an outlier's hinge is 2 h p_j alone. */
            double h2 = 2.0 * energy_hinge(ws, z + (size_t)i * k, k, y);
            for (int j = 0; j < k; j++) {
                double d = y == NN_LABEL_OUTLIER
                               ? h2 * p[j]
                               : p[j] - target_of(j, y, ws->ls, k) - ws->oe_weight * h2 * p[j];
                dz[(size_t)i * k + j] = (float)(d * w);
            }
            continue;
        }
        for (int j = 0; j < k; j++) {
            float q = target_of(j, y, ws->ls, k);
            /* Divided by n when there are no outliers, exactly as before. */
            float d = ws->probs[(size_t)i * k + j] - q;
            dz[(size_t)i * k + j] = ws->w_out == 0.0f ? d / n : d * w;
        }
    }
    /* Training needs no gradient below the first layer with parameters:
     * that layer skips its input gradient (for the first convolution, as
     * much work as its weight gradient), the layers before it are skipped. */
    int first = 0;
    if (!ws->input_grad)
        while (first < nl && net->layers[first].nw + net->layers[first].nb == 0) first++;
    for (int i = nl - 1; i >= first; i--) {
        const nn_layer *L = &net->layers[i];
        /* A convolution whose weight gradient applies the batch norm
         * before it (bn_before) reads that batch norm's input. */
        int ib = -1;
        if (L->kind == NN_CONV2D) {
            nn_conv_shape cs;
            conv_shape(&cs, L);
            if (wino_dw_train(ws, i, &cs)) ib = bn_before(net, i);
        }
        if ((L->kind == NN_CONV2D || L->kind == NN_DENSE) && ib < 0) recompute_input(net, ws, i);
        const float *x = ws->act[ib >= 0 ? ib : i], *dy = ws->dact[i + 1];
        float *dx = i == first && !ws->input_grad ? NULL : ws->dact[i];
        const float *wp = net->params + L->w_off;
        float *gw = grad + L->w_off, *gb = grad + L->b_off;
        size_t nin = layer_in(L), nout = layer_out(L);
        double t0 = ws->timer ? cpu_now() : 0.0;
        switch (L->kind) {
        case NN_DENSE: nn_dense_backward(dx, gw, gb, dy, x, wp, n, L->in_c, L->out); break;
        case NN_CONV2D: {
            nn_conv_shape cs;
            conv_shape(&cs, L);
            /* The input gradient by Winograd, after the weight gradient;
             * the weight gradient too where the layer takes both. */
            const int wdx = dx && ws->wtrain[i] == 2 && ws->wino_on,
                      wdw = wino_dw_train(ws, i, &cs);
            if (wdw) {
                const nn_bn_in bn = ib >= 0 ? bn_in_of(net, ws, ib) : (nn_bn_in){0};
                nn_wino_dw_n(gw, gb, dy, x, ib >= 0 ? &bn : NULL, &cs, n, ws->scratch);
            }
            /* The input gradient alone (dw NULL) does not read x. */
            if (!wdw || (dx && !wdx))
                for (int b = 0; b < n; b += ws->group[i]) {
                    int g = n - b < ws->group[i] ? n - b : ws->group[i];
                    nn_conv2d_backward_n(dx && !wdx ? dx + b * nin : NULL, wdw ? NULL : gw, gb,
                                         dy + b * nout, x + b * nin, wp, &cs, g, ws->scratch);
                }
            if (wdx) {
                nn_wino_dx_n(dx, dy, ws->wu_src + wino_dx_at(ws, i, &cs), &cs, n, ws->scratch);
            }
            break;
        }
        case NN_MAXPOOL: {
            const int mask = relu_before_pool(net, i - 1);
            for (int b = 0; b < n; b++)
                nn_maxpool_backward(dx + b * nin, dy + b * nout, ws->pool_idx[i] + b * nout,
                                    L->in_c, L->in_h, L->in_w, L->k, L->stride, L->out_h, L->out_w,
                                    mask ? x + b * nin : NULL);
            break;
        }
        case NN_RELU:
            /* In place: act[i+1] == act[i] holds the output. After a batch
             * norm, or before a max-pool, that layer's backward does this
             * on its way. */
            if (!relu_after_bn(net, i) && !relu_before_pool(net, i))
                nn_relu_backward(dx, dy, ws->act[i + 1], (size_t)n * nout);
            break;
        case NN_DROPOUT:
            if (L->p > 0.0f) nn_dropout_backward(dx, dy, ws->mask[i], (size_t)n * nout, L->p);
            break;
        case NN_DESKEW:
            nn_deskew_backward_n(dx, dy, x, (size_t)n * L->in_c, L->in_h, L->in_w, deskew_bg(net));
            break;
        case NN_BATCHNORM:
            /* dy is the gradient of the ReLU's output when one follows
             * (relu_after_bn skipped its backward): masked on the way. */
            nn_batchnorm_backward(dx, gw, gb, dy, x, ws->bn_mean[i], ws->bn_inv[i], wp,
                                  net->params + L->b_off, n, L->out_c, L->out_h * L->out_w,
                                  relu_after_bn(net, i + 1));
            break;
        case NN_FLATTEN: /* in place */
        default: break;
        }
        if (ws->timer) ws->timer[NN_MAX_LAYERS + i] += cpu_now() - t0;
    }
}
