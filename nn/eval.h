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

/* nn_eval_probs, also writing per image the energy score and the
 * out-of-distribution score of nn_ensemble_forward_scores into energy [n]
 * and ood [n] when those are not NULL (ood needs nn_ensemble_ood(e)). */
int nn_eval_scores(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                   int threads, float *probs, float *energy, float *ood);

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

#endif
