/* train.h - mini-batch training of a net on an image dataset.
 *
 * Each step splits the batch into one shard per thread; every thread runs
 * forward and backward on its shard with its own workspace and gradient
 * buffer (batch-norm statistics are per shard), the gradients are summed
 * weighted by shard size, and the optimiser steps once. Shuffling, dropout
 * and augmentation are pure functions of (seed, epoch, position), so a run
 * is reproducible for a given seed and thread count. Shards too small to
 * pay for a thread run one after another on the calling thread instead
 * (cfg.shards), with the same results.
 */
#ifndef NN_TRAIN_H
#define NN_TRAIN_H

#include <stdint.h>

#include "nn/augment.h"
#include "nn/net.h"
#include "nn/optim.h"

typedef struct {
    int batch;   /* images per step                                */
    int threads; /* <= 0: all CPUs                                 */
    int epochs;  /* for the schedule                               */
    uint64_t seed;
    float label_smoothing;
    float ema; /* decay of the weights' moving average, 0 = off  */
    nn_opt_cfg opt;
    nn_sched sched;
    nn_aug_cfg aug;
    int direct_conv; /* 1: no Winograd (nn_ws_use_wino), for comparisons */
    /* Outlier exposure (see NN_LABEL_OUTLIER in nn/net.h): each step adds
     * oe_batch images drawn from the set given to nn_trainer_set_outliers,
     * augmented like the rest, with loss weight oe_weight. 0 = off. */
    int oe_batch;
    float oe_weight;
    /* oe_energy != 0: the energy-margin loss (nn_ws_set_energy_margins)
     * with margins m_in < m_out, oe_weight its weight; else the uniform
     * target. */
    int oe_energy;
    float m_in, m_out;
    /* Where the shards run: NN_SHARDS_AUTO (0) on threads when each is
     * big enough to pay for one, else one after another on the calling
     * thread; NN_SHARDS_THREADS or NN_SHARDS_SERIAL to choose. The same
     * shards either way, so the same bits. */
    int shards;
} nn_train_cfg;

enum { NN_SHARDS_AUTO = 0, NN_SHARDS_THREADS = 1, NN_SHARDS_SERIAL = 2 };

typedef struct nn_trainer nn_trainer;

/* Called after every step: step (1-based) of steps, running mean loss and
 * accuracy of the epoch so far. */
typedef void (*nn_progress_fn)(void *ud, int step, int steps, double loss, double acc);

/* NULL + err on failure. The trainer updates net in place. */
nn_trainer *nn_trainer_create(nn_net *net, const nn_train_cfg *cfg, char *err, size_t errlen);
void nn_trainer_free(nn_trainer *t);

/* One epoch over images [n, H*W] with labels: shuffled order from
 * (seed, epoch). Stops early (returns 1) when *stop becomes nonzero.
 * loss and acc receive the epoch's running means. Returns 0 when complete. */
int nn_trainer_epoch(nn_trainer *t, const uint8_t *images, const uint8_t *labels, int n, int epoch,
                     nn_progress_fn progress, void *ud, volatile int *stop, double *loss,
                     double *acc);

/* The outlier set for cfg.oe_batch > 0: images [n, H*W], not copied (they
 * must outlive the trainer's epochs). Each step draws its outliers from it
 * by a hash of (seed, step), so a run stays deterministic. */
void nn_trainer_set_outliers(nn_trainer *t, const uint8_t *images, int n);

/* Copies the weights the trainer would evaluate (the moving average when
 * ema > 0, else the current ones) into dst (a net of the same shape).
 * Batch-norm running statistics are copied too. */
void nn_trainer_eval_weights(const nn_trainer *t, nn_net *dst);

/* Learning rate used at the last step. */
float nn_trainer_lr(const nn_trainer *t);

#endif
