#include "nn/err.h"
#include "nn/train.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pool.h"
#include "nn/rng.h"

#define MAX_THREADS 64

struct nn_trainer {
    nn_net *net;
    nn_train_cfg cfg;
    nn_pool *pool; /* the shards' threads; NULL: they run in order on the caller */
    int nt;
    nn_ws *ws[MAX_THREADS];
    float *grad[MAX_THREADS];
    float *x[MAX_THREADS]; /* shard inputs [shard, H*W]              */
    uint8_t *y[MAX_THREADS];
    float *scratch[MAX_THREADS]; /* augmentation scratch                   */
    float *probs[MAX_THREADS];   /* shard probabilities (training mode)    */
    nn_opt *opt;
    float *ema;
    float ema_d; /* this step's averaging factor           */
    long steps_done;
    float lr;
    /* current step, read by the workers */
    const uint8_t *images, *labels;
    const int *order;
    int step_lo, step_n, epoch;
    double loss[MAX_THREADS];
    int correct[MAX_THREADS];
    int *perm;
    int perm_n;
    const uint8_t *oe_images; /* outlier exposure set, or NULL            */
    int oe_n;
};

/* A shard's forward multiply-adds under which the step's shards run on
 * the calling thread, one after another. The MLP at batch 32 (1.6 M a
 * shard at 2 threads) ran an epoch in 0.43-0.48 s on one thread and in
 * 0.45-0.49 on two, and on two threads now and then in 0.8-1.5 s: each
 * step waits for its second thread, and when that one cannot run at once
 * the wait outweighs the shard (both threads on one CPU: 1.14 s; in order
 * on one thread: 0.52, on a 2-core Zen 4 virtual machine). LeNet at batch
 * 32 (6.7 M a shard) gains from two threads, 2.0 -> 1.2-1.6 s an epoch. */
#define SHARD_MIN_MACS 4000000u

nn_trainer *nn_trainer_create(nn_net *net, const nn_train_cfg *cfg, char *err, size_t errlen)
{
    if (cfg->batch < 1 || cfg->batch > 65536) {
        nn_errf(err, errlen, "train: batch %d out of range", cfg->batch);
        return NULL;
    }
    if (cfg->oe_batch < 0 || cfg->oe_batch > 65536) {
        nn_errf(err, errlen, "train: outliers per step %d out of range", cfg->oe_batch);
        return NULL;
    }
    if (cfg->shards < NN_SHARDS_AUTO || cfg->shards > NN_SHARDS_SERIAL) {
        nn_errf(err, errlen, "train: shards mode %d unknown", cfg->shards);
        return NULL;
    }
    nn_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        nn_errf(err, errlen, "train: out of memory");
        return NULL;
    }
    t->net = net;
    t->cfg = *cfg;
    int nt = cfg->threads > 0 ? cfg->threads : nn_cpu_count();
    if (nt > MAX_THREADS) nt = MAX_THREADS;
    if (nt > cfg->batch) nt = cfg->batch;
    t->nt = nt;
    int shard = (cfg->batch + nt - 1) / nt + (cfg->oe_batch + nt - 1) / nt,
        hw = net->in_c * net->in_h * net->in_w;
    /* Shards too small to pay for a thread of their own (SHARD_MIN_MACS)
     * run one after another on the calling thread: the same shards, so
     * the same bits as on threads. */
    const int serial = cfg->shards == NN_SHARDS_SERIAL ||
                       (cfg->shards == NN_SHARDS_AUTO &&
                        (uint64_t)((cfg->batch + nt - 1) / nt) * nn_net_macs(net) < SHARD_MIN_MACS);
    if (nt > 1 && !serial && !(t->pool = nn_pool_create(nt))) goto oom;
    for (int i = 0; i < nt; i++) {
        if (!(t->ws[i] = nn_ws_create(net, shard, 1))) goto oom;
        if (cfg->direct_conv) nn_ws_use_wino(t->ws[i], 0);
        nn_ws_set_outlier_weight(t->ws[i], cfg->oe_weight);
        nn_ws_set_energy_margins(t->ws[i], cfg->oe_energy, cfg->m_in, cfg->m_out);
        if (!(t->grad[i] = malloc(sizeof(float) * net->nparams))) goto oom;
        if (!(t->x[i] = malloc(sizeof(float) * shard * hw))) goto oom;
        if (!(t->y[i] = malloc(shard))) goto oom;
        if (!(t->scratch[i] = malloc(sizeof(float) * 3 * hw))) goto oom;
        if (!(t->probs[i] = malloc(sizeof(float) * shard * nn_net_outputs(net)))) goto oom;
    }
    /* One set of transformed Winograd weights for all shards, each
     * thread transforming a share (wino_worker): every shard transformed
     * all of them, a tenth of a big-CNN step done twice over. */
    for (int i = 0; i < nt; i++) nn_ws_wino_share(t->ws[i], t->ws[0]);
    if (!(t->opt = nn_opt_create(net, &cfg->opt))) goto oom;
    if (cfg->ema > 0.0f) {
        if (!(t->ema = malloc(sizeof(float) * net->nparams))) goto oom;
        memcpy(t->ema, net->params, sizeof(float) * net->nparams);
    }
    return t;
