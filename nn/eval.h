/* eval.h - evaluating a model on a set of images, in parallel. The one
 * forward path (nn_ensemble_forward) is what the trainer's evaluation,
 * mnist-eval, mnist-predict and the server all run.
 */
#ifndef NN_EVAL_H
#define NN_EVAL_H

#include <stdint.h>

#include "nn/augment.h"
#include "nn/ensemble.h"

/* probs [n, classes] for images [n, H*W] (bytes 0..255, ink bright), each
 * first passed through transform tf if tf is not NULL. threads <= 0 means
 * all CPUs. Returns 0, or -1 on allocation failure. */
int nn_eval_probs(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                  int threads, float *probs);

/* nn_eval_probs, also writing per image the energy score, the
 * out-of-distribution score and the members' disagreement of
 * nn_ensemble_forward_disagree into energy [n], ood [n] and disagree [n]
 * when those are not NULL (ood needs nn_ensemble_ood(e)). */
int nn_eval_scores(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                   int threads, float *probs, float *energy, float *ood, float *disagree);

/* nn_eval_scores for inputs already prepared: x [n, C*H*W] is fed to the
 * model as it is (no transform), e.g. images through an upload's
 * preprocessing. */
int nn_eval_inputs(const nn_ensemble *e, const float *x, int n, int threads, float *probs,
                   float *energy, float *ood, float *disagree);

/* Index of the largest of k values (first on ties). */
int nn_argmax(const float *v, int k);

/* Fraction of rows whose argmax equals the label. confusion (k*k ints,
 * row = true label, column = prediction) is filled when not NULL. */
double nn_accuracy(const float *probs, const uint8_t *labels, int n, int k, int *confusion);

/* Rows whose two largest probabilities differ by less than margin: the
 * images whose answer a change of summation order could flip. Kernel paths
 * add the same products in different orders (and with or without fused
 * multiply-add); for the shipped models that moves a probability by well
 * under NN_BORDERLINE_MARGIN, so only these rows may be classified
 * differently on another path. k >= 2. */
#define NN_BORDERLINE_MARGIN 1e-4f
int nn_borderline(const float *probs, int n, int k, float margin);

/* Expected calibration error, the standard definition (Guo et al., "On
 * Calibration of Modern Neural Networks", 2017): each row's confidence is
 * its largest probability; rows fall into `bins` equal-width confidence
 * bins ((b-1)/bins, b/bins], b = 1..bins (a confidence of 0 goes to the
 * first); then
 *     ECE = sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|,
 * a share 0..1 (0 = the confidences are the accuracies). Empty bins add
 * nothing; n = 0 gives 0. Summed in double. k >= 1; bins 1..NN_ECE_MAX_BINS
 * (-1 outside). */
#define NN_ECE_BINS 15
#define NN_ECE_MAX_BINS 1000
double nn_ece(const float *probs, const uint8_t *labels, int n, int k, int bins);

/* Rows whose confidence lies within margin of an inner bin edge b/bins:
 * the rows another kernel path could put in the neighbouring bin. Moving
 * one row between bins changes the ECE by at most 2/n (it leaves one
 * bin's |correct - confidence sum| and joins another's, each by at most
 * 1), so with a confidence change of at most margin per row and c rows
 * whose answer could flip (nn_borderline), ECE moves by at most
 * (2 * edge + c) / n + margin between paths. */
int nn_ece_edge(const float *probs, int n, int k, int bins, float margin);

/* The ECE that a perfectly calibrated model would show, in expectation,
 * on rows with these confidences: each row's answer right with
 * probability its confidence, independently. Measured on n rows, ECE is
 * not 0 even then, since each bin's count of right answers varies about
 * its confidence sum; this is that floor, so a measured ECE near it says
 * "calibrated as far as n rows can tell". Computed exactly: per bin the
 * count of right answers is Poisson-binomial, its distribution built
 * row by row, and
 *     floor = sum over bins of E|right_b - confidence sum_b| / n.
 * The bins' terms are independent, so *sd (may be NULL) gets the exact
 * standard deviation of that ECE, sqrt(sum of the terms' variances) / n:
 * a measured ECE within about two of it of the floor is what calibration
 * looks like on n rows. O(sum of |bin|^2) time, O(n) memory. Same bins as
 * nn_ece; -1 for bins outside 1..NN_ECE_MAX_BINS or out of memory; n = 0
 * gives 0. */
double nn_ece_floor(const float *probs, int n, int k, int bins, double *sd);

/* Temperature scaling (Guo et al., 2017): the T > 0 that minimises the
 * mean negative log-likelihood of labels [n] under softmax(logits / T),
 * logits [n, k] raw (as nn_net_forward gives them). Dividing by T keeps
 * every argmax, so accuracy is unchanged; only the confidences move. The
 * NLL is convex in 1/T, so it has one minimum along log T, which a golden
 * section search on log T in [NN_TFIT_MIN, NN_TFIT_MAX] finds to about
 * 1e-9 relative (in double). A minimum beyond a bound (data the logits
 * separate perfectly want T -> 0) gives that bound. *nll (may be NULL)
 * gets the mean NLL at the returned T. -1 if n < 1, k < 2 or a label is
 * not below k. */
#define NN_TFIT_MIN 0.05
#define NN_TFIT_MAX 20.0
double nn_temperature_fit(const float *logits, const uint8_t *labels, int n, int k, double *nll);

/* The mean negative log-likelihood of labels [n] under
 * softmax(logits / t), in double (what nn_temperature_fit minimises).
 * t > 0; labels below k. */
double nn_temperature_nll(const float *logits, const uint8_t *labels, int n, int k, double t);

#endif
