/* optim.h - optimisers over a net's flat parameter block, and learning-rate
 * schedules.
 *
 * Adam (optionally AdamW-style decoupled weight decay) and SGD with
 * momentum (L2 weight decay added to the gradient). Weight decay applies to
 * conv and dense weights only, never to biases or batch-norm parameters.
 */
#ifndef NN_OPTIM_H
#define NN_OPTIM_H

#include <stddef.h>

#include "nn/net.h"

typedef enum { NN_OPT_ADAM = 0, NN_OPT_SGD } nn_opt_kind;

typedef struct {
    nn_opt_kind kind;
    float beta1, beta2, eps; /* Adam: 0.9, 0.999, 1e-7 (Keras) */
    float momentum;          /* SGD: 0.9                        */
    float weight_decay;      /* 0 = none                        */
    int nesterov;            /* SGD                              */
} nn_opt_cfg;

void nn_opt_cfg_default(nn_opt_cfg *c, nn_opt_kind kind);

typedef struct nn_opt nn_opt;

/* NULL on allocation failure. The net fixes the parameter count and which
 * parameters are decayed. */
nn_opt *nn_opt_create(const nn_net *net, const nn_opt_cfg *cfg);
void nn_opt_free(nn_opt *o);

/* One step, params -= update(grad) with learning rate lr, in parts so
 * threads can share it: nn_opt_advance once (the step count, for Adam's
 * bias correction), then nn_opt_update over disjoint ranges [lo, hi) of
 * the parameters covering all of them. */
void nn_opt_advance(nn_opt *o);
void nn_opt_update(nn_opt *o, float *params, const float *grad, float lr, size_t lo, size_t hi);
/* The same with the range's gradient alone: grad[0] is parameter lo's
 * (a slice reduced into a buffer just before). */
void nn_opt_update_from(nn_opt *o, float *params, const float *grad, float lr, size_t lo,
                        size_t hi);

typedef enum {
    NN_SCHED_CONST = 0, /* lr                                              */
    NN_SCHED_STEP,      /* lr * gamma^floor(epoch / step)                  */
    NN_SCHED_EXP,       /* lr * gamma^epoch (continuous)                   */
    NN_SCHED_COSINE,    /* warm-up, then cosine from lr to lr*final        */
    NN_SCHED_ONECYCLE   /* linear up to lr over warm-up, cosine down       */
} nn_sched_kind;

typedef struct {
    nn_sched_kind kind;
    float lr;     /* base / peak learning rate                         */
    float gamma;  /* step and exp: decay factor                         */
    float step;   /* step: epochs between decays                        */
    float warmup; /* cosine/onecycle: warm-up length in epochs          */
    float final;  /* cosine/onecycle: final lr as a fraction of lr      */
} nn_sched;

/* Learning rate at fractional epoch t in [0, epochs). */
float nn_sched_lr(const nn_sched *s, double t, int epochs);

/* Parses "const", "step", "exp", "cosine", "onecycle"; -1 if unknown. */
int nn_sched_parse(const char *name, nn_sched_kind *out);

#endif