oom:
    nn_errf(err, errlen, "train: out of memory");
    nn_trainer_free(t);
    return NULL;
}

void nn_trainer_free(nn_trainer *t)
{
    if (!t) return;
    nn_pool_free(t->pool);
    for (int i = 0; i < t->nt; i++) {
        nn_ws_free(t->ws[i]);
        free(t->grad[i]);
        free(t->x[i]);
        free(t->y[i]);
        free(t->scratch[i]);
        free(t->probs[i]);
    }
    nn_opt_free(t->opt);
    free(t->ema);
    free(t->perm);
    free(t);
}

void nn_trainer_set_outliers(nn_trainer *t, const uint8_t *images, int n)
{
    t->oe_images = images;
    t->oe_n = n;
}

static void shard_range(const nn_trainer *t, int i, int *lo, int *n)
{
    int a = (int)((long long)t->step_n * i / t->nt),
        b = (int)((long long)t->step_n * (i + 1) / t->nt);
    *lo = a;
    *n = b - a;
}

static void step_worker(void *arg, int i, int nt)
{
    nn_trainer *t = arg;
    (void)nt;
    nn_net *net = t->net;
    int lo, n, hw = net->in_h * net->in_w, k = nn_net_outputs(net);
    shard_range(t, i, &lo, &n);
    memset(t->grad[i], 0, sizeof(float) * net->nparams);
    t->loss[i] = 0.0;
    t->correct[i] = 0;
    if (n == 0) return;
    int aug = !nn_aug_is_identity(&t->cfg.aug);
    uint64_t aseed = nn_hash64(t->cfg.seed, 0xa11ce);
    for (int j = 0; j < n; j++) {
        int pos = t->step_lo + lo + j, idx = t->order[pos];
        const uint8_t *src = t->images + (size_t)idx * hw;
        float *dst = t->x[i] + (size_t)j * hw;
        if (aug)
            nn_augment(dst, src, net->in_h, net->in_w, &t->cfg.aug, aseed,
                       (uint64_t)t->epoch * 100000000ULL + (uint64_t)pos, t->scratch[i]);
        else
            for (int q = 0; q < hw; q++) dst[q] = src[q] * (1.0f / 255.0f);
        t->y[i][j] = t->labels[idx];
    }
    /* This shard's share of the step's outliers, after its own images. */
    int m = 0;
    if (t->oe_images && t->oe_n > 0 && t->cfg.oe_batch > 0) {
        int a = (int)((long long)t->cfg.oe_batch * i / t->nt),
            b = (int)((long long)t->cfg.oe_batch * (i + 1) / t->nt);
        uint64_t oseed = nn_hash64(t->cfg.seed, 0x0e0e0e);
        for (int j = 0; j < b - a; j++) {
            uint64_t c = (uint64_t)t->steps_done * (uint64_t)t->cfg.oe_batch + (uint64_t)(a + j);
            int idx = (int)(nn_hash64(oseed, c) % (uint64_t)t->oe_n);
            const uint8_t *src = t->oe_images + (size_t)idx * hw;
            float *dst = t->x[i] + (size_t)(n + j) * hw;
            if (aug)
                nn_augment(dst, src, net->in_h, net->in_w, &t->cfg.aug, oseed, c, t->scratch[i]);
            else
                for (int q = 0; q < hw; q++) dst[q] = src[q] * (1.0f / 255.0f);
            t->y[i][n + j] = NN_LABEL_OUTLIER;
        }
        m = b - a;
    }
    /* Dropout masks are keyed by step and shard. */
    uint64_t dseed = nn_hash64(t->cfg.seed, (uint64_t)t->steps_done * MAX_THREADS + i);
    float l = nn_net_forward_train(net, t->ws[i], t->x[i], t->y[i], n + m, t->cfg.label_smoothing,
                                   dseed, i == 0, t->probs[i]);
    for (int j = 0; j < n; j++) {
        const float *p = t->probs[i] + (size_t)j * k;
        int b = 0;
        for (int c = 1; c < k; c++)
            if (p[c] > p[b]) b = c;
        t->correct[i] += b == t->y[i][j];
    }
    nn_net_backward(net, t->ws[i], t->grad[i]);
    t->loss[i] = (double)l * n;
}

