/* ood.h - how far an image lies from the digits a net was trained on:
 * the Mahalanobis distance of its penultimate features (the input of the
 * last dense layer) to the nearest class mean, under one covariance shared
 * by all classes.
 *
 * Overview
 *   The features come out of the one forward pass (nn_net_forward, then
 *   nn_ws_features); nothing runs twice. With f the features [D], mu_c the
 *   training mean of class c and Sigma = L L^T the shared covariance of the
 *   features around their class means:
 *       score(f) = min_c (f - mu_c)^T Sigma^-1 (f - mu_c)
 *                = min_c |W f - W mu_c|^2,  W = L^-1 (lower triangular).
 *   Higher is less digit-like. An image is "in distribution" when its score
 *   is at most the stored threshold (chosen on held-out training digits, so
 *   that a stated share of them pass; see nn_ood_set_threshold).
 *
 *   Storage: a net carries an nn_ood (net->ood, NULL when the file has
 *   none) saved as two extra tensors of its safetensors file,
 *   "ood.means" [classes, D] and "ood.chol" [D, D] (L, float32), plus the
 *   metadata "ood_method" ("mahalanobis") and "ood_threshold".
 *   In memory W and W mu_c are kept in double (derived from the stored
 *   float L when the file is read), so the score's rounding is that of a
 *   double computation from the stored figures.
 *
 * Usage (fitting, as mnist-eval --ood-fit does):
 *   nn_ood *o = nn_ood_fit(net, images, labels, n, 1e-6, err, sizeof err);
 *   nn_ood_set_threshold(o, heldout_scores, m, 0.95);
 *   net->ood = o;                       // the net owns it now
 *   nn_net_save(net, "out.safetensors", err, sizeof err);
 *
 * Errors: NULL / -1 with a one-line message in err; never prints.
 */
#ifndef NN_OOD_H
#define NN_OOD_H

#include <stddef.h>
#include <stdint.h>

#include "nn/net.h"

#define NN_OOD_METHOD "mahalanobis"

/* How the score is computed. Mahalanobis needs the stored statistics;
 * energy needs nothing but the threshold: score = -logsumexp(logits)
 * (Liu et al., "Energy-based Out-of-distribution Detection", 2020), which
 * separates best for a net trained with outlier exposure (mnist-train
 * --outliers), whose logits flatten on what is not a digit. Stored as the
 * metadata "ood_method" ("mahalanobis" or "energy").
 *
 * The third, "head", is a small classifier of its own on the same
 * penultimate features, trained after the net (which stays as it was) to
 * tell the training digits from outliers (nn_ood_fit_head):
 *     score(f) = w2 . relu(W1 g + b1) + b2,   g_j = (f_j - mean_j) / std_j,
 * the logit of "not a digit". Stored as the tensors "ood.head.norm"
 * [2, D] (mean, std), "ood.head.w1" [H, D], "ood.head.b1" [H],
 * "ood.head.w2" [1, H] and "ood.head.b2" [1]. */
typedef enum { NN_OOD_MAHALANOBIS = 0, NN_OOD_ENERGY = 1, NN_OOD_HEAD = 2 } nn_ood_method;
/* Largest feature dimension: scoring keeps one double per feature on the
 * stack (32 KiB), so it never allocates. */
#define NN_OOD_MAX_DIM 4096

typedef struct nn_ood {
    nn_ood_method method;
    int k, d;         /* classes, feature dimension (0 for energy)         */
    float *means;     /* [k, d] class means of the features (as stored)    */
    float *chol;      /* [d, d] lower Cholesky factor L of the shared
                          covariance, row-major, zero above the diagonal    */
    double *w;        /* [d, d] W = L^-1, lower triangular (derived)       */
    double *wmeans;   /* [k, d] W mu_c (derived)                           */
    double threshold; /* in distribution when score <= threshold; < 0
                          while none has been chosen                        */
    int h;            /* head: hidden units                                 */
    float *norm;      /* head: [2, d] feature mean, then std (> 0)          */
    float *w1, *b1;   /* head: [h, d], [h]                                  */
    float *w1t;       /* head: w1 transposed, [d, h rounded up to 32],
                          zero past h (derived, for the score)              */
    float *w2, b2;    /* head: [h], the output bias                         */
} nn_ood;

/* How nn_ood_fit_head trains a head. nn_ood_head_cfg_default fills in
 * hidden 64, 5 epochs, batch 256, Adam at lr 1e-3 with L2 weight decay
 * 1e-4 on every parameter, seed 1. */
typedef struct {
    int hidden, epochs, batch;
    float lr, weight_decay;
    uint64_t seed;
} nn_ood_head_cfg;
void nn_ood_head_cfg_default(nn_ood_head_cfg *cfg);

