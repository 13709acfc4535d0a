/* eval.h - evaluating a model on a set of images, in parallel. The one
 * forward path (nn_ensemble_forward) is what the trainer's evaluation,
 * mnist-eval, mnist-predict and the server all run.
 */
#ifndef NN_EVAL_H
#define NN_EVAL_H

#include <stdint.h>

#include "augment.h"
#include "ensemble.h"

/* probs [n, classes] for images [n, H*W] (bytes 0..255, ink bright), each
 * first passed through transform tf if tf is not NULL. threads <= 0 means
 * all CPUs. Returns 0, or -1 on allocation failure. */
int nn_eval_probs(const nn_ensemble *e, const uint8_t *images, int n,
                  const nn_affine *tf, int threads, float *probs);

/* Index of the largest of k values (first on ties). */
int nn_argmax(const float *v, int k);

/* Fraction of rows whose argmax equals the label. confusion (k*k ints,
 * row = true label, column = prediction) is filled when not NULL. */
double nn_accuracy(const float *probs, const uint8_t *labels, int n, int k,
                   int *confusion);

#endif