/* After the shards' backward passes, each thread owns a slice of the
 * parameters (multiples of 16 floats: no cache line shared): the batch
 * gradient (shard means weighted by shard size, summed in shard order),
 * the optimiser update and the moving average of that slice. One pool run
 * instead of a serial update: for the MLP, Adam over 100k parameters was
 * as long as the step's arithmetic. */
#define UPDATE_CHUNK 1024

/* gb[0..n) = the shards' gradients at [c0, c0 + n) weighted by w, shard 0
 * first, then one pass per shard: loops the compiler vectorises (an
 * element's sums in the same order as adding a shard at a time, so the
 * result does not depend on it; the loop over shards inside the loop over
 * elements ran scalar, 17% of an MLP step with 2 threads). */
static void grad_sum(float *restrict gb, const float *const *g, const float *w, int nt, size_t c0,
                     size_t n)
{
    const float *restrict g0 = g[0] + c0;
    const float w0 = w[0];
    for (size_t j = 0; j < n; j++) gb[j] = g0[j] * w0;
    for (int s = 1; s < nt; s++) {
        const float *restrict gs = g[s] + c0;
        const float ws = w[s];
        for (size_t j = 0; j < n; j++) gb[j] += gs[j] * ws;
    }
}

/* fn over the step's shards: on the pool's threads, or in order on the
 * calling thread when there is no pool (one shard, or small ones). */
static void run_shards(nn_trainer *t, nn_pool_fn fn)
{
    if (t->pool) {
        nn_pool_run(t->pool, fn, t);
        return;
    }
    for (int i = 0; i < t->nt; i++) fn(t, i, t->nt);
}

static void wino_worker(void *arg, int i, int nt)
{
    nn_trainer *t = arg;
    nn_ws_wino_weights(t->net, t->ws[0], i, nt);
}