/* Feature dimension of net: the input size of its last layer if that is
 * dense, else 0 (such a net has no penultimate features to score; nor
 * has one with more than NN_OOD_MAX_DIM). */
int nn_ood_dim(const nn_net *net);

/* An nn_ood of k classes and d (1..NN_OOD_MAX_DIM) features from a class-mean block
 * means [k,d] and a lower Cholesky factor chol [d,d] (both copied).
 * Checks that every value is finite, the diagonal positive and the upper
 * triangle zero, then derives W and W mu. threshold < 0: none yet.
 * NULL + err on bad input or memory. Free with nn_ood_free. */
nn_ood *nn_ood_create(int k, int d, const float *means, const float *chol, double threshold,
                      char *err, size_t errlen);
/* An energy-method nn_ood: no statistics, only the threshold (< 0: none
 * yet; else finite). NULL + err on a bad threshold or memory. */
nn_ood *nn_ood_create_energy(double threshold, char *err, size_t errlen);

/* A head-method nn_ood on d (1..NN_OOD_MAX_DIM) features with h
 * (1..NN_OOD_MAX_HIDDEN) hidden units from its parameters (all copied):
 * norm [2,d] (every std > 0), w1 [h,d], b1 [h], w2 [h], b2. Checks every
 * value is finite. threshold < 0: none yet. NULL + err. */
#define NN_OOD_MAX_HIDDEN 1024
nn_ood *nn_ood_create_head(int d, int h, const float *norm, const float *w1, const float *b1,
                           const float *w2, float b2, double threshold, char *err, size_t errlen);

/* "mahalanobis" / "energy" / "head"; and back: 0, or -1 for an unknown name. */
const char *nn_ood_method_name(nn_ood_method m);
int nn_ood_method_parse(const char *name, nn_ood_method *m);

/* A deep copy (NULL on memory failure or when o is NULL). */
nn_ood *nn_ood_copy(const nn_ood *o);
void nn_ood_free(nn_ood *o);

/* scores[i] for features feats [n, d] (row i is image i); Mahalanobis. */
void nn_ood_score(const nn_ood *o, const float *feats, int n, float *scores);

/* The energy score of one row of k logits: -logsumexp(z), computed in
 * double about the row's largest logit. */
float nn_energy(const float *z, int k);

/* scores[i] of one forward pass by o's method: from the features [n, d]
 * (Mahalanobis, head) or the logits [n, k] (energy: -logsumexp of the
 * row). */
void nn_ood_score_pass(const nn_ood *o, const float *feats, const float *logits, int n, int k,
                       float *scores);

/* Fits class means and the shared covariance (double precision; the
 * covariance gets ridge * trace / d added to its diagonal before the
 * Cholesky factorisation) on n images [n, C*H*W] bytes 0..255 with labels
 * [n] (every class must appear), running net forward in batches.
 * Threshold left unset. NULL + err (no dense last layer, a class without
 * images, a covariance that is not positive definite, memory). */
nn_ood *nn_ood_fit(const nn_net *net, const uint8_t *images, const uint8_t *labels, int n,
                   double ridge, char *err, size_t errlen);

/* The penultimate features [n, nn_ood_dim(net)] of n images [n, C*H*W]
 * bytes 0..255 (pixels / 255, as mnist-eval feeds them), in batches on
 * this thread. 0, or -1 + err (no features, memory). */
int nn_ood_features(const nn_net *net, const uint8_t *images, int n, float *feats, char *err,
                    size_t errlen);

/* Trains a head (see above) on features of digits fin [nin, d] (target
 * "digit") and outliers fout [nout, d] (target "not a digit"): binary
 * cross-entropy on the logit, each outlier weighted nin / nout so that
 * both sides weigh the same, mini-batches of a shuffled mix, Adam. The
 * features are standardised by the digits' mean and std (+ 1e-3).
 * Deterministic for a seed. Threshold left unset. NULL + err (bad
 * sizes or settings, memory). */
nn_ood *nn_ood_fit_head(int d, const float *fin, int nin, const float *fout, int nout,
                        const nn_ood_head_cfg *cfg, char *err, size_t errlen);

/* Sets o->threshold to the smallest score that at least share (0..1] of
 * scores [n] (held-out in-distribution images) do not exceed. -1 if n < 1
 * or share outside (0,1] or memory fails. */
int nn_ood_set_threshold(nn_ood *o, const float *scores, int n, double share);

/* Area under the ROC curve of telling out-scores [nout] from in-scores [nin]
 * by "higher is out": P(out > in) + P(out == in) / 2. Sorts copies;
 * -1 on memory failure or an empty side. */
double nn_ood_auroc(const float *in, int nin, const float *out, int nout);

#endif