static void update_worker(void *arg, int i, int nt)
{
    nn_trainer *t = arg;
    size_t np = t->net->nparams;
    size_t lo = (np * i / nt) & ~(size_t)15,
           hi = i + 1 == nt ? np : (np * (i + 1) / nt) & ~(size_t)15;
    if (lo >= hi) return;
    float w[MAX_THREADS];
    for (int s = 0; s < t->nt; s++) {
        int a, n;
        shard_range(t, s, &a, &n);
        w[s] = (float)n / t->step_n;
    }
    const float *g0 = t->grad[0];
    if (t->nt == 1) {
        nn_opt_update(t->opt, t->net->params, g0, t->lr, lo, hi);
    } else {
        /* The reduced gradient goes through an L1-sized buffer straight
         * into the update: the MLP's 100k parameters' vectors outgrow L2,
         * so writing it back to memory and reading it again cost a fifth
         * of the update's traffic. */
        float gb[UPDATE_CHUNK];
        for (size_t c0 = lo; c0 < hi; c0 += UPDATE_CHUNK) {
            size_t c1 = hi - c0 < UPDATE_CHUNK ? hi : c0 + UPDATE_CHUNK;
            grad_sum(gb, (const float *const *)t->grad, w, t->nt, c0, c1 - c0);
            nn_opt_update_from(t->opt, t->net->params, gb, t->lr, c0, c1);
        }
    }
    if (t->ema) {
        const float d = t->ema_d, *p = t->net->params;
        for (size_t q = lo; q < hi; q++) t->ema[q] = d * t->ema[q] + (1.0f - d) * p[q];
    }
}

int nn_trainer_epoch(nn_trainer *t, const uint8_t *images, const uint8_t *labels, int n, int epoch,
                     nn_progress_fn progress, void *ud, volatile int *stop, double *loss,
                     double *acc)
{
    if (t->perm_n != n) {
        free(t->perm);
        t->perm = malloc(sizeof(int) * (n ? n : 1));
        if (!t->perm) return -1;
        t->perm_n = n;
    }
    nn_rng r;
    nn_rng_seed(&r, nn_hash64(t->cfg.seed, 0x5417f1e + (uint64_t)epoch));
    for (int i = 0; i < n; i++) t->perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)nn_rng_below(&r, (uint32_t)i + 1), tmp = t->perm[i];
        t->perm[i] = t->perm[j];
        t->perm[j] = tmp;
    }
    t->images = images;
    t->labels = labels;
    t->order = t->perm;
    t->epoch = epoch;
    int B = t->cfg.batch, steps = (n + B - 1) / B;
    double lsum = 0.0;
    long seen = 0, ok = 0;
    for (int s = 0; s < steps; s++) {
        if (stop && *stop) return 1;
        t->step_lo = s * B;
        t->step_n = n - s * B < B ? n - s * B : B;
        run_shards(t, wino_worker);
        run_shards(t, step_worker);
        t->lr = nn_sched_lr(&t->cfg.sched, epoch + (double)s / steps, t->cfg.epochs);
        if (t->ema) {
            /* Warm-up of the average: early steps follow the weights. */
            float d = t->cfg.ema, d0 = (1.0f + t->steps_done) / (10.0f + t->steps_done);
            t->ema_d = d0 < d ? d0 : d;
        }
        nn_opt_advance(t->opt);
        run_shards(t, update_worker);
        t->steps_done++;
        t->net->bn_batches++;
        for (int i = 0; i < t->nt; i++) lsum += t->loss[i];
        for (int i = 0; i < t->nt; i++) ok += t->correct[i];
        seen += t->step_n;
        if (progress) progress(ud, s + 1, steps, lsum / seen, (double)ok / seen);
    }
    if (loss) *loss = seen ? lsum / seen : 0.0;
    if (acc) *acc = seen ? (double)ok / seen : 0.0;
    return 0;
}

void nn_trainer_eval_weights(const nn_trainer *t, nn_net *dst)
{
    memcpy(dst->params, t->ema ? t->ema : t->net->params, sizeof(float) * t->net->nparams);
    memcpy(dst->stats, t->net->stats, sizeof(float) * t->net->nstats);
    dst->bn_batches = t->net->bn_batches;
}

float nn_trainer_lr(const nn_trainer *t) { return t->lr; }
